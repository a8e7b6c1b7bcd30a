"""Scoring responses with a reward-model checkpoint, in length-sorted batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .base import Reporter, RunConfig, check, device, set_threads


@dataclass
class ScoreConfig(RunConfig):
    checkpoint: int = field(default=0, metadata={"help": "id of the reward-model checkpoint (0: the newest)"})
    scope: str = field(default="all", metadata={"help": "which responses to score", "choices": {
        "all": "every response in the project", "open": "only responses in open comparisons"}})
    batch_size: int = 32
    threads: int = 0

    def __post_init__(self):
        check(self.checkpoint >= 0, "checkpoint", "must be a checkpoint id, or 0 for the newest")
        check(self.scope in ("all", "open"), "scope", "use all or open")
        check(1 <= self.batch_size <= 1024, "batch_size", "must be between 1 and 1024")
        check(self.threads >= 0, "threads", "must be 0 (automatic) or more")


def score_items(checkpoint_dir: Path, items: list[tuple[int, object, str]], config: ScoreConfig,
                reporter: Reporter | None = None, chunk: int = 512) -> list[tuple[int, float, float]]:
    """(id, prompt, response) → (id, reward, spread), chunk by chunk with progress."""
    from rewards.scoring import RewardModel

    reporter = reporter or Reporter()
    set_threads(config.threads)
    model = RewardModel(checkpoint_dir, device=device())
    out: list[tuple[int, float, float]] = []
    for start in range(0, len(items), chunk):
        reporter.checkpoint()
        part = items[start:start + chunk]
        scores = model.score([p for _, p, _ in part], [r for _, _, r in part], config.batch_size)
        out += [(item[0], float(m), float(s)) for item, m, s in zip(part, scores.mean, scores.spread, strict=True)]
        reporter.progress(min(1.0, (start + len(part)) / max(len(items), 1)), f"{start + len(part)}/{len(items)}")
    return out
