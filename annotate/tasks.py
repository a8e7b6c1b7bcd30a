"""Periodic housekeeping on the Celery worker (scheduled by beat, see CELERY_BEAT_SCHEDULE)."""

import time
from pathlib import Path

from celery import shared_task
from django.conf import settings

from . import queue


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


@shared_task(name="annotate.tasks.check_judgment_webhooks")
def check_judgment_webhooks() -> int:
    from . import webhooks

    return webhooks.check_judgment_thresholds()


@shared_task(name="annotate.tasks.deliver_webhook", bind=True, max_retries=None)
def deliver_webhook(self, delivery_id: int) -> str:
    """One attempt; on failure, retried with exponential backoff up to PREFLOOP_WEBHOOK_RETRIES."""
    from .models import WebhookDelivery
    from .webhooks import DeliveryFailed, attempt

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
        raise self.retry(countdown=delay, exc=exc) from None
    return "delivered"
