"""Streaming import of prompts, candidates, comparisons and labels.

Reading (`iter_records`) and understanding a row (`parse_*`) know nothing of the database; the
writer (`import_stream`) buffers a batch of parsed rows and writes it with a handful of bulk
queries, all inside one transaction: a malformed row anywhere rolls the whole file back, and
memory stays bounded by the batch size whatever the file's size.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import combinations
from typing import IO, Any

import ijson
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from .models import ImportBatch, Project, content_hash
from .queue import db_datetime

FORMATS = ("pairs", "hh", "alpaca_eval", "candidates")
LABEL_MODES = ("judgments", "gold", "ignore")
IMPORTED_USERNAME = "imported"
MAX_CANDIDATES_PER_PROMPT = 16


class ImportFailed(Exception):
    """A file that cannot be imported; the message says where and what."""


class RowError(Exception):
    def __init__(self, field_name: str | None, message: str):
        super().__init__(message)
        self.field_name = field_name
        self.message = message


@dataclass
class ParsedRow:
    """One input record, understood: a prompt, its responses and the pairs to compare."""

    prompt_text: str
    prompt_messages: list[dict] | None
    responses: list[tuple[str, str]]  # (text, source)
    pairs: list[tuple[int, int, str | None]]  # (index, index, label a/b/tie relative to the pair)
    external_id: str = ""
    # Set by callers that make comparisons on purpose (the API, generation rounds), not by files:
    priority: float = 0.0
    origin: str | None = None  # default: imported, or gold for a labelled pair under labels=gold
    round: int = 0
    votes_wanted: int | None = None  # default: the project's
    item: int | None = None  # the caller's index, to report which comparison each row became


@dataclass
class ImportResult:
    format: str
    rows: int = 0
    prompts_added: int = 0
    candidates_added: int = 0
    comparisons_added: int = 0
    judgments_added: int = 0
    rows_skipped: int = 0
    seconds: float = 0.0
    sha256: str = ""
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "notes"} | {"notes": self.notes[:20]}


# --- reading ---------------------------------------------------------------------------------


class _HashingReader(io.RawIOBase):
    """Passes bytes through while hashing them, so the file is read once."""

    def __init__(self, raw: IO[bytes]):
        self.raw = raw
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self.raw.read(len(buffer))
        if not chunk:
            return 0
        self.sha.update(chunk)
        buffer[: len(chunk)] = chunk
        return len(chunk)


def _open_text_stream(raw: IO[bytes]) -> tuple[IO[bytes], _HashingReader]:
    hashing = _HashingReader(raw)
    buffered = io.BufferedReader(hashing, buffer_size=1 << 16)
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        return io.BufferedReader(gzip.GzipFile(fileobj=buffered), buffer_size=1 << 16), hashing
    return buffered, hashing


def _location(kind: str, number: int) -> str:
    return f"{kind} {number}"


def iter_records(stream: IO[bytes]) -> Iterator[tuple[str, dict]]:
    """Yield (location, record) from JSON (an array of objects), JSONL or CSV, gzip or not.

    The container is recognised from the content, not the name: '[' starts a JSON array, '{' a
    JSONL file, anything else is CSV with a header row.
    """
    head = stream.peek(4096)[:4096]
    text_head = head.lstrip(codecs.BOM_UTF8).lstrip()
    if not text_head:
        raise ImportFailed("The file is empty.")
    first = text_head[:1]
    if first == b"[":
        number = 0
        try:
            for number, record in enumerate(ijson.items(stream, "item", use_float=True), start=1):
                if not isinstance(record, dict):
                    raise ImportFailed(f"record {number}: expected a JSON object, found {type(record).__name__}.")
                yield _location("record", number), record
        except ijson.JSONError as exc:
            raise ImportFailed(f"record {number + 1}: not valid JSON ({exc}).") from None
    elif first == b"{":
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
        for number, line in enumerate(_decoded_lines(text), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ImportFailed(
                    f"line {number}: not valid JSON ({exc.msg} at column {exc.colno}); "
                    "a JSONL file holds one object per line."
                ) from None
            if not isinstance(record, dict):
                raise ImportFailed(f"line {number}: expected a JSON object, found {type(record).__name__}.")
            yield _location("line", number), record
    else:
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
        reader = csv.DictReader(_decoded_lines(text))
        if not reader.fieldnames:
            raise ImportFailed("line 1: a CSV file needs a header row.")
        for record in reader:
            if None in record:
                raise ImportFailed(f"line {reader.line_num}: more values than header columns.")
            yield _location("line", reader.line_num), record


def _decoded_lines(text: io.TextIOWrapper) -> Iterator[str]:
    try:
        yield from text
    except UnicodeDecodeError as exc:
        raise ImportFailed(f"The file is not UTF-8 text ({exc.reason} at byte {exc.start}).") from None


# --- understanding a row --------------------------------------------------------------------


def _required_text(record: dict, name: str) -> str:
    value = record.get(name)
    if value is None or value == "":
        raise RowError(name, "is missing or empty")
    if not isinstance(value, str):
        raise RowError(name, f"must be text, found {type(value).__name__}")
    if not value.strip():
        raise RowError(name, "is blank")
    return value


def _response_text(record: dict, name: str) -> str:
    """A response must be there and be text; it may be empty (models do answer with nothing)."""
    value = record.get(name)
    if value is None:
        raise RowError(name, "is missing")
    if not isinstance(value, str):
        raise RowError(name, f"must be text, found {type(value).__name__}")
    return value


def _optional_text(record: dict, name: str) -> str:
    value = record.get(name)
    if value is None:
        return ""
    if isinstance(value, int | float | Decimal):
        return str(value)
    if not isinstance(value, str):
        raise RowError(name, f"must be text, found {type(value).__name__}")
    return value.strip()


def parse_label(value: Any, field_name: str = "preference") -> str | None:
    """a / b / tie, 1 / 2 / 1.5 (AlpacaEval's scale), or empty / 0 for "no label"."""
    if value is None:
        return None
    if isinstance(value, str):
        normalised = value.strip().lower()
        if normalised in ("", "0", "none", "null"):
            return None
        mapping = {"a": "a", "b": "b", "tie": "tie", "1": "a", "2": "b", "1.5": "tie", "1.0": "a", "2.0": "b"}
        if normalised in mapping:
            return mapping[normalised]
    elif isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        number = float(value)
        if number == 0:
            return None
        if number == 1:
            return "a"
        if number == 2:
            return "b"
        if number == 1.5:
            return "tie"
    raise RowError(field_name, f"{value!r} is not a preference: use a, b or tie (or 1, 2, 1.5; 0 or empty for none)")


def _chat_text(messages: list[dict]) -> str:
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def _chat_messages(value: Any, field_name: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise RowError(field_name, "must be a non-empty list of {role, content} messages")
    messages = []
    for position, message in enumerate(value, start=1):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise RowError(field_name, f"message {position} needs a text 'content'")
        role = message.get("role")
        if role not in ("system", "user", "assistant"):
            raise RowError(field_name, f"message {position} has role {role!r}; use system, user or assistant")
        messages.append({"role": role, "content": message["content"]})
    return messages


def _prompt_of(record: dict, name: str = "prompt") -> tuple[str, list[dict] | None]:
    value = record.get(name)
    if isinstance(value, list):
        messages = _chat_messages(value, name)
        return _chat_text(messages), messages
    return _required_text(record, name), None


def _response_of(record: dict, name: str) -> str:
    value = record.get(name)
    if isinstance(value, list):  # TRL's conversational format: the assistant turn(s)
        return "\n\n".join(m["content"] for m in _chat_messages(value, name))
    return _response_text(record, name)


def parse_pairs(record: dict) -> ParsedRow:
    """prompt, response_a, response_b [, preference, source_a, source_b, id] — or TRL's
    preference format: prompt, chosen, rejected (chosen wins)."""
    prompt_text, messages = _prompt_of(record)
    if "chosen" in record and "response_a" not in record:
        chosen, rejected = _response_of(record, "chosen"), _response_of(record, "rejected")
        return ParsedRow(prompt_text, messages, [(chosen, ""), (rejected, "")], [(0, 1, "a")],
                         _optional_text(record, "id"))
    response_a = _response_of(record, "response_a")
    response_b = _response_of(record, "response_b")
    label = parse_label(record.get("preference"))
    sources = [_optional_text(record, "source_a"), _optional_text(record, "source_b")]
    return ParsedRow(
        prompt_text, messages, [(response_a, sources[0]), (response_b, sources[1])], [(0, 1, label)],
        _optional_text(record, "id"),
    )


_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")


def _hh_turns(dialogue: str, field_name: str) -> list[dict]:
    parts = _HH_TURN.split(dialogue if dialogue.startswith("\n\n") else "\n\n" + dialogue)
    if parts[0].strip() or len(parts) < 3:
        raise RowError(field_name, 'is not an HH dialogue ("\\n\\nHuman: … \\n\\nAssistant: …")')
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[parts[i]], "content": parts[i + 1]} for i in range(1, len(parts), 2)]


