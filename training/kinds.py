"""Each job kind: its config, its queue, what is checked before queueing, and how a worker runs
it (a few lines around a Django-free runner)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from annotate.models import Candidate, Comparison, Project

from .jobs import LaunchRefused, Outcome, judged_comparisons, scratch_dir
from .models import CandidateScore, Checkpoint, Job
from .runners.base import Reporter, RunConfig, RunFailed
from .runners.reward_model import RewardModelConfig, train_reward_model
from .runners.score import ScoreConfig, score_items
from .snapshots import make_snapshot, snapshot_path


@dataclass(frozen=True)
class KindSpec:
    config: type[RunConfig]
    queue: str
    check: Callable[[Project, RunConfig], None]
    execute: Callable[[Job, RunConfig, Reporter], Outcome]
    label: str


def _criteria(project: Project) -> list[dict]:
    return list(project.criteria.values("key", "label", "scale_min", "scale_max"))


# --- reward model --------------------------------------------------------------------------------


def check_reward_model(project: Project, config: RewardModelConfig) -> None:
    judged = judged_comparisons(project)
    needed = int(config.min_pairs / (1 - config.eval_fraction)) + 1
    if judged < needed:
        raise LaunchRefused(
            f"The project has {judged} judged comparisons; training a reward model with min_pairs="
            f"{config.min_pairs} and eval_fraction={config.eval_fraction} needs at least {needed}. Collect more "
            "judgments (or import labelled pairs), or lower min_pairs.", "min_pairs")
    if config.rubric and not project.criteria.exists():
        raise LaunchRefused("rubric=true needs rubric criteria: add them in the project's settings.", "rubric")


def execute_reward_model(job: Job, config: RewardModelConfig, reporter: Reporter) -> Outcome:
    reporter.progress(0.01, "freezing a dataset snapshot")
    snapshot = make_snapshot(job.project, "raw")
    reporter.log(f"snapshot {snapshot.sha256} ({snapshot.rows} judgments up to #{snapshot.judgment_watermark})")
    output = scratch_dir(job)
    result = train_reward_model(snapshot_path(snapshot), output, config, criteria=_criteria(job.project),
                                reporter=reporter)
    metrics = {**result.metrics, "snapshot": snapshot.sha256}
    for name in ("eval_accuracy",):
        if metrics.get(name) is not None:
            reporter.metric(10**6, name, metrics[name])
    return Outcome(metrics=metrics, checkpoint_dir=output, checkpoint={
        "kind": Checkpoint.Kind.REWARD_MODEL, "name": f"rm-{job.project.slug}-job{job.pk}",
        "base_model": config.base_model, "config": config.to_dict(), "snapshot_ids": [snapshot.pk]})


# --- scoring -----------------------------------------------------------------------------------


def _reward_checkpoint(project: Project, checkpoint_id: int) -> Checkpoint:
    checkpoints = Checkpoint.objects.filter(project=project, kind=Checkpoint.Kind.REWARD_MODEL)
    checkpoint = checkpoints.filter(pk=checkpoint_id).first() if checkpoint_id else checkpoints.first()
    if checkpoint is None:
        raise LaunchRefused("No such reward-model checkpoint in this project: train one first.", "checkpoint")
    return checkpoint


def check_score(project: Project, config: ScoreConfig) -> None:
    _reward_checkpoint(project, config.checkpoint)


def execute_score(job: Job, config: ScoreConfig, reporter: Reporter) -> Outcome:
    checkpoint = _reward_checkpoint(job.project, config.checkpoint)
    candidates = Candidate.objects.filter(prompt__project=job.project)
    if config.scope == "open":
        open_ids = Comparison.objects.filter(project=job.project, status=Comparison.Status.OPEN)
        candidates = candidates.filter(pk__in=open_ids.values("candidate_a")) | candidates.filter(
            pk__in=open_ids.values("candidate_b"))
    items = [(c.pk, c.prompt.messages or c.prompt.text, c.text)
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


KINDS: dict[str, KindSpec] = {
    Job.Kind.REWARD_MODEL: KindSpec(RewardModelConfig, "cpu", check_reward_model, execute_reward_model,
                                    "Train a reward model"),
    Job.Kind.SCORE: KindSpec(ScoreConfig, "cpu", check_score, execute_score, "Score responses"),
}
