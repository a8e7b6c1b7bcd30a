"""Shared fixtures: a project with an owner, a manager, an annotator and an outsider, so every
view can be tried by all four; and the real data in ../shared/data."""

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from annotate.actions import do_create_project, do_set_member, do_update_project
from annotate.importing import import_path
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


def database_url_for_subprocess() -> str:
    """The URL of the database this test runs on, for a worker process to share it."""
    from django.db import connection

    params = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{params['NAME']}"
    user = params.get("USER") or "postgres"
    return f"postgres://{user}@{params.get('HOST') or '127.0.0.1'}:{params.get('PORT') or 5432}/{params['NAME']}"


@pytest.fixture
def celery_worker_process(transactional_db, tmp_path):
    """A real `celery worker` process on the real broker (Redis in the test command), sharing the
    test database. Yields the Popen; stops it (SIGTERM) afterwards."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from config.celery import app

    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not broker.startswith(("redis://", "amqp://")):
        pytest.skip("worker tests need a real broker: run through ./prefloop test (Redis)")
    app.control.purge()
    log = tmp_path / "worker.log"
    env = {**os.environ, "DATABASE_URL": database_url_for_subprocess(), "DATABASE_CONN_MAX_AGE": "0",
           "PREFLOOP_WEBHOOK_BACKOFF_SECONDS": "1",
           "PREFLOOP_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"}  # tests' receivers listen on loopback
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "default,cpu,gpu", "--pool", "solo",
         "--without-gossip", "--without-mingle", "--loglevel", "INFO", "--logfile", str(log),
         "--hostname", f"test-{os.getpid()}@%h"],
        cwd=REPO, env=env, start_new_session=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        if log.exists() and "ready." in log.read_text():
            break
        if process.poll() is not None:
            pytest.fail(f"the worker exited early:\n{log.read_text() if log.exists() else ''}")
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("the worker did not become ready in 60 s")
    process.log_path = log
    yield process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def api_for(users):
    """An API client authenticated with a fresh personal token of the named user."""
    from rest_framework.test import APIClient

    from annotate.tokens import create_token

    def make(name: str) -> APIClient:
        client = APIClient()
        if name != "anonymous":
            _, secret = create_token(users[name], "test")
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        return client

    return make


# --- the fault suite's counts, printed at the end of the run ---------------------------------------


@dataclass
class FaultCounts:
    """What one fault test sent and found: lost and doubled must be 0."""

    fault: str
    sent: int
    acknowledged: int
    stored: int
    lost: int
    doubled: int
    extra: dict = field(default_factory=dict)

    def line(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.extra.items())
        return (f"{self.fault}: sent={self.sent} acknowledged={self.acknowledged} stored={self.stored} "
                f"lost={self.lost} doubled={self.doubled}{extra}")


FAULT_COUNTS: list[FaultCounts] = []


def report_fault_counts(counts: FaultCounts) -> None:
    FAULT_COUNTS.append(counts)
    print("FAULT COUNTS", counts.line())


def pytest_terminal_summary(terminalreporter):
    if FAULT_COUNTS:
        terminalreporter.write_sep("=", "fault suite counts")
        for counts in FAULT_COUNTS:
            terminalreporter.write_line(counts.line())


@pytest.fixture(autouse=True)
def empty_caches():
    """Each test starts with empty caches: a rolled-back test reuses primary keys, and a value cached
    under a project's id by an earlier test would otherwise answer for this one's project."""
    import contextlib

    from django.core.cache import caches

    for alias in caches:
        with contextlib.suppress(Exception):  # a database cache outside a test with the database
            caches[alias].clear()
    yield
