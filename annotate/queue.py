"""The comparison queue: which comparison an annotator judges next, and the lease that holds it.

The hot path is hand-written SQL. On this kind of 2-core machine the ORM spent ~0.6 ms of Python
per query and each round trip to PostgreSQL ~0.15 ms, which together were most of the cost of a
next + submit cycle; so on PostgreSQL "next" is one statement, and on SQLite the same steps run
one by one (docs/benchmarks.md). Both versions sit below `next_comparison_for`, which states
what they both guarantee.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from .db import db_datetime, from_db_datetime, on_postgresql
from .models import Candidate, Comparison, Lease, Project, Prompt, Side


def lease_duration() -> timedelta:
    return timedelta(seconds=settings.PREFLOOP_LEASE_SECONDS)


def next_comparison_for(project: Project, annotator, now=None) -> Lease | None:
    """Lease the next comparison to `annotator`, or return the one they already hold.

    The contract both versions keep (PostgreSQL: `_next_on_postgresql`, one statement; SQLite:
    `_next_on_sqlite`, the same steps in one write-locked transaction):
    - a comparison of this project the annotator still holds comes back first, with the same sides,
      its lease extended when less than half of it is left;
    - otherwise the first open comparison by priority (highest first), random among equals (a
      tiebreak fixed per comparison), that they have not judged or skipped and nobody else holds;
    - one unexpired lease per comparison: concurrent annotators never get the same one (a lost
      race moves on to the next; races lost are never taken for an empty queue);
    - left/right is drawn when the lease is taken and kept on the lease;
    - with a project gold share g > 0, each new lease is drawn from the gold comparisons with
      probability g (from the others otherwise; either falls back to the other when empty); gold
      stays in every annotator's queue until they judged it (completion does not retire it), and
      nothing in the lease tells it apart;
    - None only when nothing is left for this annotator: no open comparison they may take that
      another transaction does not hold locked at that moment;
    - the lease comes with its comparison, prompt and candidate texts loaded.
    Proof: tests/test_queue.py (marked `both_databases`), which `./prefloop test` runs on both.
    """
    now = now or timezone.now()
    if on_postgresql():
        return _next_on_postgresql(project, annotator, now)
    return _next_on_sqlite(project, annotator, now)


# --- PostgreSQL: one statement -------------------------------------------------------------
# The whole "next" in one round trip, autocommitted: the held lease (extended when half spent)
# or, when there is none, the first free comparison locked with SKIP LOCKED, so concurrent
# annotators never wait on each other, and leased by a conditional upsert that sees the latest
# committed lease, so one leased by someone else a moment ago is passed over rather than taken.
# `picked` tells a lost race (a row was picked but its lease belonged to someone else) from an
# empty queue. The row lock is FOR NO KEY UPDATE: a concurrent insert that references the
# comparison (a judgment, a lease) holds KEY SHARE on it, which FOR UPDATE would conflict with and
# SKIP LOCKED would then pass over as if taken.
NEXT_POSTGRES_SQL = """
WITH held AS (
    UPDATE annotate_lease
    SET expires_at = CASE WHEN expires_at < %(half)s THEN %(expires)s ELSE expires_at END
    WHERE annotator_id = %(user)s AND comparison_id = (
        SELECT l.comparison_id FROM annotate_lease l JOIN annotate_comparison c ON c.id = l.comparison_id
        WHERE l.annotator_id = %(user)s AND l.expires_at > %(now)s AND c.project_id = %(project)s
          AND {held_status}
        ORDER BY l.issued_at LIMIT 1)
    RETURNING comparison_id, shown_left, issued_at, expires_at
), pick AS (
    SELECT c.id FROM annotate_comparison c
    WHERE NOT EXISTS (SELECT 1 FROM held) AND c.project_id = %(project)s AND {pool}
      AND NOT EXISTS (SELECT 1 FROM annotate_judgment j WHERE j.comparison_id = c.id AND j.annotator_id = %(user)s)
      AND NOT EXISTS (SELECT 1 FROM annotate_skip s WHERE s.comparison_id = c.id AND s.annotator_id = %(user)s)
      AND NOT EXISTS (SELECT 1 FROM annotate_lease l WHERE l.comparison_id = c.id AND l.expires_at > %(now)s
                      AND l.annotator_id <> %(user)s)
      AND c.id <> ALL(%(passed_over)s::bigint[])
    ORDER BY c.priority DESC, c.tiebreak
    LIMIT 1
    FOR NO KEY UPDATE OF c SKIP LOCKED
), claimed AS (
    INSERT INTO annotate_lease (comparison_id, annotator_id, shown_left, issued_at, expires_at)
    SELECT id, %(user)s, %(side)s, %(now)s, %(expires)s FROM pick
    ON CONFLICT (comparison_id) DO UPDATE SET annotator_id = excluded.annotator_id,
        shown_left = excluded.shown_left, issued_at = excluded.issued_at, expires_at = excluded.expires_at
    WHERE annotate_lease.expires_at <= %(now)s OR annotate_lease.annotator_id = %(user)s
    RETURNING comparison_id, shown_left, issued_at, expires_at
), chosen AS (
    SELECT * FROM held UNION ALL SELECT * FROM claimed
)
SELECT (SELECT id FROM pick) AS picked, chosen.shown_left, chosen.issued_at, chosen.expires_at,
       c.id, c.project_id, c.prompt_id, c.candidate_a_id, c.candidate_b_id, c.priority, c.votes_wanted,
       c.votes, c.status, c.origin, c.round, p.text, p.messages, a.text, b.text
