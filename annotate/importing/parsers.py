"""Understanding one record: a parser per format turns it into a ParsedRow, or names the bad field.

Pure functions of a dict, no database: `pairs` (and TRL's prompt/chosen/rejected), `hh`
(HH-RLHF dialogues), `alpaca_eval` (AlpacaEval judgments) and `candidates` (a prompt and a list
of responses, every pair compared).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from itertools import combinations
from typing import Any

MAX_CANDIDATES_PER_PROMPT = 16


class RowError(Exception):
    """A record that cannot be understood: which field, and what is wrong with it."""

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
