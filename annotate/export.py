"""Dataset export in the formats trainers read directly.

Rows are read with a server-side cursor and written line by line, so memory stays flat whatever
the size. A file is written once under a temporary name and renamed to the sha256 of its JSONL
content (each writer its own temporary name, so concurrent requests never clash): the name is the export's version, and the same data always yields the same version, so a
training run can name exactly what it learned from. A small index keyed by the request (options
plus a watermark of the project's judgments) lets a repeated request reuse the file.

Formats (chat-formatted rows where the project's prompts are conversations):
  trl-preference  prompt, chosen, rejected[, margin]     (TRL RewardTrainer, DPOTrainer)
  trl-unpaired    prompt, completion, label              (TRL KTOTrainer)
  rubric          prompt, response, one column per criterion (mean score)
  raw             every judgment with its annotator, sources, timing and shown side, and the
                  reviewer's decision on its comparison (`settled`, null when unsettled)

Votes on one comparison are resolved by `votes`:
  majority  the side with more votes wins; equal counts are a tie
  all       every vote is a row of its own
  weighted  strength-weighted: margin = |Σ sᵢ·dᵢ| / n, sᵢ = 1 slight, 2 clear (or unknown),
            3 decisive, dᵢ = +1 for the winner, −1 against, 0 for a tie; agreement and
            strength both raise it. Written to `margin`.
A tie is dropped (`ties=drop`) or, with `ties=keep`, written as a pair (margin 0 when weighted)
and every row of the file gets a boolean `tie` column (TRL ignores it; a tie-aware reward model
reads it).
An unpaired KTO row cannot express a tie, so trl-unpaired drops ties either way.

Quality control (annotate.quality): a comparison a reviewer settled is one row with the settled
label (a discarded one is left out), its votes kept in `raw`; `min_trust` leaves out the
judgments of annotators whose trust is below it, `exclude_flagged` the noise-flagged judgments and
those of flagged annotators, `settled_only` every comparison no reviewer settled.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Sum

from rewards.votes import VOTE_MODES, resolve

from .db import on_postgresql
from .models import Comparison, Judgment, Project
from .quality import Exclusions, QualityFilter, exclusions, fingerprint

EXPORT_FORMATS = ("trl-preference", "trl-unpaired", "rubric", "raw")
TIE_MODES = ("drop", "keep")
CURSOR_ROWS = 5000


class ExportError(ValueError):
    """Options that cannot be exported; the message names what to change."""


@dataclass(frozen=True)
class ExportOptions:
    format: str
    votes: str = "majority"
    ties: str = "drop"
    since_id: int | None = None
    until_id: int | None = None
    round: int | None = None
    origin: str | None = None
    min_trust: float | None = None
    exclude_flagged: bool = False
    settled_only: bool = False

    def __post_init__(self):
        if self.format not in EXPORT_FORMATS:
            raise ExportError(f"Unknown format {self.format!r}. Known formats: {', '.join(EXPORT_FORMATS)}.")
        if self.votes not in VOTE_MODES:
            raise ExportError(f"Unknown votes mode {self.votes!r}. Use one of: {', '.join(VOTE_MODES)}.")
        if self.ties not in TIE_MODES:
            raise ExportError(f"Unknown ties mode {self.ties!r}. Use one of: {', '.join(TIE_MODES)}.")
        if self.min_trust is not None and (isinstance(self.min_trust, bool) or not isinstance(self.min_trust, int | float)
                                           or not 0 <= self.min_trust <= 1):
            raise ExportError(f"min_trust must be a number from 0 to 1, not {self.min_trust!r}.")

    @property
    def quality(self) -> QualityFilter:
        return QualityFilter(self.min_trust, self.exclude_flagged, self.settled_only)


@dataclass
class ExportFile:
    path: Path
    version: str  # sha256 of the JSONL content
    rows: int
    options: dict = field(default_factory=dict)


# --- reading ----------------------------------------------------------------------------------

JUDGMENTS_SQL = """
SELECT j.id, j.comparison_id, j.choice, j.strength, p.text, p.messages, a.text, b.text
FROM annotate_judgment j
JOIN annotate_comparison c ON c.id = j.comparison_id
JOIN annotate_prompt p ON p.id = c.prompt_id
JOIN annotate_candidate a ON a.id = c.candidate_a_id
JOIN annotate_candidate b ON b.id = c.candidate_b_id
WHERE {where}
ORDER BY j.comparison_id, j.id"""

RAW_SQL = """
SELECT j.id, j.comparison_id, p.text, p.messages, a.text, b.text, a.source, b.source, u.username, j.choice,
       j.strength, j.rubric_scores, j.rationale, j.shown_left, j.ms_spent, j.created_at, c.origin, c.round
