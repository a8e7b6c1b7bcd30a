"""Diversity for batch selection: greedy k-center (farthest-first traversal), so a batch of
uncertain pairs does not spend its labels on near-copies of one another or of what is labelled."""

from __future__ import annotations

import numpy as np


def k_center_greedy(candidates: np.ndarray, labelled: np.ndarray, k: int) -> list[int]:
    """Indices of `k` rows of `candidates`, each in turn the one farthest (Euclidean) from the
    labelled rows and the ones already picked.

    >>> k_center_greedy(np.array([[0.0], [0.1], [5.0], [9.0]]), np.array([[0.0]]), 2)
    [3, 2]
    """
    candidates = np.asarray(candidates, dtype=np.float64)
    k = min(k, len(candidates))
    if k <= 0:
        return []
    labelled = np.asarray(labelled, dtype=np.float64).reshape(-1, candidates.shape[1])
    if len(labelled):
        sq = (candidates ** 2).sum(1)[:, None] - 2 * candidates @ labelled.T + (labelled ** 2).sum(1)[None, :]
        nearest = np.sqrt(np.maximum(sq.min(axis=1), 0.0))
    else:
        nearest = np.full(len(candidates), np.inf)
    picked: list[int] = []
    for _ in range(k):
        best = int(np.argmax(nearest)) if np.isfinite(nearest).any() else len(picked)
        picked.append(best)
        distance = np.sqrt(((candidates - candidates[best]) ** 2).sum(1))
        nearest = np.minimum(nearest, distance)
        nearest[picked] = -1.0
    return picked
