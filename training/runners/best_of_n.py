"""Best-of-n: sample n answers from a policy, keep the one a reward model scores highest
(AlpacaFarm's cheapest strong method). A best-of-n policy is a small checkpoint directory whose
manifest names its sampler (a policy directory or a base model name), its reward model and n;
generation from it samples and picks, training from it trains its sampler.

A best-of-n policy over another best-of-n policy samples from the same sampler with the newer
reward model: n stays n (nesting would multiply it every round).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

from .base import Reporter, RunFailed
from .policy import MANIFEST, sampler_of


def write_best_of_n(output_dir: Path, sampler: str, reward_model_dir: str, n: int, extra: dict | None = None) -> Path:
    """A best-of-n policy over `sampler` (itself unwrapped if it is one) picked by a reward model."""
    if not 2 <= n <= 64:
        raise RunFailed("best_of_n: n must be between 2 and 64")
    if not (Path(reward_model_dir) / MANIFEST).is_file():
        raise RunFailed(f"best_of_n: {reward_model_dir} is not a reward-model checkpoint")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"kind": "policy", "method": "best_of_n", "sampler": sampler_of(sampler),
                "reward_model": str(reward_model_dir), "n": n, **(extra or {})}
    (output_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return output_dir


def sample_best(sampler: str, reward_model_dir: str, prompts: list[tuple[int, object]], n: int, config,
                reporter: Reporter | None = None, work_dir: Path | None = None) -> tuple[list[dict], dict]:
    """For each (prompt_id, prompt) and each of `config.samples` outputs, n sampled answers of
    `sampler` and the one `reward_model_dir` scores highest. Returns rows (prompt_id, sample, text,
    tokens, score, mean_score: the mean over the n, the reward a single sample would get) and stats."""
    from rewards.scoring import RewardModel

    from .generate import generate_answers

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
