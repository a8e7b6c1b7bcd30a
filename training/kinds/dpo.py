"""The DPO kind: from a parent policy (named, else the best one of its base model: `choose_policy`), DPO on a snapshot of the
project's preference pairs (TRL's DPOTrainer through `runners.dpo`); the new policy's checkpoint
records its parent and snapshot.

Which pairs (`train_on`): all judged comparisons; only the newest round's (the policy's own
answers against its parent's); or all, each pair's winner decided by a reward model instead of
the votes (`relabelled`). bench/dpo_data.py measures the three (docs/benchmarks.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from django.db.models import Max

from annotate.models import Comparison, Judgment, Project

from ..jobs import job_dir, scratch_dir
from ..models import Checkpoint, Job
from ..registry import KindSpec, LaunchRefused, Outcome, register
from ..runners.base import Reporter
from ..runners.base import check as ensure
from ..runners.dpo import DPOConfig, load_preference_rows, train_dpo
from ..snapshots import make_snapshot, snapshot_path
from .common import choose_policy, judged_comparisons, policy_for, reward_checkpoint


@dataclass
class DPOJobConfig(DPOConfig):
    parent: int = field(default=0, metadata={
        "help": "policy checkpoint to start from (0: the best of base_model's policies, else the base model)"})
    min_trust: float | None = field(default=None, metadata={
        "help": "leave out judgments of annotators whose trust is below this (0 to 1)"})
    exclude_flagged: bool = field(default=False, metadata={
        "help": "leave out noise-flagged judgments and those of flagged annotators"})
    settled_only: bool = field(default=False, metadata={"help": "train only on comparisons a reviewer settled"})
    train_on: str = field(default="all", metadata={"help": "which judged pairs it trains on", "choices": {
        "all": "every judged comparison of the project",
        "latest_round": "the newest round's comparisons only (a policy's answers against its parent's)",
        "relabelled": "every judged comparison but ties, its winner decided by the reward model (`reward_model`)"}})
    reward_model: int = field(default=0, metadata={
        "help": "reward-model checkpoint that relabels, with train_on=relabelled (0: the newest)"})

    def __post_init__(self):
        super().__post_init__()
        ensure(self.min_trust is None or 0 <= self.min_trust <= 1, "min_trust", "must be a number from 0 to 1")
        ensure(self.train_on in TRAIN_ON, "train_on", f"use one of {', '.join(TRAIN_ON)}")
        ensure(self.reward_model >= 0, "reward_model", "must be a checkpoint id, or 0")


TRAIN_ON = ("all", "latest_round", "relabelled")


def latest_round(project: Project) -> tuple[int, int]:
    """The newest round with judged comparisons (0: none yet), and how many of its comparisons are
    judged. A round whose answers are still in the queue, unjudged, has nothing to train on yet."""
    judged = Judgment.objects.filter(project=project, comparison__round__gt=0).exclude(
        comparison__status=Comparison.Status.RETIRED)
    top = judged.aggregate(top=Max("comparison__round"))["top"] or 0
    count = judged.filter(comparison__round=top).values("comparison_id").distinct().count() if top else 0
    return top, count


def relabel(rows: list[dict], reward: Checkpoint) -> tuple[list[dict], int]:
    """Each pair's chosen and rejected as the reward model orders them; how many it swapped. Ties
    in its scores keep the votes' order."""
    from rewards.scoring import RewardModel

    model = RewardModel(reward.directory)
    prompts = [row["prompt"] for row in rows]
    chosen = model.score(prompts, [row["chosen"] for row in rows]).mean
    rejected = model.score(prompts, [row["rejected"] for row in rows]).mean
    out, swapped = [], 0
    for row, c, r in zip(rows, chosen, rejected, strict=True):
        if r > c:
            row = {**row, "chosen": row["rejected"], "rejected": row["chosen"]}
            row.pop("margin", None)  # the votes' margin belongs to the votes' order
            swapped += 1
        out.append(row)
    return out, swapped


def check(project: Project, config: DPOJobConfig) -> None:
    policy_for(project, config.parent, config.base_model)
    if config.train_on == "relabelled" or config.reward_model:
        reward_checkpoint(project, config.reward_model, "reward_model")
    newest, judged = latest_round(project) if config.train_on == "latest_round" else (0, 0)
    subject = f"Round {newest} (train_on=latest_round) has" if newest else "The project has"
    if not newest:  # no round judged yet: latest_round trains on all pairs, as its job says
        judged = judged_comparisons(project)
    if judged < config.min_pairs + 1:
        raise LaunchRefused(f"{subject} {judged} judged comparisons; DPO with min_pairs={config.min_pairs} "
                            "needs more. Collect judgments first, or lower min_pairs.", "min_pairs")


def execute(job: Job, config: DPOJobConfig, reporter: Reporter) -> Outcome:
    choice = choose_policy(job.project, config.parent, config.base_model)
    parent = choice.checkpoint
    votes = "weighted" if config.margin_scale > 0 else "majority"
    reporter.progress(0.01, "freezing a dataset snapshot")
    options = {"votes": votes, "min_trust": config.min_trust, "exclude_flagged": config.exclude_flagged,
               "settled_only": config.settled_only}
    extra, which = {"train_on": config.train_on}, ""
    if config.train_on == "latest_round":
        newest, _ = latest_round(job.project)
        if newest:
            options["round"] = extra["round"] = newest
            which = f", round {newest} only"
        else:
            reporter.log("no round's comparisons are judged yet: training on all judged pairs")
    snapshot = make_snapshot(job.project, "trl-preference", **options)
    reporter.log(f"snapshot {snapshot.sha256} ({snapshot.rows} pairs{which}); starting from {parent.name} "
                 f"({choice.reason})")
    data = snapshot_path(snapshot)
    if config.train_on == "relabelled":
        reward = reward_checkpoint(job.project, config.reward_model, "reward_model")
        reporter.progress(0.02, f"relabelling {snapshot.rows} pairs by {reward.name}")
        rows, swapped = relabel(load_preference_rows(data), reward)
        data = job_dir(job) / "relabelled.jsonl"  # kept with the job: what the policy was trained on
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        # The held-out figures below then measure agreement with the reward model, not with the votes.
        extra.update(reward_model=reward.pk, relabelled_pairs=len(rows), swapped_pairs=swapped,
                     heldout_labels="reward_model")
        reporter.log(f"{reward.name} reversed {swapped} of {len(rows)} pairs' winners")
    result = train_dpo(data, scratch_dir(job), replace(config, base_model=parent.model_name), reporter=reporter)
    return Outcome(metrics={**result.metrics, **extra, "snapshot": snapshot.sha256, "parent": parent.pk},
                   checkpoint_dir=result.output_dir, checkpoint={
                       "kind": Checkpoint.Kind.POLICY, "name": f"dpo-{job.project.slug}-job{job.pk}",
                       "base_model": parent.base_model, "parent_id": parent.pk, "config": config.to_dict(),
                       **({"reward_model_id": extra["reward_model"]} if "reward_model" in extra else {}),
                       "snapshot_ids": [snapshot.pk]})


SPEC = register(KindSpec(Job.Kind.DPO, DPOJobConfig, "gpu", check, "DPO on the judgments", execute=execute))
