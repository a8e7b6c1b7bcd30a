"""Webhooks: signed POSTs to a project's subscribers, delivered by Celery with retries and logged.

Signature: `X-Prefloop-Signature: sha256=<hex>` where hex is HMAC-SHA256(secret, f"{timestamp}.{body}")
and `X-Prefloop-Timestamp` is the Unix time of the attempt; a receiver recomputes it and rejects
old timestamps to stop replays.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request

from django.db import transaction
from django.db.models import Count, Max, Min
from django.utils import timezone

from .models import Judgment, Project, Webhook, WebhookDelivery

EVENT_JUDGMENTS = "judgments"
EVENT_JOB_FINISHED = "job.finished"
EVENTS = (EVENT_JUDGMENTS, EVENT_JOB_FINISHED)
TIMEOUT_SECONDS = 10


class DeliveryFailed(Exception):
    pass


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def queue_delivery(webhook: Webhook, event: str, payload: dict) -> WebhookDelivery:
    """Record a delivery and hand it to a worker once the surrounding transaction commits."""
    from .tasks import deliver_webhook

    delivery = WebhookDelivery.objects.create(webhook=webhook, event=event, payload=payload)
    transaction.on_commit(lambda: deliver_webhook.delay(delivery.pk))
    return delivery


def emit(project: Project, event: str, payload: dict) -> list[WebhookDelivery]:
    """Send `event` to every active webhook of the project that subscribed to it."""
    hooks = [h for h in Webhook.objects.filter(project=project, active=True) if event in (h.events or [])]
    return [queue_delivery(h, event, {"event": event, "project": project.slug, **payload}) for h in hooks]


def check_judgment_thresholds() -> int:
    """For each webhook on `judgments`: once N judgments arrived since its last call, call it.
    Run by beat every few seconds, so the annotation path itself does no webhook work."""
    sent = 0
    for hook in Webhook.objects.filter(active=True).select_related("project"):
        if EVENT_JUDGMENTS not in (hook.events or []):
            continue
        stats = Judgment.objects.filter(project=hook.project, id__gt=hook.last_judgment_id).aggregate(
            n=Count("id"), first=Min("id"), last=Max("id")
        )
        if not stats["n"] or stats["n"] < hook.every_n_judgments:
            continue
        with transaction.atomic():
            moved = Webhook.objects.filter(pk=hook.pk, last_judgment_id=hook.last_judgment_id).update(
                last_judgment_id=stats["last"]
            )
            if not moved:  # another beat took this batch
                continue
            queue_delivery(hook, EVENT_JUDGMENTS, {
                "event": EVENT_JUDGMENTS, "project": hook.project.slug, "judgments": stats["n"],
                "first_judgment_id": stats["first"], "last_judgment_id": stats["last"],
                "export_url": f"/api/v1/projects/{hook.project.slug}/export/?format=trl-preference",
            })
            sent += 1
    return sent


def attempt(delivery: WebhookDelivery) -> None:
    """POST once; raise DeliveryFailed on a network error or a non-2xx answer."""
    hook = delivery.webhook
    if not hook.url.startswith(("http://", "https://")):
        raise DeliveryFailed(f"refusing to call {hook.url!r}: only http(s) URLs are delivered")
    body = json.dumps(delivery.payload, sort_keys=True).encode()
    timestamp = int(time.time())
    request = urllib.request.Request(hook.url, data=body, method="POST", headers={  # noqa: S310 -- http(s) only, checked above
        "Content-Type": "application/json",
        "User-Agent": "Prefloop-Webhook/1",
        "X-Prefloop-Event": delivery.event,
        "X-Prefloop-Delivery": str(delivery.pk),
        "X-Prefloop-Timestamp": str(timestamp),
        "X-Prefloop-Signature": sign(hook.secret, timestamp, body),
    })
    WebhookDelivery.objects.filter(pk=delivery.pk).update(attempts=delivery.attempts + 1)
    delivery.attempts += 1
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 -- http(s) only
            code = response.status
    except urllib.error.HTTPError as exc:
        code = exc.code
    except (urllib.error.URLError, OSError) as exc:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(last_error=str(exc)[:500], last_status_code=None)
        raise DeliveryFailed(str(exc)) from None
    if not 200 <= code < 300:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(last_status_code=code, last_error=f"HTTP {code}")
        raise DeliveryFailed(f"HTTP {code}")
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=WebhookDelivery.Status.DELIVERED, last_status_code=code, last_error="", delivered_at=timezone.now()
    )
