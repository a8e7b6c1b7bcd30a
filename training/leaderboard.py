"""The project's leaderboard: every source that answered (imported generators, the base model,
policy checkpoints) rated by Chatbot Arena's Bradley–Terry method (`rewards.bradley_terry`) from
the judgments, with bootstrap 95% intervals and battle counts.

A comparison's sides are named, in order of trust: by its RoundPair (the new policy and its
parent), by the checkpoint that generated a response (GeneratedCandidate), else by the
candidate's `source`. A pair with an unnamed side or one source on both sides is no battle.
Computed on request and cached under the project's judgment count and newest judgment id, so it
follows every new judgment and costs nothing between them.
"""

from __future__ import annotations

from django.core.cache import cache
from django.db.models import Count, Max

from annotate.importing import IMPORTED_USERNAME
from annotate.models import Candidate, Judgment, Project
from rewards.bradley_terry import arena_ratings

from .models import GeneratedCandidate, RoundPair

JUDGES = ("human", "all")  # human: judgments of people only; all: imported labels too
BOOTSTRAP_ROUNDS = 200
CACHE_SECONDS = 600


def _generated_names(project: Project) -> dict[int, str]:
    return dict(GeneratedCandidate.objects.filter(candidate__prompt__project=project)
                .values_list("candidate_id", "checkpoint__name"))


def sources_of(project: Project) -> list[str]:
    """Every source that answered in the project, rated or not."""
    names = set(Candidate.objects.filter(prompt__project=project).exclude(source="")
                .values_list("source", flat=True).distinct())
    names |= set(_generated_names(project).values())
    for policy, parent in RoundPair.objects.filter(comparison__project=project).values_list("policy__name",
                                                                                          "parent__name"):
        names |= {policy, parent}
    return sorted(names)


def battles_of(project: Project, judges: str = "human") -> list[tuple[str, str, str]]:
    """(source of side a, source of side b, winner a / b / tie) for each judgment."""
    if judges not in JUDGES:
        raise ValueError(f"judges must be one of {', '.join(JUDGES)}")
    rows = Judgment.objects.filter(project=project)
    if judges == "human":
        rows = rows.exclude(annotator__username=IMPORTED_USERNAME)
    rows = rows.values_list("comparison_id", "choice", "comparison__candidate_a_id", "comparison__candidate_b_id",
                            "comparison__candidate_a__source", "comparison__candidate_b__source")
    generated = _generated_names(project)
    rounds = {c: (new, policy, parent) for c, new, policy, parent in RoundPair.objects.filter(
        comparison__project=project).values_list("comparison_id", "new_candidate_id", "policy__name", "parent__name")}
    battles = []
    for comparison_id, choice, a_id, b_id, a_source, b_source in rows.iterator(chunk_size=5000):
        if comparison_id in rounds:
            new, policy, parent = rounds[comparison_id]
            a_name, b_name = (policy, parent) if new == a_id else (parent, policy)
        else:
            a_name, b_name = generated.get(a_id, a_source), generated.get(b_id, b_source)
        if a_name and b_name and a_name != b_name:
            battles.append((a_name, b_name, choice))
    return battles


def leaderboard(project: Project, judges: str = "human") -> dict:
    """Ratings best first, unranked sources last, with what they were computed from."""
    if judges not in JUDGES:
        raise ValueError(f"judges must be one of {', '.join(JUDGES)}")
    marks = Judgment.objects.filter(project=project).aggregate(n=Count("id"), last=Max("id"))
    key = f"prefloop:leaderboard:{project.pk}:{judges}:{marks['n']}:{marks['last']}"
    cached = cache.get(key)
    if cached is not None:
        return cached
    battles = battles_of(project, judges)
    ratings = arena_ratings(battles, sources_of(project), rounds=BOOTSTRAP_ROUNDS, seed=0)
    result = {
        "judges": judges, "battles": len(battles), "judgments": marks["n"],
        "method": "Bradley–Terry (logistic regression on battles, ties half a win), Elo scale 400, centred on "
                  f"1000; 95% intervals from {BOOTSTRAP_ROUNDS} bootstrap resamples of the battles",
        "rows": [r.as_dict() for r in ratings],
    }
    cache.set(key, result, CACHE_SECONDS)
    return result
