"""REST API: every endpoint by owner, annotator, outsider and anonymous; tokens; the annotator
flow with leasing and idempotency; bulk creation; filters and pagination; throttling."""

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from annotate.importing import import_path
from annotate.models import ApiToken, Comparison, Judgment, Prompt
from annotate.tokens import TokenRateThrottle, create_token

from .conftest import ALPACA_JUDGMENTS, shared_file

pytestmark = pytest.mark.django_db


@pytest.fixture
def alpaca_project(project):
    import_path(project, shared_file(ALPACA_JUDGMENTS / "falcon-7b-instruct_vs_text_davinci_003.jsonl"),
                labels="ignore")
    return project


def endpoint_cases(project):
    comparison = Comparison.objects.filter(project=project).order_by("id").first().pk
    unheld = Comparison.objects.filter(project=project).order_by("id").last().pk
    base = f"/api/v1/projects/{project.slug}"
    bulk = {"items": [{"prompt": "Name a colour.", "response_a": "Red.", "response_b": "Seven."}]}
    # (method, url, body, expected for owner, annotator, outsider)
    return [
        ("get", "/api/v1/projects/", None, 200, 200, 200),
        ("get", f"{base}/", None, 200, 200, 404),
        ("patch", f"{base}/", {"name": "Renamed"}, 200, 403, 404),
        ("get", f"{base}/prompts/", None, 200, 403, 404),
        ("post", f"{base}/prompts/", {"text": "A new prompt?"}, 201, 403, 404),
        ("get", f"{base}/candidates/", None, 200, 403, 404),
        ("get", f"{base}/comparisons/", None, 200, 403, 404),
        ("post", f"{base}/comparisons/", bulk, 201, 403, 404),
        ("get", f"{base}/comparisons/{comparison}/", None, 200, 403, 404),
        ("patch", f"{base}/comparisons/{comparison}/", {"priority": 3}, 200, 403, 404),
        ("post", f"{base}/comparisons/{comparison}/gold/", {"gold_choice": "a"}, 200, 403, 404),
        ("post", f"{base}/comparisons/{comparison}/settle/", {"decision": "tie"}, 201, 403, 404),
        ("get", f"{base}/annotators/", None, 200, 403, 404),
        ("get", f"{base}/bias/", None, 200, 403, 404),
        ("get", f"{base}/judgments/", None, 200, 200, 404),
        ("get", f"{base}/next/", None, 200, 200, 404),
        ("post", f"{base}/skip/", {"comparison": unheld}, 409, 409, 404),
        ("post", f"{base}/undo/", None, 400, 400, 404),
        ("get", f"{base}/export/?format=trl-preference", None, 200, 403, 404),
        ("get", f"{base}/webhooks/", None, 200, 403, 404),
        ("post", f"{base}/webhooks/", {"url": "http://127.0.0.1:9/hook", "events": ["judgments"]}, 201, 403, 404),
        ("get", "/api/v1/tokens/", None, 200, 200, 200),
    ]


def test_every_endpoint_by_owner_annotator_outsider_and_anonymous(alpaca_project, api_for, settings):
    settings.PREFLOOP_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]  # the webhook case's loopback target
    clients = {name: api_for(name) for name in ("owner", "annotator", "outsider", "anonymous")}
    for method, url, body, *expected in endpoint_cases(alpaca_project):
        for name, want in zip(("owner", "annotator", "outsider"), expected, strict=True):
            response = getattr(clients[name], method)(url, body, format="json")
            assert response.status_code == want, (name, method, url, response.status_code, response.content[:300])
        anonymous = getattr(clients["anonymous"], method)(url, body, format="json")
        assert anonymous.status_code == 401, (method, url)
        assert anonymous["WWW-Authenticate"].startswith("Bearer")


