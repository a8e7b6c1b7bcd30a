"""DPO on a dataset snapshot, through TRL's DPOTrainer, LoRA by default.

Input: a `trl-preference` snapshot (with `margin` when the votes were weighted). Pairs are held out
by prompt; the held-out chosen-minus-rejected log-ratio margin after training (0 before it: the
policy starts as its reference) is the figure that says DPO learned the preference. It is
measured on a sample of `eval_pairs` held-out pairs, so evaluation stays a small part of a round,
and reported with its 95% interval and the sample's size.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from rewards.quality import mean_interval, wilson_interval

from .base import (
    Cancelled,
    Reporter,
    RunConfig,
    RunFailed,
    check,
    set_threads,
    trainer_callback,
    trainer_precision,
)
from .distributed import check_launch_fields, is_main_process, run_launched, wants_launch
from .policy import (
    as_completion,
    as_messages,
    check_prompt_lengths,
    context_length,
    load_policy,
    lora_config,
    save_policy,
)

DPO_LOSSES = ("sigmoid", "ipo", "robust")
# TRL's private step the margin offset rides on (TRL 1.16: DPOTrainer._precompute_ref_logps(dataset, name,
# batch_size)). TRL has no public hook for a per-pair offset; MarginDPOTrainer checks that this one is there
# and was called, so a TRL that renames it fails the run instead of training without margins.
MARGIN_HOOK = "_precompute_ref_logps"


@dataclass
class DPOConfig(RunConfig):
    base_model: str = field(default="smollm2", metadata={
        "help": "the policy to start from: 'smollm2', a path, or a hub id (a job fills it from `parent`)"})
    loss_type: str = field(default="sigmoid", metadata={"help": "the preference loss", "choices": {
        "sigmoid": "DPO", "ipo": "IPO (less prone to overfitting)", "robust": "robust DPO (label-smoothed, noisy votes)"}})
    beta: float = field(default=0.1, metadata={"help": "strength of the pull toward the reference"})
    label_smoothing: float = field(default=0.1, metadata={"help": "ε for the robust loss (noisy votes)"})
    margin_scale: float = field(default=0.0, metadata={
        "help": "offset each pair by margin × this (judgment strength and agreement; 0: off)"})
    lora: bool = field(default=True, metadata={"help": "train LoRA adapters (merged when saved); off: full"})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    learning_rate: float = 1e-4
    batch_size: int = 4
    max_steps: int = field(default=50, metadata={"help": "training steps (0: one pass over the pairs)"})
    max_length: int = field(default=384, metadata={"help": "prompt + response tokens; long prompts lose their start"})
    eval_fraction: float = 0.1
    eval_pairs: int = field(default=32, metadata={
        "help": "held-out pairs the evaluation measures, a sample of those held out (0: all)"})
    min_pairs: int = 8
    gradient_checkpointing: bool = False
    seed: int = 0
    threads: int = 0
    num_processes: int = field(default=1, metadata={
        "help": "GPUs on this worker to train on: above 1, the run re-launches itself with `accelerate launch`"})
    accelerate_config: str = field(default="", metadata={
        "help": "an `accelerate config` file on the worker (DeepSpeed ZeRO-1/2, mixed settings); launches too"})

    def __post_init__(self):
        check_launch_fields(self.num_processes, self.accelerate_config)
        check(self.loss_type in DPO_LOSSES, "loss_type", f"use one of {', '.join(DPO_LOSSES)}")
        check(0 < self.beta <= 10, "beta", "must be above 0 and at most 10")
        check(0 <= self.label_smoothing < 0.5, "label_smoothing", "must be in [0, 0.5)")
        check(0 <= self.margin_scale <= 10, "margin_scale", "must be between 0 and 10")
        check(1 <= self.lora_r <= 256, "lora_r", "must be between 1 and 256")
        check(self.lora_alpha >= 1, "lora_alpha", "must be at least 1")
        check(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
        check(0 < self.learning_rate < 1, "learning_rate", "must be between 0 and 1")
        check(1 <= self.batch_size <= 512, "batch_size", "must be between 1 and 512")
        check(0 <= self.max_steps <= 1_000_000, "max_steps", "must be 0 (one pass) or more")
        check(32 <= self.max_length <= 131072, "max_length", "must be between 32 and 131072 tokens")
        check(0 < self.eval_fraction < 0.9, "eval_fraction", "must be between 0 and 0.9")
        check(0 <= self.eval_pairs <= 100_000, "eval_pairs", "must be between 0 (all held out) and 100000")
        check(self.min_pairs >= 2, "min_pairs", "must be at least 2")
        check(self.threads >= 0, "threads", "must be 0 (automatic) or more")


@dataclass
class PolicyResult:
    output_dir: Path
    metrics: dict


def load_preference_rows(snapshot: Path) -> list[dict]:
    rows = []
    with open(snapshot, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if not row.get("tie"):
                rows.append(row)
    return rows


def split_by_prompt(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    def held_out(row) -> bool:
        digest = hashlib.sha256(f"{seed}:{json.dumps(row['prompt'])}".encode()).digest()
        return int.from_bytes(digest[:4], "big") / 2**32 < fraction

    return [r for r in rows if not held_out(r)], [r for r in rows if held_out(r)]


def eval_sample(held_out: list[dict], count: int, seed: int) -> list[dict]:
    """`count` of the held-out pairs (all when 0 or fewer are held out), the same ones for a seed."""
    if not count or len(held_out) <= count:
        return held_out
    return random.Random(seed).sample(held_out, count)


def build_trainer(model, tokenizer, train: list[dict], evaluation: list[dict], config: DPOConfig, output_dir: Path,
                  steps: int, callbacks=()):
    """TRL's DPOTrainer (with margins: MarginDPOTrainer) set up for this config, CPU-safe."""
    from datasets import Dataset
    from trl import DPOConfig as TRLConfig

    def shape(items):
        shaped = [{"prompt": as_messages(r["prompt"]), "chosen": as_completion(r["chosen"]),
                   "rejected": as_completion(r["rejected"]), "margin": float(r.get("margin") or 0.0)} for r in items]
        return Dataset.from_list(shaped)

    args = TRLConfig(
        output_dir=str(output_dir / ".trainer"), per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size, learning_rate=config.learning_rate, max_steps=steps,
        beta=config.beta, loss_type=[config.loss_type], label_smoothing=config.label_smoothing,
        max_length=config.max_length, truncation_mode="keep_end",
        precompute_ref_log_probs=config.margin_scale > 0,  # the margin offset rides on precomputed reference log-probs
        seed=config.seed, logging_steps=1, save_strategy="no", report_to=[], **trainer_precision(),
        gradient_checkpointing=config.gradient_checkpointing, disable_tqdm=True,
        dataloader_num_workers=0, warmup_steps=0.1, remove_unused_columns=True,
    )
    # The evaluation pairs go in only to be tokenized and collated as TRL does for training (held_out_logps).
    return MarginDPOTrainer(
        margin_scale=config.margin_scale, model=model, args=args, train_dataset=shape(train),
        eval_dataset=shape(evaluation), processing_class=tokenizer, ref_model=None, callbacks=list(callbacks),
        peft_config=lora_config(config.lora_r, config.lora_alpha, config.lora_dropout) if config.lora else None,
    )


