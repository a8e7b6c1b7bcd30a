"""Jobs against a real Celery worker process on Redis: launch from the page, the API and the
command line; live progress, plots, checkpoint with lineage; cancel, retry, lost workers and time
limits; configs and projects refused before anything is queued. A worker killed with SIGKILL and a
broker restart are in the fault suite (test_faults.py)."""

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from annotate.importing import import_path
from annotate.models import Candidate
from training import jobs
from training.models import CandidateScore, Checkpoint, DatasetSnapshot, Job, JobMetric

from .conftest import ALPACA_JUDGMENTS, REPO, database_url_for_subprocess, shared_file

pytestmark = [pytest.mark.worker, pytest.mark.ml]

QUICK = {"max_steps": 6, "batch_size": 8, "max_length": 96, "learning_rate": 1e-4, "min_pairs": 10}
SLOW = {**QUICK, "max_steps": 400}


@pytest.fixture
def judged(project):
    import_path(project, shared_file(ALPACA_JUDGMENTS / "gpt4_1106_preview_vs_text_davinci_003.jsonl"))
    return project


def wait_for(job, statuses, seconds=180, log=None):
    deadline = time.time() + seconds
    while time.time() < deadline:
        job.refresh_from_db()
        if job.status in statuses:
            return job
        time.sleep(0.3)
    tail = log.read_text()[-4000:] if log and log.exists() else ""
    raise AssertionError(f"job {job.pk} stayed {job.status} ({job.message}); worker log:\n{tail}")


