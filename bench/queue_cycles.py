"""Queue benchmark: simulated annotators doing next + submit against 1,000,000 comparisons.

    ./prefloop bench queue_cycles [--db pg|sqlite] [--comparisons 1000000] [--annotators 32] [--seconds 20]

Simulated annotators send requests to a pool of server threads (processes x threads, each with
its own database connection, as gunicorn runs the app), which call the same functions the
annotation page calls (`next_comparison_for`, then `do_submit_judgment`). Closed loop, no think
time: an annotator asks for the next comparison the moment the last one is recorded. Printed: cycles per second, p50/p99
of a whole cycle and of each half, comparisons handed to two annotators at once, and the
query plan of the next-comparison query.

Baselines measured in the same run, on the same data:
  - naive: the textbook query without SKIP LOCKED or the fresh lease check (plain FOR UPDATE),
  - one annotator: the same code with a single annotator (how far concurrency scales).
The comparisons are real HH-RLHF texts from ../shared/data, repeated to reach the size.
"""

import argparse
import gzip
import heapq
import json
import multiprocessing as mp
import os
import queue as queue_lib
import random
import resource
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--db", choices=["pg", "sqlite"], default="pg")
parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/prefloop_bench"))
parser.add_argument("--comparisons", type=int, default=1_000_000)
parser.add_argument("--annotators", type=int, default=32)
parser.add_argument("--server", default="2x4",
                    help="server processes x threads, each thread one connection (./prefloop up: 2x4)")
parser.add_argument("--seconds", type=float, default=20.0)
parser.add_argument("--reuse", action="store_true", help="keep the loaded data from an earlier run if its size matches")
parser.add_argument("--skip-naive", action="store_true")
parser.add_argument("--rate", type=float, default=300.0, help="cycles per second offered in the open-loop run")
args = parser.parse_args()

DATA_DIR = REPO / "var" / "bench"
DATA_DIR.mkdir(parents=True, exist_ok=True)
if args.db == "pg":
    os.environ["DATABASE_URL"] = args.pg_url
else:
    os.environ["DATABASE_URL"] = f"sqlite:///{DATA_DIR / 'queue.sqlite3'}"
os.environ["DATABASE_CONN_MAX_AGE"] = "600"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

HH = Path(os.environ.get("PREFLOOP_SHARED_DATA", REPO.parent / "shared" / "data")) / "hh-rlhf" / "harmless-base-test.dev.jsonl.gz"


def create_pg_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and not args.reuse:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            exists = None
        if not exists:
            admin.execute(f'CREATE DATABASE "{name}"')


if args.db == "pg":
    create_pg_database(args.pg_url)
elif not args.reuse:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{DATA_DIR / 'queue.sqlite3'}{suffix}").unlink(missing_ok=True)

import django  # noqa: E402

django.setup()
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from annotate import queue as queue_module  # noqa: E402
from annotate.actions import JudgmentInput, NotHeld, do_create_project, do_set_member, do_submit_judgment  # noqa: E402
from annotate.db import db_datetime  # noqa: E402
from annotate.importing import parse_hh  # noqa: E402
from annotate.models import Comparison, Lease, Project  # noqa: E402

call_command("migrate", verbosity=0)
PG = connection.vendor == "postgresql"


