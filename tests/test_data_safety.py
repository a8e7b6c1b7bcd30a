"""Data that could be lost or doubled, each path closed and kept closed: retired comparisons in
datasets, concurrent export copies, incremental readers that skip late commits, labels an import
dropped, judging while an import runs on the embedded database."""

import gzip
import io
import json
import threading
import time

import pytest

from annotate.export import ExportOptions, gzip_copy, iter_rows, parquet_copy, write_export
from annotate.importing import import_stream
from annotate.models import Comparison, Judgment

pytestmark = pytest.mark.django_db


def pairs(n: int, prefix: str = "q") -> bytes:
    return "\n".join(json.dumps({"prompt": f"{prefix}{i}?", "response_a": f"yes {i}", "response_b": f"no {i}",
                                 "preference": "a"}) for i in range(n)).encode()


def test_retired_comparisons_are_neither_exported_nor_snapshotted(project, users):
    from training.snapshots import make_snapshot

    import_stream(project, io.BytesIO(pairs(3)), labels="judgments", user=users["owner"])
    before = write_export(project, ExportOptions("trl-preference"))
    retired = Comparison.objects.filter(project=project).order_by("id").first()
    Comparison.objects.filter(pk=retired.pk).update(status=Comparison.Status.RETIRED)

    for fmt in ("trl-preference", "trl-unpaired", "raw"):
        rows = list(iter_rows(project, ExportOptions(fmt)))
        assert all(retired.prompt.text not in json.dumps(row) for row in rows), fmt
    after = write_export(project, ExportOptions("trl-preference"))
    snapshot = make_snapshot(project, "trl-preference")

    assert before.rows == 3 and after.rows == 2  # the cached file of before is not reused
    assert snapshot.rows == 2 and snapshot.judgments == 2 and snapshot.comparisons == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_exports_and_copies_never_clash(project, users):
    """Eight requests for the same export and its gzip and Parquet copies at once: every one gets
    a whole file, none fails on another's temporary file."""
    import_stream(project, io.BytesIO(pairs(4000)), labels="judgments", user=users["owner"])
    options = ExportOptions("raw")
    errors, results = [], []
    start = threading.Barrier(8)

    def export():
        from django.db import connection
        try:
            start.wait()
            made = write_export(project, options)
            results.append((made, gzip_copy(made), parquet_copy(made)))
        except BaseException as exc:  # reported below
            errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=export) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    import pyarrow.parquet as pq
    for made, gz, parquet in results:
        content = made.path.read_bytes()
        assert content.count(b"\n") == 4000
        assert gzip.decompress(gz.read_bytes()) == content
        assert pq.read_table(parquet).num_rows == 4000
    assert not list(made.path.parent.glob("*partial*"))


@pytest.mark.django_db(transaction=True)
def test_the_judgments_webhook_counts_a_judgment_that_commits_after_a_higher_id(project, users, settings):
    """One transaction inserts a judgment (the lower id) and stays open while another commits a
    higher id; the incremental reader runs in between, then again after the late commit. Every
    judgment is counted once, none skipped."""
    from django.db import connection, connections, transaction

    from annotate.models import Webhook, WebhookDelivery
    from annotate.tasks import check_judgment_webhooks

    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time: ids commit in order there")
    settings.PREFLOOP_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    import_stream(project, io.BytesIO(pairs(2)), labels="ignore")
    first, second = Comparison.objects.filter(project=project).order_by("id")
    Webhook.objects.create(project=project, url="http://127.0.0.1:9/hook", secret="s", events=["judgments"],
                           every_n_judgments=1)
    inserted, release, done = threading.Event(), threading.Event(), threading.Event()

    def late_writer():
        try:
            with transaction.atomic():
                Judgment.objects.create(project=project, comparison=first, annotator=users["annotator"], choice="a")
                inserted.set()
                release.wait(30)
        finally:
            connections.close_all()
            done.set()

    threading.Thread(target=late_writer).start()
    assert inserted.wait(30)
    later = Judgment.objects.create(project=project, comparison=second, annotator=users["annotator2"], choice="b")
    early = check_judgment_webhooks()
    release.set()
    assert done.wait(30)
    late = check_judgment_webhooks()

    counted = sum(d.payload["judgments"] for d in WebhookDelivery.objects.all())
    assert Judgment.objects.count() == 2 and later.pk > Judgment.objects.exclude(pk=later.pk).get().pk
    assert counted == 2, (early, late, [d.payload for d in WebhookDelivery.objects.all()])


