"""The training side's signals for quality control (annotate.quality): the reward-model
ensemble's scores of responses, registered at start-up so judgments the models confidently
contradict are flagged, and the reward model's length bias shows beside the annotators'.

The online reward head (training.reward_head) plugs in through
`annotate.quality.register_online_head`: its stored per-judgment disagreement is the probability
it gives the answer the annotator did not choose.
"""

from __future__ import annotations

from django.db.models import Count, Max

from .models import CandidateScore, Checkpoint

ENSEMBLE_CHECKPOINTS = 3  # the latest reward models that scored the project's responses


def ensemble_scores(project, candidate_ids: list[int]) -> dict[int, dict[int, tuple[float, float]]]:
    """{checkpoint id: {candidate id: (score, spread)}} for the latest reward-model checkpoints."""
    latest = list(Checkpoint.objects.filter(project=project, kind=Checkpoint.Kind.REWARD_MODEL,
                                            scores__isnull=False).distinct().order_by("-id")
                  .values_list("id", flat=True)[:ENSEMBLE_CHECKPOINTS])
    models: dict[int, dict[int, tuple[float, float]]] = {pk: {} for pk in latest}
    for checkpoint_id, candidate_id, score, spread in CandidateScore.objects.filter(
            checkpoint_id__in=latest, candidate_id__in=candidate_ids).values_list(
            "checkpoint_id", "candidate_id", "score", "spread"):
        models[checkpoint_id][candidate_id] = (score, spread)
    return {pk: scores for pk, scores in models.items() if scores}


def scores_fingerprint(project) -> list:
    state = CandidateScore.objects.filter(checkpoint__project=project).aggregate(n=Count("id"), top=Max("id"))
    return [state["n"], state["top"]]


def online_head_against(project, rows) -> dict[int, float]:
    """{judgment id: P(the other answer is better)} by the online reward head, for the judgments
    it has seen (out-of-bag members where it has them); absent ones carry no signal."""
    from .reward_head import judgment_disagreement

    return judgment_disagreement(row.id for row in rows)


def connect() -> None:
    from annotate.quality import register_model_scores, register_online_head

    register_model_scores(ensemble_scores, scores_fingerprint)
    register_online_head(online_head_against)
