"""The always-fresh reward head: a Bradley–Terry logistic head on frozen embeddings, a bootstrap
ensemble of them, and what the queue and quality control read from it.

A response's reward is r = w·φ; P(a preferred to b) = σ(w·(φₐ − φ_b)). With φ a frozen sentence
embedding (MiniLM, 384 numbers) the fit is a small convex problem: members refit in milliseconds
on a few hundred judgments, so the head can follow every batch of new labels.

Prompt-aware features (`pair_features(..., prompt=...)`) add the difference scaled elementwise by
the prompt's embedding, so what counts as better may depend on what was asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .bradley_terry import fit_logistic, logistic_loss, sigmoid

DEFAULT_L2 = 3.0  # the queue head's L2 (PREFLOOP_HEAD_L2) and the checkpoints' embedding head's


def pair_features(a: np.ndarray, b: np.ndarray, prompt: np.ndarray | None = None) -> np.ndarray:
    """Features of "a over b" for rows of embeddings: φₐ − φ_b, and with a prompt also
    (φₐ − φ_b) ⊙ e_prompt. Swapping a and b negates them, so P(b over a) = 1 − P(a over b).

    >>> pair_features(np.array([[1.0, 2.0]]), np.array([[0.0, 1.0]]), np.array([[2.0, 3.0]])).tolist()
    [[1.0, 1.0, 2.0, 3.0]]
    """
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if prompt is None:
        return diff
    return np.concatenate([diff, diff * np.asarray(prompt, dtype=np.float64)], axis=1)


@dataclass
class HeadFit:
    """A fitted ensemble: one weight vector per member, and how the fit went."""

    weights: np.ndarray  # [members, features]
    n: int
    train_accuracy: float
    loss_before: float  # mean loss of the untrained head (ln 2 on decisive labels)
    loss_after: float
    # Mean P(first side preferred) of the members that never saw each row (NaN where all saw it).
    oob_p_first: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    @property
    def members(self) -> int:
        return len(self.weights)


def fit_head(X: np.ndarray, y: np.ndarray, *, members: int = 8, l2: float = 1.0, seed: int = 0,
             warm: np.ndarray | None = None) -> HeadFit:
    """Fit member 0 on all rows and members 1… on bootstrap resamples (their spread is the
    ensemble's disagreement). y: 1 when the first side won, 0 when the second, ½ for a tie.
    `oob_p_first[i]` is the mean P(first side) of the members that never saw row i: against its
    label, an honest out-of-sample label-noise signal (`disagreement_with_label`).

    >>> rng = np.random.default_rng(0); w = 3 * rng.normal(size=5); X = rng.normal(size=(200, 5))
    >>> y = (rng.random(200) < sigmoid(X @ w)).astype(float)
    >>> fit = fit_head(X, y, members=4)
    >>> fit.members, fit.train_accuracy > 0.8, fit.loss_after < fit.loss_before
    (4, True, True)
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if members < 1:
        raise ValueError("members must be at least 1")
    n, d = X.shape
    rng = np.random.default_rng(seed)
    weights = np.zeros((members, d))
    oob_sum, oob_count = np.zeros(n), np.zeros(n)
    for m in range(members):
        counts = np.ones(n) if m == 0 else np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        start = None if warm is None or len(warm) <= m or warm.shape[1] != d else warm[m]
        weights[m] = fit_logistic(X, y, l2=l2, weights=counts, w0=start)
        if m > 0:
            out = counts == 0
            oob_sum[out] += sigmoid(X[out] @ weights[m])
            oob_count[out] += 1
    p_all = sigmoid(X @ weights[0])
    decisive = y != 0.5
    accuracy = float(((p_all > 0.5) == (y > 0.5))[decisive].mean()) if decisive.any() else float("nan")
    oob = np.where(oob_count > 0, oob_sum / np.maximum(oob_count, 1), np.nan)
    return HeadFit(weights, n, accuracy, logistic_loss(X, y, np.zeros(d)), logistic_loss(X, y, weights[0]), oob)


def fit_pair_head(chosen: np.ndarray, rejected: np.ndarray, *, l2: float) -> np.ndarray:
    """One Bradley–Terry head w on frozen embeddings of (chosen, rejected) rows: P(chosen wins) =
    σ(w·(φ_chosen − φ_rejected)). With no intercept the orientation carries no bias, so every row
    is a win of its first side (y = 1); the same fit as the queue's head on the same labels.

    >>> rng = np.random.default_rng(0); w = rng.normal(size=4); a, b = rng.normal(size=(2, 300, 4))
    >>> first = sigmoid((a - b) @ w) > rng.random(300)
    >>> fit = fit_pair_head(np.where(first[:, None], a, b), np.where(first[:, None], b, a), l2=1.0)
    >>> float(np.corrcoef(fit, w)[0, 1]) > 0.9
    True
    """
    X = pair_features(chosen, rejected)
    return fit_logistic(X, np.ones(len(X)), l2=l2)


def member_probabilities(weights: np.ndarray, X: np.ndarray) -> np.ndarray:
    """P(first side preferred) of every member for every row: [members, rows]."""
    return sigmoid(np.asarray(X, dtype=np.float64) @ np.asarray(weights, dtype=np.float64).T).T


def priorities(probs: np.ndarray, disagreement_weight: float = 2.0) -> np.ndarray:
    """Where a label teaches most: uncertainty 1 − |2p̄ − 1| (1 when the head cannot tell the two
    apart, 0 when sure) plus `disagreement_weight` × the members' standard deviation of P.
    `probs` is [members, rows] (or one row of probabilities for a single head).

    >>> priorities(np.array([[0.5, 0.9, 0.9], [0.5, 0.9, 0.5]])).round(2).tolist()
    [1.0, 0.2, 1.0]
    """
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    mean = probs.mean(axis=0)
    return (1.0 - np.abs(2.0 * mean - 1.0)) + disagreement_weight * probs.std(axis=0)


def disagreement_with_label(p_first: np.ndarray, y: np.ndarray) -> np.ndarray:
    """How strongly the head disagrees with each judgment: the probability it gives the side
    the annotator did not choose (½ on a tie is no disagreement: |p − y|).

    >>> disagreement_with_label(np.array([0.9, 0.9, 0.5]), np.array([1.0, 0.0, 0.5])).round(2).tolist()
    [0.1, 0.9, 0.0]
    """
    return np.abs(np.asarray(p_first, dtype=np.float64) - np.asarray(y, dtype=np.float64))
