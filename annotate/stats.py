"""Read-only figures for the project pages: counts, per-annotator progress, agreement."""

from __future__ import annotations

from collections import defaultdict

import krippendorff
import numpy as np
from django.core.cache import cache
from django.db.models import Avg, Count, Exists, F, Max, OuterRef, Q
from django.utils import timezone

from .importing import IMPORTED_USERNAME
from .models import Candidate, Comparison, Judgment, Lease, Membership, Project, Prompt, Skip

AGREEMENT_SAMPLE = 5000
_CHOICE_CODE = {"a": 0.0, "b": 1.0, "tie": 2.0}


def simulated_annotators(project: Project):
    """The user ids of the project's simulated annotators, as a subquery."""
    return Membership.objects.filter(project=project, simulated=True).values("user_id")


def people_only(judgments, project: Project):
    """`judgments` without those of simulated annotators: the statistics of real people leave them out."""
    return judgments.exclude(annotator_id__in=simulated_annotators(project))


def project_counts(project: Project) -> dict:
    by_status = dict(
        Comparison.objects.filter(project=project).values_list("status").annotate(n=Count("id")).values_list(
            "status", "n"
        )
    )
    judgments = Judgment.objects.filter(project=project).aggregate(
        total=Count("id"), imported=Count("id", filter=Q(annotator__username=IMPORTED_USERNAME)),
        simulated=Count("id", filter=Q(annotator_id__in=simulated_annotators(project))),
    )
    return {
        "prompts": Prompt.objects.filter(project=project).count(),
        "candidates": Candidate.objects.filter(prompt__project=project).count(),
        "comparisons": sum(by_status.values()),
        "open": by_status.get("open", 0),
        "complete": by_status.get("complete", 0),
        "retired": by_status.get("retired", 0),
        "judgments": judgments["total"],
        "imported_judgments": judgments["imported"],
        "simulated_judgments": judgments["simulated"],
        "human_judgments": judgments["total"] - judgments["imported"] - judgments["simulated"],
    }


def annotator_progress(project: Project, *, include_simulated: bool = False) -> list[dict]:
    """One row per annotator who judged here: volume, pace, tie rate, gold accuracy; simulated
    annotators only when asked, marked `simulated`."""
    judgments = Judgment.objects.filter(project=project)
    if not include_simulated:
        judgments = people_only(judgments, project)
    simulated = set(Membership.objects.filter(project=project, simulated=True).values_list("user_id", flat=True)
                    if include_simulated else ())
    rows = (
        judgments
        .exclude(annotator__username=IMPORTED_USERNAME)
        .values("annotator_id", "annotator__username")
        .annotate(
            judged=Count("id"),
            ties=Count("id", filter=Q(choice="tie")),
            mean_ms=Avg("ms_spent"),
            last=Max("created_at"),
            gold_seen=Count("id", filter=Q(comparison__gold_choice__isnull=False)),
            gold_right=Count(
                "id",
                filter=Q(comparison__gold_choice__isnull=False, choice=F("comparison__gold_choice")),
            ),
        )
        .order_by("-judged")
    )
    result = []
    for row in rows:
        result.append(
            {
                "username": row["annotator__username"],
                "judged": row["judged"],
                "tie_rate": row["ties"] / row["judged"] if row["judged"] else 0.0,
                "mean_seconds": (row["mean_ms"] or 0) / 1000,
                "last": row["last"],
                "gold_seen": row["gold_seen"],
                "gold_accuracy": row["gold_right"] / row["gold_seen"] if row["gold_seen"] else None,
                "simulated": row["annotator_id"] in simulated,
            }
        )
    return result


def agreement(project: Project, *, include_imported: bool = True, include_simulated: bool = False) -> dict:
    """Krippendorff's alpha (nominal: a / b / tie) and raw pairwise agreement over the latest
    comparisons with two or more votes (simulated annotators' only when asked). Cached for a
    minute: it reads up to 5,000 comparisons."""
    key = f"prefloop:agreement:{project.pk}:{int(include_imported)}:{int(include_simulated)}"
    cached = cache.get(key)
    if cached is not None:
        return cached
    multi = (
        Comparison.objects.filter(project=project, votes__gte=2).order_by("-id").values_list("id", flat=True)
    )[:AGREEMENT_SAMPLE]
    judgments = Judgment.objects.filter(comparison_id__in=list(multi))
    if not include_imported:
        judgments = judgments.exclude(annotator__username=IMPORTED_USERNAME)
    if not include_simulated:
        judgments = people_only(judgments, project)
    votes: dict[int, dict[int, str]] = defaultdict(dict)
    for comparison_id, annotator_id, choice in judgments.values_list("comparison_id", "annotator_id", "choice"):
        votes[comparison_id][annotator_id] = choice
    units = [v for v in votes.values() if len(v) >= 2]
    result = {"comparisons": len(units), "alpha": None, "pairwise": None}
    if units:
        agreeing = total = 0
        for unit in units:
            choices = list(unit.values())
            for i in range(len(choices)):
                for j in range(i + 1, len(choices)):
                    total += 1
                    agreeing += choices[i] == choices[j]
        result["pairwise"] = agreeing / total
        annotators = sorted({a for unit in units for a in unit})
        column = {a: i for i, a in enumerate(annotators)}
        matrix = np.full((len(annotators), len(units)), np.nan)
        for u, unit in enumerate(units):
            for annotator_id, choice in unit.items():
                matrix[column[annotator_id], u] = _CHOICE_CODE[choice]
        distinct = np.unique(matrix[~np.isnan(matrix)])
        if len(distinct) > 1:
            result["alpha"] = float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal"))
        else:
            result["alpha"] = 1.0
    cache.set(key, result, 60)
    return result


QUEUE_LEFT_CAP = 1000


def remaining_for_queue(project: Project) -> int:
    """Open comparisons in the project, counted now (a cached count lagged behind the judgments
    just made: 300 open shown after 15 judgments), up to QUEUE_LEFT_CAP + 1: a full count of a
    million open rows took 0.7 s on PostgreSQL, the capped one about 2 ms."""
    return Comparison.objects.filter(project=project, status=Comparison.Status.OPEN).values("pk")[
        :QUEUE_LEFT_CAP + 1].count()


def queue_left_for(project: Project, annotator, now=None) -> int:
    """Comparisons this annotator could still be given (the one they hold included): open, not
    judged or skipped by them, not held by someone else. Counted up to QUEUE_LEFT_CAP + 1, so
    the cost stays bounded on a large queue; the page shows "1000+"."""
    now = now or timezone.now()
    rows = (Comparison.objects.filter(project=project, status=Comparison.Status.OPEN)
            .exclude(Exists(Judgment.objects.filter(comparison=OuterRef("pk"), annotator=annotator)))
            .exclude(Exists(Skip.objects.filter(comparison=OuterRef("pk"), annotator=annotator)))
            .exclude(Exists(Lease.objects.filter(comparison=OuterRef("pk"), expires_at__gt=now)
                            .exclude(annotator=annotator))))
    return rows.values("pk")[:QUEUE_LEFT_CAP + 1].count()


def annotator_totals(project: Project, annotator) -> dict:
    """What one annotator judged here: today (the server's time zone) and in total, one query."""
    start = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    return Judgment.objects.filter(project=project, annotator=annotator).aggregate(
        total=Count("id"), today=Count("id", filter=Q(created_at__gte=start)))
