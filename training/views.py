"""Job control pages (managers and owners): launch with a validated config, watch live, cancel,
retry, read the log and the metric plots; and the model registry with lineage."""

from __future__ import annotations

import io
import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Avg, Count, Prefetch
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotate.access import get_project_for_manager

from . import jobs, watch
from .hardware import queue_label
from .launch_forms import FormError, config_from_post, kind_forms
from .models import CandidateScore, Checkpoint, Job, JobMetric
from .summaries import evaluation_of


@login_required
@require_http_methods(["GET", "POST"])
def jobs_page(request: HttpRequest, slug: str) -> HttpResponse:
    project, _ = get_project_for_manager(request, slug)
    status, error, posted = 200, None, None
    if request.method == "POST":
        posted = request.POST
        try:
            kind = request.POST.get("kind", "")
            job = jobs.launch(project, kind, config_from_post(kind, request.POST), user=request.user)
        except (jobs.LaunchRefused, FormError) as exc:
            error, status = exc.message, 400
        else:
            messages.info(request, f"Job #{job.pk} launched.")
            return redirect("job", slug=slug, job_id=job.pk)
    context = {"project": project, "kind_forms": kind_forms(posted, error), "error": error,
               **_job_list_context(project)}
    return render(request, "training/jobs.html", context, status=status)


def _job_list_context(project):
    """The latest 50 top-level jobs, each pipeline with its steps grouped under it."""
    rows = list(Job.objects.filter(project=project, parent__isnull=True).select_related("checkpoint")
                .prefetch_related(Prefetch("steps", queryset=Job.objects.order_by("id")))[:50])
    for job in rows:
        job.shown_progress = job.progress
        if jobs.kinds()[job.kind].pipeline:
            job.shown_progress = watch.pipeline_steps(job, list(job.steps.all()))[1]
    active = any(not j.finished or any(not s.finished for s in j.steps.all()) for j in rows)
    return {"jobs": rows, "active": active}


@login_required
@require_GET
def jobs_list_fragment(request: HttpRequest, slug: str) -> HttpResponse:
    project, _ = get_project_for_manager(request, slug)
    return render(request, "training/_job_list.html", {"project": project, **_job_list_context(project)})


def _job_for(request, slug, job_id):
    project, _ = get_project_for_manager(request, slug)
    return project, get_object_or_404(Job.objects.select_related("project", "parent", "created_by"), project=project, pk=job_id)


@login_required
@require_GET
def job_page(request: HttpRequest, slug: str, job_id: int) -> HttpResponse:
    """The whole page, or (htmx, every 2 s while the job runs) only what changes: the live part
    swaps itself and the rest comes out of band, so Config and Result stay as the user left them."""
    project, job = _job_for(request, slug, job_id)
    is_pipeline = jobs.kinds()[job.kind].pipeline
    steps, progress = watch.pipeline_steps(job) if is_pipeline else ([], job.progress)
    curves, summaries, points = watch.metric_overview(job)
    log = watch.log_of(job, steps if is_pipeline else None)
    evaluation = evaluation_of(job.result) if job.status == Job.Status.SUCCEEDED else None
    context = {"project": project, "job": job, "log": log, "metric_names": curves, "summaries": summaries,
               "points": points, "steps": steps, "progress": progress, "evaluation": evaluation,
               "checkpoint": Checkpoint.objects.filter(job=job).first(), "queue": queue_label(job.queue),
               "activity": watch.last_line(log) if job.status == Job.Status.RUNNING else "",
               "config_json": json.dumps(job.config, indent=2), "result_json": json.dumps(job.result, indent=2)}
    if request.htmx:
        try:
            context["plots_stale"] = int(request.GET.get("points", "-1")) != points
        except ValueError:
            context["plots_stale"] = True
        return render(request, "training/_job_poll.html", context)
    return render(request, "training/job.html", context)


