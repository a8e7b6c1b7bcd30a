"""The rounds bench's instrument, end to end on tiny models: simulated annotators label a hidden
HH pool through the live server's API, a best-of-n round runs on a real worker, launched through
the jobs API as the bench launches it, the annotators judge the round's new comparisons by the
gold judge, and the gold win rate over the parent comes with its bootstrap interval."""

import json
from pathlib import Path

import pytest
from django.conf import settings

from annotate.actions import do_add_simulated_annotators
from annotate.importing import import_rows
from annotate.models import Comparison, Judgment
from annotate.tokens import create_token
from bench import rounds
from bench.simulate import NoisyAnnotator, run_annotators

from .conftest import HH_DEV, shared_file
from .test_policy import tiny_policy
from .tiny_models import tiny_bert

pytestmark = [pytest.mark.ml, pytest.mark.worker]


def tiny_gold(directory: Path) -> Path:
    from rewards.scoring import MANIFEST

    tiny_bert(directory / "member_0")
    (directory / MANIFEST).write_text(json.dumps({"kind": "reward_model", "base_model": "tiny-bert",
                                                  "members": ["member_0"], "max_length": 64, "criteria": []}))
    return directory


def test_a_tiny_round_driven_by_simulated_annotators(celery_worker_process, project, users, live_server, tmp_path):
    from rewards.scoring import RewardModel

    pairs = rounds.hh_pairs(shared_file(HH_DEV))
    pool = pairs[:30]
    heldout = [(i + 1, p["prompt"]) for i, p in enumerate(p for p in pairs[30:] if rounds.single_turn(p["prompt"]))][:3]
    import_rows(project, rounds.pool_rows(pool), labels="ignore", user=users["owner"])
    assert not Judgment.objects.filter(project=project).exists()  # the labels stay hidden
    tokens = [secret for _, secret in do_add_simulated_annotators(project, 3)]
    gold = tiny_gold(tmp_path / "gold")
    oracle = rounds.LoopOracle(pool, RewardModel(gold))

    judged = run_annotators(live_server.url, project.slug, tokens, oracle, NoisyAnnotator(flip=0.25, seed=0),
                            max_labels=24)
    assert (judged["labels"], judged["errors"], oracle.asked) == (24, 0, {"revealed": 24, "gold": 0})

    _, manager_token = create_token(users["owner"])
    instance = rounds.Instance(live_server.url, project.slug, manager_token, tokens, Path(settings.MEDIA_ROOT))
    policy_model = tiny_policy(tmp_path / "policy")
    pipeline = rounds.launch_round(instance, {
        "method": "best_of_n",
        "reward_model": {"base_model": str(tiny_bert(tmp_path / "rm-base")), "max_steps": 4, "max_length": 64,
                         "batch_size": 8, "min_pairs": 10, "eval_fraction": 0.2},
        "best_of_n": {"n": 3, "base_model": policy_model},
        "generate": {"prompts": 3, "max_new_tokens": 8, "base_model": policy_model}})
    assert pipeline["status"] == "succeeded", (pipeline["error"], celery_worker_process.log_path.read_text()[-3000:])
    assert set(rounds.step_seconds(instance, pipeline)) == {"reward_model", "best_of_n", "generate"}
    added = pipeline["result"]["comparisons_added"]
    assert added == Comparison.objects.filter(project=project, origin="round", round=1).count() >= 1

    # The annotators go on: the pool's six last pairs by their hidden labels, the round's by the gold judge.
    rest = run_annotators(live_server.url, project.slug, tokens, oracle, NoisyAnnotator(flip=0.25, seed=1))
    assert (rest["labels"], rest["stopped"], oracle.asked) == (6 + added, "empty", {"revealed": 30, "gold": added})

    judge = rounds.Judge(gold, heldout, tmp_path, tokens=6, seed=0)
    policy = rounds.checkpoint(instance, pipeline["result"]["policy"])
    parent = rounds.checkpoint(instance, policy["parent"])
    new = judge.answers_of(policy["id"], rounds.model_name(instance, policy))
    old = judge.answers_of(parent["id"], rounds.model_name(instance, parent))
    rate = judge.win_rate(new, old, seed=0)
    (low, high), (lc_low, lc_high) = rate["ci"], rate["lc_ci"]
    assert len(new) == len(old) == 3 and 0 <= low <= rate["win"] <= high <= 1
    assert 0 <= lc_low <= rate["lc"] <= lc_high <= 1


@pytest.mark.faults
def test_the_bench_starts_its_dead_worker_again_with_nothing_of_the_old_one_left(tmp_path):
    """A bench instance's worker that dies (as one did on a half-written broker message, leaving
    a round queued for good) is started again while the bench waits on a round; the old worker's
    own children (its beat) are stopped with it."""
    import os
    import subprocess
    import time

    pids = tmp_path / "pids"

    def start_worker():  # a stand-in worker with a child, as Celery's is with its beat
        return subprocess.Popen(["bash", "-c", f"sleep 600 & echo $! >> {pids}; wait"], start_new_session=True)

    instance = rounds.Instance("http://unused", "slug", "token", [], tmp_path, [start_worker()], start_worker)
    first = instance.processes[-1]
    instance.watch()
    assert instance.processes[-1] is first and instance.worker_restarts == 0  # alive: left alone
    deadline = time.monotonic() + 30
    while not (pids.exists() and pids.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(pids.read_text().split()[0])
    first.kill()  # the worker dies; its child lives on
    first.wait()
    instance.watch()
    try:
        second = instance.processes[-1]
        assert second is not first and second.poll() is None and instance.worker_restarts == 1
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
                if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
                    break
            except (ProcessLookupError, FileNotFoundError):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the dead worker's child was left running")
    finally:
        instance.stop()
    assert second.poll() is not None
