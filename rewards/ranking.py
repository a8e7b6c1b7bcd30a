"""Where a human label teaches most: the queue priority of a new-vs-parent pair from a reward
model's scores. Pure maths, no Django: the generate kind and any selection strategy share it."""

from __future__ import annotations

import math


def win_probability(score_new: float, score_other: float) -> float:
    """Bradley–Terry probability that the first response wins, from two reward scores.

    >>> round(win_probability(1.0, 1.0), 3)
    0.5
    >>> round(win_probability(2.0, 0.0), 3)
    0.881
    """
    return 1.0 / (1.0 + math.exp(-(score_new - score_other)))


def pair_priority(score_new: float, score_other: float, spread_new: float = 0.0, spread_other: float = 0.0) -> float:
    """Priority of a pair in the queue: 1 when the reward model cannot tell the two apart, falling
    to 0 as it grows sure, plus the ensemble members' mean disagreement (spread) on the two.

    Priority = 1 − 2·|P(new wins) − ½| + (spread_new + spread_other) / 2, rounded to 4 places.

    >>> pair_priority(0.3, 0.3)            # a coin flip for the model: label it first
    1.0
    >>> pair_priority(4.0, 0.0)            # the model is sure: little to learn
    0.036
    >>> pair_priority(4.0, 0.0, 0.5, 0.3)  # sure on average, but the members disagree
    0.436
    """
    p_new = win_probability(score_new, score_other)
    return round(1 - abs(p_new - 0.5) * 2 + (spread_new + spread_other) / 2, 4)
