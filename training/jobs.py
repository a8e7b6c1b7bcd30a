"""The job core: launch, claim, heartbeat, finish, cancel, retry, sweep, time limits.

Every kind of job goes through `launch` (config validated before anything is queued), a Celery
task that claims the row with a conditional update and calls the kind's `execute`, and `finish`,
which records the outcome and registers a checkpoint in one transaction, only if the row is still
this attempt's. The database row decides; the broker only carries the wake-up call.

The core knows no kind, pipeline or webhook: kinds are looked up in `training.registry`, workers
are woken by the task's name, and a job's end is announced through `training.events`.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import traceback
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F
from django.utils import timezone

from annotate.models import Project

from .events import announce_later
from .models import TERMINAL, Job, JobMetric
from .registry import KindSpec, LaunchRefused, Outcome, all_kinds, spec_for
from .runners.base import Cancelled, ConfigError, Reporter, RunConfig, RunFailed

log = logging.getLogger(__name__)


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


def kinds() -> dict[str, KindSpec]:
    return all_kinds()


def spec_of(kind: str) -> KindSpec:
    spec = spec_for(kind)
    if spec is None:
        raise LaunchRefused(f"Unknown job kind {kind!r}. Known kinds: {', '.join(all_kinds())}.", "kind")
    return spec


def parse_config(kind: str, data: dict | None) -> RunConfig:
    spec = spec_of(kind)
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
    spec = spec_of(kind)
    spec.check(project, parsed)
    now = timezone.now()
    with transaction.atomic():
        job = Job.objects.create(project=project, kind=kind, config=parsed.to_dict(), queue=queue or spec.queue,
                                 created_by=user if getattr(user, "pk", None) else None, parent=parent,
                                 enqueued_at=now)
        if spec.pipeline:  # no worker runs it: it starts its steps
            Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING, started_at=now, message="starting")
            job.status, job.started_at = Job.Status.RUNNING, now
            transaction.on_commit(lambda: start_pipeline(job.pk))
        else:
            transaction.on_commit(lambda: send(job))
    return job


def advance_pipeline(job_id: int) -> None:
    """Let a pipeline look at its steps: launch the next one, or close it."""
    kind = Job.objects.filter(pk=job_id).values_list("kind", flat=True).first()
    spec = spec_for(kind) if kind else None
    if spec is not None and spec.pipeline:
        spec.advance(job_id)


def start_pipeline(job_id: int) -> None:
    job = Job.objects.select_related("project").get(pk=job_id)
    spec_of(job.kind).start(job)


RUN_TASK = "training.run_job"  # the Celery task (training.tasks) that calls run(); sent by name


def send(job: Job) -> None:
    from config.celery import app

    app.send_task(RUN_TASK, args=[job.pk], queue=job.queue)


# --- running -----------------------------------------------------------------------------------


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def mine(job: Job):
    """The job's row while it is still this run's: running, on this worker, this attempt. Every
    write of a run goes through it, so a run the sweeper gave up on writes nothing more."""
    return Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, worker=job.worker, attempt=job.attempt)


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
        self.last_message = None
        self.last_check = 0.0
        self.stop = False
        self.pending: list[JobMetric] = []
        self.log_file = open(log_path(job), "a", encoding="utf-8", buffering=1)  # noqa: SIM115 -- closed in close()

    def progress(self, fraction: float, message: str = "") -> None:
        now = time.monotonic()
        # At most one write a second, but a new message (the run moved on to a new stage) always.
        if now - self.last_progress < 1.0 and fraction < 1.0 and message == self.last_message:
            return
        self.last_progress, self.last_message = now, message
        mine(self.job).update(
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
            self.stop = not mine(self.job).filter(cancel_requested=False).exists()
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
                    mine(self.job).update(heartbeat_at=timezone.now())
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
    spec = spec_of(job.kind)
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
    if status != Job.Status.SUCCEEDED:  # gone before the job shows as ended
        shutil.rmtree(scratch_dir(job), ignore_errors=True)
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


def _with_lost_attempts(job: Job, metrics: dict) -> dict:
    lost = (job.result or {}).get("lost_attempts")
    return {**metrics, "lost_attempts": lost} if lost else metrics


def final_dir_for(job: Job, kind: str) -> Path:
    return media() / "checkpoints" / job.project.slug / f"{kind}-job{job.pk}"


def _finish(job: Job, status: str, error: str, outcome: Outcome | None) -> str:
    from .models import Checkpoint

    with transaction.atomic():
        updated = mine(job).update(
            status=status, finished_at=timezone.now(), error=error[:5000],
            progress=1.0 if status == Job.Status.SUCCEEDED else F("progress"), message=status,
            result=_with_lost_attempts(job, outcome.metrics if outcome else {}),
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
        if spec_of(job.kind).pipeline:  # between steps no step will finish to close it: look now
            transaction.on_commit(lambda: advance_pipeline(job.pk), robust=True)
    job.refresh_from_db()
    return job


def retry(job: Job) -> Job:
    """Queue a failed or cancelled job again, as a new attempt with the same config."""
    pipeline = spec_of(job.kind).pipeline
    now = timezone.now()
    with transaction.atomic():
        updated = Job.objects.filter(pk=job.pk, status__in=[Job.Status.FAILED, Job.Status.CANCELLED]).update(
            status=Job.Status.RUNNING if pipeline else Job.Status.QUEUED, attempt=job.attempt + 1, error="",
            progress=0.0, message="queued again", cancel_requested=False, started_at=now if pipeline else None,
            finished_at=None, heartbeat_at=None, worker="", enqueued_at=now, result={})
        if not updated:
            raise LaunchRefused(f"Only a failed or cancelled job can be retried; this one is {job.status}.")
        JobMetric.objects.filter(job=job).delete()
        transaction.on_commit(lambda: start_pipeline(job.pk) if pipeline else send(job))
        # Read back before the commit sends it: the caller gets the state its retry made (queued, or
        # running for a pipeline), not whatever a fast worker has made of it since.
        job.refresh_from_db()
    return job


def limits(spec: KindSpec) -> tuple[int, int]:
    """(max_attempts, time_limit_seconds) of a kind: the kind's own, unless settings override it
    (PREFLOOP_JOB_LIMITS, e.g. {"dpo": {"max_attempts": 3, "time_limit_seconds": 7200}})."""
    override = settings.PREFLOOP_JOB_LIMITS.get(spec.name, {})
    return (int(override.get("max_attempts", spec.max_attempts or settings.PREFLOOP_JOB_MAX_ATTEMPTS)),
            int(override.get("time_limit_seconds", spec.time_limit_seconds)))


def _lost(job: Job, now, reason: str) -> str:
    """A run whose worker is gone: queue it again for another worker while attempts are left
    (the log keeps the lost attempt's lines), else fail it for good. Returns what was done."""
    spec = spec_of(job.kind)
    max_attempts, _ = limits(spec)
    lost = int((job.result or {}).get("lost_attempts", 0)) + 1
    fenced = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, attempt=job.attempt,
                                heartbeat_at=job.heartbeat_at)
    if lost < max_attempts:
        with transaction.atomic():
            if not fenced.update(status=Job.Status.QUEUED, attempt=job.attempt + 1, worker="", started_at=None,
                                 heartbeat_at=None, progress=0.0, enqueued_at=now, result={"lost_attempts": lost},
                                 message=f"worker lost; queued again (run {lost + 1} of {max_attempts})"):
                return ""
            JobMetric.objects.filter(job=job).delete()
            transaction.on_commit(lambda: send(job))
        _log_line(job, f"attempt {job.attempt} lost: {reason} Queued again as attempt {job.attempt + 1}.")
        shutil.rmtree(scratch_dir(job), ignore_errors=True)
        return "requeued"
    error = (f"{reason} No checkpoint was registered. It ran {lost} time(s) ({max_attempts} allowed); "
             "retry the job to run it again.")
    with transaction.atomic():
        if not fenced.update(status=Job.Status.FAILED, error=error, finished_at=now, message="worker lost"):
            return ""
        announce_later(job.pk)
    _log_line(job, f"attempt {job.attempt} lost: {reason} No attempts left.")
    shutil.rmtree(scratch_dir(job), ignore_errors=True)
    return "failed"


