"""Job control pages (managers and owners): launch with a validated config, watch live, cancel,
retry, read the log and the metric plots; and the model registry with lineage."""

from __future__ import annotations

import io
import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Avg, Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotate.access import get_project_for_manager

from . import jobs
from .models import CandidateScore, Checkpoint, Job, JobMetric

LOG_TAIL_BYTES = 6000


def _kind_forms(values=None, errors=None):
    forms = []
    for kind, spec in jobs.kinds().items():
        fields = spec.config.describe()
        for f in fields:
            value = (values or {}).get(f["name"], f["default"]) if (values or {}).get("kind") == kind else f["default"]
            if isinstance(value, dict):
                value = json.dumps(value)
            elif isinstance(value, list):
                value = ", ".join(str(item) for item in value)
            f["value"] = value
            f["input"] = "checkbox" if f["type"] == "bool" else "number" if f["type"] in ("int", "float") else "text"
        forms.append({"kind": kind, "label": spec.label, "fields": fields,
                      "errors": errors if (values or {}).get("kind") == kind else None})
    return forms


@login_required
@require_http_methods(["GET", "POST"])
def jobs_page(request: HttpRequest, slug: str) -> HttpResponse:
    project, _ = get_project_for_manager(request, slug)
    status, error, values = 200, None, None
    if request.method == "POST":
        kind = request.POST.get("kind", "")
        spec = jobs.kinds().get(kind)
        values = {"kind": kind}
        config = {}
        if spec:
            for f in spec.config.describe():
                if f["type"] == "bool":
                    config[f["name"]] = f["name"] in request.POST
                elif f["name"] in request.POST:
                    config[f["name"]] = request.POST[f["name"]].strip()
            values.update(config)
        try:
            job = jobs.launch(project, kind, config, user=request.user)
        except jobs.LaunchRefused as exc:
            error, status = exc.message, 400
        else:
            messages.success(request, f"Job #{job.pk} queued.")
            return redirect("job", slug=slug, job_id=job.pk)
    context = {"project": project, "kind_forms": _kind_forms(values, error), "error": error,
               **_job_list_context(project)}
    return render(request, "training/jobs.html", context, status=status)


def _job_list_context(project):
    rows = list(Job.objects.filter(project=project, parent__isnull=True).select_related("checkpoint")[:50])
    return {"jobs": rows, "active": any(not j.finished for j in rows)}


@login_required
@require_GET
def jobs_list_fragment(request: HttpRequest, slug: str) -> HttpResponse:
    project, _ = get_project_for_manager(request, slug)
    return render(request, "training/_job_list.html", {"project": project, **_job_list_context(project)})


def _job_for(request, slug, job_id):
    project, _ = get_project_for_manager(request, slug)
    return project, get_object_or_404(Job.objects.select_related("project"), project=project, pk=job_id)


def _log_tail(job: Job) -> str:
    path = jobs.log_path(job)
    if not path.exists():
        return ""
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
        return handle.read().decode("utf-8", "replace")


@login_required
@require_GET
def job_page(request: HttpRequest, slug: str, job_id: int) -> HttpResponse:
    project, job = _job_for(request, slug, job_id)
    names = list(JobMetric.objects.filter(job=job).values_list("name", flat=True).distinct().order_by("name"))
    context = {"project": project, "job": job, "log": _log_tail(job), "metric_names": names,
               "steps": job.steps.all(), "checkpoint": Checkpoint.objects.filter(job=job).first(),
               "config_json": json.dumps(job.config, indent=2), "result_json": json.dumps(job.result, indent=2)}
    template = "training/_job_detail.html" if request.htmx else "training/job.html"
    return render(request, template, context)


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
    """One metric of a job over its steps, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    _, job = _job_for(request, slug, job_id)
    name = request.GET.get("metric", "")
    points = list(JobMetric.objects.filter(job=job, name=name).order_by("step").values_list("step", "value"))
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
    checkpoints = Checkpoint.objects.filter(project=project).select_related("parent", "job", "reward_model")
    return render(request, "training/models.html", {"project": project, "checkpoints": checkpoints})


@login_required
@require_GET
def model_page(request: HttpRequest, slug: str, checkpoint_id: int) -> HttpResponse:
    project, _ = get_project_for_manager(request, slug)
    checkpoint = get_object_or_404(Checkpoint, project=project, pk=checkpoint_id)
    lineage = [{"checkpoint": c, "snapshots": list(c.snapshots.all())} for c in checkpoint.lineage()]
    scores = CandidateScore.objects.filter(checkpoint=checkpoint)
    summary = scores.aggregate(n=Count("id"), mean=Avg("score"), spread=Avg("spread"))
    uncertain = scores.select_related("candidate__prompt").order_by("-spread", "score")[:20]
    return render(request, "training/model.html", {
        "project": project, "checkpoint": checkpoint, "lineage": lineage, "score_summary": summary,
        "uncertain": uncertain, "metrics_json": json.dumps(checkpoint.metrics, indent=2)})


@login_required
@require_POST
def round_launch(request: HttpRequest, slug: str) -> HttpResponse:
    """The "next round" button: reward model → DPO or GRPO → generate → enqueue, CPU-sized."""
    project, _ = get_project_for_manager(request, slug)
    try:
        job = jobs.launch(project, Job.Kind.ROUND, {"method": request.POST.get("method", "dpo")}, user=request.user)
    except jobs.LaunchRefused as exc:
        messages.error(request, exc.message)
        return redirect("project", slug=slug)
    messages.success(request, f"Round pipeline #{job.pk} started.")
    return redirect("job", slug=slug, job_id=job.pk)
