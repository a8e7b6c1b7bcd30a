"""Resolving several votes on one comparison into training signal. Pure Python: the export and
the reward-model runner both use it.

    >>> resolve([("a", "clear"), ("a", "decisive"), ("b", "slight")], "majority")
    [('a', None)]
    >>> resolve([("a", "clear"), ("a", "decisive"), ("b", "slight")], "weighted")
    [('a', 1.3333)]
"""

from __future__ import annotations

VOTE_MODES = ("majority", "all", "weighted")
# Judgment strength as a number; unknown (imported labels) counts as "clear".
STRENGTH_WEIGHT = {"slight": 1, "clear": 2, "decisive": 3, None: 2}


def resolve(votes: list[tuple[str, str | None]], mode: str) -> list[tuple[str, float | None]]:
    """Outcomes of one comparison's votes as (winner a/b/tie, margin or None).

    majority: the side with more votes wins; equal counts are a tie.
    all:      every vote is an outcome of its own.
    weighted: margin = |Σ sᵢ·dᵢ| / n with sᵢ the strength weight and dᵢ = +1 for the winner, −1
              against, 0 for a tie: both agreement and strength raise it.
    """
    if mode == "all":
        return [(choice, None) for choice, _ in votes]
    a = sum(1 for choice, _ in votes if choice == "a")
    b = sum(1 for choice, _ in votes if choice == "b")
    winner = "a" if a > b else "b" if b > a else "tie"
    if mode == "majority":
        return [(winner, None)]
    if winner == "tie":
        return [("tie", 0.0)]
    signed = sum(STRENGTH_WEIGHT.get(strength, 2) * (1 if choice == winner else -1 if choice != "tie" else 0)
                 for choice, strength in votes)
    return [(winner, round(abs(signed) / len(votes), 4))]


def strength_of(votes: list[tuple[str, str | None]], winner: str) -> str | None:
    """The strongest strength among the votes for `winner` (for accuracy by strength)."""
    strengths = [s for c, s in votes if c == winner and s]
    return max(strengths, key=lambda s: STRENGTH_WEIGHT[s]) if strengths else None