def load(project: Project, total: int) -> None:
    """Real HH texts, repeated: 4 candidates and 4 comparisons per prompt, in bulk SQL."""
    if not HH.exists():
        sys.exit(f"shared data not found at {HH}")
    with gzip.open(HH, "rt") as handle:
        rows = [parse_hh(json.loads(line)) for line in handle]
    prompts = total // 4
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("CREATE TEMP TABLE hh_text (n integer PRIMARY KEY, prompt text, a text, b text)")
        cur.executemany("INSERT INTO hh_text VALUES (%s, %s, %s, %s)",
                        [(i, r.prompt_text, r.responses[0][0], r.responses[1][0]) for i, r in enumerate(rows)])
        n = len(rows)
        series = ("generate_series(1, %s) AS g(x)" if PG else
                  "(WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < %s) SELECT x FROM s) AS g")
        digest = "md5(g.x::text)" if PG else "printf('%%064d', g.x)"
        now = "now()" if PG else "datetime('now')"
        cur.execute(f"""INSERT INTO annotate_prompt (project_id, text, content_hash, external_id, created_at)
                        SELECT {project.pk}, t.prompt, {digest}, '', {now}
                        FROM {series} JOIN hh_text t ON t.n = g.x %% {n} ORDER BY g.x""", [prompts])
        cur.execute("SELECT min(id), max(id) FROM annotate_prompt WHERE project_id = %s", [project.pk])
        first_prompt, last_prompt = cur.fetchone()
        assert last_prompt - first_prompt + 1 == prompts, "prompt ids are not contiguous"
        cand_digest = "md5(CAST(p.id AS text) || '-' || CAST(k.k AS text))" if PG else "printf('%%060d%%04d', p.id, k.k)"
        cur.execute(f"""INSERT INTO annotate_candidate (prompt_id, text, content_hash, source, created_at)
                        SELECT p.id, CASE WHEN k.k %% 2 = 0 THEN t.a ELSE t.b END || ' ' || CAST(k.k AS text),
                               {cand_digest}, 'model-' || CAST(k.k AS text), {now}
                        FROM annotate_prompt p
                        CROSS JOIN (SELECT 0 AS k UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3) k
                        JOIN hh_text t ON t.n = (p.id + (k.k / 2)) %% {n}
                        WHERE p.project_id = %s ORDER BY p.id, k.k""", [project.pk])
        cur.execute("SELECT min(id), max(id) FROM annotate_candidate")
        first_candidate, last_candidate = cur.fetchone()
        assert last_candidate - first_candidate + 1 == prompts * 4, "candidate ids are not contiguous"
        rand = "(random() * 4611686018427387903)::bigint" if PG else "abs(random() / 2)"
        prio = "CASE WHEN random() < 0.1 THEN 1.0 ELSE 0.0 END" if PG else "CASE WHEN abs(random()) %% 10 = 0 THEN 1.0 ELSE 0.0 END"
        cur.execute(f"""INSERT INTO annotate_comparison (project_id, prompt_id, candidate_a_id, candidate_b_id, priority,
                            tiebreak, votes_wanted, votes, status, origin, round, created_at)
                        SELECT {project.pk}, p.id, {first_candidate} + 4 * (p.id - {first_prompt}) + pr.x,
                               {first_candidate} + 4 * (p.id - {first_prompt}) + pr.y, {prio}, {rand}, 1, 0, 'open',
                               'imported', 0, {now}
                        FROM annotate_prompt p
                        CROSS JOIN (SELECT 0 AS x, 1 AS y UNION ALL SELECT 2, 3 UNION ALL SELECT 0, 2
                                    UNION ALL SELECT 1, 3) pr
                        WHERE p.project_id = %s""", [project.pk])
    with connection.cursor() as cur:
        cur.execute("ANALYZE" if PG else "ANALYZE")
    count = Comparison.objects.filter(project=project).count()
    print(f"loaded {count:,} comparisons ({prompts:,} prompts, {prompts * 4:,} responses) "
          f"in {time.perf_counter() - started:.0f} s")


NAIVE_LEASE_SQL = queue_module.LEASE_SQL.split("WHERE annotate_lease.expires_at")[0]


def naive_next(project, annotator, now=None):
    """The textbook version: lock the top row and wait for it (plain FOR UPDATE, no SKIP
    LOCKED), then write the lease unconditionally. Same SQL otherwise."""
    now = now or timezone.now()
    at = db_datetime(now)
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(queue_module.HELD_SQL, [annotator.pk, at, project.pk])
        held = cur.fetchone()
        if held is None:
            cur.execute(queue_module.CLAIM_SQL.format(passed_over="") + (" FOR UPDATE OF c" if PG else ""),
                        [project.pk, annotator.pk, annotator.pk, at, annotator.pk])
            row = cur.fetchone()
            if row is None:
                return None
            cur.execute(NAIVE_LEASE_SQL, [row[0], annotator.pk, "a", at,
                                          db_datetime(now + queue_module.lease_duration())])
            comparison_id = row[0]
        else:
            comparison_id = held[0]
        cur.execute(queue_module.LOAD_SQL, [comparison_id])
        comparison = queue_module._comparison_from_row(cur.fetchone())
    lease = Lease(comparison_id=comparison_id, annotator=annotator, shown_left="a", issued_at=now)
    lease.comparison = comparison
    return lease


