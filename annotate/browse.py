"""Browsing a project's comparisons: filters, search, sorting and cursor pages (the managers'
Comparisons page). Read-only query helpers; the bulk actions live in `actions.py`."""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from dataclasses import dataclass, field

from django.db.models import Exists, OuterRef, Q, QuerySet

from .models import Candidate, Comparison, Judgment, Origin, Project

PAGE_SIZE = 50
MAX_SEARCH = 200

# name: (label, field, descending)
SORTS = {
    "newest": ("newest first", "id", True),
    "oldest": ("oldest first", "id", False),
    "priority": ("highest priority first", "priority", True),
    "priority_low": ("lowest priority first", "priority", False),
    "votes": ("most votes first", "votes", True),
    "votes_low": ("fewest votes first", "votes", False),
}


@dataclass
class Filters:
    """What the page was asked for, cleaned: unknown values are dropped, never an error."""

    q: str = ""
    status: str = ""
    round: int | None = None
    origin: str = ""
    source: str = ""
    disagreement: bool = False
    flagged: bool = False  # a vote carries a noise flag (annotate.quality.judgment_flags)
    gold: str = ""  # "", "yes", "no"
    sort: str = "newest"
    cursor: str = ""
    problems: list[str] = field(default_factory=list)

    @classmethod
    def from_query(cls, query) -> Filters:
        found = cls()
        found.q = query.get("q", "").strip()[:MAX_SEARCH]
        status = query.get("status", "")
        found.status = status if status in Comparison.Status.values else ""
        raw_round = query.get("round", "").strip()
        if raw_round:
            if raw_round.isdigit() and len(raw_round) < 9:
                found.round = int(raw_round)
            else:
                found.problems.append(f"Round {raw_round!r} is not a whole number; showing every round.")
        origin = query.get("origin", "")
        found.origin = origin if origin in Origin.values else ""
        found.source = query.get("source", "").strip()[:200]
        found.disagreement = query.get("disagreement") == "1"
        found.flagged = query.get("flagged") == "1"
        gold = query.get("gold", "")
        found.gold = gold if gold in ("yes", "no") else ""
        sort = query.get("sort", "newest")
        found.sort = sort if sort in SORTS else "newest"
        found.cursor = query.get("cursor", "")
        return found

    def query_string(self, **changes) -> str:
        """This page's filters as a query string, with `changes` applied (None drops a key)."""
        from urllib.parse import urlencode

        values = {"q": self.q, "status": self.status, "round": "" if self.round is None else self.round,
                  "origin": self.origin, "source": self.source, "disagreement": "1" if self.disagreement else "",
                  "flagged": "1" if self.flagged else "",
                  "gold": self.gold, "sort": "" if self.sort == "newest" else self.sort}
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})


def _disagreement() -> Q:
    """Two different choices among a comparison's votes (a and b, or either and a tie)."""
    def has(choice):
        return Exists(Judgment.objects.filter(comparison=OuterRef("pk"), choice=choice))

    a, b, tie = has("a"), has("b"), has("tie")
    return (Q(a) & Q(b)) | (Q(a) & Q(tie)) | (Q(b) & Q(tie))


def filtered(project: Project, filters: Filters) -> QuerySet:
    rows = Comparison.objects.filter(project=project)
    if filters.status:
        rows = rows.filter(status=filters.status)
    if filters.round is not None:
        rows = rows.filter(round=filters.round)
    if filters.origin:
        rows = rows.filter(origin=filters.origin)
    if filters.source:
        rows = rows.filter(Q(candidate_a__source=filters.source) | Q(candidate_b__source=filters.source))
    if filters.gold == "yes":
        rows = rows.filter(gold_choice__isnull=False)
    elif filters.gold == "no":
        rows = rows.filter(gold_choice__isnull=True)
    if filters.disagreement:
        rows = rows.filter(_disagreement())
    if filters.flagged:
        from .quality import judgment_flags

        flagged = judgment_flags(project)
        rows = rows.filter(pk__in=Judgment.objects.filter(pk__in=list(flagged)).values("comparison_id"))
    if filters.q:
        texts = Candidate.objects.filter(prompt__project=project, text__icontains=filters.q).values("pk")
        rows = rows.filter(Q(prompt__text__icontains=filters.q) | Q(candidate_a__in=texts) | Q(candidate_b__in=texts))
    return rows


def _encode(value, pk: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([value, pk]).encode()).decode().rstrip("=")


def _decode(cursor: str):
    try:
        value, pk = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(pk, int) and isinstance(value, int | float):
            return value, pk
    except (ValueError, TypeError):
        pass
    return None


@dataclass
class Page:
    rows: list[Comparison]
    total: int
    next_cursor: str | None
    first: bool


def page_of(project: Project, filters: Filters, size: int = PAGE_SIZE) -> Page:
    """One page in the chosen order, after `filters.cursor` (the last row of the page before):
    keyset paging, so page 1,000 costs what page 1 costs and rows added meanwhile shift nothing."""
    rows = filtered(project, filters)
    total = rows.count()
    _, key, descending = SORTS[filters.sort]
    after = _decode(filters.cursor) if filters.cursor else None
    if after is not None:
        value, pk = after
        if descending:
            rows = rows.filter(Q(**{f"{key}__lt": value}) | Q(**{key: value, "pk__lt": pk}))
        else:
            rows = rows.filter(Q(**{f"{key}__gt": value}) | Q(**{key: value, "pk__gt": pk}))
    order = [f"-{key}", "-pk"] if descending else [key, "pk"]
    found = list(rows.select_related("prompt", "candidate_a", "candidate_b").order_by(*order)[: size + 1])
    more = len(found) > size
    found = found[:size]
    _attach_tallies(found)
    last = found[-1] if found else None
    next_cursor = _encode(getattr(last, key), last.pk) if more and last else None
    return Page(found, total, next_cursor, first=after is None)


def _attach_tallies(rows: list[Comparison]) -> None:
    """Each row's votes by choice (a / b / tie), in one query for the page."""
    tallies: dict[int, dict[str, int]] = defaultdict(lambda: {"a": 0, "b": 0, "tie": 0})
    ids = [row.pk for row in rows]
    for comparison_id, choice in Judgment.objects.filter(comparison_id__in=ids).values_list("comparison_id", "choice"):
        tallies[comparison_id][choice] += 1
    for row in rows:
        row.tally = tallies[row.pk]
        row.disagreement = sum(1 for n in row.tally.values() if n) > 1


def choices_for(project: Project) -> dict:
    """Values the filters offer: the project's rounds and the sources of its responses."""
    rounds = list(Comparison.objects.filter(project=project).values_list("round", flat=True).distinct()
                  .order_by("round"))
    sources = list(Candidate.objects.filter(prompt__project=project).exclude(source="")
                   .values_list("source", flat=True).distinct().order_by("source")[:200])
    return {"rounds": rounds, "sources": sources, "origins": Origin.choices, "statuses": Comparison.Status.choices,
            "sorts": [(name, label) for name, (label, _, _) in SORTS.items()]}
