"""Best-of-n: sample n answers from a policy, keep the one a reward model scores highest
(AlpacaFarm's cheapest strong method). A best-of-n policy is a small checkpoint directory whose
manifest names its sampler (a policy directory or a base model name), its reward model and n;
generation from it samples and picks (`generate.sample_best`), training from it trains its sampler.

A best-of-n policy over another best-of-n policy samples from the same sampler with the newer
reward model: n stays n (nesting would multiply it every round).
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import RunFailed
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