FROM (SELECT 1) AS one
LEFT JOIN chosen ON true
LEFT JOIN annotate_comparison c ON c.id = chosen.comparison_id
LEFT JOIN annotate_prompt p ON p.id = c.prompt_id
LEFT JOIN annotate_candidate a ON a.id = c.candidate_a_id
LEFT JOIN annotate_candidate b ON b.id = c.candidate_b_id"""


# Which comparisons a pick draws from: every open one (no gold share: the index-only plan), the
# open ones that are not gold, or the gold ones (open or complete: gold serves every annotator).
POOLS = {
    "any": "c.status = 'open'",
    "plain": "c.status = 'open' AND c.gold_choice IS NULL",
    "gold": "c.status <> 'retired' AND c.gold_choice IS NOT NULL",
}
HELD_STATUS = "(c.status = 'open' OR (c.gold_choice IS NOT NULL AND c.status <> 'retired'))"


def pools_for(project: Project) -> list[str]:
    """The order in which pools are tried for a new lease: gold first with the gold share's odds."""
    share = getattr(project, "gold_share", 0.0) or 0.0
    if share <= 0:
        return ["any"]
    return ["gold", "plain"] if secrets.randbelow(1_000_000) < share * 1_000_000 else ["plain", "gold"]


def _next_on_postgresql(project: Project, annotator, now: datetime) -> Lease | None:
    for pool in pools_for(project):
        lease = _next_on_postgresql_from(project, annotator, now, pool)
        if lease is not None:
            return lease
    return None


def _next_on_postgresql_from(project: Project, annotator, now: datetime, pool: str) -> Lease | None:
    duration = lease_duration()
    params = {"user": annotator.pk, "project": project.pk, "now": now, "half": now + duration / 2,
              "expires": now + duration, "passed_over": []}
    with connection.cursor() as cursor:
        # Each lost race is a comparison someone else leased, so this ends. It once gave up after
        # 16 and answered "nothing left" with thousands open: right after an import, with no
        # statistics, each statement was slow enough for all annotators to race for the same rows.
        while True:
            params["side"] = Side.A if secrets.randbits(1) else Side.B
            cursor.execute(NEXT_POSTGRES_SQL.format(pool=POOLS[pool], held_status=HELD_STATUS), params)
            picked, shown_left, issued_at, expires_at, *comparison_row = cursor.fetchone()
            if comparison_row[0] is not None:
                lease = Lease(comparison_id=comparison_row[0], annotator=annotator, shown_left=shown_left,
                              issued_at=issued_at, expires_at=expires_at)
                lease.comparison = _comparison_from_row(comparison_row)
                return lease
            if picked is None:
                return None
            params["passed_over"] = [*params["passed_over"], picked]  # lost a race for it: next one


# --- SQLite: step by step ------------------------------------------------------------------
# The same steps as separate statements in one transaction that holds the database's write lock
# from BEGIN (`transaction_mode=IMMEDIATE`), which serialises annotators (and on any other
# database without SKIP LOCKED).
HELD_SQL = """
SELECT l.comparison_id, l.shown_left, l.issued_at, l.expires_at
FROM annotate_lease l JOIN annotate_comparison c ON c.id = l.comparison_id
WHERE l.annotator_id = %s AND l.expires_at > %s AND c.project_id = %s
  AND (c.status = 'open' OR (c.gold_choice IS NOT NULL AND c.status <> 'retired'))
ORDER BY l.issued_at LIMIT 1"""

CLAIM_SQL = """
SELECT c.id FROM annotate_comparison c
WHERE c.project_id = %s AND {pool}
  AND NOT EXISTS (SELECT 1 FROM annotate_judgment j WHERE j.comparison_id = c.id AND j.annotator_id = %s)
  AND NOT EXISTS (SELECT 1 FROM annotate_skip s WHERE s.comparison_id = c.id AND s.annotator_id = %s)
  AND NOT EXISTS (SELECT 1 FROM annotate_lease l WHERE l.comparison_id = c.id AND l.expires_at > %s AND l.annotator_id <> %s)
  {passed_over}
ORDER BY c.priority DESC, c.tiebreak
LIMIT 1"""

