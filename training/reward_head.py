"""The always-fresh reward head in the product: embeddings cached per response, the ensemble
refitted in the background after every K new judgments, the queue's priorities set from it, and
its disagreement with each judgment kept as a label-noise signal.

The maths is `rewards.preference_head`; this module reads and writes the database. A refit runs in
a Celery task (`head_tasks.py`), found by a periodic check, so `next` never waits for it: the
priorities are written in short chunked transactions, and on PostgreSQL the queue's claim skips
rows a chunk has locked (SKIP LOCKED) instead of waiting for them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from annotate.models import Candidate, Comparison, Judgment, Project

from .models import CandidateEmbedding, JudgmentNoise, RewardHead

log = logging.getLogger(__name__)

ENCODER = "minilm"
PRIORITY_CHUNK = 500  # rows a priority write locks at once (a few ms)
QUEUED_TIMEOUT = timedelta(minutes=10)  # a refit asked for longer ago than this was lost: ask again


def encoder_key() -> str:
    """Names the encoder and what it reads, so a change of either recomputes the embeddings."""
    return f"{ENCODER}/{settings.PREFLOOP_HEAD_MAX_LENGTH}/{'prompt+response' if settings.PREFLOOP_HEAD_WITH_PROMPT else 'response'}"


def head_for(project: Project) -> RewardHead:
    """The project's head, made with the defaults from settings on first need."""
    head, _ = RewardHead.objects.get_or_create(project=project, defaults={
        "refit_every": settings.PREFLOOP_HEAD_REFIT_EVERY, "min_judgments": settings.PREFLOOP_HEAD_MIN_JUDGMENTS,
        "message": waiting_message(0, settings.PREFLOOP_HEAD_MIN_JUDGMENTS)})
    return head


def waiting_message(judgments: int, needed: int) -> str:
    return (f"{judgments} of the {needed} judgments the reward head needs: the queue keeps its current order "
            "until then.")


# --- which projects are due -----------------------------------------------------------------------


def due_projects(now=None) -> list[int]:
    """Projects whose head should refit now: at least K judgments since the last fit (and at
    least the minimum), or embeddings still to compute. Marks them queued, so one refit is asked
    for at a time; a queued mark older than QUEUED_TIMEOUT counts as lost."""
    now = now or timezone.now()
    counts = dict(Judgment.objects.values_list("project_id").annotate(n=Count("id")).values_list("project_id", "n"))
    heads = {h.project_id: h for h in RewardHead.objects.all()}
    due = []
    for project_id, n in counts.items():
        head = heads.get(project_id)
        if head is None:
            head = head_for(Project(pk=project_id))
        if not head.enabled:
            continue
        if n < head.min_judgments:
            if head.status != RewardHead.Status.WAITING or head.judgments_seen != n:
                RewardHead.objects.filter(pk=head.pk).update(
                    status=RewardHead.Status.WAITING, judgments_seen=n, message=waiting_message(n, head.min_judgments))
            continue
        recent = abs(n - head.judgments_seen) < head.refit_every
        if head.status == RewardHead.Status.FAILED and recent:
            continue  # a failed refit is tried again after K more judgments, not every check
        if head.fits > 0 and recent and head.pending_embeddings == 0 and head.status != RewardHead.Status.WAITING:
            continue
        unqueued = Q(refit_queued_at__isnull=True) | Q(refit_queued_at__lt=now - QUEUED_TIMEOUT)
        if RewardHead.objects.filter(unqueued, pk=head.pk).update(refit_queued_at=now):
            due.append(project_id)
    return due


# --- embeddings -----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _encoder(max_length: int):
    from rewards.embeddings import Encoder

    return Encoder(ENCODER, max_length=max_length)


def _vector(blob) -> np.ndarray:
    return np.frombuffer(bytes(blob), dtype="<f4")


def embed_candidates(candidate_ids: list[int], limit: int) -> tuple[int, int]:
    """Compute and store the embeddings these candidates lack, at most `limit` of them, in the
    given order. Returns (computed, still missing)."""
    from rewards.embeddings import response_text

    key = encoder_key()
    wanted = list(dict.fromkeys(candidate_ids))
    have = set()
    for ids in _chunks(wanted):
        have.update(CandidateEmbedding.objects.filter(candidate_id__in=ids, encoder=key)
                    .values_list("candidate_id", flat=True))
    missing = [c for c in wanted if c not in have]
    todo = missing[:limit]
    if not todo:
        return 0, len(missing)
    rows = {c.pk: c for c in Candidate.objects.filter(pk__in=todo).select_related("prompt")}
    todo = [c for c in todo if c in rows]
    with_prompt = settings.PREFLOOP_HEAD_WITH_PROMPT
    texts = [response_text(rows[c].prompt.messages or rows[c].prompt.text, rows[c].text, with_prompt) for c in todo]
    vectors = _encoder(settings.PREFLOOP_HEAD_MAX_LENGTH).embed(texts)
    with transaction.atomic():
        CandidateEmbedding.objects.filter(candidate_id__in=todo).exclude(encoder=key).delete()
        CandidateEmbedding.objects.bulk_create(
            [CandidateEmbedding(candidate_id=c, encoder=key, dim=vectors.shape[1], vector=v.astype("<f4").tobytes())
             for c, v in zip(todo, vectors, strict=True)], ignore_conflicts=True)
    return len(todo), len(missing) - len(todo)


