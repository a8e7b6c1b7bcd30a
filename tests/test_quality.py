"""Quality control through the API and the pages: gold marking and its blindness, the gold share
of the queue, annotator statistics by hand, noise flags (majority and reward models), settling
with its refusals and history, and export / snapshots with the quality options."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from annotate.actions import JudgmentInput, do_create_project, do_set_member, do_submit_judgment
from annotate.export import ExportOptions, iter_rows
from annotate.models import Candidate, Comparison, Judgment, Prompt, Role, Settlement, content_hash
from annotate.quality import annotator_statistics, bias_report, judgment_flags, option_effects
from annotate.queue import next_comparison_for
from annotate.review import do_mark_gold, do_set_gold_share, review_queue
from annotate.tokens import create_token

from .conftest import client_for

pytestmark = pytest.mark.django_db


def make_pairs(project, n: int, start: int = 0) -> list[Comparison]:
    """n comparisons whose response a is the short one and b the longer (made row by row: the
    importer's set-based insert does not promise which response gets the lower id)."""
    made = []
    for i in range(start, start + n):
        prompt = Prompt.objects.create(project=project, text=f"Question {i}?", content_hash=content_hash(f"Question {i}?"))
        a, b = (Candidate.objects.create(prompt=prompt, text=text, content_hash=content_hash(text), source=source)
                for text, source in ((f"Short {i}.", "model-x"), (f"A much longer answer number {i}.", "model-y")))
        made.append(Comparison.objects.create(project=project, prompt=prompt, candidate_a=a, candidate_b=b,
                                              votes_wanted=project.votes_wanted))
    return made


def vote(comparison, user, choice, shown_left="a", ms=20000, rationale=""):
    return Judgment.objects.create(project=comparison.project, comparison=comparison, annotator=user, choice=choice,
                                   strength=None if choice == "tie" else "clear", shown_left=shown_left, ms_spent=ms,
                                   rationale=rationale)


@pytest.fixture
def reviewer(project, users):
    get_user_model().objects.create_user("reviewer")
    do_set_member(project, "reviewer", Role.REVIEWER)
    return get_user_model().objects.get(username="reviewer")


# --- gold -----------------------------------------------------------------------------------------


def test_gold_needs_a_known_answer_and_only_managers_mark_it(project, users, api_for):
    comparison = make_pairs(project, 1)[0]
    url = f"/api/v1/projects/{project.slug}/comparisons/{comparison.pk}/gold/"
    assert api_for("annotator").post(url, {"gold_choice": "a"}, format="json").status_code == 403
    assert api_for("outsider").post(url, {"gold_choice": "a"}, format="json").status_code == 404
    missing = api_for("manager").post(url, {}, format="json")
    assert missing.status_code == 400 and "gold_choice" in missing.json()
    assert api_for("manager").post(url, {"gold_choice": "maybe"}, format="json").status_code == 400
    marked = api_for("manager").post(url, {"gold_choice": "b"}, format="json")
    assert marked.status_code == 200 and marked.json()["gold_choice"] == "b"
    comparison.refresh_from_db()
    assert (comparison.gold_choice, comparison.origin) == ("b", "gold")
    # From the comparisons page: a form without an answer is refused, with the reason shown.
    page = client_for(Client(), users["manager"])
    response = page.post(f"/p/{project.slug}/comparisons/gold/", {"comparison": comparison.pk, "gold_choice": ""},
                         follow=True)
    assert "needs its known answer" in response.content.decode()
    page.post(f"/p/{project.slug}/comparisons/gold/", {"comparison": comparison.pk, "gold_choice": "none"})
    comparison.refresh_from_db()
    assert comparison.gold_choice is None and comparison.origin == "imported"


def test_the_annotator_cannot_tell_gold_in_the_api_or_their_judgment_list(project, users, api_for):
    comparisons = make_pairs(project, 2)
    do_mark_gold(project, comparisons[0].pk, "a")
    client = api_for("annotator")
    base = f"/api/v1/projects/{project.slug}"
    for _ in range(2):
        item = client.get(f"{base}/next/").json()
        assert set(item) == {"comparison", "prompt", "left", "right", "lease_expires_at", "criteria"}
        created = client.post(f"{base}/judgments/", {"comparison": item["comparison"], "choice": "left"},
                              format="json")
        assert created.status_code == 201 and created.json()["origin"] is None
    listed = client.get(f"{base}/judgments/").json()["results"]
    assert len(listed) == 2 and {row["origin"] for row in listed} == {None}
    refused = client.get(f"{base}/judgments/?origin=gold")
    assert refused.status_code == 400 and "origin" in refused.json()
    manager_view = api_for("manager").get(f"{base}/judgments/?origin=gold").json()["results"]
    assert [row["origin"] for row in manager_view] == ["gold"]


@pytest.mark.both_databases
def test_gold_share_serves_gold_to_every_annotator_even_once_complete(project, users):
    comparisons = make_pairs(project, 40)
    gold = {c.pk for c in comparisons[:4]}
    for pk in gold:
        do_mark_gold(project, pk, "a")
    do_set_gold_share(project, 0.5)
    seen = {}
    for name in ("annotator", "annotator2"):
        seen[name] = []
        while (lease := next_comparison_for(project, users[name])) is not None:
            do_submit_judgment(project, users[name], JudgmentInput(lease.comparison_id, "left"))
            seen[name].append(lease.comparison_id)
    # votes_wanted is 1, so gold completes at its first vote, yet the second annotator gets it too.
    assert gold <= set(seen["annotator"]) and gold <= set(seen["annotator2"])
    assert gold & set(seen["annotator"][:12])  # drawn early at a share of one half, not left to the end
    assert Comparison.objects.filter(pk__in=gold, status="complete").count() == 4
    with pytest.raises(Exception, match="gold share"):
        do_set_gold_share(project, 0.9)


# --- statistics -------------------------------------------------------------------------------------


def test_annotator_statistics_by_hand(project, users, api_for):
    c1, c2, c3, c4 = make_pairs(project, 4)
    do_mark_gold(project, c1.pk, "a")
    a, b, m = users["annotator"], users["annotator2"], users["manager"]
    vote(c1, a, "a", shown_left="a", ms=10000)    # gold right, left
    vote(c2, a, "b", shown_left="a", ms=30000)    # right side
    vote(c3, a, "a", shown_left="b", ms=500)      # right side, far too fast
    vote(c4, a, "tie", shown_left="a", ms=20000)  # tie: not counted in the left rate
    vote(c1, b, "b", shown_left="b", ms=40000)    # gold wrong, left
    vote(c2, b, "b", shown_left="b", ms=40000)
    vote(c2, m, "b", shown_left="b", ms=40000)
    rows = {r["username"]: r for r in api_for("owner").get(f"/api/v1/projects/{project.slug}/annotators/").json()}
    mine = rows["annotator"]
    assert (mine["judgments"], mine["gold_accuracy"], mine["gold_count"]) == (4, 1.0, 1)
    # c1: other is b (disagree); c2: others b, b (agree); c3, c4: nobody else
    assert (mine["majority_agreement"], mine["majority_count"]) == (0.5, 2)
    # left choices: c1 (a shown left, chose a) only -> 1 of 3 decided; p = 1.0 (Bin(3, 1/2), two-sided)
    assert (mine["left_rate"], mine["left_count"], mine["left_p_value"]) == (pytest.approx(1 / 3), 3, 1.0)
    assert mine["median_seconds"] == 15.0  # 0.5, 10, 20, 30
    assert mine["too_fast_share"] == 0.25  # 0.5 s for ~50 characters: under the 1 s floor
    assert rows["annotator2"]["gold_accuracy"] == 0.0 and rows["annotator2"]["left_rate"] == 1.0
    assert all(0 < r["trust"] < 1 for r in rows.values())


def test_statistics_over_zero_judgments_show_a_dash(project, users):
    make_pairs(project, 2)
    assert annotator_statistics(project) == []
    report = bias_report(project)
    assert report["position"]["share"] is None and report["length"]["judgments"]["share"] is None
    page = client_for(Client(), users["owner"]).get(f"/p/{project.slug}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="quality"' in html and "Left chosen: –" in html and "No judgments yet." in html


def test_bias_report_by_hand(project, users):
    c1, c2, c3 = make_pairs(project, 3)  # b is always the longer answer
    vote(c1, users["annotator"], "b", shown_left="b")
    vote(c2, users["annotator"], "b", shown_left="a")
    vote(c3, users["annotator"], "a", shown_left="a")
    report = bias_report(project)
    assert report["position"]["share"] == pytest.approx(2 / 3) and report["position"]["n"] == 3
    assert report["length"]["judgments"]["share"] == pytest.approx(2 / 3)
    assert report["rounds"] == [{"round": 0, **report["position"]}]


# --- noise flags ------------------------------------------------------------------------------------


def test_a_judgment_against_a_strong_majority_is_flagged_with_reason_and_strength(project, users, reviewer):
    (c1,) = make_pairs(project, 1)
    User = get_user_model()
    voters = [users["annotator"], users["annotator2"], users["manager"], User.objects.create_user("extra")]
    for user in voters[:3]:
        vote(c1, user, "a")
    odd = vote(c1, voters[3], "b")
    flags = judgment_flags(project)
    # three other votes, all against: P(most favour a) under Beta(4, 1) = 1 - 0.5^4
    assert flags == {odd.pk: ("majority", 0.9375)}


def test_reward_models_that_agree_confidently_against_a_judgment_flag_it(project, users):
    from training.models import CandidateScore, Checkpoint

    c1, c2 = make_pairs(project, 2)
    against = vote(c1, users["annotator"], "a")   # models prefer b clearly
    unsure = vote(c2, users["annotator"], "a")    # one model barely prefers b
    for n, margins in enumerate(((3.0, 1.0), (2.5, 0.1))):
        checkpoint = Checkpoint.objects.create(project=project, kind="reward_model", name=f"rm{n}", base_model="minilm")
        for comparison, margin in zip((c1, c2), margins, strict=True):
            CandidateScore.objects.create(candidate=comparison.candidate_a, checkpoint=checkpoint, score=0.0,
                                          spread=0.1)
            CandidateScore.objects.create(candidate=comparison.candidate_b, checkpoint=checkpoint, score=margin,
                                          spread=0.1)
    flags = judgment_flags(project)
    assert list(flags) == [against.pk]
    reason, strength = flags[against.pk]
    # the weaker model: sigmoid(2.5 - 0.2) after both spreads
    assert reason == "reward_model" and strength == pytest.approx(1 / (1 + 2.718281828 ** -2.3), abs=1e-6)
    assert unsure.pk not in flags
    # the reward model's length bias is reported beside the judgments': b (longer) scored higher
    assert bias_report(project)["length"]["reward_model"]["share"] == 1.0


# --- review and settling --------------------------------------------------------------------------------


def test_settling_records_the_last_decision_keeps_history_and_refuses_what_it_must(project, users, reviewer,
                                                                                    api_for):
    c1, c2, c3 = make_pairs(project, 3)
    vote(c1, users["annotator"], "a", rationale="A refuses politely.")
    vote(c1, users["annotator2"], "b", rationale="B is more helpful.")
    vote(c2, reviewer, "a")
    client = api_for("reviewer") if "reviewer" in users else None


    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {create_token(reviewer, 't')[1]}")
    base = f"/api/v1/projects/{project.slug}/comparisons"
    assert client.post(f"{base}/{c1.pk}/settle/", {"decision": "maybe"}, format="json").status_code == 400
    assert client.post(f"{base}/{c1.pk}/settle/", {"decision": "a"}, format="json").status_code == 201
    assert client.post(f"{base}/{c1.pk}/settle/", {"decision": "b", "note": "B answers."},
                       format="json").status_code == 201
    c1.refresh_from_db()
    assert c1.settled_choice == "b"
    assert list(Settlement.objects.filter(comparison=c1).order_by("id").values_list("decision", flat=True)) == ["a", "b"]
    assert Judgment.objects.filter(comparison=c1).count() == 2  # the votes are kept
    own = client.post(f"{base}/{c2.pk}/settle/", {"decision": "b"}, format="json")
    assert own.status_code == 400 and "judged this comparison yourself" in json.dumps(own.json())
    project.reviewers_settle_own = True
    project.save()
    assert client.post(f"{base}/{c2.pk}/settle/", {"decision": "b"}, format="json").status_code == 201
    assert api_for("annotator").post(f"{base}/{c3.pk}/settle/", {"decision": "a"}, format="json").status_code == 403
    # another project's comparison is not found
    other = do_create_project(users["owner"], slug="other", name="Other")
    do_set_member(other, "reviewer", Role.REVIEWER)
    (foreign,) = make_pairs(other, 1, start=100)
    assert client.post(f"{base}/{foreign.pk}/settle/", {"decision": "a"}, format="json").status_code == 404


def test_the_review_queue_puts_disputed_first_and_shows_votes_without_model_identity(project, users, reviewer):
    calm, disputed = make_pairs(project, 2)
    vote(calm, users["annotator"], "a")
    vote(disputed, users["annotator"], "a", rationale="Left is kinder.")
    vote(disputed, users["annotator2"], "b", rationale="Right is correct.")
    assert [c.pk for c in review_queue(project, reviewer)][0] == disputed.pk
    page = client_for(Client(), reviewer).get(f"/p/{project.slug}/review/")
    html = page.content.decode()
    assert page.status_code == 200 and f'data-comparison="{disputed.pk}"' in html
    assert "Left is kinder." in html and "Right is correct." in html and "disputed" in html
    assert "model-x" not in html and "model-y" not in html
    annotator_page = client_for(Client(), users["annotator"])
    assert annotator_page.get(f"/p/{project.slug}/review/").status_code == 403


# --- export and training options ---------------------------------------------------------------------------


def test_export_takes_the_settled_label_and_the_quality_options(project, users, reviewer, api_for):
    c1, c2, c3, c4 = make_pairs(project, 4)
    others = [get_user_model().objects.create_user(f"v{i}") for i in range(3)]
    vote(c1, users["annotator"], "a")
    vote(c1, users["annotator2"], "a")
    vote(c2, users["annotator"], "b")
    vote(c3, users["annotator"], "a")
    for user in others:
        vote(c4, user, "a")
    odd = vote(c4, users["annotator2"], "b")  # against a unanimous majority of three: flagged
    from annotate.review import do_settle

    do_settle(project, reviewer, c1.pk, "b")        # the reviewer overrules the votes
    do_settle(project, reviewer, c3.pk, "discard")  # and drops this one

    def chosen(**options):
        return sorted(row["chosen"] for row in iter_rows(project, ExportOptions("trl-preference", **options)))

    a = {c.pk: c.candidate_a.text for c in (c1, c2, c3, c4)}
    b = {c.pk: c.candidate_b.text for c in (c1, c2, c3, c4)}
    assert chosen() == sorted([b[c1.pk], b[c2.pk], a[c4.pk]])
    assert chosen(settled_only=True) == [b[c1.pk]]
    raw = list(iter_rows(project, ExportOptions("raw", exclude_flagged=True)))
    assert odd.pk not in {row["id"] for row in raw}
    assert {row["settled"] for row in raw if row["comparison"] == c1.pk} == {"b"}
    assert len([row for row in raw if row["comparison"] == c1.pk]) == 2  # votes kept beside the label
    exported = api_for("manager").get(f"/api/v1/projects/{project.slug}/export/?format=raw&exclude_flagged=true")
    assert exported.status_code == 200 and str(odd.pk) not in [
        str(json.loads(line)["id"]) for line in b"".join(exported.streaming_content).splitlines()]
    assert api_for("manager").get(f"/api/v1/projects/{project.slug}/export/?format=raw&min_trust=2").status_code == 400
    effects = option_effects(project)
    assert effects["exclude_flagged_removes"] >= 1 and effects["settled_only_removes"] == effects["judgments"] - 3


def test_a_reward_model_snapshot_records_the_options_applied(project, users):
    from training.snapshots import make_snapshot

    (c1,) = make_pairs(project, 1)
    vote(c1, users["annotator"], "a")
    snapshot = make_snapshot(project, "raw", min_trust=0.5, exclude_flagged=True, settled_only=False)
    assert (snapshot.options["min_trust"], snapshot.options["exclude_flagged"], snapshot.options["settled_only"]) == (
        0.5, True, False)
    from training.runners.base import ConfigError
    from training.runners.reward_model import RewardModelConfig

    with pytest.raises(ConfigError, match="min_trust"):
        RewardModelConfig.from_dict({"min_trust": 3})


def test_dpo_jobs_take_the_quality_options_into_their_snapshot(project, users, monkeypatch):
    from training import jobs
    from training.kinds import dpo

    (c1,) = make_pairs(project, 1)
    vote(c1, users["annotator"], "a")
    with pytest.raises(jobs.LaunchRefused, match="min_trust"):
        jobs.parse_config("dpo", {"min_trust": 3})
    config = jobs.parse_config("dpo", {"min_trust": 0.4, "exclude_flagged": True, "settled_only": True})
    taken = {}

    def stop_before_training(path, output, config, reporter=None):  # the snapshot is what is under test
        taken["path"] = path
        raise RuntimeError("stop")

    monkeypatch.setattr(dpo, "train_dpo", stop_before_training)
    from training.models import DatasetSnapshot, Job

    job = Job.objects.create(project=project, kind="dpo", config=config.to_dict())
    with pytest.raises(RuntimeError, match="stop"):
        dpo.execute(job, config, jobs.JobReporter(job))
    snapshot = DatasetSnapshot.objects.get(project=project)
    assert snapshot.format == "trl-preference"
    assert (snapshot.options["min_trust"], snapshot.options["exclude_flagged"], snapshot.options["settled_only"]) == (
        0.4, True, True)


def test_the_export_command_takes_the_quality_options(project, users, reviewer, tmp_path):
    from django.core.management import CommandError, call_command

    c1, c2 = make_pairs(project, 2)
    vote(c1, users["annotator"], "a")
    vote(c2, users["annotator"], "a")
    from annotate.review import do_settle

    do_settle(project, reviewer, c2.pk, "b")
    out = tmp_path / "settled.jsonl"
    call_command("export_data", project=project.slug, format="trl-preference", settled_only=True, out=str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["chosen"] for row in rows] == [c2.candidate_b.text]
    with pytest.raises(CommandError, match="min_trust"):
        call_command("export_data", project=project.slug, format="raw", min_trust=1.5)
