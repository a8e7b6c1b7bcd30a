"""The round methods that lean on the reward model: best-of-n (sample n, keep the reward model's
best) and expert iteration (fine-tune on those best answers), on tiny models, in process."""

import json

import pytest

from annotate.models import Comparison
from training.kinds.common import base_policy
from training.models import Checkpoint, Job, RoundPair
from training.runners.generate import GenerateConfig, sample_best
from training.runners.policy import manifest_of

from .test_policy import tiny_policy
from .test_rounds import demo, run_here  # noqa: F401 -- the demo fixture
from .tiny_models import tiny_reward_checkpoint

pytestmark = [pytest.mark.ml]

PROMPTS = [(1, "Name a fruit."), (2, "What is the capital of France?"), (3, "Say something kind.")]


def test_best_of_n_keeps_the_answer_the_reward_model_scores_highest(demo, tmp_path):  # noqa: F811
    from rewards.scoring import RewardModel

    model = tiny_policy(tmp_path / "tiny")
    reward = tiny_reward_checkpoint(demo)
    config = GenerateConfig(samples=1, max_new_tokens=8, temperature=1.0, batch_size=12, backend="transformers")
    rows, stats = sample_best(model, str(reward.directory), PROMPTS, 4, config, work_dir=tmp_path)
    assert [r["prompt_id"] for r in rows] == [1, 2, 3] and stats["drawn"] == 12

    # The same draw, every sample scored: each kept answer is its prompt's maximum.
    from training.runners.generate import generate_answers

    generate_answers(model, PROMPTS, tmp_path / "all.jsonl", GenerateConfig(
        samples=4, max_new_tokens=8, temperature=1.0, batch_size=12, backend="transformers"))
    drawn = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    scores = RewardModel(reward.directory).score([dict(PROMPTS)[d["prompt_id"]] for d in drawn],
                                                 [d["text"] for d in drawn]).mean
    for row in rows:
        mine = [(float(s), d["text"]) for s, d in zip(scores, drawn, strict=True) if d["prompt_id"] == row["prompt_id"]]
        assert row["text"] == max(mine)[1]
        assert row["score"] >= row["mean_score"]
    assert stats["reward_gain"] >= 0


def test_a_best_of_n_round_step_makes_a_policy_that_generates_into_the_queue(demo, tmp_path):  # noqa: F811
    model = tiny_policy(tmp_path / "tiny")
    reward = tiny_reward_checkpoint(demo)
    job = run_here(demo, "best_of_n", {"n": 3, "base_model": model})
    assert job.status == Job.Status.SUCCEEDED, job.error
    policy = Checkpoint.objects.get(job=job)
    assert policy.parent == base_policy(demo, model) and policy.reward_model == reward
    assert manifest_of(policy.model_name) == {"kind": "policy", "method": "best_of_n", "sampler": model,
                                              "reward_model": str(reward.directory), "n": 3}

    generated = run_here(demo, "generate", {"checkpoint": policy.pk, "prompts": 3, "max_new_tokens": 8,
                                            "priority_from_reward_model": False})
    assert generated.status == Job.Status.SUCCEEDED, generated.error
    pairs = RoundPair.objects.filter(policy=policy)
    assert pairs.count() == generated.result["comparisons_added"] >= 1
    assert all(p.parent == policy.parent for p in pairs)
    assert Comparison.objects.filter(project=demo, origin="round").count() == pairs.count()

    # A best-of-n over a best-of-n samples from the same sampler: n does not multiply.
    again = run_here(demo, "best_of_n", {"n": 3, "parent": policy.pk})
    assert manifest_of(Checkpoint.objects.get(job=again).model_name)["sampler"] == model


