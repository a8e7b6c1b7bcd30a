"""The loop closed: the next round on the demo data trains a reward model and a policy, puts the new
policy's answers against its parent's in the queue, annotators judge them, the round's win rate
shows, and the new checkpoint's lineage leads back to the judgments. Plus generation's guarantees
and the refusals."""

import json
import time

import pytest
from django.test import Client

from annotate.actions import JudgmentInput, do_submit_judgment
from annotate.importing import import_path
from annotate.models import Candidate, Comparison
from annotate.queue import next_comparison_for
from training import jobs
from training.kinds.common import base_policy
from training.models import Checkpoint, GeneratedCandidate, Job, RoundPair
from training.stats import round_win_rates

from .conftest import DEMO_FILE
from .test_policy import tiny_policy

pytestmark = [pytest.mark.ml]

SMALL_ROUND = {
    "method": "dpo",
    "reward_model": {"max_steps": 4, "max_length": 96, "batch_size": 8, "min_pairs": 10, "eval_fraction": 0.1},
    "dpo": {"max_steps": 2, "batch_size": 2, "max_length": 128, "min_pairs": 4, "eval_fraction": 0.02,
            "learning_rate": 5e-4},
    "generate": {"prompts": 3, "max_new_tokens": 16, "batch_size": 6},
}


@pytest.fixture
def demo(project):
    project.votes_wanted = 2
    project.save()
    import_path(project, DEMO_FILE, format="hh")  # each pair carries its HH label as one vote
    return project


def wait_for(job, seconds=600, log=None):
    deadline = time.time() + seconds
    while time.time() < deadline:
        job.refresh_from_db()
        if job.finished:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job.pk} still {job.status}: {job.message}\n" +
                         (log.read_text()[-4000:] if log and log.exists() else ""))


@pytest.mark.worker
def test_next_round_closes_the_loop(celery_worker_process, demo, users, api_for):
    created = api_for("manager").post("/api/v1/jobs/", {"project": demo.slug, "kind": "round",
                                                        "config": SMALL_ROUND}, format="json")
    assert created.status_code == 201, created.content
    pipeline = wait_for(Job.objects.get(pk=created.json()["id"]), log=celery_worker_process.log_path)
    assert pipeline.status == Job.Status.SUCCEEDED, (pipeline.error, celery_worker_process.log_path.read_text()[-3000:])
    steps = list(pipeline.steps.order_by("id"))
    assert [s.kind for s in steps] == ["reward_model", "dpo", "generate"]
    assert all(s.status == Job.Status.SUCCEEDED for s in steps)

    # The queue holds the new policy's answers against its parent's, round 1.
    round_comparisons = Comparison.objects.filter(project=demo, origin="round", round=1)
    assert round_comparisons.count() == pipeline.result["comparisons_added"] >= 2
    policy = Checkpoint.objects.get(pk=pipeline.result["policy"])
    parent = policy.parent
    assert parent.path == "" and parent.base_model == "smollm2"  # the base model, registered
    for comparison in round_comparisons:
        pair = RoundPair.objects.get(comparison=comparison)
        assert (pair.policy, pair.parent, pair.round) == (policy, parent, 1)
        assert pair.new_candidate_id in (comparison.candidate_a_id, comparison.candidate_b_id)
        assert GeneratedCandidate.objects.get(candidate=pair.new_candidate).checkpoint == policy

    # An annotator judges them first (the reward model made them priority), with mixed verdicts:
    # the new policy wins, loses, ties, then wins the rest (wherever it was shown, left or right).
    n = round_comparisons.count()
    verdicts = (["new", "parent", "tie"] + ["new"] * n)[:n]
    for verdict in verdicts:
        lease = next_comparison_for(demo, users["annotator"])
        assert lease.comparison.origin == "round"
        new_side = "a" if lease.comparison.round_pair.new_candidate_id == lease.comparison.candidate_a_id else "b"
        new_shown = "left" if lease.shown_left == new_side else "right"
        shown = {"new": new_shown, "parent": "right" if new_shown == "left" else "left", "tie": "tie"}[verdict]
        do_submit_judgment(demo, users["annotator"], JudgmentInput(lease.comparison_id, shown))

    # The round's row: win rate with ties as half a win, and its Wilson interval, worked out here.
    wins = verdicts.count("new") + 0.5 * verdicts.count("tie")
    p, z2 = wins / n, 1.96 ** 2
    centre, half = (p + z2 / (2 * n)) / (1 + z2 / n), 1.96 * (p * (1 - p) / n + z2 / (4 * n * n)) ** 0.5 / (1 + z2 / n)
    expected = (f">{n}</td>", f">{round(100 * p)}%</td>",
                f"{round(100 * max(0, centre - half))}%–{round(100 * min(1, centre + half))}%</td>")
    client = Client()
    client.force_login(users["owner"])
    page = client.get(f"/p/{demo.slug}/").content.decode()
    rounds = page[page.find('id="rounds"'):page.find("</table>", page.find('id="rounds"'))]
    assert all(cell in rounds for cell in expected), (expected, rounds)
    lineage = client.get(f"/p/{demo.slug}/models/{policy.pk}/").content.decode()
    snapshot = policy.snapshots.get()
    assert parent.name in lineage and f"judgment ids up to {snapshot.judgment_watermark}" in lineage
    assert snapshot.format == "trl-preference" and snapshot.judgments >= 300
    assert pipeline.result["reward_model"] and Checkpoint.objects.get(pk=pipeline.result["reward_model"]).snapshots.exists()


