"""Incremental reads of judgments that never skip a late commit.

On PostgreSQL ids are handed out when a row is inserted, not when it commits: a judgment with a
lower id can become visible after a higher one, and a reader that remembers "the highest id seen"
skips it forever. So each judgment row records the 64-bit id of the transaction that wrote it
(`txid`, a column default, annotate/migrations/0006), and an incremental reader remembers a
transaction horizon instead: the oldest transaction still in flight in this database (from
pg_locks, bounded by the snapshot's xmax). Every transaction below it has ended, so rows with txid below it are all the
rows they will ever write; the next read takes [previous horizon, new horizon). SQLite has one
writer at a time, so ids commit in order there and the id is the watermark.
"""

from __future__ import annotations

from django.db import connection

from .db import on_postgresql

# The oldest transaction still in flight that wrote in THIS database (pg_snapshot_xmin would wait
# on every database of the cluster): transaction-id locks of sessions holding a lock here, read
# from pg_locks (visible to any user), their 32-bit ids widened against the snapshot's xmax.
HORIZON_SQL = """
WITH s AS (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax),
here AS (SELECT oid FROM pg_database WHERE datname = current_database())
SELECT LEAST(s.xmax, min(s.xmax - (((s.xmax % 4294967296) - l.transactionid::text::bigint + 4294967296) % 4294967296)))
FROM s LEFT JOIN pg_locks l
  ON l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted AND l.pid <> pg_backend_pid()
 AND EXISTS (SELECT 1 FROM pg_locks r, here WHERE r.pid = l.pid AND r.database = here.oid)
GROUP BY s.xmax"""


def horizon() -> int | None:
    """The oldest transaction id still in flight in this database (PostgreSQL), None on SQLite.
    Every transaction below it has ended."""
    if not on_postgresql():
        return None
    with connection.cursor() as cursor:
        cursor.execute(HORIZON_SQL)
        return cursor.fetchone()[0]


def settled_since(project_id: int, after_txid: int, until_txid: int) -> tuple[int, int | None, int | None]:
    """(count, lowest id, highest id) of the project's judgments written by transactions in
    [after_txid, until_txid): all of them, once until_txid is a horizon."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), min(id), max(id) FROM annotate_judgment "
            "WHERE project_id = %s AND txid >= %s AND txid < %s",
            [project_id, after_txid, until_txid],
        )
        return cursor.fetchone()
