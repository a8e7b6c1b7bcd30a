"""The entry point `accelerate launch` starts in each process of a multi-GPU DPO or GRPO run
(training/runners/distributed.py): `python -m training.runners.launched KIND REQUEST.json`. It runs
the runner in this process and, in the main one, writes the run's metrics where the request says."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from .base import Reporter
from .distributed import PipeReporter, is_main_process


def _config(cls, values: dict):
    """The runner's own config from a job config (which adds fields such as `parent`)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls.from_dict({k: v for k, v in values.items() if k in names})


def main(argv: list[str]) -> None:
    kind, request_path = argv
    request = json.loads(Path(request_path).read_text())
    reporter = PipeReporter() if is_main_process() else Reporter()
    output_dir = Path(request["output_dir"])
    if kind == "dpo":
        from .dpo import DPOConfig, train_dpo

        result = train_dpo(Path(request["inputs"]["snapshot"]), output_dir, _config(DPOConfig, request["config"]),
                           reporter=reporter)
    elif kind == "grpo":
        from .grpo import GRPOConfig, train_grpo

        result = train_grpo(Path(request["inputs"]["prompts"]), output_dir, _config(GRPOConfig, request["config"]),
                            reporter=reporter, reward_model_dir=request["inputs"].get("reward_model_dir"))
    else:
        raise SystemExit(f"unknown kind {kind!r}: dpo or grpo")
    if is_main_process():
        Path(request["result"]).write_text(json.dumps({"metrics": result.metrics}))


if __name__ == "__main__":
    main(sys.argv[1:])
