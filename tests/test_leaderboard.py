"""The leaderboard: every source that answered rated from the judgments with 95% intervals and
battle counts, by page and API, for members only; policy checkpoints named through their round;
sources without battles unranked; new judgments show at once."""

import json
from itertools import islice

import pytest
from django.test import Client
from django.urls import reverse

from annotate.actions import JudgmentInput, do_submit_judgment
from annotate.importing import import_path
from annotate.models import Candidate, Comparison, Prompt
from annotate.queue import next_comparison_for
from training.models import Checkpoint, GeneratedCandidate, RoundPair

from .conftest import ALPACA_JUDGMENTS, shared_file

pytestmark = pytest.mark.django_db

MODELS = ("gpt4_1106_preview", "falcon-7b-instruct")


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def arena(project, tmp_path):
    """80 AlpacaEval judgments of each of two models against text_davinci_003 (imported labels),
    and one response by a generator nobody judged. Three votes wanted, so people can judge too."""
    project.votes_wanted = 3
    project.save()
    for model in MODELS:
        source = shared_file(ALPACA_JUDGMENTS / f"{model}_vs_text_davinci_003.jsonl")
        with open(source, encoding="utf-8") as handle:
            rows = [json.loads(line) for line in islice(handle, 200)]
        rows = [r for r in rows if r["preference"] in (1, 2)][:80]
        path = tmp_path / f"{model}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        import_path(project, path, format="alpaca_eval")
    unjudged = tmp_path / "newbot.jsonl"
    unjudged.write_text(json.dumps({"prompt": "Name a colour.", "responses": [
        {"text": "Blue.", "source": "newbot"}, {"text": "Red.", "source": "newbot-2"}]}) + "\n")
    import_path(project, unjudged, format="candidates")
    return project


def judge_next(project, user, prefer_source=None):
    lease = next_comparison_for(project, user)
    c = lease.comparison
    a_source = Candidate.objects.get(pk=c.candidate_a_id).source
    side = "a" if prefer_source is None or a_source == prefer_source else "b"
    do_submit_judgment(project, user, JudgmentInput(comparison_id=c.pk,
                                                    choice="left" if lease.shown_left == side else "right"))
    return c


def test_imported_generators_are_rated_in_their_known_order(arena, api_for):
    body = api_for("owner").get(f"/api/v1/projects/{arena.slug}/leaderboard/?judges=all").json()
    rows = {r["source"]: r for r in body["rows"]}
    assert body["battles"] == 160 and body["judges"] == "all"
    # The falcon file names its generator falcon-40b-instruct, as the data has it.
    gpt4, davinci, falcon = rows["gpt4_1106_preview"], rows["text_davinci_003"], rows["falcon-40b-instruct"]
    # GPT-4 Turbo beats davinci-003 ~97% of the time; falcon and davinci are close (~55/45).
    assert gpt4["rank"] == 1 and gpt4["ci_low"] > davinci["ci_high"] and gpt4["ci_low"] > falcon["ci_high"]
    assert gpt4["rating"] - davinci["rating"] > 300 and abs(davinci["rating"] - falcon["rating"]) < 150
    assert davinci["ci_low"] < falcon["ci_high"] and falcon["ci_low"] < davinci["ci_high"]
    assert davinci["rank"] == falcon["rank"] == 2  # neither surely ahead of the other
    for r in (gpt4, davinci, falcon):
        assert r["ci_low"] < r["rating"] < r["ci_high"]
        assert r["wins"] + r["losses"] + r["ties"] == r["battles"]
    assert davinci["battles"] == 160 and gpt4["battles"] == 80
    # Sources that answered but were never judged against another are listed, unranked.
    for name in ("newbot", "newbot-2"):
        assert rows[name]["rating"] is None and rows[name]["rank"] is None and rows[name]["battles"] == 0
    assert [r["source"] for r in body["rows"][-2:]] == ["newbot", "newbot-2"]


