"""The Celery app wired in: a real worker process on Redis runs the housekeeping task."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from annotate.models import Lease
from annotate.queue import next_comparison_for
from annotate.tasks import release_expired_leases

pytestmark = pytest.mark.worker


def test_a_real_worker_releases_expired_leases(celery_worker_process, demo_pairs, users):
    expired = next_comparison_for(demo_pairs, users["annotator"])
    live = next_comparison_for(demo_pairs, users["annotator2"])
    Lease.objects.filter(pk=expired.pk).update(issued_at=timezone.now() - timedelta(hours=2),
                                               expires_at=timezone.now() - timedelta(hours=1))

    release_expired_leases.delay()

    deadline = time.time() + 30
    while time.time() < deadline and Lease.objects.filter(pk=expired.pk).exists():
        time.sleep(0.2)
    assert not Lease.objects.filter(pk=expired.pk).exists(), celery_worker_process.log_path.read_text()
    assert Lease.objects.filter(pk=live.pk).exists()


def test_webhooks_are_signed_retried_and_logged_by_a_real_worker(celery_worker_process, demo_pairs, users, api_for,
                                                                 settings):
    """A receiver that fails once, then accepts: the worker retries with backoff and the delivery
    log says so; the signature verifies with the secret shown at creation."""
    import hashlib
    import hmac
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from annotate.actions import JudgmentInput, do_submit_judgment
    from annotate.models import WebhookDelivery
    from annotate.tasks import check_judgment_webhooks

    received = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(500 if len(received) == 1 else 204)
            self.end_headers()

        def log_message(self, *args):
            pass

    settings.PREFLOOP_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]  # the worker's env says the same (conftest)
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        created = api_for("owner").post(f"/api/v1/projects/{demo_pairs.slug}/webhooks/", {
            "url": f"http://127.0.0.1:{server.server_port}/hook", "events": ["judgments"], "every_n_judgments": 3,
        }, format="json").json()
        for _ in range(3):
            lease = next_comparison_for(demo_pairs, users["annotator"])
            do_submit_judgment(demo_pairs, users["annotator"], JudgmentInput(lease.comparison_id, "left"))

        check_judgment_webhooks.delay()

        deadline = time.time() + 60
        while time.time() < deadline and not WebhookDelivery.objects.filter(status="delivered").exists():
            time.sleep(0.3)
        delivery = WebhookDelivery.objects.get()
        assert delivery.status == "delivered", celery_worker_process.log_path.read_text()[-3000:]
        assert delivery.attempts == 2 and delivery.last_status_code == 204
        headers, body = received[-1]
        expected = "sha256=" + hmac.new(created["secret"].encode(), f"{headers['X-Prefloop-Timestamp']}.".encode()
                                        + body, hashlib.sha256).hexdigest()
        assert headers["X-Prefloop-Signature"] == expected
        payload = json.loads(body)
        assert (payload["event"], payload["judgments"]) == ("judgments", 3)
        log = api_for("owner").get(f"/api/v1/projects/{demo_pairs.slug}/webhooks/{created['id']}/deliveries/").json()
        assert log["results"][0]["attempts"] == 2
    finally:
        server.shutdown()


def test_a_delivery_whose_message_was_lost_is_sent_again_by_the_sweeper(celery_worker_process, project, settings):
    """A pending delivery whose countdown message never came back (a broker or worker lost it):
    the sweeper hands it to the worker again; a delivery waiting on a fresh retry is left alone."""
    from datetime import timedelta

    from annotate.models import Webhook, WebhookDelivery
    from annotate.tasks import resend_stuck_deliveries

    from .test_security import Receiver

    receiver = Receiver()
    try:
        hook = Webhook.objects.create(project=project, url=receiver.url(), secret="s", events=["job.finished"])
        lost = WebhookDelivery.objects.create(webhook=hook, event="job.finished", payload={"n": 1}, attempts=1)
        waiting = WebhookDelivery.objects.create(webhook=hook, event="job.finished", payload={"n": 2}, attempts=1)
        long_ago = timezone.now() - timedelta(hours=2)
        WebhookDelivery.objects.filter(pk=lost.pk).update(next_attempt_at=long_ago, created_at=long_ago)
        WebhookDelivery.objects.filter(pk=waiting.pk).update(next_attempt_at=timezone.now() + timedelta(seconds=60))

        assert resend_stuck_deliveries() == 1

        deadline = time.time() + 30
        while time.time() < deadline and WebhookDelivery.objects.get(pk=lost.pk).status == "pending":
            time.sleep(0.2)
        assert WebhookDelivery.objects.get(pk=lost.pk).status == "delivered", celery_worker_process.log_path.read_text()
        assert WebhookDelivery.objects.get(pk=waiting.pk).status == "pending"
        assert len(receiver.requests) == 1
        assert resend_stuck_deliveries() == 0
    finally:
        receiver.close()
