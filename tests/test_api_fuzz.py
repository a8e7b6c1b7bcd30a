"""Schemathesis against the API's own OpenAPI schema, as the project's owner, an annotator and an
outsider: whatever the input, no answer is a server error, and no answer carries data of a project
the caller is not a member of (ids in paths point into another project on purpose)."""

import json

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings

from annotate.importing import import_path
from annotate.tokens import create_token
from config.wsgi import application

from .conftest import ALPACA_JUDGMENTS

raw_schema = json.loads(json.dumps(SchemaGenerator().get_schema(request=None, public=True), default=str))
schema = schemathesis.openapi.from_dict(raw_schema)
schema.app = application

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def keep_the_test_connection():
    """In-process WSGI calls would close the test's database connection at the end of each
    request; Django's own test client switches that off the same way."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


HIDDEN = "hidden-7f3a9c"  # in every text of a project none of the callers belongs to
DEMO = "demo-only-41be"  # in a prompt of the callers' project: an outsider must never see it


@pytest.fixture
def callers(project, users):
    """Tokens of the demo project's owner, an annotator of it and an outsider, and a project of a
    stranger's whose objects the fuzzed paths point at."""
    import io

    from django.contrib.auth import get_user_model

    from annotate.actions import do_create_project
    from annotate.importing import import_stream
    from annotate.models import Comparison, Webhook
    from training.models import Checkpoint, Job

    path = ALPACA_JUDGMENTS / "falcon-7b-instruct_vs_text_davinci_003.jsonl"
    if path.exists():
        import_path(project, path)
    import_stream(project, io.BytesIO(json.dumps({"prompt": f"Say {DEMO}.", "response_a": "a", "response_b": "b",
                                                  "preference": "a"}).encode()))
    stranger = get_user_model().objects.create_user("stranger", password="pw-stranger")
    hidden = do_create_project(stranger, slug=HIDDEN, name=HIDDEN, votes_wanted=1)
    import_stream(hidden, io.BytesIO("\n".join(json.dumps(
        {"prompt": f"{HIDDEN} prompt {i}", "response_a": f"{HIDDEN} a{i}", "response_b": f"{HIDDEN} b{i}",
         "preference": "a"}) for i in range(3)).encode()))
    Webhook.objects.create(project=hidden, url=f"https://{HIDDEN}.example/hook", secret=HIDDEN, created_by=stranger)
    Job.objects.create(project=hidden, kind="reward_model", status="failed", error=HIDDEN, message=HIDDEN,
                       config={"note": HIDDEN})
    Checkpoint.objects.create(project=hidden, kind="reward_model", name=HIDDEN, base_model=HIDDEN)
    stranger_token, _ = create_token(stranger, HIDDEN)
    ids = {"comparisons": Comparison.objects.filter(project=hidden).first().pk,
           "webhooks": Webhook.objects.get(project=hidden).pk, "jobs": Job.objects.get(project=hidden).pk,
           "checkpoints": Checkpoint.objects.get(project=hidden).pk,
           "tokens": stranger_token.pk}
    return {name: create_token(users[name], "fuzz")[1] for name in ("owner", "annotator", "outsider")}, ids


def hidden_id_for(path: str, ids: dict) -> int | None:
    """The id of the stranger's object of the kind a path's {id} names."""
    for kind, pk in ids.items():
        if f"/{kind}/{{id}}" in path:
            return pk
    return None


@schema.parametrize()
@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_api_fail_or_leak(case, callers, project):
    tokens, ids = callers
    hidden_pk = hidden_id_for(case.path, ids)
    if hidden_pk:
        for name in {"id", "pk"} & set(case.path_parameters or {}):
            case.path_parameters[name] = hidden_pk  # another project's object: nobody here may reach it
    for name, slug in (("owner", project.slug), ("annotator", project.slug), ("outsider", project.slug),
                       ("owner", HIDDEN)):
        if "slug" in (case.path_parameters or {}):
            case.path_parameters["slug"] = slug
        if isinstance(case.body, dict) and "project" in case.body:
            case.body["project"] = slug
        response = case.call_and_validate(headers={"Authorization": f"Bearer {tokens[name]}"},
                                          checks=[schemathesis.checks.not_a_server_error])
        body = response.content.decode(errors="replace")
        assert HIDDEN not in body, (name, case.method, case.formatted_path, response.status_code, body[:500])
        if hidden_pk and case.method.upper() != "OPTIONS":  # OPTIONS describes the route, no object
            assert response.status_code >= 400, (name, case.method, case.formatted_path, response.status_code, body[:500])
        if name == "outsider":
            assert DEMO not in body, (case.method, case.formatted_path, response.status_code, body[:500])
