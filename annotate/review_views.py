"""Pages of quality control: the review queue where a reviewer settles comparisons (keyboard-first,
all votes and rationales in view, model identity never), marking gold from the comparisons page,
the project's quality settings, and the quality panel on the project page."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_POST

from .access import get_project_for_manager, get_project_for_member
from .actions import ActionError
from .models import Comparison, Judgment, Project, Settlement
from .quality import judgment_flags, quality_summary
from .review import do_mark_gold, do_set_gold_share, do_settle, review_queue
from .views import wants_simulated

REVIEW_KEYS = [
    ("1  ←", "A is better"),
    ("2  →", "B is better"),
    ("3  ↓", "tie"),
    ("X", "discard the comparison"),
    ("N", "write a note (Esc leaves)"),
    ("Enter", "settle"),
    ("J", "next comparison"),
]


def _reviewer(request, slug: str):
    project, membership = get_project_for_member(request, slug)
    if not membership.can_review:
        raise PermissionDenied("Only the project's reviewers, managers and owners can review.")
    return project, membership


@login_required
@require_GET
def review_page(request: HttpRequest, slug: str) -> HttpResponse:
    """The next comparison to review (disputed and flagged first), or the one asked for."""
    project, membership = _reviewer(request, slug)
    flags = judgment_flags(project)
    flagged_comparisons = set(Judgment.objects.filter(pk__in=list(flags)).values_list("comparison_id", flat=True))
    queue = review_queue(project, request.user, flagged_comparisons)
    skip = {int(x) for x in request.GET.getlist("skip") if x.isdigit()}
    wanted = request.GET.get("comparison", "")
    comparison = None
    if wanted.isdigit():
        comparison = next((c for c in queue if c.pk == int(wanted)), None)
    if comparison is None:
        comparison = next((c for c in queue if c.pk not in skip and c.settled_choice is None), None)
    context = {"project": project, "membership": membership, "keys": REVIEW_KEYS, "comparison": comparison,
               "waiting": sum(c.settled_choice is None for c in queue), "skip": sorted(skip)}
    if comparison is not None:
        comparison = (Comparison.objects.select_related("prompt", "candidate_a", "candidate_b").get(pk=comparison.pk))
        votes = list(Judgment.objects.filter(comparison=comparison).select_related("annotator").order_by("id"))
        for vote in votes:
            vote.flag = flags.get(vote.pk)
        context.update(comparison=comparison, votes=votes, disputed=len({v.choice for v in votes}) > 1,
                       history=Settlement.objects.filter(comparison=comparison).select_related("reviewer"))
    return render(request, "annotate/review.html", context)


@login_required
@require_POST
def settle(request: HttpRequest, slug: str) -> HttpResponse:
    project, _ = _reviewer(request, slug)
    comparison_id = request.POST.get("comparison", "")
    try:
        if not comparison_id.isdigit():
            raise ActionError("Name the comparison to settle.")
        settlement = do_settle(project, request.user, int(comparison_id), request.POST.get("decision", ""),
                               request.POST.get("note", ""))
    except ActionError as exc:
        messages.error(request, exc.message)
        return redirect(f"{request.path.rsplit('settle/', 1)[0]}?comparison={comparison_id}")
    messages.success(request, f"Comparison #{settlement.comparison_id} settled: {settlement.get_decision_display()}.")
    return redirect("review", slug=slug)


@login_required
@require_POST
def mark_gold(request: HttpRequest, slug: str) -> HttpResponse:
    project, _ = get_project_for_manager(request, slug)
    comparison_id = request.POST.get("comparison", "")
    choice = request.POST.get("gold_choice", "") or None
    if choice == "none":
        choice = None
    try:
        if not comparison_id.isdigit():
            raise ActionError("Name the comparison to mark.")
        if "gold_choice" not in request.POST or request.POST.get("gold_choice") == "":
            raise ActionError("A gold comparison needs its known answer: a, b or tie.")
        do_mark_gold(project, int(comparison_id), choice)
    except ActionError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Comparison #{comparison_id} is {'gold: ' + choice if choice else 'no longer gold'}.")
    return redirect("comparisons", slug=slug)


@login_required
@require_POST
def quality_settings(request: HttpRequest, slug: str) -> HttpResponse:
    project, _ = get_project_for_manager(request, slug)
    try:
        percent = float(request.POST.get("gold_percent", ""))
    except ValueError:
        messages.error(request, "The gold share must be a number of percent, e.g. 5.")
        return redirect("project", slug=slug)
    try:
        do_set_gold_share(project, percent / 100)
    except ActionError as exc:
        messages.error(request, exc.message)
        return redirect("project", slug=slug)
    own = bool(request.POST.get("reviewers_settle_own"))
    Project.objects.filter(pk=project.pk).update(reviewers_settle_own=own)
    messages.success(request, f"Gold share {percent:g}%; reviewers {'may' if own else 'may not'} settle their own.")
    return redirect("project", slug=slug)


def quality_panel(request, project):
    """On the project page: annotator statistics and flags, what each training option removes,
    and the bias report."""
    membership = project.memberships.filter(user_id=request.user.pk).first()
    if membership is None or not membership.can_manage:
        return None
    return render_to_string("annotate/_quality_panel.html", {
        "project": project, **quality_summary(project, include_simulated=wants_simulated(request)),
        "gold_percent": round(project.gold_share * 100, 2),
        "gold_count": Comparison.objects.filter(project=project, gold_choice__isnull=False).count(),
    }, request=request)
