"""Policy runners without Django: DPO on SmolLM2 + LoRA raises the held-out margin; GRPO raises the
mean of a toy verifiable reward; generation writes whole files or nothing; bad inputs are refused."""

import json

import pytest

from training.runners.base import Cancelled, ConfigError, Reporter, RunFailed
from training.runners.dpo import DPOConfig, train_dpo
from training.runners.generate import GenerateConfig, generate_answers
from training.runners.grpo import GRPOConfig, train_grpo

from .conftest import ALPACA_JUDGMENTS, shared_file

pytestmark = pytest.mark.ml


def preference_snapshot(path, n=26):
    """AlpacaEval pairs where GPT-4 Turbo's answer was preferred, as a trl-preference export."""
    with open(shared_file(ALPACA_JUDGMENTS / "gpt4_1106_preview_vs_text_davinci_003.jsonl")) as handle:
        rows = [json.loads(line) for line in handle]
    lines = []
    for row in rows:
        if row["preference"] not in (1, 2) or len(row["instruction"]) > 200:
            continue
        chosen, rejected = (row["output_1"], row["output_2"]) if row["preference"] == 1 else (row["output_2"],
                                                                                             row["output_1"])
        lines.append({"prompt": row["instruction"], "chosen": chosen[:400], "rejected": rejected[:400],
                      "margin": 2.0})
        if len(lines) == n:
            break
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def test_dpo_raises_the_held_out_margin(tmp_path):
    from safetensors.torch import load_file

    from rewards.backbones import smollm2_path

    snapshot = preference_snapshot(tmp_path / "prefs.jsonl", n=20)
    config = DPOConfig.from_dict({"max_steps": 3, "batch_size": 2, "max_length": 128, "learning_rate": 5e-4,
                                  "eval_fraction": 0.25, "min_pairs": 4, "seed": 1})
    result = train_dpo(snapshot, tmp_path / "policy", config)

    metrics = result.metrics
    assert metrics["heldout_margin_after"] > 0.5, metrics
    assert metrics["heldout_accuracy_after"] > 0.5, metrics
    trained = load_file(tmp_path / "policy" / "model.safetensors")
    original = load_file(f"{smollm2_path()}/model.safetensors")
    key = next(k for k in original if k.endswith("layers.0.self_attn.q_proj.weight"))
    assert not (trained[key] == original[key]).all()  # LoRA was merged into the saved weights
    assert json.loads((tmp_path / "policy" / "prefloop.json").read_text())["method"] == "dpo"


def test_dpo_margins_reach_the_loss(tmp_path):
    """With margin_scale > 0 each pair's margin m offsets the loss, −log σ(β·Δ − m·scale). At the first
    step the policy is its own reference (LoRA starts at zero), so Δ = 0 and the first batch's loss is
    exactly softplus(m·scale), not log 2; its logged reward margin is −m·scale. If the runner's hook
    into TRL (the reference log-probs it shifts) stopped being called, the loss would be log 2."""
    import math

    snapshot = preference_snapshot(tmp_path / "prefs.jsonl", n=8)  # every pair has margin 2.0
    recorder = Recorder()
    config = DPOConfig.from_dict({"base_model": tiny_policy(tmp_path / "tiny"), "max_steps": 1, "batch_size": 2,
                                  "max_length": 96, "eval_fraction": 0.25, "min_pairs": 2, "seed": 1,
                                  "margin_scale": 0.5})
    train_dpo(snapshot, tmp_path / "policy", config, reporter=recorder)
    offset = 0.5 * 2.0
    first_loss, first_margin = recorder.metrics["train/loss"][0], recorder.metrics["train/rewards/margins"][0]
    assert abs(first_loss - math.log1p(math.exp(offset))) < 0.02, (first_loss, math.log(2))
    assert abs(first_margin + offset) < 0.02, first_margin


def test_margins_hook_into_trl_where_the_runner_expects():
    """Margin DPO extends a private TRL step (MARGIN_HOOK). This fails the day TRL renames it or
    changes its arguments, before any run trains without margins."""
    import inspect

    from trl import DPOTrainer

    from training.runners.dpo import MARGIN_HOOK, _margin_trainer_class

    hook = getattr(DPOTrainer, MARGIN_HOOK, None)
    assert callable(hook), f"TRL's DPOTrainer has no {MARGIN_HOOK}: margin DPO needs another way in"
    assert list(inspect.signature(hook).parameters)[:3] == ["self", "dataset", "name"]
    assert MARGIN_HOOK in vars(_margin_trainer_class())  # the subclass overrides that very name


def test_margin_dpo_without_trls_hook_fails_and_says_why(tmp_path, monkeypatch):
    from trl import DPOTrainer

    from training.runners.dpo import MARGIN_HOOK

    monkeypatch.delattr(DPOTrainer, MARGIN_HOOK)
    snapshot = preference_snapshot(tmp_path / "prefs.jsonl", n=8)
    with pytest.raises(RunFailed, match=f"margin_scale > 0 needs TRL's DPOTrainer.{MARGIN_HOOK}"):
        train_dpo(snapshot, tmp_path / "policy", DPOConfig.from_dict({"margin_scale": 0.5, "min_pairs": 2,
                                                                      "eval_fraction": 0.25}))


