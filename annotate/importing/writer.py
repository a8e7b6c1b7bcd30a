"""Writing parsed rows into a project: set-based SQL per batch; on PostgreSQL in one transaction, all
or nothing, on SQLite one short transaction per batch after the whole file was read (see import_rows).

The dialect-specific SQL of the import lives here (COPY on PostgreSQL, executemany on SQLite);
the batch is bounded, so memory stays the same whatever the file's size. After a large import
the tables it filled are ANALYZEd on PostgreSQL: where autovacuum lags (or is off) the queue's
query otherwise ran with no statistics and a cycle cost ten times more.
"""

from __future__ import annotations

import json
import pickle
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from ..db import db_datetime, on_postgresql
from ..models import ImportBatch, Project, content_hash
from .parsers import ParsedRow
from .reading import ImportFailed

LABEL_MODES = ("judgments", "gold", "ignore")
IMPORTED_USERNAME = "imported"


@dataclass
class ImportResult:
    """What one import added and skipped, and how long it took."""

    format: str
    rows: int = 0
    prompts_added: int = 0
    candidates_added: int = 0
    comparisons_added: int = 0
    judgments_added: int = 0
    rows_skipped: int = 0
    labels_not_applied: int = 0  # each one also a note naming its row
    seconds: float = 0.0
    sha256: str = ""
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "notes"} | {"notes": self.notes[:20]}


