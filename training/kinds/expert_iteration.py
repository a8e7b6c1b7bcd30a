"""The expert-iteration kind: the parent policy samples n answers to the project's prompts, the
reward model keeps the best of each, and the parent is fine-tuned on them (`runners.expert_iteration`).
The new policy records its parent and the reward model that chose its training answers."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from annotate.models import Project

from ..jobs import scratch_dir
from ..models import Checkpoint, Job
from ..registry import KindSpec, LaunchRefused, Outcome, register
from ..runners.base import Reporter
from ..runners.expert_iteration import ExpertIterationConfig, train_expert_iteration
from .common import policy_for, reward_checkpoint
from .generate import choose_prompts


@dataclass
class ExpertIterationJobConfig(ExpertIterationConfig):
    parent: int = field(default=0, metadata={"help": "policy to start from (0: the project's current policy)"})
    reward_model: int = field(default=0, metadata={"help": "reward-model checkpoint that picks (0: newest)"})


def check(project: Project, config: ExpertIterationJobConfig) -> None:
    policy_for(project, config.parent, config.base_model)
    reward_checkpoint(project, config.reward_model, "reward_model")
    if project.prompts.count() < 2:
        raise LaunchRefused("Expert iteration needs at least 2 prompts in the project.", "prompts")


def execute(job: Job, config: ExpertIterationJobConfig, reporter: Reporter) -> Outcome:
    parent = policy_for(job.project, config.parent, config.base_model)
    reward = reward_checkpoint(job.project, config.reward_model, "reward_model")
    # Other prompts than the round's generate step answers first (it shuffles with seed 0).
    prompts = choose_prompts(job.project, config.prompts, config.seed + 7919)
    reporter.log(f"starting from {parent.name}; {reward.name} picks the best of {config.n}")
    result = train_expert_iteration([(p.pk, p.messages or p.text) for p in prompts], str(reward.directory),
                                    scratch_dir(job), replace(config, base_model=parent.model_name), reporter=reporter)
    return Outcome(metrics={**result.metrics, "parent": parent.pk, "reward_model": reward.pk},
                   checkpoint_dir=result.output_dir, checkpoint={
                       "kind": Checkpoint.Kind.POLICY, "name": f"ei-{job.project.slug}-job{job.pk}",
                       "base_model": parent.base_model, "parent_id": parent.pk, "reward_model_id": reward.pk,
                       "config": {**config.to_dict(), "method": "expert_iteration"}})


SPEC = register(KindSpec(Job.Kind.EXPERT_ITERATION, ExpertIterationJobConfig, "gpu", check,
                         "Expert iteration: fine-tune on the reward model's best of n", execute=execute))
