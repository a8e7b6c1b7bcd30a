"""The generate kind: a policy (and its parent) answer some of the project's prompts, and the
answers go back into the queue as round N's comparisons (`training.generation`), the pairs the
newest reward model finds hardest first (`rewards.ranking`)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace

from django.db.models import Max

from annotate.export import prompt_value
from annotate.models import Comparison, Project, Prompt
from rewards.ranking import pair_priority

from ..generation import answer_key, enqueue_answers
from ..jobs import job_dir
from ..models import Checkpoint, Job
from ..registry import KindSpec, LaunchRefused, Outcome, register
from ..runners.base import Reporter, Scaled
from ..runners.generate import GenerateConfig, generate_answers
from .common import choose_policy, policy_for


@dataclass
class GenerateJobConfig(GenerateConfig):
    round: int = field(default=0, metadata={"help": "round number of the new comparisons (0: the next one)"})


def check(project: Project, config: GenerateJobConfig) -> None:
    policy_for(project, config.checkpoint, config.base_model)
    if not project.prompts.exists():
        raise LaunchRefused("The project has no prompts to answer.", "prompts")


def choose_prompts(project: Project, count: int, seed: int) -> list[Prompt]:
    prompts = list(project.prompts.order_by("id"))
    random.Random(seed).shuffle(prompts)
    return prompts[:count] if count else prompts


def execute(job: Job, config: GenerateJobConfig, reporter: Reporter) -> Outcome:
    choice = choose_policy(job.project, config.checkpoint, config.base_model)
    policy = choice.checkpoint
    parent = policy.parent if config.compare_with_parent else None
    round_number = config.round or (Comparison.objects.filter(project=job.project).aggregate(
        top=Max("round"))["top"] or 0) + 1
    prompts = choose_prompts(job.project, config.prompts, config.seed)
    pairs = [(p.pk, p.messages or p.text) for p in prompts]
    reporter.log(f"round {round_number}: {policy.name} answers {len(pairs)} prompts"
                 + (f", against {parent.name}" if parent else "") + f" ({policy.name}: {choice.reason})")
    answers, stats = {}, {}
    for role, checkpoint, start in (("new", policy, 0.02), ("parent", parent, 0.5)):
        if checkpoint is None:
            continue
        reporter.progress(start, f"{checkpoint.name} answers")
        path = job_dir(job) / f"answers-{role}.jsonl"
        # Independent draws for the two policies: with one seed, two close policies sample the same text.
        seeded = config if role == "new" else replace(config, seed=config.seed + 1000)
        stats[role] = generate_answers(checkpoint.model_name, pairs, path, seeded,
                                       reporter=Scaled(reporter, start, 0.45))
        with open(path, encoding="utf-8") as handle:
            answers[role] = [json.loads(line) for line in handle]
    priorities = priorities_from_reward_model(job.project, prompts, answers, config, reporter) if parent else {}
    reporter.progress(0.96, "enqueueing")
    enqueued = enqueue_answers(job, prompts, round_number, policy, answers["new"], parent, answers.get("parent"),
                               priorities)
    new_stats = stats.get("new", {})
    metrics = {"round": round_number, "policy": policy.pk, "parent": parent.pk if parent else None,
               "answers": sum(s["answers"] for s in stats.values()), "comparisons_added": enqueued.comparisons_added,
               "candidates_added": enqueued.candidates_added, "backend": new_stats.get("backend"),
               "tokens_per_second": new_stats.get("tokens_per_second"),
               "mean_answer_tokens": new_stats.get("mean_answer_tokens")}
    reporter.metric(round_number, "generate/mean_answer_tokens", new_stats.get("mean_answer_tokens") or 0.0)
    return Outcome(metrics=metrics)


def priorities_from_reward_model(project, prompts, answers, config, reporter) -> dict[tuple[int, int], float]:
    """Per (prompt, sample), the pair's priority by the newest reward model (`pair_priority`):
    pairs it cannot tell apart, or whose ensemble members disagree, come first."""
    if not config.priority_from_reward_model:
        return {}
    reward = Checkpoint.objects.filter(project=project, kind=Checkpoint.Kind.REWARD_MODEL).first()
    if reward is None:
        return {}
    from rewards.scoring import RewardModel  # torch: only when a worker scores

    reporter.progress(0.93, f"scoring answers with {reward.name}")
    by_prompt = {p.pk: prompt_value(p.text, p.messages, project.conversational) for p in prompts}
    parent = {answer_key(a): a["text"] for a in answers.get("parent", [])}
    new = {answer_key(a): a["text"] for a in answers["new"]}
    keys = [key for key in new if key in parent]
    if not keys:
        return {}
    model = RewardModel(reward.directory)
    ours = model.score([by_prompt[k[0]] for k in keys], [new[k] for k in keys])
    theirs = model.score([by_prompt[k[0]] for k in keys], [parent[k] for k in keys])
    return {key: pair_priority(float(ours.mean[i]), float(theirs.mean[i]), float(ours.spread[i]),
                               float(theirs.spread[i])) for i, key in enumerate(keys)}


SPEC = register(KindSpec(Job.Kind.GENERATE, GenerateJobConfig, "gpu", check, "Generate answers into the queue",
                         execute=execute))
