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
