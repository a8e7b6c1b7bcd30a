"""Import benchmark: 100,000 pairs through `manage.py import_data`, rows per second and peak memory.

    ./prefloop bench import_rows [--db pg|sqlite] [--rows 100000]

The file is real text: the AlpacaEval judgment rows and HH-RLHF pairs from ../shared/data,
repeated with a variant number appended to the prompt until there are enough distinct pairs.
Each import runs in a process of its own so its peak resident memory can be read.

Baseline in the same run: the obvious importer (one `get_or_create` per prompt, response and
comparison, row by row, inside one transaction) on the first 5,000 rows.
"""

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PREFLOOP_SHARED_DATA", REPO.parent / "shared" / "data"))
OUT = REPO / "var" / "bench"
OUT.mkdir(parents=True, exist_ok=True)

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--db", choices=["pg", "sqlite"], default="pg")
parser.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/prefloop_bench_import")
parser.add_argument("--rows", type=int, default=100_000)
parser.add_argument("--baseline-rows", type=int, default=5_000)
parser.add_argument("--child", choices=["fast", "naive"], help=argparse.SUPPRESS)
parser.add_argument("--file", help=argparse.SUPPRESS)
args = parser.parse_args()

DATABASE_URL = args.pg_url if args.db == "pg" else f"sqlite:///{OUT / 'import.sqlite3'}"


def real_rows():
    for path in sorted((SHARED / "alpaca_eval" / "judgments").glob("*.jsonl")):
        with open(path) as handle:
            for line in handle:
                r = json.loads(line)
                yield r["instruction"], r["output_1"], r["output_2"], {1: "a", 2: "b"}.get(r["preference"], "")
    from_hh = SHARED / "hh-rlhf" / "harmless-base-test.dev.jsonl.gz"
    with gzip.open(from_hh, "rt") as handle:
        for line in handle:
            r = json.loads(line)
            cut = r["chosen"].rfind("\n\nAssistant:")
            yield r["chosen"][:cut].strip(), r["chosen"][cut + 12:].strip(), r["rejected"][cut + 12:].strip(), "a"


def write_file(path: Path, rows: int) -> None:
    base = list(real_rows())
    with open(path, "w") as handle:
        for i in range(rows):
            prompt, a, b, preference = base[i % len(base)]
            variant = i // len(base)
            handle.write(json.dumps({"prompt": f"{prompt} (variant {variant})" if variant else prompt,
                                     "response_a": a, "response_b": b, "preference": preference}) + "\n")


def child(mode: str, path: str) -> None:
    """Runs inside the measured process."""
    sys.path.insert(0, str(REPO))
    os.environ["DATABASE_URL"] = DATABASE_URL
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db import transaction

    from annotate.importing import import_path, imported_annotator, iter_parsed
    from annotate.models import Candidate, Comparison, Judgment, Project, Prompt, content_hash

    project, _ = Project.objects.get_or_create(slug=f"bench-{mode}", defaults={"name": mode})
    started = time.perf_counter()
    if mode == "fast":
        result = import_path(project, path)
        rows = result.rows
    else:
        rows = 0
        annotator = imported_annotator()
        with transaction.atomic(), open(path, "rb") as raw:
            for row in iter_parsed(raw):
                prompt, _ = Prompt.objects.get_or_create(project=project, content_hash=content_hash(row.prompt_text),
                                                         defaults={"text": row.prompt_text})
                ids = [Candidate.objects.get_or_create(prompt=prompt, content_hash=content_hash(text),
                                                       defaults={"text": text, "source": source})[0].pk
                       for text, source in row.responses]
                for i, j, label in row.pairs:
                    a, b = sorted((ids[i], ids[j]))
                    if a == b:
                        continue
                    comparison, created = Comparison.objects.get_or_create(
                        candidate_a_id=a, candidate_b_id=b, defaults={"project": project, "prompt": prompt})
                    if label and created:
                        Judgment.objects.create(project=project, comparison=comparison, annotator=annotator,
                                                choice=label)
                rows += 1
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "rows": rows, "seconds": seconds, "rows_per_s": rows / seconds,
                      "peak_rss_mb": peak_mb}))


if args.child:
    child(args.child, args.file)
    sys.exit(0)


def fresh_database() -> None:
    if args.db == "pg":
        import psycopg

        name = args.pg_url.rsplit("/", 1)[1]
        with psycopg.connect(args.pg_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{OUT / 'import.sqlite3'}{suffix}").unlink(missing_ok=True)
    env = {**os.environ, "DATABASE_URL": DATABASE_URL}
    subprocess.run([sys.executable, str(REPO / "manage.py"), "migrate", "-v", "0"], env=env, check=True)


def measure(mode: str, path: Path) -> dict:
    output = subprocess.run([sys.executable, __file__, "--db", args.db, "--pg-url", args.pg_url, "--child", mode,
                             "--file", str(path)], capture_output=True, text=True)
    if output.returncode:
        sys.exit(f"{mode} import failed:\n{output.stderr[-3000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


big = OUT / f"pairs-{args.rows}.jsonl"
small = OUT / f"pairs-{args.baseline_rows}.jsonl"
write_file(big, args.rows)
write_file(small, args.baseline_rows)
print(f"{args.db}: {big.name} is {big.stat().st_size / 1e6:.0f} MB")
fresh_database()
naive = measure("naive", small)
print(f"baseline, get_or_create row by row: {naive['rows']:,} rows in {naive['seconds']:.1f} s = "
      f"{naive['rows_per_s']:,.0f} rows/s, peak RSS {naive['peak_rss_mb']:.0f} MB")
fast = measure("fast", big)
print(f"import_data:                        {fast['rows']:,} rows in {fast['seconds']:.1f} s = "
      f"{fast['rows_per_s']:,.0f} rows/s, peak RSS {fast['peak_rss_mb']:.0f} MB")
again = measure("fast", big)
print(f"import_data, same file again:       {again['rows']:,} rows in {again['seconds']:.1f} s = "
      f"{again['rows_per_s']:,.0f} rows/s (adds nothing), peak RSS {again['peak_rss_mb']:.0f} MB")
print(f"ratio: {fast['rows_per_s'] / naive['rows_per_s']:.1f}× the baseline's rows per second")
print("RESULT " + json.dumps({"db": args.db, "naive": naive, "fast": fast, "again": again}))