def test_outsiders_see_no_projects_and_annotators_only_their_own_judgments(alpaca_project, api_for, users):
    annotator, other = api_for("annotator"), api_for("annotator2")
    for client in (annotator, other):
        lease = client.get(f"/api/v1/projects/{alpaca_project.slug}/next/").json()
        assert client.post(f"/api/v1/projects/{alpaca_project.slug}/judgments/",
                           {"comparison": lease["comparison"], "choice": "left"}, format="json").status_code == 201

    assert api_for("outsider").get("/api/v1/projects/").json()["results"] == []
    mine = annotator.get(f"/api/v1/projects/{alpaca_project.slug}/judgments/").json()["results"]
    assert [j["annotator"] for j in mine] == ["annotator"]
    everyone = api_for("manager").get(f"/api/v1/projects/{alpaca_project.slug}/judgments/").json()["results"]
    assert sorted(j["annotator"] for j in everyone) == ["annotator", "annotator2"]


def test_the_annotator_flow_leases_is_idempotent_and_stays_blind(alpaca_project, api_for):
    client = api_for("annotator")
    base = f"/api/v1/projects/{alpaca_project.slug}"
    assignment = client.get(f"{base}/next/").json()
    body = json.dumps(assignment)
    for generator in ("falcon-40b-instruct", "text_davinci_003"):
        assert generator not in body
    assert set(assignment) == {"comparison", "prompt", "left", "right", "lease_expires_at", "criteria"}
    assert set(assignment["left"]) == set(assignment["right"]) == {"text"}
    assert client.get(f"{base}/next/").json()["comparison"] == assignment["comparison"]  # still held

    submit = {"comparison": assignment["comparison"], "choice": "right", "strength": "decisive",
              "rationale": "more complete", "ms_spent": 5300}
    first = client.post(f"{base}/judgments/", submit, format="json")
    retry = client.post(f"{base}/judgments/", submit, format="json")

    assert first.status_code == 201 and retry.status_code == 200
    assert first.json()["id"] == retry.json()["id"]
    assert Judgment.objects.filter(comparison_id=assignment["comparison"]).count() == 1
    stored = Judgment.objects.get(pk=first.json()["id"])
    assert stored.choice != stored.shown_left and stored.strength == "decisive"

    undone = client.post(f"{base}/undo/")
    assert undone.status_code == 200 and undone.json()["comparison"] == assignment["comparison"]
    assert not Judgment.objects.filter(comparison_id=assignment["comparison"]).exists()
    assert client.post(f"{base}/skip/", {"comparison": assignment["comparison"]}, format="json").status_code == 204
    assert client.get(f"{base}/next/").json()["comparison"] != assignment["comparison"]


def test_judging_what_you_do_not_hold_is_409_and_bad_bodies_are_400(alpaca_project, api_for, users):
    holder, other = api_for("annotator"), api_for("annotator2")
    base = f"/api/v1/projects/{alpaca_project.slug}"
    held = holder.get(f"{base}/next/").json()["comparison"]

    conflict = other.post(f"{base}/judgments/", {"comparison": held, "choice": "left"}, format="json")
    bad_choice = holder.post(f"{base}/judgments/", {"comparison": held, "choice": "both"}, format="json")
    bad_json = holder.generic("POST", f"{base}/judgments/", "{not json", content_type="application/json")
    missing = holder.post(f"{base}/judgments/", {"choice": "left"}, format="json")
    bad_rubric = holder.post(f"{base}/judgments/", {"comparison": held, "choice": "left",
                                                    "rubric": {"wit": {"left": 3}}}, format="json")

    assert conflict.status_code == 409 and "Nothing was recorded" in conflict.json()["detail"]
    assert bad_choice.status_code == 400 and "choice" in bad_choice.json()
    assert bad_json.status_code == 400 and "JSON parse error" in bad_json.json()["detail"]
    assert missing.status_code == 400 and "comparison" in missing.json()
    assert bad_rubric.status_code == 400 and "rubric.wit" in bad_rubric.json()
    assert not Judgment.objects.exists()


