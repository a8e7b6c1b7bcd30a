"""Writes of quality control, each in one transaction: marking gold, the project's gold share, and
a reviewer settling a comparison (the latest decision is the comparison's label, the earlier ones
stay as history). The review queue's order is here too."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef

from .actions import ActionError, NotFound
from .models import Choice, Comparison, Decision, Judgment, Membership, Project, Settlement

MAX_GOLD_SHARE = 0.5


def do_mark_gold(project: Project, comparison_id: int, gold_choice: str | None) -> Comparison:
    """Make a comparison gold with its known answer (`a`, `b` or `tie`), or unmark it (None).
    Gold without a known answer is refused: there would be nothing to check annotators against."""
    if gold_choice is not None and gold_choice not in Choice.values:
        raise ActionError("A gold comparison needs its known answer: a, b or tie.",
                          {"gold_choice": "Give the known answer: a, b or tie."})
    with transaction.atomic():
        comparison = Comparison.objects.select_for_update().filter(project=project, pk=comparison_id).first()
        if comparison is None:
            raise NotFound("This comparison does not exist in this project.")
        comparison.gold_choice = gold_choice
        if gold_choice is not None:
            comparison.origin = Comparison.Origin.GOLD
        elif comparison.origin == Comparison.Origin.GOLD:
            comparison.origin = Comparison.Origin.IMPORTED
        comparison.save(update_fields=["gold_choice", "origin"])
    return comparison


def do_set_gold_share(project: Project, share: float) -> Project:
    if not isinstance(share, int | float) or isinstance(share, bool) or not 0 <= share <= MAX_GOLD_SHARE:
        raise ActionError(f"The gold share must be a number from 0 to {MAX_GOLD_SHARE}.",
                          {"gold_share": f"Give a share from 0 to {MAX_GOLD_SHARE} (e.g. 0.05 for 5%)."})
    with transaction.atomic():
        Project.objects.filter(pk=project.pk).update(gold_share=float(share))
    project.gold_share = float(share)
    return project


def do_settle(project: Project, reviewer, comparison_id: int, decision: str, note: str = "") -> Settlement:
    """Record a reviewer's decision on a comparison of this project; it becomes the comparison's
    label (a side, a tie, or discard: left out of export and training). Refused for a reviewer who
    judged the comparison unless the project allows it, and for another project's comparison."""
    if decision not in Decision.values:
        raise ActionError("Settle with a, b, tie or discard.", {"decision": "Choose a, b, tie or discard."})
    membership = Membership.objects.filter(project=project, user_id=reviewer.pk).first()
    if membership is None or not membership.can_review:
        raise ActionError("Only the project's reviewers, managers and owners can settle comparisons.")
    with transaction.atomic():
        comparison = Comparison.objects.select_for_update().filter(project=project, pk=comparison_id).first()
        if comparison is None:
            raise NotFound("This comparison does not exist in this project.")
        if not project.reviewers_settle_own and Judgment.objects.filter(
                comparison=comparison, annotator_id=reviewer.pk).exists():
            raise ActionError("You judged this comparison yourself, so another reviewer must settle it "
                              "(or a manager allows reviewers to settle their own in the settings).")
        settlement = Settlement.objects.create(comparison=comparison, reviewer=reviewer, decision=decision,
                                               note=note.strip()[:5000])
        Comparison.objects.filter(pk=comparison.pk).update(settled_choice=decision)
    return settlement


def review_queue(project: Project, reviewer, flagged_ids: set[int] | frozenset[int] = frozenset(), limit: int = 50):
    """Comparisons to review, most in need first: disputed (votes disagree) and flagged (a noise
    flag on one of its judgments) before the rest, unsettled before settled; never one the
    reviewer judged unless the project allows it."""
    rows = (Comparison.objects.filter(project=project)
            .annotate(kinds=Count("judgments__choice", distinct=True),
                      judged_by_me=Exists(Judgment.objects.filter(comparison=OuterRef("pk"),
                                                                  annotator_id=reviewer.pk))))
    rows = rows.filter(kinds__gte=1)
    if not project.reviewers_settle_own:
        rows = rows.filter(judged_by_me=False)
    rows = rows.order_by(F("settled_choice").asc(nulls_first=True), "-kinds", "-pk")
    ranked = sorted(list(rows.select_related("prompt")[:2000]) + list(rows.filter(pk__in=list(flagged_ids))),
                    key=lambda c: (c.settled_choice is not None, -(c.pk in flagged_ids) - (c.kinds >= 2), -c.pk))
    unique = list({c.pk: c for c in ranked}.values())
    return unique[:limit]
