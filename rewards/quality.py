"""Statistics of annotation quality, pure Python + numpy/scipy (no Django): position bias with a
binomial test and Holm's correction, credible bounds on accuracy, speed that cannot be reading,
the trust estimate (one-coin Dawid–Skene with gold answers clamped), and judgment noise flags.

Every function answers None (shown as "–") where there is nothing to estimate from, never a
division error.

    >>> left_rate_test(9, 10)
    (0.9, 0.021484375)
    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    >>> round(prob_below(5, 5, 0.65), 4)
    0.8513
    >>> wilson_interval(0, 0)
    (None, None)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

# Flag thresholds, documented in README ("Quality control").
ACCURACY_FLOOR = 0.65        # an annotator credibly below this accuracy is flagged
CREDIBILITY = 0.95           # "credibly": posterior probability that accuracy is below the floor
POSITION_ALPHA = 0.01        # family-wise error of the position-bias tests (Holm over annotators)
READ_CHARS_PER_SECOND = 100  # ~1,200 words a minute: faster than anyone reads two answers
MIN_READ_SECONDS = 1.0
TOO_FAST_SHARE = 0.3         # flagged when the Wilson lower bound of the too-fast share exceeds this
MIN_JUDGMENTS_FOR_SPEED = 10
MAJORITY_STRENGTH = 0.85     # P(most voters favour the other answer) that makes a judgment noise
MODEL_CONFIDENCE = 0.75      # P(the other answer is better) every model must reach to flag
DS_PRIOR = (2.0, 1.0)        # Beta prior on accuracy: better than chance, weak (3 pseudo-votes)


def left_rate_test(left: int, decided: int) -> tuple[float | None, float | None]:
    """Share of left choices among decisive (non-tie) judgments and the two-sided exact binomial
    test's p-value against 0.5 (scipy.stats.binomtest). (None, None) without judgments.

    >>> left_rate_test(5, 10)
    (0.5, 1.0)
    >>> left_rate_test(0, 0)
    (None, None)
    """
    if decided <= 0:
        return None, None
    return left / decided, float(stats.binomtest(left, decided, 0.5).pvalue)


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1); None stays None.

    >>> holm([0.01, None, 0.02])
    [0.02, None, 0.02]
    """
    known = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(known)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(known):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float | None, float | None]:
    """Wilson score interval of a proportion (95% by default).

    >>> [round(x, 4) for x in wilson_interval(8, 10)]
    [0.4902, 0.9433]
    """
    if n <= 0:
        return None, None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: list[float], level: float = 0.95) -> tuple[float | None, float | None]:
    """Student-t interval of a mean (95% by default); None below two values.

    >>> [round(x, 3) for x in mean_interval([1.0, 2.0, 3.0])]
    [-0.484, 4.484]
    """
    n = len(values)
    if n < 2:
        return None, None
    mean = float(np.mean(values))
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * float(np.std(values, ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


def prob_below(right: float, wrong: float, threshold: float, prior: tuple[float, float] = (1.0, 1.0)) -> float:
    """Posterior probability that an accuracy is below `threshold` after `right` and `wrong`
    answers (soft counts allowed) under a Beta prior (uniform by default)."""
    return float(stats.beta.cdf(threshold, prior[0] + right, prior[1] + wrong))


def min_read_seconds(chars: int) -> float:
    """The least time in which two answers of `chars` characters in all can be read.

    >>> min_read_seconds(50), min_read_seconds(1500)
    (1.0, 15.0)
    """
    return max(MIN_READ_SECONDS, chars / READ_CHARS_PER_SECOND)


def median(values: Iterable[float]) -> float | None:
    """The median, or None of nothing.

    >>> median([3, 1, 2]), median([])
    (2.0, None)
    """
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    return float(np.median(values))


# --- trust: one-coin Dawid–Skene -------------------------------------------------------------


def dawid_skene(votes: Mapping[int, Mapping[object, str]], gold: Mapping[int, str] | None = None,
                iterations: int = 50) -> dict[object, tuple[float, float, float]]:
    """Each annotator's accuracy on a/b choices by one-coin Dawid–Skene (Dawid & Skene 1979, with
    one accuracy per annotator instead of a confusion matrix) with a Beta(2, 1) prior, by EM.

    `votes`: item -> {annotator: "a" | "b"}; `gold`: item -> known answer, clamped as the truth.
    Only items with a known answer or two or more votes carry evidence. Returns annotator ->
    (posterior mean accuracy, soft right, soft wrong), where soft counts are the expected number
    of the annotator's votes that match the truth.

    >>> votes = {1: {"x": "a", "y": "a", "z": "b"}, 2: {"x": "b", "y": "b", "z": "a"},
    ...          3: {"x": "a", "y": "a", "z": "a"}}
    >>> {k: round(v[0], 2) for k, v in sorted(dawid_skene(votes).items())}
    {'x': 0.81, 'y': 0.81, 'z': 0.51}
    """
    gold = gold or {}
    items = [i for i, v in votes.items() if i in gold or len(v) >= 2]
    annotators = sorted({a for i in items for a in votes[i]}, key=str)
    if not annotators:
        return {}
    accuracy = {a: DS_PRIOR[0] / sum(DS_PRIOR) for a in annotators}
    soft: dict[object, list[float]] = {}
    for _ in range(iterations):
        soft = {a: [0.0, 0.0] for a in annotators}
        for item in items:
            if item in gold:
                p_a = 1.0 if gold[item] == "a" else 0.0
            else:
                logit = 0.0
                for annotator, choice in votes[item].items():
                    acc = min(max(accuracy[annotator], 0.01), 0.99)
                    weight = math.log(acc / (1 - acc))
                    logit += weight if choice == "a" else -weight
                p_a = 1 / (1 + math.exp(-max(min(logit, 50), -50)))
            for annotator, choice in votes[item].items():
                match = p_a if choice == "a" else 1 - p_a
                soft[annotator][0] += match
                soft[annotator][1] += 1 - match
        new = {a: (DS_PRIOR[0] + r) / (sum(DS_PRIOR) + r + w) for a, (r, w) in soft.items()}
        if max(abs(new[a] - accuracy[a]) for a in annotators) < 1e-6:
            accuracy = new
            break
        accuracy = new
    return {a: (accuracy[a], soft[a][0], soft[a][1]) for a in annotators}


# --- one annotator's figures and flags ---------------------------------------------------------


@dataclass
class AnnotatorFigures:
    """What is known of one annotator; None means "–" (nothing to estimate from)."""

    username: str
    judgments: int = 0
    gold_right: int = 0
    gold_seen: int = 0
    majority_agree: int = 0
    majority_seen: int = 0
    left: int = 0
    decided: int = 0  # non-tie judgments with a recorded left side
    seconds: list[float] = field(default_factory=list)
    too_fast: int = 0
    timed: int = 0
    trust: float | None = None
    soft_right: float = 0.0
    soft_wrong: float = 0.0
    left_p: float | None = None
    left_p_adjusted: float | None = None
    flags: list[str] = field(default_factory=list)

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_right / self.gold_seen if self.gold_seen else None

    @property
    def majority_agreement(self) -> float | None:
        return self.majority_agree / self.majority_seen if self.majority_seen else None

    @property
    def left_rate(self) -> float | None:
        return self.left / self.decided if self.decided else None

    @property
    def too_fast_share(self) -> float | None:
        return self.too_fast / self.timed if self.timed else None

    @property
    def median_seconds(self) -> float | None:
        return median(self.seconds)

    def as_dict(self) -> dict:
        return {
            "username": self.username, "judgments": self.judgments,
            "gold_accuracy": self.gold_accuracy, "gold_count": self.gold_seen,
            "majority_agreement": self.majority_agreement, "majority_count": self.majority_seen,
            "left_rate": self.left_rate, "left_count": self.decided, "left_p_value": self.left_p,
            "left_p_adjusted": self.left_p_adjusted, "median_seconds": self.median_seconds,
            "too_fast_share": self.too_fast_share, "trust": self.trust,
            "flagged": bool(self.flags), "reasons": list(self.flags),
        }


def flag_annotators(figures: list[AnnotatorFigures]) -> list[AnnotatorFigures]:
    """Fill in p-values (Holm over all annotators) and the flags with their reasons:
    - `low_accuracy`: P(accuracy < ACCURACY_FLOOR) > CREDIBILITY, from gold answers and the
      Dawid–Skene soft counts (the larger evidence of the two);
    - `position_bias`: the Holm-adjusted binomial p-value of the left rate < POSITION_ALPHA;
    - `too_fast`: at least MIN_JUDGMENTS_FOR_SPEED timed judgments and the Wilson lower bound of
      the share faster than reading exceeds TOO_FAST_SHARE.
    """
    for f in figures:
        _, f.left_p = left_rate_test(f.left, f.decided)
    for f, adjusted in zip(figures, holm([f.left_p for f in figures]), strict=True):
        f.left_p_adjusted = adjusted
    for f in figures:
        f.flags = []
        evidence = max((f.gold_right, f.gold_seen - f.gold_right), (f.soft_right, f.soft_wrong), key=sum)
        if sum(evidence) > 0 and prob_below(*evidence, ACCURACY_FLOOR) > CREDIBILITY:
            f.flags.append("low_accuracy")
        if f.left_p_adjusted is not None and f.left_p_adjusted < POSITION_ALPHA:
            f.flags.append("position_bias")
        if f.timed >= MIN_JUDGMENTS_FOR_SPEED and (wilson_interval(f.too_fast, f.timed)[0] or 0) > TOO_FAST_SHARE:
            f.flags.append("too_fast")
    return figures


# --- judgment noise flags ------------------------------------------------------------------------


def majority_against(others_against: int, others_with: int) -> float:
    """Posterior probability (uniform prior) that most voters favour the other answer, given how
    many other votes went against this judgment and with it.

    >>> majority_against(2, 0), majority_against(3, 0), majority_against(1, 1)
    (0.875, 0.9375, 0.5)
    """
    return float(1 - stats.beta.cdf(0.5, others_against + 1, others_with + 1))


def model_against(margins: list[float]) -> float | None:
    """P(the other answer is better) by the weakest of the reward models, each a Bradley–Terry
    probability sigmoid(score(other) - score(chosen)); None without models. The ensemble "agrees
    confidently against" a judgment when even its least convinced member is past MODEL_CONFIDENCE.

    >>> round(model_against([2.0, 1.5]), 4)
    0.8176
    """
    if not margins:
        return None
    return min(1 / (1 + math.exp(-m)) for m in margins)


def noise_flag(majority: float | None, models: float | None, online_head: float | None) -> tuple[str, float] | None:
    """(reason, strength) for one judgment, or None. `majority`: majority_against(); `models`:
    model_against() over the ensemble's checkpoints; `online_head`: the online head's P(other
    answer better), when it is there. The model signal needs the ensemble and the online head to
    agree (the weaker of the two is its strength).

    >>> noise_flag(0.9375, None, None)
    ('majority', 0.9375)
    >>> noise_flag(None, 0.9, 0.6), noise_flag(None, 0.9, 0.8)
    (None, ('reward_model', 0.8))
    """
    candidates = []
    if majority is not None and majority >= MAJORITY_STRENGTH:
        candidates.append(("majority", majority))
    if models is not None:
        strength = models if online_head is None else min(models, online_head)
        if strength >= MODEL_CONFIDENCE:
            candidates.append(("reward_model", strength))
    if not candidates:
        return None
    reason, strength = max(candidates, key=lambda c: c[1])
    return reason, round(strength, 6)
