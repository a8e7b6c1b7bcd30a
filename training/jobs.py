"""The job system: launch, claim, heartbeat, finish, cancel, retry, sweep.

Every kind of job goes through `launch` (config validated before anything is queued), a Celery
task that claims the row with a conditional update and calls `execute`, and `finish`, which
records the outcome and registers a checkpoint in one transaction, only if the row is still the
worker's. The database row decides; the broker only carries the wake-up call.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F
from django.utils import timezone

from annotate.models import Judgment, Project

from .models import TERMINAL, Job, JobMetric
from .runners.base import Cancelled, ConfigError, Reporter, RunConfig, RunFailed

log = logging.getLogger(__name__)


class LaunchRefused(Exception):
    """A job that must not be queued; the message says why and what to change."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass
class Outcome:
    """What `execute` hands back: final metrics and, for a job that trained a model, the
    checkpoint to register (files already complete in `checkpoint_dir`)."""

    metrics: dict
    checkpoint: dict | None = None  # kind, name, base_model, parent_id, reward_model_id, snapshot_ids, config
    checkpoint_dir: Path | None = None


def media() -> Path:
    return Path(settings.MEDIA_ROOT)


def job_dir(job: Job) -> Path:
    path = media() / "jobs" / str(job.pk)
    path.mkdir(parents=True, exist_ok=True)
    return path


def scratch_dir(job: Job) -> Path:
    """Where a run writes its checkpoint; renamed into place only once complete."""
    return media() / "checkpoints" / f".partial-job{job.pk}-attempt{job.attempt}"


def log_path(job: Job) -> Path:
    return job_dir(job) / "log.txt"


# --- launching ---------------------------------------------------------------------------------


def kinds():
    from .kinds import KINDS

    return KINDS


def parse_config(kind: str, data: dict | None) -> RunConfig:
    spec = kinds().get(kind)
    if spec is None:
        raise LaunchRefused(f"Unknown job kind {kind!r}. Known kinds: {', '.join(kinds())}.", "kind")
    try:
        return spec.config.from_dict(data)
    except ConfigError as exc:
        raise LaunchRefused(f"Config field {exc.field!r}: {exc.message}.", exc.field) from None


def check_model_paths(config: RunConfig) -> None:
    """A model named by path must not lie among Prefloop's own files: trained checkpoints are
    reached by id (`parent`, `checkpoint`), which keeps each project to its own models."""
    value = getattr(config, "base_model", "") or ""
    if value and Path(value).expanduser().resolve().is_relative_to(media().resolve()):
        raise LaunchRefused(f"Config field 'base_model': {value!r} is inside Prefloop's media directory; "
                            "start from a trained checkpoint with `parent` (its id) instead.", "base_model")


def launch(project: Project, kind: str, config: dict | None = None, *, user=None, parent: Job | None = None,
           queue: str | None = None) -> Job:
    """Validate and queue a job. Raises LaunchRefused before anything is written."""
    parsed = parse_config(kind, config)
    check_model_paths(parsed)
    spec = kinds()[kind]
    spec.check(project, parsed)
    now = timezone.now()
    with transaction.atomic():
        job = Job.objects.create(project=project, kind=kind, config=parsed.to_dict(), queue=queue or spec.queue,
                                 created_by=user if getattr(user, "pk", None) else None, parent=parent,
                                 enqueued_at=now)
        if spec.pipeline:  # no worker runs it: it starts its steps
            Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING, started_at=now, message="starting")
            job.status, job.started_at = Job.Status.RUNNING, now
            transaction.on_commit(lambda: _start_pipeline(job.pk))
        else:
            transaction.on_commit(lambda: send(job))
    return job


def _advance_pipeline(job_id: int) -> None:
    from .pipeline import advance

    advance(job_id)


def _start_pipeline(job_id: int) -> None:
    from .pipeline import start

    start(Job.objects.select_related("project").get(pk=job_id))


