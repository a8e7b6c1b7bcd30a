"""The one event of the job system: a job ended (succeeded, failed, was cancelled or lost). The
core sends it once the end is committed; what follows a job's end (a pipeline's next step,
webhooks) listens to it in `training.listeners`, so the core imports none of them."""

from __future__ import annotations

import logging

from django.db import transaction
from django.dispatch import Signal

log = logging.getLogger(__name__)

# Sent with job_id=<int>, after the transaction that ended the job has committed.
job_finished = Signal()


def announce_later(job_id: int) -> None:
    """Once committed, tell the listeners. A listener's fault is logged, never raised into the
    code that committed (the sweeper moves a pipeline on later)."""
    transaction.on_commit(lambda: _announce(job_id), robust=True)


def _announce(job_id: int) -> None:
    for receiver, response in job_finished.send_robust(sender=None, job_id=job_id):
        if isinstance(response, Exception):
            log.error("job %s: listener %s failed: %r", job_id, getattr(receiver, "__qualname__", receiver),
                      response, exc_info=response)
