"""GRPO through TRL's GRPOTrainer, LoRA by default, with reward functions from `rewards.functions`.

Input: prompts (text or chat messages), each optionally with a `reference` response for the
shaping that centres on one (PAR, delta). The reward is a weighted sum of named reward functions;
the held-out mean reward is measured on prompts the run never trains on, before and after.

The policy reads every prompt as chat messages; a reward model reads it as it was stored (plain
text stays plain text), the one rendering its training pairs had (`trainer_rows`).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from rewards import functions as fn
from rewards.text import render_prompt

from .base import (
    Cancelled,
    ConfigError,
    Reporter,
    RunConfig,
    RunFailed,
    check,
    set_threads,
    trainer_callback,
    trainer_precision,
)
from .distributed import check_launch_fields, is_main_process, run_launched, wants_launch
from .dpo import PolicyResult
from .policy import as_messages, check_prompt_lengths, context_length, load_policy, lora_config, save_policy


@dataclass
class GRPOConfig(RunConfig):
    base_model: str = field(default="smollm2", metadata={"help": "the policy to start from (a job fills it)"})
    rewards: list[str] = field(default_factory=lambda: ["reward_model"], metadata={
        "help": "reward functions, summed with reward_weights", "choices": {
            "reward_model": "the reward model's score", "pairwise_winrate": "win rate against the group (reward model)",
            "length_target": "close to length_target_words", "length_penalty": "shorter than length_penalty_chars",
            "contains_keyword": "says the keyword"}})
    reward_weights: list[float] = field(default_factory=list, metadata={"help": "one weight per reward (default 1)"})
    shaping: str = field(default="none", metadata={"help": "shaping of the reward model's score", "choices": {
        "none": "raw score", "par": "PAR: sigmoid of the score minus the reference answer's",
        "delta": "score minus the reference answer's", "clip": "clipped to clip_low…clip_high"}})
    uncertainty_penalty: float = field(default=0.5, metadata={
        "help": "reward model: mean − this × ensemble spread"})
    clip_low: float = -1.0
    clip_high: float = 1.0
    length_target_words: int = 20
    length_penalty_chars: int = 1200
    keyword: str = "please"
    num_generations: int = field(default=4, metadata={"help": "completions per prompt (a GRPO group)"})
    prompts_per_step: int = 4
    max_completion_length: int = 64
    temperature: float = 1.0
    beta: float = field(default=0.04, metadata={"help": "KL pull toward the reference (0: none, no reference model)"})
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    learning_rate: float = 1e-4
    max_steps: int = 20
    eval_prompts: int = field(default=8, metadata={"help": "prompts held out to measure mean reward"})
    seed: int = 0
    threads: int = 0
    num_processes: int = field(default=1, metadata={
        "help": "GPUs on this worker to train on: above 1, the run re-launches itself with `accelerate launch`"})
    accelerate_config: str = field(default="", metadata={
        "help": "an `accelerate config` file on the worker (DeepSpeed ZeRO-1/2, mixed settings); launches too"})

    def __post_init__(self):
        check_launch_fields(self.num_processes, self.accelerate_config)
        known = {*fn.BASE_REWARDS, "pairwise_winrate"}
        check(bool(self.rewards), "rewards", "name at least one reward function")
        for name in self.rewards:
            check(name in known, "rewards", f"{name!r} is not a reward function; known: {', '.join(sorted(known))}")
        check(not self.reward_weights or len(self.reward_weights) == len(self.rewards), "reward_weights",
              "give one weight per reward function, or none")
        check(self.shaping in fn.SHAPING, "shaping", f"use one of {', '.join(fn.SHAPING)}")
        check(self.uncertainty_penalty >= 0, "uncertainty_penalty", "must be 0 or more")
        check(self.clip_low < self.clip_high, "clip_low", "must be below clip_high")
        check(self.length_target_words >= 1, "length_target_words", "must be at least 1")
        check(self.length_penalty_chars >= 1, "length_penalty_chars", "must be at least 1")
        check(2 <= self.num_generations <= 64, "num_generations", "must be between 2 and 64")
        check(1 <= self.prompts_per_step <= 256, "prompts_per_step", "must be between 1 and 256")
        check(4 <= self.max_completion_length <= 8192, "max_completion_length", "must be between 4 and 8192")
        check(0 < self.temperature <= 2, "temperature", "must be above 0 and at most 2")
        check(0 <= self.beta <= 10, "beta", "must be between 0 and 10")
        check(1 <= self.lora_r <= 256, "lora_r", "must be between 1 and 256")
        check(0 < self.learning_rate < 1, "learning_rate", "must be between 0 and 1")
        check(1 <= self.max_steps <= 1_000_000, "max_steps", "must be at least 1")
        check(1 <= self.eval_prompts <= 1000, "eval_prompts", "must be between 1 and 1000")
        check(self.threads >= 0, "threads", "must be 0 (automatic) or more")


def build_rewards(config: GRPOConfig, reward_model_dir: str | None) -> tuple[list, list[float]]:
    """The reward callables TRL will call, and their weights."""
    functions = []
    for name in config.rewards:
        if name in ("reward_model", "pairwise_winrate"):
            if not reward_model_dir:
                raise ConfigError("rewards", f"{name} needs a reward model: train one first, or name its checkpoint")
            base = fn.RewardModelReward(reward_model_dir, uncertainty_penalty=config.uncertainty_penalty)
            if config.shaping == "par":
                base = fn.PAR(base)
            elif config.shaping == "delta":
                base = fn.Delta(base)
            elif config.shaping == "clip":
                base = fn.Clip(base, config.clip_low, config.clip_high)
            functions.append(fn.PairwiseWinRate(base) if name == "pairwise_winrate" else base)
        elif name == "length_target":
            functions.append(fn.LengthTarget(config.length_target_words))
        elif name == "length_penalty":
            functions.append(fn.LengthPenalty(config.length_penalty_chars))
        elif name == "contains_keyword":
            functions.append(fn.ContainsKeyword(config.keyword))
    return functions, list(config.reward_weights or [1.0] * len(functions))


def load_prompts(path: Path) -> list[dict]:
    """JSONL of {prompt, reference?}."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            rows.append({"prompt": row["prompt"], "reference": row.get("reference") or ""})
    return rows


