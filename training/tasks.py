"""Celery tasks of the job system: run one job, sweep for lost ones. Thin wrappers around
`training.jobs`; the core sends `training.run_job` by name, so it never imports this module."""

from celery import shared_task
from celery.signals import worker_ready

from . import jobs


@shared_task(name=jobs.RUN_TASK, acks_late=True, ignore_result=True)
def run_job(job_id: int) -> str:
    return jobs.run(job_id)


@shared_task(name="training.sweep_jobs", ignore_result=True)
def sweep_jobs() -> dict:
    return jobs.sweep()


@worker_ready.connect
def sweep_on_start(**kwargs):
    """A worker that starts (after a crash, a deploy, a broker restart) looks for lost work first."""
    sweep_jobs.delay()