def parse_hh(record: dict) -> ParsedRow:
    """HH-RLHF: `chosen` and `rejected` are whole dialogues; their shared turns are the prompt."""
    chosen = _hh_turns(_required_text(record, "chosen"), "chosen")
    rejected = _hh_turns(_required_text(record, "rejected"), "rejected")
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    while shared > 0 and chosen[shared - 1]["role"] != "user":
        shared -= 1
    if shared == 0:
        raise RowError("chosen", "shares no opening human turn with 'rejected'")
    if chosen[shared]["role"] != "assistant" or rejected[shared]["role"] != "assistant":
        raise RowError("chosen", "the two dialogues must diverge at an assistant turn")
    prompt = chosen[:shared]

    def response(turns: list[dict]) -> str:
        rest = turns[shared:]
        text = rest[0]["content"]
        for turn in rest[1:]:  # rare: the dialogues diverge before their last turn
            text += f"\n\n{'Human' if turn['role'] == 'user' else 'Assistant'}: {turn['content']}"
        return text

    return ParsedRow(_chat_text(prompt), prompt, [(response(chosen), ""), (response(rejected), "")],
                     [(0, 1, "a")], _optional_text(record, "id"))


def parse_alpaca_eval(record: dict) -> ParsedRow:
    """AlpacaEval judgments: instruction, output_1/2, generator_1/2, preference (1, 2, 0)."""
    return ParsedRow(
        _required_text(record, "instruction"),
        None,
        [
            (_response_text(record, "output_1"), _optional_text(record, "generator_1")),
            (_response_text(record, "output_2"), _optional_text(record, "generator_2")),
        ],
        [(0, 1, parse_label(record.get("preference")))],
        _optional_text(record, "id"),
    )


