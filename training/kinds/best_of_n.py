"""The best-of-n kind: a policy that samples n answers from its parent (or its parent's sampler)
and keeps the one the reward model scores highest. Nothing is trained: the checkpoint is a
manifest naming sampler, reward model and n (`runners.best_of_n`), so it costs seconds to make and
n times a sample to generate from."""

from __future__ import annotations

from dataclasses import dataclass, field

from annotate.models import Project

from ..jobs import scratch_dir
from ..models import Checkpoint, Job
from ..registry import KindSpec, Outcome, register
from ..runners.base import Reporter, RunConfig
from ..runners.base import check as ensure
from ..runners.best_of_n import write_best_of_n
from ..runners.policy import manifest_of
from .common import policy_for, reward_checkpoint


@dataclass
class BestOfNConfig(RunConfig):
    n: int = field(default=4, metadata={"help": "answers sampled per prompt; the reward model keeps the best"})
    parent: int = field(default=0, metadata={"help": "policy to sample from (0: the project's current policy)"})
    reward_model: int = field(default=0, metadata={"help": "reward-model checkpoint that picks (0: newest)"})
    base_model: str = field(default="smollm2", metadata={"help": "the model when there is no policy checkpoint"})

    def __post_init__(self):
        ensure(2 <= self.n <= 64, "n", "must be between 2 and 64")
        ensure(self.parent >= 0, "parent", "must be a checkpoint id, or 0")
        ensure(self.reward_model >= 0, "reward_model", "must be a checkpoint id, or 0")


def check(project: Project, config: BestOfNConfig) -> None:
    policy_for(project, config.parent, config.base_model)
    reward_checkpoint(project, config.reward_model, "reward_model")


def execute(job: Job, config: BestOfNConfig, reporter: Reporter) -> Outcome:
    parent = policy_for(job.project, config.parent, config.base_model)
    reward = reward_checkpoint(job.project, config.reward_model, "reward_model")
    sampler = manifest_of(parent.model_name)
    reporter.log(f"best of {config.n} by {reward.name}, sampling from "
                 f"{parent.name if sampler is None else 'the sampler of ' + parent.name}")
    output = write_best_of_n(scratch_dir(job), parent.model_name, str(reward.directory), config.n)
    return Outcome(metrics={"n": config.n, "parent": parent.pk, "reward_model": reward.pk},
                   checkpoint_dir=output, checkpoint={
                       "kind": Checkpoint.Kind.POLICY, "name": f"best-of-{config.n}-{job.project.slug}-job{job.pk}",
                       "base_model": parent.base_model, "parent_id": parent.pk, "reward_model_id": reward.pk,
                       "config": {**config.to_dict(), "method": "best_of_n"}})


SPEC = register(KindSpec(Job.Kind.BEST_OF_N, BestOfNConfig, "default", check,
                         "Best-of-n: sample n answers, keep the reward model's best", execute=execute))
