"""Importing a file: read it, parse each record, write the rows, all or nothing.

The entry points that join reading, parsers and writer; a malformed row anywhere rolls the whole
file back and the error names its line or record and field.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterable, Iterator
from typing import IO

from django.conf import settings

from ..models import Project
from .parsers import PARSERS, ParsedRow, RowError
from .reading import FORMATS, ImportFailed, detect_format, iter_records, open_text_stream
from .writer import ImportResult, import_rows


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
    stream, hashing = open_text_stream(raw, max_unzipped=settings.PREFLOOP_MAX_UNZIPPED_BYTES)
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
    """Import the file at `path`; the keywords are import_stream's."""
    with open(path, "rb") as raw:
        return import_stream(project, raw, filename=str(path), **kwargs)


def iter_parsed(stream: IO[bytes], format: str = "auto") -> Iterable[ParsedRow]:
    """Parsed rows of a file without touching the database (evaluation, benchmarks)."""
    buffered, _ = open_text_stream(stream)
    yield from _parse(buffered, format, ImportResult(format=format))