def parse_candidates(record: dict) -> ParsedRow:
    """A prompt and a list of responses (text, or {text, source}); every pair is compared."""
    prompt_text, messages = _prompt_of(record)
    raw = record.get("responses")
    if isinstance(raw, str):  # CSV cell holding a JSON list
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise RowError("responses", "must be a JSON list") from None
    if not isinstance(raw, list) or len(raw) < 2:
        raise RowError("responses", "must be a list of at least two responses")
    if len(raw) > MAX_CANDIDATES_PER_PROMPT:
        raise RowError("responses", f"has {len(raw)} responses; at most {MAX_CANDIDATES_PER_PROMPT} per prompt")
    responses = []
    for position, item in enumerate(raw, start=1):
        if isinstance(item, str):
            responses.append((item, ""))
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            source = item.get("source") or item.get("generator") or ""
            responses.append((item["text"], str(source)))
        else:
            raise RowError("responses", f"item {position} must be text or {{text, source}}")
    pairs = [(i, j, None) for i, j in combinations(range(len(responses)), 2)]
    return ParsedRow(prompt_text, messages, responses, pairs, _optional_text(record, "id"))


PARSERS: dict[str, Callable[[dict], ParsedRow]] = {
    "pairs": parse_pairs,
    "hh": parse_hh,
    "alpaca_eval": parse_alpaca_eval,
    "candidates": parse_candidates,
}


def detect_format(record: dict) -> str:
    keys = set(record)
    if {"output_1", "output_2"} <= keys:
        return "alpaca_eval"
    if "responses" in keys:
        return "candidates"
    if keys & {"response_a", "response_b"} or {"prompt", "chosen", "rejected"} <= keys:
        return "pairs"
    if {"chosen", "rejected"} <= keys:
        return "hh"
    raise ImportFailed(
        f"Cannot tell the format from the fields {sorted(keys)}. Accepted formats: "
        "pairs (prompt, response_a, response_b[, preference]; or prompt, chosen, rejected), "
        "hh (chosen, rejected dialogues), alpaca_eval (instruction, output_1, output_2, preference), "
        "candidates (prompt, responses)."
    )


