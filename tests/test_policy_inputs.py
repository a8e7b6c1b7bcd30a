"""What a policy job starts from: the prompts its reward model reads (as that model was trained on
them), and the parent policy it continues (`training.kinds.common.choose_policy`)."""

import io
import json
from pathlib import Path

import pytest

from annotate.importing import import_stream
from annotate.models import Comparison, Judgment
from training import jobs
from training.kinds.common import MIN_BATTLES, base_policy, choose_policy
from training.kinds.grpo import write_prompts
from training.models import Checkpoint, Job
from training.snapshots import make_snapshot, snapshot_path

LEARNED = {"heldout_margin_before": 0.0, "heldout_margin_after": 0.3, "heldout_accuracy_after": 0.7}
WORSE = {"heldout_margin_before": 0.0, "heldout_margin_after": -0.2, "heldout_accuracy_after": 0.4}


def import_rows(project, rows):
    import_stream(project, io.BytesIO("\n".join(json.dumps(r) for r in rows).encode()), format="pairs")


def policy(project, name, base_model="smollm2", path=None, **fields):
    return Checkpoint.objects.create(project=project, kind="policy", name=name, base_model=base_model,
                                     path=path or f"checkpoints/{name}", **fields)


def test_grpo_hands_each_prompt_as_the_reward_models_training_pairs_had_it(project, tmp_path):
    """A chat prompt makes the project conversational, and then its snapshots carry even a plain-text
    prompt as one user turn: GRPO's prompts file must say the same, or the reward model scores a
    prompt it never saw rendered that way."""
    import_rows(project, [
        {"prompt": "Name a fruit.", "response_a": "Apple.", "response_b": "Rock.", "preference": "a"},
        {"prompt": [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hi."},
                    {"role": "user", "content": "Again."}], "response_a": "Hello!", "response_b": "No.",
         "preference": "a"},
    ])
    project.refresh_from_db()
    assert project.conversational
    snapshot = make_snapshot(project, "trl-preference")
    trained = [json.loads(line)["prompt"] for line in snapshot_path(snapshot).read_text().splitlines()]
    written = write_prompts(project, project.prompts.order_by("id"), {}, tmp_path / "prompts.jsonl")
    handed = [json.loads(line)["prompt"] for line in written.read_text().splitlines()]
    assert len(trained) == 2
    assert sorted(map(json.dumps, handed)) == sorted(map(json.dumps, trained))


def test_the_parent_is_never_another_base_models_policy_nor_a_toy_nor_a_worse_one(project):
    base = base_policy(project, "smollm2")
    other = policy(project, "grpo-other", base_model="/models/other", config={"rewards": ["reward_model"]},
                   metrics={"heldout_reward_before": 0.1, "heldout_reward_after": 0.5})
    choice = choose_policy(project, 0, "smollm2")
    assert choice.checkpoint == base, choice.reason

    good = policy(project, "dpo-good", metrics=LEARNED, parent=base)
    policy(project, "grpo-toy", config={"rewards": ["contains_keyword"]}, parent=good,
           metrics={"heldout_reward_before": 0.1, "heldout_reward_after": 0.9})
    policy(project, "dpo-worse", metrics=WORSE, parent=good)
    choice = choose_policy(project, 0, "smollm2")
    assert choice.checkpoint == good, choice.reason
    assert "grpo-toy: toy rewards contains_keyword" in choice.reason
    assert "dpo-worse: failed its held-out evaluation" in choice.reason
    assert choose_policy(project, other.pk, "smollm2").checkpoint == other  # named: taken as named