@login_required
@require_POST
def job_cancel(request: HttpRequest, slug: str, job_id: int) -> HttpResponse:
    _, job = _job_for(request, slug, job_id)
    jobs.cancel(job)
    messages.info(request, f"Job #{job.pk}: " + ("cancelled." if job.finished else "cancelling at the next step."))
    return redirect("job", slug=slug, job_id=job.pk)


@login_required
@require_POST
def job_retry(request: HttpRequest, slug: str, job_id: int) -> HttpResponse:
    _, job = _job_for(request, slug, job_id)
    try:
        jobs.retry(job)
    except jobs.LaunchRefused as exc:
        messages.error(request, exc.message)
    return redirect("job", slug=slug, job_id=job.pk)


@login_required
@require_GET
def job_plot(request: HttpRequest, slug: str, job_id: int) -> HttpResponse:
    """One metric of a job along its training steps, as a PNG (final values are not points)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from .summaries import FINAL_STEP

    _, job = _job_for(request, slug, job_id)
    name = request.GET.get("metric", "")
    points = list(JobMetric.objects.filter(job=job, name=name, step__lt=FINAL_STEP).order_by("step")
                  .values_list("step", "value"))
    if not points:
        raise Http404("No such metric for this job.")
    figure, axis = plt.subplots(figsize=(5, 2.6), dpi=100)
    steps, values = zip(*points, strict=True)
    axis.plot(steps, values, marker="." if len(points) < 60 else None, linewidth=1.5, color="#2456d3")
    axis.set_title(name, fontsize=10)
    axis.set_xlabel("step", fontsize=8)
    axis.grid(alpha=0.3)
    axis.tick_params(labelsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    response = HttpResponse(buffer.getvalue(), content_type="image/png")
    response["Cache-Control"] = "no-store" if not job.finished else "max-age=3600"
    return response


@login_required
@require_GET
def models_page(request: HttpRequest, slug: str) -> HttpResponse:
    project, _ = get_project_for_manager(request, slug)
    checkpoints = list(Checkpoint.objects.filter(project=project).select_related("parent", "job", "reward_model"))
    for checkpoint in checkpoints:
        checkpoint.evaluation = evaluation_of(checkpoint.metrics)
    return render(request, "training/models.html", {"project": project, "checkpoints": checkpoints})


@login_required
@require_GET
def model_page(request: HttpRequest, slug: str, checkpoint_id: int) -> HttpResponse:
    project, _ = get_project_for_manager(request, slug)
    checkpoint = get_object_or_404(Checkpoint.objects.select_related("parent", "job", "reward_model"),
                                   project=project, pk=checkpoint_id)
    lineage = [{"checkpoint": c, "snapshots": list(c.snapshots.all())} for c in checkpoint.lineage()]
    scores = CandidateScore.objects.filter(checkpoint=checkpoint)
    summary = scores.aggregate(n=Count("id"), mean=Avg("score"), spread=Avg("spread"))
    uncertain = scores.select_related("candidate__prompt").order_by("-spread", "score")[:20]
    return render(request, "training/model.html", {
        "project": project, "checkpoint": checkpoint, "lineage": lineage, "score_summary": summary,
        "uncertain": uncertain, "evaluation": evaluation_of(checkpoint.metrics),
        "metrics_json": json.dumps(checkpoint.metrics, indent=2)})


@login_required
@require_POST
def round_launch(request: HttpRequest, slug: str) -> HttpResponse:
    """The "next round" button: reward model → new policy → generate → enqueue, CPU-sized."""
    project, _ = get_project_for_manager(request, slug)
    method = request.POST.get("method")
    try:
        job = jobs.launch(project, Job.Kind.ROUND, {"method": method} if method else {}, user=request.user)
    except jobs.LaunchRefused as exc:
        messages.error(request, exc.message)
        return redirect("project", slug=slug)
    messages.info(request, f"Round pipeline #{job.pk} started.")
    return redirect("job", slug=slug, job_id=job.pk)
