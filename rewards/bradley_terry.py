"""Bradley–Terry fits in plain numpy: the L2-regularised logistic regression every pairwise model
here rests on, and Chatbot Arena's ratings of the sources (models) that answered.

    P(i beats j) = σ(sᵢ − sⱼ)

For a reward head sᵢ = w·φ(response i) and the fit learns w from feature differences; for a
leaderboard sᵢ is one free strength per source and the fit is over one-hot differences.
Ties count as half a win each way (a soft label of ½), as the Arena does.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

LN10 = math.log(10.0)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) without overflow.

    >>> sigmoid(np.array([-800.0, 0.0, 800.0])).round(3).tolist()
    [0.0, 0.5, 1.0]
    """
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    positive = z >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-z[positive]))
    e = np.exp(z[~positive])
    out[~positive] = e / (1.0 + e)
    return out


def logistic_loss(X: np.ndarray, y: np.ndarray, w: np.ndarray, weights: np.ndarray | None = None,
                  l2: float = 0.0) -> float:
    """Mean weighted cross-entropy of σ(Xw) against soft labels y, plus (l2 / 2n)·‖w‖²."""
    z = X @ w
    s = np.ones(len(y)) if weights is None else weights
    # log σ(z) = −log(1 + e^−z), computed stably with logaddexp
    nll = y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z)
    total = max(float(s.sum()), 1e-12)
    return float((s * nll).sum() / total + 0.5 * l2 * float(w @ w) / total)


