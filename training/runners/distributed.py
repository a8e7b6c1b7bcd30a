"""Several GPUs on one worker: a DPO or GRPO run that asks for it in its config (`num_processes`
above 1, or an `accelerate_config` file for DeepSpeed / FSDP / mixed settings) re-launches itself
through `accelerate launch`, one process per GPU, and the worker's process follows it.

The launched processes run the same runner function (training/runners/launched.py; the
environment variable LAUNCHED marks them, so they train instead of launching again); the main one
(rank 0) prints progress, metrics and log lines as `@prefloop {json}` lines, which the worker's
process hands to its Reporter, and writes the checkpoint and `result.json`. Cancelling stops the
launched processes (SIGTERM to their process group).
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from .base import Cancelled, Reporter, RunFailed, check

LAUNCHED = "PREFLOOP_ACCELERATE_CHILD"
PREFIX = "@prefloop "
REPO = Path(__file__).resolve().parents[2]


def check_launch_fields(num_processes: int, accelerate_config: str) -> None:
    """Config validation (in the configs' __post_init__): what can be checked before queueing."""
    check(1 <= num_processes <= 64, "num_processes", "must be between 1 (no launch) and 64 processes (GPUs)")
    if accelerate_config:
        check(os.path.isabs(accelerate_config), "accelerate_config",
              "must be an absolute path on the GPU worker (an `accelerate config` YAML or JSON file)")
        check(accelerate_config.endswith((".yaml", ".yml", ".json")), "accelerate_config",
              "must be an accelerate config file ending in .yaml, .yml or .json")


def wants_launch(config) -> bool:
    """True in the worker's process for a config that asks for accelerate; false in the launched ones."""
    return (config.num_processes > 1 or bool(config.accelerate_config)) and not os.environ.get(LAUNCHED)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def launch_command(kind: str, request: Path, num_processes: int, accelerate_config: str = "") -> list[str]:
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        command += ["--config_file", accelerate_config]
    command += ["--num_processes", str(num_processes)]
    if num_processes > 1 and not accelerate_config:
        command += ["--multi_gpu"]
    return command + ["-m", "training.runners.launched", kind, str(request)]


def check_worker(num_processes: int, accelerate_config: str) -> None:
    """What only the worker can tell: the config file is there, and so are the GPUs."""
    if accelerate_config and not Path(accelerate_config).is_file():
        raise RunFailed(f"accelerate_config {accelerate_config} does not exist on this worker.")
    if num_processes > 1:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus < num_processes:
            raise RunFailed(f"num_processes={num_processes} asks for {num_processes} GPUs; this worker has {gpus}. "
                            "Lower num_processes, or send the job to a worker with more GPUs (queue gpu).")


def run_launched(kind: str, inputs: dict, output_dir: Path, config, reporter: Reporter | None = None) -> dict:
    """Run `kind` (dpo or grpo) under `accelerate launch`; returns the run's metrics (the
    checkpoint is then complete in `output_dir`)."""
    reporter = reporter or Reporter()
    check_worker(config.num_processes, config.accelerate_config)
    output_dir = Path(output_dir)
    folder = output_dir / ".launch"  # removed before the checkpoint is registered
    folder.mkdir(parents=True, exist_ok=True)
    request = folder / "request.json"
    result_path = folder / "result.json"
    result_path.unlink(missing_ok=True)
    request.write_text(json.dumps({"config": dataclasses.asdict(config), "inputs": inputs,
                                   "output_dir": str(output_dir), "result": str(result_path)}))
    command = launch_command(kind, request, config.num_processes, config.accelerate_config)
    reporter.log("launching: " + " ".join(command))
    process = subprocess.Popen(  # noqa: S603 -- this interpreter, accelerate, this module
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, LAUNCHED: "1", "TQDM_DISABLE": "1"}, start_new_session=True, bufsize=1)
    lines: queue.Queue = queue.Queue()

    def read() -> None:  # a thread, so the loop below can look for a cancel between lines
        for line in process.stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True, name="accelerate-output")
    reader.start()
    tail: list[str] = []
    try:
        while True:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                line = None
            if line is not None:
                _forward(line.rstrip("\n"), reporter, tail)
            elif process.poll() is not None and not reader.is_alive() and lines.empty():
                break  # ended, and every line it wrote is handled
            if reporter.should_stop():
                raise Cancelled("cancelled during a launched run")
    except BaseException:
        _stop(process)
        raise
    if process.returncode != 0 or not result_path.exists():
        raise RunFailed(f"accelerate launch exited with status {process.returncode}: " + " | ".join(tail[-8:]))
    metrics = json.loads(result_path.read_text())["metrics"]
    shutil.rmtree(folder, ignore_errors=True)
    return metrics


def _forward(line: str, reporter: Reporter, tail: list[str]) -> None:
    if line.startswith(PREFIX):
        event = json.loads(line[len(PREFIX):])
        if "progress" in event:
            reporter.progress(event["progress"], event.get("message", ""))
        elif "metric" in event:
            reporter.metric(event["step"], event["metric"], event["value"])
        elif "log" in event:
            reporter.log(event["log"])
        return
    if line.strip():
        tail.append(line.strip()[:500])
        del tail[:-40]
        reporter.log(line)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class PipeReporter(Reporter):
    """The launched main process's reporter: events as `@prefloop` lines on stdout."""

    def _emit(self, event: dict) -> None:
        print(PREFIX + json.dumps(event), flush=True)

    def progress(self, fraction: float, message: str = "") -> None:
        self._emit({"progress": fraction, "message": message})

    def metric(self, step: int, name: str, value: float) -> None:
        self._emit({"metric": name, "step": step, "value": value})

    def log(self, line: str) -> None:
        self._emit({"log": line})