def keyword_snapshot(path, n=40):
    """Pairs where the chosen answer is made of words with a "u" (the tiny policy's one direction)."""
    rows = [{"prompt": f"Question {i}: say something.", "chosen": "Sure, you used our unusual tune.",
             "rejected": "No, not at this point.", "margin": 1.0} for i in range(n)]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def test_dpo_held_out_figures_agree_with_trls_own_evaluation(tmp_path):
    """The runner measures held-out log-ratios itself (per pair, for intervals); on the same pairs
    they must agree with TRL's evaluate(), which compares against the adapters-off reference."""
    from training.runners.dpo import build_trainer, held_out_figures, held_out_logps, load_preference_rows
    from training.runners.policy import load_policy

    config = DPOConfig.from_dict({"base_model": tiny_policy(tmp_path / "tiny"), "batch_size": 2, "max_length": 64,
                                  "learning_rate": 1e-2, "min_pairs": 2})
    rows = load_preference_rows(keyword_snapshot(tmp_path / "prefs.jsonl", n=8))
    tokenizer, model = load_policy(config.base_model)
    trainer = build_trainer(model, tokenizer, rows[:4], rows[4:], config, tmp_path / "out", steps=2)
    before = held_out_logps(trainer)
    trainer.train()
    ours = held_out_figures(before, held_out_logps(trainer))
    theirs = trainer.evaluate()
    assert ours["heldout_eval_pairs"] == 4
    assert abs(ours["heldout_margin_after"]) > 0.01, ours  # it moved: the comparison means something
    assert ours["heldout_margin_after"] == pytest.approx(theirs["eval_rewards/margins"] / config.beta, abs=2e-3)
    assert ours["heldout_logratio_chosen"] == pytest.approx(theirs["eval_rewards/chosen"] / config.beta, abs=2e-3)
    assert ours["heldout_accuracy_after"] == pytest.approx(theirs["eval_rewards/accuracies"])


def test_dpo_evaluates_a_sample_of_the_held_out_pairs_with_intervals(tmp_path):
    from training.summaries import evaluation_of

    snapshot = keyword_snapshot(tmp_path / "prefs.jsonl")
    config = DPOConfig.from_dict({"base_model": tiny_policy(tmp_path / "tiny"), "max_steps": 6, "batch_size": 4,
                                  "max_length": 64, "learning_rate": 1e-2, "eval_fraction": 0.5, "eval_pairs": 6,
                                  "min_pairs": 4})
    metrics = train_dpo(snapshot, tmp_path / "policy", config).metrics
    assert metrics["held_out_pairs"] > 6 and metrics["heldout_eval_pairs"] == 6, metrics
    assert metrics["heldout_margin_low"] <= metrics["heldout_margin_after"] <= metrics["heldout_margin_high"]
    assert metrics["heldout_accuracy_low"] <= metrics["heldout_accuracy_after"] <= metrics["heldout_accuracy_high"]
    assert metrics["heldout_margin_low"] > 0, metrics  # learned, and the interval says so
    assert metrics["heldout_accuracy_after"] == 1.0 and metrics["heldout_accuracy_low"] < 1.0
    accuracy_row = evaluation_of(metrics).rows[1]  # the job and model pages say it too
    assert "6 of" in accuracy_row[3] and "95% interval" in accuracy_row[3], accuracy_row


