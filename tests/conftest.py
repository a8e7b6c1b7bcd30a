"""Shared fixtures: a project with an owner, a manager, an annotator and an outsider, so every
view can be tried by all four; and the real data in ../shared/data."""

from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from annotate.actions import do_create_project, do_set_member, do_update_project
from annotate.importers import import_path
from annotate.models import Role

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(__import__("os").environ.get("PREFLOOP_SHARED_DATA", REPO.parent / "shared" / "data"))
HH_DEV = SHARED_DATA / "hh-rlhf" / "harmless-base-test.dev.jsonl.gz"
ALPACA_JUDGMENTS = SHARED_DATA / "alpaca_eval" / "judgments"
DEMO_FILE = REPO / "annotate" / "demo" / "hh-rlhf-harmless-sample.jsonl.gz"


def shared_file(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set PREFLOOP_SHARED_DATA)")
    return path


@pytest.fixture
def users(db):
    User = get_user_model()
    return {name: User.objects.create_user(name, password="pw-" + name) for name in
            ("owner", "manager", "annotator", "annotator2", "outsider")}


@pytest.fixture
def project(users):
    project = do_create_project(users["owner"], slug="demo", name="Demo", votes_wanted=1)
    do_set_member(project, "manager", Role.MANAGER)
    do_set_member(project, "annotator", Role.ANNOTATOR)
    do_set_member(project, "annotator2", Role.ANNOTATOR)
    return project


@pytest.fixture
def rubric_project(project):
    return do_update_project(
        project, name=project.name, instructions="Pick the **better** answer.", votes_wanted=1,
        criteria=[
            {"key": "helpfulness", "label": "Helpfulness", "scale_min": 1, "scale_max": 5, "description": ""},
            {"key": "honesty", "label": "Honesty", "scale_min": 1, "scale_max": 5, "description": ""},
        ],
    )


@pytest.fixture
def demo_pairs(project):
    """The 300 shipped HH-RLHF pairs, imported without labels: all open."""
    import_path(project, DEMO_FILE, format="hh", labels="ignore")
    return project


def client_for(client, user):
    client.force_login(user)
    return client


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    """PBKDF2 at production strength costs ~0.4 s a user; tests need no such strength."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