def embeddings_of(candidate_ids) -> dict[int, np.ndarray]:
    key = encoder_key()
    vectors = {}
    for ids in _chunks(list(candidate_ids)):
        vectors.update((c, _vector(v)) for c, v in CandidateEmbedding.objects.filter(
            candidate_id__in=ids, encoder=key).values_list("candidate_id", "vector"))
    return vectors


def _chunks(ids: list[int], size: int = 5000):
    """Bounded IN lists: SQLite allows ~32,000 parameters a statement."""
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


# --- the refit ------------------------------------------------------------------------------------


@dataclass
class RefitResult:
    status: str
    message: str
    prioritised: int = 0


def _label(choice: str) -> float:
    return 1.0 if choice == "a" else 0.0 if choice == "b" else 0.5


def refit(project: Project) -> RefitResult:
    """Refit the project's head on its latest judgments and reorder its open comparisons.
    Too few judgments: the queue keeps its order and the head says so."""
    from rewards.preference_head import fit_head, member_probabilities, pair_features, priorities

    head = head_for(project)
    started = time.perf_counter()
    try:
        total = Judgment.objects.filter(project=project).count()
        if not head.enabled:
            return _finish(head, RewardHead.Status.OFF, "Off: the queue keeps its current order.", total)
        if total < head.min_judgments:
            return _finish(head, RewardHead.Status.WAITING, waiting_message(total, head.min_judgments), total)
        judged = list(Judgment.objects.filter(project=project).order_by("-id").values_list(
            "id", "choice", "comparison__candidate_a_id", "comparison__candidate_b_id")[
            : settings.PREFLOOP_HEAD_MAX_PAIRS])
        open_rows = list(Comparison.objects.filter(project=project, status=Comparison.Status.OPEN)
                         .exclude(origin=Comparison.Origin.GOLD).order_by("-priority", "tiebreak")
                         .values_list("id", "candidate_a_id", "candidate_b_id")[: settings.PREFLOOP_HEAD_MAX_OPEN])
        wanted = [c for _, _, a, b in judged for c in (a, b)] + [c for _, a, b in open_rows for c in (a, b)]
        computed, pending = embed_candidates(wanted, settings.PREFLOOP_HEAD_EMBED_PER_RUN)
        vectors = embeddings_of(set(wanted))
        usable = [row for row in judged if row[2] in vectors and row[3] in vectors]
        if len(usable) < head.min_judgments:
            return _finish(head, RewardHead.Status.WAITING,
                           f"Embedding responses ({pending} to go): the queue keeps its current order until "
                           f"{head.min_judgments} judged pairs are embedded.", total, pending=pending)
        X = pair_features(np.stack([vectors[r[2]] for r in usable]), np.stack([vectors[r[3]] for r in usable]))
        y = np.array([_label(r[1]) for r in usable])
        warm = None
        if head.weights and head.encoder == encoder_key():
            stored = _vector(head.weights).astype(np.float64)
            if stored.size % X.shape[1] == 0:
                warm = stored.reshape(-1, X.shape[1])
        fit = fit_head(X, y, members=head.members, l2=settings.PREFLOOP_HEAD_L2, seed=head.fits, warm=warm)
        fit_number = head.fits + 1
        _store_noise(project, usable, X, y, fit, fit_number)
        scored = [row for row in open_rows if row[1] in vectors and row[2] in vectors]
        prioritised = 0
        if scored:
            X_open = pair_features(np.stack([vectors[r[1]] for r in scored]), np.stack([vectors[r[2]] for r in scored]))
            values = priorities(member_probabilities(fit.weights, X_open))
            prioritised = write_priorities([r[0] for r in scored], values)
        seconds = time.perf_counter() - started
        message = (f"Fitted on {fit.n} judgments (training accuracy {fit.train_accuracy:.0%}); ordering "
                   f"{prioritised} open comparisons by uncertainty and ensemble disagreement.")
        if pending:
            message += f" {pending} responses still to embed."
        RewardHead.objects.filter(pk=head.pk).update(
            status=RewardHead.Status.FITTED, message=message[:300], judgments_seen=total, fits=fit_number,
            fitted_at=timezone.now(), fit_seconds=round(seconds, 3), encoder=encoder_key(),
            weights=fit.weights.astype("<f4").tobytes(), pending_embeddings=pending, refit_queued_at=None,
            metrics={"judgments": fit.n, "members": fit.members, "train_accuracy": round(fit.train_accuracy, 4),
                     "loss_before": round(fit.loss_before, 4), "loss_after": round(fit.loss_after, 4),
                     "prioritised": prioritised, "embedded_now": computed, "features": int(X.shape[1])})
        return RefitResult(RewardHead.Status.FITTED, message, prioritised)
    except Exception as exc:
        log.exception("reward head refit failed for project %s", project.pk)
        RewardHead.objects.filter(pk=head.pk).update(
            status=RewardHead.Status.FAILED, message=f"The last refit failed ({type(exc).__name__}: {exc}); the "
            "queue keeps its order, and the head tries again after K more judgments."[:300],
            judgments_seen=Judgment.objects.filter(project=project).count(), refit_queued_at=None)
        raise


