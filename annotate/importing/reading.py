"""Reading an import file: bytes to records, and which format those records are in.

JSON (an array of objects), JSONL or CSV, gzipped or not, recognised from the content; the file
is hashed as it is read, so it is read once. Nothing here knows what a record means or touches
the database.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import json
from collections.abc import Iterator
from typing import IO

import ijson

FORMATS = ("pairs", "hh", "alpaca_eval", "candidates")


class ImportFailed(Exception):
    """A file that cannot be imported; the message says where and what."""


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


class _CappedReader(io.RawIOBase):
    """Passes unzipped bytes through and fails once more than `limit` came out (a gzip bomb)."""

    def __init__(self, raw: IO[bytes], limit: int):
        self.raw, self.limit, self.count = raw, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self.raw.read(len(buffer))
        self.count += len(chunk)
        if self.count > self.limit:
            raise ImportFailed(f"The gzipped file unzips to more than {self.limit // (1024 * 1024)} MB "
                               "(PREFLOOP_MAX_UNZIPPED_MB). Nothing was imported.")
        buffer[: len(chunk)] = chunk
        return len(chunk)


def open_text_stream(raw: IO[bytes], max_unzipped: int | None = None) -> tuple[IO[bytes], _HashingReader]:
    """A buffered byte stream of the file, un-gzipped if it is gzip (at most `max_unzipped`
    bytes of it), and the reader hashing it."""
    hashing = _HashingReader(raw)
    buffered = io.BufferedReader(hashing, buffer_size=1 << 16)
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        unzipped = gzip.GzipFile(fileobj=buffered)
        if max_unzipped is not None:
            unzipped = _CappedReader(unzipped, max_unzipped)
        return io.BufferedReader(unzipped, buffer_size=1 << 16), hashing
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


def detect_format(record: dict) -> str:
    """The format of a file, told from the fields of its first record."""
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
