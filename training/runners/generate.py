"""Generation: a policy answers prompts (N samples each) with transformers' `generate`, or with vLLM
when it is installed and a GPU is there. Output: a JSONL file, written whole before anything reads
it, so a run that fails half way leaves nothing to enqueue.

vLLM: one engine per process at a time. A generate job answers with the new policy, then with its
parent (two merged checkpoints, so not LoRA adapters on one base); each engine takes most of the
GPU's memory, so the first is torn down before the second is built (`EngineSlot`), and the last
when the answers are written, leaving the GPU to the next job on this worker.
"""

from __future__ import annotations

import gc
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .base import Reporter, RunConfig, RunFailed, check, device, set_threads
from .policy import as_messages, check_prompt_lengths, context_length, load_policy, manifest_of


@dataclass
class GenerateConfig(RunConfig):
    checkpoint: int = field(default=0, metadata={"help": "policy checkpoint id (0: the project's best policy of "
                                                         "base_model, else the base model)"})
    base_model: str = field(default="smollm2", metadata={"help": "the model when there is no policy checkpoint"})
    prompts: int = field(default=16, metadata={"help": "how many of the project's prompts to answer (0: all)"})
    samples: int = field(default=1, metadata={"help": "answers per prompt"})
    max_new_tokens: int = 96
    temperature: float = field(default=0.7, metadata={"help": "0: greedy"})
    top_p: float = 0.95
    batch_size: int = 8
    backend: str = field(default="auto", metadata={"help": "what generates the answers", "choices": {
        "auto": "vLLM when installed and a GPU is there, else transformers", "transformers": "transformers generate",
        "vllm": "vLLM (needs a GPU)"}})
    compare_with_parent: bool = field(default=True, metadata={
        "help": "also answer with the parent policy and enqueue new-vs-parent comparisons"})
    priority_from_reward_model: bool = field(default=True, metadata={
        "help": "score both answers with the newest reward model first: uncertain pairs come first"})
    gpu_memory_utilization: float = field(default=0.85, metadata={
        "help": "vLLM: share of the GPU's memory its engine may take"})
    seed: int = 0
    threads: int = 0

    def __post_init__(self):
        check(0.05 <= self.gpu_memory_utilization <= 0.98, "gpu_memory_utilization", "must be between 0.05 and 0.98")
        check(self.checkpoint >= 0, "checkpoint", "must be a checkpoint id, or 0")
        check(0 <= self.prompts <= 100_000, "prompts", "must be between 0 (all) and 100000")
        check(1 <= self.samples <= 1024, "samples", "must be between 1 and 1024")
        check(1 <= self.max_new_tokens <= 8192, "max_new_tokens", "must be between 1 and 8192")
        check(0 <= self.temperature <= 2, "temperature", "must be between 0 and 2")
        check(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        check(1 <= self.batch_size <= 512, "batch_size", "must be between 1 and 512")
        check(self.backend in ("auto", "transformers", "vllm"), "backend", "use transformers, vllm or auto")
        check(self.threads >= 0, "threads", "must be 0 (automatic) or more")


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return device() == "cuda"


def generate_answers(model_name: str, prompts: list[tuple[int, object]], output: Path, config: GenerateConfig,
                     reporter: Reporter | None = None) -> dict:
    """Answers for (prompt_id, prompt) pairs into `output` (JSONL of prompt_id, sample, text)."""
    reporter = reporter or Reporter()
    best_of_n = manifest_of(model_name)
    if best_of_n:  # sample n from its sampler, keep what its reward model likes best
        rows, stats = sample_best(best_of_n["sampler"], best_of_n["reward_model"], prompts, int(best_of_n["n"]),
                                  config, reporter, work_dir=Path(output).parent)
        _write_rows(output, [(r["prompt_id"], r["sample"], r["text"], r["tokens"]) for r in rows])
        return stats
    started = time.perf_counter()
    backend = config.backend
    if backend == "auto":
        backend = "vllm" if vllm_available() else "transformers"
    if backend == "vllm" and not vllm_available():
        raise RunFailed("backend=vllm needs the vllm package and a GPU; install the gpu extra, or use transformers.")
    set_threads(config.threads)
    rows = _generate_vllm(model_name, prompts, config) if backend == "vllm" else \
        _generate_transformers(model_name, prompts, config, reporter)
    if device().startswith("cuda"):  # the model is gone with its function: give its memory back now
        import torch

        gc.collect()
        torch.cuda.empty_cache()
    _write_rows(output, rows)
    seconds = time.perf_counter() - started
    tokens = sum(r[3] for r in rows)
    return {"backend": backend, "answers": len(rows), "tokens": tokens, "seconds": round(seconds, 1),
            "tokens_per_second": round(tokens / seconds, 1) if seconds else None,
            "mean_answer_tokens": round(tokens / max(len(rows), 1), 1)}


def sample_best(sampler: str, reward_model_dir: str, prompts: list[tuple[int, object]], n: int, config,
                reporter: Reporter | None = None, work_dir: Path | None = None) -> tuple[list[dict], dict]:
    """For each (prompt_id, prompt) and each of `config.samples` outputs, n sampled answers of
    `sampler` and the one `reward_model_dir` scores highest. Returns rows (prompt_id, sample, text,
    tokens, score, mean_score: the mean over the n, the reward a single sample would get) and stats."""
    from rewards.scoring import RewardModel

    reporter = reporter or Reporter()
    started = time.perf_counter()
    outputs = config.samples
    draw = replace(config, samples=n * outputs)
    path = Path(work_dir or ".") / f"best-of-{n}-{os.getpid()}-{time.monotonic_ns()}.jsonl"
    stats = generate_answers(sampler, prompts, path, draw, reporter=reporter)
    with open(path, encoding="utf-8") as handle:
        drawn = [json.loads(line) for line in handle]
    path.unlink(missing_ok=True)
    by_id = dict(prompts)
    reporter.log(f"scoring {len(drawn)} answers with the reward model")
    model = RewardModel(reward_model_dir)
    scores = model.score([by_id[row["prompt_id"]] for row in drawn], [row["text"] for row in drawn]).mean
    del model
    groups: dict[tuple[int, int], list[tuple[float, dict]]] = {}
    for row, score in zip(drawn, scores, strict=True):
        groups.setdefault((row["prompt_id"], row["sample"] // n), []).append((float(score), row))
    rows = []
    for (prompt_id, sample), scored in sorted(groups.items()):
        best_score, best = max(scored, key=lambda item: item[0])
        rows.append({"prompt_id": prompt_id, "sample": sample, "text": best["text"], "tokens": best["tokens"],
                     "score": round(best_score, 4),
                     "mean_score": round(sum(s for s, _ in scored) / len(scored), 4)})
    tokens = sum(r["tokens"] for r in rows)
    seconds = time.perf_counter() - started
    return rows, {**stats, "answers": len(rows), "drawn": len(drawn), "seconds": round(seconds, 1),
                  "mean_answer_tokens": round(tokens / max(len(rows), 1), 1),
                  "reward_gain": round(sum(r["score"] - r["mean_score"] for r in rows) / max(len(rows), 1), 4)}


def _write_rows(output: Path, rows) -> None:
    partial = Path(output).with_suffix(".partial")
    with open(partial, "w", encoding="utf-8") as out:
        for prompt_id, sample, text, tokens in rows:
            out.write(json.dumps({"prompt_id": prompt_id, "sample": sample, "text": text, "tokens": tokens}) + "\n")
    os.replace(partial, output)


def _generate_transformers(model_name, prompts, config, reporter):
    import torch

    reporter.progress(0.0, f"loading {model_name}")
    reporter.log(f"loading {model_name}")  # logged too: a progress message can be throttled
    tokenizer, model = load_policy(model_name, for_generation=True)
    check_prompt_lengths(tokenizer, [p for _, p in prompts], context_length(model) - config.max_new_tokens,
                         "the model's context less max_new_tokens")
    torch.manual_seed(config.seed)
    jobs = [(pid, prompt, s) for pid, prompt in prompts for s in range(config.samples)]
    jobs.sort(key=lambda job: len(str(job[1])))  # similar lengths together: less padding
    rows, model = [], model.eval()
    for start in range(0, len(jobs), config.batch_size):
        reporter.checkpoint()
        batch = jobs[start:start + config.batch_size]
        encoded = tokenizer.apply_chat_template([as_messages(p) for _, p, _ in batch], add_generation_prompt=True,
                                                padding=True, return_tensors="pt", return_dict=True).to(model.device)
        sampling = {"do_sample": True, "temperature": config.temperature, "top_p": config.top_p} \
            if config.temperature > 0 else {"do_sample": False}
        with torch.inference_mode():
            out = model.generate(**encoded, max_new_tokens=config.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                 **sampling)
        new = out[:, encoded["input_ids"].shape[1]:]
        for (pid, _, sample), ids in zip(batch, new, strict=True):
            length = int((ids != tokenizer.pad_token_id).sum())
            rows.append((pid, sample, tokenizer.decode(ids, skip_special_tokens=True).strip(), length))
        reporter.progress(min(0.95, (start + len(batch)) / len(jobs)), f"{start + len(batch)}/{len(jobs)} answers")
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows


class EngineSlot:
    """Holds at most one engine: asking for another model tears the current one down first, so
    two never share the GPU. `build(key)` makes an engine, `teardown(engine)` frees it."""

    def __init__(self, build: Callable, teardown: Callable):
        self.build, self.teardown = build, teardown
        self.key, self.engine = None, None

    def get(self, key):
        if self.engine is not None and self.key == key:
            return self.engine
        self.release()
        self.engine, self.key = self.build(key), key
        return self.engine

    def release(self) -> None:
        engine, self.engine, self.key = self.engine, None, None
        if engine is not None:
            self.teardown(engine)


def _build_vllm(key):  # pragma: no cover -- needs a GPU; bench/gpu.py runs it on one
    from vllm import LLM

    path, seed, memory = key
    return LLM(model=path, seed=seed, gpu_memory_utilization=memory)


def _teardown_vllm(llm) -> None:  # pragma: no cover -- needs a GPU
    """Free an engine's GPU memory: its engine-core process (vLLM V1) or executor (V0), the
    distributed state it set up, then the allocator's cache."""
    import contextlib

    import torch

    engine = getattr(llm, "llm_engine", None)
    with contextlib.suppress(Exception):
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
    with contextlib.suppress(Exception):
        if engine is not None and hasattr(engine, "model_executor"):
            del engine.model_executor
    del llm, engine
    with contextlib.suppress(Exception):
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


VLLM_ENGINE = EngineSlot(_build_vllm, _teardown_vllm)


def _generate_vllm(model_name, prompts, config):  # pragma: no cover -- needs a GPU; run on the device machine
    from transformers import AutoTokenizer
    from vllm import SamplingParams

    from .policy import model_path

    path = model_path(model_name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = [tokenizer.apply_chat_template(as_messages(p), add_generation_prompt=True, tokenize=False)
             for _, p in prompts]
    params = SamplingParams(n=config.samples, temperature=config.temperature, top_p=config.top_p,
                            max_tokens=config.max_new_tokens, seed=config.seed)
    try:
        llm = VLLM_ENGINE.get((path, config.seed, config.gpu_memory_utilization))
        rows = []
        for (pid, _), result in zip(prompts, llm.generate(texts, params), strict=True):
            for sample, output in enumerate(result.outputs):
                rows.append((pid, sample, output.text.strip(), len(output.token_ids)))
    finally:
        VLLM_ENGINE.release()  # the parent's engine, the reward model or the next job need the memory
    return rows