def send(job: Job) -> None:
    from .tasks import run_job

    run_job.apply_async(args=[job.pk], queue=job.queue)


# --- running -----------------------------------------------------------------------------------


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim(job_id: int) -> Job | None:
    """Take a queued job for this worker; None if another took it or it is no longer queued."""
    now = timezone.now()
    taken = Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(
        status=Job.Status.RUNNING, worker=worker_name(), started_at=now, heartbeat_at=now, progress=0.0,
        message="starting", error="",
    )
    return Job.objects.get(pk=job_id) if taken else None


class JobReporter(Reporter):
    """Progress, metrics and log lines into the job's row, series and log file; cancellation read
    from the row at most every few seconds."""

    def __init__(self, job: Job):
        self.job = job
        self.last_progress = 0.0
        self.last_check = 0.0
        self.stop = False
        self.pending: list[JobMetric] = []
        self.log_file = open(log_path(job), "a", encoding="utf-8", buffering=1)  # noqa: SIM115 -- closed in close()

    def progress(self, fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if now - self.last_progress < 1.0 and fraction < 1.0:
            return
        self.last_progress = now
        Job.objects.filter(pk=self.job.pk, status=Job.Status.RUNNING, worker=self.job.worker).update(
            progress=max(0.0, min(1.0, fraction)), message=message[:300], heartbeat_at=timezone.now())
        self.flush()

    def metric(self, step: int, name: str, value: float) -> None:
        if value == value:  # NaN is not a point
            self.pending.append(JobMetric(job_id=self.job.pk, step=step, name=name[:60], value=float(value)))
        if len(self.pending) >= 50:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            JobMetric.objects.bulk_create(self.pending)
            self.pending = []

    def log(self, line: str) -> None:
        self.log_file.write(f"{timezone.now():%H:%M:%S} {line}\n")

    def should_stop(self) -> bool:
        """Cancel asked, or the row is no longer this worker's run (the sweeper failed it and
        someone retried it): either way this run must end and write nothing more."""
        now = time.monotonic()
        if not self.stop and now - self.last_check > 2.0:
            self.last_check = now
            self.stop = not Job.objects.filter(pk=self.job.pk, status=Job.Status.RUNNING, worker=self.job.worker,
                                               cancel_requested=False).exists()
        return self.stop

    def close(self) -> None:
        self.flush()
        self.log_file.close()


class Heartbeat:
    """Beats in a thread while the run works: a training step can take longer than the sweeper
    waits, and the step callbacks alone would then miss beats."""

    def __init__(self, job: Job, every: float):
        self.job, self.every = job, every
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{job.pk}")

    def _beat(self):
        try:
            while not self.done.wait(self.every):
                try:
                    Job.objects.filter(pk=self.job.pk, status=Job.Status.RUNNING, worker=self.job.worker).update(
                        heartbeat_at=timezone.now())
                except Exception:  # a dropped connection or a locked database: beat again next time
                    log.warning("job %s: heartbeat failed", self.job.pk, exc_info=True)
                    connection.close()
        finally:
            connection.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join(timeout=self.every + 5)


def run(job_id: int) -> str:
    """The body of the Celery task: claim, execute, finish. Returns the final status."""
    if not connection.in_atomic_block:  # a worker between tasks; not a caller inside its own transaction
        close_old_connections()
    job = claim(job_id)
    if job is None:
        return "not claimed"
    spec = kinds()[job.kind]
    reporter = JobReporter(job)
    reporter.log(f"attempt {job.attempt} on {job.worker}: {job.kind} {job.config}")
    outcome, status, error = None, Job.Status.SUCCEEDED, ""
    try:
        with Heartbeat(job, settings.PREFLOOP_JOB_HEARTBEAT_SECONDS):
            outcome = spec.execute(job, spec.config.from_dict(job.config), reporter)
    except Cancelled:
        reporter.log("cancelled")
        status, error = Job.Status.CANCELLED, "Cancelled on request."
    except (RunFailed, ConfigError, LaunchRefused) as exc:
        reporter.log(f"failed: {exc}")
        status, error = Job.Status.FAILED, str(getattr(exc, "message", None) or exc)
    except Exception as exc:  # a bug or an environment fault: keep the trace for the log
        reporter.log(traceback.format_exc())
        status, error = Job.Status.FAILED, f"{type(exc).__name__}: {exc}"
    finally:
        reporter.close()
    try:
        return finish(job, status, error=error, outcome=outcome)
    finally:
        shutil.rmtree(scratch_dir(job), ignore_errors=True)  # what a failed or lost run left behind


def finish(job: Job, status: str, *, error: str = "", outcome: Outcome | None = None) -> str:
    """Record the end of a run; register its checkpoint in the same transaction. Only if the job
    is still this worker's: a job the sweeper already failed stays failed and its files go."""
    try:
        return _finish(job, status, error, outcome)
    except Exception:  # nothing committed (what runs after the commit cannot raise): drop the files
        if outcome and outcome.checkpoint_dir is not None:
            shutil.rmtree(outcome.checkpoint_dir, ignore_errors=True)
            if outcome.checkpoint:
                shutil.rmtree(final_dir_for(job, outcome.checkpoint["kind"]), ignore_errors=True)
        raise


def final_dir_for(job: Job, kind: str) -> Path:
    return media() / "checkpoints" / job.project.slug / f"{kind}-job{job.pk}"


def _finish(job: Job, status: str, error: str, outcome: Outcome | None) -> str:
    from .models import Checkpoint

    with transaction.atomic():
        updated = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, worker=job.worker).update(
            status=status, finished_at=timezone.now(), error=error[:5000],
            progress=1.0 if status == Job.Status.SUCCEEDED else F("progress"), message=status, result=outcome.metrics if outcome else {},
        )
        if not updated:
            if outcome and outcome.checkpoint_dir:
                shutil.rmtree(outcome.checkpoint_dir, ignore_errors=True)
            return "lost"
        if outcome and outcome.checkpoint is not None and outcome.checkpoint_dir is not None:
            spec = dict(outcome.checkpoint)
            snapshots = spec.pop("snapshot_ids", [])
            final_dir = final_dir_for(job, spec["kind"])
            if final_dir.exists():
                shutil.rmtree(final_dir)
            final_dir.parent.mkdir(parents=True, exist_ok=True)
            os.replace(outcome.checkpoint_dir, final_dir)  # complete on disk before the row exists
            size = sum(f.stat().st_size for f in final_dir.rglob("*") if f.is_file())
            checkpoint = Checkpoint.objects.create(
                project=job.project, job=job, path=str(final_dir.relative_to(media())), size_bytes=size,
                metrics=outcome.metrics, **spec)
            checkpoint.snapshots.set(snapshots)
        announce_later(job.pk)
    return status


