"""Database dialect helpers shared by the hand-written SQL of the queue, the actions and the import.

Raw SQL bypasses the ORM's conversions, so values cross the driver boundary here: SQLite keeps
datetimes as UTC text, PostgreSQL as timestamptz.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime


def on_postgresql() -> bool:
    """True on PostgreSQL, where the hot paths run as single statements; else the step-by-step SQL."""
    return connection.vendor == "postgresql"


def db_datetime(value: datetime):
    """A datetime as the database driver wants it in raw SQL (SQLite stores UTC text)."""
    return connection.ops.adapt_datetimefield_value(value)


def from_db_datetime(value) -> datetime:
    """A datetime read by raw SQL, aware and in UTC whichever database returned it."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    return value
