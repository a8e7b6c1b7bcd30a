"""Figures of the loop: per round, how often people preferred the new policy over its parent."""

from __future__ import annotations

import math
from collections import defaultdict

from annotate.importing import IMPORTED_USERNAME
from annotate.models import Judgment, Project


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (ties count as half a success).

    >>> tuple(round(x, 3) for x in wilson(8, 10))
    (0.49, 0.943)
    """
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def round_win_rates(project: Project) -> list[dict]:
    """Per round: human judgments of new policy vs parent, the new policy's win rate and its CI.
    Which side is new is read per comparison (RoundPair), never from the response alone."""
    judgments = (Judgment.objects.filter(project=project, comparison__round_pair__isnull=False)
                 .exclude(annotator__username=IMPORTED_USERNAME)
                 .values_list("comparison__round_pair__round", "choice", "comparison__candidate_a_id",
                              "comparison__candidate_b_id", "comparison__round_pair__new_candidate_id"))
    tally: dict[int, dict[str, float]] = defaultdict(lambda: {"wins": 0.0, "ties": 0, "losses": 0, "n": 0})
    for round_number, choice, a, b, new in judgments:
        row = tally[round_number]
        row["n"] += 1
        if choice == "tie":
            row["ties"] += 1
            row["wins"] += 0.5
        elif (a if choice == "a" else b) == new:
            row["wins"] += 1
        else:
            row["losses"] += 1
    out = []
    for round_number in sorted(tally):
        row = tally[round_number]
        low, high = wilson(row["wins"], row["n"])
        out.append({"round": round_number, "judgments": row["n"], "win_rate": row["wins"] / row["n"],
                    "ties": row["ties"], "losses": row["losses"], "low": low, "high": high})
    return out
