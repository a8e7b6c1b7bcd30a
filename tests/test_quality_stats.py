"""The statistics of quality control against answers worked out by hand (rewards.quality)."""

import math

import pytest

from rewards import quality as q


def test_left_rate_and_its_exact_binomial_p_value():
    # P(X >= 9) + P(X <= 1) for X ~ Bin(10, 1/2) = 2 * (10 + 1) / 1024
    assert q.left_rate_test(9, 10) == (0.9, 22 / 1024)
    # all 8 left: 2 * (1/2)^8
    assert q.left_rate_test(8, 8) == (1.0, pytest.approx(2 / 256))
    assert q.left_rate_test(0, 0) == (None, None)


def test_holm_steps_down_and_stays_monotone():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    assert q.holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]
    assert q.holm([0.5, 0.6]) == [1.0, 1.0]
    assert q.holm([]) == []
    assert q.holm([None, 0.2]) == [None, 0.2]


def test_wilson_interval_by_hand():
    # n=10, p=0.8, z=1.96: centre (0.8 + 0.19208) / 1.38416, half 1.96 * sqrt(0.016 + 0.0009604) / 1.38416
    z = 1.959964
    centre = (0.8 + z * z / 20) / (1 + z * z / 10)
    half = z * math.sqrt(0.8 * 0.2 / 10 + z * z / 400) / (1 + z * z / 10)
    low, high = q.wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(centre - half), pytest.approx(centre + half))
    assert q.wilson_interval(0, 0) == (None, None)


def test_posterior_probability_of_accuracy_below_a_threshold():
    assert q.prob_below(0, 0, 0.65) == pytest.approx(0.65)          # uniform prior
    assert q.prob_below(1, 0, 0.65) == pytest.approx(0.65 ** 2)     # Beta(2, 1): x^2
    assert q.prob_below(0, 1, 0.5) == pytest.approx(1 - 0.5 ** 2)   # Beta(1, 2): 1 - (1-x)^2


def test_majority_against_and_model_against_by_hand():
    assert q.majority_against(2, 0) == pytest.approx(1 - 0.5 ** 3)  # Beta(3, 1)
    assert q.majority_against(0, 0) == pytest.approx(0.5)
    assert q.model_against([]) is None
    assert q.model_against([0.0, 3.0]) == pytest.approx(0.5)        # the least convinced model
    assert q.noise_flag(0.875, None, None) == ("majority", 0.875)
    assert q.noise_flag(0.5, q.model_against([2.0]), None) == ("reward_model", pytest.approx(1 / (1 + math.exp(-2))))
    assert q.noise_flag(0.5, 0.9, 0.7) is None  # the online head does not agree confidently
    assert q.noise_flag(None, None, None) is None


def test_speed_that_cannot_be_reading():
    assert q.min_read_seconds(0) == 1.0
    assert q.min_read_seconds(2500) == 25.0
    assert q.median([4.0, 1.0, 10.0, 2.0]) == 3.0
    assert q.median([]) is None


def test_dawid_skene_on_gold_alone_is_the_beta_posterior_mean():
    # 3 right and 1 wrong on gold under the Beta(2, 1) prior: (2 + 3) / (3 + 4)
    votes = {1: {"x": "a"}, 2: {"x": "b"}, 3: {"x": "a"}, 4: {"x": "a"}}
    gold = {1: "a", 2: "b", 3: "a", 4: "b"}
    accuracy, right, wrong = q.dawid_skene(votes, gold)["x"]
    assert (accuracy, right, wrong) == (pytest.approx(5 / 7), 3.0, 1.0)
    assert q.dawid_skene({1: {"x": "a"}}) == {}  # one vote and no gold: no evidence


def test_zero_judgments_show_nothing_rather_than_a_division_error():
    row = q.flag_annotators([q.AnnotatorFigures(username="new")])[0].as_dict()
    assert row == {"username": "new", "judgments": 0, "gold_accuracy": None, "gold_count": 0,
                   "majority_agreement": None, "majority_count": 0, "left_rate": None, "left_count": 0,
                   "left_p_value": None, "left_p_adjusted": None, "median_seconds": None, "too_fast_share": None,
                   "trust": None, "flagged": False, "reasons": []}


def test_flags_with_their_reasons_by_hand():
    clicker = q.AnnotatorFigures(username="clicker", judgments=20, left=20, decided=20)
    honest = q.AnnotatorFigures(username="honest", judgments=20, left=11, decided=20, gold_right=9, gold_seen=10)
    spammer = q.AnnotatorFigures(username="spammer", judgments=40, soft_right=20, soft_wrong=20)
    fast = q.AnnotatorFigures(username="fast", judgments=20, timed=20, too_fast=20, seconds=[0.5] * 20)
    flagged = {f.username: f.flags for f in q.flag_annotators([clicker, honest, spammer, fast])}
    # clicker: p = 2 / 2^20, times the 2 annotators with a left rate (Holm) is far below 0.01
    assert clicker.left_p_adjusted == pytest.approx(2 * 2 / 2 ** 20)
    # spammer: P(acc < 0.65 | Beta(21, 21)) ~ 0.97 > 0.95; honest's gold 9/10 gives ~0.02
    assert flagged == {"clicker": ["position_bias"], "honest": [], "spammer": ["low_accuracy"], "fast": ["too_fast"]}
