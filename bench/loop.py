"""The loop bench: how much each label is worth.

    ./prefloop bench loop --experiment pool --pool FILE [--eval FILE] \
        --budgets 50,100,200,400,800 --seeds 3 --out DIR
    ./prefloop bench loop [--experiment rounds] ...   (simulated annotators through the product: bench/rounds.py)

Pool experiment. Every labelled pair of --pool (any file `import_data` reads: pairs, TRL
chosen/rejected, HH-RLHF dialogues, AlpacaEval judgments; comma-separate several files) is a
label one can buy. Each strategy buys labels in order, a learner is fitted on what was bought at
each budget, and its pairwise accuracy is measured on --eval (prompt-disjoint from the pool: pool
pairs whose prompt is in --eval are dropped; without --eval, or with the pool file again, a
prompt-disjoint --eval-fraction of the pool's prompts is held out).

The learner is the frozen-embedding Bradley–Terry head of the product (`rewards.preference_head`):
MiniLM embeddings of each response (cached in DIR), a logistic head on their difference, its L2
penalty chosen once by 5-fold cross-validation on the whole pool (never on --eval). All
strategies of a seed start from the same --init random labels, then:

  random        labels in a random order
  uncertainty   reward-model uncertainty as the product's rounds use it: a reward model (one head)
                refitted only at each budget, then the whole next batch taken where |P − ½| is least
  disagreement  a bootstrap ensemble of --members heads refitted at each budget; the batch taken
                where the members disagree most (standard deviation of P)
  online        the product's always-fresh head: the ensemble refitted after every --step labels,
                the next --step taken by the queue's priority (uncertainty + 2 × disagreement)
  diverse       the online head's top 5 × --step by priority, of which --step are chosen by greedy
                k-center on the pairs' embedding differences (far from each other and from what is
                labelled)

Writes DIR/pool.json ({"full_pool_accuracy": x, "curves": {strategy: {budget: [accuracy per
seed]}}}), DIR/pool-details.json (settings, mean curves, label savings) and DIR/pool.png.

Label saving of a strategy against random, for a target accuracy T: 1 − b_strategy / b_random,
where b is the budget at which a seed-mean curve first reaches T once made monotone (isotonic
regression: the expected learning curve rises, so a dip between budgets is noise, and a lucky early
high is averaged with what follows), linearly interpolated between budgets. Every curve ends at
the full-pool accuracy with the whole pool.
Two targets are printed: random's (monotone) accuracy at the largest budget, and the full-pool
accuracy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

# One BLAS thread: many small fits, on a machine others share, run faster without thread contention.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

STRATEGIES = ("random", "uncertainty", "disagreement", "online", "diverse")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", choices=sorted(EXPERIMENTS), default="rounds")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "var" / "bench" / "loop")
    pool = parser.add_argument_group("pool experiment")
    pool.add_argument("--pool", help="labelled file(s) to buy labels from, comma-separated")
    pool.add_argument("--eval", help="labelled file(s) to measure on; default: hold out part of --pool")
    pool.add_argument("--eval-fraction", type=float, default=0.25, help="share of the pool's prompts held out "
                      "when --eval is not given")
    pool.add_argument("--format", default="auto", help="importer format of the files (auto, pairs, hh, ...)")
    pool.add_argument("--budgets", default="50,100,200,400,800")
    pool.add_argument("--strategies", default=",".join(STRATEGIES))
    pool.add_argument("--init", type=int, default=20, help="random labels every strategy starts from")
    pool.add_argument("--step", type=int, default=20, help="labels between refits of the online head (K; the "
                      "product's default)")
    pool.add_argument("--members", type=int, default=8, help="heads in the bootstrap ensemble")
    pool.add_argument("--reuse-curves", action="store_true", help="report and plot from DIR/pool.json of an "
                      "earlier run with the same pool, budgets and strategies, without buying labels again")
    pool.add_argument("--with-prompt", action="store_true", help="embed the prompt's tail with each response")
    pool.add_argument("--max-length", type=int, default=256, help="encoder tokens per text")
    pool.add_argument("--l2", type=float, default=0.0, help="the head's L2 penalty; 0: chosen by 5-fold CV on "
                      "the pool")
    from bench import rounds

    rounds.add_arguments(parser)
    return parser


def run_rounds(args) -> None:
    from bench import rounds

    rounds.run(args)


# --- the pool experiment ------------------------------------------------------------------------------


def setup_django(out: Path) -> None:
    """The importer's parsers live in a Django app; no database is touched."""
    os.environ.setdefault("PREFLOOP_DATA_DIR", str(out / "django"))
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{out / 'django' / 'unused.sqlite3'}")
    os.environ.setdefault("CELERY_BROKER_URL", "memory://")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    import django

    django.setup()


