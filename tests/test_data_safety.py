"""Data that could be lost or doubled, each path closed and kept closed: retired comparisons in
datasets, concurrent export copies, incremental readers that skip late commits, labels an import
dropped, judging while an import runs on the embedded database."""

import gzip
import io
import json
import threading

import pytest

from annotate.export import ExportOptions, gzip_copy, iter_rows, parquet_copy, write_export
from annotate.importing import import_stream
from annotate.models import Comparison

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
