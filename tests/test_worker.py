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
