"""What several kinds look up in the project: judged comparisons, rubric criteria, reward-model
checkpoints, and the policy a policy job starts from (`choose_policy`)."""

from __future__ import annotations

from dataclasses import dataclass

from annotate.models import Judgment, Project

from ..leaderboard import leaderboard
from ..models import Checkpoint
from ..registry import LaunchRefused
from ..summaries import evaluation_of

# People's judgments (battles on the leaderboard) a policy needs before its rating can make it the parent.
MIN_BATTLES = 20
# A GRPO run that used none of these learned a toy target (length, a keyword), not the preferences.
PREFERENCE_REWARDS = {"reward_model", "pairwise_winrate"}


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


@dataclass(frozen=True)
class PolicyChoice:
    checkpoint: Checkpoint
    reason: str  # why this one, for the job's log


def unfit_reason(checkpoint: Checkpoint) -> str | None:
    """Why a trained policy should not become a parent unasked: a GRPO run on toy rewards only
    (none of PREFERENCE_REWARDS), or a held-out evaluation that warns it did worse than its own
    parent or no better than chance (the warnings the job's page shows, `summaries`)."""
    rewards = (checkpoint.config or {}).get("rewards")
    if rewards is not None and not PREFERENCE_REWARDS & set(rewards):
        return "toy rewards " + "+".join(rewards)
    evaluation = evaluation_of(checkpoint.metrics)
    if evaluation is not None and evaluation.warnings:
        return "failed its held-out evaluation"
    return None


def choose_policy(project: Project, checkpoint_id: int, base_model: str) -> PolicyChoice:
    """The policy a DPO, GRPO or generate job starts from, and why:

    1. the checkpoint the config names (`parent`, `checkpoint`), whatever its base model;
    2. else, among this project's policies of `base_model` (its untrained base and the trained ones
       `unfit_reason` lets through), the best rated on the leaderboard (people's judgments only) of
       those with at least MIN_BATTLES battles;
    3. else the newest of those trained ones;
    4. else the untrained `base_model`.

    A policy of another base model is never taken unasked, and one passed over says why.
    """
    policies = Checkpoint.objects.filter(project=project, kind=Checkpoint.Kind.POLICY)
    if checkpoint_id:
        found = policies.filter(pk=checkpoint_id).first()
        if found is None:
            raise LaunchRefused(f"No policy checkpoint #{checkpoint_id} in this project.", "parent")
        return PolicyChoice(found, "named in the config")
    fit, passed_over = [], []
    for checkpoint in policies.filter(base_model=base_model).exclude(path=""):  # newest first
        reason = unfit_reason(checkpoint)
        if reason:
            passed_over.append(f"{checkpoint.name}: {reason}")
        else:
            fit.append(checkpoint)
    note = f"; passed over {', '.join(passed_over)}" if passed_over else ""
    if not fit:
        return PolicyChoice(base_policy(project, base_model), f"no trained policy of {base_model} to continue{note}")
    base = policies.filter(base_model=base_model, path="").order_by("pk").first()
    by_name: dict[str, Checkpoint] = {}
    for checkpoint in [*fit, *([base] if base else [])]:
        by_name.setdefault(checkpoint.name, checkpoint)  # a reused name: its newest checkpoint
    rated = [row for row in leaderboard(project)["rows"] if row["source"] in by_name
             and row["rating"] is not None and row["battles"] >= MIN_BATTLES]
    if rated:
        best = max(rated, key=lambda row: row["rating"])
        return PolicyChoice(by_name[best["source"]], f"best rated of {base_model}'s policies on the leaderboard: "
                                                     f"{best['rating']:.0f} over {best['battles']} battles{note}")
    return PolicyChoice(fit[0], f"newest trained policy of {base_model}; none has {MIN_BATTLES} judged battles "
                                f"on the leaderboard yet{note}")


def policy_for(project: Project, checkpoint_id: int, base_model: str) -> Checkpoint:
    """The policy `choose_policy` picks."""
    return choose_policy(project, checkpoint_id, base_model).checkpoint
