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


JUNK = " Buy cheap watches now!!! Click here: best deals, limited offer, act fast."
STRENGTHS = ("slight", "clear", "decisive")


def easy_snapshot(path, n=160, ties=0, rubric=False, junk_every=0, prompt_repeats=1):
    """Real AlpacaEval answers against the same answers cut to their first six words: the full
    answer is preferred. With `junk_every`, every so many pairs the loser is instead the full
    answer with spam appended (longer, so length alone cannot tell). With `prompt_repeats`, each
    prompt is asked that many times (different answers). Strengths cycle slight/clear/decisive.
    Written in the export's `raw` format, as a job's snapshot is."""
    with open(shared_file(ALPACA_JUDGMENTS / "gpt4_1106_preview_vs_text_davinci_003.jsonl")) as handle:
        rows = [json.loads(line) for line in handle]
    lines = []
    for i, row in enumerate(rows[:n]):
        full = row["output_2"]
        worse = full + JUNK * 3 if junk_every and i % junk_every == 0 else " ".join(full.split()[:6])
        choice = "tie" if i < ties else ("a" if i % 2 else "b")
        a, b = (full, worse) if choice != "b" else (worse, full)
        scores = {"helpfulness": {"a": 5 if a == full else 1, "b": 5 if b == full else 1}} if rubric else {}
        lines.append({"id": i + 1, "comparison": i + 1, "prompt": rows[i // prompt_repeats]["instruction"],
                      "response_a": a, "response_b": b, "source_a": "", "source_b": "", "annotator": "t",
                      "choice": choice, "strength": None if choice == "tie" else STRENGTHS[i % 3],
                      "rubric_scores": scores})
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def quick(**overrides):
    values = {"max_steps": 24, "batch_size": 8, "max_length": 96, "learning_rate": 1e-4, "min_pairs": 10,
              "eval_fraction": 0.25, "threads": 0}
    values.update(overrides)
    return RewardModelConfig.from_dict(values)


def test_a_bradley_terry_model_learns_a_preference_length_cannot_explain(tmp_path):
    """Half the losers are cut short, half are padded with spam: "the longer answer wins" is right
    about half the time, so only a model that read the answers beats it."""
    import torch
    from safetensors.torch import load_file

    from rewards.backbones import minilm_path

    snapshot = easy_snapshot(tmp_path / "snap.jsonl", junk_every=2)
    recorder = Recorder()
    result = train_reward_model(snapshot, tmp_path / "rm", quick(max_steps=30), reporter=recorder)

    metrics = result.metrics
    longer_wins = metrics["eval"]["baselines"]["longer_wins"]
    assert metrics["held_out_pairs"] >= 25
    assert 0.3 <= longer_wins <= 0.7, metrics["eval"]  # length alone does not solve this set
    assert metrics["eval_accuracy"] >= 0.8, metrics["eval"]
    assert metrics["eval_accuracy"] > longer_wins + 0.2, metrics["eval"]
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
def test_each_loss_trains(tmp_path, loss, monkeypatch):
    """Each loss lowers itself and learns the easy set, and what makes it that loss reaches it in
    training: margins that vary with the judgment's strength, the smoothing, the ties as ties."""
    import rewards.trainer
    from rewards.votes import STRENGTH_WEIGHT

    seen = []
    real_loss = rewards.trainer.pairwise_loss

    def recording_loss(delta, loss="bt", **kwargs):
        seen.append({"loss": loss, **{k: v.detach().clone() if hasattr(v, "detach") else v for k, v in kwargs.items()}})
        return real_loss(delta, loss, **kwargs)

    monkeypatch.setattr(rewards.trainer, "pairwise_loss", recording_loss)
    snapshot = easy_snapshot(tmp_path / "snap.jsonl", n=96, ties=24 if loss == "tie_aware" else 0)
    recorder = Recorder()
    result = train_reward_model(snapshot, tmp_path / "rm", quick(loss=loss, max_steps=12, learning_rate=2e-4),
                                reporter=recorder)
    losses = recorder.metrics["train/loss"]
    assert losses[-1] < losses[0], losses
    assert result.metrics["eval_accuracy"] > 0.6
    assert seen and {call["loss"] for call in seen} == {loss}
    if loss == "bt_margin":
        margins = {round(float(m), 4) for call in seen for m in call["margin"]}
        assert margins == {float(STRENGTH_WEIGHT[s]) for s in STRENGTHS}, margins  # one per strength, not constant
    if loss == "label_smoothing":
        assert {call["label_smoothing"] for call in seen} == {0.1}
    if loss == "tie_aware":
        assert all(call.get("tie") is not None for call in seen)
        ties_seen = sum(int(call["tie"].sum()) for call in seen)
        pairs = load_pairs(snapshot, quick(loss=loss), [])
        assert sum(p.tie for p in pairs) == 24  # ties were used, not dropped
        train, _ = split(pairs, 0.25, seed=quick().seed)
        # 12 steps of 8 cover the training set at least once: every training tie reached the loss as a tie
        assert len(train) <= 96 and ties_seen >= sum(p.tie for p in train) > 0, ties_seen
        assert all(call["tie_threshold"] == 1.0 for call in seen)


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
    """Two members trained apart (their own seeds) disagree, and the spread reported is exactly
    the standard deviation of what each member says, the mean their mean."""
    import numpy as np

    from rewards.scoring import RewardModel

    snapshot = easy_snapshot(tmp_path / "snap.jsonl", n=64)
    train_reward_model(snapshot, tmp_path / "rm", quick(ensemble_size=2, max_steps=6))
    model = RewardModel(tmp_path / "rm")
    prompts, responses = ["Say hi."] * 3, ["Hi!", "Hello there, how are you today?", "No."]
    scores = model.score(prompts, responses)
    assert len(model.models) == 2
    members = []
    for member in list(model.models):
        model.models = [member]
        members.append(model.score(prompts, responses).mean)
    members = np.stack(members)
    assert (np.abs(members[0] - members[1]) > 1e-4).all(), members  # two models, not one copied
    assert np.allclose(scores.mean, members.mean(axis=0), atol=1e-5)
    assert np.allclose(scores.spread, np.abs(members[0] - members[1]) / 2, atol=1e-5), (scores.spread, members)


def test_pairs_are_held_out_by_prompt(tmp_path):
    """Each prompt asked three times: all its pairs train, or all are held out, never some of each."""
    snapshot = easy_snapshot(tmp_path / "snap.jsonl", n=120, prompt_repeats=3)
    pairs = load_pairs(snapshot, quick(), [])
    assert len({json.dumps(p.prompt) for p in pairs}) == 40
    train, held = split(pairs, 0.25, seed=3)
    assert {json.dumps(p.prompt) for p in train}.isdisjoint({json.dumps(p.prompt) for p in held})
    assert len(held) % 3 == 0 and 15 <= len(held) <= 45


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


def test_an_embedding_head_learns_and_every_score_averages_it_with_the_fine_tuned_model(tmp_path):
    """The round's reward model: a fine-tuned MiniLM and a Bradley–Terry head on frozen embeddings.
    The head learns on its own (spam and cut answers lose), its file travels in the checkpoint, the
    evaluation reports each part, and whatever scores with the checkpoint gets their average."""
    import numpy as np

    from rewards.scoring import MANIFEST, RewardModel

    snapshot = easy_snapshot(tmp_path / "snap.jsonl", junk_every=2)
    result = train_reward_model(snapshot, tmp_path / "rm", quick(max_steps=2, embedding_head=True))

    manifest = json.loads((tmp_path / "rm" / MANIFEST).read_text())
    assert manifest["head"]["pairs"] == result.metrics["train_pairs"]
    assert (tmp_path / "rm" / manifest["head"]["file"]).exists()
    parts = result.metrics["eval_parts"]
    assert set(parts) == {"fine_tuned", "embedding_head"}
    assert parts["embedding_head"] >= 0.8, result.metrics
    model = RewardModel(tmp_path / "rm", device="cpu")
    rows = [json.loads(line) for line in snapshot.read_text().splitlines()][:8]
    scores = model.score([r["prompt"] for r in rows], [r["response_a"] for r in rows])
    np.testing.assert_allclose(scores.mean, (scores.parts["fine_tuned"] + scores.parts["embedding_head"]) / 2,
                               rtol=1e-5, atol=1e-6)
    assert (scores.spread > 0).all()  # the head and the member disagree somewhere: a spread, not 0
