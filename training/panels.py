"""What the training side adds to the project page: the rounds panel (reward model, per-round win
rates with warnings, the latest pipeline, the next-round button) and the origin of imports that a
policy round generated (its job, and who launched it)."""

from django.db.models import Count, Q
from django.template.loader import render_to_string
from django.urls import reverse

from annotate.models import Comparison

from . import watch
from .models import Checkpoint, Job
from .stats import round_win_rates
from .summaries import reward_model_warnings, round_warning


def rounds_panel(request, project):
    """On the project page: the loop, round by round, and the button that starts the next one."""
    rounds = {row["round"]: row for row in round_win_rates(project)}
    queued = (Comparison.objects.filter(project=project, origin=Comparison.Origin.ROUND).values("round")
              .annotate(total=Count("id"), open=Count("id", filter=Q(status="open"))).order_by("round"))
    rows = []
    for q in queued:
        row = {"round": q["round"], "comparisons": q["total"], "open": q["open"], **rounds.get(q["round"], {})}
        row["warning"] = round_warning(row)
        rows.append(row)
    latest = Job.objects.filter(project=project, kind=Job.Kind.ROUND).first()
    steps, progress = watch.pipeline_steps(latest) if latest else ([], 0.0)
    reward = Checkpoint.objects.filter(project=project, kind=Checkpoint.Kind.REWARD_MODEL).first()
    scored = reward.scores.count() if reward else 0
    return render_to_string("training/_rounds_panel.html", {
        "project": project, "rows": rows, "latest": latest, "latest_steps": steps, "latest_progress": progress,
        "reward": reward, "reward_warnings": reward_model_warnings(reward.metrics) if reward else [],
        "scored": scored, "methods": round_methods()}, request=request)


def round_methods() -> list[dict]:
    """The round's methods for the button's menu, the default first."""
    from .kinds.round import RoundConfig

    method = next(f for f in RoundConfig.describe() if f["name"] == "method")
    return sorted(({"value": value, "label": label, "default": value == method["default"]}
                   for value, label in method["choices"].items()), key=lambda m: not m["default"])


def generated_imports(project, batches) -> dict:
    """Import batches written by a generate job ("job N"): named as the round's answers, linked to
    the job, with who launched it (or its pipeline)."""
    ids = {}
    for batch in batches:
        if batch.format == "generate" and batch.filename.startswith("job ") and batch.filename[4:].isdigit():
            ids[batch.pk] = int(batch.filename[4:])
    found = {job.pk: job for job in Job.objects.filter(project=project, pk__in=ids.values())
             .select_related("created_by", "parent__created_by")}
    out = {}
    for batch_id, job_id in ids.items():
        job = found.get(job_id)
        if job is None:
            out[batch_id] = {"label": f"answers of job #{job_id} (deleted)", "url": "", "by": "–"}
            continue
        launcher = job.created_by or (job.parent.created_by if job.parent else None)
        round_number = (job.result or {}).get("round") or (job.config or {}).get("round")
        label = f"round {round_number} answers, job #{job.pk}" if round_number else f"answers of job #{job.pk}"
        if job.parent_id:
            label += f" (pipeline #{job.parent_id})"
        out[batch_id] = {"label": label, "url": reverse("job", args=[project.slug, job.pk]),
                         "by": launcher.username if launcher else "command line"}
    return out