FROM annotate_judgment j
JOIN auth_user u ON u.id = j.annotator_id
JOIN annotate_comparison c ON c.id = j.comparison_id
JOIN annotate_prompt p ON p.id = c.prompt_id
JOIN annotate_candidate a ON a.id = c.candidate_a_id
JOIN annotate_candidate b ON b.id = c.candidate_b_id
WHERE {where}
ORDER BY j.id"""

COUNT_SQL = """
SELECT count(*)
FROM annotate_judgment j
JOIN annotate_comparison c ON c.id = j.comparison_id
WHERE {where}"""

RUBRIC_SIDE_SQL = """
SELECT c.candidate_{letter}_id, '{letter}', j.id, j.rubric_scores, p.text, p.messages, cand.text
FROM annotate_judgment j
JOIN annotate_comparison c ON c.id = j.comparison_id
JOIN annotate_candidate cand ON cand.id = c.candidate_{letter}_id
JOIN annotate_prompt p ON p.id = c.prompt_id
WHERE {where}"""
RUBRIC_SQL = RUBRIC_SIDE_SQL.replace("{letter}", "a") + " UNION ALL " + RUBRIC_SIDE_SQL.replace(
    "{letter}", "b") + " ORDER BY 1, 3"


def _where(project: Project, options: ExportOptions) -> tuple[str, list]:
    # A retired comparison was taken out by a manager: no dataset or training run reads it.
    clauses, params = ["j.project_id = %s", "c.status <> 'retired'"], [project.pk]
    if options.since_id is not None:
        clauses.append("j.id > %s")
        params.append(options.since_id)
    if options.until_id is not None:
        clauses.append("j.id <= %s")
        params.append(options.until_id)
    if options.round is not None:
        clauses.append("c.round = %s")
        params.append(options.round)
    if options.origin:
        clauses.append("c.origin = %s")
        params.append(options.origin)
    return " AND ".join(clauses), params


def _rows(sql: str, params: list, seen: Callable[[int], None] | None = None) -> Iterator[tuple]:
    """Rows from a server-side cursor on PostgreSQL (constant memory), in chunks elsewhere.
    Inside a transaction: outside one the cursor would be WITH HOLD, and PostgreSQL would
    materialise the whole result before the first row. On SQLite no transaction: there one takes
    the database's single write lock (IMMEDIATE), and judging would wait for the whole export; a
    plain SELECT reads one consistent snapshot in WAL mode. `seen(n)` hears of each chunk read."""
    with transaction.atomic() if on_postgresql() else nullcontext(), connection.chunked_cursor() as cursor:
        cursor.execute(sql, params)
        while True:
            chunk = cursor.fetchmany(CURSOR_ROWS)
            if not chunk:
                return
            yield from chunk
            if seen is not None:
                seen(len(chunk))


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


def prompt_value(text: str, messages, conversational: bool) -> str | list:
    """A prompt as snapshots carry it, and so as every reward model trained on it: chat messages in
    a conversational project (a plain-text prompt there becomes one user turn), else the text.
    Whatever later hands the project's prompts to a reward model (GRPO, scoring) uses this too.

    >>> prompt_value("Hi?", None, False), prompt_value("Hi?", None, True)
    ('Hi?', [{'role': 'user', 'content': 'Hi?'}])
    """
    if conversational:
        messages = _json(messages)
        return messages if messages else [{"role": "user", "content": text}]
    return text


class _Shapes:
    """Builds prompt / response values: text, or chat messages for a conversational project."""

    def __init__(self, project: Project):
        self.chat = project.conversational

    def prompt(self, text: str, messages) -> str | list:
        return prompt_value(text, messages, self.chat)

    def response(self, text: str) -> str | list:
        return [{"role": "assistant", "content": text}] if self.chat else text


def iter_rows(project: Project, options: ExportOptions, seen: Callable[[int], None] | None = None) -> Iterator[dict]:
    """The export's rows, in a stable order; `seen(n)` counts the judgment rows read (see judgment_rows)."""
    where, params = _where(project, options)
    shapes = _Shapes(project)
    left_out = exclusions(project, options.quality)
    if options.format == "raw":
        yield from _raw_rows(where, params, shapes, left_out, seen)
    elif options.format == "rubric":
        yield from _rubric_rows(project, where, params, shapes, left_out, seen)
    else:
        yield from _preference_rows(options, where, params, shapes, left_out, seen)