def tiny_policy(directory, keyword="u"):
    """A two-layer Llama with SmolLM2's tokenizer and chat template, built here so GRPO's loop runs
    in seconds. Its output layer gives every token containing `keyword` a shared direction (hidden
    unit 0), so "say more such tokens" is one direction to learn, not ten thousand rows."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rewards.backbones import smollm2_path

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=False))
    marked = torch.tensor([keyword in tokenizer.decode([i]).lower() for i in range(len(tokenizer))])
    with torch.no_grad():
        model.lm_head.weight[marked, 0] = 3.0
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def prompts_file(path, n=24):
    with open(shared_file(ALPACA_JUDGMENTS.parent / "instructions.jsonl")) as handle:
        rows = [json.loads(line) for line in handle][:n]
    path.write_text("\n".join(json.dumps({"prompt": r["instruction"]}) for r in rows) + "\n")
    return path


def test_grpo_raises_the_mean_of_a_verifiable_reward(tmp_path):
    model = tiny_policy(tmp_path / "tiny")
    config = GRPOConfig.from_dict({
        "base_model": model, "rewards": ["contains_keyword"], "keyword": "u", "max_steps": 8,
        "prompts_per_step": 2, "num_generations": 8, "max_completion_length": 4, "eval_prompts": 8,
        "learning_rate": 1e-2, "beta": 0.0, "lora": False, "temperature": 1.0, "seed": 0})
    recorder = Recorder()
    result = train_grpo(prompts_file(tmp_path / "prompts.jsonl"), tmp_path / "policy", config, reporter=recorder)
    rewards = recorder.metrics["train/reward"]
    assert sum(rewards[-3:]) / 3 > rewards[0] + 0.15, rewards  # the first step's reward is the untrained policy's
    assert result.metrics["heldout_reward_after"] > result.metrics["heldout_reward_before"], result.metrics


def test_grpo_reward_model_reads_each_prompt_as_it_was_trained(tmp_path, monkeypatch):
    """GRPO gives the policy chat messages, but the reward model reads each prompt as its training
    pairs had it (`reward_input` of the stored prompt): plain text stays plain text, a chat prompt
    reads as "User: …" turns. Both in the training steps and in the held-out measure, and for the
    reference answers PAR scores."""
    from rewards import scoring
    from rewards.text import render_prompt

    from .tiny_models import tiny_reward_model

    stored = ["Name a fruit.", "Name a colour.",
              [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello!"},
               {"role": "user", "content": "Again."}],
              [{"role": "user", "content": "Count to three."}]]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "reference": "Fine."}) + "\n" for p in stored))
    read = []
    score = scoring.RewardModel.score

    def recording(self, prompts, responses, batch_size=32):
        read.extend(render_prompt(p) for p in prompts)
        return score(self, prompts, responses, batch_size)

    monkeypatch.setattr(scoring.RewardModel, "score", recording)
    config = GRPOConfig.from_dict({
        "base_model": tiny_policy(tmp_path / "tiny"), "rewards": ["reward_model"], "shaping": "par", "max_steps": 1,
        "prompts_per_step": 2, "num_generations": 2, "max_completion_length": 4, "eval_prompts": 2, "lora": False,
        "beta": 0.0})
    train_grpo(path, tmp_path / "policy", config, reward_model_dir=str(tiny_reward_model(tmp_path / "rm")))
    as_trained = {render_prompt(p) for p in stored}  # what reward_input put before "Assistant:" in training
    assert set(read) == as_trained, set(read) - as_trained
    assert "Name a fruit." in read and "User: Say hello.\n\nAssistant: Hello!\n\nUser: Again." in read


class Recorder(Reporter):
    def __init__(self):
        self.metrics: dict[str, list[float]] = {}

    def metric(self, step, name, value):
        self.metrics.setdefault(name, []).append(value)


class StopAfterFirstBatch(Reporter):
    def __init__(self):
        self.calls = 0

    def should_stop(self):
        self.calls += 1
        return self.calls > 1


def test_generation_writes_every_answer_or_nothing(tmp_path):
    prompts = [(1, "Name a fruit."), (2, [{"role": "user", "content": "Say hello."}])]
    config = GenerateConfig.from_dict({"samples": 2, "max_new_tokens": 12, "batch_size": 2, "temperature": 0.7,
                                       "seed": 3})
    out = tmp_path / "answers.jsonl"
    stats = generate_answers("smollm2", prompts, out, config)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["prompt_id"], r["sample"]) for r in rows] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert all(r["text"] for r in rows) and stats["answers"] == 4 and stats["backend"] == "transformers"
    again = tmp_path / "again.jsonl"
    generate_answers("smollm2", prompts, again, config)
    assert again.read_text() == out.read_text()  # same seed, same answers: a re-run adds no new responses

    stopped = tmp_path / "stopped.jsonl"
    with pytest.raises(Cancelled):
        generate_answers("smollm2", prompts, stopped, config, reporter=StopAfterFirstBatch())
    assert not stopped.exists() and not stopped.with_suffix(".partial").exists()


def test_prompts_longer_than_the_context_are_refused(tmp_path):
    config = GenerateConfig.from_dict({"max_new_tokens": 8190})
    with pytest.raises(RunFailed, match=r"1 prompt\(s\) are longer than the model's context less max_new_tokens"):
        generate_answers("smollm2", [(1, "Write a poem about the sea and the sky and the stars.")],
                         tmp_path / "x.jsonl", config)


def test_policy_configs_refuse_bad_fields():
    with pytest.raises(ConfigError) as refused:
        GRPOConfig.from_dict({"rewards": ["likes"]})
    assert refused.value.field == "rewards" and "length_target" in refused.value.message
    with pytest.raises(ConfigError) as refused:
        DPOConfig.from_dict({"loss_type": "kto"})
    assert refused.value.field == "loss_type"
    with pytest.raises(ConfigError):
        GRPOConfig.from_dict({"rewards": ["length_target", "length_penalty"], "reward_weights": [1.0]})


def test_dpo_with_no_usable_pairs_is_refused(tmp_path):
    snapshot = tmp_path / "ties.jsonl"
    snapshot.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b", "tie": True}) + "\n")
    with pytest.raises(RunFailed, match="0 usable preference pairs"):
        train_dpo(snapshot, tmp_path / "out", DPOConfig.from_dict({"min_pairs": 2}))
