"""Quality of a project's judgments, read from the database: each annotator's statistics and
flags, noise flags on single judgments, the bias report, and which judgments the export and
training options (`min_trust`, `exclude_flagged`, `settled_only`) leave out. The statistics
themselves are pure functions in `rewards.quality`.

Signals from the training side plug in here, since `annotate` never imports `training`:
- `register_model_scores(fn, fingerprint)`: fn(project, candidate_ids) -> {model: {candidate_id:
  (score, spread)}}; training registers its reward-model checkpoints' CandidateScores.
- `register_online_head(fn)`: fn(project, rows) -> {judgment_id: P(the other answer is better)},
  the online reward head's per-judgment disagreement; with it, a reward-model flag needs the
  ensemble and the online head to agree. Nothing is registered until the online head is merged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from django.db.models import Count, Max
from django.db.models.functions import Length

from rewards import quality as q

from .importing import IMPORTED_USERNAME
from .models import Judgment, Membership, Project, Settlement
from .stats import people_only

DEFAULT_MIN_TRUST = 0.7


@dataclass(frozen=True)
class JudgmentRow:
    id: int
    comparison_id: int
    annotator_id: int
    username: str
    choice: str
    shown_left: str | None
    ms_spent: int | None
    gold_choice: str | None
    round: int
    candidate_a_id: int
    candidate_b_id: int
    a_chars: int
    b_chars: int


_model_scores: list[tuple[Callable, Callable | None]] = []
_online_heads: list[Callable] = []


def register_model_scores(fn: Callable, fingerprint: Callable | None = None) -> None:
    """Plug in reward-model scores: fn(project, candidate_ids) -> {model: {candidate_id: (score, spread)}}."""
    if all(existing is not fn for existing, _ in _model_scores):
        _model_scores.append((fn, fingerprint))


def register_online_head(fn: Callable) -> None:
    """Plug in the online head: fn(project, rows) -> {judgment_id: P(the other answer is better)}."""
    if fn not in _online_heads:
        _online_heads.append(fn)


def judgment_rows(project: Project, *, include_simulated: bool = True) -> list[JudgmentRow]:
    """Every judgment of the project; the statistics of people pass include_simulated=False."""
    judgments = Judgment.objects.filter(project=project)
    if not include_simulated:
        judgments = people_only(judgments, project)
    values = (judgments
              .annotate(a_chars=Length("comparison__candidate_a__text"), b_chars=Length("comparison__candidate_b__text"))
              .order_by("id")
              .values_list("id", "comparison_id", "annotator_id", "annotator__username", "choice", "shown_left",
                           "ms_spent", "comparison__gold_choice", "comparison__round", "comparison__candidate_a_id",
                           "comparison__candidate_b_id", "a_chars", "b_chars"))
    return [JudgmentRow(*row) for row in values]


def _votes_by_comparison(rows: list[JudgmentRow]) -> dict[int, list[JudgmentRow]]:
    by_comparison: dict[int, list[JudgmentRow]] = defaultdict(list)
    for row in rows:
        by_comparison[row.comparison_id].append(row)
    return by_comparison


def _chose_left(row: JudgmentRow) -> bool:
    return row.choice == row.shown_left


def annotator_figures(project: Project, rows: list[JudgmentRow] | None = None, *,
                      include_simulated: bool = False) -> list[q.AnnotatorFigures]:
    """Every annotator's figures and flags (the imported labels are votes, not an annotator), from
    `rows` or else from the judgments of people (and of simulated annotators if asked)."""
    rows = judgment_rows(project, include_simulated=include_simulated) if rows is None else rows
    by_comparison = _votes_by_comparison(rows)
    gold = {r.comparison_id: r.gold_choice for r in rows if r.gold_choice in ("a", "b")}
    votes = {cid: {r.annotator_id: r.choice for r in group if r.choice in ("a", "b")}
             for cid, group in by_comparison.items()}
    trust = q.dawid_skene(votes, gold)
    figures: dict[int, q.AnnotatorFigures] = {}
    for row in rows:
        if row.username == IMPORTED_USERNAME:
            continue
        f = figures.setdefault(row.annotator_id, q.AnnotatorFigures(username=row.username))
        f.judgments += 1
        if row.gold_choice is not None:
            f.gold_seen += 1
            f.gold_right += row.choice == row.gold_choice
        others = [o.choice for o in by_comparison[row.comparison_id] if o.annotator_id != row.annotator_id]
        if others:
            counts = sorted(((others.count(c), c) for c in set(others)), reverse=True)
            if len(counts) == 1 or counts[0][0] > counts[1][0]:  # a strict plurality among the others
                f.majority_seen += 1
                f.majority_agree += row.choice == counts[0][1]
        if row.choice != "tie" and row.shown_left:
            f.decided += 1
            f.left += _chose_left(row)
        if row.ms_spent is not None:
            seconds = row.ms_spent / 1000
            f.seconds.append(seconds)
            f.timed += 1
            f.too_fast += seconds < q.min_read_seconds(row.a_chars + row.b_chars)
    for annotator_id, f in figures.items():
        if annotator_id in trust:
            f.trust, f.soft_right, f.soft_wrong = trust[annotator_id]
    ordered = sorted(figures.values(), key=lambda f: (-f.judgments, f.username))
    return q.flag_annotators(ordered)


def _annotator_dicts(project: Project, figures: list[q.AnnotatorFigures], include_simulated: bool) -> list[dict]:
    simulated = set(Membership.objects.filter(project=project, simulated=True).values_list("user__username", flat=True)
                    if include_simulated else ())
    return [{**f.as_dict(), "simulated": f.username in simulated} for f in figures]


def annotator_statistics(project: Project, *, include_simulated: bool = False) -> list[dict]:
    """The rows of GET /api/v1/projects/SLUG/annotators/ and of the project page: people only,
    unless simulated annotators are asked for (then marked `simulated`)."""
    return _annotator_dicts(project, annotator_figures(project, include_simulated=include_simulated),
                            include_simulated)


def _scores(project: Project, candidate_ids: list[int]) -> list[dict[int, tuple[float, float]]]:
    """One {candidate_id: (score, spread)} per reward model, from every registered provider."""
    models = []
    for fn, _ in _model_scores:
        models.extend(fn(project, candidate_ids).values())
    return models


def _all_scores(project: Project, rows: list[JudgmentRow]) -> list[dict[int, tuple[float, float]]]:
    return _scores(project, sorted({r.candidate_a_id for r in rows} | {r.candidate_b_id for r in rows}))


def _model_margins(project: Project, rows: list[JudgmentRow], models=None) -> dict[int, list[float]]:
    """Per judgment (a/b only), each model's conservative margin for the other answer: its score
    minus the chosen one's, less both ensemble spreads (a model unsure of its scores counts less)."""
    if not _model_scores:
        return {}
    models = _all_scores(project, rows) if models is None else models
    margins: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        if r.choice == "tie":
            continue
        chosen_id, other_id = ((r.candidate_a_id, r.candidate_b_id) if r.choice == "a"
                               else (r.candidate_b_id, r.candidate_a_id))
        for scores in models:
            if chosen_id in scores and other_id in scores:
                (chosen, s1), (other, s2) = scores[chosen_id], scores[other_id]
                margins[r.id].append(other - chosen - s1 - s2)
    return margins