def fit_logistic(X: np.ndarray, y: np.ndarray, *, l2: float = 1.0, weights: np.ndarray | None = None,
                 w0: np.ndarray | None = None, max_iter: int = 50, tol: float = 1e-6) -> np.ndarray:
    """Weights w minimising Σᵢ sᵢ·CE(σ(xᵢ·w), yᵢ) + (l2/2)·‖w‖², no intercept, by Newton's method
    with a backtracking step. y may be soft (ties: ½). Each Newton step solves a min(n, d)-sized
    system (the Woodbury form when there are fewer rows than features), so a 384-dimensional head
    on a few hundred pairs refits in milliseconds; `w0` warm-starts a refit.

    One feature, three wins out of four: without the penalty σ(w) = ¾, so w = ln 3.

    >>> X = np.array([[1.0], [1.0], [1.0], [1.0]]); y = np.array([1.0, 1.0, 1.0, 0.0])
    >>> round(float(fit_logistic(X, y, l2=1e-9)[0]), 4), round(math.log(3), 4)
    (1.0986, 1.0986)
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, d = X.shape
    if len(y) != n:
        raise ValueError(f"X has {n} rows but y has {len(y)}")
    if l2 <= 0:
        raise ValueError("l2 must be positive (an unpenalised fit diverges on separable data)")
    s = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    w = np.zeros(d) if w0 is None else np.array(w0, dtype=np.float64)
    if n == 0:
        return w

    def objective(v):
        z = X @ v
        return float((s * (y * np.logaddexp(0.0, -z) + (1 - y) * np.logaddexp(0.0, z))).sum() + 0.5 * l2 * v @ v)

    current = objective(w)
    for _ in range(max_iter):
        p = sigmoid(X @ w)
        grad = X.T @ (s * (p - y)) + l2 * w
        h = s * p * (1.0 - p)
        if n < d:  # (λI + XᵀDX)⁻¹g = (g − Xᵀ(λI + DXXᵀ)⁻¹DXg)/λ
            inner = l2 * np.eye(n) + h[:, None] * (X @ X.T)
            step = (grad - X.T @ np.linalg.solve(inner, h * (X @ grad))) / l2
        else:
            step = np.linalg.solve((X.T * h) @ X + l2 * np.eye(d), grad)
        scale = 1.0
        while True:
            candidate = w - scale * step
            value = objective(candidate)
            if value <= current + 1e-12 or scale < 1e-4:
                break
            scale *= 0.5
        w, improvement, current = candidate, current - value, value
        if np.max(np.abs(scale * step)) < tol or improvement < tol * 1e-3:
            break
    return w


# --- leaderboard ----------------------------------------------------------------------------------


@dataclass
class Rating:
    source: str
    rating: float | None  # Elo-scaled; None: no battles (unranked)
    ci_low: float | None
    ci_high: float | None
    battles: int
    wins: int
    losses: int
    ties: int
    rank: int | None  # 1 + the number of sources whose interval lies wholly above this one's

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _fit_strengths(pairs: list[tuple[int, int]], wins_a: np.ndarray, weights: np.ndarray, players: int,
                   l2: float) -> np.ndarray:
    X = np.zeros((len(pairs), players))
    for row, (a, b) in enumerate(pairs):
        X[row, a], X[row, b] = LN10, -LN10
    return fit_logistic(X, wins_a, l2=l2, weights=weights)


def arena_ratings(battles: list[tuple[str, str, str]], sources: list[str] | None = None, *, scale: float = 400.0,
                  base_rating: float = 1000.0, rounds: int = 200, seed: int = 0, l2: float = 1e-4) -> list[Rating]:
    """Chatbot Arena's Bradley–Terry ratings: a logistic regression on battles (model_a, model_b,
    winner with winner in a / b / tie), P(a beats b) = 1 / (1 + 10^((R_b − R_a)/scale)), ties half
    a win each way; ratings centred on `base_rating`; 95% intervals from `rounds` bootstrap
    resamples of the battles. `sources` lists every source that answered: those without battles
    come back unranked. Sorted best first, unranked last.

    Two players, A wins 3 of 4: R_A − R_B = 400·log₁₀3 ≈ 190.8, centred on 1000.

    >>> r = arena_ratings([("A", "B", "a")] * 3 + [("A", "B", "b")], ["A", "B", "C"], rounds=0)
    >>> [(x.source, x.rating and round(x.rating, 1), x.battles, x.rank) for x in r]
    [('A', 1095.4, 4, 1), ('B', 904.6, 4, 2), ('C', None, 0, None)]
    """
    if scale <= 0:
        raise ValueError("scale must be positive")
    for a, b, winner in battles:
        if winner not in ("a", "b", "tie"):
            raise ValueError(f"winner must be a, b or tie, not {winner!r}")
        if a == b:
            raise ValueError(f"a source cannot battle itself ({a!r})")
    named = sorted({s for a, b, _ in battles for s in (a, b)})
    index = {s: i for i, s in enumerate(named)}
    cells = Counter((index[a], index[b], winner) for a, b, winner in battles)
    keys = list(cells)
    pairs = [(a, b) for a, b, _ in keys]
    target = np.array([1.0 if w == "a" else 0.0 if w == "b" else 0.5 for _, _, w in keys])
    counts = np.array([cells[k] for k in keys], dtype=np.float64)

    def ratings_from(weights: np.ndarray) -> np.ndarray:
        strengths = _fit_strengths(pairs, target, weights, len(named), l2) if keys else np.zeros(len(named))
        played = np.zeros(len(named), dtype=bool)
        for (a, b), w in zip(pairs, weights, strict=True):
            if w > 0:
                played[a] = played[b] = True
        r = scale * strengths
        return r - (r[played].mean() if played.any() else 0.0) + base_rating

    point = ratings_from(counts)
    low = high = None
    if rounds > 0 and keys:
        rng = np.random.default_rng(seed)
        draws = np.stack([ratings_from(rng.multinomial(int(counts.sum()), counts / counts.sum()).astype(np.float64))
                          for _ in range(rounds)])
        low, high = np.percentile(draws, 2.5, axis=0), np.percentile(draws, 97.5, axis=0)
    tally = {s: Counter() for s in named}
    for a, b, winner in battles:
        tally[a]["battles"] += 1
        tally[b]["battles"] += 1
        if winner == "tie":
            tally[a]["ties"] += 1
            tally[b]["ties"] += 1
        else:
            tally[a if winner == "a" else b]["wins"] += 1
            tally[b if winner == "a" else a]["losses"] += 1
    rows = []
    for s in named:
        i = index[s]
        rows.append(Rating(s, float(point[i]), None if low is None else float(low[i]),
                           None if high is None else float(high[i]), tally[s]["battles"], tally[s]["wins"],
                           tally[s]["losses"], tally[s]["ties"], None))
    for row in rows:  # the Arena's rank: 1 + how many are surely better
        row.rank = 1 + sum(1 for other in rows if other is not row and (
            (other.ci_low > row.ci_high) if row.ci_high is not None else (other.rating > row.rating)))
    rows.sort(key=lambda r: (-r.rating, r.source))
    unranked = sorted(set(sources or []) - set(named))
    return rows + [Rating(s, None, None, None, 0, 0, 0, 0, None) for s in unranked]
