"""Generation: a policy answers prompts (N samples each) with transformers' `generate`, or with vLLM
when it is installed and a GPU is there. Output: a JSONL file, written whole before anything reads
it, so a run that fails half way leaves nothing to enqueue."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .base import Reporter, RunConfig, RunFailed, check, device, set_threads
from .policy import as_messages, check_prompt_lengths, context_length, load_policy


@dataclass
class GenerateConfig(RunConfig):
    checkpoint: int = field(default=0, metadata={"help": "policy checkpoint id (0: the project's newest policy, "
                                                         "or the base model)"})
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
    seed: int = 0
    threads: int = 0

    def __post_init__(self):
        check(self.checkpoint >= 0, "checkpoint", "must be a checkpoint id, or 0")
        check(0 <= self.prompts <= 100_000, "prompts", "must be between 0 (all) and 100000")
        check(1 <= self.samples <= 16, "samples", "must be between 1 and 16")
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
    started = time.perf_counter()
    backend = config.backend
    if backend == "auto":
        backend = "vllm" if vllm_available() else "transformers"
    if backend == "vllm" and not vllm_available():
        raise RunFailed("backend=vllm needs the vllm package and a GPU; install the gpu extra, or use transformers.")
    set_threads(config.threads)
    rows = _generate_vllm(model_name, prompts, config) if backend == "vllm" else \
        _generate_transformers(model_name, prompts, config, reporter)
    partial = Path(output).with_suffix(".partial")
    with open(partial, "w", encoding="utf-8") as out:
        for prompt_id, sample, text, tokens in rows:
            out.write(json.dumps({"prompt_id": prompt_id, "sample": sample, "text": text, "tokens": tokens}) + "\n")
    os.replace(partial, output)
    seconds = time.perf_counter() - started
    tokens = sum(r[3] for r in rows)
    return {"backend": backend, "answers": len(rows), "tokens": tokens, "seconds": round(seconds, 1),
            "tokens_per_second": round(tokens / seconds, 1) if seconds else None,
            "mean_answer_tokens": round(tokens / max(len(rows), 1), 1)}


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


def _generate_vllm(model_name, prompts, config):  # pragma: no cover -- needs a GPU; run on the device machine
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from .policy import model_path

    path = model_path(model_name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = [tokenizer.apply_chat_template(as_messages(p), add_generation_prompt=True, tokenize=False)
             for _, p in prompts]
    llm = LLM(model=path, seed=config.seed)
    params = SamplingParams(n=config.samples, temperature=config.temperature, top_p=config.top_p,
                            max_tokens=config.max_new_tokens, seed=config.seed)
    rows = []
    for (pid, _), result in zip(prompts, llm.generate(texts, params), strict=True):
        for sample, output in enumerate(result.outputs):
            rows.append((pid, sample, output.text.strip(), len(output.token_ids)))
    return rows