def judgment_rows(project: Project, options: ExportOptions) -> int:
    """How many rows iter_rows reads (the rubric format reads each judgment once per side)."""
    where, params = _where(project, options)
    with connection.cursor() as cursor:
        cursor.execute(COUNT_SQL.format(where=where), params)
        count = cursor.fetchone()[0]
    return count * 2 if options.format == "rubric" else count


def _kept(left_out: Exclusions, judgment_id: int, comparison_id: int) -> bool:
    if comparison_id in left_out.settled:  # the reviewer's label stands; its votes stay in raw
        return True
    return not left_out.settled_only and judgment_id not in left_out.judgment_ids


def _preference_rows(options: ExportOptions, where: str, params: list, shapes: _Shapes,
                     left_out: Exclusions, seen=None) -> Iterator[dict]:
    weighted = options.votes == "weighted"
    current, votes, texts = None, [], None

    def finish():
        settled = left_out.settled.get(current)
        if settled == "discard":
            return
        # A reviewer's decision is the comparison's label, whatever the votes said.
        yield from _pair_rows(options, [(settled, None)] if settled else votes, texts, shapes, weighted)

    for judgment_id, comparison_id, choice, strength, prompt_text, messages, a_text, b_text in _rows(
        JUDGMENTS_SQL.format(where=where), params, seen
    ):
        if comparison_id != current:
            if current is not None and (votes or current in left_out.settled):
                yield from finish()
            current, votes = comparison_id, []
            texts = (prompt_text, messages, a_text, b_text)
        if _kept(left_out, judgment_id, comparison_id):
            votes.append((choice, strength))
    if current is not None and (votes or current in left_out.settled):
        yield from finish()


def _pair_rows(options, votes, texts, shapes: _Shapes, weighted: bool) -> Iterator[dict]:
    prompt_text, messages, a_text, b_text = texts
    prompt = shapes.prompt(prompt_text, messages)
    for winner, margin in resolve(votes, options.votes):
        if winner == "tie" and (options.ties == "drop" or options.format == "trl-unpaired"):
            continue
        chosen, rejected = (b_text, a_text) if winner == "b" else (a_text, b_text)
        if options.format == "trl-unpaired":
            yield {"prompt": prompt, "completion": shapes.response(chosen), "label": True}
            yield {"prompt": prompt, "completion": shapes.response(rejected), "label": False}
            continue
        row = {"prompt": prompt, "chosen": shapes.response(chosen), "rejected": shapes.response(rejected)}
        if weighted:
            row["margin"] = 0.0 if winner == "tie" else margin
        if options.ties == "keep":
            row["tie"] = winner == "tie"
        yield row


def _raw_rows(where: str, params: list, shapes: _Shapes, left_out: Exclusions, seen=None) -> Iterator[dict]:
    for (judgment_id, comparison_id, prompt_text, messages, a_text, b_text, a_source, b_source, username, choice,
         strength, rubric, rationale, shown_left, ms_spent, created_at, origin, round_) in _rows(
            RAW_SQL.format(where=where), params, seen):
        if not _kept(left_out, judgment_id, comparison_id):
            continue
        yield {
            "id": judgment_id, "comparison": comparison_id, "prompt": shapes.prompt(prompt_text, messages),
            "response_a": a_text, "response_b": b_text, "source_a": a_source, "source_b": b_source,
            "annotator": username, "choice": choice, "strength": strength, "rubric_scores": _json(rubric) or {},
            "rationale": rationale, "shown_left": shown_left, "ms_spent": ms_spent,
            "created_at": created_at if isinstance(created_at, str) else created_at.isoformat(),
            "origin": origin, "round": round_, "settled": left_out.settled.get(comparison_id),
        }


def _rubric_rows(project: Project, where: str, params: list, shapes: _Shapes, left_out: Exclusions, seen=None) -> Iterator[dict]:
    keys = list(project.criteria.values_list("key", flat=True))
    current, sums, counts, texts = None, {}, {}, None

    def row() -> dict:
        prompt_text, messages, response = texts
        out = {"prompt": shapes.prompt(prompt_text, messages), "response": shapes.response(response)}
        for key in keys:
            out[key] = round(sums[key] / counts[key], 4) if counts.get(key) else None
        return out

    for candidate_id, letter, judgment_id, rubric, prompt_text, messages, response in _rows(
            RUBRIC_SQL.format(where=where), params + params, seen):
        scores = (_json(rubric) or {}) if judgment_id not in left_out.judgment_ids else {}
        if candidate_id != current:
            if current is not None and counts:
                yield row()
            current, sums, counts = candidate_id, {}, {}
            texts = (prompt_text, messages, response)
        for key in keys:
            value = (scores.get(key) or {}).get(letter)
            if isinstance(value, int | float):
                sums[key] = sums.get(key, 0) + value
                counts[key] = counts.get(key, 0) + 1
    if current is not None and counts:
        yield row()


