"""Celery tasks of the always-fresh reward head: a periodic check (beat, CELERY_BEAT_SCHEDULE)
finds projects with K new judgments and asks for one refit each on the light `default` queue.
Imported by the worker through CELERY_IMPORTS."""

from celery import shared_task


@shared_task(name="training.check_reward_heads", ignore_result=True)
def check_reward_heads() -> list[int]:
    from .reward_head import due_projects

    due = due_projects()
    for project_id in due:
        refit_reward_head.delay(project_id)
    return due


@shared_task(name="training.refit_reward_head", ignore_result=True, acks_late=True)
def refit_reward_head(project_id: int) -> str:
    from annotate.models import Project

    from .reward_head import refit

    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return "no such project"
    return refit(project).message
