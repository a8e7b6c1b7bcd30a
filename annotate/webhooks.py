"""Webhooks without a queue: the events, the payloads, the signature, and one delivery attempt.

Signature: `X-Prefloop-Signature: sha256=<hex>` where hex is HMAC-SHA256(secret, f"{timestamp}.{body}")
and `X-Prefloop-Timestamp` is the Unix time of the attempt; a receiver recomputes it and rejects
old timestamps to stop replays. Recording deliveries and handing them to Celery with retries is
annotate.tasks' work (`emit`, `deliver_webhook`); this module never imports it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request

from django.utils import timezone

from .models import Project, Webhook, WebhookDelivery

EVENT_JUDGMENTS = "judgments"
EVENT_JOB_FINISHED = "job.finished"
EVENTS = (EVENT_JUDGMENTS, EVENT_JOB_FINISHED)
TIMEOUT_SECONDS = 10


class DeliveryFailed(Exception):
    """One attempt that did not get a 2xx answer; the worker retries it later."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def subscribers(project: Project, event: str) -> list[Webhook]:
    """The project's active webhooks that subscribed to `event`."""
    return [h for h in Webhook.objects.filter(project=project, active=True) if event in (h.events or [])]


def event_payload(project: Project, event: str, payload: dict) -> dict:
    """The body of an event: its name and project first, then what the caller says."""
    return {"event": event, "project": project.slug, **payload}


def judgments_payload(project: Project, count: int, first_id: int, last_id: int) -> dict:
    """The body sent once N judgments arrived: how many, which ids, and where to export them."""
    return event_payload(project, EVENT_JUDGMENTS, {
        "judgments": count, "first_judgment_id": first_id, "last_judgment_id": last_id,
        "export_url": f"/api/v1/projects/{project.slug}/export/?format=trl-preference",
    })


def attempt(delivery: WebhookDelivery) -> None:
    """POST once and log the outcome on the delivery; raise DeliveryFailed on a network error or
    a non-2xx answer."""
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
