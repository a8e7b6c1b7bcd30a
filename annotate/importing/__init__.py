"""Streaming import of prompts, candidates, comparisons and labels: the names callers use.

`reading` turns a file's bytes into records and tells their format; `parsers` turns one record
into a ParsedRow (no database); `writer` writes batches of parsed rows with set-based SQL inside
one transaction; `files` joins the three for a whole file. A malformed row anywhere rolls the
whole file back, and memory stays bounded by the batch size whatever the file's size.
"""

from .files import import_path, import_stream, iter_parsed
from .parsers import (
    MAX_CANDIDATES_PER_PROMPT,
    PARSERS,
    ParsedRow,
    RowError,
    parse_alpaca_eval,
    parse_candidates,
    parse_hh,
    parse_label,
    parse_pairs,
)
from .reading import FORMATS, ImportFailed, detect_format, iter_records
from .writer import IMPORTED_USERNAME, LABEL_MODES, ImportResult, import_rows, imported_annotator

__all__ = [
    "FORMATS",
    "IMPORTED_USERNAME",
    "LABEL_MODES",
    "MAX_CANDIDATES_PER_PROMPT",
    "PARSERS",
    "ImportFailed",
    "ImportResult",
    "ParsedRow",
    "RowError",
    "detect_format",
    "import_path",
    "import_rows",
    "import_stream",
    "imported_annotator",
    "iter_parsed",
    "iter_records",
    "parse_alpaca_eval",
    "parse_candidates",
    "parse_hh",
    "parse_label",
    "parse_pairs",
]