def trainer_rows(rows: list[dict]) -> list[dict]:
    """The rows GRPOTrainer reads: `prompt` as chat messages for the policy; `reward_prompt` the
    prompt as stored, rendered as the reward model's training pairs render it (`rewards.text`)."""
    return [{"prompt": as_messages(r["prompt"]), "reference": r["reference"], "reward_prompt": render_prompt(r["prompt"])}
            for r in rows]


def _held_out(rows: list[dict], count: int, seed: int) -> tuple[list[dict], list[dict]]:
    ranked = sorted(rows, key=lambda r: hashlib.sha256(f"{seed}:{json.dumps(r['prompt'])}".encode()).digest())
    return ranked[count:], ranked[:count]


def mean_reward(model, tokenizer, rows: list[dict], functions, weights, config: GRPOConfig) -> float:
    """Greedy completions for held-out prompts, scored by the weighted rewards."""
    import torch

    rows = trainer_rows(rows)
    prompts = [r["prompt"] for r in rows]
    texts = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(prompts), 8):
            batch = prompts[start:start + 8]
            encoded = tokenizer.apply_chat_template(batch, add_generation_prompt=True, padding=True,
                                                    return_tensors="pt", return_dict=True).to(model.device)
            out = model.generate(**encoded, max_new_tokens=config.max_completion_length, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            texts += tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    columns = {"reference": [r["reference"] for r in rows], "reward_prompt": [r["reward_prompt"] for r in rows]}
    total = [0.0] * len(rows)
    for function, weight in zip(functions, weights, strict=True):
        for i, value in enumerate(function(prompts, completions, **columns)):
            total[i] += weight * value
    model.train()
    return round(sum(total) / len(total), 4)


def train_grpo(prompts_path: Path, output_dir: Path, config: GRPOConfig, *, reward_model_dir: str | None = None,
               reporter: Reporter | None = None) -> PolicyResult:
    from datasets import Dataset
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer

    reporter = reporter or Reporter()
    if wants_launch(config):  # several GPUs: the same function, in processes `accelerate launch` starts
        metrics = run_launched("grpo", {"prompts": str(prompts_path), "reward_model_dir": reward_model_dir}, output_dir, config, reporter)
        return PolicyResult(Path(output_dir), metrics)
    started = time.perf_counter()
    output_dir = Path(output_dir)
    threads = set_threads(config.threads)
    rows = load_prompts(Path(prompts_path))
    train, held = _held_out(rows, config.eval_prompts, config.seed)
    if len(train) < config.prompts_per_step:
        raise RunFailed(f"{len(rows)} prompts: {len(train)} left to train on after holding {len(held)} out, fewer "
                        f"than prompts_per_step={config.prompts_per_step}. Add prompts or lower those settings.")
    functions, weights = build_rewards(config, reward_model_dir)
    reporter.progress(0.02, f"loading the policy {config.base_model}")
    reporter.log(f"loading the policy {config.base_model}")  # logged too: a progress message can be throttled
    set_seed(config.seed)  # LoRA's initial weights too: same seed and data, same policy
    tokenizer, model = load_policy(config.base_model, for_generation=True)
    limit = context_length(model)
    check_prompt_lengths(tokenizer, [r["prompt"] for r in rows], limit - config.max_completion_length,
                         "the model's context less max_completion_length")
    reporter.progress(0.05, "held-out reward before training")
    before = mean_reward(model, tokenizer, held, functions, weights, config)
    reporter.log(f"{len(train)} prompts to train, {len(held)} held out; {threads} torch threads; "
                 f"held-out mean reward before: {before}")

    report = trainer_callback(reporter, lambda state: (0.1 + 0.8 * state.global_step / config.max_steps,
                                                       f"step {state.global_step}/{config.max_steps}"))

    dataset = Dataset.from_list(trainer_rows(train))
    args = TRLConfig(
        output_dir=str(output_dir / ".trainer"), learning_rate=config.learning_rate, max_steps=config.max_steps,
        per_device_train_batch_size=config.prompts_per_step * config.num_generations,
        num_generations=config.num_generations, max_completion_length=config.max_completion_length,
        temperature=config.temperature, beta=config.beta, reward_weights=weights, seed=config.seed,
        logging_steps=1, save_strategy="no", report_to=[], **trainer_precision(),
        gradient_checkpointing=False, disable_tqdm=True, dataloader_num_workers=0, log_completions=False,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=functions, args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[report],
                          peft_config=lora_config(config.lora_r, config.lora_alpha, config.lora_dropout)
                          if config.lora else None)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    if report.stop_asked:
        raise Cancelled("cancelled during training")
    reporter.progress(0.92, "held-out reward after training")
    after = mean_reward(trainer.model, tokenizer, held, functions, weights, config)
    history = [h for h in trainer.state.log_history if "reward" in h]
    metrics = {
        "train_prompts": len(train), "held_out_prompts": len(held), "steps": config.max_steps,
        "heldout_reward_before": before, "heldout_reward_after": after,
        "train_reward_first": round(history[0]["reward"], 4) if history else None,
        "train_reward_last": round(history[-1]["reward"], 4) if history else None,
        "kl_last": round(history[-1].get("kl", 0.0), 4) if history else None,
        "completion_length_last": round(history[-1].get("completions/mean_length", 0.0), 1) if history else None,
    }
    if is_main_process():  # under accelerate, one process writes the checkpoint
        save_policy(trainer.model, tokenizer, output_dir, {"base_model": config.base_model, "config": config.to_dict(),
                                                           "method": "grpo"})
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    reporter.progress(1.0, "done")
    return PolicyResult(output_dir, metrics)
