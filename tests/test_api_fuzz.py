"""Schemathesis against the API's own OpenAPI schema, as the project's owner: whatever the input,
no answer is a server error."""

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


@pytest.fixture
def owner_token(project, users):
    path = ALPACA_JUDGMENTS / "falcon-7b-instruct_vs_text_davinci_003.jsonl"
    if path.exists():
        import_path(project, path)
    return create_token(users["owner"], "fuzz")[1]


@schema.parametrize()
@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_api_fail(case, owner_token, project):
    if "slug" in (case.path_parameters or {}):
        case.path_parameters["slug"] = project.slug  # reach past the membership check
    case.call_and_validate(headers={"Authorization": f"Bearer {owner_token}"},
                           checks=[schemathesis.checks.not_a_server_error])