def server_worker(project_id, next_name, tasks, done):
    """One server thread with its own connection: takes requests in arrival order, answers them."""
    next_fn = naive_next if next_name == "naive" else queue_module.next_comparison_for
    project = Project.objects.get(pk=project_id)
    users = {}
    try:
        while True:
            task = tasks.get()
            if task is None:
                return
            user_id, phase, comparison_id, sent_at = task
            user = users.get(user_id) or users.setdefault(user_id, get_user_model().objects.get(pk=user_id))
            outcome = "ok"
            try:
                if phase == "next":
                    lease = next_fn(project, user)
                    comparison_id = lease.comparison_id if lease else None
                else:
                    do_submit_judgment(project, user, JudgmentInput(comparison_id, "left", strength="clear",
                                                                    ms_spent=1500), [])
            except NotHeld:
                outcome = "409"
            except Exception as exc:  # noqa: BLE001 -- counted and shown
                outcome = "error"
                print("server error:", repr(exc), file=sys.stderr)
            done.put((user_id, phase, comparison_id, sent_at, time.monotonic(), outcome))
    finally:
        connections.close_all()


def server_process(project_id, threads, next_name, tasks, done, cpu_out):
    connections.close_all()
    pool = [threading.Thread(target=server_worker, args=(project_id, next_name, tasks, done)) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_out.put(usage.ru_utime + usage.ru_stime)


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (from /proc/stat)."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def run(project, users, next_name, annotators, seconds, processes, threads, rate=None):
    """Each annotator sends "next", then "submit" the moment the answer arrives, then "next" again:
    at once (closed loop, `rate` None: the most the server can do), or after a random pause
    chosen so that all annotators together start `rate` cycles a second (open loop: the latency
    at that load). Latency is what the annotator waits, queueing for a server thread included."""
    rng = random.Random(0)
    connections.close_all()
    ctx = mp.get_context("fork")
    tasks, done, cpu_out = ctx.Queue(), ctx.Queue(), ctx.Queue()
    servers = [ctx.Process(target=server_process, args=(project.pk, threads, next_name, tasks, done, cpu_out))
               for _ in range(processes)]
    for server in servers:
        server.start()
    time.sleep(1.0)  # let the servers connect
    busy_before = machine_busy_seconds()
    started = time.monotonic()
    deadline = started + seconds
    cycle_started = {}
    waiting: list[tuple[float, int]] = []  # (when, user id): annotators thinking
    for user in users[:annotators]:
        heapq.heappush(waiting, (started + (rng.expovariate(rate / annotators) if rate else 0.0), user.pk))
    cycles, nexts, submits, handed = [], [], [], []
    conflicts = errors = 0
    in_flight = 0
    while in_flight or waiting:
        now = time.monotonic()
        while waiting and waiting[0][0] <= now:
            _, user_id = heapq.heappop(waiting)
            if now < deadline:
                cycle_started[user_id] = now
                tasks.put((user_id, "next", None, now))
                in_flight += 1
        if not in_flight:
            if waiting and waiting[0][0] < deadline:
                time.sleep(max(waiting[0][0] - time.monotonic(), 0))
                continue
            break
        try:
            timeout = max(waiting[0][0] - time.monotonic(), 0.0005) if waiting else None
            user_id, phase, comparison_id, sent_at, finished_at, outcome = done.get(timeout=timeout)
        except queue_lib.Empty:
            continue
        in_flight -= 1
        errors += outcome == "error"
        if phase == "next":
            nexts.append(finished_at - sent_at)
            if comparison_id is None or outcome != "ok":
                continue  # queue empty for this annotator
            handed.append(comparison_id)
            now = time.monotonic()
            tasks.put((user_id, "submit", comparison_id, now))
            in_flight += 1
        else:
            submits.append(finished_at - sent_at)
            conflicts += outcome == "409"
            cycles.append(finished_at - cycle_started[user_id])
            # Open loop: the next start is due a random interval after the last one began.
            due = cycle_started[user_id] + rng.expovariate(rate / annotators) if rate else 0.0
            heapq.heappush(waiting, (max(due, time.monotonic()), user_id))
    elapsed = time.monotonic() - started
    for _ in range(processes * threads):
        tasks.put(None)
    python_cpu = sum(cpu_out.get() for _ in servers)
    for server in servers:
        server.join()
    busy = machine_busy_seconds() - busy_before
    client_cpu = resource.getrusage(resource.RUSAGE_SELF)
    cycles.sort()
    nexts.sort()
    submits.sort()
    duplicates = len(handed) - len(set(handed))

    def pct(values, q):
        return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")

    name = f"{next_name} ×{annotators} / {processes}×{threads} conn" + (f" @{rate}/s" if rate else "")
    figures = {
        "name": name, "annotators": annotators, "connections": processes * threads,
        "cycles_per_s": len(cycles) / elapsed,
        "p50_ms": pct(cycles, 0.5), "p99_ms": pct(cycles, 0.99),
        "next_p50_ms": pct(nexts, 0.5), "next_p99_ms": pct(nexts, 0.99),
        "submit_p50_ms": pct(submits, 0.5), "submit_p99_ms": pct(submits, 0.99),
        "double_handed": duplicates, "refused_409": conflicts, "errors": errors,
        "server_cpu_ms_per_cycle": python_cpu / max(len(cycles), 1) * 1000,
        "database_and_clients_cpu_ms_per_cycle": max(busy - python_cpu, 0) / max(len(cycles), 1) * 1000,
    }
    del client_cpu
    print(f"{name:>28}: {figures['cycles_per_s']:6.1f} cycles/s | cycle p50 {figures['p50_ms']:5.1f} ms "
          f"p99 {figures['p99_ms']:6.1f} ms | next p50/p99 {figures['next_p50_ms']:.1f}/{figures['next_p99_ms']:.1f}"
          f" | submit p50/p99 {figures['submit_p50_ms']:.1f}/{figures['submit_p99_ms']:.1f} ms | handed twice "
          f"{duplicates} | 409s {conflicts} | errors {errors} | CPU/cycle: server Python "
          f"{figures['server_cpu_ms_per_cycle']:.1f} ms, database+clients "
          f"{figures['database_and_clients_cpu_ms_per_cycle']:.1f} ms", flush=True)
    return figures


def explain(project, user):
    now = db_datetime(timezone.now())
    sql = queue_module.CLAIM_SQL.format(passed_over="") + (" FOR UPDATE OF c SKIP LOCKED" if PG else "")
    params = [project.pk, user.pk, user.pk, now, user.pk]
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " if PG else "EXPLAIN QUERY PLAN ") + sql, params)
        return "\n".join(row[0] if PG else " | ".join(str(c) for c in row) for row in cur.fetchall())


project = Project.objects.filter(slug="bench").first()
if project is None or Comparison.objects.filter(project=project).count() != (args.comparisons // 4) * 4:
    if project is not None:
        sys.exit("data of another size is loaded: run without --reuse")
    owner = get_user_model().objects.create_user("bench-owner")
    project = do_create_project(owner, slug="bench", name="Queue benchmark")
    load(project, args.comparisons)
users = []
for i in range(max(args.annotators, 1)):
    user, _ = get_user_model().objects.get_or_create(username=f"bench-annotator-{i}")
    do_set_member(project, user.username, "annotator")
    users.append(user)

print(f"database: {connection.vendor}; {os.cpu_count()} CPUs; {args.annotators} annotators; server {args.server}; "
      f"{args.seconds:.0f} s a run")

procs, threads = (int(x) for x in args.server.split("x"))
run(project, users, "ours", 4, 3, procs, threads)  # warm-up: prepared statements, caches
single = run(project, users, "ours", 1, args.seconds, procs, threads)
ours = run(project, users, "ours", args.annotators, args.seconds, procs, threads)
at_rate = run(project, users, "ours", args.annotators, args.seconds, procs, threads, rate=args.rate)
direct = run(project, users, "ours", args.annotators, args.seconds, min(args.annotators, 8),
             max(args.annotators // 8, 1))
naive = None if args.skip_naive else run(project, users, "naive", args.annotators, args.seconds, procs, threads)

print()
print("query plan of the next-comparison query, after the runs:\n" + explain(project, users[0]))
print()
print(f"ours, {args.annotators} annotators vs one: {ours['cycles_per_s'] / single['cycles_per_s']:.2f}× the throughput")
print(f"a server thread per annotator ({args.annotators} connections) vs the {procs}×{threads} pool: "
      f"{direct['cycles_per_s'] / ours['cycles_per_s']:.2f}× the throughput, p99 {direct['p99_ms']:.0f} vs "
      f"{ours['p99_ms']:.0f} ms")
if naive:
    print(f"ours vs naive FOR UPDATE, same pool: {ours['cycles_per_s'] / naive['cycles_per_s']:.2f}× the throughput, "
          f"p99 {ours['p99_ms']:.0f} ms vs {naive['p99_ms']:.0f} ms; naive handed {naive['double_handed']} "
          f"comparisons to two annotators ({naive['refused_409']} judgments refused)")
print(f"at {args.rate:.0f} cycles/s offered by {args.annotators} annotators: {at_rate['cycles_per_s']:.0f} done, "
      f"cycle p50 {at_rate['p50_ms']:.1f} ms, p99 {at_rate['p99_ms']:.1f} ms")
print("RESULT " + json.dumps({"db": connection.vendor, "comparisons": args.comparisons, "single": single,
                              "ours": ours, "at_rate": at_rate, "direct": direct, "naive": naive}))
