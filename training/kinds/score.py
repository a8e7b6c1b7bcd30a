"""The score kind: a reward model scores the project's responses (all, or those in open
comparisons); the scores are stored per candidate and checkpoint."""

from __future__ import annotations

import json

from annotate.export import prompt_value
from annotate.models import Candidate, Comparison, Project

from ..models import CandidateScore, Job
from ..registry import KindSpec, Outcome, register
from ..runners.base import Reporter, RunFailed
from ..runners.score import ScoreConfig, score_items
from .common import reward_checkpoint


def check(project: Project, config: ScoreConfig) -> None:
    reward_checkpoint(project, config.checkpoint)


def execute(job: Job, config: ScoreConfig, reporter: Reporter) -> Outcome:
    checkpoint = reward_checkpoint(job.project, config.checkpoint)
    candidates = Candidate.objects.filter(prompt__project=job.project)
    if config.scope == "open":
        open_ids = Comparison.objects.filter(project=job.project, status=Comparison.Status.OPEN)
        candidates = candidates.filter(pk__in=open_ids.values("candidate_a")) | candidates.filter(
            pk__in=open_ids.values("candidate_b"))
    items = [(c.pk, prompt_value(c.prompt.text, c.prompt.messages, job.project.conversational), c.text)
             for c in candidates.select_related("prompt").order_by("pk")]
    if not items:
        raise RunFailed("There are no responses to score in this project.")
    reporter.log(f"scoring {len(items)} responses with checkpoint #{checkpoint.pk}")
    scored = score_items(checkpoint.directory, items, config, reporter)
    CandidateScore.objects.bulk_create(
        [CandidateScore(candidate_id=i, checkpoint=checkpoint, score=m, spread=s) for i, m, s in scored],
        update_conflicts=True, unique_fields=["candidate", "checkpoint"], update_fields=["score", "spread"])
    values = [m for _, m, _ in scored]
    return Outcome(metrics={"scored": len(scored), "checkpoint": checkpoint.pk,
                            "mean_score": round(sum(values) / len(values), 4),
                            "config": json.loads(json.dumps(config.to_dict()))})


SPEC = register(KindSpec(Job.Kind.SCORE, ScoreConfig, "cpu", check, "Score responses", execute=execute))