# --- writing ----------------------------------------------------------------------------------


def export_dir() -> Path:
    path = Path(settings.MEDIA_ROOT) / "exports"
    (path / "index").mkdir(parents=True, exist_ok=True)
    return path


def _watermark(project: Project, options: ExportOptions) -> str:
    """What the export's content depends on, cheaply: the request and the judgments' identity."""
    stats = Judgment.objects.filter(project=project).aggregate(n=Count("id"), top=Max("id"), total=Sum("id"))
    retired = Comparison.objects.filter(project=project, status=Comparison.Status.RETIRED).aggregate(
        retired_n=Count("id"), retired_total=Sum("id"))
    stats = {key: int(value or 0) for key, value in {**stats, **retired}.items()}
    criteria = list(project.criteria.values_list("key", flat=True))
    quality = fingerprint(project, options.quality)
    data = json.dumps([project.pk, project.conversational, criteria, asdict(options), stats, quality], sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()


def write_export(project: Project, options: ExportOptions, seen: Callable[[int], None] | None = None) -> ExportFile:
    """The export as a JSONL file named by its content hash (reused when nothing changed).
    `seen(n)` hears of judgment rows read, out of judgment_rows(project, options)."""
    folder = export_dir()
    index = folder / "index" / _watermark(project, options)
    if index.exists():
        known = json.loads(index.read_text())
        path = folder / f"{known['version']}.jsonl"
        if path.exists():
            return ExportFile(path, known["version"], known["rows"], asdict(options))
    digest = hashlib.sha256()
    rows = 0
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".partial")
    try:
        with os.fdopen(handle, "wb", buffering=1 << 20) as out:
            for row in iter_rows(project, options, seen):
                line = orjson.dumps(row) + b"\n"
                digest.update(line)
                out.write(line)
                rows += 1
        version = digest.hexdigest()
        path = folder / f"{version}.jsonl"
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _write_atomically(index, json.dumps({"version": version, "rows": rows}).encode())
    return ExportFile(path, version, rows, asdict(options))


def _partial_beside(target: Path) -> Path:
    """A temporary name of this writer's own beside `target`, so concurrent writers never share one."""
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    os.close(handle)
    return Path(name)


def _write_atomically(target: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of it."""
    partial = _partial_beside(target)
    try:
        partial.write_bytes(data)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def gzip_copy(export: ExportFile) -> Path:
    """The same file gzipped (same version: it names the content, not the container)."""
    target = export.path.with_suffix(".jsonl.gz")
    if not target.exists():
        partial = _partial_beside(target)
        try:
            with open(export.path, "rb") as source, gzip.open(partial, "wb", compresslevel=6) as out:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return target


def parquet_copy(export: ExportFile) -> Path:
    """The same rows as Parquet, written in row groups so memory stays bounded. Object-valued
    columns (raw's rubric_scores) are stored as JSON text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = export.path.with_suffix(".parquet")
    if target.exists():
        return target
    partial = _partial_beside(target)
    writer = None
    try:
        with open(export.path, encoding="utf-8") as source:
            batch: list[dict] = []
            for line in source:
                row = json.loads(line)
                # Free-form objects (raw's rubric_scores) have no fixed Parquet schema: kept as JSON text.
                batch.append({k: json.dumps(v) if isinstance(v, dict) else v for k, v in row.items()})
                if len(batch) >= 10_000:
                    writer = _write_parquet_batch(pa, pq, writer, partial, batch)
                    batch = []
            if batch or writer is None:
                writer = _write_parquet_batch(pa, pq, writer, partial, batch)
        writer.close()
        writer = None
        os.replace(partial, target)
    finally:
        if writer is not None:
            writer.close()
        partial.unlink(missing_ok=True)
    return target


def _write_parquet_batch(pa, pq, writer, path: Path, batch: list[dict]):
    table = pa.Table.from_pylist(batch, schema=writer.schema if writer else None)
    if writer is None:
        writer = pq.ParquetWriter(path, table.schema)
    writer.write_table(table)
    return writer
