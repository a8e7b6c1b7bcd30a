"""The reward-model kind: freeze a snapshot of the judgments, train on it (TRL's RewardTrainer
through `runners.reward_model`), register the checkpoint with the snapshot behind it."""

from __future__ import annotations

from annotate.models import Project

from ..jobs import scratch_dir
from ..models import Checkpoint, Job
from ..registry import KindSpec, LaunchRefused, Outcome, register
from ..runners.base import Reporter
from ..runners.reward_model import RewardModelConfig, train_reward_model
from ..snapshots import make_snapshot, snapshot_path
from .common import criteria, judged_comparisons


def check(project: Project, config: RewardModelConfig) -> None:
    judged = judged_comparisons(project)
    needed = int(config.min_pairs / (1 - config.eval_fraction)) + 1
    if judged < needed:
        raise LaunchRefused(
            f"The project has {judged} judged comparisons; training a reward model with min_pairs="
            f"{config.min_pairs} and eval_fraction={config.eval_fraction} needs at least {needed}. Collect more "
            "judgments (or import labelled pairs), or lower min_pairs.", "min_pairs")
    if config.rubric and not project.criteria.exists():
        raise LaunchRefused("rubric=true needs rubric criteria: add them in the project's settings.", "rubric")


def execute(job: Job, config: RewardModelConfig, reporter: Reporter) -> Outcome:
    reporter.progress(0.01, "freezing a dataset snapshot")
    snapshot = make_snapshot(job.project, "raw", min_trust=config.min_trust, exclude_flagged=config.exclude_flagged,
                             settled_only=config.settled_only)
    reporter.log(f"snapshot {snapshot.sha256} ({snapshot.rows} judgments up to #{snapshot.judgment_watermark})")
    output = scratch_dir(job)
    result = train_reward_model(snapshot_path(snapshot), output, config, criteria=criteria(job.project),
                                reporter=reporter)
    metrics = {**result.metrics, "snapshot": snapshot.sha256}
    for name in ("eval_accuracy",):
        if metrics.get(name) is not None:
            reporter.metric(10**6, name, metrics[name])
    return Outcome(metrics=metrics, checkpoint_dir=output, checkpoint={
        "kind": Checkpoint.Kind.REWARD_MODEL, "name": f"rm-{job.project.slug}-job{job.pk}",
        "base_model": config.base_model, "config": config.to_dict(), "snapshot_ids": [snapshot.pk]})


SPEC = register(KindSpec(Job.Kind.REWARD_MODEL, RewardModelConfig, "cpu", check, "Train a reward model",
                         execute=execute))
