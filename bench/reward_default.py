"""Which reward model should a round train by default? Options measured side by side on a
prompt-disjoint HH-RLHF split (issue 11, section 3: aim ≥ 0.66 at a budget that fits a round).

    ./prefloop bench reward_default [--variants round,round_x3,epoch,head,round+head,...]

The 1,600 HH-RLHF harmlessness dev pairs in ../shared/data are imported into a fresh SQLite
project and frozen in one snapshot; the runner's own split holds 20% of the prompts out (seed 0),
so every variant trains on the same pairs and is scored on the same held-out ones. Variants:

- `round`: the round's fine-tuned reward model (RoundConfig.reward_model: 60 steps, batch 8, max
  length 160, lr 5e-5, no embedding head), MiniLM through the product's runner;
- `round_eh`: the same with the runner's `embedding_head` on (the product's round+head, one
  checkpoint: its scores must equal `round+head`);
- `round_256`: the same at max length 256;
- `round_x3`: the same with three members (ensemble_size 3; seeds 0-2), their mean;
- `epoch`: one epoch at max length 256, lr 3e-5 (bench/reward_model.py's setting);
- `head`: the always-fresh head the queue uses: frozen MiniLM embeddings of each response, a
  Bradley–Terry logistic head on their difference (`fit_pair_head`, L2 = DEFAULT_L2 as in the
  product; the 5-fold CV choice on the training pairs is printed beside it);
  `head_prompt`: the same with the prompt's last turns in the embedded text;
- `A+B`: the mean of two variants' log-odds (r(chosen) − r(rejected)), nothing tuned on held-out.

Printed: held-out accuracy with its Wilson 95% interval, the baselines (random, longer wins) and
the training seconds of each variant; one RESULT line of JSON at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
VARIANTS = "round,round_eh,round_256,round_x3,epoch,head,round+head,round_x3+head,epoch+head"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=VARIANTS, help="comma-separated; A+B is an ensemble of A and B")
    parser.add_argument("--out", default=str(REPO / "var" / "bench" / "reward-default"))
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    os.environ.update(PREFLOOP_DATA_DIR=str(out), DATABASE_URL=f"sqlite:///{out / 'db.sqlite3'}",
                      CELERY_BROKER_URL="filesystem://", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command

    from annotate.importing import import_path
    from annotate.models import Project
    from rewards.text import render_response
    from training.kinds.round import RoundConfig
    from training.runners.base import set_threads
    from training.runners.reward_model import RewardModelConfig, load_pairs, split
    from training.snapshots import make_snapshot, snapshot_path
    from training.stats import wilson

    call_command("migrate", verbosity=0)
    hh = Path(os.environ.get("PREFLOOP_SHARED_DATA", REPO.parent / "shared" / "data")) / "hh-rlhf" / \
        "harmless-base-test.dev.jsonl.gz"
    project = Project.objects.create(slug="hh-dev", name="HH-RLHF dev")
    import_path(project, hh, format="hh")
    snapshot = snapshot_path(make_snapshot(project, "raw"))
    round_rm = {**RoundConfig().reward_model, "embedding_head": False, "eval_fraction": 0.2, "seed": 0, "threads": 0}
    configs = {
        "round": round_rm,
        "round_eh": {**round_rm, "embedding_head": True},
        "round_256": {**round_rm, "max_length": 256},
        "round_x3": {**round_rm, "ensemble_size": 3},
        "epoch": {"max_length": 256, "batch_size": 8, "learning_rate": 3e-5, "epochs": 1.0, "max_steps": 0,
                  "eval_fraction": 0.2, "seed": 0, "threads": 0},
    }
    pairs = load_pairs(snapshot, RewardModelConfig.from_dict(round_rm), [])
    train, held_out = split(pairs, 0.2, 0)
    held_out = [p for p in held_out if not p.tie]
    train = [p for p in train if not p.tie]
    n = len(held_out)
    longer = np.mean([1.0 if len(render_response(p.chosen)) > len(render_response(p.rejected)) else 0.0
                      for p in held_out])
    print(f"{len(pairs)} pairs: {len(train)} train, {n} held out (prompt-disjoint); longer wins {longer:.3f}")
    set_threads(0)

    deltas: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}

    def fine_tuned(name: str) -> None:
        from rewards.scoring import RewardModel
        from training.runners.reward_model import train_reward_model

        started = time.perf_counter()
        result = train_reward_model(snapshot, out / name, RewardModelConfig.from_dict(configs[name]))
        seconds[name] = time.perf_counter() - started
        model = RewardModel(out / name, device="cpu")
        prompts = [p.prompt for p in held_out]
        chosen = model.score(prompts, [p.chosen for p in held_out], 16).mean
        rejected = model.score(prompts, [p.rejected for p in held_out], 16).mean
        deltas[name] = chosen - rejected
        assert abs(float((deltas[name] > 0).mean()) - result.metrics["eval_accuracy"]) < 2e-3, result.metrics  # rounded

    def head(name: str) -> None:
        from bench.loop import choose_l2
        from rewards.embeddings import Encoder, response_text
        from rewards.preference_head import DEFAULT_L2, fit_pair_head, pair_features

        started = time.perf_counter()
        encoder = Encoder()
        with_prompt = name == "head_prompt"

        def embedded(rows):
            return (encoder.embed([response_text(p.prompt, p.chosen, with_prompt) for p in rows]),
                    encoder.embed([response_text(p.prompt, p.rejected, with_prompt) for p in rows]))

        chosen, rejected = embedded(train)
        cv = choose_l2(pair_features(chosen, rejected), np.ones(len(chosen)))  # the fit's own rows: chosen first
        print(f"L2 by 5-fold CV on the training pairs: {cv}; used: {DEFAULT_L2}")
        w = fit_pair_head(chosen, rejected, l2=DEFAULT_L2)  # what the runner's embedding head fits
        seconds[name] = time.perf_counter() - started
        deltas[name] = pair_features(*embedded(held_out)) @ w

    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    for variant in wanted:
        for part in variant.split("+"):
            if part in deltas:
                continue
            if part in configs:
                print(f"training {part}: {configs[part]}", flush=True)
                fine_tuned(part)
            elif part in ("head", "head_prompt"):
                print(f"fitting {part}", flush=True)
                head(part)
            else:
                sys.exit(f"unknown variant {part!r}: use {VARIANTS}")

    rows = []
    print(f"\n| variant | held-out accuracy (n = {n}) | 95% interval | train s |\n| --- | --- | --- | --- |")
    for variant in wanted:
        parts = variant.split("+")
        delta = np.mean([deltas[p] for p in parts], axis=0)
        right = int((delta > 0).sum())
        low, high = wilson(right, n)
        rows.append({"variant": variant, "accuracy": right / n, "interval": [low, high],
                     "seconds": sum(seconds[p] for p in parts)})
        print(f"| {variant} | {right / n:.3f} | {low:.3f}–{high:.3f} | {rows[-1]['seconds']:.0f} |")
    print(f"| baseline: random | 0.500 | | |\n| baseline: longer wins | {longer:.3f} | | |")
    print("RESULT " + json.dumps({"held_out": n, "train": len(train), "longer_wins": longer, "rows": rows}))


if __name__ == "__main__":
    main()