@pytest.mark.django_db(transaction=True)
def test_polling_judgments_with_since_tx_never_skips_a_late_commit(project, users, api_for):
    """The API's commit-safe cursor: one transaction inserts the lower id and stays open while a
    higher id commits; a poll in between, then one after the late commit with the token it gave.
    Every judgment comes back exactly once (an id cursor would have skipped the lower one)."""
    from django.db import connection, connections, transaction

    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time: ids commit in order there")
    import_stream(project, io.BytesIO(pairs(3)), labels="ignore")
    first, second, third = Comparison.objects.filter(project=project).order_by("id")
    client = api_for("manager")
    url = f"/api/v1/projects/{project.slug}/judgments/"
    inserted, release, done = threading.Event(), threading.Event(), threading.Event()

    def late_writer():
        try:
            with transaction.atomic():
                Judgment.objects.create(project=project, comparison=first, annotator=users["annotator"], choice="a")
                inserted.set()
                release.wait(30)
        finally:
            connections.close_all()
            done.set()

    threading.Thread(target=late_writer).start()
    assert inserted.wait(30)
    later = Judgment.objects.create(project=project, comparison=second, annotator=users["annotator2"], choice="b")
    polls, token = [], 0
    response = client.get(url, {"since_tx": token, "page_size": 1})
    polls.append([row["id"] for row in response.json()["results"]])
    token = int(response["X-Prefloop-Next-Since-Tx"])
    by_id = client.get(url, {"since_id": 0}).json()["results"]
    release.set()
    assert done.wait(30)
    Judgment.objects.create(project=project, comparison=third, annotator=users["annotator2"], choice="a")
    for _ in range(10):  # the next polls, page by page, each page in the same window
        response = client.get(url, {"since_tx": token, "page_size": 1})
        rows = response.json()["results"]
        polls.append([row["id"] for row in rows])
        while response.json()["next"]:
            response = client.get(response.json()["next"])
            polls[-1] += [row["id"] for row in response.json()["results"]]
        token = int(response["X-Prefloop-Next-Since-Tx"])
        if not Judgment.objects.extra(where=["txid >= %s"], params=[token]).exists():
            break
    seen = [i for poll in polls for i in poll]
    assert sorted(seen) == sorted(Judgment.objects.values_list("id", flat=True)) and len(seen) == len(set(seen)) == 3
    early = Judgment.objects.exclude(pk__gte=later.pk).get()
    assert [row["id"] for row in by_id] == [later.pk] and early.pk < later.pk  # what since_id saw, then missed
    assert early.pk not in polls[0]  # not handed out while its transaction was open


@pytest.mark.both_databases
def test_an_import_applies_or_reports_every_label(project, users):
    """A duplicate pair later in the file, a second label on a pair the imported account labelled
    before, gold on a pair that exists: each label is applied or reported by its row, never dropped."""
    row = {"prompt": "2+2?", "response_a": "4", "response_b": "5"}
    lines = [json.dumps({**row, "preference": "a"}), json.dumps({**row, "prompt": "3+3?", "preference": "a"}),
             json.dumps({**row, "preference": "b"})]
    first = import_stream(project, io.BytesIO("\n".join(lines).encode()), labels="judgments")
    assert first.labels_not_applied == 1
    assert any(note.startswith("row 3:") and "label" in note for note in first.notes), first.notes

    again = import_stream(project, io.BytesIO(json.dumps({**row, "preference": "tie"}).encode()), labels="judgments")
    assert again.labels_not_applied == 1 and any(note.startswith("row 1:") for note in again.notes), again.notes

    gold = import_stream(project, io.BytesIO(json.dumps({**row, "prompt": "3+3?", "preference": "b"}).encode()),
                         labels="gold")
    assert Comparison.objects.get(prompt__text="3+3?").gold_choice is not None
    assert gold.labels_not_applied == 0


@pytest.mark.both_databases
@pytest.mark.django_db(transaction=True)
def test_people_keep_judging_while_a_large_import_runs(project, users):
    """A 30,000-row import in one thread while an annotator leases and judges in another. On SQLite
    a transaction holds the one write lock of the database: an import in one transaction made every
    judgment wait for its end (and fail past the 20 s timeout on a bigger file); written batch by
    batch after reading, judgments are recorded while the import is still going."""
    from django.db import connections

    from annotate.actions import JudgmentInput, do_submit_judgment
    from annotate.models import ImportBatch
    from annotate.queue import next_comparison_for

    import_stream(project, io.BytesIO(pairs(60, prefix="first")), labels="ignore")
    writing, failed = threading.Event(), []

    def big_import():
        try:
            writing.set()
            import_stream(project, io.BytesIO(pairs(30_000, prefix="big")), labels="judgments", batch_size=1000)
        except Exception as exc:  # noqa: BLE001 -- reported by the assertion below
            failed.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=big_import)
    thread.start()
    assert writing.wait(30)
    time.sleep(1.0)  # the import is under way: reading its rows, or (in one transaction) holding the lock
    judged_during = 0
    imported = ImportBatch.objects.filter(project=project, rows=30_000)
    while thread.is_alive() and judged_during < 50:
        lease = next_comparison_for(project, users["annotator"])
        do_submit_judgment(project, users["annotator"], JudgmentInput(
            comparison_id=lease.comparison_id, choice="left", ms_spent=1000))
        if not imported.exists():  # recorded before the import's end was
            judged_during += 1
    thread.join(300)
    assert not failed, failed
    assert judged_during >= 5  # the annotator kept working while the import ran
    assert ImportBatch.objects.filter(project=project, rows=30_000, judgments_added=30_000).count() == 1
    assert Judgment.objects.filter(annotator=users["annotator"]).count() >= judged_during
