"""What should a DPO round train on? (issue 11, section 4) Measured by the loop bench's gold judge.

    ./prefloop bench dpo_data [--gold var/bench/loop-X/gold-KEY] --out var/bench/dpo-data

Without --gold it trains the loop bench's default gold judge first (half of HH, 300 steps; 9 min
on a quiet 2-core machine, up to 28 when shared; cached in DIR by its data and settings).

A round that uses DPO has, when it starts, the project's earlier pairs and the pairs of its own
round. Four choices of training data, each trained from the same base policy with the same steps:

  old         earlier pairs only: HH pool pairs (human-written answers, off-policy for this model)
  new         the round's own pairs: two answers of the policy to a prompt (on-policy)
  all         both: what a round's DPO step trains on today (the project's whole history)
  relabelled  both, labelled by the round's reward model (the embedding head fitted on the
              annotators' labels) instead of by the annotators

The annotators are simulated as in the loop bench: the gold judge's preference with a 25% flip
(`--noise`). Each trained policy and the base answer the held-out prompts (the loop bench's 200);
the gold judge decides each pair against the base's answer: the win rate with its 95% bootstrap
interval, the same at equal length (`length_controlled_win_rate`), mean answer tokens. The DPO
sizes are a round's (LoRA, length 256, batch 2, learning rate 5e-4) with more steps (`--steps`),
so each choice can learn something. Prints a table and a ratio against the `all` baseline run
in the same process, and writes DIR/dpo-data.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from argparse import Namespace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

VARIANTS = ("old", "new", "all", "relabelled")


def as_messages(prompt) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def dpo_row(prompt, chosen: str, rejected: str) -> dict:
    """A trl-preference row as a conversational project exports it."""
    return {"prompt": as_messages(prompt), "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def gold_prefers_a(gold, pairs: list[tuple]) -> list[bool]:
    """Per (prompt, a, b): whether the gold judge prefers a."""
    a = gold.score([p for p, _, _ in pairs], [x for _, x, _ in pairs]).mean
    b = gold.score([p for p, _, _ in pairs], [y for _, _, y in pairs]).mean
    return [bool(ra > rb) for ra, rb in zip(a, b, strict=True)]


def flipped(truth: list[bool], noise: float, rng: random.Random) -> list[bool]:
    """A simulated annotator's labels: the gold judge's, each flipped with probability `noise`."""
    return [t != (rng.random() < noise) for t in truth]


def head_labels(pairs: list[tuple], labels: list[bool]) -> tuple[list[bool], float]:
    """The pairs labelled by a reward model of the kind a round trains: the product's embedding head
    fitted on the annotators' labels, cross-fitted (5 folds). Returns its preferences and how often
    they agree with the annotators'."""
    import numpy as np

    from rewards.embeddings import Encoder, response_text
    from rewards.preference_head import DEFAULT_L2, fit_head, pair_features

    encoder = Encoder()

    def features(rows):
        a = encoder.embed([response_text(p, x) for p, x, _ in rows])
        b = encoder.embed([response_text(p, y) for p, _, y in rows])
        return pair_features(a, b)

    X, y = features(pairs), np.array(labels, dtype=np.float64)
    folds = np.arange(len(pairs)) % 5
    scores = np.zeros(len(pairs))
    for fold in range(5):  # each pair labelled by a head that did not see it: relabelling, not recall
        fit = fit_head(X[folds != fold], y[folds != fold], members=1, l2=DEFAULT_L2)
        scores[folds == fold] = X[folds == fold] @ fit.weights[0]
    mine = [bool(s > 0) for s in scores]
    return mine, sum(m == label for m, label in zip(mine, labels, strict=True)) / len(labels)