# Takes the lease unless someone else's unexpired lease is there: ON CONFLICT looks at the latest
# committed row, not at the snapshot the SELECT above ran on.
LEASE_SQL = """
INSERT INTO annotate_lease (comparison_id, annotator_id, shown_left, issued_at, expires_at)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (comparison_id) DO UPDATE SET annotator_id = excluded.annotator_id,
    shown_left = excluded.shown_left, issued_at = excluded.issued_at, expires_at = excluded.expires_at
WHERE annotate_lease.expires_at <= %s OR annotate_lease.annotator_id = %s
RETURNING comparison_id"""

LOAD_SQL = """
SELECT c.id, c.project_id, c.prompt_id, c.candidate_a_id, c.candidate_b_id, c.priority, c.votes_wanted,
       c.votes, c.status, c.origin, c.round,
       p.text, p.messages, a.text, b.text
FROM annotate_comparison c JOIN annotate_prompt p ON p.id = c.prompt_id
JOIN annotate_candidate a ON a.id = c.candidate_a_id JOIN annotate_candidate b ON b.id = c.candidate_b_id
WHERE c.id = %s"""


def _next_on_sqlite(project: Project, annotator, now: datetime) -> Lease | None:
    duration = lease_duration()
    user_id = annotator.pk
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(HELD_SQL, [user_id, db_datetime(now), project.pk])
        held = cursor.fetchone()
        if held is not None:
            comparison_id, shown_left, issued_at, expires_at = held
            issued_at, expires_at = from_db_datetime(issued_at), from_db_datetime(expires_at)
            if expires_at - now < duration / 2:  # still working on it: keep it theirs
                expires_at = now + duration
                cursor.execute("UPDATE annotate_lease SET expires_at = %s WHERE comparison_id = %s AND annotator_id = %s",
                               [db_datetime(expires_at), comparison_id, user_id])
        else:
            claimed = None
            for pool in pools_for(project):
                claimed = _claim(cursor, project, user_id, now, duration, pool)
                if claimed is not None:
                    break
            if claimed is None:
                return None
            comparison_id, shown_left = claimed
            issued_at, expires_at = now, now + duration
        cursor.execute(LOAD_SQL, [comparison_id])
        comparison = _comparison_from_row(cursor.fetchone())
    lease = Lease(comparison_id=comparison_id, annotator=annotator, shown_left=shown_left,
                  issued_at=issued_at, expires_at=expires_at)
    lease.comparison = comparison
    return lease


def _claim(cursor, project: Project, user_id: int, now: datetime, duration: timedelta,
           pool: str = "any") -> tuple[int, str] | None:
    """Lease the first free comparison to the user: (comparison id, side shown left), or None."""
    lock = " FOR UPDATE OF c SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    passed_over: list[int] = []
    while True:  # as on PostgreSQL: a lost race is never an empty queue
        exclude = f"AND c.id NOT IN ({', '.join(['%s'] * len(passed_over))})" if passed_over else ""
        cursor.execute(CLAIM_SQL.format(passed_over=exclude, pool=POOLS[pool]) + lock,
                       [project.pk, user_id, user_id, db_datetime(now), user_id, *passed_over])
        row = cursor.fetchone()
        if row is None:
            return None
        side = Side.A if secrets.randbits(1) else Side.B
        cursor.execute(LEASE_SQL, [row[0], user_id, side, db_datetime(now), db_datetime(now + duration),
                                   db_datetime(now), user_id])
        if cursor.fetchone() is not None:
            return row[0], side
        passed_over.append(row[0])


def _comparison_from_row(row) -> Comparison:
    (cid, project_id, prompt_id, a_id, b_id, priority, votes_wanted, votes, status, origin, round_,
     prompt_text, messages, a_text, b_text) = row
    if isinstance(messages, str):
        messages = json.loads(messages)
    comparison = Comparison(
        id=cid, project_id=project_id, prompt_id=prompt_id, candidate_a_id=a_id, candidate_b_id=b_id,
        priority=priority, votes_wanted=votes_wanted, votes=votes, status=status, origin=origin, round=round_,
    )
    comparison.prompt = Prompt(id=prompt_id, project_id=project_id, text=prompt_text, messages=messages)
    comparison.candidate_a = Candidate(id=a_id, prompt_id=prompt_id, text=a_text)
    comparison.candidate_b = Candidate(id=b_id, prompt_id=prompt_id, text=b_text)
    return comparison


def release_expired_leases(now=None) -> int:
    """Housekeeping only: an expired lease is already ignored by the queue."""
    now = now or timezone.now()
    return Lease.objects.filter(expires_at__lte=now).delete()[0]
