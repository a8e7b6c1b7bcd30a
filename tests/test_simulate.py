"""bench/simulate.py: the noise model of simulated annotators (flips, left bias, ties), bootstrap
intervals of win rates, the oracles' handling of sides as shown, and simulated annotators judging
imported HH-RLHF pairs through the REST API of a live server."""

import gzip
import io
import json
import math
import random

import pytest
from django.core.management import call_command

from annotate.actions import do_update_project
from annotate.importing import import_path, iter_parsed
from annotate.models import Comparison, Judgment
from annotate.tokens import TokenRateThrottle
from bench.simulate import (
    GoldOracle,
    NoisyAnnotator,
    RevealedOracle,
    UnknownPair,
    bootstrap_ci,
    distinct_2,
    length_controlled_win_rate,
    pair_key,
    run_annotators,
    win_rate,
)

from .conftest import HH_DEV, shared_file

DRAWS = 20_000


def share(annotator: NoisyAnnotator, prefers_a, answer: str, seed: int = 0) -> float:
    rng = random.Random(seed)
    return sum(annotator.judge(prefers_a, rng) == answer for _ in range(DRAWS)) / DRAWS


def within_binomial(observed: float, p: float, sigmas: float = 4.0) -> bool:
    return abs(observed - p) <= sigmas * math.sqrt(p * (1 - p) / DRAWS)


# --- the noise model --------------------------------------------------------------------------------


@pytest.mark.parametrize("flip", [0.0, 0.1, 0.25, 0.5])
def test_labels_flip_at_the_rate_asked(flip):
    annotator = NoisyAnnotator(flip=flip)
    assert within_binomial(share(annotator, True, "b"), flip)
    assert within_binomial(share(annotator, False, "a"), flip)
    assert share(annotator, True, "tie") == 0


def test_the_defaults_are_alpacafarms_quarter_of_flips_and_no_bias():
    assert NoisyAnnotator() == NoisyAnnotator(flip=0.25, left_bias=0.0, tie_rate=0.0, seed=None)


def test_left_bias_answers_a_whatever_the_oracle_says():
    biased = NoisyAnnotator(flip=0.0, left_bias=0.3)
    assert within_binomial(share(biased, False, "a"), 0.3)  # only the bias ever says a here
    assert share(biased, True, "a") == 1.0
    always = NoisyAnnotator(flip=0.0, left_bias=1.0)
    assert share(always, False, "a") == 1.0


def test_ties_come_first_then_the_bias_then_the_flipped_oracle():
    annotator = NoisyAnnotator(flip=0.1, left_bias=0.5, tie_rate=0.2)
    assert within_binomial(share(annotator, False, "tie"), 0.2)
    assert within_binomial(share(annotator, False, "a"), 0.8 * (0.5 + 0.5 * 0.1))
    assert within_binomial(share(annotator, False, "b"), 0.8 * 0.5 * 0.9)


def test_an_oracle_that_cannot_tell_gets_a_tie_and_numpy_generators_work_too():
    import numpy as np

    assert share(NoisyAnnotator(flip=0.5), None, "tie") == 1.0
    rng = np.random.default_rng(0)
    answers = [NoisyAnnotator(flip=0.25).judge(True, rng) for _ in range(4000)]
    assert abs(answers.count("b") / 4000 - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 4000)