def judgment_flags(project: Project, rows: list[JudgmentRow] | None = None, models=None) -> dict[int, tuple[str, float]]:
    """Noise flags: judgment id -> (reason, strength). Reasons: `majority` (a strong majority of
    the other votes went the other way) and `reward_model` (the reward-model ensemble, and the
    online head when there is one, confidently prefer the other answer)."""
    rows = judgment_rows(project) if rows is None else rows
    by_comparison = _votes_by_comparison(rows)
    margins = _model_margins(project, rows, models)
    online: dict[int, float] = {}
    for fn in _online_heads:
        online.update(fn(project, rows))
    flags = {}
    for r in rows:
        others = [o.choice for o in by_comparison[r.comparison_id] if o.annotator_id != r.annotator_id]
        against = sum(c != r.choice for c in others)
        majority = q.majority_against(against, len(others) - against) if len(others) >= 2 else None
        flag = q.noise_flag(majority, q.model_against(margins.get(r.id, [])), online.get(r.id))
        if flag is not None:
            flags[r.id] = flag
    return flags


# --- what the export and training options leave out -------------------------------------------


@dataclass(frozen=True)
class QualityFilter:
    """Options of export and training snapshots. Settled comparisons always take the reviewer's
    label; `settled_only` keeps only them."""

    min_trust: float | None = None
    exclude_flagged: bool = False
    settled_only: bool = False

    def __post_init__(self):
        if self.min_trust is not None and (isinstance(self.min_trust, bool) or not 0 <= self.min_trust <= 1):
            raise ValueError("min_trust must be a number from 0 to 1.")

    @property
    def active(self) -> bool:
        return self.min_trust is not None or self.exclude_flagged or self.settled_only


@dataclass
class Exclusions:
    judgment_ids: frozenset[int]
    settled: dict[int, str]  # comparison id -> a / b / tie / discard
    settled_only: bool


def settled_choices(project: Project) -> dict[int, str]:
    from .models import Comparison

    return dict(Comparison.objects.filter(project=project, settled_choice__isnull=False)
                .values_list("id", "settled_choice"))


def exclusions(project: Project, options: QualityFilter) -> Exclusions:
    """Judgments the options leave out: those of annotators whose trust is below `min_trust`
    (unknown trust is kept), and with `exclude_flagged` the noise-flagged judgments and every
    judgment of a flagged annotator. Simulated annotators' judgments count here like anyone's: in
    a benchmark they are the data the loop trains on."""
    settled = settled_choices(project)
    if not (options.min_trust is not None or options.exclude_flagged):
        return Exclusions(frozenset(), settled, options.settled_only)
    rows = judgment_rows(project)
    flags = judgment_flags(project, rows) if options.exclude_flagged else {}
    return Exclusions(_left_out(rows, annotator_figures(project, rows), flags, options), settled,
                      options.settled_only)