def test_another_projects_ids_are_404(alpaca_project, api_for, users):
    from annotate.actions import do_create_project

    other = do_create_project(users["annotator"], slug="mine", name="Mine")
    foreign = Comparison.objects.filter(project=alpaca_project).first().pk
    client = api_for("annotator")

    assert client.get(f"/api/v1/projects/{other.slug}/comparisons/{foreign}/").status_code == 404
    response = client.post(f"/api/v1/projects/{other.slug}/judgments/", {"comparison": foreign, "choice": "left"},
                           format="json")
    assert response.status_code == 404
    assert client.post(f"/api/v1/projects/{other.slug}/skip/", {"comparison": foreign},
                       format="json").status_code == 409


def test_bulk_create_of_ten_thousand_comparisons_is_one_atomic_call(project, api_for):
    with open(shared_file(ALPACA_JUDGMENTS / "llama-2-7b-chat-hf_vs_text_davinci_003.jsonl")) as handle:
        rows = [row for row in map(json.loads, handle) if row["output_1"] != row["output_2"]]
    items = [{"prompt": f"{rows[i % len(rows)]['instruction']} (#{i})", "response_a": rows[i % len(rows)]["output_1"],
              "response_b": rows[i % len(rows)]["output_2"], "priority": i % 3, "round": 2, "origin": "random"}
             for i in range(10_000)]
    client = api_for("owner")
    url = f"/api/v1/projects/{project.slug}/comparisons/"

    bad = [dict(item) for item in items]
    bad[5000] = {"prompt": "Missing a response", "response_a": "only one"}
    refused = client.post(url, {"items": bad}, format="json")
    assert refused.status_code == 400
    assert "response_b" in refused.json()["items"]["5000"]
    assert not Comparison.objects.filter(project=project).exists()
    assert not Prompt.objects.filter(project=project).exists()

    created = client.post(url, {"items": items}, format="json")
    assert created.status_code == 201, created.content[:500]
    body = created.json()
    assert body["created"] == 10_000 and len(set(body["comparisons"])) == 10_000
    sample = Comparison.objects.get(pk=body["comparisons"][4])
    assert (sample.priority, sample.round, sample.origin) == (1.0, 2, "random")
    again = client.post(url, {"items": items[:10]}, format="json").json()
    assert again["created"] == 0 and again["comparisons"] == body["comparisons"][:10]
    too_many = client.post(url, {"items": items + items[:1]}, format="json")
    assert too_many.status_code == 400
    same = client.post(url, {"items": [{"prompt": "Echo?", "response_a": "echo", "response_b": "echo"}]},
                       format="json").json()
    assert same["comparisons"] == [None]


def test_judgment_list_filters_and_cursor_pages(alpaca_project, api_for, users):
    base = f"/api/v1/projects/{alpaca_project.slug}"
    annotator = api_for("annotator")
    ids = []
    for _ in range(7):
        comparison = annotator.get(f"{base}/next/").json()["comparison"]
        ids.append(annotator.post(f"{base}/judgments/", {"comparison": comparison, "choice": "tie"},
                                  format="json").json()["id"])
    Comparison.objects.filter(judgments__id=ids[0]).update(round=4)
    manager = api_for("manager")

    seen, url = [], f"{base}/judgments/?page_size=3"
    while url:
        page = manager.get(url).json()
        seen += [j["id"] for j in page["results"]]
        url = page["next"]
    assert seen == ids
    assert [j["id"] for j in manager.get(f"{base}/judgments/?since_id={ids[4]}").json()["results"]] == ids[5:]
    assert [j["id"] for j in manager.get(f"{base}/judgments/?round=4").json()["results"]] == ids[:1]
    assert manager.get(f"{base}/judgments/?annotator=annotator2").json()["results"] == []
    since = (timezone.now() + timedelta(hours=1)).isoformat()
    assert manager.get(f"{base}/judgments/", {"since": since}).json()["results"] == []
    assert len(manager.get(f"{base}/judgments/?origin=imported").json()["results"]) == 7