def _finish(head: RewardHead, status: str, message: str, total: int, pending: int = 0) -> RefitResult:
    RewardHead.objects.filter(pk=head.pk).update(status=status, message=message[:300], judgments_seen=total,
                                                 pending_embeddings=pending, refit_queued_at=None)
    return RefitResult(status, message)


def write_priorities(comparison_ids: list[int], values: np.ndarray) -> int:
    """Set the priorities of open comparisons in short transactions of PRIORITY_CHUNK rows, so
    no lock is held for long; a comparison closed meanwhile is left alone."""
    updated = 0
    for start in range(0, len(comparison_ids), PRIORITY_CHUNK):
        ids = comparison_ids[start:start + PRIORITY_CHUNK]
        chunk = [round(float(v), 6) for v in values[start:start + PRIORITY_CHUNK]]
        with transaction.atomic(), connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(
                    "UPDATE annotate_comparison c SET priority = v.p FROM unnest(%s::bigint[], %s::float8[]) "
                    "AS v(id, p) WHERE c.id = v.id AND c.status = 'open'", [ids, chunk])
                updated += cursor.rowcount
            else:
                cursor.executemany("UPDATE annotate_comparison SET priority = %s WHERE id = %s AND status = 'open'",
                                   list(zip(chunk, ids, strict=True)))
                updated += len(ids)
    return updated


def _store_noise(project: Project, usable, X: np.ndarray, y: np.ndarray, fit, fit_number: int) -> None:
    """Keep each judgment's disagreement: out of bag where some member never saw it, else in sample."""
    from rewards.preference_head import disagreement_with_label, member_probabilities

    out_of_bag = ~np.isnan(fit.oob_p_first)
    p_first = np.where(out_of_bag, fit.oob_p_first, member_probabilities(fit.weights[:1], X)[0])
    values = disagreement_with_label(p_first, y)
    rows = [JudgmentNoise(judgment_id=row[0], project=project, disagreement=round(float(value), 4),
                          out_of_bag=bool(oob), fit=fit_number)
            for row, value, oob in zip(usable, values, out_of_bag, strict=True)]
    with transaction.atomic():
        JudgmentNoise.objects.bulk_create(rows, batch_size=2000, update_conflicts=True, unique_fields=["judgment"],
                                          update_fields=["disagreement", "out_of_bag", "fit"])


def label_noise(project: Project, limit: int = 50) -> list[dict]:
    """The judgments the head disagrees with most, for a second look: id, annotator, comparison,
    choice, disagreement (the probability the head gives the side not chosen)."""
    rows = (JudgmentNoise.objects.filter(project=project).order_by("-disagreement", "judgment_id")
            .values_list("judgment_id", "judgment__annotator__username", "judgment__comparison_id",
                         "judgment__choice", "disagreement", "out_of_bag")[:limit])
    return [{"judgment": j, "annotator": u, "comparison": c, "choice": ch, "disagreement": d, "out_of_bag": o}
            for j, u, c, ch, d, o in rows]


def judgment_disagreement(judgment_ids) -> dict[int, float]:
    """The stored disagreement of each given judgment the head has seen (others are absent)."""
    return dict(JudgmentNoise.objects.filter(judgment_id__in=list(judgment_ids))
                .values_list("judgment_id", "disagreement"))


def status_of(project: Project) -> dict:
    """What the project page and the API show about the head."""
    head = head_for(project)
    judgments = Judgment.objects.filter(project=project).count()
    message = head.message
    if head.enabled and judgments < head.min_judgments:  # said live: the count moves between checks
        message = waiting_message(judgments, head.min_judgments)
    return {
        "status": head.status, "message": message,
        "enabled": head.enabled, "refit_every": head.refit_every, "min_judgments": head.min_judgments,
        "members": head.members, "judgments": judgments, "judgments_at_last_fit": head.judgments_seen,
        "fits": head.fits, "fitted_at": head.fitted_at, "fit_seconds": head.fit_seconds,
        "orders_queue": head.status == RewardHead.Status.FITTED and head.enabled,
        "pending_embeddings": head.pending_embeddings, "metrics": head.metrics,
    }
