"""What several kinds look up in the project: judged comparisons, rubric criteria, reward-model
and policy checkpoints (the named one, the newest, or the registered base model)."""

from __future__ import annotations

from annotate.models import Judgment, Project

from ..models import Checkpoint
from ..registry import LaunchRefused


def judged_comparisons(project: Project) -> int:
    return Judgment.objects.filter(project=project).values("comparison_id").distinct().count()


def criteria(project: Project) -> list[dict]:
    return list(project.criteria.values("key", "label", "scale_min", "scale_max"))


def reward_checkpoint(project: Project, checkpoint_id: int, field_name: str = "checkpoint") -> Checkpoint:
    """The named reward model of this project, or its newest when `checkpoint_id` is 0."""
    checkpoints = Checkpoint.objects.filter(project=project, kind=Checkpoint.Kind.REWARD_MODEL)
    checkpoint = checkpoints.filter(pk=checkpoint_id).first() if checkpoint_id else checkpoints.first()
    if checkpoint is None:
        raise LaunchRefused("No such reward-model checkpoint in this project: train one first.", field_name)
    return checkpoint


def base_policy(project: Project, base_model: str) -> Checkpoint:
    """The untrained base model as a registered policy, so every trained policy has a parent."""
    found = Checkpoint.objects.filter(project=project, kind=Checkpoint.Kind.POLICY, path="",
                                      base_model=base_model).order_by("pk").first()
    return found or Checkpoint.objects.create(project=project, kind=Checkpoint.Kind.POLICY, path="",
                                              base_model=base_model, name=f"{base_model} (base)")


def policy_for(project: Project, checkpoint_id: int, base_model: str) -> Checkpoint:
    """The named policy checkpoint, else the project's newest policy, else the base model."""
    policies = Checkpoint.objects.filter(project=project, kind=Checkpoint.Kind.POLICY)
    if checkpoint_id:
        found = policies.filter(pk=checkpoint_id).first()
        if found is None:
            raise LaunchRefused(f"No policy checkpoint #{checkpoint_id} in this project.", "parent")
        return found
    return policies.exclude(path="").first() or base_policy(project, base_model)