# --- writing ---------------------------------------------------------------------------------


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
                        "votes_wanted"),
        "import_resolved": ("prompt_id", "a_id", "b_id", "label", "item", "priority", "origin", "round",
                            "votes_wanted"),
    }
    STAGE_TYPES = {"label": "varchar(8)", "text": "text", "messages": "text", "prompt_id": "bigint",
                   "a_id": "bigint", "b_id": "bigint", "item": "integer", "priority": "double precision",
                   "round": "integer", "votes_wanted": "integer", "origin": "varchar(16)"}

    def __init__(self, project: Project, labels: str, result: ImportResult):
        self.project = project
        self.labels = labels
        self.result = result
        self.annotator = imported_annotator() if labels == "judgments" else None
        self.is_chat = project.conversational
        self.pg = connection.vendor == "postgresql"
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
                    continue
                pairs[key] = (prompt_hash, hashes[i], hashes[j], label, row.item, row.priority, row.origin,
                              row.round, row.votes_wanted)
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
            INSERT INTO import_resolved (prompt_id, a_id, b_id, label, item, priority, origin, round, votes_wanted)
            SELECT p.id, CASE WHEN c1.id < c2.id THEN c1.id ELSE c2.id END,
                   CASE WHEN c1.id < c2.id THEN c2.id ELSE c1.id END,
                   CASE WHEN c1.id < c2.id OR s.label = 'tie' THEN s.label
                        WHEN s.label = 'a' THEN 'b' WHEN s.label = 'b' THEN 'a' END,
                   s.item, s.priority, s.origin, s.round, s.votes_wanted
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
        if self.annotator is None:
            return
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
    """Write parsed rows into `project` in one transaction, all or nothing, and record the batch.
    Returns the counts and, for rows that carry an `item`, the comparison each became."""
    if labels not in LABEL_MODES:
        raise ImportFailed(f"Unknown label mode {labels!r}. Accepted: {', '.join(LABEL_MODES)}.")
    batch_size = batch_size or settings.PREFLOOP_IMPORT_BATCH
    started = time.perf_counter()
    result = result or ImportResult(format=format)
    with transaction.atomic():
        writer = _BatchWriter(project, labels, result)
        batch: list[ParsedRow] = []
        for row in rows:
            batch.append(row)
            result.rows += 1
            if len(batch) >= batch_size:
                writer.write(batch)
                batch = []
        if batch:
            writer.write(batch)
        writer.close()
        if result.rows == 0:
            raise ImportFailed("There are no records. Nothing was imported.")
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
    result.seconds = time.perf_counter() - started
    return result, writer.comparison_ids


def _parse(stream: IO[bytes], format: str, result: ImportResult) -> Iterator[ParsedRow]:
    parser = None if format == "auto" else PARSERS[format]
    for location, record in iter_records(stream):
        if parser is None:
            result.format = detect_format(record)
            parser = PARSERS[result.format]
        try:
            yield parser(record)
        except RowError as exc:
            where = f", field '{exc.field_name}'" if exc.field_name else ""
            raise ImportFailed(f"{location}{where}: {exc.message}. Nothing was imported.") from None


def import_stream(
    project: Project,
    raw: IO[bytes],
    *,
    filename: str = "",
    format: str = "auto",
    labels: str = "judgments",
    user=None,
    batch_size: int | None = None,
) -> ImportResult:
    """Import one file into `project`, all or nothing. Raises ImportFailed naming the row and field."""
    if format != "auto" and format not in FORMATS:
        raise ImportFailed(f"Unknown format {format!r}. Accepted formats: auto, {', '.join(FORMATS)}.")
    stream, hashing = _open_text_stream(raw)
    result = ImportResult(format=format)
    try:
        import_rows(project, _parse(stream, format, result), labels=labels, user=user, filename=filename,
                    batch_size=batch_size, result=result, file_sha256=lambda: hashing.sha.hexdigest())
    except (EOFError, gzip.BadGzipFile, OSError) as exc:
        raise ImportFailed(f"The file could not be read ({exc}). Nothing was imported.") from None
    except csv.Error as exc:
        raise ImportFailed(f"The CSV file is malformed ({exc}). Nothing was imported.") from None
    return result


def import_path(project: Project, path, **kwargs) -> ImportResult:
    with open(path, "rb") as raw:
        return import_stream(project, raw, filename=str(path), **kwargs)


def iter_parsed(stream: IO[bytes], format: str = "auto") -> Iterable[ParsedRow]:
    """Parsed rows of a file without touching the database (evaluation, benchmarks)."""
    buffered, _ = _open_text_stream(stream)
    yield from _parse(buffered, format, ImportResult(format=format))
