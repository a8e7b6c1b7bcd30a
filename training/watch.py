"""What the job pages show of a job: its metric series split into curves and one-off values, a
pipeline's steps (done, running, waiting) with their combined progress, and the log (for a
pipeline, its steps' logs one after another). Reads only."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Q

from . import jobs
from .models import Job, JobMetric
from .summaries import FINAL_STEP

LOG_TAIL_BYTES = 6000


def metric_overview(job: Job) -> tuple[list[str], list[tuple[str, float]], int]:
    """(names worth a plot: two or more points along training; one-off values such as a run's
    runtime or a final evaluation logged at a huge step; how many points there are in all)."""
    stats = list(JobMetric.objects.filter(job=job).values("name").annotate(
        along=Count("id", filter=Q(step__lt=FINAL_STEP)), total=Count("id")).order_by("name"))
    curves = [row["name"] for row in stats if row["along"] >= 2]
    single = [row["name"] for row in stats if row["along"] < 2]
    values: dict[str, float] = {}
    if single:
        for name, value in JobMetric.objects.filter(job=job, name__in=single).order_by("step", "id").values_list(
                "name", "value"):
            values[name] = value
    return curves, [(name, values[name]) for name in single if name in values], sum(r["total"] for r in stats)


@dataclass
class Step:
    number: int
    kind: str
    label: str
    job: Job | None  # None: not launched yet

    @property
    def status(self) -> str:
        return self.job.status if self.job else "waiting"


def _kind_label(kind: str) -> str:
    return dict(Job.Kind.choices).get(kind, kind)


def pipeline_steps(pipeline: Job, launched: list[Job] | None = None) -> tuple[list[Step], float]:
    """The pipeline's planned steps, each with its job once launched (this attempt's), and the
    progress of the whole: finished steps count whole, the running one by its own progress.
    `launched`: its step jobs in id order, when the caller has them already."""
    spec = jobs.kinds()[pipeline.kind]
    try:
        planned = spec.steps(spec.config.from_dict(pipeline.config)) if spec.steps else []
    except Exception:  # a config from an older version: show the steps that ran
        planned = []
    launched = list(pipeline.steps.order_by("id")) if launched is None else launched
    if pipeline.started_at:
        launched = [s for s in launched if s.created_at >= pipeline.started_at] or launched
    kinds = planned if len(planned) >= len(launched) else [s.kind for s in launched]
    steps = [Step(i + 1, kind, _kind_label(kind), launched[i] if i < len(launched) else None)
             for i, kind in enumerate(kinds)]
    if not steps:
        return steps, pipeline.progress
    done = sum(1.0 if s.job and s.job.status == Job.Status.SUCCEEDED else (s.job.progress if s.job else 0.0)
               for s in steps)
    progress = 1.0 if pipeline.status == Job.Status.SUCCEEDED else min(1.0, done / len(steps))
    return steps, progress


def _tail(job: Job, limit: int) -> str:
    path = jobs.log_path(job)
    if not path.exists():
        return ""
    with open(path, "rb") as handle:
        size = path.stat().st_size
        handle.seek(max(0, size - limit))
        text = handle.read().decode("utf-8", "replace")
    return text if size <= limit else "…" + text[text.find("\n") + 1:]


def log_of(job: Job, steps: list[Step] | None = None) -> str:
    """The end of the job's log; a pipeline's is its steps' logs in order, each under a header."""
    if not steps:
        return _tail(job, LOG_TAIL_BYTES)
    parts = [_tail(job, 1000)] if jobs.log_path(job).exists() else []
    ran = [s for s in steps if s.job]
    share = max(1500, LOG_TAIL_BYTES // max(1, len(ran)))
    for step in ran:
        parts.append(f"── step {step.number}: {step.label}, job #{step.job.pk}, {step.job.status} ──\n"
                     + (_tail(step.job, share) or "(nothing logged yet)\n"))
    waiting = [s for s in steps if not s.job]
    if waiting and not job.finished:
        parts.append("── waiting: " + ", ".join(f"step {s.number} ({s.label})" for s in waiting) + " ──\n")
    return "".join(parts)


def last_line(log: str) -> str:
    lines = [line for line in log.strip().splitlines()
             if line.strip() and not line.startswith(("──", "(nothing logged yet)", "…"))]
    return lines[-1][:300] if lines else ""
