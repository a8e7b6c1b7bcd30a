"""Simulated annotators (Membership.simulated): the `simulated_annotators` command that makes them
with their tokens, and the statistics of people that leave their judgments out unless asked
(annotator statistics, bias, agreement, the project page) while export keeps them."""

import io
import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from annotate.actions import ActionError, do_add_simulated_annotators, do_set_member
from annotate.export import ExportOptions, iter_rows
from annotate.models import ApiToken, Candidate, Comparison, Judgment, Membership, Prompt, Role, content_hash
from annotate.quality import annotator_statistics, bias_report, quality_summary
from annotate.stats import agreement, annotator_progress, project_counts

from .conftest import client_for

pytestmark = pytest.mark.django_db


def make_simulated(project, count: int, prefix: str = "sim") -> dict:
    out = io.StringIO()
    call_command("simulated_annotators", project.slug, "--count", str(count), "--prefix", prefix, stdout=out)
    return {row["username"]: row["token"] for row in json.loads(out.getvalue())["annotators"]}


# --- the command --------------------------------------------------------------------------------------


def test_the_command_makes_annotators_once_and_new_tokens_each_run(project, users):
    first = make_simulated(project, 3)
    assert list(first) == ["sim-1", "sim-2", "sim-3"]
    again = make_simulated(project, 3)
    assert list(again) == list(first) and not set(again.values()) & set(first.values())
    sims = Membership.objects.filter(project=project, simulated=True).select_related("user")
    assert sorted(m.user.username for m in sims) == ["sim-1", "sim-2", "sim-3"]
    assert {m.role for m in sims} == {Role.ANNOTATOR} and not any(m.user.has_usable_password() for m in sims)
    assert ApiToken.objects.filter(user__username="sim-1").count() == 2
    api = Client(HTTP_AUTHORIZATION=f"Bearer {first['sim-2']}")
    assert api.get(f"/api/v1/projects/{project.slug}/").json()["role"] == "annotator"
    assert list(make_simulated(project, 4)) == ["sim-1", "sim-2", "sim-3", "sim-4"]
    assert not Membership.objects.filter(project=project, simulated=False, user__username__startswith="sim").exists()


def test_the_command_never_turns_a_person_into_a_simulation(project, users):
    get_user_model().objects.create_user("bot-2", password="a real password")
    with pytest.raises(CommandError, match="bot-2 is a real account; choose another prefix"):
        make_simulated(project, 3, prefix="bot")
    assert not get_user_model().objects.filter(username="bot-1").exists()  # all or nothing
    get_user_model().objects.create_user("annotator-1")  # no password, but a real member
    do_set_member(project, "annotator-1", Role.ANNOTATOR)
    with pytest.raises(CommandError, match="annotator-1 is a real account and a member of demo"):
        make_simulated(project, 1, prefix="annotator")
    with pytest.raises(CommandError, match="No project"):
        call_command("simulated_annotators", "nope", "--count", "1", stdout=io.StringIO())
    for count, prefix in ((0, "sim"), (2, "bad prefix")):
        with pytest.raises(ActionError):
            do_add_simulated_annotators(project, count, prefix)


# --- statistics of people ---------------------------------------------------------------------------


@pytest.fixture
def judged(project, users):
    """Four comparisons (b the longer answer): the annotator judged all four, a simulated
    annotator three of them, choosing the left side every time."""
    make_simulated(project, 1)
    sim = get_user_model().objects.get(username="sim-1")
    comparisons = []
    for i in range(4):
        prompt = Prompt.objects.create(project=project, text=f"Q{i}?", content_hash=content_hash(f"Q{i}?"))
        a, b = (Candidate.objects.create(prompt=prompt, text=t, content_hash=content_hash(t))
                for t in (f"Short {i}.", f"A much longer answer {i}."))
        comparisons.append(Comparison.objects.create(project=project, prompt=prompt, candidate_a=a, candidate_b=b))
    for c in comparisons:
        Judgment.objects.create(project=project, comparison=c, annotator=users["annotator"], choice="b",
                                strength="clear", shown_left="a", ms_spent=20000)
    for c in comparisons[:3]:
        Judgment.objects.create(project=project, comparison=c, annotator=sim, choice="a", strength="clear",
                                shown_left="a", ms_spent=20000)
    Comparison.objects.filter(pk__in=[c.pk for c in comparisons[:3]]).update(votes=2)
    Comparison.objects.filter(pk=comparisons[3].pk).update(votes=1)
    return comparisons


def test_annotator_statistics_and_bias_leave_simulated_annotators_out_unless_asked(project, judged, api_for):
    people = annotator_statistics(project)
    assert [(r["username"], r["judgments"], r["simulated"]) for r in people] == [("annotator", 4, False)]
    assert people[0]["majority_count"] == 0  # the simulated votes are no majority to agree with
    everyone = {r["username"]: r for r in annotator_statistics(project, include_simulated=True)}
    assert everyone["sim-1"]["simulated"] and not everyone["annotator"]["simulated"]
    assert everyone["annotator"]["majority_count"] == 3
    assert bias_report(project)["position"]["n"] == 4
    assert bias_report(project, include_simulated=True)["position"]["n"] == 7

    owner, base = api_for("owner"), f"/api/v1/projects/{project.slug}"
    assert [r["username"] for r in owner.get(f"{base}/annotators/").json()] == ["annotator"]
    assert [r["username"] for r in owner.get(f"{base}/annotators/?include_simulated=0").json()] == ["annotator"]
    assert {r["username"] for r in owner.get(f"{base}/annotators/?include_simulated=1").json()} == {
        "annotator", "sim-1"}
    assert owner.get(f"{base}/bias/?include_simulated=true").json()["position"]["n"] == 7
    refused = owner.get(f"{base}/annotators/?include_simulated=maybe")
    assert refused.status_code == 400 and "include_simulated" in refused.json()
    assert api_for("annotator").get(f"{base}/annotators/?include_simulated=1").status_code == 403


def test_agreement_counts_and_progress_are_of_people_by_default(project, judged):
    assert agreement(project)["comparisons"] == 0  # only the simulated annotator voted beside the person
    both = agreement(project, include_simulated=True)
    assert (both["comparisons"], both["pairwise"]) == (3, 0.0)
    counts = project_counts(project)
    assert (counts["judgments"], counts["human_judgments"], counts["simulated_judgments"]) == (7, 4, 3)
    assert [r["username"] for r in annotator_progress(project)] == ["annotator"]
    assert {(r["username"], r["simulated"]) for r in annotator_progress(project, include_simulated=True)} == {
        ("annotator", False), ("sim-1", True)}
    summary = quality_summary(project)
    assert summary["effects"]["judgments"] == 4 and [r["username"] for r in summary["annotators"]] == ["annotator"]


def test_export_keeps_simulated_judgments_they_are_the_loops_data(project, judged):
    raw = list(iter_rows(project, ExportOptions("raw", min_trust=0.0)))
    assert len(raw) == 7


def test_the_pages_mark_simulated_annotators(project, judged, users):
    owner = client_for(Client(), users["owner"])
    page = owner.get(f"/p/{project.slug}/").content.decode()
    assert "simulated judgments" in page and "Include them" in page
    assert "sim-1" not in page
    included = owner.get(f"/p/{project.slug}/?include_simulated=1").content.decode()
    assert 'sim-1 <span class="badge">simulated</span>' in included and "Show people only" in included
    members = owner.get(f"/p/{project.slug}/members/").content.decode()
    assert 'sim-1 <span class="badge">simulated</span>' in members
    assert 'annotator <span class="badge">' not in members