def test_people_pick_the_parent_once_they_have_judged_enough(project, users):
    base = base_policy(project, "smollm2")
    older = policy(project, "dpo-1", metrics=LEARNED, parent=base)
    newer = policy(project, "dpo-2", metrics=LEARNED, parent=older)
    assert choose_policy(project, 0, "smollm2").checkpoint == newer

    import_rows(project, [{"prompt": f"Question {i}?", "response_a": f"Good {i}.", "response_b": f"Bad {i}.",
                           "source_a": "dpo-1", "source_b": "dpo-2"} for i in range(MIN_BATTLES // 4)])
    judges = [users[name] for name in ("owner", "manager", "annotator", "annotator2")]
    for comparison in Comparison.objects.filter(project=project):
        a_is_older = comparison.candidate_a.source == "dpo-1"
        for judge in judges:
            Judgment.objects.create(project=project, comparison=comparison, annotator=judge,
                                    choice="a" if a_is_older else "b")
    choice = choose_policy(project, 0, "smollm2")
    assert choice.checkpoint == older, choice.reason
    assert f"over {MIN_BATTLES} battles" in choice.reason


@pytest.mark.ml
def test_a_generate_job_of_smollm2_continues_a_smollm2_policy(project, tmp_path, settings):
    """The newest policy is a GRPO run on another base model: generating for base_model=smollm2 must
    not pick it up. (The smollm2 policy's weights are a tiny model, to keep the test fast.)"""
    import shutil

    from .test_policy import tiny_policy

    import_rows(project, [{"prompt": "Name a fruit.", "response_a": "Apple.", "response_b": "Rock."}])
    relative = "checkpoints/test-tiny-smollm2"
    shutil.copytree(tiny_policy(tmp_path / "tiny"), settings.MEDIA_ROOT / relative, dirs_exist_ok=True)
    ours = policy(project, "dpo-smollm2", path=relative, metrics=LEARNED, parent=base_policy(project, "smollm2"))
    other = policy(project, "grpo-other", base_model=str(tmp_path / "other"), config={"rewards": ["reward_model"]},
                   metrics={"heldout_reward_before": 0.1, "heldout_reward_after": 0.5})
    assert other.pk > ours.pk
    job = jobs.launch(project, "generate", {"base_model": "smollm2", "prompts": 1, "max_new_tokens": 4,
                                            "compare_with_parent": False, "priority_from_reward_model": False})
    jobs.run(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.result["policy"] == ours.pk
    log = jobs.log_path(job).read_text()
    assert "round 1: dpo-smollm2 answers 1 prompts (dpo-smollm2: newest trained policy of smollm2" in log, log


def _capture_dpo_data(monkeypatch):
    """The rows a DPO job hands to training (training itself is tested in test_policy.py)."""
    from training.kinds import dpo

    taken = {}

    def stop_before_training(path, output, config, reporter=None):
        taken["rows"] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        taken["path"] = path
        raise RuntimeError("stop")

    monkeypatch.setattr(dpo, "train_dpo", stop_before_training)
    return taken


def _run_dpo(project, values: dict):
    from training.kinds import dpo

    config = jobs.parse_config("dpo", values)
    dpo.check(project, config)
    job = Job.objects.create(project=project, kind="dpo", config=config.to_dict())
    with pytest.raises(RuntimeError, match="stop"):
        dpo.execute(job, config, jobs.JobReporter(job))
    return job


def test_a_dpo_job_trains_on_the_pairs_its_config_names(project, users, monkeypatch, settings, tmp_path):
    """train_on: every judged pair; only the newest round's (the policy's own answers); or every
    pair with its winner decided by the reward model instead of the votes, kept with the job."""
    from bench.rounds import hh_pairs
    from rewards.scoring import RewardModel

    from .conftest import HH_DEV, shared_file
    from .tiny_models import tiny_reward_model

    real = hh_pairs(shared_file(HH_DEV))[:12]
    import_rows(project, [{"prompt": p["prompt"], "response_a": p["chosen"], "response_b": p["rejected"],
                           "preference": "a"} for p in real])
    comparisons = list(Comparison.objects.filter(project=project).order_by("id"))
    assert Judgment.objects.filter(project=project).count() == 12
    Comparison.objects.filter(pk__in=[c.pk for c in comparisons[4:8]]).update(round=1, origin="round")
    Comparison.objects.filter(pk__in=[c.pk for c in comparisons[8:]]).update(round=2, origin="round")
    taken = _capture_dpo_data(monkeypatch)

    with pytest.raises(jobs.LaunchRefused, match="Round 2 .* has 4 judged"):  # its own pairs count, not all
        _run_dpo(project, {"min_pairs": 8, "train_on": "latest_round"})
    _run_dpo(project, {"min_pairs": 2})
    assert len(taken["rows"]) == 12
    job = _run_dpo(project, {"min_pairs": 2, "train_on": "latest_round"})
    newest = {c.candidate_a.text for c in comparisons[8:]}
    assert len(taken["rows"]) == 4 and {r["chosen"][0]["content"] for r in taken["rows"]} == newest
    assert "round 2 only" in jobs.log_path(job).read_text()

    with pytest.raises(jobs.LaunchRefused, match="reward-model"):  # nothing to relabel with yet
        _run_dpo(project, {"train_on": "relabelled"})
    directory = tiny_reward_model(Path(settings.MEDIA_ROOT) / "checkpoints" / "rm-tiny")
    reward = Checkpoint.objects.create(project=project, kind="reward_model", name="rm-tiny", base_model="tiny-bert",
                                       path="checkpoints/rm-tiny")
    job = _run_dpo(project, {"min_pairs": 2, "train_on": "relabelled"})
    rows = taken["rows"]
    assert len(rows) == 12 and taken["path"].is_relative_to(jobs.job_dir(job))  # kept with the job
    model = RewardModel(directory)
    chosen = model.score([r["prompt"] for r in rows], [r["chosen"] for r in rows]).mean
    rejected = model.score([r["prompt"] for r in rows], [r["rejected"] for r in rows]).mean
    assert all(c >= r - 1e-4 for c, r in zip(chosen, rejected, strict=True))  # the reward model's order, every pair
    swapped = sum(r["chosen"][0]["content"] not in {p["chosen"] for p in real} for r in rows)
    assert 0 < swapped < 12  # it overruled the votes on some pairs, not all
    assert f"reversed {swapped} of 12" in jobs.log_path(job).read_text() and reward.name in jobs.log_path(job).read_text()


def test_a_dpo_round_relabels_with_the_reward_model_it_just_trained(project):
    """A round whose DPO step relabels is not refused for want of a reward model (its first step
    makes one), and the DPO step is handed that one."""
    from bench.rounds import hh_pairs
    from training.kinds import round as round_kind

    from .conftest import HH_DEV, shared_file

    config = round_kind.RoundConfig.from_dict({"method": "dpo", "dpo": {"train_on": "relabelled", "min_pairs": 2}})
    import_rows(project, [{"prompt": p["prompt"], "response_a": p["chosen"], "response_b": p["rejected"],
                           "preference": "a"} for p in hh_pairs(shared_file(HH_DEV))[:20]])
    round_kind.check(project, config)  # no reward model yet: the round trains one first
    pipeline = Job.objects.create(project=project, kind="round", config=config.to_dict())
    step = Job.objects.create(project=project, kind="reward_model", parent=pipeline, status="succeeded")
    reward = Checkpoint.objects.create(project=project, kind="reward_model", name="rm", job=step, path="checkpoints/rm")
    values = round_kind._step_config(pipeline, config, "dpo", [step])
    assert values["train_on"] == "relabelled" and values["reward_model"] == reward.pk