def test_settings_outside_zero_to_one_are_refused_by_name():
    for bad in ({"flip": 1.5}, {"left_bias": -0.1}, {"tie_rate": "0.2"}, {"flip": True}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            NoisyAnnotator(**bad)


def test_a_seed_gives_each_annotator_its_own_repeatable_answers():
    annotator = NoisyAnnotator(flip=0.5, seed=7)
    first = [annotator.judge(True, rng) for rng in [annotator.rng(0)] for _ in range(50)]
    again = [annotator.judge(True, rng) for rng in [annotator.rng(0)] for _ in range(50)]
    other = [annotator.judge(True, rng) for rng in [annotator.rng(1)] for _ in range(50)]
    assert first == again and first != other


# --- win rates ------------------------------------------------------------------------------------


def test_all_wins_and_all_losses_have_a_point_interval():
    assert bootstrap_ci([1.0] * 30) == (1.0, 1.0)
    assert bootstrap_ci([0.0] * 30) == (0.0, 0.0)
    assert win_rate([1, 1, 1]) == {"win_rate": 1.0, "low": 1.0, "high": 1.0, "n": 3, "wins": 3, "ties": 0,
                                   "losses": 0}


def test_the_interval_covers_the_mean_matches_the_normal_one_and_narrows_with_more_outcomes():
    rng = random.Random(3)
    outcomes = [rng.choice([0.0, 0.5, 1.0, 1.0]) for _ in range(400)]
    mean = sum(outcomes) / len(outcomes)
    low, high = bootstrap_ci(outcomes)
    assert low < mean < high
    sd = math.sqrt(sum((x - mean) ** 2 for x in outcomes) / len(outcomes))
    assert high - low == pytest.approx(2 * 1.96 * sd / math.sqrt(len(outcomes)), rel=0.1)
    small = bootstrap_ci(outcomes[:25])
    assert (small[1] - small[0]) > 2.5 * (high - low)  # 16x the outcomes: about 4x narrower
    assert bootstrap_ci(outcomes, level=0.5)[1] - bootstrap_ci(outcomes, level=0.5)[0] < high - low
    assert bootstrap_ci(outcomes, seed=1) != bootstrap_ci(outcomes, seed=2)
    assert bootstrap_ci(outcomes, seed=1) == bootstrap_ci(outcomes, seed=1)


def test_win_rate_counts_ties_as_half():
    result = win_rate([1, 0, 0.5, 0.5])
    assert (result["win_rate"], result["wins"], result["ties"], result["losses"], result["n"]) == (0.5, 1, 2, 1, 4)
    assert result["low"] <= 0.5 <= result["high"]
    assert win_rate([])["win_rate"] is None
    with pytest.raises(ValueError):
        bootstrap_ci([])


# --- oracles ----------------------------------------------------------------------------------------


def test_the_revealed_oracle_answers_for_the_sides_as_shown():
    oracle = RevealedOracle.from_pairs([
        ("Hi", "Hello!", "Go away.", "a"),
        ("Bye", "Later.", "Farewell, friend.", "b"),
        ("Eh", "One.", "Two.", "tie"),
        ("Unlabelled", "x", "y", None),
    ])
    assert oracle.prefers_a("Hi", "Hello!", "Go away.") is True
    assert oracle.prefers_a("Hi", "Go away.", "Hello!") is False  # shown the other way round
    assert oracle.prefers_a("Bye", "Farewell, friend.", "Later.") is True
    assert oracle.prefers_a("Bye", "Later.", "Farewell, friend.") is False
    assert oracle.prefers_a("Eh", "Two.", "One.") is None
    assert pair_key("A\r\nB", "x", "y") == pair_key("A\nB", "y", "x")
    for prompt, a, b in (("Unlabelled", "x", "y"), ("Hi", "Hello!", "Something else")):
        with pytest.raises(UnknownPair):
            oracle.prefers_a(prompt, a, b)


def test_the_revealed_oracle_reads_the_importers_rows():
    path = shared_file(HH_DEV)
    with gzip.open(path, "rb") as handle:
        rows = list(iter_parsed(io.BytesIO(b"".join(handle.readline() for _ in range(5))), "hh"))
    oracle = RevealedOracle.from_parsed_rows(rows)
    for row in rows:
        chosen, rejected = row.responses[0][0], row.responses[1][0]  # HH: the chosen dialogue comes first
        assert oracle.prefers_a(row.prompt_text, chosen, rejected) is True
        assert oracle.prefers_a(row.prompt_text, rejected, chosen) is False


def test_the_gold_oracle_asks_its_score_function_about_the_sides_shown():
    seen = []

    def longer_is_better(prompt, responses):
        seen.append((prompt, list(responses)))
        return [float(len(r)) for r in responses]

    oracle = GoldOracle(longer_is_better)
    assert oracle.prefers_a("Q", "a long answer", "short") is True
    assert oracle.prefers_a("Q", "short", "a long answer") is False
    assert oracle.prefers_a("Q", "same", "size") is None
    assert seen[0] == ("Q", ["a long answer", "short"])


# --- through the API of a live server ------------------------------------------------------------------


def import_hidden(project, tmp_path, pairs: int) -> RevealedOracle:
    """The first `pairs` HH-RLHF pairs imported with their labels hidden; the oracle holds them."""
    path = tmp_path / "pool.jsonl"
    with gzip.open(shared_file(HH_DEV), "rt") as handle:
        path.write_text("".join(handle.readline() for _ in range(pairs)))
    result = import_path(project, path, format="hh", labels="ignore")
    assert result.comparisons_added == pairs and result.judgments_added == 0
    with open(path, "rb") as raw:
        return RevealedOracle.from_parsed_rows(iter_parsed(raw, "hh"))


def simulated_tokens(project, count: int) -> list[str]:
    out = io.StringIO()
    call_command("simulated_annotators", project.slug, "--count", str(count), stdout=out)
    return [row["token"] for row in json.loads(out.getvalue())["annotators"]]


def expected_choice(oracle: RevealedOracle, comparison: Comparison) -> str:
    a_wins = oracle.prefers_a(comparison.prompt.text, comparison.candidate_a.text, comparison.candidate_b.text)
    return "a" if a_wins else "b"


def test_simulated_annotators_label_a_hidden_pool_through_the_api(project, users, live_server, tmp_path, api_for):
    oracle = import_hidden(project, tmp_path, 30)
    tokens = simulated_tokens(project, 3)
    honest = NoisyAnnotator(flip=0.0, seed=1)

    first = run_annotators(live_server.url, project.slug, tokens, oracle, honest, max_labels=10, threads=3)
    assert (first["labels"], first["stopped"], first["errors"]) == (10, "max_labels", 0)
    rest = run_annotators(live_server.url, project.slug, tokens, oracle, honest, threads=3)
    assert (rest["labels"], rest["stopped"], rest["errors"], rest["agreement"]) == (20, "empty", 0, 1.0)
    assert sum(row["labels"] for row in rest["annotators"]) == 20 and len(rest["annotators"]) == 3

    judgments = list(Judgment.objects.filter(project=project).select_related(
        "annotator", "comparison__prompt", "comparison__candidate_a", "comparison__candidate_b"))
    assert len(judgments) == 30 and {j.comparison_id for j in judgments} == set(
        Comparison.objects.filter(project=project).values_list("id", flat=True))
    assert {j.annotator.username for j in judgments} <= {"sim-1", "sim-2", "sim-3"}
    assert all(j.choice == expected_choice(oracle, j.comparison) for j in judgments)  # 100% with no flips
    assert {j.shown_left for j in judgments} == {"a", "b"}  # both ways round on screen, mapped back
    assert not Comparison.objects.filter(project=project, status="open").exists()

    owner = api_for("owner")
    base = f"/api/v1/projects/{project.slug}"
    assert owner.get(f"{base}/annotators/").json() == []
    included = owner.get(f"{base}/annotators/?include_simulated=1").json()
    assert sum(row["judgments"] for row in included) == 30 and {row["simulated"] for row in included} == {True}
    assert owner.get(f"{base}/bias/").json()["position"]["n"] == 0
    assert owner.get(f"{base}/bias/?include_simulated=1").json()["position"]["n"] == 30


@pytest.mark.parametrize("threads", [3, 1])
def test_every_annotator_votes_on_every_pair_when_each_needs_three_votes(project, users, live_server, tmp_path,
                                                                         threads):
    """Termination: an annotator told 204 while others hold comparisons it has yet to judge waits
    for them, so no comparison is left short of its votes; with one thread they take turns."""
    do_update_project(project, name=project.name, instructions="", votes_wanted=3, criteria=[])
    project.refresh_from_db()
    oracle = import_hidden(project, tmp_path, 8)
    tokens = simulated_tokens(project, 3)
    summary = run_annotators(live_server.url, project.slug, tokens, oracle, NoisyAnnotator(flip=0.0, seed=2),
                             threads=threads)
    assert (summary["labels"], summary["stopped"], summary["errors"]) == (24, "empty", 0)
    assert [row["labels"] for row in summary["annotators"]] == [8, 8, 8]
    assert set(Comparison.objects.filter(project=project).values_list("votes", "status")) == {(3, "complete")}


def test_noisy_annotators_agree_with_the_oracle_less_and_unknown_pairs_are_skipped(project, users, live_server,
                                                                                    tmp_path):
    oracle = import_hidden(project, tmp_path, 20)
    known = dict(list(oracle.labels.items())[:15])  # five pairs the oracle never saw
    tokens = simulated_tokens(project, 2)
    summary = run_annotators(live_server.url, project.slug, tokens, RevealedOracle(known),
                             NoisyAnnotator(flip=1.0, seed=3))
    assert (summary["labels"], summary["skipped"], summary["agreement"]) == (15, 10, 0.0)  # each skips the five
    assert Judgment.objects.filter(project=project).count() == 15


def test_a_throttled_annotator_waits_and_carries_on(project, users, live_server, tmp_path, monkeypatch):
    # 3 a second: 25 requests fit under it only if each took a third of a second (at
    # 10/s a busy CI answered at ~11/s and never throttled)
    monkeypatch.setattr(TokenRateThrottle, "THROTTLE_RATES", {"token": "3/s"})
    oracle = import_hidden(project, tmp_path, 12)
    summary = run_annotators(live_server.url, project.slug, simulated_tokens(project, 1), oracle,
                             NoisyAnnotator(flip=0.0))
    assert (summary["labels"], summary["errors"], summary["stopped"]) == (12, 0, "empty")
    assert summary["throttled"] >= 1


def test_the_length_controlled_win_rate_sees_through_a_judge_that_likes_short_answers():
    """A policy that only got shorter, judged by a judge that only likes short answers, wins on the
    raw rate but not at equal length; a policy that got better at every length wins on both."""
    rng = random.Random(3)
    diffs = [rng.randint(-40, 10) for _ in range(200)]  # the new answers are mostly shorter
    brevity = [0.5 if d == 0 else float(d < 0) if rng.random() < 0.8 else float(d > 0) for d in diffs]
    raw = win_rate(brevity)
    controlled = length_controlled_win_rate(brevity, diffs)
    assert raw["low"] > 0.6  # 0.647: "the round won"
    # 0.57 (0.48-0.66): not above even at equal length, and the judge's taste for brevity is found
    assert controlled["low"] < 0.5 and controlled["length_effect"] < -0.1
    better = [float(rng.random() < 0.7) for _ in diffs]  # wins 70% whatever the lengths
    controlled = length_controlled_win_rate(better, diffs)  # 0.72 (0.63-0.80), length effect 0.02
    assert controlled["low"] > 0.55 and controlled["low"] < 0.7 < controlled["high"]
    assert abs(controlled["length_effect"]) < 0.1
    with pytest.raises(ValueError, match="2 outcomes but 1 length differences"):
        length_controlled_win_rate([1, 0], [3])


def test_distinct_2_tells_fluent_answers_from_the_repetition_a_gamed_judge_rewarded():
    """The HH responses people wrote read as fluent text; the answers DPO policies gave when they
    gamed the loop bench's gold judge (docs/benchmarks.md, "DPO rounds through the loop bench")
    repeat themselves, and distinct-2 says so where length alone would not."""
    with gzip.open(shared_file(HH_DEV), "rb") as handle:
        rows = list(iter_parsed(io.BytesIO(b"".join(handle.readline() for _ in range(200))), "hh"))
    people = [response for row in rows for response, *_ in row.responses if len(response.split()) >= 8]
    assert len(people) > 100 and distinct_2(people) > 0.85
    gamed = ["Ugh, buddy! Just another day! I'm sorry, I'm sorry, I'm sorry. I'll be happy to apologize for the day.",
             "Oh no, no no no no no no no no no no no no no no no no no no no no no no no no no no no no",
             "I'm sorry, I'm sorry to inform you. I'm sorry, I'm sorry, I'm so sorry, I'm really sorry."]
    assert distinct_2(gamed) < 0.6 < distinct_2(people[:3])
    assert distinct_2(["SHOCKER"]) == 1.0  # too short to repeat: read the length beside it
    with pytest.raises(ValueError, match="at least one answer"):
        distinct_2([])
