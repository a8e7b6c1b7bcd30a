"""The Bradley–Terry fits against answers known in advance: a hand-computable two-player case,
strengths that generated the battles recovered in order, ties as half a win, the reward head
learning a known direction, and the refusals."""

import math

import numpy as np
import pytest

from rewards.bradley_terry import arena_ratings, fit_logistic
from rewards.preference_head import disagreement_with_label, fit_head, member_probabilities, priorities


def test_two_players_match_the_closed_form():
    # A beats B 3 times in 4: P = 3/4 = 1/(1 + 10^(-Δ/400)), so Δ = 400·log10(3).
    rows = arena_ratings([("A", "B", "a")] * 3 + [("B", "A", "a")], rounds=0)
    by = {r.source: r for r in rows}
    assert by["A"].rating - by["B"].rating == pytest.approx(400 * math.log10(3), abs=0.5)
    assert (by["A"].rating + by["B"].rating) / 2 == pytest.approx(1000)
    assert (by["A"].wins, by["A"].losses, by["B"].wins, by["B"].battles) == (3, 1, 1, 4)


def test_a_tie_is_half_a_win():
    # One win each and two ties: even. Two wins and a tie against none: P(A) = 2.5/3.
    even = {r.source: r.rating for r in arena_ratings([("A", "B", "a"), ("A", "B", "b"), ("A", "B", "tie"),
                                                       ("B", "A", "tie")], rounds=0)}
    assert even["A"] == pytest.approx(even["B"], abs=1e-6)
    lopsided = {r.source: r.rating for r in arena_ratings([("A", "B", "a"), ("A", "B", "a"), ("A", "B", "tie")],
                                                          rounds=0)}
    assert lopsided["A"] - lopsided["B"] == pytest.approx(400 * math.log10(2.5 / 0.5), abs=1.0)


def test_known_strengths_are_recovered_in_order_with_intervals_that_cover_them():
    rng = np.random.default_rng(7)
    truth = {"gpt": 1250.0, "llama": 1100.0, "falcon": 1000.0, "alpaca": 950.0, "base": 700.0}
    names = list(truth)
    battles = []
    for _ in range(4000):
        a, b = rng.choice(len(names), 2, replace=False)
        p_a = 1 / (1 + 10 ** ((truth[names[b]] - truth[names[a]]) / 400))
        u = rng.random()
        battles.append((names[a], names[b], "tie" if abs(u - p_a) < 0.03 else "a" if u < p_a else "b"))
    rows = arena_ratings(battles, names + ["never-judged"], rounds=100, seed=1)
    ranked = [r for r in rows if r.rating is not None]
    assert [r.source for r in ranked] == sorted(truth, key=truth.get, reverse=True)
    offset = np.mean(list(truth.values())) - 1000  # ratings are centred on 1000
    for r in ranked:
        assert r.ci_low < r.rating < r.ci_high
        assert r.ci_low - 25 <= truth[r.source] - offset <= r.ci_high + 25  # within the interval, give or take
        assert r.battles > 1000
    assert [r.rank for r in ranked] == [1, 2, 3, 4, 5]
    assert rows[-1].source == "never-judged" and rows[-1].rating is None and rows[-1].battles == 0


def test_bad_battles_are_refused_with_what_is_wrong():
    with pytest.raises(ValueError, match="winner must be a, b or tie"):
        arena_ratings([("A", "B", "left")])
    with pytest.raises(ValueError, match="cannot battle itself"):
        arena_ratings([("A", "A", "a")])
    with pytest.raises(ValueError, match="l2 must be positive"):
        fit_logistic(np.ones((2, 1)), np.ones(2), l2=0)


def test_no_battles_leaves_everyone_unranked():
    rows = arena_ratings([], ["x", "y"])
    assert [(r.source, r.rating, r.rank) for r in rows] == [("x", None, None), ("y", None, None)]


def test_the_head_learns_a_known_direction_and_flags_flipped_labels():
    rng = np.random.default_rng(3)
    w = rng.normal(size=16)
    X = rng.normal(size=(600, 16))
    y = (X @ w > 0).astype(float)
    flipped = rng.choice(600, 30, replace=False)
    y[flipped] = 1 - y[flipped]
    fit = fit_head(X[:400], y[:400], members=6, l2=1.0)
    held_out = ((member_probabilities(fit.weights, X[400:])[0] > 0.5) == (y[400:] > 0.5)).mean()
    assert held_out > 0.8 and fit.loss_after < fit.loss_before / 2
    noise = disagreement_with_label(fit.oob_p_first[:400], y[:400])
    is_flipped = np.isin(np.arange(400), flipped)
    assert np.nanmean(noise[is_flipped]) > np.nanmean(noise[~is_flipped]) + 0.4
    # The queue's priority puts the pairs the head cannot tell apart first.
    p = priorities(member_probabilities(fit.weights, X[400:]))
    margin = np.abs(X[400:] @ fit.weights[0])
    assert np.corrcoef(p, margin)[0, 1] < -0.5
