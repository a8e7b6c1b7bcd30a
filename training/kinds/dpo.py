"""The DPO kind: from a parent policy (named, else the best one of its base model: `choose_policy`), DPO on a snapshot of the
project's preference pairs (TRL's DPOTrainer through `runners.dpo`); the new policy's checkpoint
records its parent and snapshot."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from annotate.models import Project

from ..jobs import scratch_dir
from ..models import Checkpoint, Job
from ..registry import KindSpec, LaunchRefused, Outcome, register
from ..runners.base import Reporter
from ..runners.base import check as ensure
from ..runners.dpo import DPOConfig, train_dpo
from ..snapshots import make_snapshot, snapshot_path
from .common import choose_policy, judged_comparisons, policy_for


@dataclass
class DPOJobConfig(DPOConfig):
    parent: int = field(default=0, metadata={
        "help": "policy checkpoint to start from (0: the best of base_model's policies, else the base model)"})
    min_trust: float | None = field(default=None, metadata={
        "help": "leave out judgments of annotators whose trust is below this (0 to 1)"})
    exclude_flagged: bool = field(default=False, metadata={
        "help": "leave out noise-flagged judgments and those of flagged annotators"})
    settled_only: bool = field(default=False, metadata={"help": "train only on comparisons a reviewer settled"})

    def __post_init__(self):
        super().__post_init__()
        ensure(self.min_trust is None or 0 <= self.min_trust <= 1, "min_trust", "must be a number from 0 to 1")


def check(project: Project, config: DPOJobConfig) -> None:
    policy_for(project, config.parent, config.base_model)
    judged = judged_comparisons(project)
    if judged < config.min_pairs + 1:
        raise LaunchRefused(f"The project has {judged} judged comparisons; DPO with min_pairs={config.min_pairs} "
                            "needs more. Collect judgments first, or lower min_pairs.", "min_pairs")


def execute(job: Job, config: DPOJobConfig, reporter: Reporter) -> Outcome:
    choice = choose_policy(job.project, config.parent, config.base_model)
    parent = choice.checkpoint
    votes = "weighted" if config.margin_scale > 0 else "majority"
    reporter.progress(0.01, "freezing a dataset snapshot")
    snapshot = make_snapshot(job.project, "trl-preference", votes=votes, min_trust=config.min_trust,
                             exclude_flagged=config.exclude_flagged, settled_only=config.settled_only)
    reporter.log(f"snapshot {snapshot.sha256} ({snapshot.rows} pairs); starting from {parent.name} ({choice.reason})")
    result = train_dpo(snapshot_path(snapshot), scratch_dir(job), replace(config, base_model=parent.model_name),
                       reporter=reporter)
    return Outcome(metrics={**result.metrics, "snapshot": snapshot.sha256, "parent": parent.pk},
                   checkpoint_dir=result.output_dir, checkpoint={
                       "kind": Checkpoint.Kind.POLICY, "name": f"dpo-{job.project.slug}-job{job.pk}",
                       "base_model": parent.base_model, "parent_id": parent.pk, "config": config.to_dict(),
                       "snapshot_ids": [snapshot.pk]})


SPEC = register(KindSpec(Job.Kind.DPO, DPOJobConfig, "gpu", check, "DPO on the judgments", execute=execute))
