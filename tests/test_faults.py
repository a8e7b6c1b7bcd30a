"""The fault suite: real processes killed or restarted under load, and the counts that show nothing
acknowledged was lost or doubled. PostgreSQL and Redis restarts use a cluster and a server this
module starts itself (its own directory and ports), never the machine's services. Every test
prints its counts (sent, acknowledged, stored, lost, doubled), gathered at the end of the run."""

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from glob import glob
from pathlib import Path

import pytest

from training import jobs
from training.models import Checkpoint, Job

from .conftest import DEMO_FILE, REPO, FaultCounts, database_url_for_subprocess, report_fault_counts
from .test_jobs import QUICK, judged, start_worker, training_started, wait_for  # noqa: F401 - judged: a fixture

pytestmark = [pytest.mark.faults]

ANNOTATORS = 8
JUDGMENTS_EACH = 24  # 192 judgments in all, out of the demo's 300 open comparisons
RUN_SECONDS = 240  # every loop below stops by then, whatever happens
JOB_SECONDS = 600  # a tiny reward-model job on a busy 2-core machine (importing torch alone takes a minute)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, seconds: float, what: str, interval: float = 0.2):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} did not happen within {seconds} s")


# --- a PostgreSQL cluster of the test's own ------------------------------------------------------


class PostgresCluster:
    """initdb into a temporary directory, listening on 127.0.0.1 and a free port only. As root the
    server runs as the `postgres` user (initdb refuses root)."""

    def __init__(self):
        bins = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
        found = bins[-1] if bins else shutil.which("initdb")
        if found is None:
            pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self.bin = Path(found).parent
        self.root = Path(tempfile.mkdtemp(prefix="prefloop-faults-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.run_as:
            shutil.chown(self.root, "postgres")
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.root}'\nmax_connections = 60\n")
        self.start()

    def _pg(self, tool, *args, timeout=120):
        done = subprocess.run([*self.run_as, str(self.bin / tool), *args], capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def url(self, name="prefloop") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def start(self):
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")

    def stop(self, mode="immediate"):
        """`immediate` is a crash: no checkpoint, the next start replays the write-ahead log."""
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def sql(self, query: str, database="prefloop") -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True, connect_timeout=10) as connection:
            rows = connection.execute(query)
            return rows.fetchall() if rows.description else []

    def destroy(self):
        with contextlib.suppress(AssertionError):
            self.stop("fast")
        shutil.rmtree(self.root, ignore_errors=True)


def manage(env: dict, *args: str, timeout=300) -> str:
    done = subprocess.run([sys.executable, str(REPO / "manage.py"), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"manage.py {args[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


SEED = """
import json
from annotate.actions import do_create_project, do_set_member
from annotate.importing import import_path
from annotate.models import Role
from annotate.tokens import create_token
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore

User = get_user_model()
owner = User.objects.create_user("owner", password="pw-owner-faults")
names = ["annotator" + str(i) for i in range(%(annotators)d)]
for name in names:
    User.objects.create_user(name, password="pw-" + name)
project = do_create_project(owner, slug="faults", name="Faults", votes_wanted=1)
for name in names:
    do_set_member(project, name, Role.ANNOTATOR)
import_path(project, %(demo)r, format="hh", labels="ignore")
do_create_project(owner, slug="imports", name="Imports", votes_wanted=1)
session = SessionStore()
session["_auth_user_id"] = str(owner.pk)
session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
session["_auth_user_hash"] = owner.get_session_auth_hash()
session.create()
tokens = {name: create_token(User.objects.get(username=name), "faults")[1] for name in names}
print(json.dumps({"tokens": tokens, "owner_session": session.session_key}))
"""


@pytest.fixture(scope="module")
def cluster():
    """The test's own PostgreSQL, migrated and seeded: a project with 8 annotators and the 300
    demo pairs open, and an empty one for imports."""
    cluster = PostgresCluster()
    try:
        cluster.sql("CREATE DATABASE prefloop", database="postgres")
        data_dir = cluster.root / "prefloop-data"
        env = {**os.environ, "DATABASE_URL": cluster.url(), "PREFLOOP_DATA_DIR": str(data_dir),
               "CELERY_BROKER_URL": "filesystem://", "DATABASE_CONN_MAX_AGE": "60"}
        manage(env, "migrate", "--noinput")
        seeded = manage(env, "shell", "-c", SEED % {"annotators": ANNOTATORS, "demo": str(DEMO_FILE)})
        cluster.seed = json.loads(seeded.strip().splitlines()[-1])
        cluster.env = env
        yield cluster
    finally:
        cluster.destroy()


class WebServer:
    """gunicorn serving Prefloop on 127.0.0.1 and a free port, in a process group of its own so a
    SIGKILL reaches the master and its workers at once."""

    def __init__(self, env: dict, log: Path):
        self.port = free_port()
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{self.port}", "--workers", "2",
             "--threads", "4", "--timeout", "120", "--graceful-timeout", "5"],
            cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)  # noqa: SIM115
        wait_until(self._answers, 60, f"the web server on port {self.port} (log {log})")

    def _answers(self):
        if self.process.poll() is not None:
            raise AssertionError(f"the web server exited:\n{self.log.read_text()[-3000:]}")
        try:
            return self.request("GET", "/login/")[0] == 200
        except OSError:
            return False

    def request(self, method, path, body=None, headers=None, timeout=30):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def kill(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


class Annotator(threading.Thread):
    """One person judging through the API with their own token: lease (next), judge (POST), and on
    a 503 or a dropped connection the same request again, as a client following Retry-After would."""

    def __init__(self, server: WebServer, token: str, deadline: float):
        super().__init__(daemon=True)
        self.server, self.deadline = server, deadline
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.sent, self.acknowledged, self.refused = [], [], []
        self.unavailable, self.failures, self.bad_503s = 0, [], []

    def call(self, method, path, body=None):
        """The answer, retried while the service is unavailable; None once the deadline passes."""
        while time.time() < self.deadline:
            try:
                status, headers, content = self.server.request(method, path, body, self.headers)
            except OSError:
                time.sleep(0.3)
                continue
            if status == 503:
                self.unavailable += 1
                if b"Traceback" in content or "Retry-After" not in headers or b"retry" not in content:
                    self.bad_503s.append(content[:300])
                time.sleep(0.3)
                continue
            return status, content
        return None

    def run(self):
        slug = "/api/v1/projects/faults/"
        while len(self.sent) < JUDGMENTS_EACH:
            leased = self.call("GET", slug + "next/")
            if leased is None or leased[0] == 204:
                return
            if leased[0] != 200:
                self.failures.append(("next", leased[0], leased[1][:300]))
                return
            comparison = json.loads(leased[1])["comparison"]
            self.sent.append(comparison)
            answer = self.call("POST", slug + "judgments/", json.dumps({"comparison": comparison, "choice": "left"}))
            if answer is None:
                return
            if answer[0] in (200, 201):
                self.acknowledged.append(comparison)
            elif answer[0] == 409:
                self.refused.append(comparison)
            else:
                self.failures.append(("judge", answer[0], answer[1][:300]))
                return


def test_a_postgres_restart_while_8_annotators_judge_loses_and_doubles_nothing(cluster, tmp_path):
    server = WebServer(cluster.env, tmp_path / "web.log")
    deadline = time.time() + RUN_SECONDS
    annotators = [Annotator(server, token, deadline) for token in cluster.seed["tokens"].values()]
    try:
        for annotator in annotators:
            annotator.start()
        wait_until(lambda: sum(len(a.acknowledged) for a in annotators) >= ANNOTATORS * 4, 120, "the first judgments")
        before = sum(len(a.acknowledged) for a in annotators)
        cluster.stop("immediate")  # a crash, mid-traffic
        time.sleep(3)
        cluster.start()
        for annotator in annotators:
            annotator.join(timeout=max(1.0, deadline - time.time()))
        assert not any(a.is_alive() for a in annotators), "an annotator was still judging at the deadline"
    finally:
        server.stop()

    stored = cluster.sql("SELECT u.username, j.comparison_id FROM annotate_judgment j "
                         "JOIN auth_user u ON u.id = j.annotator_id WHERE u.username LIKE 'annotator%'")
    names = list(cluster.seed["tokens"])
    acknowledged = {(name, c) for name, a in zip(names, annotators, strict=True) for c in a.acknowledged}
    counts = FaultCounts(
        fault="PostgreSQL crash-restart (pg_ctl -m immediate) while 8 annotators judge over HTTP",
        sent=sum(len(a.sent) for a in annotators), acknowledged=len(acknowledged), stored=len(stored),
        lost=len(acknowledged - set(stored)), doubled=len(stored) - len(set(stored)),
        extra={"503 answers": sum(a.unavailable for a in annotators), "409 answers": sum(len(a.refused) for a in annotators),
               "acknowledged before the crash": before})
    report_fault_counts(counts)

    assert [f for a in annotators for f in a.failures] == []  # no 500, no other error
    assert [b for a in annotators for b in a.bad_503s] == []  # every 503 clean: JSON, Retry-After, no traceback
    assert counts.extra["503 answers"] > 0, "the restart was never seen by a client: the test proved nothing"
    assert counts.acknowledged == ANNOTATORS * JUDGMENTS_EACH  # every annotator finished after the restart
    assert counts.lost == 0 and counts.doubled == 0
    assert "Traceback" not in (tmp_path / "web.log").read_text()


def test_a_web_process_killed_during_an_upload_import_leaves_nothing_of_it(cluster, tmp_path):
    rows = 60000
    upload = tmp_path / "big.jsonl"
    with open(upload, "w") as handle:
        for i in range(rows):
            handle.write(json.dumps({"prompt": f"Question {i}?", "response_a": f"Answer A to {i}.",
                                     "response_b": f"Answer B to {i}, longer.", "preference": "a"}) + "\n")
    boundary = "prefloopfaultsboundary"
    body = b"".join([
        f'--{boundary}\r\nContent-Disposition: form-data; name="format"\r\n\r\nauto\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="labels"\r\n\r\njudgments\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="csrfmiddlewaretoken"\r\n\r\n{"c" * 32}\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode(), upload.read_bytes(), f"\r\n--{boundary}--\r\n".encode(),
    ])
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}",
               "Cookie": f"sessionid={cluster.seed['owner_session']}; csrftoken={'c' * 32}"}

    server = WebServer(cluster.env, tmp_path / "web.log")
    answer = {}

    def post():
        try:
            answer["status"] = server.request("POST", "/p/imports/import/", body, headers, timeout=RUN_SECONDS)[0]
        except OSError as exc:
            answer["error"] = repr(exc)

    uploader = threading.Thread(target=post, daemon=True)
    try:
        uploader.start()
        # The import is writing once a backend of the web process holds a transaction id.
        wait_until(lambda: cluster.sql("SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT NULL "
                                       "AND pid <> pg_backend_pid() AND datname = 'prefloop'")[0][0] > 0
                   or "status" in answer, 120, "the import's first write")
        time.sleep(1.0)
        assert "status" not in answer, f"the import finished before the kill ({answer}): use a larger file"
        server.kill()
    finally:
        server.kill()
        uploader.join(timeout=30)
    wait_until(lambda: cluster.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'prefloop' "
                                   "AND pid <> pg_backend_pid()")[0][0] == 0, 60, "the killed process's sessions' end")

    (project_id,) = cluster.sql("SELECT id FROM annotate_project WHERE slug = 'imports'")[0]
    visible = {table: cluster.sql(f"SELECT count(*) FROM annotate_{table} WHERE project_id = {int(project_id)}")[0][0]  # noqa: S608
               for table in ("prompt", "comparison", "judgment", "importbatch")}
    counts = FaultCounts(fault="web process SIGKILLed during a 60,000-row upload import", sent=rows,
                         acknowledged=0, stored=visible["judgment"], lost=0, doubled=0,
                         extra={"client saw": answer.get("error", answer.get("status")),
                                **{f"{t} rows visible": n for t, n in visible.items()}})
    report_fault_counts(counts)
    assert "error" in answer  # the client never got an answer: nothing was acknowledged
    assert visible == {"prompt": 0, "comparison": 0, "judgment": 0, "importbatch": 0}