def announce_later(job_id: int) -> None:
    """Once committed: webhooks hear that the job ended, and its pipeline moves on. A fault there
    is logged, never raised into the code that committed (the sweeper moves a pipeline on later)."""
    transaction.on_commit(lambda: _announce(job_id), robust=True)


def _announce(job_id: int) -> None:
    from annotate.webhooks import EVENT_JOB_FINISHED, emit

    job = Job.objects.select_related("project").get(pk=job_id)
    checkpoint = getattr(job, "checkpoint", None)
    emit(job.project, EVENT_JOB_FINISHED, {"job": job.pk, "kind": job.kind, "status": job.status,
                                           "metrics": job.result, "error": job.error,
                                           "checkpoint": checkpoint.pk if checkpoint else None})
    if job.parent_id:
        _advance_pipeline(job.parent_id)


# --- control -----------------------------------------------------------------------------------


def cancel(job: Job) -> Job:
    """A queued job is cancelled at once; a running one at its next step boundary."""
    with transaction.atomic():
        now = timezone.now()
        if Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(
                status=Job.Status.CANCELLED, finished_at=now, message="cancelled", cancel_requested=True):
            announce_later(job.pk)
        else:
            Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(cancel_requested=True,
                                                                            message="cancelling")
        for step in Job.objects.filter(parent=job).exclude(status__in=TERMINAL):
            cancel(step)
        if kinds()[job.kind].pipeline:  # between steps no step will finish to close it: look now
            transaction.on_commit(lambda: _advance_pipeline(job.pk), robust=True)
    job.refresh_from_db()
    return job


