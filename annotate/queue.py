"""The comparison queue: which comparison an annotator judges next, and the lease that holds it.

One transaction per call. On PostgreSQL the candidate row is locked with
`FOR UPDATE SKIP LOCKED`, so concurrent annotators never wait on each other and never receive
the same comparison; on SQLite the transaction takes the database's write lock at BEGIN
(`transaction_mode=IMMEDIATE`), which serialises the same steps.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from .models import Comparison, Judgment, Lease, Project, Side, Skip

CLAIM_ATTEMPTS = 16


def lease_duration() -> timedelta:
    return timedelta(seconds=settings.PREFLOOP_LEASE_SECONDS)


def _with_comparison(queryset):
    return queryset.select_related("comparison__prompt", "comparison__candidate_a", "comparison__candidate_b")


def held_lease(project: Project, annotator, now=None) -> Lease | None:
    """The comparison this annotator already holds (a reload, a second tab), if any."""
    now = now or timezone.now()
    return (
        _with_comparison(Lease.objects.filter(annotator=annotator, expires_at__gt=now))
        .filter(comparison__project=project, comparison__status=Comparison.Status.OPEN)
        .order_by("issued_at")
        .first()
    )


def available_comparisons(project: Project, annotator, now):
    """Open comparisons this annotator has not judged or skipped and nobody else holds."""
    judged = Judgment.objects.filter(comparison=OuterRef("pk"), annotator=annotator)
    skipped = Skip.objects.filter(comparison=OuterRef("pk"), annotator=annotator)
    held_by_other = Lease.objects.filter(comparison=OuterRef("pk"), expires_at__gt=now).filter(
        ~Q(annotator=annotator)
    )
    return (
        Comparison.objects.filter(project=project, status=Comparison.Status.OPEN)
        .filter(~Exists(judged), ~Exists(skipped), ~Exists(held_by_other))
        .order_by("-priority", "tiebreak")
    )


def next_comparison_for(project: Project, annotator, now=None) -> Lease | None:
    """Lease the next comparison to `annotator`, or return the one they already hold.

    Highest priority first, random among equals; left/right drawn now and kept on the lease.
    Returns None when nothing is left for this annotator.
    """
    now = now or timezone.now()
    with transaction.atomic():
        lease = held_lease(project, annotator, now)
        if lease is not None:
            if lease.expires_at - now < lease_duration() / 2:  # still working on it: keep it theirs
                lease.expires_at = now + lease_duration()
                Lease.objects.filter(pk=lease.pk, annotator=annotator).update(expires_at=lease.expires_at)
            return lease
        candidates = available_comparisons(project, annotator, now).select_related(
            "prompt", "candidate_a", "candidate_b"
        )
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True, of=("self",))
        passed_over: list[int] = []
        for _ in range(CLAIM_ATTEMPTS):
            comparison = candidates.exclude(pk__in=passed_over).first()
            if comparison is None:
                return None
            # The row lock was free, but another annotator may have leased this comparison and
            # committed after our statement's snapshot was taken (a lease does not change the
            # comparison row, so PostgreSQL does not re-check it): look again, freshly.
            if not Lease.objects.filter(comparison=comparison, expires_at__gt=now).exclude(
                annotator=annotator
            ).exists():
                break
            passed_over.append(comparison.pk)
        else:
            return None
        lease = Lease(
            comparison=comparison,
            annotator=annotator,
            shown_left=Side.A if secrets.randbits(1) else Side.B,
            issued_at=now,
            expires_at=now + lease_duration(),
        )
        # One statement whether an expired lease of someone else's is there or not.
        Lease.objects.bulk_create(
            [lease],
            update_conflicts=True,
            unique_fields=["comparison"],
            update_fields=["annotator", "shown_left", "issued_at", "expires_at"],
        )
        return lease


def release_lease(comparison_id: int, annotator) -> int:
    return Lease.objects.filter(comparison_id=comparison_id, annotator=annotator).delete()[0]


def release_expired_leases(now=None) -> int:
    """Housekeeping only: an expired lease is already ignored by the queue."""
    now = now or timezone.now()
    return Lease.objects.filter(expires_at__lte=now).delete()[0]