def imported_annotator():
    """The account that labels found in files are recorded under; it cannot log in."""
    user, created = get_user_model().objects.get_or_create(
        username=IMPORTED_USERNAME, defaults={"is_active": False, "first_name": "Imported labels"}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


class _BatchWriter:
    """Writes batches of parsed rows with set-based SQL: the batch is staged in temporary tables
    (COPY on PostgreSQL, executemany on SQLite), then each target table gets one
    INSERT … SELECT … ON CONFLICT DO NOTHING, so existing rows are kept and counted as such.
    On this 2-core machine the ORM's bulk_create spent most of its time building statements
    with tens of thousands of parameters (docs/benchmarks.md)."""

    STAGES = {
        "import_prompt": ("hash", "text", "messages", "external_id"),
        "import_candidate": ("prompt_hash", "hash", "text", "source"),
        "import_pair": ("prompt_hash", "hash_1", "hash_2", "label", "item", "priority", "origin", "round",
                        "votes_wanted", "line"),
        "import_resolved": ("prompt_id", "a_id", "b_id", "label", "item", "priority", "origin", "round",
                            "votes_wanted", "line"),
    }
    STAGE_TYPES = {"label": "varchar(8)", "text": "text", "messages": "text", "prompt_id": "bigint",
                   "a_id": "bigint", "b_id": "bigint", "item": "integer", "priority": "double precision",
                   "round": "integer", "votes_wanted": "integer", "line": "integer", "origin": "varchar(16)"}

    def __init__(self, project: Project, labels: str, result: ImportResult):
        self.project = project
        self.labels = labels
        self.result = result
        self.annotator = imported_annotator() if labels == "judgments" else None
        self.is_chat = project.conversational
        self.pg = on_postgresql()
        self.row_number = 0
        self.comparison_ids: dict[int, int] = {}  # item -> comparison id, for rows that carry an item
        with connection.cursor() as cursor:
            for table, columns in self.STAGES.items():
                types = ", ".join(f"{c} {self.STAGE_TYPES.get(c, 'varchar(200)')}" for c in columns)
                cursor.execute(f"DROP TABLE IF EXISTS {table}")
                cursor.execute(f"CREATE TEMPORARY TABLE {table} ({types})")

    def close(self) -> None:
        with connection.cursor() as cursor:
            for table in self.STAGES:
                cursor.execute(f"DROP TABLE IF EXISTS {table}")

    def _empty(self, cursor, table: str) -> None:
        # TRUNCATE gives PostgreSQL's temp table its space back; DELETE would leave every batch's
        # rows behind as dead tuples (temp tables are never autovacuumed), slowing each next batch.
        cursor.execute(f"TRUNCATE {table}" if self.pg else f"DELETE FROM {table}")

    def _stage(self, cursor, table: str, rows) -> None:
        columns = self.STAGES[table]
        self._empty(cursor, table)
        if not rows:
            return
        if self.pg:
            with cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join(["%s"] * len(columns))
            cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", list(rows))

    def write(self, rows: list[ParsedRow]) -> None:
        # Deduplicated here, first occurrence first, so the SQL below joins without grouping.
        prompts: dict[str, tuple] = {}
        candidates: dict[tuple[str, str], tuple] = {}
        pairs: dict[tuple[str, frozenset], tuple] = {}
        same_pair: dict[int, int] = {}  # item -> the item whose identical pair was staged
        for row in rows:
            self.row_number += 1
            prompt_hash = content_hash(row.prompt_messages or row.prompt_text)
            if prompt_hash not in prompts:
                messages = json.dumps(row.prompt_messages, ensure_ascii=False) if row.prompt_messages else None
                prompts[prompt_hash] = (prompt_hash, row.prompt_text, messages, row.external_id[:200])
                self.is_chat = self.is_chat or bool(row.prompt_messages)
            hashes = [content_hash(text) for text, _ in row.responses]
            for (text, source), text_hash in zip(row.responses, hashes, strict=True):
                candidates.setdefault((prompt_hash, text_hash), (prompt_hash, text_hash, text, source[:200]))
            for i, j, label in row.pairs:
                if hashes[i] == hashes[j]:
                    self.result.rows_skipped += 1
                    self.result.notes.append(f"row {self.row_number}: two identical responses, pair skipped")
                    continue
                key = (prompt_hash, frozenset((hashes[i], hashes[j])))
                if key in pairs:
                    if row.item is not None and pairs[key][4] is not None:
                        same_pair[row.item] = pairs[key][4]
                    if label is not None and self.labels != "ignore":
                        self._not_applied(self.row_number, label, f"the same pair as row {pairs[key][9]}")
                    continue
                pairs[key] = (prompt_hash, hashes[i], hashes[j], label, row.item, row.priority, row.origin,
                              row.round, row.votes_wanted, self.row_number)
        with connection.cursor() as cursor:
            self._stage(cursor, "import_prompt", prompts.values())
            self._stage(cursor, "import_candidate", candidates.values())
            self._stage(cursor, "import_pair", pairs.values())
            self._insert(cursor)
            if same_pair or any(row.item is not None for row in rows):
                cursor.execute("""
                    SELECT r.item, c.id FROM import_resolved r
                    JOIN annotate_comparison c ON c.candidate_a_id = r.a_id AND c.candidate_b_id = r.b_id
                    WHERE r.item IS NOT NULL""")
                self.comparison_ids.update(dict(cursor.fetchall()))
                for item, first in same_pair.items():
                    if first in self.comparison_ids:
                        self.comparison_ids[item] = self.comparison_ids[first]

    def _not_applied(self, line: int, label: str, why: str) -> None:
        """A label that could not be applied is reported by its row, never dropped unseen."""
        self.result.labels_not_applied += 1
        self.result.notes.append(f"row {line}: {why}; its label {label!r} was not applied")

    def _insert(self, cursor) -> None:
        now = db_datetime(timezone.now())
        jsonb = "::jsonb" if self.pg else ""
        random_key = "(random() * 4611686018427387903)::bigint" if self.pg else "(abs(random()) / 2)"
        project = self.project.pk
        # "WHERE true": SQLite needs a WHERE before ON CONFLICT in INSERT … SELECT to parse it.
        cursor.execute(f"""
            INSERT INTO annotate_prompt (project_id, text, messages, content_hash, external_id, created_at)
            SELECT %s, s.text, s.messages{jsonb}, s.hash, s.external_id, %s FROM import_prompt s WHERE true
            ON CONFLICT (project_id, content_hash) DO NOTHING""", [project, now])
        self.result.prompts_added += max(cursor.rowcount, 0)
        cursor.execute("""
            INSERT INTO annotate_candidate (prompt_id, text, content_hash, source, created_at)
            SELECT p.id, s.text, s.hash, s.source, %s
            FROM import_candidate s JOIN annotate_prompt p ON p.project_id = %s AND p.content_hash = s.prompt_hash
            WHERE true
            ON CONFLICT (prompt_id, content_hash) DO NOTHING""", [now, project])
        self.result.candidates_added += max(cursor.rowcount, 0)
        # Each pair as candidate ids in canonical order (a < b), its label turned with it.
        self._empty(cursor, "import_resolved")
        cursor.execute("""
            INSERT INTO import_resolved (prompt_id, a_id, b_id, label, item, priority, origin, round, votes_wanted,
                                         line)
            SELECT p.id, CASE WHEN c1.id < c2.id THEN c1.id ELSE c2.id END,
                   CASE WHEN c1.id < c2.id THEN c2.id ELSE c1.id END,
                   CASE WHEN c1.id < c2.id OR s.label = 'tie' THEN s.label
                        WHEN s.label = 'a' THEN 'b' WHEN s.label = 'b' THEN 'a' END,
                   s.item, s.priority, s.origin, s.round, s.votes_wanted, s.line
            FROM import_pair s
            JOIN annotate_prompt p ON p.project_id = %s AND p.content_hash = s.prompt_hash
            JOIN annotate_candidate c1 ON c1.prompt_id = p.id AND c1.content_hash = s.hash_1
            JOIN annotate_candidate c2 ON c2.prompt_id = p.id AND c2.content_hash = s.hash_2""", [project])
        gold = self.labels == "gold"
        votes = "CASE WHEN r.label IS NULL THEN 0 ELSE 1 END" if self.annotator else "0"
        wanted = "COALESCE(r.votes_wanted, %s)"
        default_origin = "CASE WHEN r.label IS NULL THEN 'imported' ELSE 'gold' END" if gold else "'imported'"
        cursor.execute(f"""
            INSERT INTO annotate_comparison (project_id, prompt_id, candidate_a_id, candidate_b_id, priority,
                tiebreak, votes_wanted, votes, status, origin, round, gold_choice, created_at)
            SELECT %s, r.prompt_id, r.a_id, r.b_id, COALESCE(r.priority, 0), {random_key}, {wanted}, {votes},
                   CASE WHEN {votes} >= {wanted} THEN 'complete' ELSE 'open' END,
                   COALESCE(r.origin, {default_origin}), COALESCE(r.round, 0), {"r.label" if gold else "NULL"}, %s
            FROM import_resolved r WHERE true
            ON CONFLICT (candidate_a_id, candidate_b_id) DO NOTHING
            RETURNING id""", [project, self.project.votes_wanted, self.project.votes_wanted, now])
        created = {row[0] for row in cursor.fetchall()}
        self.result.comparisons_added += len(created)
        if gold:  # gold on a pair that existed already: set where it has none, report where it differs
            match = "r.a_id = annotate_comparison.candidate_a_id AND r.b_id = annotate_comparison.candidate_b_id"
            cursor.execute(f"""
                UPDATE annotate_comparison SET gold_choice = (
                    SELECT r.label FROM import_resolved r WHERE {match} AND r.label IS NOT NULL)
                WHERE project_id = %s AND gold_choice IS NULL
                  AND EXISTS (SELECT 1 FROM import_resolved r WHERE {match} AND r.label IS NOT NULL)""", [project])
            cursor.execute("""
                SELECT r.line, r.label, c.gold_choice FROM import_resolved r
                JOIN annotate_comparison c ON c.candidate_a_id = r.a_id AND c.candidate_b_id = r.b_id
                WHERE r.label IS NOT NULL AND c.gold_choice <> r.label ORDER BY r.line""")
            for line, label, known in cursor.fetchall():
                self._not_applied(line, label, f"the pair already has the gold answer {known!r}")
        if self.annotator is None:
            return
        cursor.execute("""
            SELECT r.line, r.label FROM import_resolved r
            JOIN annotate_comparison c ON c.candidate_a_id = r.a_id AND c.candidate_b_id = r.b_id
            JOIN annotate_judgment j ON j.comparison_id = c.id AND j.annotator_id = %s
            WHERE r.label IS NOT NULL ORDER BY r.line""", [self.annotator.pk])
        for line, label in cursor.fetchall():
            self._not_applied(line, label, "the pair already has a label imported before (one imported label per pair)")
        cursor.execute(f"""
            INSERT INTO annotate_judgment (project_id, comparison_id, annotator_id, choice, strength, rubric_scores,
                                           rationale, shown_left, ms_spent, created_at)
            SELECT %s, c.id, %s, r.label, NULL, '{{}}'{jsonb}, '', NULL, NULL, %s
            FROM import_resolved r
            JOIN annotate_comparison c ON c.candidate_a_id = r.a_id AND c.candidate_b_id = r.b_id
            WHERE r.label IS NOT NULL
            ON CONFLICT (comparison_id, annotator_id) DO NOTHING
            RETURNING comparison_id""", [project, self.annotator.pk, now])
        judged = [row[0] for row in cursor.fetchall()]
        self.result.judgments_added += len(judged)
        # New comparisons were written with their vote counted; older ones gain it now.
        older = [cid for cid in judged if cid not in created]
        for start in range(0, len(older), 500):
            chunk = older[start:start + 500]
            marks = ", ".join(["%s"] * len(chunk))
            cursor.execute(f"""
                UPDATE annotate_comparison SET votes = votes + 1,
                    status = CASE WHEN status = 'open' AND votes + 1 >= votes_wanted THEN 'complete' ELSE status END
                WHERE id IN ({marks})""", chunk)


def import_rows(
    project: Project,
    rows: Iterable[ParsedRow],
    *,
    labels: str = "judgments",
    user=None,
    filename: str = "",
    format: str = "",
    batch_size: int | None = None,
    result: ImportResult | None = None,
    file_sha256=None,
) -> tuple[ImportResult, dict[int, int]]:
    """Write parsed rows into `project` and record the batch. Returns the counts and, for rows that
    carry an `item`, the comparison each became.

    On PostgreSQL: one transaction, all or nothing (row locks: judging goes on meanwhile). On
    SQLite, where a transaction holds the one write lock of the whole database, the rows are first
    read and checked in full (a bad row refuses the file before anything is written), then each
    batch is written in a short transaction of its own, so annotators keep judging between
    batches. Only a crash mid-write can leave part of a file there; importing it again adds the
    rest and nothing twice."""
    if labels not in LABEL_MODES:
        raise ImportFailed(f"Unknown label mode {labels!r}. Accepted: {', '.join(LABEL_MODES)}.")
    batch_size = batch_size or settings.PREFLOOP_IMPORT_BATCH
    started = time.perf_counter()
    result = result or ImportResult(format=format)
    one_transaction = on_postgresql()
    with transaction.atomic() if one_transaction else _spooled(rows) as spool:
        if spool is not None:
            rows = spool()
        writer = _BatchWriter(project, labels, result)
        try:
            batch: list[ParsedRow] = []
            for row in rows:
                batch.append(row)
                result.rows += 1
                if len(batch) >= batch_size:
                    _write_batch(writer, batch, one_transaction)
                    batch = []
            if result.rows == 0:
                raise ImportFailed("There are no records. Nothing was imported.")
            if batch:
                _write_batch(writer, batch, one_transaction)
        except BaseException:
            if not one_transaction:  # on PostgreSQL the rollback drops the staging tables
                writer.close()
            raise
        writer.close()
        with transaction.atomic():
            if writer.is_chat and not project.conversational:
                Project.objects.filter(pk=project.pk).update(conversational=True)
                project.conversational = True
            result.sha256 = file_sha256() if file_sha256 else ""
            ImportBatch.objects.create(
                project=project, filename=filename[:300], sha256=result.sha256, format=result.format,
                rows=result.rows, prompts_added=result.prompts_added, candidates_added=result.candidates_added,
                comparisons_added=result.comparisons_added, judgments_added=result.judgments_added,
                rows_skipped=result.rows_skipped, created_by=user if getattr(user, "pk", None) else None,
            )
    analyze_filled_tables(result)
    result.seconds = time.perf_counter() - started
    return result, writer.comparison_ids


def _write_batch(writer: _BatchWriter, batch: list[ParsedRow], inside_transaction: bool) -> None:
    if inside_transaction:
        writer.write(batch)
        return
    with transaction.atomic():  # SQLite: the write lock for one batch only
        writer.write(batch)
    time.sleep(SQLITE_PAUSE_SECONDS)  # let a waiting judgment take the lock before the next batch


SQLITE_PAUSE_SECONDS = 0.02


@contextmanager
def _spooled(rows: Iterable[ParsedRow]):
    """Read every row before anything is written (parsing is where a file is refused), keeping
    them in a temporary file, not in memory. Yields a function that reads them back."""
    with tempfile.TemporaryFile() as spool:
        count = 0
        for row in rows:
            pickle.dump(row, spool, protocol=pickle.HIGHEST_PROTOCOL)
            count += 1

        def read_back() -> Iterator[ParsedRow]:
            spool.seek(0)
            for _ in range(count):
                yield pickle.load(spool)  # noqa: S301 -- our own rows, written just above

        yield read_back


def analyze_filled_tables(result: ImportResult) -> list[str]:
    """ANALYZE, on PostgreSQL, each table this import added PREFLOOP_ANALYZE_AFTER_ROWS rows or more to;
    returns their names."""
    if not on_postgresql():
        return []
    threshold = getattr(settings, "PREFLOOP_ANALYZE_AFTER_ROWS", 5000)
    added = {"annotate_prompt": result.prompts_added, "annotate_candidate": result.candidates_added,
             "annotate_comparison": result.comparisons_added, "annotate_judgment": result.judgments_added}
    tables = [table for table, rows in added.items() if rows >= threshold]
    if tables:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE " + ", ".join(tables))
    return tables