def _left_out(rows: list[JudgmentRow], figures: list[q.AnnotatorFigures], flags: dict, options: QualityFilter):
    by_name = {f.username: f for f in figures}
    excluded = set()
    for r in rows:
        f = by_name.get(r.username)
        if f is None:
            continue
        if options.min_trust is not None and f.trust is not None and f.trust < options.min_trust:
            excluded.add(r.id)
        if options.exclude_flagged and f.flags:
            excluded.add(r.id)
    if options.exclude_flagged:
        excluded |= set(flags)
    return frozenset(excluded)


def quality_summary(project: Project, min_trust: float = DEFAULT_MIN_TRUST, *, include_simulated: bool = False) -> dict:
    """Everything the project page shows, from one read of the judgments: annotator rows, how many
    judgments each option removes (settled_only: those on unsettled comparisons), the bias report.
    Judgments of simulated annotators only when asked."""
    rows = judgment_rows(project, include_simulated=include_simulated)
    figures = annotator_figures(project, rows)
    models = _all_scores(project, rows) if _model_scores else []
    flags = judgment_flags(project, rows, models)
    settled = settled_choices(project)
    effects = {
        "judgments": len(rows),
        "min_trust": min_trust,
        "min_trust_removes": len(_left_out(rows, figures, flags, QualityFilter(min_trust=min_trust))),
        "exclude_flagged_removes": len(_left_out(rows, figures, flags, QualityFilter(exclude_flagged=True))),
        "settled_only_removes": sum(r.comparison_id not in settled for r in rows),
        "settled": len(settled),
        "flagged_judgments": len(flags),
    }
    return {"annotators": _annotator_dicts(project, figures, include_simulated), "effects": effects,
            "bias": bias_report(project, rows, figures, models)}


def option_effects(project: Project, min_trust: float = DEFAULT_MIN_TRUST) -> dict:
    """How many judgments each option removes (settled_only: those on unsettled comparisons)."""
    return quality_summary(project, min_trust)["effects"]


def fingerprint(project: Project, options: QualityFilter) -> list:
    """What the options' outcome depends on beyond the judgments: settlements and model scores."""
    state = Settlement.objects.filter(comparison__project=project).aggregate(n=Count("id"), top=Max("id"))
    parts: list = [state["n"], state["top"]]
    if options.exclude_flagged:
        parts += [fp(project) for _, fp in _model_scores if fp is not None]
    return parts


# --- bias report --------------------------------------------------------------------------------


def _share(successes: int, n: int) -> dict:
    low, high = q.wilson_interval(successes, n)
    return {"share": successes / n if n else None, "low": low, "high": high, "n": n}


def bias_report(project: Project, rows: list[JudgmentRow] | None = None,
                figures: list[q.AnnotatorFigures] | None = None, models=None, *, include_simulated: bool = False) -> dict:
    """Position bias (share of left choices with a 95% Wilson interval) of the project, per
    annotator and per round; length bias: how often the longer answer wins, for the judgments and
    for the reward models' scores of the same pairs. Without `rows`, people's judgments (and
    simulated annotators' if asked)."""
    rows = judgment_rows(project, include_simulated=include_simulated) if rows is None else rows
    figures = annotator_figures(project, rows) if figures is None else figures
    decided = [r for r in rows if r.choice != "tie" and r.shown_left]
    per_round: dict[int, list[JudgmentRow]] = defaultdict(list)
    for r in decided:
        per_round[r.round].append(r)
    longer = [r for r in rows if r.choice != "tie" and r.a_chars != r.b_chars]
    longer_wins = sum((r.choice == "a") == (r.a_chars > r.b_chars) for r in longer)
    model = {"share": None, "low": None, "high": None, "n": 0}
    if _model_scores:
        pairs = {(r.candidate_a_id, r.candidate_b_id, r.a_chars > r.b_chars) for r in longer}
        models = _all_scores(project, rows) if models is None else models
        scored = [(scores[a][0] > scores[b][0]) == a_longer
                  for scores in models for a, b, a_longer in pairs if a in scores and b in scores]
        model = _share(sum(scored), len(scored))
    return {
        "position": _share(sum(map(_chose_left, decided)), len(decided)),
        "annotators": [{"username": f.username, **_share(f.left, f.decided), "p_value": f.left_p,
                        "p_adjusted": f.left_p_adjusted} for f in figures],
        "rounds": [{"round": k, **_share(sum(map(_chose_left, v)), len(v))} for k, v in sorted(per_round.items())],
        "length": {"judgments": _share(longer_wins, len(longer)), "reward_model": model},
    }