def test_human_judgments_only_by_default_and_each_new_one_counts(arena, users, api_for):
    api = api_for("annotator")
    url = f"/api/v1/projects/{arena.slug}/leaderboard/"
    assert api.get(url).json()["battles"] == 0  # the imported labels are not human judgments
    judge_next(arena, users["annotator"])
    judge_next(arena, users["annotator2"])
    body = api.get(url).json()
    assert body["battles"] == 2 and body["judges"] == "human"
    judge_next(arena, users["annotator"])
    assert api.get(url).json()["battles"] == 3  # not a stale cached answer
    assert api.get(url + "?judges=everyone").status_code == 400


def test_policy_checkpoints_are_named_by_their_round(project, users, api_for):
    base = Checkpoint.objects.create(project=project, kind="policy", name="SmolLM2 base", base_model="smollm2")
    policy = Checkpoint.objects.create(project=project, kind="policy", name="round-1 DPO", base_model="smollm2",
                                       path="checkpoints/x", parent=base)
    for i in range(6):
        prompt = Prompt.objects.create(project=project, text=f"Question {i}?", content_hash=f"p{i}")
        new = Candidate.objects.create(prompt=prompt, text=f"good {i}", content_hash=f"n{i}", source="round-1 DPO")
        old = Candidate.objects.create(prompt=prompt, text=f"plain {i}", content_hash=f"o{i}", source="SmolLM2 base")
        GeneratedCandidate.objects.create(candidate=new, checkpoint=policy, round=1, role="new")
        GeneratedCandidate.objects.create(candidate=old, checkpoint=base, round=1, role="parent")
        low, high = sorted([new, old], key=lambda c: c.pk)
        comparison = Comparison.objects.create(project=project, prompt=prompt, candidate_a=low, candidate_b=high,
                                               origin="round", round=1)
        RoundPair.objects.create(comparison=comparison, new_candidate=new, policy=policy, parent=base, round=1)
    for _ in range(5):
        judge_next(project, users["annotator"], prefer_source="round-1 DPO")
    judge_next(project, users["annotator"], prefer_source="SmolLM2 base")
    rows = {r["source"]: r for r in api_for("owner").get(f"/api/v1/projects/{project.slug}/leaderboard/").json()["rows"]}
    assert set(rows) == {"SmolLM2 base", "round-1 DPO"}
    assert (rows["round-1 DPO"]["wins"], rows["round-1 DPO"]["losses"]) == (5, 1)
    assert rows["round-1 DPO"]["rating"] > rows["SmolLM2 base"]["rating"]


def test_leaderboard_page_and_api_by_role(arena, users, api_for):
    page = reverse("leaderboard", args=[arena.slug])
    plot = reverse("leaderboard_plot", args=[arena.slug])
    for name in ("owner", "manager", "annotator"):
        response = login(users[name]).get(page + "?judges=all")
        assert response.status_code == 200
        html = response.content.decode()
        assert 'id="leaderboard"' in html and "gpt4_1106_preview" in html and "unranked" in html
        assert plot in html
        image = login(users[name]).get(plot + "?judges=all")
        assert image.status_code == 200 and image["Content-Type"] == "image/png" and image.content[:4] == b"\x89PNG"
        api = api_for(name).get(f"/api/v1/projects/{arena.slug}/leaderboard/?judges=all")
        assert api.status_code == 200
        assert {"source", "rating", "ci_low", "ci_high", "battles", "rank"} <= set(api.json()["rows"][0])
    assert login(users["outsider"]).get(page).status_code == 404
    assert login(users["outsider"]).get(plot).status_code == 404
    assert api_for("outsider").get(f"/api/v1/projects/{arena.slug}/leaderboard/").status_code == 404
    assert api_for("anonymous").get(f"/api/v1/projects/{arena.slug}/leaderboard/").status_code in (401, 403)
    assert Client().get(page).status_code == 302
    # Linked from the project's navigation, and in the API schema.
    assert page in login(users["owner"]).get(reverse("project", args=[arena.slug])).content.decode()
    schema = login(users["owner"]).get("/api/v1/schema/")
    assert b"/api/v1/projects/{slug}/leaderboard/" in schema.content


def test_a_project_without_sources_says_so(project, users):
    html = login(users["owner"]).get(reverse("leaderboard", args=[project.slug])).content.decode()
    assert "No responses name their source yet" in html
    image = login(users["owner"]).get(reverse("leaderboard_plot", args=[project.slug]))
    assert image.status_code == 200
