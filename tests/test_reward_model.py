"""The reward-model runner, without Django: it learns (accuracy rises, loss falls, weights move),
each loss trains, ensembles spread, and bad configs and inputs are refused by name."""

import json

import pytest

from training.runners.base import ConfigError, Reporter, RunFailed
from training.runners.reward_model import RewardModelConfig, load_pairs, split, train_reward_model

from .conftest import ALPACA_JUDGMENTS, shared_file

pytestmark = pytest.mark.ml


class Recorder(Reporter):
    def __init__(self):
        self.metrics: dict[str, list[float]] = {}

    def metric(self, step, name, value):
        self.metrics.setdefault(name, []).append(value)


def easy_snapshot(path, n=160, ties=0, rubric=False):
    """Real AlpacaEval answers against the same answers cut to their first six words: the full
    answer is preferred. Written in the export's `raw` format, as a job's snapshot is."""
    with open(shared_file(ALPACA_JUDGMENTS / "gpt4_1106_preview_vs_text_davinci_003.jsonl")) as handle:
        rows = [json.loads(line) for line in handle]
    lines = []
    for i, row in enumerate(rows[:n]):
        full = row["output_2"]
        cut = " ".join(full.split()[:6])
        choice = "tie" if i < ties else ("a" if i % 2 else "b")
        a, b = (full, cut) if choice != "b" else (cut, full)
        scores = {"helpfulness": {"a": 5 if a == full else 1, "b": 5 if b == full else 1}} if rubric else {}
        lines.append({"id": i + 1, "comparison": i + 1, "prompt": row["instruction"], "response_a": a,
                      "response_b": b, "source_a": "", "source_b": "", "annotator": "t", "choice": choice,
                      "strength": None if choice == "tie" else "clear", "rubric_scores": scores})
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def quick(**overrides):
    values = {"max_steps": 24, "batch_size": 8, "max_length": 96, "learning_rate": 1e-4, "min_pairs": 10,
              "eval_fraction": 0.25, "threads": 0}
    values.update(overrides)
    return RewardModelConfig.from_dict(values)


def test_a_bradley_terry_model_learns_the_easy_preference(tmp_path):
    import torch
    from safetensors.torch import load_file

    from rewards.backbones import minilm_path

    snapshot = easy_snapshot(tmp_path / "snap.jsonl")
    recorder = Recorder()
    result = train_reward_model(snapshot, tmp_path / "rm", quick(), reporter=recorder)

    metrics = result.metrics
    assert metrics["held_out_pairs"] >= 25
    assert metrics["eval_accuracy"] >= 0.8, metrics["eval"]
    assert metrics["eval_accuracy"] > metrics["eval"]["baselines"]["random"] + 0.25
    losses = recorder.metrics["train/loss"]
    assert losses[-1] < losses[0] - 0.1, losses
    trained = load_file(tmp_path / "rm" / "member_0" / "model.safetensors")
    original = load_file(f"{minilm_path()}/model.safetensors")
    key = next(k for k in original if k.endswith("encoder.layer.5.output.dense.weight"))
    assert not torch.equal(original[key], trained["bert." + key if not key.startswith("bert.") else key])


def test_the_same_seed_and_data_give_the_same_model(tmp_path):
    """A job on a worker and a notebook call must agree: the process's random state before the
    run (here disturbed on purpose) must not reach the new head's initial weights."""
    import torch
    from safetensors.torch import load_file

    snapshot = easy_snapshot(tmp_path / "snap.jsonl", n=48)
    weights = []
    for run, disturb in enumerate((1, 2)):
        torch.manual_seed(disturb)
        torch.rand(1000)
        result = train_reward_model(snapshot, tmp_path / f"rm{run}", quick(max_steps=2, eval_fraction=0.5))
        weights.append(load_file(tmp_path / f"rm{run}" / "member_0" / "model.safetensors"))
        weights[-1]["accuracy"] = torch.tensor(result.metrics["eval_accuracy"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0]), \
        [k for k in weights[0] if not torch.equal(weights[0][k], weights[1][k])][:5]