@pytest.mark.worker
def test_the_next_round_button_starts_a_pipeline_and_cancel_stops_it(celery_worker_process, demo, users):
    client = Client()
    client.force_login(users["manager"])
    response = client.post(f"/p/{demo.slug}/rounds/next/", {"method": "dpo"})
    pipeline = Job.objects.get(kind="round")
    assert response["Location"] == f"/p/{demo.slug}/jobs/{pipeline.pk}/"
    deadline = time.time() + 60
    while time.time() < deadline and not pipeline.steps.filter(status="running").exists():
        time.sleep(0.3)
    client.post(f"/p/{demo.slug}/jobs/{pipeline.pk}/cancel/")
    wait_for(pipeline, seconds=120)
    assert pipeline.status == Job.Status.CANCELLED
    assert pipeline.steps.get().status == Job.Status.CANCELLED
    assert not Checkpoint.objects.exclude(path="").exists()


@pytest.fixture
def two_policies(demo, tmp_path, settings):
    """The base model and a child of it whose weights differ a little (so their answers do)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rewards.backbones import smollm2_path

    base = base_policy(demo, "smollm2")
    path = settings.MEDIA_ROOT / "checkpoints" / "test-child"
    model = AutoModelForCausalLM.from_pretrained(smollm2_path())
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in model.model.layers[:4]:
            layer.mlp.down_proj.weight.add_(torch.randn_like(layer.mlp.down_proj.weight) * 0.3)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(smollm2_path()).save_pretrained(path)
    child = Checkpoint.objects.create(project=demo, kind="policy", name="child", base_model="smollm2",
                                      path="checkpoints/test-child", parent=base)
    return base, child


def run_here(project, kind, config):
    job = jobs.launch(project, kind, config)
    jobs.run(job.pk)
    job.refresh_from_db()
    return job


def test_generation_enqueues_all_or_nothing_and_reruns_add_nothing(demo, two_policies):
    base, child = two_policies
    config = {"checkpoint": child.pk, "prompts": 2, "max_new_tokens": 12, "priority_from_reward_model": False}
    candidates = Candidate.objects.filter(prompt__project=demo).count()

    broken = Checkpoint.objects.create(project=demo, kind="policy", name="orphan", base_model="smollm2",
                                       path="checkpoints/gone", parent=Checkpoint.objects.create(
                                           project=demo, kind="policy", name="gone", base_model="smollm2",
                                           path="checkpoints/not-there"))
    failed = run_here(demo, "generate", {**config, "checkpoint": broken.pk})
    assert failed.status == Job.Status.FAILED and "does not exist" in failed.error
    assert Candidate.objects.filter(prompt__project=demo).count() == candidates
    assert not Comparison.objects.filter(project=demo, origin="round").exists()

    first = run_here(demo, "generate", config)
    assert first.status == Job.Status.SUCCEEDED, first.error
    assert first.result["comparisons_added"] == 2 and first.result["round"] == 1
    added = Candidate.objects.filter(prompt__project=demo).count()
    assert added == candidates + 4
    again = run_here(demo, "generate", {**config, "round": 1})
    assert again.status == Job.Status.SUCCEEDED
    assert Candidate.objects.filter(prompt__project=demo).count() == added
    assert again.result["comparisons_added"] == 0


def test_win_rates_read_the_new_side_per_comparison(project, users):
    """Greedy decoding: round 1's new answer X comes back as round 2's parent answer. People prefer
    X both times, so the new policy won round 1 and lost round 2."""
    import io

    from annotate.importing import import_stream
    from annotate.models import Judgment

    rows = [{"prompt": "Name a prime.", "response_a": "Seven.", "response_b": b} for b in ("Nine.", "Eight.")]
    import_stream(project, io.BytesIO("\n".join(json.dumps(r) for r in rows).encode()), format="pairs")
    x, y, z = (Candidate.objects.get(prompt__project=project, text=t) for t in ("Seven.", "Nine.", "Eight."))
    base = Checkpoint.objects.create(project=project, kind="policy", name="base", base_model="smollm2")
    child = Checkpoint.objects.create(project=project, kind="policy", name="child", base_model="smollm2",
                                      path="checkpoints/c1", parent=base)
    grandchild = Checkpoint.objects.create(project=project, kind="policy", name="grandchild", base_model="smollm2",
                                           path="checkpoints/c2", parent=child)
    for round_number, (new, old), (policy, parent) in ((1, (x, y), (child, base)), (2, (z, x), (grandchild, child))):
        comparison = Comparison.objects.get(candidate_a_id=min(new.pk, old.pk), candidate_b_id=max(new.pk, old.pk))
        Comparison.objects.filter(pk=comparison.pk).update(origin="round", round=round_number)
        RoundPair.objects.create(comparison=comparison, new_candidate=new, policy=policy, parent=parent,
                                 round=round_number)
        for annotator in (users["annotator"], users["manager"]):
            Judgment.objects.create(project=project, comparison=comparison, annotator=annotator,
                                    choice="a" if comparison.candidate_a_id == x.pk else "b")
    rates = {r["round"]: r for r in round_win_rates(project)}
    assert (rates[1]["win_rate"], rates[1]["judgments"]) == (1.0, 2)
    assert (rates[2]["win_rate"], rates[2]["losses"]) == (0.0, 2)
    assert rates[2]["high"] < 0.9  # two votes: a wide interval


def test_a_grpo_job_registers_a_policy_with_its_parent(demo, tmp_path):
    model = tiny_policy(tmp_path / "tiny")
    job = run_here(demo, "grpo", {"base_model": model, "rewards": ["contains_keyword"], "keyword": "u", "max_steps": 2,
                                  "prompts_per_step": 2, "num_generations": 4, "max_completion_length": 4,
                                  "eval_prompts": 4, "lora": False, "learning_rate": 1e-2, "beta": 0.0})
    assert job.status == Job.Status.SUCCEEDED, job.error
    policy = Checkpoint.objects.get(job=job)
    assert policy.kind == "policy" and policy.parent.base_model == model
    assert {"heldout_reward_before", "heldout_reward_after", "completion_length_last"} <= set(job.result)


@pytest.mark.parametrize(("kind", "config", "field"), [
    ("grpo", {"rewards": ["flattery"]}, "rewards"),
    ("grpo", {"rewards": ["reward_model"]}, "reward_model"),
    ("dpo", {"loss_type": "kto"}, "loss_type"),
    ("generate", {"backend": "tgi"}, "backend"),
    ("round", {"method": "ppo"}, "method"),
    ("round", {"dpo": {"beta": -1}}, "dpo.beta"),
])
def test_policy_jobs_refuse_bad_configs_before_queueing(demo, kind, config, field):
    with pytest.raises(jobs.LaunchRefused) as refused:
        jobs.launch(demo, kind, config)
    assert refused.value.field == field, refused.value.message
    assert not Job.objects.exists()


def test_dpo_on_a_project_without_judgments_is_refused(project):
    import io

    from annotate.importing import import_stream

    import_stream(project, io.BytesIO(b'{"prompt": "p", "response_a": "a", "response_b": "b"}'))
    with pytest.raises(jobs.LaunchRefused, match="0 judged comparisons"):
        jobs.launch(project, "dpo", {})
