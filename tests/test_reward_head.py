"""The always-fresh reward head: on real HH-RLHF pairs its refit learns; in the product it waits
(and says so) until a project has enough judgments, then orders the queue after every K new
ones, on a real Celery worker too; its disagreement with each judgment is kept; its settings and
status are in the API and on the project page."""

import gzip
import time

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse

from annotate.actions import JudgmentInput, do_submit_judgment
from annotate.importing import import_path, iter_parsed
from annotate.models import Comparison, Judgment, content_hash
from annotate.queue import next_comparison_for
from training.models import CandidateEmbedding, JudgmentNoise, RewardHead
from training.reward_head import due_projects, head_for, judgment_disagreement, label_noise, refit

from .conftest import DEMO_FILE, HH_DEV, shared_file

pytestmark = [pytest.mark.ml]


def hh_file(tmp_path, pairs: int, source=DEMO_FILE):
    with gzip.open(source, "rt", encoding="utf-8") as handle:
        lines = [line for _, line in zip(range(pairs), handle, strict=False)]
    path = tmp_path / f"hh-{pairs}.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def chosen_hashes(path) -> set[str]:
    """The HH "chosen" response of each pair: what an annotator who agrees with HH prefers."""
    with open(path, "rb") as handle:
        return {content_hash(row.responses[0][0]) for row in iter_parsed(handle, "hh")}


def judge(project, user, chosen, n):
    """`n` judgments through the queue, as an annotator who agrees with the HH labels judges."""
    served = []
    for _ in range(n):
        lease = next_comparison_for(project, user)
        c = lease.comparison
        side = "a" if content_hash(c.candidate_a.text) in chosen else "b"
        do_submit_judgment(project, user, JudgmentInput(comparison_id=c.pk,
                                                        choice="left" if lease.shown_left == side else "right"))
        served.append(c.pk)
    return served


def queue_order(project) -> list[int]:
    return list(Comparison.objects.filter(project=project, status="open").order_by("-priority", "tiebreak")
                .values_list("id", flat=True))


@pytest.fixture
def hh_project(project, tmp_path, settings):
    settings.PREFLOOP_HEAD_MAX_LENGTH = 128  # short inputs keep the test quick on a CPU
    path = hh_file(tmp_path, 70)
    import_path(project, path, format="hh", labels="ignore")
    head = head_for(project)
    head.refit_every, head.min_judgments = 10, 20
    head.save()
    project.chosen = chosen_hashes(path)
    return project


def test_refit_on_real_hh_pairs_learns(settings):
    """Frozen MiniLM embeddings + the BT head, 600 HH harmlessness pairs to learn from, 400 held out."""
    from rewards.embeddings import Encoder
    from rewards.preference_head import fit_head, member_probabilities, pair_features

    with open(shared_file(HH_DEV), "rb") as handle:
        rows = [row for _, row in zip(range(1000), iter_parsed(handle, "hh"), strict=False)]
    encoder = Encoder(max_length=128)
    vectors = encoder.embed([text for row in rows for text, _ in row.responses])
    X = pair_features(vectors[0::2], vectors[1::2])
    y = np.ones(len(rows))
    flip = np.random.default_rng(0).random(len(rows)) < 0.5  # chosen shown second half the time
    X[flip], y[flip] = -X[flip], 0.0
    fit = fit_head(X[:600], y[:600], members=4, l2=settings.PREFLOOP_HEAD_L2)
    held_out = ((member_probabilities(fit.weights, X[600:])[0] > 0.5) == (y[600:] > 0.5)).mean()
    assert fit.loss_after < fit.loss_before - 0.05
    assert held_out > 0.55, held_out  # a coin gets 0.5; the longer-wins baseline on this split ~0.5


@pytest.mark.both_databases
def test_the_head_waits_then_reorders_the_queue_after_every_k_judgments(hh_project, users):
    project, annotator = hh_project, users["annotator"]
    judge(project, annotator, project.chosen, 19)
    before = queue_order(project)

    result = refit(project)  # too few: the queue keeps its order and the head says why
    assert result.status == RewardHead.Status.WAITING
    assert "19 of the 20 judgments" in result.message and "keeps its current order" in result.message
    assert queue_order(project) == before
    assert set(Comparison.objects.filter(project=project, status="open").values_list("priority", flat=True)) == {0.0}
    assert due_projects() == []

    judge(project, annotator, project.chosen, 1)
    assert due_projects() == [project.pk]
    result = refit(project)
    head = RewardHead.objects.get(project=project)
    assert head.status == RewardHead.Status.FITTED and head.fits == 1 and head.judgments_seen == 20
    assert head.metrics["loss_after"] < head.metrics["loss_before"]
    assert result.prioritised == Comparison.objects.filter(project=project, status="open").count() == 50
    first = dict(Comparison.objects.filter(project=project, status="open").values_list("id", "priority"))
    assert len(set(first.values())) > 40  # a priority of its own for nearly every open comparison
    after = queue_order(project)
    assert after != before
    # The next comparison anyone is served is the one the head is least sure about.
    lease = next_comparison_for(project, users["annotator2"])
    assert lease.comparison_id == after[0] and first[after[0]] == max(first.values())
    assert CandidateEmbedding.objects.filter(candidate__prompt__project=project).count() == 140

    # Fewer than K new judgments: nothing to do; K of them: the priorities move again.
    judge(project, annotator, project.chosen, 9)
    assert due_projects() == []
    judge(project, annotator, project.chosen, 1)
    assert due_projects() == [project.pk]
    refit(project)
    second = dict(Comparison.objects.filter(project=project, status="open").values_list("id", "priority"))
    assert RewardHead.objects.get(project=project).fits == 2
    assert any(abs(second[c] - first[c]) > 1e-4 for c in second if c in first)


