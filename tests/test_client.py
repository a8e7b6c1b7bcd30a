"""The Python client (client/, the prefloop_client package) against a live server with real tokens:
adding comparisons and candidates in batches (waiting or in the background), reading judgments
since a cursor, exporting to a file and to a datasets.Dataset, launching and waiting for jobs and
rounds on a real worker, and one typed error for each refusal the API answers with."""

import json
import shutil

import pytest
from prefloop_client import (
    BadRequest,
    Client,
    Conflict,
    Forbidden,
    JobFailed,
    NotFound,
    RateLimited,
    Unauthorized,
)

from annotate.importing import import_path
from annotate.models import Comparison, Judgment
from annotate.tokens import TokenRateThrottle, create_token, revoke_token
from training.models import CandidateScore, Job

from .conftest import ALPACA_JUDGMENTS, shared_file
from .tiny_models import tiny_reward_checkpoint


@pytest.fixture
def connect(live_server, users):
    """A Client for the named user, with a fresh personal token."""
    made = []

    def make(name: str, **options) -> Client:
        options.setdefault("progress", False)
        client = Client(live_server.url, create_token(users[name], "client test")[1], **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def pairs(count: int, start: int = 0, **extra) -> list[dict]:
    return [{"prompt": f"Question {i}?", "response_a": f"A careful answer to {i}.", "response_b": f"No. ({i})",
             **extra} for i in range(start, start + count)]


def test_comparisons_go_in_batches_and_again_add_nothing(project, connect):
    client = connect("manager")
    items = pairs(25, preference="a") + [{"prompt": [{"role": "user", "content": "Hi"}], "response_a": "Hello!",
                                          "response_b": "Go away.", "source_a": "kind", "source_b": "rude"}]
    result = client.add_comparisons(project.slug, items, batch_size=10)
    assert result.created == 26 and result.prompts_added == 26 and result.judgments_added == 25
    assert len(result.comparisons) == 26 and None not in result.comparisons
    assert list(Comparison.objects.filter(project=project).order_by("id").values_list("id", flat=True)) == \
        sorted(result.comparisons)
    assert Judgment.objects.filter(project=project).count() == 25

    again = client.add_comparisons(project.slug, items, batch_size=7)
    assert again.created == 0 and again.judgments_added == 0 and again.comparisons == result.comparisons


def test_an_upload_runs_in_the_background(project, connect):
    client = connect("owner")
    upload = client.add_comparisons(project.slug, pairs(30), batch_size=8, labels="ignore", wait=False)
    result = upload.result(timeout=60)
    assert upload.done() and upload.sent == upload.total == 30
    assert result.created == 30 and Comparison.objects.filter(project=project).count() == 30


def test_candidates_become_every_pair_of_a_prompts_responses(project, connect):
    client = connect("owner")
    result = client.add_candidates(project.slug, [
        {"prompt": "Name a colour.", "responses": ["Red.", {"text": "Blue.", "source": "m2"}, "Green."]},
        {"prompt": "Name a fruit.", "responses": ["Apple.", "Pear."], "priority": 2.0},
    ])
    assert result.created == 4 and result.candidates_added == 5 and result.prompts_added == 2
    assert set(Comparison.objects.filter(project=project, priority=2.0).values_list("prompt__text", flat=True)) == \
        {"Name a fruit."}
    with pytest.raises(ValueError, match="at least two responses"):
        client.add_candidates(project.slug, [{"prompt": "p", "responses": ["only one"]}])


def test_a_refused_batch_names_the_item_in_the_whole_list(project, connect):
    items = pairs(15)
    items[12]["prompt"] = "   "
    with pytest.raises(BadRequest) as refused:
        connect("owner").add_comparisons(project.slug, items, batch_size=10)
    assert "items.12.prompt: The prompt is blank." in refused.value.message
    assert refused.value.written == 10 and "12" in refused.value.errors["items"]
    assert Comparison.objects.filter(project=project).count() == 10  # the first batch; none of the second


def test_judgments_are_read_page_by_page_since_a_cursor(project, connect):
    manager, annotator, other = connect("manager"), connect("annotator"), connect("annotator2")
    manager.add_comparisons(project.slug, pairs(6), labels="ignore")
    judged = []
    for client, choice in ((annotator, "left"), (annotator, "right"), (other, "tie"), (annotator, "left"),
                           (other, "left")):
        assignment = client.next_comparison(project.slug)
        strength = None if choice == "tie" else "clear"  # a tie has no strength
        judged.append(client.judge(project.slug, assignment["comparison"], choice, strength=strength)["id"])

    everyone = list(manager.judgments(project.slug, page_size=2))
    assert [j["id"] for j in everyone] == judged  # three pages of two, oldest first
    cursor = judged[2]
    assert [j["id"] for j in manager.judgments(project.slug, since_id=cursor)] == judged[3:]
    assert [j["annotator"] for j in annotator.judgments(project.slug)] == ["annotator"] * 3  # only theirs
    assert [j["id"] for j in manager.judgments(project.slug, annotator="annotator2")] == [judged[2], judged[4]]
    rows, token = manager.new_judgments(project.slug, page_size=2)  # the commit-safe poll, from the start
    assert [j["id"] for j in rows] == judged and token > 0
    rows, token = manager.new_judgments(project.slug, token)
    assert rows == []  # nothing committed since the token
    assert annotator.next_comparison(project.slug) is not None
    for _ in range(3):
        assignment = other.next_comparison(project.slug)
        if assignment is None:
            break
        other.judge(project.slug, assignment["comparison"], "left")
    assert other.next_comparison(project.slug) is None  # nothing left for them: 204


def test_export_to_a_file_and_to_a_dataset(project, connect, tmp_path):
    client = connect("manager")
    client.add_comparisons(project.slug, pairs(12, preference="a") + pairs(3, start=100, preference="b"))
    exported = client.export(project.slug, tmp_path / "prefs.jsonl", format="trl-preference", votes="weighted")
    rows = [json.loads(line) for line in exported.path.read_text().splitlines()]
    assert exported.rows == len(rows) == 15 and exported.version.startswith("sha256:")
    assert {"prompt", "chosen", "rejected", "margin"} <= set(rows[0])
    assert not list(tmp_path.glob("*.partial"))

    dataset = client.export_dataset(project.slug, format="trl-preference", votes="weighted")
    assert dataset.num_rows == 15 and set(dataset.column_names) == {"prompt", "chosen", "rejected", "margin"}
    assert sorted(dataset["chosen"]) == sorted(r["chosen"] for r in rows)
    assert exported.version in dataset.info.description
    unpaired = client.export_dataset(project.slug, format="trl-unpaired")
    assert unpaired.num_rows == 30 and sum(unpaired["label"]) == 15

    with pytest.raises(BadRequest, match="format: Known formats"):
        client.export(project.slug, tmp_path / "x.jsonl", format="csv")
    assert not (tmp_path / "x.jsonl").exists()


def test_each_refusal_is_its_own_error_with_the_servers_message(project, connect, live_server, users):
    with pytest.raises(Unauthorized, match="Unknown API token"):
        Client(live_server.url, "pfl_nope_nope").projects()
    token, secret = create_token(users["owner"], "soon revoked")
    revoke_token(token)
    with pytest.raises(Unauthorized, match="revoked") as revoked:
        Client(live_server.url, secret).project(project.slug)
    assert revoked.value.status == 401

    with pytest.raises(Forbidden) as forbidden:
        connect("annotator").add_comparisons(project.slug, pairs(1))
    assert forbidden.value.status == 403 and forbidden.value.message
    with pytest.raises(NotFound):
        connect("outsider").project(project.slug)

    owner = connect("owner")
    owner.add_comparisons(project.slug, pairs(2), labels="ignore")
    held = connect("annotator").next_comparison(project.slug)["comparison"]
    with pytest.raises(Conflict, match="hold") as conflict:
        connect("annotator2").judge(project.slug, held, "left")
    assert conflict.value.status == 409

    with pytest.raises(BadRequest) as bad_config:
        owner.launch(project.slug, "reward_model", {"loss": "hinge"})
    assert "config.loss" in bad_config.value.message and "config.loss" in bad_config.value.errors
    assert not Job.objects.exists()


def test_too_many_requests_is_rate_limited_and_can_be_waited_out(project, connect, monkeypatch):
    from django.core.cache import cache

    cache.clear()
    # 3 a minute: the fourth request is refused however slowly a loaded machine serves the first
    # three (at 3/s a busy CI took over a second for four and none was refused)
    monkeypatch.setattr(TokenRateThrottle, "THROTTLE_RATES", {"token": "3/min"})
    client = connect("owner")
    with pytest.raises(RateLimited) as limited:
        for _ in range(4):
            client.project(project.slug)
    assert limited.value.status == 429 and limited.value.retry_after and "throttled" in limited.value.message.lower()

    cache.clear()
    monkeypatch.setattr(TokenRateThrottle, "THROTTLE_RATES", {"token": "3/s"})  # a wait of a second, not a minute
    patient = connect("owner", rate_limit_retries=3)
    assert [patient.project(project.slug)["slug"] for _ in range(5)] == [project.slug] * 5


def test_a_round_launches_as_a_pipeline_and_can_be_cancelled(project, connect):
    import_path(project, shared_file(ALPACA_JUDGMENTS / "gpt4_1106_preview_vs_text_davinci_003.jsonl"))
    client = connect("owner")
    with pytest.raises(BadRequest, match="config.method"):
        client.run_round(project.slug, {"method": "ppo"})
    round_job = client.run_round(project.slug, {"method": "dpo"}, wait=False)
    assert round_job["kind"] == "round" and round_job["status"] == "running"
    with pytest.raises(TimeoutError):
        client.wait(round_job, timeout=0.5, poll=0.1)
    first_step = next(client.jobs(project.slug, kind="reward_model"))
    assert first_step["parent"] == round_job["id"]
    cancelled = client.cancel(round_job["id"])
    ended = client.wait(cancelled, raise_on_failure=False, poll=0.2, timeout=30)
    assert ended["status"] == "cancelled"
    assert client.job(first_step["id"])["status"] == "cancelled"
    with pytest.raises(JobFailed, match="cancelled"):
        client.wait(round_job["id"])


@pytest.mark.worker
def test_a_job_is_launched_and_waited_for_on_a_real_worker(celery_worker_process, project, connect, capsys):
    client = connect("owner", progress=True)
    client.add_comparisons(project.slug, pairs(8), labels="ignore")
    checkpoint = tiny_reward_checkpoint(project)

    done = client.launch(project.slug, "score", {"checkpoint": checkpoint.pk, "batch_size": 4}, wait=True,
                         poll=0.2, timeout=180)
    assert done["status"] == "succeeded" and done["result"]["scored"] == 16
    assert CandidateScore.objects.filter(checkpoint=checkpoint).count() == 16
    progress = capsys.readouterr().err  # not a terminal: plain lines, the last one the end
    assert f"job {done['id']} score: 100% succeeded" in progress.splitlines()[-1]

    with pytest.raises(Conflict, match="Only a failed or cancelled job"):
        client.retry(done["id"])

    broken = tiny_reward_checkpoint(project, name="files-gone")
    shutil.rmtree(broken.directory)
    with pytest.raises(JobFailed) as failed:
        client.launch(project.slug, "score", {"checkpoint": broken.pk}, wait=True, poll=0.2, timeout=180)
    assert failed.value.job["status"] == "failed" and "not a reward-model checkpoint" in failed.value.message