@pytest.mark.parametrize("loss", ["bt_margin", "label_smoothing", "tie_aware"])
def test_each_loss_trains(tmp_path, loss):
    snapshot = easy_snapshot(tmp_path / "snap.jsonl", n=96, ties=24 if loss == "tie_aware" else 0)
    recorder = Recorder()
    result = train_reward_model(snapshot, tmp_path / "rm", quick(loss=loss, max_steps=12, learning_rate=2e-4),
                                reporter=recorder)
    losses = recorder.metrics["train/loss"]
    assert losses[-1] < losses[0], losses
    assert result.metrics["eval_accuracy"] > 0.6
    if loss == "tie_aware":
        pairs = load_pairs(snapshot, quick(loss=loss), [])
        assert sum(p.tie for p in pairs) == 24  # ties were used, not dropped


def test_rubric_heads_learn_the_scores(tmp_path):
    from rewards.scoring import RewardModel

    criteria = [{"key": "helpfulness", "label": "Helpfulness", "scale_min": 1, "scale_max": 5}]
    snapshot = easy_snapshot(tmp_path / "snap.jsonl", n=96, rubric=True)
    recorder = Recorder()
    train_reward_model(snapshot, tmp_path / "rm", quick(rubric=True, max_steps=16, learning_rate=3e-4),
                       criteria=criteria, reporter=recorder)
    mse = recorder.metrics["train/rubric_mse"]
    assert mse[-1] < mse[0], mse
    pairs = load_pairs(snapshot, quick(rubric=True), criteria)
    scores = RewardModel(tmp_path / "rm").score([p.prompt for p in pairs[:16]] * 2,
                                                [p.chosen for p in pairs[:16]] + [p.rejected for p in pairs[:16]])
    full, cut = scores.rubric[:16, 0].mean(), scores.rubric[16:, 0].mean()
    assert full > cut, (full, cut)


def test_an_ensemble_reports_its_spread(tmp_path):
    from rewards.scoring import RewardModel

    snapshot = easy_snapshot(tmp_path / "snap.jsonl", n=64)
    train_reward_model(snapshot, tmp_path / "rm", quick(ensemble_size=2, max_steps=6))
    model = RewardModel(tmp_path / "rm")
    scores = model.score(["Say hi."] * 3, ["Hi!", "Hello there, how are you today?", "No."])
    assert len(model.models) == 2
    assert (scores.spread > 0).all()


def test_pairs_are_held_out_by_prompt(tmp_path):
    snapshot = easy_snapshot(tmp_path / "snap.jsonl", n=120)
    pairs = load_pairs(snapshot, quick(), [])
    train, held = split(pairs, 0.25, seed=3)
    assert {p.group for p in train}.isdisjoint({p.group for p in held})
    assert 15 <= len(held) <= 45


@pytest.mark.parametrize(("values", "field"), [
    ({"loss": "hinge"}, "loss"),
    ({"learning_rate": "fast"}, "learning_rate"),
    ({"batch_size": 0}, "batch_size"),
    ({"ensemble_size": 2.5}, "ensemble_size"),
    ({"rubric": "maybe"}, "rubric"),
    ({"colour": "blue"}, "colour"),
])
def test_bad_configs_are_refused_naming_the_field(values, field):
    with pytest.raises(ConfigError) as refused:
        RewardModelConfig.from_dict(values)
    assert refused.value.field == field


def test_too_few_pairs_and_a_missing_model_fail_with_a_clear_message(tmp_path):
    snapshot = easy_snapshot(tmp_path / "snap.jsonl", n=12)
    with pytest.raises(RunFailed, match="Too few judged pairs"):
        train_reward_model(snapshot, tmp_path / "rm", quick(min_pairs=50))
    with pytest.raises(RunFailed, match="does not exist"):
        train_reward_model(snapshot, tmp_path / "rm", quick(base_model="/nowhere/model", min_pairs=2))