# --- Redis and Celery workers ----------------------------------------------------------------------


def start_redis(port: int) -> subprocess.Popen:
    process = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                                "127.0.0.1", "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    wait_until(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip()
               == b"PONG", 10, f"redis on port {port}", interval=0.1)
    return process


def stop_worker(worker: subprocess.Popen):
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:  # still in a training step: it was told; now it goes
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)


def queued_messages(port: int, queue: str) -> int:
    return int(subprocess.run(["redis-cli", "-p", str(port), "llen", queue], capture_output=True,
                              text=True).stdout.strip())


def test_a_broker_restart_loses_no_queued_job(transactional_db, judged, tmp_path):  # noqa: F811
    """A Redis of its own, with no persistence, as in the default install: the job's message is
    queued, Redis restarts and forgets it, and the job still runs once, when a worker comes up."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed")
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url_for_subprocess(), "DATABASE_CONN_MAX_AGE": "0",
           "CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0", "PREFLOOP_JOB_REQUEUE_SECONDS": "1"}
    server = start_redis(port)
    worker = None
    try:
        launched = subprocess.run([sys.executable, str(REPO / "manage.py"), "run_job", "reward_model",
                                   "--project", judged.slug, "--config", json.dumps(QUICK)],
                                  env=env, capture_output=True, text=True, check=True)
        job = Job.objects.get(pk=json.loads(launched.stdout.strip().splitlines()[-1])["job"])
        assert queued_messages(port, job.queue) == 1

        server.terminate()
        server.wait(timeout=10)
        server = start_redis(port)
        forgotten = queued_messages(port, job.queue)
        assert forgotten == 0  # the restart forgot the message
        time.sleep(1.5)

        log = tmp_path / "worker.log"
        worker = start_worker(env, log, "restart")
        wait_for(job, {Job.Status.SUCCEEDED, Job.Status.FAILED}, seconds=JOB_SECONDS, log=log)
    finally:
        if worker is not None:
            stop_worker(worker)
        server.terminate()
        server.wait(timeout=10)
    checkpoints = Checkpoint.objects.filter(job=job).count()
    report_fault_counts(FaultCounts(
        fault="Redis restart (no persistence) with a reward-model job queued", sent=1, acknowledged=1,
        stored=checkpoints, lost=1 - checkpoints if checkpoints <= 1 else 0, doubled=max(0, checkpoints - 1),
        extra={"messages left after the restart": forgotten}))
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert checkpoints == 1


def test_a_worker_killed_mid_training_is_retried_on_another_and_registers_one_checkpoint(
        celery_worker_process, judged, settings, tmp_path):  # noqa: F811
    job = training_started(jobs.launch(judged, "reward_model", {**QUICK, "max_steps": 60}), seconds=JOB_SECONDS)
    assert job.status == Job.Status.RUNNING
    first_worker = job.worker

    os.killpg(celery_worker_process.pid, signal.SIGKILL)
    celery_worker_process.wait(timeout=10)
    settings.PREFLOOP_JOB_HEARTBEAT_TIMEOUT = 3
    time.sleep(settings.PREFLOOP_JOB_HEARTBEAT_SECONDS + 4)
    swept = jobs.sweep()

    job.refresh_from_db()
    assert swept["requeued"] == 1 and swept["failed"] == 0
    assert job.status == Job.Status.QUEUED and job.attempt == 2 and "worker lost" in job.message
    assert not jobs.scratch_dir(Job(pk=job.pk, attempt=1)).exists()  # the lost attempt's files are gone
    assert "attempt 1 lost" in jobs.log_path(job).read_text()

    log = tmp_path / "second-worker.log"
    env = {**os.environ, "DATABASE_URL": database_url_for_subprocess(), "DATABASE_CONN_MAX_AGE": "0"}
    second = start_worker(env, log, "second")
    try:
        wait_for(job, {Job.Status.SUCCEEDED, Job.Status.FAILED}, seconds=JOB_SECONDS, log=log)
    finally:
        stop_worker(second)
    checkpoints = Checkpoint.objects.filter(job=job).count()
    report_fault_counts(FaultCounts(
        fault="Celery worker SIGKILLed mid reward-model training", sent=1, acknowledged=1, stored=checkpoints,
        lost=0 if checkpoints else 1, doubled=max(0, Checkpoint.objects.count() - 1),
        extra={"attempts": job.attempt, "lost attempts": (job.result or {}).get("lost_attempts")}))
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.worker != first_worker and job.result["lost_attempts"] == 1
    assert Checkpoint.objects.filter(job=job).count() == 1 == Checkpoint.objects.count()
    text = jobs.log_path(job).read_text()
    assert "attempt 1 on" in text and "attempt 2 on" in text  # the lost attempt's log is kept
