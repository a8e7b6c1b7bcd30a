"""Webhooks without a queue: the events, the payloads, the signature, and one delivery attempt.

Targets: a webhook may call only public addresses, checked after DNS resolution when it is saved
and again at each delivery, which then connects to the very address it checked (so a name that
re-resolves inside, DNS rebinding, reaches nothing); no redirect is followed and the delivery log
keeps errors generic, so webhooks cannot scan the server's network. PREFLOOP_WEBHOOK_ALLOWED_HOSTS
names hosts exempt from the address check (a receiver on the same machine or network).

Signature: `X-Prefloop-Signature: sha256=<hex>` where hex is HMAC-SHA256(secret, f"{timestamp}.{body}")
and `X-Prefloop-Timestamp` is the Unix time of the attempt; a receiver recomputes it and rejects
old timestamps to stop replays. Recording deliveries and handing them to Celery with retries is
annotate.tasks' work (`emit`, `deliver_webhook`); this module never imports it.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import socket
import ssl
import time
from urllib.parse import urlsplit

from django.conf import settings
from django.utils import timezone

from .models import Project, Webhook, WebhookDelivery

EVENT_JUDGMENTS = "judgments"
EVENT_JOB_FINISHED = "job.finished"
EVENTS = (EVENT_JUDGMENTS, EVENT_JOB_FINISHED)
TIMEOUT_SECONDS = 10


class DeliveryFailed(Exception):
    """One attempt that did not get a 2xx answer; the worker retries it later."""


class TargetRefused(ValueError):
    """A webhook URL that may not be called: not http(s), unresolvable, or an internal address."""


REFUSED_ADDRESS = "refused: the address is not one webhooks may call"


def is_public(address: str) -> bool:
    """True for a globally routable unicast address; loopback, private, link-local, shared,
    reserved, unspecified and multicast addresses are not."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local)


def resolve_target(url: str) -> tuple[str, int, str]:
    """(host, port, address to connect to) for a webhook URL, or TargetRefused saying why.
    Every address the name resolves to must be public unless the host is allowed by name."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused("Webhook URLs must be http:// or https:// with a host.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise TargetRefused("The webhook URL's port is not a number from 1 to 65535.") from None
    host = parts.hostname
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise TargetRefused(f"The host {host!r} does not resolve.") from None
    addresses = [info[4][0] for info in infos]
    allowed = {h.lower().strip("[]") for h in settings.PREFLOOP_WEBHOOK_ALLOWED_HOSTS}
    if host.lower() not in allowed and not all(is_public(a) for a in addresses):
        raise TargetRefused(f"The host {host!r} resolves to a loopback, private, link-local or reserved address; "
                            "webhooks call only public addresses (an administrator can allow a host by name in "
                            "PREFLOOP_WEBHOOK_ALLOWED_HOSTS).")
    return host, port, addresses[0]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the address that was checked, not to whatever the name resolves to now."""

    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self):
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """The same over TLS; the certificate is still checked against the host's name (SNI)."""

    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self):
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST to a checked address; the answer's status code. No redirect is followed (a 3xx is
    an answer like any other). Raises TargetRefused or OSError / HTTPException."""
    host, port, address = resolve_target(url)
    parts = urlsplit(url)
    kind = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
    connection = kind(host, port, address, TIMEOUT_SECONDS)
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(65536)  # the body is not kept: a receiver's answer is not ours to show
        return response.status
    finally:
        connection.close()


def generic_error(exc: BaseException) -> str:
    """What the delivery log says about a failed attempt: the kind of failure, never the text of
    the network error (which would tell a manager what answers inside the network)."""
    if isinstance(exc, TargetRefused):
        return REFUSED_ADDRESS
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return "TLS handshake failed"
    if isinstance(exc, http.client.HTTPException):
        return "not an HTTP answer"
    return "could not connect"


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
    """POST once to the checked address and log the outcome on the delivery; raise
    DeliveryFailed on a refused target, a network error or a non-2xx answer."""
    hook = delivery.webhook
    body = json.dumps(delivery.payload, sort_keys=True).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Prefloop-Webhook/1",
        "X-Prefloop-Event": delivery.event,
        "X-Prefloop-Delivery": str(delivery.pk),
        "X-Prefloop-Timestamp": str(timestamp),
        "X-Prefloop-Signature": sign(hook.secret, timestamp, body),
    }
    WebhookDelivery.objects.filter(pk=delivery.pk).update(attempts=delivery.attempts + 1)
    delivery.attempts += 1
    try:
        code = post(hook.url, body, headers)
    except (TargetRefused, OSError, http.client.HTTPException) as exc:
        error = generic_error(exc)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(last_error=error, last_status_code=None)
        raise DeliveryFailed(error) from None
    if not 200 <= code < 300:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(last_status_code=code, last_error=f"HTTP {code}")
        raise DeliveryFailed(f"HTTP {code}")
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=WebhookDelivery.Status.DELIVERED, last_status_code=code, last_error="", delivered_at=timezone.now()
    )