def read_pairs(paths: str, fmt: str) -> tuple[list[dict], dict]:
    """Decisive labelled pairs of the files: {prompt, a, b, y (1: a preferred)}; ties and
    unlabelled pairs are counted and left out."""
    from annotate.importing import iter_parsed

    pairs, skipped = [], {"ties": 0, "unlabelled": 0}
    for path in paths.split(","):
        with open(path, "rb") as handle:
            for row in iter_parsed(handle, fmt):
                prompt = row.prompt_messages or row.prompt_text
                for i, j, label in row.pairs:
                    if label in ("a", "b"):
                        pairs.append({"prompt": prompt, "prompt_key": row.prompt_text, "a": row.responses[i][0],
                                      "b": row.responses[j][0], "y": 1.0 if label == "a" else 0.0})
                    else:
                        skipped["ties" if label == "tie" else "unlabelled"] += 1
    return pairs, skipped


def prompt_hash(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16) / 16 ** 12


def embed_all(texts: list[str], out: Path, max_length: int) -> np.ndarray:
    """Embeddings of `texts`, cached in out/embeddings-*.npz by the sha256 of each text."""
    cache = out / f"embeddings-minilm-{max_length}.npz"
    known: dict[str, np.ndarray] = {}
    if cache.exists():
        stored = np.load(cache)
        known = dict(zip(stored["keys"].tolist(), stored["vectors"], strict=True))
    keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in known}.items())
    if missing:
        from rewards.embeddings import Encoder

        started = time.perf_counter()
        encoder = Encoder(max_length=max_length)
        vectors = encoder.embed([t for _, t in missing])
        print(f"embedded {len(missing)} texts in {time.perf_counter() - started:.0f} s "
              f"({len(missing) / (time.perf_counter() - started):.1f} texts/s)")
        known.update(zip([k for k, _ in missing], vectors, strict=True))
        np.savez(cache, keys=np.array(list(known)), vectors=np.stack(list(known.values())))
    return np.stack([known[k] for k in keys]).astype(np.float64)


def features(pairs: list[dict], out: Path, args) -> tuple[np.ndarray, np.ndarray]:
    from rewards.embeddings import response_text
    from rewards.preference_head import pair_features

    texts = [response_text(p["prompt"], p[side], args.with_prompt) for p in pairs for side in ("a", "b")]
    vectors = embed_all(texts, out, args.max_length)
    X = pair_features(vectors[0::2], vectors[1::2])
    return X, np.array([p["y"] for p in pairs])


