"""The GRPO kind: from a parent policy, GRPO on the project's prompts against the reward
functions of `rewards.functions` (a reward model, pairwise win rate, shaping, length terms);
people's preferred answers serve as references for PAR and delta."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from annotate.export import prompt_value
from annotate.models import Judgment, Project

from ..jobs import job_dir, scratch_dir
from ..models import Checkpoint, Job
from ..registry import KindSpec, LaunchRefused, Outcome, register
from ..runners.base import Reporter
from ..runners.grpo import GRPOConfig, train_grpo
from .common import choose_policy, policy_for, reward_checkpoint


@dataclass
class GRPOJobConfig(GRPOConfig):
    parent: int = field(default=0, metadata={
        "help": "policy checkpoint to start from (0: the best of base_model's policies, else the base model)"})
    reward_model: int = field(default=0, metadata={"help": "reward-model checkpoint (0: newest)"})
    prompts: int = field(default=0, metadata={"help": "how many of the project's prompts to train on (0: all)"})


def check(project: Project, config: GRPOJobConfig) -> None:
    policy_for(project, config.parent, config.base_model)
    if {"reward_model", "pairwise_winrate"} & set(config.rewards):
        reward_checkpoint(project, config.reward_model, "reward_model")
    if project.prompts.count() < config.prompts_per_step + config.eval_prompts:
        raise LaunchRefused(f"GRPO needs at least {config.prompts_per_step + config.eval_prompts} prompts "
                            "(prompts_per_step + eval_prompts); import more.", "prompts_per_step")


def best_responses(project: Project) -> dict[int, str]:
    """Per prompt, the response people preferred most often: the reference for PAR and delta."""
    wins: dict[int, dict[int, float]] = {}
    texts: dict[int, str] = {}
    judgments = Judgment.objects.filter(project=project).exclude(choice="tie").select_related(
        "comparison__candidate_a", "comparison__candidate_b")
    for judgment in judgments.iterator(chunk_size=2000):
        comparison = judgment.comparison
        winner = comparison.candidate_a if judgment.choice == "a" else comparison.candidate_b
        tally = wins.setdefault(comparison.prompt_id, {})
        tally[winner.pk] = tally.get(winner.pk, 0) + 1
        texts[winner.pk] = winner.text
    return {prompt_id: texts[max(tally, key=tally.get)] for prompt_id, tally in wins.items()}


def write_prompts(project: Project, prompts, references: dict[int, str], path):
    """The runner's prompts file: each prompt as the project's snapshots carry it (`prompt_value`), so
    the reward model reads it as it did in training."""
    with open(path, "w", encoding="utf-8") as out:
        for prompt in prompts:
            value = prompt_value(prompt.text, prompt.messages, project.conversational)
            out.write(json.dumps({"prompt": value, "reference": references.get(prompt.pk, "")}) + "\n")
    return path


def execute(job: Job, config: GRPOJobConfig, reporter: Reporter) -> Outcome:
    choice = choose_policy(job.project, config.parent, config.base_model)
    parent = choice.checkpoint
    uses_model = bool({"reward_model", "pairwise_winrate"} & set(config.rewards))
    reward = reward_checkpoint(job.project, config.reward_model, "reward_model") if uses_model else None
    references = best_responses(job.project)
    prompts = list(job.project.prompts.order_by("id"))
    if config.prompts:
        prompts = prompts[: config.prompts]
    path = write_prompts(job.project, prompts, references, job_dir(job) / "prompts.jsonl")
    reporter.log(f"{len(prompts)} prompts; starting from {parent.name} ({choice.reason}); reward model {reward.name if reward else '-'}")
    result = train_grpo(path, scratch_dir(job), replace(config, base_model=parent.model_name),
                        reward_model_dir=str(reward.directory) if reward else None, reporter=reporter)
    return Outcome(metrics={**result.metrics, "parent": parent.pk, "reward_model": reward.pk if reward else None},
                   checkpoint_dir=result.output_dir, checkpoint={
                       "kind": Checkpoint.Kind.POLICY, "name": f"grpo-{job.project.slug}-job{job.pk}",
                       "base_model": parent.base_model, "parent_id": parent.pk,
                       "reward_model_id": reward.pk if reward else None, "config": config.to_dict(),
                       "snapshot_ids": list(reward.snapshots.values_list("pk", flat=True)) if reward else []})


SPEC = register(KindSpec(Job.Kind.GRPO, GRPOJobConfig, "gpu", check, "GRPO against the reward model",
                         execute=execute))
