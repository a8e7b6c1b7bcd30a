"""Work for the Celery worker: webhook deliveries queued and retried, and periodic housekeeping.

`emit` is how either side announces an event to webhooks: it records one delivery per subscriber
and hands it to the worker once the surrounding transaction commits. Signing and the HTTP attempt
are annotate.webhooks'. Beat's schedule is CELERY_BEAT_SCHEDULE in config/settings.py.
"""

import time
from datetime import timedelta
from pathlib import Path

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Max, Min
from django.db.models.functions import Greatest
from django.utils import timezone

from . import queue
from .models import Judgment, Project, Webhook, WebhookDelivery
from .watermarks import horizon, settled_since
from .webhooks import EVENT_JUDGMENTS, DeliveryFailed, attempt, event_payload, judgments_payload, subscribers


def queue_delivery(webhook: Webhook, event: str, payload: dict) -> WebhookDelivery:
    """Record a delivery and hand it to a worker once the surrounding transaction commits."""
    delivery = WebhookDelivery.objects.create(webhook=webhook, event=event, payload=payload)
    transaction.on_commit(lambda: deliver_webhook.delay(delivery.pk))
    return delivery


def emit(project: Project, event: str, payload: dict) -> list[WebhookDelivery]:
    """Send `event` to every active webhook of the project that subscribed to it."""
    return [queue_delivery(h, event, event_payload(project, event, payload)) for h in subscribers(project, event)]


@shared_task(name="annotate.tasks.deliver_webhook", bind=True, max_retries=None)
def deliver_webhook(self, delivery_id: int) -> str:
    """One attempt; on failure, retried with exponential backoff up to PREFLOOP_WEBHOOK_RETRIES."""
    delivery = WebhookDelivery.objects.select_related("webhook").filter(pk=delivery_id).first()
    if delivery is None or delivery.status != WebhookDelivery.Status.PENDING:
        return "nothing to do"
    try:
        attempt(delivery)
    except DeliveryFailed as exc:
        if delivery.attempts >= settings.PREFLOOP_WEBHOOK_RETRIES:
            WebhookDelivery.objects.filter(pk=delivery.pk).update(status=WebhookDelivery.Status.FAILED)
            return f"failed after {delivery.attempts} attempts: {exc}"
        delay = settings.PREFLOOP_WEBHOOK_BACKOFF_SECONDS * 2 ** (delivery.attempts - 1)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now() + timedelta(seconds=delay))
        raise self.retry(countdown=delay, exc=exc) from None
    return "delivered"


@shared_task(name="annotate.tasks.resend_stuck_deliveries")
def resend_stuck_deliveries() -> int:
    """Pending deliveries whose next attempt is PREFLOOP_WEBHOOK_RESEND_AFTER seconds overdue lost
    their message (a countdown dropped by the broker or a killed worker): send them again. Each is
    claimed by moving its next attempt first, so two sweepers never both re-send it. Receivers
    see each delivery at least once and de-duplicate by X-Prefloop-Delivery."""
    now = timezone.now()
    overdue = now - timedelta(seconds=settings.PREFLOOP_WEBHOOK_RESEND_AFTER)
    sent = 0
    stuck = WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING, next_attempt_at__lt=overdue)
    for delivery in stuck.values("pk", "next_attempt_at")[:1000]:
        with transaction.atomic():
            claimed = WebhookDelivery.objects.filter(
                pk=delivery["pk"], status=WebhookDelivery.Status.PENDING, next_attempt_at=delivery["next_attempt_at"]
            ).update(next_attempt_at=now)
            if claimed:
                transaction.on_commit(lambda pk=delivery["pk"]: deliver_webhook.delay(pk))
                sent += 1
    return sent


@shared_task(name="annotate.tasks.check_judgment_webhooks")
def check_judgment_webhooks() -> int:
    """For each webhook on `judgments`: once N judgments arrived since its last call, call it.
    Run by beat every few seconds, so the annotation path itself does no webhook work. On
    PostgreSQL "since" follows commit order (a transaction horizon, annotate/watermarks.py), so
    a judgment that commits after a higher id is counted in a later call, never skipped."""
    sent = 0
    until = horizon()
    for hook in Webhook.objects.filter(active=True).select_related("project"):
        if EVENT_JUDGMENTS not in (hook.events or []):
            continue
        if until is None:
            stats = Judgment.objects.filter(project=hook.project, id__gt=hook.last_judgment_id).aggregate(
                n=Count("id"), first=Min("id"), last=Max("id"))
            n, first, last = stats["n"], stats["first"], stats["last"]
        else:
            n, first, last = settled_since(hook.project_id, hook.last_judgment_txid, until)
        if not n or n < hook.every_n_judgments:
            continue
        with transaction.atomic():
            moved = Webhook.objects.filter(
                pk=hook.pk, last_judgment_id=hook.last_judgment_id, last_judgment_txid=hook.last_judgment_txid
            ).update(last_judgment_id=Greatest(F("last_judgment_id"), last),
                     last_judgment_txid=until if until is not None else hook.last_judgment_txid)
            if not moved:  # another beat took this batch
                continue
            queue_delivery(hook, EVENT_JUDGMENTS, judgments_payload(hook.project, n, first, last))
            sent += 1
    return sent


@shared_task(name="annotate.tasks.release_expired_leases")
def release_expired_leases() -> int:
    return queue.release_expired_leases()


@shared_task(name="annotate.tasks.prune_processed_messages")
def prune_processed_messages(max_age_seconds: int = 24 * 3600) -> int:
    """The filesystem broker keeps every processed message; drop the old ones."""
    folder = Path(settings.BROKER_DIR) / "processed"
    if not folder.is_dir():
        return 0
    cutoff = time.time() - max_age_seconds
    removed = 0
    for path in folder.iterdir():
        if path.is_file() and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