def accuracy(w: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    return float(((X @ w > 0) == (y > 0.5)).mean())


def choose_l2(X: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """The L2 penalty with the best 5-fold cross-validated accuracy on the pool."""
    from rewards.bradley_terry import fit_logistic

    folds = np.random.default_rng(seed).integers(0, 5, len(y))
    scores = {}
    for l2 in (0.1, 0.3, 1.0, 3.0, 10.0, 30.0):
        scores[l2] = np.mean([accuracy(fit_logistic(X[folds != f], y[folds != f], l2=l2), X[folds == f], y[folds == f])
                              for f in range(5)])
    print("5-fold CV accuracy on the pool by L2: " + ", ".join(f"{k:g}: {v:.3f}" for k, v in scores.items()))
    return max(scores, key=scores.get)


def acquire(strategy: str, seed: int, X: np.ndarray, y: np.ndarray, budgets: list[int], args, l2: float,
            evaluate) -> dict[int, float]:
    """Buy labels in the strategy's order; the learner's eval accuracy at each budget."""
    from rewards.bradley_terry import fit_logistic
    from rewards.preference_head import fit_head, member_probabilities, priorities
    from rewards.selection import k_center_greedy

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    labelled = list(order[: args.init])
    bought = np.zeros(len(y), dtype=bool)
    bought[labelled] = True
    curve, warm = {}, None
    for budget in budgets:
        if strategy in ("uncertainty", "disagreement") and len(labelled) < budget:
            free = np.flatnonzero(~bought)
            if strategy == "uncertainty":
                w = fit_logistic(X[labelled], y[labelled], l2=l2)
                score = -np.abs(member_probabilities(w[None, :], X[free])[0] - 0.5)
            else:
                fit = fit_head(X[labelled], y[labelled], members=args.members, l2=l2, seed=seed)
                score = member_probabilities(fit.weights, X[free]).std(axis=0)
            take = free[np.argsort(-score, kind="stable")[: budget - len(labelled)]]
            labelled.extend(take.tolist())
            bought[take] = True
        while len(labelled) < budget:
            want = min(args.step, budget - len(labelled))
            if strategy == "random":
                take = [i for i in order if not bought[i]][:want]
            else:  # online / diverse: the ensemble refitted on everything bought so far
                fit = fit_head(X[labelled], y[labelled], members=args.members, l2=l2, seed=seed + len(labelled),
                               warm=warm)
                warm = fit.weights
                free = np.flatnonzero(~bought)
                priority = priorities(member_probabilities(fit.weights, X[free]))
                ranked = free[np.argsort(-priority, kind="stable")]
                if strategy == "online":
                    take = ranked[:want].tolist()
                else:
                    shortlist = ranked[: 5 * want]
                    picked = k_center_greedy(X[shortlist], X[labelled], want)
                    take = shortlist[picked].tolist()
            labelled.extend(take)
            bought[take] = True
        curve[budget] = evaluate(fit_logistic(X[labelled], y[labelled], l2=l2))
    return curve


def monotone(values: list[float]) -> list[float]:
    """The closest non-decreasing curve (isotonic regression, pool-adjacent-violators): a learning
    curve's expectation rises with labels, so dips between budgets are noise.

    >>> monotone([0.60, 0.62, 0.61, 0.65, 0.64, 0.70])
    [0.6, 0.615, 0.615, 0.645, 0.645, 0.7]
    """
    blocks: list[list[float]] = []  # [sum, count]
    for value in values:
        blocks.append([value, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return [round(total / count, 10) for total, count in blocks for _ in range(int(count))]


def budget_to_reach(budgets: list[int], accuracies: list[float], target: float) -> float | None:
    """The budget at which the monotone version of the curve first reaches `target`, linearly
    interpolated between budgets. None: never.

    >>> round(budget_to_reach([100, 200, 400, 800], [0.6, 0.7, 0.65, 0.8], 0.75), 1)
    640.0
    >>> budget_to_reach([100, 200, 400], [0.8, 0.7, 0.8], 0.75), budget_to_reach([100, 200], [0.6, 0.7], 0.75)
    (100.0, None)
    """
    curve = monotone(accuracies)
    for i, value in enumerate(curve):
        if value >= target - 1e-9:  # the monotone curve is rounded to 10 decimals
            if i == 0:
                return float(budgets[0])
            before = curve[i - 1]
            return budgets[i - 1] + (target - before) / (value - before) * (budgets[i] - budgets[i - 1])
    return None


def run_pool(args) -> None:
    if not args.pool:
        sys.exit("--experiment pool needs --pool FILE")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    setup_django(out)
    from rewards.bradley_terry import fit_logistic

    budgets = sorted({int(b) for b in args.budgets.split(",")})
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = set(strategies) - set(STRATEGIES)
    if unknown:
        sys.exit(f"unknown strategies {sorted(unknown)}; choose from {', '.join(STRATEGIES)}")
    from annotate.importing import ImportFailed

    try:
        pool, skipped = read_pairs(args.pool, args.format)
        if args.eval and args.eval != args.pool:
            held, eval_skipped = read_pairs(args.eval, args.format)
            held_prompts = {p["prompt_key"] for p in held}
            before = len(pool)
            pool = [p for p in pool if p["prompt_key"] not in held_prompts]
            split = f"--eval file; {before - len(pool)} pool pairs sharing an eval prompt dropped"
        else:
            held = [p for p in pool if prompt_hash(p["prompt_key"]) < args.eval_fraction]
            pool = [p for p in pool if prompt_hash(p["prompt_key"]) >= args.eval_fraction]
            eval_skipped, split = {}, f"{args.eval_fraction:.0%} of the pool's prompts held out (by prompt hash)"
    except ImportFailed as exc:
        sys.exit(str(exc))
    # Which side comes first is drawn once, so "the first side wins" carries no signal.
    flip = np.random.default_rng(12345).random(len(pool) + len(held)) < 0.5
    for p, f in zip(pool + held, flip, strict=True):
        if f:
            p["a"], p["b"], p["y"] = p["b"], p["a"], 1.0 - p["y"]
    print(f"pool: {len(pool)} labelled pairs; eval: {len(held)} pairs ({split}); left out: {skipped} "
          f"{eval_skipped or ''}".rstrip())
    if budgets[-1] > len(pool):
        sys.exit(f"the largest budget ({budgets[-1]}) is more than the pool's {len(pool)} pairs")
    if args.init > budgets[0]:
        sys.exit(f"--init ({args.init}) must not exceed the smallest budget ({budgets[0]})")

    X_pool, y_pool = features(pool, out, args)
    X_eval, y_eval = features(held, out, args)
    l2 = args.l2 or choose_l2(X_pool, y_pool)
    started = time.perf_counter()
    w_full = fit_logistic(X_pool, y_pool, l2=l2)
    full_fit_seconds = time.perf_counter() - started
    full = accuracy(w_full, X_eval, y_eval)
    print(f"L2 {l2:g}; full pool ({len(pool)} labels): eval accuracy {full:.4f} (fit in {full_fit_seconds:.2f} s)")
    from rewards.preference_head import fit_head

    started = time.perf_counter()
    ensemble = fit_head(X_pool, y_pool, members=args.members, l2=l2)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    fit_head(X_pool, y_pool, members=args.members, l2=l2, seed=1, warm=ensemble.weights)
    warm = time.perf_counter() - started
    print(f"refit of the online head ({args.members} members, {len(pool)} judgments, one thread): {cold:.2f} s "
          f"cold, {warm:.2f} s warm-started")

    curves: dict[str, dict[int, list[float]]] = {s: {b: [] for b in budgets} for s in strategies}
    timings: dict[str, float] = {}
    if args.reuse_curves:  # report again from the curves a finished run wrote
        stored = json.loads((out / "pool.json").read_text())["curves"]
        curves = {s: {b: stored[s][str(b)] for b in budgets} for s in strategies}
    for strategy in strategies if not args.reuse_curves else []:
        started = time.perf_counter()
        for seed in range(args.seeds):
            curve = acquire(strategy, seed, X_pool, y_pool, budgets, args, l2,
                            lambda w: accuracy(w, X_eval, y_eval))
            for b in budgets:
                curves[strategy][b].append(round(curve[b], 4))
        timings[strategy] = round((time.perf_counter() - started) / args.seeds, 2)
        means = " ".join(f"{b}:{np.mean(curves[strategy][b]):.4f}" for b in budgets)
        print(f"{strategy:>12}  {means}   ({timings[strategy]:.1f} s a seed)")

    (out / "pool.json").write_text(json.dumps({
        "full_pool_accuracy": round(full, 4),
        "curves": {s: {str(b): v for b, v in c.items()} for s, c in curves.items()}}, indent=1))

    # Label savings, from seed-mean curves that end at the full pool.
    means = {s: [float(np.mean(curves[s][b])) for b in budgets] + [full] for s in strategies}
    points = budgets + [len(pool)]
    savings = {}
    if "random" in strategies:
        targets = {"random_final": monotone(means["random"])[len(budgets) - 1], "full_pool": full}
        print(f"\nlabel saving against random (budget at which the monotone seed-mean curve reaches the target; "
              f"pool {len(pool)})")
        for name, target in targets.items():
            base = budget_to_reach(points, means["random"], target)
            print(f"  target {name} = {target:.4f}: random needs " + ("more than the pool" if base is None else
                                                                      f"{base:.0f} labels"))
            for s in strategies:
                need = budget_to_reach(points, means[s], target)
                saving = None if need is None or base is None else round(1 - need / base, 3)
                savings.setdefault(s, {})[name] = {"target": round(target, 4), "labels": need and round(need, 1),
                                                   "saving": saving}
                if s != "random":
                    print(f"    {s:>12}: " + ("not reached" if need is None else
                                              f"{need:.0f} labels, saving {saving:+.1%}"))
    (out / "pool-details.json").write_text(json.dumps({
        "pool_pairs": len(pool), "eval_pairs": len(held), "split": split, "l2": l2, "budgets": budgets,
        "seeds": args.seeds, "init": args.init, "step": args.step, "members": args.members,
        "with_prompt": args.with_prompt, "max_length": args.max_length, "full_pool_accuracy": full,
        "mean_curves": {s: dict(zip(points, m, strict=True)) for s, m in means.items()},
        "savings": savings, "seconds_per_seed": timings}, indent=1))
    plot(out / "pool.png", budgets, curves, full, len(pool), len(held))
    print(f"\nwrote {out / 'pool.json'}, {out / 'pool-details.json'}, {out / 'pool.png'}")


def plot(path: Path, budgets, curves, full: float, pool: int, held: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2), dpi=110)
    for strategy, curve in curves.items():
        values = np.array([curve[b] for b in budgets])
        axis.plot(budgets, values.mean(axis=1), marker="o", linewidth=1.8 if strategy != "random" else 2.4,
                  label=strategy, color="black" if strategy == "random" else None)
        axis.fill_between(budgets, values.min(axis=1), values.max(axis=1), alpha=0.12,
                          color="black" if strategy == "random" else None)
    axis.axhline(full, linestyle="--", color="grey", linewidth=1, label=f"full pool ({pool})")
    axis.set_xscale("log")
    axis.minorticks_off()
    axis.set_xticks(budgets, [str(b) for b in budgets])
    axis.set_xlabel("labels bought")
    axis.set_ylabel(f"pairwise accuracy on {held} held-out pairs")
    axis.set_title("Frozen-MiniLM Bradley–Terry head: accuracy by labels (mean, min–max over seeds)", fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


EXPERIMENTS = {"pool": run_pool, "rounds": run_rounds}

if __name__ == "__main__":
    arguments = build_parser().parse_args()
    EXPERIMENTS[arguments.experiment](arguments)
