"""Simulated annotators judge real HH-RLHF pairs through the API, as a script would: honest ones
with 10-25% noise, a spammer (random), a left-clicker and a too-fast one. The oracle is the
pairs' known labels. The left-clicker and the too-fast one are flagged with the right reason
within 50 judgments, the spammer within 100, and no honest one ever. Time passes by moving each
lease's start back by the simulated reading time (the server caps time spent by how long the lease
was held)."""

import random
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db.models import F

from annotate.actions import do_create_project, do_set_member
from annotate.importing import import_path
from annotate.models import Comparison, Lease, Role
from annotate.review import do_set_gold_share
from annotate.tokens import create_token

from .conftest import DEMO_FILE

pytestmark = pytest.mark.django_db

JUDGMENTS_EACH = 50
SPAMMER_CONVICTED_BY = 100
# Bad annotators are a minority among honest ones, as in a real pool: with three of seven bad, the
# majority the Dawid-Skene estimate learns from was itself too noisy to convict the spammer in 50.
HONEST_NOISE = {"honest1": 0.10, "honest2": 0.15, "honest3": 0.20, "honest4": 0.25, "honest5": 0.10,
                "honest6": 0.20}
BAD = {"spammer": "low_accuracy", "clicker": "position_bias", "rusher": "too_fast"}


def _half_right(seed: int):
    """Right or wrong for a random annotator, as its exact mean: 25 right in each 50, shuffled. A
    seeded coin drifts: Random(14)'s was right 34 times in its second 50, not a spammer at all."""
    rng = random.Random(seed)
    while True:
        block = [True] * 25 + [False] * 25
        rng.shuffle(block)
        yield from block


def _client(user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {create_token(user, 'sim')[1]}")
    return client


def _answer(name: str, rng: random.Random, correct: str, spammer_right) -> tuple[str, float, int]:
    """(choice left/right, seconds, characters read) of one simulated annotator."""
    wrong = "right" if correct == "left" else "left"
    if name in HONEST_NOISE:
        return (wrong if rng.random() < HONEST_NOISE[name] else correct), rng.uniform(8, 40), 0
    if name == "spammer":  # right exactly half the time in every 50, in a shuffled order
        return (correct if next(spammer_right) else wrong), rng.uniform(8, 40), 0
    if name == "clicker":
        return "left", rng.uniform(8, 40), 0
    return rng.choice([correct, wrong]), rng.uniform(0.3, 0.9), 0  # rusher: not reading


@pytest.fixture
def simulated_project(db):
    User = get_user_model()
    owner = User.objects.create_user("sim-owner")
    project = do_create_project(owner, slug="sim", name="Simulation", votes_wanted=5)
    import_path(project, DEMO_FILE, format="hh", labels="gold")
    oracle = dict(Comparison.objects.filter(project=project).values_list("id", "gold_choice"))
    # Keep one in four as gold (honeypots); the others' labels are only the oracle's.
    keep = set(sorted(oracle)[::4])
    Comparison.objects.filter(project=project).exclude(id__in=keep).update(gold_choice=None, origin="imported")
    do_set_gold_share(project, 0.3)
    for name in [*HONEST_NOISE, *BAD]:
        User.objects.create_user(name)
        do_set_member(project, name, Role.ANNOTATOR)
    return project, owner, oracle


def test_bad_annotators_are_flagged_with_the_right_reason_and_honest_ones_are_not(simulated_project):
    project, owner, oracle = simulated_project
    User = get_user_model()
    texts = {c.id: c.candidate_a.text for c in Comparison.objects.filter(project=project).select_related("candidate_a")}
    names = [*HONEST_NOISE, *BAD]
    clients = {name: _client(User.objects.get(username=name)) for name in names}
    rng = random.Random(14)
    spammer_right = _half_right(15)
    base = f"/api/v1/projects/{project.slug}"

    def judge(times: int) -> dict[str, dict]:
        for _ in range(times):
            for name in names:
                assignment = clients[name].get(f"{base}/next/")
                assert assignment.status_code == 200, assignment.content
                item = assignment.json()
                cid = item["comparison"]
                left_is_a = item["left"]["text"] == texts[cid]
                correct = "left" if (oracle[cid] == "a") == left_is_a else "right"
                choice, seconds, _ = _answer(name, rng, correct, spammer_right)
                chars = len(item["left"]["text"]) + len(item["right"]["text"])
                if name != "rusher":
                    seconds += chars / 40  # reading at ~500 words a minute
                Lease.objects.filter(comparison_id=cid).update(issued_at=F("issued_at") - timedelta(seconds=seconds))
                done = clients[name].post(f"{base}/judgments/", {"comparison": cid, "choice": choice,
                                                                  "ms_spent": int(seconds * 1000)}, format="json")
                assert done.status_code == 201, done.content
        return {row["username"]: row for row in _client(owner).get(f"{base}/annotators/").json()}

    stats = judge(JUDGMENTS_EACH)
    assert all(stats[name]["judgments"] == JUDGMENTS_EACH for name in names)
    assert all(stats[name]["gold_count"] > 0 for name in names)  # gold reached every queue
    for name in ("clicker", "rusher"):
        assert BAD[name] in stats[name]["reasons"], (name, stats[name])
    for name in HONEST_NOISE:
        assert not stats[name]["flagged"], (name, stats[name])
    assert stats["clicker"]["left_rate"] == 1.0 and stats["clicker"]["left_p_adjusted"] < 0.01
    assert stats["rusher"]["too_fast_share"] > 0.9 and stats["honest1"]["too_fast_share"] == 0.0

    # A spammer right half the time is flagged at 50 judgments only about two times in three: its
    # estimated accuracy moves with which items the queue (random by design) gave it and who else
    # judged them. By 100 it is flagged, and still no honest annotator is.
    stats = judge(SPAMMER_CONVICTED_BY - JUDGMENTS_EACH)
    for name, reason in BAD.items():
        assert reason in stats[name]["reasons"], (name, stats[name])
    for name in HONEST_NOISE:
        assert not stats[name]["flagged"], (name, stats[name])
        assert stats[name]["trust"] > stats["spammer"]["trust"]