def test_expert_iteration_fine_tunes_on_the_best_answers(demo, tmp_path):  # noqa: F811
    import torch
    from transformers import AutoModelForCausalLM

    model = tiny_policy(tmp_path / "tiny")
    reward = tiny_reward_checkpoint(demo)
    job = run_here(demo, "expert_iteration", {
        "base_model": model, "n": 2, "prompts": 6, "max_new_tokens": 8, "max_steps": 8, "batch_size": 6,
        "learning_rate": 1e-3, "lora": False, "max_length": 96, "eval_prompts": 3})
    assert job.status == Job.Status.SUCCEEDED, job.error
    policy = Checkpoint.objects.get(job=job)
    assert policy.parent == base_policy(demo, model) and policy.reward_model == reward
    assert job.result["answers_kept"] >= 5 and job.result["final_loss"] < job.result["first_loss"]
    assert {"reward_after", "reward_before_same_prompts"} <= set(job.result)  # the same 3 prompts before and after
    before = AutoModelForCausalLM.from_pretrained(model).state_dict()
    after = AutoModelForCausalLM.from_pretrained(policy.model_name).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_a_round_names_the_reward_model_methods_and_refuses_unknown_ones(demo):  # noqa: F811
    from training import jobs

    with pytest.raises(jobs.LaunchRefused) as refused:
        jobs.launch(demo, "round", {"method": "best_of_n", "best_of_n": {"n": 1}})
    assert refused.value.field == "best_of_n.n"
    with pytest.raises(jobs.LaunchRefused) as refused:
        jobs.launch(demo, "round", {"method": "expert_iteration", "train_reward_model": False})
    assert refused.value.field == "reward_model"  # no reward model yet to pick the answers


def test_a_round_says_when_its_reward_model_is_below_its_baselines(demo):  # noqa: F811
    from training.kinds.round import _summary

    pipeline = Job.objects.create(project=demo, kind="round", status="running", result={"round": 1})
    weak = Job.objects.create(project=demo, kind="reward_model", status="succeeded", parent=pipeline,
                              result={"eval": {"accuracy": 0.47, "n": 30, "baselines": {"random": 0.5,
                                                                                       "longer_wins": 0.55}}})
    policy = Job.objects.create(project=demo, kind="expert_iteration", status="succeeded", parent=pipeline,
                                result={"answers_kept": 40, "first_loss": 2.1, "final_loss": 1.7,
                                        "reward_before_same_prompts": 0.2, "reward_after": 0.1})
    summary = _summary(pipeline, [weak, policy])
    assert [w.split(":")[0] for w in summary["round_warnings"]] == [
        f"Reward model (job #{weak.pk})", f"Expert iteration (job #{policy.pk})"]
    assert "No better than random" in summary["round_warnings"][0]
    assert "Worse than its parent" in summary["round_warnings"][1]


def test_the_next_round_button_offers_every_method_with_the_measured_default_first(demo, users):  # noqa: F811
    from django.test import Client

    client = Client()
    client.force_login(users["owner"])
    page = client.get(f"/p/{demo.slug}/").content.decode()
    menu = page[page.find('<select name="method">'):page.find("</select>", page.find('<select name="method">'))]
    values = [part.split('"')[1] for part in menu.split("<option value=")[1:]]
    assert values == ["expert_iteration", "dpo", "grpo", "best_of_n"]
    assert '<option value="expert_iteration" selected>' in menu and "(default)" in menu


def test_a_reward_model_above_random_by_luck_alone_is_not_trusted_silently():
    """0.514 on 35 held-out pairs (a round of the loop bench trusted one) is above random and
    above longer-wins, and still cannot be told from a coin; 0.75 on 200 pairs can."""
    from training.summaries import reward_model_warnings

    def warned(accuracy, n):
        return reward_model_warnings({"eval": {"accuracy": accuracy, "n": n,
                                               "baselines": {"random": 0.5, "longer_wins": 0.43}}})

    (warning,) = warned(0.5143, 35)
    assert warning.startswith("Not credibly better than random") and "35 pairs" in warning
    assert warned(0.75, 200) == []