def sample_pairs(prompts: list[tuple[int, object]], out: Path, tokens: int, seed: int) -> list[tuple]:
    """Two answers of the base policy to each prompt, as a round's generate step makes them."""
    import hashlib

    from training.runners.generate import GenerateConfig, generate_answers

    key = hashlib.sha256(json.dumps([prompts, tokens, seed]).encode()).hexdigest()[:12]
    path = out / f"new-answers-{key}.jsonl"  # cached for these prompts and settings only
    if not path.exists():
        config = GenerateConfig(samples=2, max_new_tokens=tokens, temperature=0.7, batch_size=8,
                                backend="transformers", seed=seed)
        generate_answers("smollm2", prompts, path, config)
    by_prompt: dict[int, list[str]] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        by_prompt.setdefault(row["prompt_id"], []).append(row["text"])
    prompt_of = dict(prompts)
    return [(prompt_of[pid], texts[0], texts[1]) for pid, texts in sorted(by_prompt.items())
            if len(texts) == 2 and texts[0].strip() != texts[1].strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gold", help="the gold judge's checkpoint directory (the loop bench's); without it the "
                                       "loop bench's default gold judge is trained (cached in --out)")
    parser.add_argument("--gold-steps", type=int, default=300)
    parser.add_argument("--out", default="var/bench/dpo-data")
    parser.add_argument("--old", type=int, default=200, help="earlier (pool) pairs")
    parser.add_argument("--new", type=int, default=100, help="prompts the base policy answers twice")
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--noise", type=float, default=0.25)
    parser.add_argument("--heldout-prompts", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=48, help="answer length, new pairs and held-out answers")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from bench.rounds import Judge, answer_stats, load_data, short_prompts, train_gold
    from rewards.scoring import RewardModel
    from training.runners.dpo import DPOConfig, train_dpo

    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        sys.exit(f"--variants: unknown {', '.join(sorted(unknown))}; use {', '.join(VARIANTS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(Namespace(pool=None, eval=None, gold_train=None, eval_pairs=200,
                               heldout_prompts=args.heldout_prompts))
    gold_dir = Path(args.gold) if args.gold else train_gold(data.gold_train, out, args.gold_steps)
    gold = RewardModel(gold_dir)
    rng = random.Random(args.seed)
    started = time.perf_counter()

    old = [(p["prompt"], p["chosen"], p["rejected"]) for p in data.pool[:args.old]]
    new_prompts = short_prompts([data.pool[args.old:] + data.pool[:args.old]])
    new = sample_pairs(new_prompts[:args.new], out, args.tokens, args.seed)
    every = old + new
    truth = gold_prefers_a(gold, every)  # scored once; the annotators' labels are these, flipped
    every_labels = flipped(truth, args.noise, rng)
    old_labels, new_labels = every_labels[:len(old)], every_labels[len(old):]
    head, with_annotators = head_labels(every, every_labels)
    gold_agreement = {"annotators": round(sum(a == b for a, b in zip(every_labels, truth, strict=True)) / len(every), 3),
                      "reward_model": round(sum(a == b for a, b in zip(head, truth, strict=True)) / len(every), 3),
                      "reward_model_with_annotators": round(with_annotators, 3)}
    print(f"{len(old)} old pairs, {len(new)} new pairs; agreement with gold: annotators "
          f"{gold_agreement['annotators']:.3f}, reward model {gold_agreement['reward_model']:.3f} "
          f"(with the annotators: {with_annotators:.3f})", flush=True)

    def rows(pairs, labels):
        return [dpo_row(p, a, b) if first else dpo_row(p, b, a) for (p, a, b), first in zip(pairs, labels, strict=True)]

    datasets = {"old": rows(old, old_labels), "new": rows(new, new_labels), "all": rows(every, every_labels),
                "relabelled": rows(every, head)}
    judge = Judge(gold_dir, data.heldout, out, args.tokens, args.seed)
    base = judge.answers_of(0, "smollm2")
    results = {"settings": vars(args), "old_pairs": len(old), "new_pairs": len(new),
               "gold_agreement": gold_agreement, "variants": {}}
    for name in variants:
        index = VARIANTS.index(name) + 1  # its answers' file and sampling seed, whatever --variants lists
        tick = time.perf_counter()
        snapshot = out / f"{name}.jsonl"
        snapshot.write_text("".join(json.dumps(r) + "\n" for r in datasets[name]))
        config = DPOConfig(base_model="smollm2", max_steps=args.steps, batch_size=2, max_length=256,
                           learning_rate=5e-4, eval_pairs=16, min_pairs=4, seed=args.seed)
        result = train_dpo(snapshot, out / f"policy-{name}", config)
        trained = time.perf_counter() - tick
        answers = judge.answers_of(index, str(out / f"policy-{name}"))
        rate = judge.win_rate(answers, base, seed=args.seed)
        results["variants"][name] = {
            "pairs": len(datasets[name]), "win_vs_base": rate["win"], "ci": rate["ci"], "lc": rate["lc"],
            "lc_ci": rate["lc_ci"], **answer_stats(answers),
            "final_loss": result.metrics.get("final_loss"), "heldout_margin_after": result.metrics.get("heldout_margin_after"),
            "train_seconds": round(trained, 1), "seconds": round(time.perf_counter() - tick, 1)}
        print(json.dumps({name: results["variants"][name]}), flush=True)
        (out / "dpo-data.json").write_text(json.dumps(results, indent=1))
    results["base"] = answer_stats(base)
    results["seconds"] = round(time.perf_counter() - started, 1)
    (out / "dpo-data.json").write_text(json.dumps(results, indent=1))

    print(f"\nbase: {results['base']['mean_answer_tokens']} tokens, distinct-2 {results['base']['distinct_2']}, "
          f"gold reward {results['base']['mean_gold_reward']}")
    print("| trains on | pairs | gold win vs base (95% CI) | at equal length (95% CI) | answer tokens | distinct-2 | "
          "gold reward |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results["variants"].items():
        print(f"| {name} | {r['pairs']} | {r['win_vs_base']:.1%} ({r['ci'][0]:.1%}–{r['ci'][1]:.1%}) | "
              f"{r['lc']:.1%} ({r['lc_ci'][0]:.1%}–{r['lc_ci'][1]:.1%}) | {r['mean_answer_tokens']} | "
              f"{r['distinct_2']} | {r['mean_gold_reward']} |")
    def gain(r):
        return r["mean_gold_reward"] - results["base"]["mean_gold_reward"]

    baseline = results["variants"].get("all")
    if baseline:
        for name, r in results["variants"].items():
            print(f"{name}: gold reward gain over the base {gain(r):+.3f} "
                  f"(ratio to `all`: {gain(r) / (gain(baseline) or float('nan')):.2f})")


if __name__ == "__main__":
    main()
