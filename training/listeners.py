"""What follows a job's end, as listeners of `events.job_finished`: the project's webhooks hear of
it, and the pipeline the job is a step of moves on. Connected when the app starts."""

from __future__ import annotations

from .events import job_finished
from .jobs import advance_pipeline
from .models import Job


def notify_webhooks(sender, job_id: int, **kwargs) -> None:
    from annotate.tasks import emit  # noqa: PLC0415 -- resolved at call time, see connect()
    from annotate.webhooks import EVENT_JOB_FINISHED

    job = Job.objects.select_related("project").get(pk=job_id)
    checkpoint = getattr(job, "checkpoint", None)
    emit(job.project, EVENT_JOB_FINISHED, {"job": job.pk, "kind": job.kind, "status": job.status,
                                           "metrics": job.result, "error": job.error,
                                           "checkpoint": checkpoint.pk if checkpoint else None})


def move_pipeline_on(sender, job_id: int, **kwargs) -> None:
    parent_id = Job.objects.filter(pk=job_id).values_list("parent_id", flat=True).first()
    if parent_id:
        advance_pipeline(parent_id)


def connect() -> None:
    job_finished.connect(notify_webhooks, dispatch_uid="training.notify_webhooks")
    job_finished.connect(move_pipeline_on, dispatch_uid="training.move_pipeline_on")