def retry(job: Job) -> Job:
    """Queue a failed or cancelled job again, as a new attempt with the same config."""
    pipeline = kinds()[job.kind].pipeline
    now = timezone.now()
    with transaction.atomic():
        updated = Job.objects.filter(pk=job.pk, status__in=[Job.Status.FAILED, Job.Status.CANCELLED]).update(
            status=Job.Status.RUNNING if pipeline else Job.Status.QUEUED, attempt=job.attempt + 1, error="",
            progress=0.0, message="queued again", cancel_requested=False, started_at=now if pipeline else None,
            finished_at=None, heartbeat_at=None, worker="", enqueued_at=now, result={})
        if not updated:
            raise LaunchRefused(f"Only a failed or cancelled job can be retried; this one is {job.status}.")
        JobMetric.objects.filter(job=job).delete()
        transaction.on_commit(lambda: _start_pipeline(job.pk) if pipeline else send(job))
    job.refresh_from_db()
    return job


def sweep(now=None) -> dict:
    """Fail running jobs whose worker stopped beating; send again queued jobs whose message may be
    lost (a broker restarted without persistence, say), waiting longer after each resend."""
    now = now or timezone.now()
    timeout = timedelta(seconds=settings.PREFLOOP_JOB_HEARTBEAT_TIMEOUT)
    failed = 0
    for job in Job.objects.filter(status=Job.Status.RUNNING, heartbeat_at__lt=now - timeout):
        reason = (f"The worker {job.worker or '?'} stopped sending heartbeats (last at "
                  f"{job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC): it died or was killed mid-run. No checkpoint was "
                  "registered. Retry the job to run it again.")
        if Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, heartbeat_at=job.heartbeat_at).update(
                status=Job.Status.FAILED, error=reason, finished_at=now, message="worker lost"):
            failed += 1
            shutil.rmtree(scratch_dir(job), ignore_errors=True)
            announce_later(job.pk)
    # A pipeline moves on when a step's end is announced; if that was lost (the worker died right
    # after its commit), move it on here. advance() does nothing while a step is unfinished.
    pipelines = [name for name, spec in kinds().items() if spec.pipeline]
    for pipeline_id in Job.objects.filter(status=Job.Status.RUNNING, kind__in=pipelines,
                                          started_at__lt=now - timeout).values_list("pk", flat=True):
        try:
            _advance_pipeline(pipeline_id)
        except Exception:
            log.exception("pipeline %s: could not move on", pipeline_id)
    resent = 0
    base = settings.PREFLOOP_JOB_REQUEUE_SECONDS
    fresh = now - timeout
    busy = set(Job.objects.filter(status=Job.Status.RUNNING, heartbeat_at__gte=fresh).values_list("queue", flat=True))
    for job in Job.objects.filter(status=Job.Status.QUEUED, enqueued_at__isnull=False):
        waited = (now - job.enqueued_at).total_seconds()
        if waited >= base and job.queue not in busy:  # a busy queue is slow, not lost
            Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(enqueued_at=now)
            send(job)
            resent += 1
    return {"failed": failed, "resent": resent}


def judged_comparisons(project: Project) -> int:
    return Judgment.objects.filter(project=project).values("comparison_id").distinct().count()
