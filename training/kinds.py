"""Each job kind: its config, its queue, what is checked before queueing, and how a worker runs
it (a few lines around a Django-free runner)."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from django.db import transaction
from django.db.models import Max

from annotate.models import Candidate, Comparison, Judgment, Project, Prompt, content_hash

from . import jobs
from .jobs import LaunchRefused, Outcome, judged_comparisons, scratch_dir
from .models import CandidateScore, Checkpoint, GeneratedCandidate, Job, RoundPair
from .runners.base import ConfigError, Reporter, RunConfig, RunFailed
from .runners.dpo import DPOConfig, train_dpo
from .runners.generate import GenerateConfig, generate_answers
from .runners.grpo import GRPOConfig, train_grpo
from .runners.reward_model import RewardModelConfig, train_reward_model
from .runners.score import ScoreConfig, score_items
from .snapshots import make_snapshot, snapshot_path


@dataclass(frozen=True)
class KindSpec:
    config: type[RunConfig]
    queue: str
    check: Callable[[Project, RunConfig], None]
    execute: Callable[[Job, RunConfig, Reporter], Outcome] | None
    label: str
    pipeline: bool = False  # runs no code of its own: launches its steps one after another


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


def _reward_checkpoint(project: Project, checkpoint_id: int, field_name: str = "checkpoint") -> Checkpoint:
    checkpoints = Checkpoint.objects.filter(project=project, kind=Checkpoint.Kind.REWARD_MODEL)
    checkpoint = checkpoints.filter(pk=checkpoint_id).first() if checkpoint_id else checkpoints.first()
    if checkpoint is None:
        raise LaunchRefused("No such reward-model checkpoint in this project: train one first.", field_name)
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


# --- policies ----------------------------------------------------------------------------------


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


@dataclass
class DPOJobConfig(DPOConfig):
    parent: int = field(default=0, metadata={"help": "policy checkpoint to start from (0: newest, or the base)"})


@dataclass
class GRPOJobConfig(GRPOConfig):
    parent: int = field(default=0, metadata={"help": "policy checkpoint to start from (0: newest, or the base)"})
    reward_model: int = field(default=0, metadata={"help": "reward-model checkpoint (0: newest)"})
    prompts: int = field(default=0, metadata={"help": "how many of the project's prompts to train on (0: all)"})


def check_dpo(project: Project, config: DPOJobConfig) -> None:
    policy_for(project, config.parent, config.base_model)
    judged = judged_comparisons(project)
    if judged < config.min_pairs + 1:
        raise LaunchRefused(f"The project has {judged} judged comparisons; DPO with min_pairs={config.min_pairs} "
                            "needs more. Collect judgments first, or lower min_pairs.", "min_pairs")


def execute_dpo(job: Job, config: DPOJobConfig, reporter: Reporter) -> Outcome:
    parent = policy_for(job.project, config.parent, config.base_model)
    votes = "weighted" if config.margin_scale > 0 else "majority"
    reporter.progress(0.01, "freezing a dataset snapshot")
    snapshot = make_snapshot(job.project, "trl-preference", votes=votes)
    reporter.log(f"snapshot {snapshot.sha256} ({snapshot.rows} pairs); starting from {parent.name}")
    result = train_dpo(snapshot_path(snapshot), scratch_dir(job), replace(config, base_model=parent.model_name),
                       reporter=reporter)
    return Outcome(metrics={**result.metrics, "snapshot": snapshot.sha256, "parent": parent.pk},
                   checkpoint_dir=result.output_dir, checkpoint={
                       "kind": Checkpoint.Kind.POLICY, "name": f"dpo-{job.project.slug}-job{job.pk}",
                       "base_model": parent.base_model, "parent_id": parent.pk, "config": config.to_dict(),
                       "snapshot_ids": [snapshot.pk]})


def check_grpo(project: Project, config: GRPOJobConfig) -> None:
    policy_for(project, config.parent, config.base_model)
    if {"reward_model", "pairwise_winrate"} & set(config.rewards):
        _reward_checkpoint(project, config.reward_model, "reward_model")
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


def execute_grpo(job: Job, config: GRPOJobConfig, reporter: Reporter) -> Outcome:
    parent = policy_for(job.project, config.parent, config.base_model)
    uses_model = bool({"reward_model", "pairwise_winrate"} & set(config.rewards))
    reward = _reward_checkpoint(job.project, config.reward_model, "reward_model") if uses_model else None
    references = best_responses(job.project)
    prompts = list(job.project.prompts.order_by("id"))
    if config.prompts:
        prompts = prompts[: config.prompts]
    path = jobs.job_dir(job) / "prompts.jsonl"
    with open(path, "w", encoding="utf-8") as out:
        for prompt in prompts:
            out.write(json.dumps({"prompt": prompt.messages or prompt.text, "reference": references.get(prompt.pk, "")})
                      + "\n")
    reporter.log(f"{len(prompts)} prompts; starting from {parent.name}; reward model {reward.name if reward else '-'}")
    result = train_grpo(path, scratch_dir(job), replace(config, base_model=parent.model_name),
                        reward_model_dir=str(reward.directory) if reward else None, reporter=reporter)
    return Outcome(metrics={**result.metrics, "parent": parent.pk, "reward_model": reward.pk if reward else None},
                   checkpoint_dir=result.output_dir, checkpoint={
                       "kind": Checkpoint.Kind.POLICY, "name": f"grpo-{job.project.slug}-job{job.pk}",
                       "base_model": parent.base_model, "parent_id": parent.pk,
                       "reward_model_id": reward.pk if reward else None, "config": config.to_dict(),
                       "snapshot_ids": list(reward.snapshots.values_list("pk", flat=True)) if reward else []})


# --- generation back into the queue ------------------------------------------------------------------


@dataclass
class GenerateJobConfig(GenerateConfig):
    round: int = field(default=0, metadata={"help": "round number of the new comparisons (0: the next one)"})


def check_generate(project: Project, config: GenerateJobConfig) -> None:
    policy_for(project, config.checkpoint, config.base_model)
    if not project.prompts.exists():
        raise LaunchRefused("The project has no prompts to answer.", "prompts")


def _choose_prompts(project: Project, count: int, seed: int) -> list[Prompt]:
    prompts = list(project.prompts.order_by("id"))
    random.Random(seed).shuffle(prompts)
    return prompts[:count] if count else prompts


def execute_generate(job: Job, config: GenerateJobConfig, reporter: Reporter) -> Outcome:
    from annotate.importers import ParsedRow, import_rows

    policy = policy_for(job.project, config.checkpoint, config.base_model)
    parent = policy.parent if config.compare_with_parent else None
    round_number = config.round or (Comparison.objects.filter(project=job.project).aggregate(
        top=Max("round"))["top"] or 0) + 1
    prompts = _choose_prompts(job.project, config.prompts, config.seed)
    pairs = [(p.pk, p.messages or p.text) for p in prompts]
    reporter.log(f"round {round_number}: {policy.name} answers {len(pairs)} prompts"
                 + (f", against {parent.name}" if parent else ""))
    answers = {}
    stats = {}
    for role, checkpoint, share in (("new", policy, 0.45), ("parent", parent, 0.45)):
        if checkpoint is None:
            continue
        reporter.progress(0.02 if role == "new" else 0.5, f"{checkpoint.name} answers")
        path = jobs.job_dir(job) / f"answers-{role}.jsonl"
        # Independent draws for the two policies: with one seed, two close policies sample the same text.
        seeded = config if role == "new" else replace(config, seed=config.seed + 1000)
        stats[role] = generate_answers(checkpoint.model_name, pairs, path, seeded, reporter=_Scaled(
            reporter, 0.02 if role == "new" else 0.5, share))
        with open(path, encoding="utf-8") as handle:
            answers[role] = [json.loads(line) for line in handle]
    priorities = _priorities(job.project, prompts, answers, config, reporter) if parent else {}
    by_prompt = {p.pk: p for p in prompts}
    rows, roles = [], []
    parent_answers = {(a["prompt_id"], a["sample"]): a["text"] for a in answers.get("parent", [])}
    for answer in answers["new"]:
        prompt = by_prompt[answer["prompt_id"]]
        responses = [(answer["text"], policy.name)]
        pair = []
        other = parent_answers.get((answer["prompt_id"], answer["sample"]))
        if other is not None:
            responses.append((other, parent.name))
            pair = [(0, 1, None)]
        rows.append(ParsedRow(prompt.text, prompt.messages, responses, pair, priority=priorities.get(
            (answer["prompt_id"], answer["sample"]), 0.0), origin=Comparison.Origin.ROUND, round=round_number,
            item=len(rows)))
        roles.append((prompt.pk, answer["text"], other))
    reporter.progress(0.96, "enqueueing")
    with transaction.atomic():  # all answers and comparisons, or none
        result, _ = import_rows(job.project, rows, labels="ignore", filename=f"job {job.pk}", format="generate")
        for prompt_id, new_text, parent_text in roles:
            sides = {}
            for text, checkpoint, role in ((new_text, policy, "new"), (parent_text, parent, "parent")):
                if text is None or checkpoint is None:
                    continue
                sides[role] = Candidate.objects.get(prompt_id=prompt_id, content_hash=content_hash(text))
                GeneratedCandidate.objects.get_or_create(candidate=sides[role], defaults={
                    "checkpoint": checkpoint, "job": job, "round": round_number, "role": role})
            if len(sides) == 2 and sides["new"].pk != sides["parent"].pk:
                low, high = sorted((sides["new"].pk, sides["parent"].pk))
                comparison = Comparison.objects.filter(candidate_a_id=low, candidate_b_id=high).first()
                if comparison is None:
                    continue
                RoundPair.objects.get_or_create(comparison=comparison, defaults={
                    "new_candidate": sides["new"], "policy": policy, "parent": parent, "job": job,
                    "round": comparison.round or round_number})
    new_stats = stats.get("new", {})
    metrics = {"round": round_number, "policy": policy.pk, "parent": parent.pk if parent else None,
               "answers": sum(s["answers"] for s in stats.values()), "comparisons_added": result.comparisons_added,
               "candidates_added": result.candidates_added, "backend": new_stats.get("backend"),
               "tokens_per_second": new_stats.get("tokens_per_second"),
               "mean_answer_tokens": new_stats.get("mean_answer_tokens")}
    reporter.metric(round_number, "generate/mean_answer_tokens", new_stats.get("mean_answer_tokens") or 0.0)
    return Outcome(metrics=metrics)


class _Scaled(Reporter):
    """A reporter for a part of a run: progress mapped into [start, start + share]."""

    def __init__(self, inner: Reporter, start: float, share: float):
        self.inner, self.start, self.share = inner, start, share

    def progress(self, fraction, message=""):
        self.inner.progress(self.start + self.share * fraction, message)

    def log(self, line):
        self.inner.log(line)

    def should_stop(self):
        return self.inner.should_stop()


def _priorities(project, prompts, answers, config, reporter) -> dict[tuple[int, int], float]:
    """Where a human label teaches most: pairs the newest reward model cannot tell apart, or whose
    ensemble members disagree, come first. Priority = 1 − |P(new wins) − ½|·2 + mean spread."""
    if not config.priority_from_reward_model:
        return {}
    reward = Checkpoint.objects.filter(project=project, kind=Checkpoint.Kind.REWARD_MODEL).first()
    if reward is None:
        return {}
    from rewards.scoring import RewardModel

    reporter.progress(0.93, f"scoring answers with {reward.name}")
    by_prompt = {p.pk: p.messages or p.text for p in prompts}
    parent = {(a["prompt_id"], a["sample"]): a["text"] for a in answers.get("parent", [])}
    keys = [(a["prompt_id"], a["sample"]) for a in answers["new"] if (a["prompt_id"], a["sample"]) in parent]
    if not keys:
        return {}
    new = {(a["prompt_id"], a["sample"]): a["text"] for a in answers["new"]}
    model = RewardModel(reward.directory)
    ours = model.score([by_prompt[k[0]] for k in keys], [new[k] for k in keys])
    theirs = model.score([by_prompt[k[0]] for k in keys], [parent[k] for k in keys])
    out = {}
    for i, key in enumerate(keys):
        p_new = 1 / (1 + math.exp(-(float(ours.mean[i]) - float(theirs.mean[i]))))
        out[key] = round(1 - abs(p_new - 0.5) * 2 + float(ours.spread[i] + theirs.spread[i]) / 2, 4)
    return out


# --- the next round -------------------------------------------------------------------------------


@dataclass
class RoundConfig(RunConfig):
    method: str = field(default="dpo", metadata={"help": "dpo or grpo"})
    train_reward_model: bool = field(default=True, metadata={"help": "train a new reward model first"})
    reward_model: dict = field(default_factory=lambda: {"max_steps": 60, "max_length": 160, "batch_size": 8,
                                                        "learning_rate": 5e-5, "min_pairs": 10})
    dpo: dict = field(default_factory=lambda: {"max_steps": 8, "batch_size": 2, "max_length": 256,
                                               "learning_rate": 5e-4, "min_pairs": 4})
    grpo: dict = field(default_factory=lambda: {"max_steps": 4, "prompts_per_step": 2, "num_generations": 4,
                                                "max_completion_length": 48, "eval_prompts": 4,
                                                "learning_rate": 3e-4})
    generate: dict = field(default_factory=lambda: {"prompts": 8, "samples": 1, "max_new_tokens": 64,
                                                    "batch_size": 8})

    def __post_init__(self):
        from .runners.base import check as ensure

        ensure(self.method in ("dpo", "grpo"), "method", "use dpo or grpo")
        for name, kind in (("reward_model", Job.Kind.REWARD_MODEL), ("dpo", Job.Kind.DPO), ("grpo", Job.Kind.GRPO),
                           ("generate", Job.Kind.GENERATE)):
            try:
                KINDS[kind].config.from_dict(getattr(self, name))
            except ConfigError as exc:
                raise ConfigError(f"{name}.{exc.field}", exc.message) from None


def check_round(project: Project, config: RoundConfig) -> None:
    if config.train_reward_model:
        check_reward_model(project, KINDS[Job.Kind.REWARD_MODEL].config.from_dict(config.reward_model))
    spec = KINDS[config.method]
    if config.method == "dpo":
        spec.check(project, spec.config.from_dict(config.dpo))
    elif not config.train_reward_model:
        spec.check(project, spec.config.from_dict(config.grpo))


KINDS: dict[str, KindSpec] = {
    Job.Kind.REWARD_MODEL: KindSpec(RewardModelConfig, "cpu", check_reward_model, execute_reward_model,
                                    "Train a reward model"),
    Job.Kind.SCORE: KindSpec(ScoreConfig, "cpu", check_score, execute_score, "Score responses"),
    Job.Kind.DPO: KindSpec(DPOJobConfig, "gpu", check_dpo, execute_dpo, "DPO on the judgments"),
    Job.Kind.GRPO: KindSpec(GRPOJobConfig, "gpu", check_grpo, execute_grpo, "GRPO against the reward model"),
    Job.Kind.GENERATE: KindSpec(GenerateJobConfig, "gpu", check_generate, execute_generate,
                                "Generate answers into the queue"),
    Job.Kind.ROUND: KindSpec(RoundConfig, "default", check_round, None, "Next round: reward model → DPO or "
                             "GRPO → generate → enqueue", pipeline=True),
}