def training_started(job, seconds=120):
    """Wait until the job is running and has logged a training step."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        job.refresh_from_db()
        if job.status == Job.Status.RUNNING and JobMetric.objects.filter(job=job).exists():
            break
        time.sleep(0.3)
    return job


def manager_client(users):
    client = Client()
    client.force_login(users["manager"])
    return client


def test_a_manager_launches_watches_and_gets_a_checkpoint_with_lineage(celery_worker_process, judged, users):
    client = manager_client(users)
    response = client.post(f"/p/{judged.slug}/jobs/", {"kind": "reward_model", **QUICK, "base_model": "minilm",
                                                       "loss": "bt", "votes": "majority"})
    assert response.status_code == 302, response.content[:500]
    job = Job.objects.get()
    assert response["Location"] == f"/p/{judged.slug}/jobs/{job.pk}/"

    live = client.get(response["Location"])
    assert live.status_code == 200 and b'hx-trigger="every 2s"' in live.content
    wait_for(job, {Job.Status.SUCCEEDED, Job.Status.FAILED}, log=celery_worker_process.log_path)
    assert job.status == Job.Status.SUCCEEDED, job.error

    checkpoint = Checkpoint.objects.get(job=job)
    assert (checkpoint.directory / "prefloop.json").exists()
    snapshot = checkpoint.snapshots.get()
    assert snapshot.judgments == 805 - sum(1 for line in open(  # noqa: SIM115
        ALPACA_JUDGMENTS / "gpt4_1106_preview_vs_text_davinci_003.jsonl") if '"preference": 0' in line)
    assert (Path(settings.MEDIA_ROOT) / snapshot.path).exists()
    assert job.result["eval"]["baselines"]["longer_wins"] > 0.5
    page = client.get(f"/p/{judged.slug}/jobs/{job.pk}/").content.decode()
    assert "Held-out evaluation" in page and "longer response wins" in page
    assert "hx-trigger" not in page  # finished: no more polling
    assert JobMetric.objects.filter(job=job, name="train/loss").count() >= 2
    plot = client.get(f"/p/{judged.slug}/jobs/{job.pk}/plot.png?metric=train/loss")
    assert plot.status_code == 200 and plot["Content-Type"] == "image/png" and plot.content[:4] == b"\x89PNG"
    lineage = client.get(f"/p/{judged.slug}/models/{checkpoint.pk}/").content.decode()
    assert snapshot.sha256[:13] in lineage and f"judgment ids up to {snapshot.judgment_watermark}" in lineage

    # Scoring with the new checkpoint, visible on the model's page.
    score_job = jobs.launch(judged, "score", {"checkpoint": checkpoint.pk, "batch_size": 16})
    wait_for(score_job, {Job.Status.SUCCEEDED, Job.Status.FAILED}, log=celery_worker_process.log_path)
    assert score_job.status == Job.Status.SUCCEEDED, score_job.error
    responses = Candidate.objects.filter(prompt__project=judged).count()
    assert CandidateScore.objects.filter(checkpoint=checkpoint).count() == score_job.result["scored"] == responses
    assert f"{responses} responses scored" in client.get(f"/p/{judged.slug}/models/{checkpoint.pk}/").content.decode()


def test_the_api_launches_and_refuses_bad_configs_before_queueing(celery_worker_process, judged, api_for):
    client = api_for("owner")
    refused = client.post("/api/v1/jobs/", {"project": judged.slug, "kind": "reward_model",
                                            "config": {"loss": "hinge"}}, format="json")
    assert refused.status_code == 400 and "config.loss" in refused.json()
    unknown = client.post("/api/v1/jobs/", {"project": judged.slug, "kind": "reward_model",
                                            "config": {"learning_rat": 0.1}}, format="json")
    assert unknown.status_code == 400 and "config.learning_rat" in unknown.json()
    assert not Job.objects.exists()
    assert api_for("annotator").post("/api/v1/jobs/", {"project": judged.slug, "kind": "reward_model"},
                                     format="json").status_code == 403
    assert api_for("outsider").post("/api/v1/jobs/", {"project": judged.slug, "kind": "reward_model"},
                                    format="json").status_code == 400

    launched = client.post("/api/v1/jobs/", {"project": judged.slug, "kind": "reward_model",
                                             "config": {**QUICK, "base_model": "/no/such/model"}}, format="json")
    assert launched.status_code == 201
    job = wait_for(Job.objects.get(pk=launched.json()["id"]), {Job.Status.FAILED, Job.Status.SUCCEEDED},
                   log=celery_worker_process.log_path)
    detail = client.get(f"/api/v1/jobs/{job.pk}/").json()
    assert detail["status"] == "failed" and "/no/such/model does not exist" in detail["error"]
    assert api_for("annotator").get(f"/api/v1/jobs/{job.pk}/").status_code == 403
    assert api_for("outsider").get(f"/api/v1/jobs/{job.pk}/").status_code == 404
    assert not Checkpoint.objects.exists()

    retried = client.post(f"/api/v1/jobs/{job.pk}/retry/").json()
    assert retried["status"] == "queued" and retried["attempt"] == 2
    job = wait_for(job, {Job.Status.FAILED}, log=celery_worker_process.log_path)
    assert job.attempt == 2
    assert client.post(f"/api/v1/jobs/{job.pk}/retry/").status_code == 200
    wait_for(job, {Job.Status.FAILED})
    assert client.get("/api/v1/checkpoints/").json()["results"] == []


def test_numbers_that_are_not_finite_are_refused_naming_the_field(project, api_for, users):
    client = api_for("owner")
    for field, value in (("max_steps", "nan"), ("max_steps", "inf"), ("batch_size", "1e400"),
                         ("learning_rate", "-inf"), ("max_steps", 10**400)):
        refused = client.post("/api/v1/jobs/", {"project": project.slug, "kind": "reward_model",
                                                "config": {field: value}}, format="json")
        assert refused.status_code == 400, (field, value, refused.content)
        assert f"config.{field}" in refused.json()
    form = manager_client(users).post(f"/p/{project.slug}/jobs/", {"kind": "reward_model", "max_steps": "nan"})
    assert form.status_code == 400 and b"max_steps" in form.content
    assert not Job.objects.exists()


def test_a_project_with_too_few_judgments_is_refused(project, users):
    import io

    from annotate.importing import import_stream

    import_stream(project, io.BytesIO(b'{"prompt": "p", "response_a": "a", "response_b": "b", "preference": "a"}'))
    response = manager_client(users).post(f"/p/{project.slug}/jobs/", {"kind": "reward_model", **QUICK})
    assert response.status_code == 400
    assert b"has 1 judged comparisons" in response.content
    assert not Job.objects.exists()


def test_jobs_pages_by_role(project, users):
    for name, expected in (("owner", 200), ("manager", 200), ("annotator", 403), ("outsider", 404)):
        client = Client()
        client.force_login(users[name])
        assert client.get(f"/p/{project.slug}/jobs/").status_code == expected
        assert client.get(f"/p/{project.slug}/models/").status_code == expected


def test_cancel_stops_a_running_job_at_a_step_boundary(celery_worker_process, judged, users):
    job = training_started(jobs.launch(judged, "reward_model", SLOW))
    response = manager_client(users).post(f"/p/{judged.slug}/jobs/{job.pk}/cancel/")
    assert response.status_code == 302
    wait_for(job, {Job.Status.CANCELLED, Job.Status.FAILED, Job.Status.SUCCEEDED}, seconds=120,
             log=celery_worker_process.log_path)
    assert job.status == Job.Status.CANCELLED, (job.error, jobs.log_path(job).read_text()[-2000:])
    assert job.progress < 0.5
    assert not Checkpoint.objects.exists()
    assert not jobs.scratch_dir(job).exists()


def start_worker(env: dict, log: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "default,cpu,gpu",
                             "--pool", "solo", "--without-gossip", "--without-mingle", "--loglevel", "INFO",
                             "--logfile", str(log), "--hostname", f"{name}-{os.getpid()}@%h"],
                            cwd=REPO, env=env, start_new_session=True)


def _running(project, **fields) -> Job:
    now = timezone.now()
    values = {"status": Job.Status.RUNNING, "worker": "gone:1", "started_at": now, "heartbeat_at": now,
              "config": jobs.parse_config("reward_model", QUICK).to_dict(), **fields}
    return Job.objects.create(project=project, kind="reward_model", **values)


def test_a_lost_job_fails_for_good_once_its_attempts_run_out(project, settings):
    settings.PREFLOOP_JOB_LIMITS = {"reward_model": {"max_attempts": 1}}
    job = _running(project, heartbeat_at=timezone.now() - timedelta(hours=1))
    swept = jobs.sweep()  # in the test's transaction: what it defers to the commit never runs
    job.refresh_from_db()
    assert swept["failed"] == 1 and swept["requeued"] == 0
    assert job.status == Job.Status.FAILED and "stopped sending heartbeats" in job.error
    assert "ran 1 time(s) (1 allowed)" in job.error


def test_a_job_that_beats_but_never_ends_is_stopped_at_its_time_limit(project, settings):
    settings.PREFLOOP_JOB_LIMITS = {"reward_model": {"time_limit_seconds": 60}}
    stuck = _running(project, started_at=timezone.now() - timedelta(minutes=5))
    fresh = _running(project)
    swept = jobs.sweep()  # in the test's transaction: what it defers to the commit never runs
    stuck.refresh_from_db()
    fresh.refresh_from_db()
    assert swept["timed_out"] == 1
    assert stuck.status == Job.Status.FAILED and "time limit of 60 s" in stuck.error
    assert fresh.status == Job.Status.RUNNING


def test_a_run_of_an_earlier_attempt_writes_nothing_into_the_new_one(project):
    old_run = _running(project, attempt=1)
    Job.objects.filter(pk=old_run.pk).update(attempt=2)  # the sweeper gave the job to another worker
    reporter = jobs.JobReporter(old_run)
    try:
        reporter.progress(1.0, "done by the old run")
        assert reporter.should_stop()
    finally:
        reporter.close()
    assert jobs.finish(old_run, Job.Status.SUCCEEDED) == "lost"
    current = Job.objects.get(pk=old_run.pk)
    assert current.status == Job.Status.RUNNING and current.message != "done by the old run"


def test_the_command_line_runs_a_job_and_prints_its_metrics_last(celery_worker_process, judged, tmp_path):
    env = {**os.environ, "DATABASE_URL": database_url_for_subprocess(), "DATABASE_CONN_MAX_AGE": "0"}
    done = subprocess.run([sys.executable, str(REPO / "manage.py"), "run_job", "reward_model", "--project",
                           judged.slug, "--config", json.dumps(QUICK), "--wait"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert last["status"] == "succeeded" and 0 <= last["eval_accuracy"] <= 1
    assert "running" in done.stderr
    checkpoint = Checkpoint.objects.get(job_id=last["job"])

    # evaluate_reward on a file in an import format
    path = shared_file(ALPACA_JUDGMENTS / "falcon-7b-instruct_vs_text_davinci_003.jsonl")
    lines = path.read_text().splitlines()[:40]
    sample = tmp_path / "sample.jsonl"
    sample.write_text("\n".join(lines))
    evaluated = subprocess.run([sys.executable, str(REPO / "manage.py"), "evaluate_reward", str(checkpoint.pk),
                                str(sample)], env=env, capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    report = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert report["n"] == sum(1 for line in lines if '"preference": 0' not in line)
    assert set(report["baselines"]) == {"random", "longer_wins"} and 0 <= report["accuracy"] <= 1
    assert DatasetSnapshot.objects.count() == 1


def _pipeline_between_steps(project, step_status, minutes_ago=10):
    """A round pipeline whose first step (the reward model) has ended, as if the news of its end
    never arrived (the worker died just after its commit)."""
    from datetime import timedelta

    from django.utils import timezone

    started = timezone.now() - timedelta(minutes=minutes_ago)
    pipeline = Job.objects.create(project=project, kind="round", status=Job.Status.RUNNING, started_at=started,
                                  config=jobs.parse_config("round", {}).to_dict(), result={"round": 1})
    step = Job.objects.create(project=project, kind="reward_model", parent=pipeline, status=step_status,
                              started_at=started, finished_at=started, config={}, error="boom")
    return pipeline, step


def test_the_sweeper_closes_a_pipeline_whose_step_end_went_unheard(project):
    pipeline, step = _pipeline_between_steps(project, Job.Status.FAILED)
    jobs.sweep()
    pipeline.refresh_from_db()
    assert pipeline.status == Job.Status.FAILED
    assert f"job #{step.pk}" in pipeline.error and "boom" in pipeline.error
    assert pipeline.steps.count() == 1


def test_cancelling_a_pipeline_between_steps_closes_it_and_launches_nothing(
        project, django_capture_on_commit_callbacks):
    pipeline, _ = _pipeline_between_steps(project, Job.Status.SUCCEEDED, minutes_ago=0)
    with django_capture_on_commit_callbacks(execute=True):
        jobs.cancel(pipeline)
    pipeline.refresh_from_db()
    assert pipeline.status == Job.Status.CANCELLED and pipeline.finished_at is not None
    assert pipeline.steps.count() == 1  # no DPO step was started after the cancel


def test_a_model_path_inside_prefloops_files_is_refused(project, settings):
    other = settings.MEDIA_ROOT / "checkpoints" / "another-project" / "policy-job7"
    for kind in ("reward_model", "dpo", "generate"):
        with pytest.raises(jobs.LaunchRefused) as refused:
            jobs.launch(project, kind, {"base_model": str(other)})
        assert refused.value.field == "base_model" and "parent" in refused.value.message
    assert not Job.objects.exists()