def _log_line(job: Job, line: str) -> None:
    with open(log_path(job), "a", encoding="utf-8") as out:
        out.write(f"{timezone.now():%H:%M:%S} {line}\n")


def sweep(now=None) -> dict:
    """Look after jobs whose worker is gone or stuck, and queued jobs whose message is lost:
    - a running job whose heartbeat went stale is queued again for another worker while attempts
      are left (`limits`), then failed for good;
    - a running job past its kind's time limit (it beats but never ends) is failed;
    - a pipeline whose step's end went unheard is moved on;
    - a queued job waiting too long on an idle queue is sent again (the broker may have lost it)."""
    now = now or timezone.now()
    timeout = timedelta(seconds=settings.PREFLOOP_JOB_HEARTBEAT_TIMEOUT)
    counts = {"failed": 0, "requeued": 0, "timed_out": 0, "resent": 0}
    for job in Job.objects.filter(status=Job.Status.RUNNING, heartbeat_at__lt=now - timeout):
        done = _lost(job, now, f"The worker {job.worker or '?'} stopped sending heartbeats (last at "
                               f"{job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC): it died or was killed mid-run.")
        if done:
            counts[done] += 1
    for job in Job.objects.filter(status=Job.Status.RUNNING, started_at__isnull=False, heartbeat_at__isnull=False):
        spec = spec_for(job.kind)
        if spec is None or spec.pipeline:
            continue
        _, limit = limits(spec)
        if (now - job.started_at).total_seconds() <= limit:
            continue
        error = (f"The job ran past its time limit of {limit} s (started {job.started_at:%Y-%m-%d %H:%M:%S} UTC) "
                 "and was stopped. Raise the limit (PREFLOOP_JOB_LIMITS) or make the run smaller.")
        with transaction.atomic():
            if mine(job).update(status=Job.Status.FAILED, error=error, finished_at=now, message="time limit"):
                counts["timed_out"] += 1
                announce_later(job.pk)
    # A pipeline moves on when a step's end is announced; if that was lost (the worker died right
    # after its commit), move it on here. advance() does nothing while a step is unfinished.
    pipelines = [name for name, spec in kinds().items() if spec.pipeline]
    for pipeline_id in Job.objects.filter(status=Job.Status.RUNNING, kind__in=pipelines,
                                          started_at__lt=now - timeout).values_list("pk", flat=True):
        try:
            advance_pipeline(pipeline_id)
        except Exception:
            log.exception("pipeline %s: could not move on", pipeline_id)
    base = settings.PREFLOOP_JOB_REQUEUE_SECONDS
    fresh = now - timeout
    busy = set(Job.objects.filter(status=Job.Status.RUNNING, heartbeat_at__gte=fresh).values_list("queue", flat=True))
    for job in Job.objects.filter(status=Job.Status.QUEUED, enqueued_at__isnull=False):
        waited = (now - job.enqueued_at).total_seconds()
        if waited >= base and job.queue not in busy:  # a busy queue is slow, not lost
            Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(enqueued_at=now)
            send(job)
            counts["resent"] += 1
    return counts