def test_tokens_are_shown_once_stored_hashed_revocable_and_tracked(users, api_for, capsys):
    call_command("create_api_token", "annotator", "--name", "laptop")
    secret = capsys.readouterr().out.strip()
    token = ApiToken.objects.get(name="laptop")
    assert secret.startswith("pfl_") and secret not in (token.digest, token.prefix)
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.get("/api/v1/projects/").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None

    assert client.delete(f"/api/v1/tokens/{token.pk}/").status_code == 204
    revoked = client.get("/api/v1/projects/")
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    client.credentials(HTTP_AUTHORIZATION="Bearer pfl_nope_nope")
    assert client.get("/api/v1/projects/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION="Bearer")
    assert client.get("/api/v1/projects/").status_code == 401

    created = api_for("owner").post("/api/v1/tokens/", {"name": "ci"}, format="json")
    assert created.status_code == 201 and created.json()["token"].startswith("pfl_")
    listed = api_for("owner").get("/api/v1/tokens/").json()["results"]
    assert all("token" not in row and "digest" not in row for row in listed)


def test_tokens_page_creates_and_revokes(users, client):
    client.force_login(users["annotator"])
    page = client.post("/tokens/", {"name": "notebook"}).content.decode()
    assert "Copy this token now" in page
    token = ApiToken.objects.get(user=users["annotator"], name="notebook")
    client.post("/tokens/", {"revoke": token.pk})
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_each_token_has_its_own_rate_limit(project, users, monkeypatch):
    from django.core.cache import cache
    from rest_framework.test import APIClient

    cache.clear()
    monkeypatch.setattr(TokenRateThrottle, "THROTTLE_RATES", {"token": "5/min"})
    first, second = APIClient(), APIClient()
    first.credentials(HTTP_AUTHORIZATION=f"Bearer {create_token(users['owner'])[1]}")
    second.credentials(HTTP_AUTHORIZATION=f"Bearer {create_token(users['owner'])[1]}")

    codes = [first.get("/api/v1/projects/").status_code for _ in range(6)]

    assert codes == [200] * 5 + [429]
    assert second.get("/api/v1/projects/").status_code == 200


def test_schema_and_offline_docs(users, client):
    client.force_login(users["owner"])
    schema = client.get("/api/v1/schema/")
    assert schema.status_code == 200 and b"/api/v1/projects/{slug}/export/" in schema.content
    docs = client.get("/api/v1/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in docs
    assert "cdn" not in docs and "https://" not in docs


def test_the_fast_judgment_list_has_the_documented_shape(alpaca_project, api_for):
    from annotate.serializers import JudgmentSerializer

    client = api_for("annotator")
    base = f"/api/v1/projects/{alpaca_project.slug}"
    comparison = client.get(f"{base}/next/").json()["comparison"]
    client.post(f"{base}/judgments/", {"comparison": comparison, "choice": "left", "rubric": {}}, format="json")
    listed = client.get(f"{base}/judgments/").json()["results"][0]
    judgment = Judgment.objects.select_related("annotator", "comparison").get(pk=listed["id"])
    assert listed == {**JudgmentSerializer(judgment).data, "origin": None}  # gold stays unrecognisable


def test_job_and_checkpoint_endpoints_by_role(project, api_for):
    from training.models import Checkpoint, Job

    job = Job.objects.create(project=project, kind="reward_model", status="failed", error="boom")
    checkpoint = Checkpoint.objects.create(project=project, kind="reward_model", name="rm", base_model="minilm",
                                           path="checkpoints/x", job=job)
    owner, annotator, outsider = api_for("owner"), api_for("annotator"), api_for("outsider")
    assert [j["id"] for j in owner.get("/api/v1/jobs/").json()["results"]] == [job.pk]
    assert annotator.get("/api/v1/jobs/").json()["results"] == []
    assert outsider.get("/api/v1/jobs/").json()["results"] == []
    for url in (f"/api/v1/jobs/{job.pk}/", f"/api/v1/jobs/{job.pk}/metrics/"):
        assert owner.get(url).status_code == 200
        assert annotator.get(url).status_code == 403
        assert outsider.get(url).status_code == 404
    for url in (f"/api/v1/jobs/{job.pk}/cancel/", f"/api/v1/jobs/{job.pk}/retry/"):
        assert annotator.post(url).status_code == 403
        assert outsider.post(url).status_code == 404
    assert owner.get(f"/api/v1/checkpoints/{checkpoint.pk}/").json()["lineage"] == [checkpoint.pk]
    assert annotator.get(f"/api/v1/checkpoints/{checkpoint.pk}/").status_code == 404
    assert outsider.get("/api/v1/checkpoints/").json()["results"] == []
    assert api_for("anonymous").get("/api/v1/jobs/").status_code == 401


def test_next_and_judgment_answers_keep_the_shape_their_serializers_document(rubric_project, api_for, users):
    from annotate.models import Lease
    from annotate.serializers import AssignmentSerializer, JudgmentSerializer

    base = f"/api/v1/projects/{rubric_project.slug}"
    api_for("owner").post(f"{base}/comparisons/", {"items": [
        {"prompt": [{"role": "user", "content": "Name a **colour**."}], "response_a": "Red.", "response_b": "7."},
    ]}, format="json")
    client = api_for("annotator")
    body = client.get(f"{base}/next/").json()
    lease = Lease.objects.select_related("comparison__prompt", "comparison__candidate_a",
                                         "comparison__candidate_b").get(comparison_id=body["comparison"])
    comparison = lease.comparison
    a, b = comparison.candidate_a, comparison.candidate_b
    left, right = (a, b) if lease.shown_left == "a" else (b, a)
    documented = AssignmentSerializer({
        "comparison": comparison.pk,
        "prompt": {"text": comparison.prompt.text, "messages": comparison.prompt.messages},
        "left": {"text": left.text}, "right": {"text": right.text},
        "lease_expires_at": lease.expires_at, "criteria": list(rubric_project.criteria.all()),
    }).data
    assert body == json.loads(json.dumps(documented))
    assert body["prompt"]["messages"] == [{"role": "user", "content": "Name a **colour**."}]
    assert [c["key"] for c in body["criteria"]] == [c.key for c in rubric_project.criteria.all()]

    scores = {c.key: {"left": c.scale_max, "right": c.scale_min} for c in rubric_project.criteria.all()}
    posted = client.post(f"{base}/judgments/", {"comparison": body["comparison"], "choice": "right",
                                                "strength": "decisive", "rubric": scores, "rationale": " Terse. ",
                                                "ms_spent": 900}, format="json")
    assert posted.status_code == 201
    stored = Judgment.objects.select_related("annotator", "comparison").get(pk=posted.json()["id"])
    assert posted.json() == {**json.loads(json.dumps(JudgmentSerializer(stored).data)), "origin": None}  # an annotator


@pytest.mark.parametrize(("body", "checked_by_hand"), [
    ({"comparison": 7, "choice": "left"}, True),
    ({"comparison": 7, "choice": "tie", "strength": None, "rationale": "  same  ", "ms_spent": 0}, True),
    ({"comparison": 2**63 - 1, "choice": "right", "strength": "slight", "rubric": {}, "ms_spent": 86_400_000}, True),
    ({"comparison": 7, "choice": "left", "rubric": {"honesty": {"left": 3}}}, False),
    ({"comparison": 7, "choice": "left", "rationale": "naïve\x00"}, False),
    ({"comparison": True, "choice": "left"}, False),
    ({"comparison": 7, "choice": "up"}, False),
    ({"comparison": 7, "choice": "left", "strength": ""}, False),
    ({"comparison": 7, "choice": "left", "strength": {}}, False),
    ({"comparison": [7], "choice": {"a": 1}, "rationale": 3}, False),
    ({"comparison": 7, "choice": "left", "ms_spent": -1}, False),
    ({"comparison": 7, "choice": "left", "extra": 1}, False),
    (["comparison"], False),
])
def test_the_plain_judgment_check_agrees_with_the_serializer_or_defers_to_it(body, checked_by_hand):
    from annotate.api import plain_judgment_values
    from annotate.serializers import JudgmentSubmitSerializer

    plain = plain_judgment_values(body)
    assert (plain is not None) == checked_by_hand
    if plain is not None:
        serializer = JudgmentSubmitSerializer(data=body)
        assert serializer.is_valid() and plain == dict(serializer.validated_data)
