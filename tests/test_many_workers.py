"""Two real Celery worker processes on Redis, as on two machines: a burst of jobs runs each job
exactly once, spread over both; a worker killed with SIGKILL mid-job loses nothing, since the
sweeper hands its job to the other worker as a second attempt, which finishes it."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from annotate.importing import import_path
from training import jobs
from training.models import Checkpoint, Job, JobMetric

from .conftest import ALPACA_JUDGMENTS, REPO, database_url_for_subprocess, shared_file
from .tiny_models import tiny_bert, tiny_reward_checkpoint

pytestmark = [pytest.mark.worker, pytest.mark.ml]


def start_worker(name: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": database_url_for_subprocess(), "DATABASE_CONN_MAX_AGE": "0",
           "PREFLOOP_JOB_HEARTBEAT_SECONDS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "default,cpu,gpu", "--pool", "solo",
         "--without-gossip", "--without-mingle", "--loglevel", "INFO", "--logfile", str(log),
         "--hostname", f"{name}-{os.getpid()}@%h"],
        cwd=REPO, env=env, start_new_session=True)


@pytest.fixture
def two_workers(transactional_db, tmp_path):
    """Two worker processes on the test broker (Redis), each serving every queue; stopped after."""
    from config.celery import app

    if not os.environ.get("CELERY_BROKER_URL", "").startswith(("redis://", "amqp://")):
        pytest.skip("worker tests need a real broker: run through ./prefloop test (Redis)")
    app.control.purge()
    workers = []
    for name in ("first", "second"):
        log = tmp_path / f"{name}.log"
        worker = start_worker(name, log)
        worker.log_path = log
        workers.append(worker)
    deadline = time.time() + 90
    for worker in workers:
        while not (worker.log_path.exists() and "ready." in worker.log_path.read_text()):
            if worker.poll() is not None or time.time() > deadline:
                for other in workers:
                    other.kill()
                pytest.fail(f"a worker did not start:\n{worker.log_path.read_text() if worker.log_path.exists() else ''}")
            time.sleep(0.2)
    yield workers
    for worker in workers:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def name_of(worker: subprocess.Popen) -> str:
    """What jobs.worker_name() records for a solo-pool worker: its host and its own pid."""
    return f"{socket.gethostname()}:{worker.pid}"


def logs(workers) -> str:
    return "\n".join(w.log_path.read_text()[-3000:] for w in workers if w.log_path.exists())


def wait_all(job_ids, seconds, workers):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if Job.objects.filter(pk__in=job_ids, status__in=[Job.Status.QUEUED, Job.Status.RUNNING]).count() == 0:
            return list(Job.objects.filter(pk__in=job_ids).order_by("pk"))
        time.sleep(0.3)
    stuck = list(Job.objects.filter(pk__in=job_ids).exclude(status=Job.Status.SUCCEEDED).values("pk", "status"))
    raise AssertionError(f"jobs did not end in {seconds} s: {stuck}\n{logs(workers)}")


def test_a_burst_of_jobs_runs_each_once_on_both_workers(two_workers, project):
    import_path(project, shared_file(ALPACA_JUDGMENTS / "gpt4_1106_preview_vs_text_davinci_003.jsonl"),
                labels="ignore")
    checkpoint = tiny_reward_checkpoint(project)

    launched = [jobs.launch(project, "score", {"checkpoint": checkpoint.pk, "batch_size": 64}).pk for _ in range(10)]
    ended = wait_all(launched, 240, two_workers)

    assert [job.status for job in ended] == [Job.Status.SUCCEEDED] * 10, [job.error for job in ended]
    assert [job.attempt for job in ended] == [1] * 10
    for job in ended:  # one claim each: one "attempt" line in the job's log
        lines = jobs.log_path(job).read_text().splitlines()
        assert sum(1 for line in lines if " attempt " in line and " on " in line) == 1, lines
    assert {job.worker for job in ended} == {name_of(w) for w in two_workers}, logs(two_workers)


def test_a_worker_killed_mid_job_hands_its_job_to_the_other(two_workers, project, tmp_path, settings):
    import_path(project, shared_file(ALPACA_JUDGMENTS / "gpt4_1106_preview_vs_text_davinci_003.jsonl"))
    backbone = tiny_bert(tmp_path / "tiny-backbone")
    job = jobs.launch(project, "reward_model", {"base_model": str(backbone), "max_steps": 600, "batch_size": 8,
                                                "max_length": 64, "learning_rate": 1e-4, "min_pairs": 10})
    deadline = time.time() + 120
    while not (job.status == Job.Status.RUNNING and JobMetric.objects.filter(job=job).exists()):
        assert time.time() < deadline, f"the job did not start training: {job.status}\n{logs(two_workers)}"
        time.sleep(0.2)
        job.refresh_from_db()
    holder = next(w for w in two_workers if name_of(w) == job.worker)
    survivor = next(w for w in two_workers if w is not holder)

    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    settings.PREFLOOP_JOB_HEARTBEAT_TIMEOUT = 3  # the workers beat every second
    time.sleep(5)
    jobs.sweep()

    [job] = wait_all([job.pk], 300, [survivor])
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.attempt == 2 and job.worker == name_of(survivor)
    assert Checkpoint.objects.filter(job=job).count() == 1
    assert (Checkpoint.objects.get(job=job).directory / "prefloop.json").exists()
    lines = jobs.log_path(job).read_text()
    assert f"attempt 1 on {name_of(holder)}" in lines and f"attempt 2 on {name_of(survivor)}" in lines
    assert not list((Path(settings.MEDIA_ROOT) / "checkpoints").glob(f".partial-job{job.pk}-*"))
