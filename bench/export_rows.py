"""Export benchmark: `trl-preference` from PostgreSQL holding 1,000,000 judgments.

    ./prefloop bench export_rows [--judgments 1000000]

Uses the queue benchmark's database (run `./prefloop bench queue_cycles` first: 1,000,000
comparisons of real HH-RLHF texts) and gives every comparison one judgment, so the export
writes one row per judgment. Each export runs in a process of its own, which reports its rows per
second and how far its peak resident memory rose above where it started.

Baseline in the same run: the obvious exporter, the ORM's `select_related(...).iterator()` and
`json.dumps` per row, on the first 100,000 judgments.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/prefloop_bench"))
parser.add_argument("--judgments", type=int, default=1_000_000)
parser.add_argument("--baseline-rows", type=int, default=100_000)
parser.add_argument("--child", choices=["ours", "naive"], help=argparse.SUPPRESS)
args = parser.parse_args()

os.environ["DATABASE_URL"] = args.pg_url
os.environ["PREFLOOP_MEDIA_DIR"] = str(REPO / "var" / "bench" / "media")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
sys.path.insert(0, str(REPO))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if args.child:
    import django

    django.setup()
    from annotate.export import ExportOptions, write_export
    from annotate.models import Judgment, Project

    project = Project.objects.get(slug="bench")
    start_rss = rss_mb()
    started = time.perf_counter()
    if args.child == "ours":
        exported = write_export(project, ExportOptions("trl-preference"))
        rows, size = exported.rows, exported.path.stat().st_size
        exported.path.unlink()  # the next run measures the work, not the cache
        for index in (Path(os.environ["PREFLOOP_MEDIA_DIR"]) / "exports" / "index").iterdir():
            index.unlink()
    else:
        rows = size = 0
        out_path = Path(os.environ["PREFLOOP_MEDIA_DIR"]) / "naive.jsonl"
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with open(out_path, "w") as out:
            judgments = (Judgment.objects.filter(project=project).order_by("comparison_id", "id")
                         .select_related("comparison__prompt", "comparison__candidate_a", "comparison__candidate_b"))
            for judgment in judgments[: args.baseline_rows].iterator(chunk_size=2000):
                c = judgment.comparison
                chosen, rejected = (c.candidate_a, c.candidate_b) if judgment.choice == "a" else (c.candidate_b,
                                                                                                   c.candidate_a)
                line = json.dumps({"prompt": c.prompt.text, "chosen": chosen.text, "rejected": rejected.text}) + "\n"
                out.write(line)
                size += len(line)
                rows += 1
        out_path.unlink()
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "mb": size / 1e6,
                      "rss_growth_mb": rss_mb() - start_rss, "peak_rss_mb": rss_mb()}))
    sys.exit(0)

import psycopg  # noqa: E402

with psycopg.connect(args.pg_url, autocommit=True) as db:
    project_id = db.execute("SELECT id FROM annotate_project WHERE slug = 'bench'").fetchone()
    if project_id is None:
        sys.exit("run ./prefloop bench queue_cycles first: it loads the 1,000,000 comparisons")
    project_id = project_id[0]
    have = db.execute("SELECT count(*) FROM annotate_judgment WHERE project_id = %s", [project_id]).fetchone()[0]
    if have < args.judgments:
        started = time.perf_counter()
        annotator = db.execute("SELECT id FROM auth_user WHERE username = 'bench-annotator-0'").fetchone()[0]
        db.execute("""
            INSERT INTO annotate_judgment (project_id, comparison_id, annotator_id, choice, strength, rubric_scores,
                                           rationale, shown_left, ms_spent, created_at)
            SELECT c.project_id, c.id, %s, CASE WHEN c.id %% 3 = 0 THEN 'b' ELSE 'a' END, 'clear', '{}', '', 'a',
                   2000, now()
            FROM annotate_comparison c
            WHERE c.project_id = %s
              AND NOT EXISTS (SELECT 1 FROM annotate_judgment j WHERE j.comparison_id = c.id)
            ORDER BY c.id LIMIT %s""", [annotator, project_id, args.judgments - have])
        db.execute("VACUUM ANALYZE annotate_judgment")
        print(f"added judgments in {time.perf_counter() - started:.0f} s")
    total = db.execute("SELECT count(*) FROM annotate_judgment WHERE project_id = %s", [project_id]).fetchone()[0]
print(f"{total:,} judgments in the project")


def measure(mode: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--pg-url", args.pg_url, "--child", mode,
                           "--baseline-rows", str(args.baseline_rows)], capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


naive = measure("naive")
print(f"baseline, ORM iterator + json.dumps: {naive['rows']:,} rows in {naive['seconds']:.1f} s = "
      f"{naive['rows_per_s']:,.0f} rows/s, memory +{naive['rss_growth_mb']:.0f} MB")
ours = measure("ours")
print(f"write_export (trl-preference):       {ours['rows']:,} rows ({ours['mb']:,.0f} MB) in {ours['seconds']:.1f} s = "
      f"{ours['rows_per_s']:,.0f} rows/s, memory +{ours['rss_growth_mb']:.0f} MB (peak RSS {ours['peak_rss_mb']:.0f} MB)")
print(f"ratio: {ours['rows_per_s'] / naive['rows_per_s']:.1f}× the baseline's rows per second")
print("RESULT " + json.dumps({"naive": naive, "ours": ours}))