def test_disagreement_with_each_judgment_is_kept(hh_project, users):
    project = hh_project
    served = judge(project, users["annotator"], project.chosen, 30)
    refit(project)
    judgments = list(Judgment.objects.filter(project=project).values_list("id", flat=True))
    values = judgment_disagreement(judgments)
    assert set(values) == set(judgments) and all(0.0 <= v <= 1.0 for v in values.values())
    assert JudgmentNoise.objects.filter(project=project, out_of_bag=True).count() >= 25
    top = label_noise(project, limit=5)
    assert [t["disagreement"] for t in top] == sorted((t["disagreement"] for t in top), reverse=True)
    assert top[0]["comparison"] in served and top[0]["annotator"] == "annotator"


def test_status_and_settings_in_the_api_and_on_the_project_page(hh_project, users, api_for):
    project = hh_project
    url = f"/api/v1/projects/{project.slug}/reward-head/"
    body = api_for("annotator").get(url).json()
    assert body["status"] == "waiting" and body["orders_queue"] is False
    assert "0 of the 20 judgments" in body["message"] and body["refit_every"] == 10
    assert api_for("outsider").get(url).status_code == 404
    assert api_for("annotator").patch(url, {"refit_every": 5}, format="json").status_code == 403
    bad = api_for("manager").patch(url, {"refit_every": 0}, format="json")
    assert bad.status_code == 400 and "refit_every" in bad.json()
    assert api_for("manager").patch(url, {"refit_every": 5, "min_judgments": 10}, format="json").status_code == 200
    head = RewardHead.objects.get(project=project)
    assert (head.refit_every, head.min_judgments) == (5, 10)

    judge(project, users["annotator"], project.chosen, 10)
    refit(project)
    body = api_for("annotator").get(url).json()
    assert body["status"] == "fitted" and body["orders_queue"] is True and body["fits"] == 1
    assert len(body["label_noise"]) == 10
    client = Client()
    client.force_login(users["owner"])
    html = client.get(reverse("project", args=[project.slug])).content.decode()
    assert 'id="reward-head"' in html and "Fitted on 10 judgments" in html

    # Off: the queue keeps the order it has, and the head says so.
    assert api_for("owner").patch(url, {"enabled": False}, format="json").json()["status"] == "off"
    before = queue_order(project)
    judge(project, users["annotator"], project.chosen, 5)
    assert refit(project).status == RewardHead.Status.OFF
    still_open = set(queue_order(project))
    assert queue_order(project) == [c for c in before if c in still_open]
    assert due_projects() == []


@pytest.mark.worker
def test_the_worker_refits_in_the_background(celery_worker_process, hh_project, users):
    from training.head_tasks import check_reward_heads

    project = hh_project
    judge(project, users["annotator"], project.chosen, 20)
    check_reward_heads.delay()  # what beat sends every PREFLOOP_HEAD_CHECK_SECONDS
    deadline = time.time() + 180
    while time.time() < deadline:
        head = RewardHead.objects.get(project=project)
        if head.status in (RewardHead.Status.FITTED, RewardHead.Status.FAILED):
            break
        time.sleep(0.5)
    assert head.status == RewardHead.Status.FITTED, (head.message, celery_worker_process.log_path.read_text()[-3000:])
    assert head.refit_queued_at is None
    assert Comparison.objects.filter(project=project, status="open").exclude(priority=0).count() == 50


@pytest.mark.django_db(transaction=True)
def test_a_priority_write_in_flight_never_holds_up_next(demo_pairs, users):
    """While a refit's chunk holds the top comparisons locked, `next` serves the next free one at
    once (SKIP LOCKED) instead of waiting; a statement timeout turns a wait into a failure."""
    import threading

    from django.db import connection, transaction

    from training.reward_head import write_priorities

    if connection.vendor != "postgresql":
        pytest.skip("SKIP LOCKED is PostgreSQL's; SQLite serialises writers by design")
    order = queue_order(demo_pairs)
    locked, release, failures = threading.Event(), threading.Event(), []

    def refit_chunk():
        try:
            with transaction.atomic():
                write_priorities(order[:5], np.full(5, 9.0))  # nested: commits only when the block ends
                locked.set()
                release.wait(30)
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)
        finally:
            locked.set()
            connection.close()

    writer = threading.Thread(target=refit_chunk)
    writer.start()
    try:
        assert locked.wait(30)
        with connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = 5000")
        lease = next_comparison_for(demo_pairs, users["annotator"])
        assert lease is not None and lease.comparison_id not in order[:5]
    finally:
        release.set()
        writer.join(30)
        with connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = 0")
    assert not failures
    assert set(Comparison.objects.filter(pk__in=order[:5]).values_list("priority", flat=True)) == {9.0}


def test_a_failed_refit_says_why_keeps_the_order_and_waits_for_k_more(hh_project, users, monkeypatch):
    project = hh_project
    judge(project, users["annotator"], project.chosen, 20)
    before = queue_order(project)

    def broken(*args, **kwargs):
        raise RuntimeError("the encoder's files are missing")

    monkeypatch.setattr("training.reward_head.embed_candidates", broken)
    assert due_projects() == [project.pk]
    with pytest.raises(RuntimeError):
        refit(project)
    head = RewardHead.objects.get(project=project)
    assert head.status == RewardHead.Status.FAILED and "the encoder's files are missing" in head.message
    assert head.refit_queued_at is None and queue_order(project) == before
    assert due_projects() == []  # not retried on every check
    judge(project, users["annotator"], project.chosen, 10)
    assert due_projects() == [project.pk]
