"""Held-out evaluation of a reward model: pairwise accuracy overall and by judgment strength,
calibration, and two baselines every reward model must beat (a coin; "the longer response
wins", which AlpacaEval-style data rewards heavily)."""

from __future__ import annotations

import math
from collections import defaultdict


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x > -60 else 0.0


def pairwise_report(
    deltas: list[float],
    strengths: list[str | None],
    chosen_lengths: list[int],
    rejected_lengths: list[int],
    bins: int = 10,
) -> dict:
    """`deltas`: r(chosen) − r(rejected) for held-out non-tie pairs.

    >>> r = pairwise_report([2.0, 1.0, -0.5, 3.0], ["clear", "slight", "slight", None], [10, 5, 3, 8], [2, 9, 3, 1])
    >>> r["accuracy"], r["n"], r["baselines"]["longer_wins"], r["by_strength"]["slight"]["accuracy"]
    (0.75, 4, 0.625, 0.5)
    """
    n = len(deltas)
    if n == 0:
        return {"n": 0, "accuracy": None, "by_strength": {}, "calibration": {}, "baselines": {}}
    correct = [d > 0 for d in deltas]
    by_strength: dict[str, list[bool]] = defaultdict(list)
    for right, strength in zip(correct, strengths, strict=True):
        by_strength[strength or "unknown"].append(right)
    longer = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen_lengths, rejected_lengths,
                                                                           strict=True))
    return {
        "n": n,
        "accuracy": round(sum(correct) / n, 4),
        "by_strength": {k: {"accuracy": round(sum(v) / len(v), 4), "n": len(v)} for k, v in sorted(by_strength.items())},
        "calibration": calibration(deltas, bins),
        "baselines": {"random": 0.5, "longer_wins": round(longer / n, 4)},
    }


def calibration(deltas: list[float], bins: int = 10) -> dict:
    """Expected calibration error and the reliability curve of P(first preferred) = σ(Δ).

    Pairs are oriented both ways (chosen first, then rejected first) so the curve spans 0…1.
    """
    points = [(_sigmoid(d), 1.0) for d in deltas] + [(_sigmoid(-d), 0.0) for d in deltas]
    buckets: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for p, y in points:
        buckets[min(int(p * bins), bins - 1)].append((p, y))
    curve, ece = [], 0.0
    for index in sorted(buckets):
        members = buckets[index]
        mean_p = sum(p for p, _ in members) / len(members)
        mean_y = sum(y for _, y in members) / len(members)
        ece += len(members) / len(points) * abs(mean_p - mean_y)
        curve.append({"predicted": round(mean_p, 4), "observed": round(mean_y, 4), "n": len(members)})
    brier = sum((p - y) ** 2 for p, y in points) / len(points)
    return {"ece": round(ece, 4), "brier": round(brier, 4), "curve": curve}