def held_out_logps(trainer, pairs_per_batch: int = 2) -> tuple[list[float], list[float]]:
    """Per evaluation pair, the policy's summed log-probability of the chosen and of the rejected
    completion tokens: TRL's own tokenization and collator (truncation included), one forward pass."""
    import torch

    model, dataset = trainer.model, trainer.eval_dataset
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    with torch.inference_mode():
        for start in range(0, len(dataset), pairs_per_batch):
            batch = trainer.data_collator([dataset[i] for i in range(start, min(start + pairs_per_batch, len(dataset)))])
            ids = batch["input_ids"].to(device)
            logits = model(input_ids=ids, attention_mask=batch["attention_mask"].to(device)).logits[:, :-1].float()
            token_logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
            sums = (token_logps * batch["completion_mask"][:, 1:].to(device)).sum(dim=1).cpu()
            first, second = sums.chunk(2)  # the collator puts every chosen sequence first, then every rejected
            chosen += first.tolist()
            rejected += second.tolist()
    model.train(was_training)
    return chosen, rejected


def held_out_figures(before: tuple[list[float], list[float]], after: tuple[list[float], list[float]]) -> dict:
    """The held-out result from per-pair log-probs before training (the reference: the policy starts
    as it) and after: log π/π_ref of chosen and rejected, their difference (the implicit-reward
    margin over β), the share of pairs where it is positive, with 95% intervals.

    >>> f = held_out_figures(([-5.0, -6.0], [-5.0, -6.0]), ([-4.0, -6.0], [-5.5, -6.5]))
    >>> f["heldout_margin_after"], f["heldout_accuracy_after"], f["heldout_eval_pairs"]
    (1.0, 1.0, 2)
    """
    logratio_chosen = [a - b for a, b in zip(after[0], before[0], strict=True)]
    logratio_rejected = [a - b for a, b in zip(after[1], before[1], strict=True)]
    margins = [c - r for c, r in zip(logratio_chosen, logratio_rejected, strict=True)]
    n = len(margins)
    right = sum(m > 0 for m in margins)
    margin_low, margin_high = mean_interval(margins)
    accuracy_low, accuracy_high = wilson_interval(right, n)

    def mean(values):
        return round(sum(values) / len(values), 4) if values else None

    def rounded(value):
        return None if value is None else round(value, 4)

    return {
        "heldout_eval_pairs": n,
        "heldout_margin_after": mean(margins),
        "heldout_margin_low": rounded(margin_low), "heldout_margin_high": rounded(margin_high),
        "heldout_accuracy_after": round(right / n, 4) if n else None,
        "heldout_accuracy_low": rounded(accuracy_low), "heldout_accuracy_high": rounded(accuracy_high),
        # log π/π_ref on held-out responses: how far the policy moved from its reference (a KL proxy)
        "heldout_logratio_chosen": mean(logratio_chosen),
        "heldout_logratio_rejected": mean(logratio_rejected),
    }


