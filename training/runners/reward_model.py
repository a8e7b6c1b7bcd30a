"""Reward-model training: a Bradley–Terry model (or K of them, an ensemble) on a dataset snapshot.

Input: a snapshot in the export's `raw` format (one JSON line per judgment). Votes on a comparison
are resolved as the config says, pairs are split into train and held-out by prompt (a prompt is
never on both sides), the texts are tokenized keeping their end, and TRL's RewardTrainer, with
Prefloop's losses and optional rubric heads, trains each member. Output: a checkpoint directory
(one sub-directory per member and a `prefloop.json` manifest) and the held-out evaluation against
the random and "longer wins" baselines.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from rewards.backbones import resolve as resolve_model
from rewards.losses import LOSSES
from rewards.text import prepare_tokenizer
from rewards.votes import VOTE_MODES, resolve, strength_of

from .base import (
    Cancelled,
    ConfigError,
    Reporter,
    RunConfig,
    RunFailed,
    check,
    device,
    set_threads,
    trainer_callback,
    trainer_precision,
)


@dataclass
class RewardModelConfig(RunConfig):
    base_model: str = field(default="minilm", metadata={
        "help": "'minilm' (shipped, trains on CPU), a local path, or a Hugging Face id"})
    loss: str = field(default="bt", metadata={"help": "how a vote becomes a loss", "choices": {
        "bt": "Bradley–Terry", "bt_margin": "Bradley–Terry with the vote's margin",
        "label_smoothing": "Bradley–Terry with label smoothing (noisy votes)",
        "tie_aware": "Rao–Kupper: ties are learned too"}})
    votes: str = field(default="majority", metadata={"help": "several votes on one comparison", "choices": {
        "majority": "the majority side, one pair", "all": "a pair per vote",
        "weighted": "one pair with a margin (bt_margin reads it)"}})
    label_smoothing: float = field(default=0.1, metadata={"help": "ε for label_smoothing"})
    tie_threshold: float = field(default=1.0, metadata={"help": "θ of the tie-aware (Rao–Kupper) loss"})
    rubric: bool = field(default=False, metadata={"help": "also regress the project's rubric criteria"})
    rubric_weight: float = field(default=1.0, metadata={"help": "weight of the rubric loss"})
    ensemble_size: int = field(default=1, metadata={"help": "members trained with different seeds"})
    embedding_head: bool = field(default=False, metadata={
        "help": "also fit a Bradley–Terry head on frozen MiniLM embeddings of the responses and average "
                "its reward with the fine-tuned model's"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the training pairs"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many steps per member (0: epochs)"})
    learning_rate: float = 3e-5
    batch_size: int = 8
    max_length: int = field(default=256, metadata={"help": "tokens per (prompt, response); cut from the left"})
    eval_fraction: float = field(default=0.2, metadata={"help": "share of prompts held out for evaluation"})
    min_pairs: int = field(default=20, metadata={"help": "refuse to train on fewer usable pairs"})
    seed: int = 0
    threads: int = field(default=0, metadata={"help": "torch threads on CPU; 0: cores − 1"})
    min_trust: float | None = field(default=None, metadata={
        "help": "leave out judgments of annotators whose trust is below this (0 to 1)"})
    exclude_flagged: bool = field(default=False, metadata={
        "help": "leave out noise-flagged judgments and those of flagged annotators"})
    settled_only: bool = field(default=False, metadata={"help": "train only on comparisons a reviewer settled"})

    def __post_init__(self):
        check(self.loss in LOSSES, "loss", f"{self.loss!r} is not a loss; use one of {', '.join(LOSSES)}")
        check(self.votes in VOTE_MODES, "votes", f"use one of {', '.join(VOTE_MODES)}")
        check(0 <= self.label_smoothing < 0.5, "label_smoothing", "must be in [0, 0.5)")
        check(self.tie_threshold > 0, "tie_threshold", "must be above 0")
        check(self.rubric_weight >= 0, "rubric_weight", "must be 0 or more")
        check(1 <= self.ensemble_size <= 16, "ensemble_size", "must be between 1 and 16")
        check(0 < self.epochs <= 100, "epochs", "must be above 0 and at most 100")
        check(self.max_steps >= 0, "max_steps", "must be 0 (use epochs) or more")
        check(0 < self.learning_rate < 1, "learning_rate", "must be between 0 and 1, e.g. 3e-5")
        check(1 <= self.batch_size <= 1024, "batch_size", "must be between 1 and 1024")
        check(16 <= self.max_length <= 8192, "max_length", "must be between 16 and 8192 tokens")
        check(0 < self.eval_fraction < 0.9, "eval_fraction", "must be between 0 and 0.9")
        check(self.min_pairs >= 1, "min_pairs", "must be at least 1")
        check(self.threads >= 0, "threads", "must be 0 (automatic) or more")
        check(self.min_trust is None or 0 <= self.min_trust <= 1, "min_trust", "must be a number from 0 to 1")
        check(bool(self.base_model.strip()), "base_model", "name a model: 'minilm', a path or a hub id")

    @property
    def vote_mode(self) -> str:
        return "weighted" if self.loss == "bt_margin" else self.votes


@dataclass
class Pair:
    prompt: str | list
    chosen: str | list
    rejected: str | list
    margin: float
    tie: bool
    strength: str | None
    group: str
    rubric_chosen: list[float] = field(default_factory=list)
    rubric_rejected: list[float] = field(default_factory=list)
    mask_chosen: list[float] = field(default_factory=list)
    mask_rejected: list[float] = field(default_factory=list)


@dataclass
class RewardModelResult:
    output_dir: Path
    metrics: dict


def load_pairs(snapshot: Path, config: RewardModelConfig, criteria: list[dict]) -> list[Pair]:
    """Pairs from a `raw` snapshot: votes resolved per comparison, rubric scores averaged per side
    and scaled to [0, 1] by each criterion's range."""
    by_comparison: dict[int, list[dict]] = defaultdict(list)
    with open(snapshot, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            by_comparison[row["comparison"]].append(row)
    keep_ties = config.loss == "tie_aware"
    pairs = []
    for rows in by_comparison.values():
        first = rows[0]
        votes = [(r["choice"], r["strength"]) for r in rows]
        settled = first.get("settled")
        if settled == "discard":
            continue
        if settled:  # a reviewer's decision is the comparison's label
            votes = [(settled, None)]
        rubric = _mean_rubric(rows, criteria)
        for winner, margin in resolve(votes, config.vote_mode):
            if winner == "tie" and not keep_ties:
                continue
            chosen, rejected = ("b", "a") if winner == "b" else ("a", "b")
            pairs.append(Pair(
                prompt=first["prompt"], chosen=first[f"response_{chosen}"], rejected=first[f"response_{rejected}"],
                margin=float(margin or 0.0), tie=winner == "tie", strength=strength_of(votes, winner),
                group=hashlib.sha256(json.dumps(first["prompt"]).encode()).hexdigest(),
                rubric_chosen=rubric[chosen][0], mask_chosen=rubric[chosen][1],
                rubric_rejected=rubric[rejected][0], mask_rejected=rubric[rejected][1],
            ))
    return pairs


def _mean_rubric(rows: list[dict], criteria: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    out = {}
    for side in ("a", "b"):
        targets, mask = [], []
        for c in criteria:
            scores = [r["rubric_scores"][c["key"]][side] for r in rows
                      if side in (r.get("rubric_scores") or {}).get(c["key"], {})]
            if scores:
                mean = sum(scores) / len(scores)
                targets.append((mean - c["scale_min"]) / (c["scale_max"] - c["scale_min"]))
                mask.append(1.0)
            else:
                targets.append(0.0)
                mask.append(0.0)
        out[side] = (targets, mask)
    return out


def split(pairs: list[Pair], eval_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Held out by prompt, deterministically: the same prompt never trains and evaluates."""
    def held_out(pair: Pair) -> bool:
        digest = hashlib.sha256(f"{seed}:{pair.group}".encode()).digest()
        return int.from_bytes(digest[:4], "big") / 2**32 < eval_fraction

    train = [p for p in pairs if not held_out(p)]
    evaluation = [p for p in pairs if held_out(p)]
    return train, evaluation


def _load_backbone(name: str, outputs: int):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_model(name)
    if (path.startswith(("/", "./", "../", "~")) or Path(path).suffix) and not Path(path).expanduser().exists():
        raise RunFailed(f"The model path {path} does not exist. Give 'minilm', an existing directory or a hub id.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=outputs)
    except (OSError, ValueError) as exc:
        raise RunFailed(f"Could not load the model {name!r}: {str(exc).splitlines()[0]}") from None
    prepare_tokenizer(tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


def _dataset(pairs: list[Pair], tokenizer, config: RewardModelConfig, rubric: bool):
    from datasets import Dataset

    from rewards.text import encode, reward_input

    rows = []
    for p in pairs:
        row = {
            "chosen_ids": encode(tokenizer, reward_input(p.prompt, p.chosen), config.max_length),
            "rejected_ids": encode(tokenizer, reward_input(p.prompt, p.rejected), config.max_length),
            "margin": p.margin, "tie": p.tie,
        }
        if rubric:
            row.update(rubric_chosen=p.rubric_chosen, rubric_rejected=p.rubric_rejected,
                       rubric_mask_chosen=p.mask_chosen, rubric_mask_rejected=p.mask_rejected)
        rows.append(row)
    return Dataset.from_list(rows)


def train_reward_model(snapshot: Path, output_dir: Path, config: RewardModelConfig, *,
                       criteria: list[dict] | None = None, reporter: Reporter | None = None) -> RewardModelResult:
    """Train, save and evaluate. `criteria` (the project's rubric) matters only with rubric=True."""
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback
    from trl import RewardConfig

    from rewards.evaluation import pairwise_report
    from rewards.scoring import MANIFEST, RewardModel
    from rewards.text import render_response
    from rewards.trainer import PreferenceCollator, PrefloopRewardTrainer

    reporter = reporter or Reporter()
    started = time.perf_counter()
    threads = set_threads(config.threads)
    criteria = list(criteria or []) if config.rubric else []
    if config.rubric and not criteria:
        raise ConfigError("rubric", "the project has no rubric criteria to regress")
    pairs = load_pairs(Path(snapshot), config, criteria)
    train, held_out = split(pairs, config.eval_fraction, config.seed)
    usable = [p for p in train if not p.tie] if config.loss != "tie_aware" else train
    if len(usable) < config.min_pairs:
        raise RunFailed(f"Too few judged pairs to train on: {len(usable)} usable for training (of {len(pairs)} "
                        f"resolved from the snapshot), at least {config.min_pairs} needed (min_pairs). Collect "
                        "more judgments, or lower min_pairs.")
    reporter.log(f"{len(pairs)} pairs: {len(train)} to train, {len(held_out)} held out; {threads} torch threads")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    outputs = 1 + len(criteria)
    per_member = config.max_steps or max(1, int(len(train) * config.epochs / config.batch_size + 0.999))
    member_names = []
    train_metrics = []

    for member in range(config.ensemble_size):
        reporter.checkpoint()
        set_seed(config.seed + member)  # the new head's weights too: same seed and data, same model
        reporter.progress(0.95 * member / config.ensemble_size, f"member {member + 1}/{config.ensemble_size}: "
                          f"loading {config.base_model}")
        reporter.log(f"member {member + 1}: loading {config.base_model}")  # logged too: progress can be throttled
        tokenizer, model = _load_backbone(config.base_model, outputs)
        dataset = _dataset(train, tokenizer, config, rubric=bool(criteria))
        report = trainer_callback(
            reporter,
            lambda state, m=member: (0.95 * (m + state.global_step / max(state.max_steps, 1)) / config.ensemble_size,
                                     f"member {m + 1}/{config.ensemble_size}, "
                                     f"step {state.global_step}/{state.max_steps}"),
            step_offset=member * per_member,
            names=("loss", "accuracy", "margin", "rubric_mse", "learning_rate", "grad_norm"))
        args = RewardConfig(
            output_dir=str(output_dir / f".trainer_{member}"), per_device_train_batch_size=config.batch_size,
            learning_rate=config.learning_rate, num_train_epochs=config.epochs, max_steps=config.max_steps or -1,
            seed=config.seed + member, logging_steps=max(1, per_member // 50), save_strategy="no", report_to=[],
            **trainer_precision(), gradient_checkpointing=False, disable_tqdm=True,
            max_length=None, dataloader_num_workers=0, warmup_steps=0.1,
        )
        trainer = PrefloopRewardTrainer(
            model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
            data_collator=PreferenceCollator(pad_token_id=tokenizer.pad_token_id), callbacks=[report],
            loss=config.loss, label_smoothing=config.label_smoothing, tie_threshold=config.tie_threshold,
            rubric_weight=config.rubric_weight,
        )
        trainer.remove_callback(PrinterCallback)
        result = trainer.train()
        if report.stop_asked:
            raise Cancelled("cancelled during training")
        name = f"member_{member}"
        trainer.save_model(str(output_dir / name))
        tokenizer.save_pretrained(str(output_dir / name))
        member_names.append(name)
        train_metrics.append(float(result.training_loss))
        _remove_tree(output_dir / f".trainer_{member}")

    manifest = {"kind": "reward_model", "base_model": config.base_model, "members": member_names,
                "max_length": config.max_length, "criteria": criteria, "config": config.to_dict()}
    decisive = [p for p in train if not p.tie]
    if config.embedding_head and decisive:  # (tie_aware may train on ties alone)
        reporter.checkpoint()
        reporter.progress(0.95, "fitting the embedding head")
        manifest["head"] = _fit_embedding_head(decisive, output_dir)
        reporter.log(f"embedding head fitted on {manifest['head']['pairs']} pairs")
    (output_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))

    reporter.progress(0.96, "evaluating on held-out pairs")
    scorer = RewardModel(output_dir, device=device())
    evaluated = [p for p in held_out if not p.tie]
    metrics: dict = {"pairs": len(pairs), "train_pairs": len(train), "held_out_pairs": len(evaluated),
                     "train_loss": round(sum(train_metrics) / len(train_metrics), 4),
                     "ensemble_size": config.ensemble_size}
    if evaluated:
        chosen = scorer.score([p.prompt for p in evaluated], [p.chosen for p in evaluated], config.batch_size)
        rejected = scorer.score([p.prompt for p in evaluated], [p.rejected for p in evaluated], config.batch_size)
        deltas = (chosen.mean - rejected.mean).tolist()
        report = pairwise_report(deltas, [p.strength for p in evaluated],
                                 [len(render_response(p.chosen)) for p in evaluated],
                                 [len(render_response(p.rejected)) for p in evaluated])
        metrics.update(eval_accuracy=report["accuracy"], eval=report)
        metrics["eval_mean_spread"] = round(float(((chosen.spread + rejected.spread) / 2).mean()), 4)
        if chosen.parts:  # what each part scores alone, beside the average
            metrics["eval_parts"] = {name: round(float((chosen.parts[name] > rejected.parts[name]).mean()), 4)
                                     for name in chosen.parts}
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    (output_dir / MANIFEST).write_text(json.dumps({**manifest, "metrics": metrics}, indent=2))
    reporter.progress(1.0, "done")
    return RewardModelResult(output_dir=output_dir, metrics=metrics)


def _fit_embedding_head(decisive: list[Pair], output_dir: Path) -> dict:
    """Fit the checkpoint's embedding head on the decisive (non-tie) training pairs; returns its
    manifest entry. L2 is the queue head's default, the one measured in docs/benchmarks.md."""
    import numpy as np

    from rewards.embeddings import ENCODER, MAX_LENGTH, Encoder, response_text
    from rewards.preference_head import DEFAULT_L2, fit_pair_head

    encoder = Encoder(ENCODER, MAX_LENGTH, device())
    chosen = encoder.embed([response_text(p.prompt, p.chosen) for p in decisive])
    rejected = encoder.embed([response_text(p.prompt, p.rejected) for p in decisive])
    weights = fit_pair_head(chosen, rejected, l2=DEFAULT_L2)
    np.save(output_dir / "head.npy", weights.astype(np.float32))
    return {"file": "head.npy", "encoder": ENCODER, "max_length": MAX_LENGTH, "l2": DEFAULT_L2,
            "pairs": len(decisive)}


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
