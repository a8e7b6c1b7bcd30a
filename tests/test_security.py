"""Holes a review found, each closed and kept closed: who may change owners and make accounts,
webhook targets (SSRF), login throttling, upload limits."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from annotate.actions import do_set_member
from annotate.models import Membership, Role

pytestmark = pytest.mark.django_db


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def two_owners(project, users):
    User = get_user_model()
    second = User.objects.create_user("owner2", password="pw-owner2")
    do_set_member(project, "owner2", Role.OWNER)
    return project, second


def test_a_manager_can_neither_demote_nor_remove_an_owner(two_owners, users):
    project, second = two_owners
    manager = login(users["manager"])

    demoted = manager.post(reverse("members", args=[project.slug]), {"username": "owner2", "role": "annotator"})
    removed = manager.post(reverse("members", args=[project.slug]), {"remove": str(second.pk)})

    assert (demoted.status_code, removed.status_code) == (400, 400)
    assert b"Only an owner" in demoted.content and b"Only an owner" in removed.content
    assert Membership.objects.get(project=project, user=second).role == Role.OWNER


def test_an_owner_changes_owners_but_keeps_the_last_one(two_owners, users):
    project, second = two_owners
    owner = login(users["owner"])

    owner.post(reverse("members", args=[project.slug]), {"username": "owner2", "role": "manager"})
    last = owner.post(reverse("members", args=[project.slug]), {"remove": str(users["owner"].pk)})

    assert Membership.objects.get(project=project, user=second).role == Role.MANAGER
    assert last.status_code == 400 and b"at least one owner" in last.content
    assert Membership.objects.get(project=project, user=users["owner"]).role == Role.OWNER


def test_only_staff_create_site_accounts(project, users):
    refused = login(users["manager"]).post(reverse("members", args=[project.slug]),
                                           {"username": "newbie", "role": "annotator", "create": "1"})
    assert refused.status_code == 400 and b"Only staff" in refused.content
    assert not get_user_model().objects.filter(username="newbie").exists()

    users["owner"].is_staff = True
    users["owner"].save()
    made = login(users["owner"]).post(reverse("members", args=[project.slug]),
                                      {"username": "newbie", "role": "annotator", "create": "1"}, follow=True)
    assert b'<input id="new-password" readonly value="' in made.content  # the one-time password, in its copy box
    assert project.memberships.filter(user__username="newbie", role="annotator").exists()


# --- webhooks: no calls into the server's own network --------------------------------------------

class Receiver:
    """A loopback HTTP server that records requests and answers each with the next given status
    (and Location header, for redirects)."""

    def __init__(self, *answers):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests = []
        answers = list(answers) or [(204, None)]
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                outer.requests.append((self.command, self.path, self.rfile.read(length)))
                code, location = answers[min(len(outer.requests), len(answers)) - 1]
                self.send_response(code)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path="/hook", host="127.0.0.1"):
        return f"http://{host}:{self.port}{path}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(*answers):
        made.append(Receiver(*answers))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/hook", "http://localhost:8000/hook", "http://[::1]/hook", "http://10.1.2.3/hook",
    "http://192.168.0.10/hook", "http://172.16.5.4/hook", "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/hook", "http://0.0.0.0/hook", "http://224.0.0.1/hook", "http://240.0.0.1/hook",
    "http://[::ffff:127.0.0.1]/hook", "http://[fd00::1]/hook", "http://[fe80::1]/hook",
])
def test_webhooks_to_internal_addresses_are_refused_when_saved(project, api_for, url):
    client = api_for("owner")
    response = client.post(f"/api/v1/projects/{project.slug}/webhooks/", {"url": url, "events": ["judgments"]},
                           format="json")
    assert response.status_code == 400, response.content
    assert "PREFLOOP_WEBHOOK_ALLOWED_HOSTS" in response.json()["url"][0]
    assert not project.webhooks.exists()


def test_a_named_host_in_the_allow_list_may_be_used(project, api_for, settings):
    settings.PREFLOOP_WEBHOOK_ALLOWED_HOSTS = ["localhost"]
    client = api_for("owner")
    base = f"/api/v1/projects/{project.slug}/webhooks/"
    assert client.post(base, {"url": "http://localhost:9/hook", "events": ["judgments"]}, format="json").status_code == 201
    assert client.post(base, {"url": "http://127.0.0.1:9/hook", "events": ["judgments"]}, format="json").status_code == 400


def _delivery_to(project, url):
    from annotate.models import Webhook, WebhookDelivery

    hook = Webhook.objects.create(project=project, url=url, secret="s", events=["job.finished"])  # as if saved
    return WebhookDelivery.objects.create(webhook=hook, event="job.finished", payload={"x": 1})


def test_delivery_checks_the_address_again_and_calls_nothing_internal(project, receiver):
    """DNS rebinding: the name was public when saved and points inside now. Nothing is sent."""
    from annotate.webhooks import DeliveryFailed, attempt

    target = receiver()
    delivery = _delivery_to(project, target.url(host="localhost"))

    with pytest.raises(DeliveryFailed):
        attempt(delivery)

    delivery.refresh_from_db()
    assert target.requests == []
    assert delivery.last_error == "refused: the address is not one webhooks may call"
    assert delivery.last_status_code is None


def test_delivery_follows_no_redirect(project, receiver, settings):
    from annotate.webhooks import DeliveryFailed, attempt

    settings.PREFLOOP_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    inner = receiver()
    outer = receiver((302, inner.url("/secret")))
    delivery = _delivery_to(project, outer.url())

    with pytest.raises(DeliveryFailed):
        attempt(delivery)

    delivery.refresh_from_db()
    assert [r[0] for r in outer.requests] == ["POST"] and inner.requests == []
    assert (delivery.last_status_code, delivery.last_error) == (302, "HTTP 302")


def test_the_delivery_log_keeps_network_errors_generic(project, receiver, settings):
    from annotate.webhooks import DeliveryFailed, attempt

    settings.PREFLOOP_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    closed = receiver()
    url = closed.url()
    closed.close()  # nothing listens there now: connection refused
    delivery = _delivery_to(project, url)

    with pytest.raises(DeliveryFailed):
        attempt(delivery)

    delivery.refresh_from_db()
    assert delivery.last_error == "could not connect"


def test_an_allowed_loopback_receiver_gets_the_signed_post(project, receiver, settings):
    from annotate.webhooks import attempt

    settings.PREFLOOP_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    target = receiver()
    delivery = _delivery_to(project, target.url("/hook?x=1"))

    attempt(delivery)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.last_status_code) == ("delivered", 204)
    assert [(m, p) for m, p, _ in target.requests] == [("POST", "/hook?x=1")]


# --- login throttling -------------------------------------------------------------------------


def _login(client, username, password, address="203.0.113.7"):
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address)


def test_failed_logins_lock_the_account_even_from_many_addresses(project, users, settings):
    client = Client()
    assert _login(client, "annotator", "wrong", address="198.51.100.99").status_code == 200  # the form again
    for n in range(getattr(settings, "AXES_FAILURE_LIMIT", 5) - 1):
        _login(client, "annotator", "wrong", address=f"198.51.100.{n}")

    locked = _login(client, "annotator", "pw-annotator", address="198.51.100.200")

    assert locked.status_code == 429 and b"Too many failed logins" in locked.content
    assert "_auth_user_id" not in client.session
    assert _login(Client(), "annotator2", "pw-annotator2", address="198.51.100.201").status_code == 302


def test_failed_logins_lock_the_address_across_accounts(project, users, settings):
    for n in range(getattr(settings, "AXES_FAILURE_LIMIT", 5)):
        _login(Client(), f"nobody{n}", "guess", address="192.0.2.9")

    assert _login(Client(), "annotator", "pw-annotator", address="192.0.2.9").status_code == 429
    assert _login(Client(), "annotator", "pw-annotator", address="192.0.2.10").status_code == 302


@pytest.mark.django_db(transaction=True)
def test_the_api_throttle_is_shared_by_every_process(project, users):
    """Two web processes, one token, a limit of 3 a minute: the second process sees the first's count."""
    import os
    import subprocess
    import sys

    from annotate.tokens import create_token

    from .conftest import REPO, database_url_for_subprocess

    _, secret = create_token(users["annotator"], "throttle")
    script = (
        "import django, sys; django.setup()\n"
        "from rest_framework.test import APIClient\n"
        "c = APIClient(); c.credentials(HTTP_AUTHORIZATION='Bearer ' + sys.argv[1])\n"
        "print(' '.join(str(c.get('/api/v1/projects/').status_code) for _ in range(int(sys.argv[2]))))\n"
    )
    env = {**os.environ, "DATABASE_URL": database_url_for_subprocess(), "PREFLOOP_API_RATE": "3/min",
           "DJANGO_SETTINGS_MODULE": "config.settings"}

    def process(requests: int) -> str:
        done = subprocess.run([sys.executable, "-c", script, secret, str(requests)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip().splitlines()[-1]

    assert process(3) == "200 200 200"
    assert process(1) == "429"


# --- upload limits, before the body is read ------------------------------------------------------


def test_an_api_body_over_the_limit_is_refused_before_it_is_read(project, api_for, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    items = [{"prompt": f"q{i}?", "response_a": "yes", "response_b": "no"} for i in range(200)]

    response = api_for("owner").post(f"/api/v1/projects/{project.slug}/comparisons/", {"items": items},
                                     format="json")

    assert response.status_code == 413, response.content[:300]
    assert "limit is 4 KB" in response.json()["detail"] and "PREFLOOP_API_MAX_BODY_MB" in response.json()["detail"]
    assert not project.comparisons.exists()


def test_an_upload_over_the_limit_is_refused_from_its_length_alone(project, users, settings):
    """The request claims 10 GB but sends a few bytes: it is answered without reading the body."""
    settings.PREFLOOP_MAX_UPLOAD_BYTES = 1024 * 1024
    body = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n{}\r\n--x--\r\n'

    response = login(users["owner"]).generic(
        "POST", reverse("import", args=[project.slug]), body,
        content_type="multipart/form-data; boundary=x", CONTENT_LENGTH=str(10 * 1024**3),
    )

    assert response.status_code == 413
    assert b"the limit is 1 MB" in response.content and b"PREFLOOP_MAX_UPLOAD_MB" in response.content


def test_the_upload_handler_stops_a_file_past_the_limit_as_it_streams(project, users, settings):
    """A form whose length is within the slack for form fields but whose file is over the limit."""
    import io

    settings.PREFLOOP_MAX_UPLOAD_BYTES = 64 * 1024
    upload = io.BytesIO(b'{"prompt": "q?", "response_a": "yes", "response_b": "no"}\n' * 2000)  # ~120 KB
    upload.name = "big.jsonl"

    response = login(users["owner"]).post(reverse("import", args=[project.slug]), {"file": upload, "format": "auto"})

    assert response.status_code == 413
    assert b"limit is 64 KB (PREFLOOP_MAX_UPLOAD_MB)" in response.content
    assert not project.comparisons.exists()


def test_a_gzip_bomb_is_stopped_at_the_unzipped_limit(project, settings):
    import gzip
    import io

    from annotate.importing import ImportFailed, import_stream

    settings.PREFLOOP_MAX_UNZIPPED_BYTES = 1024 * 1024
    rows = "".join(f'{{"prompt": "q{i}?", "response_a": "yes", "response_b": "no"}}\n' for i in range(40000))
    packed = gzip.compress(rows.encode())  # ~2 MB unzipped, far less zipped
    assert len(packed) < settings.PREFLOOP_MAX_UNZIPPED_BYTES

    with pytest.raises(ImportFailed, match=r"unzips to more than 1 MB .*PREFLOOP_MAX_UNZIPPED_MB"):
        import_stream(project, io.BytesIO(packed))
    assert not project.comparisons.exists()