def train_dpo(snapshot: Path, output_dir: Path, config: DPOConfig, *, reporter: Reporter | None = None) -> PolicyResult:
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback

    reporter = reporter or Reporter()
    if wants_launch(config):  # several GPUs: the same function, in processes `accelerate launch` starts
        metrics = run_launched("dpo", {"snapshot": str(snapshot)}, output_dir, config, reporter)
        return PolicyResult(Path(output_dir), metrics)
    if config.margin_scale:
        require_margin_hook()  # before minutes of loading, not after
    started = time.perf_counter()
    output_dir = Path(output_dir)
    threads = set_threads(config.threads)
    rows = load_preference_rows(Path(snapshot))
    train, held_out = split_by_prompt(rows, config.eval_fraction, config.seed)
    if len(train) < config.min_pairs or not held_out:
        raise RunFailed(f"The snapshot has {len(rows)} usable preference pairs ({len(train)} to train, "
                        f"{len(held_out)} held out); DPO needs at least {config.min_pairs} to train and one held out. "
                        "Collect more judgments (ties do not count), or lower min_pairs.")
    evaluation = eval_sample(held_out, config.eval_pairs, config.seed)
    reporter.progress(0.02, f"loading the policy {config.base_model}")
    reporter.log(f"loading the policy {config.base_model}")  # logged too: a progress message can be throttled
    set_seed(config.seed)  # LoRA's initial weights too: same seed and data, same policy
    tokenizer, model = load_policy(config.base_model)
    limit = context_length(model)
    check(config.max_length <= limit, "max_length", f"is longer than the model's context ({limit} tokens)")
    check_prompt_lengths(tokenizer, [r["prompt"] for r in rows], limit, "the model's context")

    steps = config.max_steps or max(1, len(train) // config.batch_size)
    report = trainer_callback(reporter, lambda state: (0.1 + 0.8 * state.global_step / max(steps, 1),
                                                       f"step {state.global_step}/{steps}"))
    trainer = build_trainer(model, tokenizer, train, evaluation, config, output_dir, steps, [report])
    trainer.remove_callback(PrinterCallback)
    # The policy starts as its own reference (LoRA's B is zero; full fine-tuning starts from the same
    # weights), so its log-probs now are the reference's: one forward pass over the sample, no second model.
    reporter.progress(0.05, "held-out log-probs before training")
    before = held_out_logps(trainer)
    reporter.log(f"{len(train)} pairs to train, {len(held_out)} held out ({len(evaluation)} evaluated); "
                 f"{threads} torch threads")
    trainer.train()
    if report.stop_asked:
        raise Cancelled("cancelled during training")
    reporter.progress(0.92, "held-out margin after training")
    metrics = {
        "train_pairs": len(train), "held_out_pairs": len(held_out), "steps": steps,
        "heldout_margin_before": 0.0,  # policy = reference at the start (see above)
        **held_out_figures(before, held_out_logps(trainer)),
        "final_loss": round(next((h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h),
                                 float("nan")), 4),
    }
    if is_main_process():  # under accelerate, one process writes the checkpoint
        save_policy(trainer.model, tokenizer, Path(output_dir), {"base_model": config.base_model,
                                                                 "config": config.to_dict(), "method": "dpo"})
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    reporter.progress(1.0, "done")
    return PolicyResult(Path(output_dir), metrics)


def require_margin_hook() -> None:
    """Refuse a margin run when TRL no longer has the step MarginDPOTrainer extends (MARGIN_HOOK)."""
    from trl import DPOTrainer

    if not callable(getattr(DPOTrainer, MARGIN_HOOK, None)):
        import trl

        raise RunFailed(f"margin_scale > 0 needs TRL's DPOTrainer.{MARGIN_HOOK}, which TRL {trl.__version__} does "
                        "not have: the margins cannot reach the loss. Set margin_scale to 0, or install the TRL "
                        "version Prefloop is tested with (1.16).")


def _margin_trainer_class():
    from trl import DPOTrainer

    class MarginDPOTrainer(DPOTrainer):
        """DPO with a per-pair offset (ODPO): −log σ(β·Δ − m), m = margin_scale × the pair's margin from
        judgment strength and agreement. Done by raising the reference log-prob of the chosen response by m/β
        once, when TRL precomputes reference log-probs (MARGIN_HOOK), so the loss code stays TRL's own. A
        margin run fails at construction unless the offset was applied to the training pairs."""

        def __init__(self, *args, margin_scale: float = 0.0, **kwargs):
            self.margin_scale = margin_scale
            self.margins_applied = False
            if margin_scale:
                require_margin_hook()
            super().__init__(*args, **kwargs)
            if margin_scale and not self.margins_applied:
                raise RunFailed(f"TRL never called DPOTrainer.{MARGIN_HOOK} for the training pairs, so the margins "
                                "would not reach the loss. Set margin_scale to 0, or install TRL 1.16.")

        def _precompute_ref_logps(self, dataset, name, *args, **kwargs):
            out = super()._precompute_ref_logps(dataset, name, *args, **kwargs)
            if self.margin_scale and name == "train":
                missing = {"margin", "ref_chosen_logps"} - set(out.column_names)
                if missing:
                    raise RunFailed(f"TRL's precomputed training pairs lack {', '.join(sorted(missing))}: the "
                                    "margins cannot reach the loss. Set margin_scale to 0, or install TRL 1.16.")
                shifted = [ref + self.margin_scale * margin / self.beta
                           for ref, margin in zip(out["ref_chosen_logps"], out["margin"], strict=True)]
                out = out.remove_columns("ref_chosen_logps").add_column("ref_chosen_logps", shifted)
                self.margins_applied = True
            return out

    return MarginDPOTrainer


def MarginDPOTrainer(*args, **kwargs):  # noqa: N802 -- the class is built on first use: TRL loads lazily
    return _margin_trainer_class()(*args, **kwargs)
