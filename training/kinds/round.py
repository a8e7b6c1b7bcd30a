"""The round kind: the next round as a pipeline of jobs, reward model → DPO or GRPO → generate and
enqueue. The pipeline's own row runs no code: each step is a job of its own, launched when the one
before succeeds (`advance`, called when a step's end is announced, by the sweeper, and on cancel),
so each can be watched and cancelled; cancelling the pipeline cancels its current step."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from annotate.models import Comparison, Project

from ..events import announce_later
from ..jobs import launch
from ..models import Checkpoint, Job
from ..registry import KindSpec, LaunchRefused, register
from ..runners.base import ConfigError, RunConfig
from ..runners.base import check as ensure
from . import dpo, generate, grpo, reward_model

STEP_KINDS = {"reward_model": reward_model.SPEC, "dpo": dpo.SPEC, "grpo": grpo.SPEC, "generate": generate.SPEC}


@dataclass
class RoundConfig(RunConfig):
    method: str = field(default="dpo", metadata={"help": "dpo or grpo", "choices": {
        "dpo": "DPO on the judgments", "grpo": "GRPO against the reward model"}})
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
        ensure(self.method in ("dpo", "grpo"), "method", "use dpo or grpo")
        for name, spec in STEP_KINDS.items():
            try:
                spec.config.from_dict(getattr(self, name))
            except ConfigError as exc:
                raise ConfigError(f"{name}.{exc.field}", exc.message) from None


def check(project: Project, config: RoundConfig) -> None:
    if config.train_reward_model:
        reward_model.check(project, reward_model.SPEC.config.from_dict(config.reward_model))
    if config.method == "dpo":
        dpo.check(project, dpo.SPEC.config.from_dict(config.dpo))
    elif not config.train_reward_model:
        grpo.check(project, grpo.SPEC.config.from_dict(config.grpo))


# --- the pipeline ----------------------------------------------------------------------------------


def plan(config: RoundConfig) -> list[str]:
    return ([Job.Kind.REWARD_MODEL] if config.train_reward_model else []) + [config.method, Job.Kind.GENERATE]


def start(pipeline: Job) -> None:
    """Called once the pipeline row is committed: number the round, launch the first step."""
    top = Comparison.objects.filter(project=pipeline.project).aggregate(top=Max("round"))["top"] or 0
    Job.objects.filter(pk=pipeline.pk).update(result={"round": top + 1})
    advance(pipeline.pk)


def advance(pipeline_id: int) -> None:
    """Launch the pipeline's next step, or close the pipeline when a step failed or all are done."""
    with transaction.atomic():
        pipeline = Job.objects.select_for_update().select_related("project").get(pk=pipeline_id)
        if pipeline.status != Job.Status.RUNNING:
            return
        config = RoundConfig.from_dict(pipeline.config)
        steps_planned = plan(config)
        steps = list(pipeline.steps.filter(created_at__gte=pipeline.started_at).order_by("id"))
        if steps and not steps[-1].finished:
            return
        if pipeline.cancel_requested:
            _close(pipeline, Job.Status.CANCELLED, error="Cancelled on request." + (
                f" Step {len(steps)} ({steps[-1].kind}, job #{steps[-1].pk}) ended {steps[-1].status}." if steps else ""))
            return
        if steps and steps[-1].status != Job.Status.SUCCEEDED:
            last = steps[-1]
            status = Job.Status.CANCELLED if last.status == Job.Status.CANCELLED else Job.Status.FAILED
            _close(pipeline, status, error=f"Step {len(steps)} ({last.kind}, job #{last.pk}) {last.status}: "
                                           f"{last.error}".strip())
            return
        if len(steps) == len(steps_planned):
            _close(pipeline, Job.Status.SUCCEEDED, result=_summary(pipeline, steps))
            return
        kind = steps_planned[len(steps)]
        step_config = _step_config(pipeline, config, kind, steps)
        try:
            launch(pipeline.project, kind, step_config, user=pipeline.created_by, parent=pipeline)
        except LaunchRefused as exc:
            _close(pipeline, Job.Status.FAILED, error=f"Step {len(steps) + 1} ({kind}) was refused: {exc.message}")
            return
        Job.objects.filter(pk=pipeline.pk).update(
            progress=len(steps) / len(steps_planned), message=f"step {len(steps) + 1}/{len(steps_planned)}: {kind}")


def _checkpoint_of(step: Job) -> int | None:
    checkpoint = Checkpoint.objects.filter(job=step).first()
    return checkpoint.pk if checkpoint else None


def _step_config(pipeline: Job, config: RoundConfig, kind: str, steps: list[Job]) -> dict:
    by_kind = {step.kind: step for step in steps}
    if kind == Job.Kind.REWARD_MODEL:
        return dict(config.reward_model)
    if kind == Job.Kind.DPO:
        return dict(config.dpo)
    if kind == Job.Kind.GRPO:
        values = dict(config.grpo)
        if Job.Kind.REWARD_MODEL in by_kind:
            values.setdefault("reward_model", _checkpoint_of(by_kind[Job.Kind.REWARD_MODEL]))
        return values
    values = dict(config.generate)
    values["checkpoint"] = _checkpoint_of(by_kind[config.method])
    values["round"] = pipeline.result.get("round", 0)
    return values


def _summary(pipeline: Job, steps: list[Job]) -> dict:
    out = {"round": pipeline.result.get("round"), "steps": [step.pk for step in steps]}
    for step in steps:
        if step.kind == Job.Kind.REWARD_MODEL:
            out["reward_model"] = _checkpoint_of(step)
            out["reward_model_accuracy"] = step.result.get("eval_accuracy")
        elif step.kind in (Job.Kind.DPO, Job.Kind.GRPO):
            out["policy"] = _checkpoint_of(step)
            out.update({k: v for k, v in step.result.items() if k.startswith("heldout_")})
        elif step.kind == Job.Kind.GENERATE:
            out["comparisons_added"] = step.result.get("comparisons_added")
    return out


def _close(pipeline: Job, status: str, *, error: str = "", result: dict | None = None) -> None:
    Job.objects.filter(pk=pipeline.pk).update(
        status=status, error=error[:5000], finished_at=timezone.now(), message=status,
        progress=1.0 if status == Job.Status.SUCCEEDED else pipeline.progress,
        result={**pipeline.result, **(result or {})})
    announce_later(pipeline.pk)


SPEC = register(KindSpec(Job.Kind.ROUND, RoundConfig, "default", check,
                         "Next round: reward model → DPO or GRPO → generate → enqueue", start=start, advance=advance,
                         steps=plan))
