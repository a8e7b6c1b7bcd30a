"""Expert iteration: the policy samples n answers per prompt, a reward model keeps the best of
each (`best_of_n.sample_best`), and the policy is fine-tuned on those answers (TRL's SFTTrainer,
LoRA by default, loss on the answer only). Unlike best-of-n, the gain is in the weights: the next
round samples from a better policy at the same cost.

What says it learned: the training loss fell, and the reward model's mean score of the tuned
policy's own samples on the training prompts rose over the parent's mean sample score
(`reward_after` − `reward_before`, when `eval_prompts` > 0).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .base import (
    Cancelled,
    Reporter,
    RunConfig,
    RunFailed,
    Scaled,
    check,
    set_threads,
    trainer_callback,
    trainer_precision,
)
from .generate import GenerateConfig, sample_best
from .policy import as_completion, as_messages, context_length, load_policy, lora_config, save_policy


@dataclass
class ExpertIterationConfig(RunConfig):
    base_model: str = field(default="smollm2", metadata={
        "help": "the policy to start from (a job fills it from `parent`)"})
    n: int = field(default=4, metadata={"help": "answers sampled per prompt; the reward model keeps the best"})
    prompts: int = field(default=48, metadata={"help": "prompts of the project to sample on (0: all)"})
    max_new_tokens: int = 48
    temperature: float = 0.8
    top_p: float = 0.95
    generation_batch_size: int = 8
    learning_rate: float = 2e-4
    batch_size: int = 4
    max_steps: int = field(default=24, metadata={"help": "fine-tuning steps (0: two passes over the answers)"})
    max_length: int = field(default=256, metadata={"help": "prompt + answer tokens"})
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    eval_prompts: int = field(default=0, metadata={
        "help": "after tuning, sample this many training prompts again and score them (0: skip; costs time)"})
    seed: int = 0
    threads: int = 0

    def __post_init__(self):
        check(2 <= self.n <= 64, "n", "must be between 2 and 64")
        check(0 <= self.prompts <= 100_000, "prompts", "must be between 0 (all) and 100000")
        check(1 <= self.max_new_tokens <= 4096, "max_new_tokens", "must be between 1 and 4096")
        check(0 < self.temperature <= 2, "temperature", "must be above 0 (sampling) and at most 2")
        check(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        check(1 <= self.generation_batch_size <= 512, "generation_batch_size", "must be between 1 and 512")
        check(0 < self.learning_rate < 1, "learning_rate", "must be between 0 and 1")
        check(1 <= self.batch_size <= 512, "batch_size", "must be between 1 and 512")
        check(0 <= self.max_steps <= 1_000_000, "max_steps", "must be 0 (two passes) or more")
        check(32 <= self.max_length <= 131072, "max_length", "must be between 32 and 131072 tokens")
        check(1 <= self.lora_r <= 256, "lora_r", "must be between 1 and 256")
        check(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
        check(self.eval_prompts >= 0, "eval_prompts", "must be 0 or more")
        check(self.threads >= 0, "threads", "must be 0 (automatic) or more")

    def sampling(self) -> GenerateConfig:
        return GenerateConfig(samples=1, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                              top_p=self.top_p, batch_size=self.generation_batch_size, backend="transformers",
                              seed=self.seed, threads=self.threads)


@dataclass
class ExpertIterationResult:
    output_dir: Path
    metrics: dict


def train_expert_iteration(prompts: list[tuple[int, object]], reward_model_dir: str, output_dir: Path,
                           config: ExpertIterationConfig, *, reporter: Reporter | None = None) -> ExpertIterationResult:
    from datasets import Dataset
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    reporter = reporter or Reporter()
    started = time.perf_counter()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if len(prompts) < 2:
        raise RunFailed(f"Expert iteration needs at least 2 prompts; the project has {len(prompts)}.")
    threads = set_threads(config.threads)
    reporter.progress(0.02, f"sampling {config.n} answers for each of {len(prompts)} prompts")
    reporter.log(f"sampling {config.n} answers for each of {len(prompts)} prompts from {config.base_model}")
    best, stats = sample_best(config.base_model, reward_model_dir, prompts, config.n, config.sampling(),
                              reporter=Scaled(reporter, 0.02, 0.45), work_dir=output_dir)
    reporter.checkpoint()
    kept = [row for row in best if row["text"].strip()]
    by_id = dict(prompts)
    reporter.log(f"kept the best of {config.n} for {len(kept)} prompts: reward {stats['reward_gain']:+.3f} over a "
                 f"single sample on average; {stats['mean_answer_tokens']} tokens per answer")
    reporter.progress(0.5, "fine-tuning on the best answers")
    set_seed(config.seed)
    tokenizer, model = load_policy(config.base_model)
    limit = context_length(model)
    check(config.max_length <= limit, "max_length", f"is longer than the model's context ({limit} tokens)")
    dataset = Dataset.from_list([{"prompt": as_messages(by_id[row["prompt_id"]]),
                                  "completion": as_completion(row["text"])} for row in kept])
    steps = config.max_steps or max(1, 2 * len(kept) // config.batch_size)
    args = SFTConfig(
        output_dir=str(output_dir / ".trainer"), per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate, max_steps=steps, max_length=config.max_length,
        completion_only_loss=True, seed=config.seed, logging_steps=1, save_strategy="no", report_to=[],
        **trainer_precision(), disable_tqdm=True, dataloader_num_workers=0,
        warmup_steps=0.1, packing=False,
    )
    report = trainer_callback(reporter, lambda state: (0.5 + 0.4 * state.global_step / max(steps, 1),
                                                       f"step {state.global_step}/{steps}"))
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora_config(config.lora_r, config.lora_alpha, config.lora_dropout)
                         if config.lora else None, callbacks=[report])
    trainer.remove_callback(PrinterCallback)
    reporter.log(f"{len(kept)} answers to fine-tune on, {steps} steps; {threads} torch threads")
    trainer.train()
    if report.stop_asked:
        raise Cancelled("cancelled during training")
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    policy_dir = output_dir / "policy"
    save_policy(trainer.model, tokenizer, policy_dir, {"base_model": config.base_model, "config": config.to_dict(),
                                                       "method": "expert_iteration"})
    metrics = {"prompts": len(prompts), "answers_kept": len(kept), "n": config.n, "steps": steps,
               "mean_answer_tokens": stats["mean_answer_tokens"], "reward_gain_best_of_n": stats["reward_gain"],
               "reward_before": round(sum(r["mean_score"] for r in best) / max(len(best), 1), 4),
               "first_loss": round(losses[0], 4) if losses else None,
               "final_loss": round(sum(losses[-3:]) / len(losses[-3:]), 4) if losses else None}
    if config.eval_prompts:
        reporter.progress(0.92, "sampling the tuned policy again")
        again, _ = sample_best(str(policy_dir), reward_model_dir, prompts[:config.eval_prompts], 2,
                               replace(config.sampling(), seed=config.seed + 1), work_dir=output_dir)
        metrics["reward_after"] = round(sum(r["mean_score"] for r in again) / max(len(again), 1), 4)
        again_ids = {r["prompt_id"] for r in again}
        before = [r["mean_score"] for r in best if r["prompt_id"] in again_ids]
        metrics["reward_before_same_prompts"] = round(sum(before) / max(len(before), 1), 4)
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    reporter.progress(1.0, "done")
    return ExpertIterationResult(policy_dir, metrics)
