"""HTTP benchmark: simulated annotators doing next + judgment through the real server.

    ./prefloop bench queue_http [--comparisons 1000000] [--annotators 1,8,32] [--seconds 15]
                                [--servers gthread,sync4,uvicorn] [--modes api,page] [--profile]

What an annotator or a script actually uses goes through gunicorn, Django's middleware, the
session or token authentication, throttling and rendering. This drives the server the way
`./prefloop up` runs it (gunicorn config.wsgi, 2 processes x 4 threads) with httpx + asyncio:
each simulated annotator has its own account, API token and keep-alive connection.

Modes:
  - api:  GET /api/v1/projects/bench/next/ then POST .../judgments/ (Bearer token);
  - page: the annotation page as a browser uses it: the htmx fragment GET of /p/bench/annotate/
          then the form POST to .../annotate/submit/ (session cookie, CSRF token from the form).
Loads: closed loop at each --annotators count (the next cycle starts when the last one ends: the
server's capacity), then open loop at --rate cycles/s offered by the largest count (latency at
that load: each annotator starts cycles at random, exponential intervals).

Printed per run: cycles/s, p50/p99 of each request, CPU ms per cycle of the server's process tree
and of the PostgreSQL backends serving it, and "next" answers that said nothing is left (there
must be none: the queue holds far more than a run can judge).

Baseline in the same run: the in-process cycle (`next_comparison_for` + `do_submit_judgment` called
directly, one annotator, no HTTP), so the HTTP layers' overhead is a ratio. `--servers NAME@DIR`
runs a server from another checkout (e.g. a `git worktree` of an older commit) against the same
data, so before and after are measured back to back on the same loaded machine.

Server models: gthread (./prefloop up: 2 x 4 threads), gthreadWxT, syncN (N single-threaded
workers), uvicorn (ASGI, 2 workers).
"""

import argparse
import asyncio
import collections
import gzip
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--pg-url", default=os.environ.get("BENCH_HTTP_PG_URL",
                                                       "postgres://postgres@127.0.0.1:5432/prefloop_bench_http"))
parser.add_argument("--comparisons", type=int, default=1_000_000)
parser.add_argument("--annotators", default="1,8,32", help="comma-separated annotator counts (closed loop)")
parser.add_argument("--seconds", type=float, default=15.0)
parser.add_argument("--rate", type=float, default=300.0, help="cycles per second offered in the open-loop run")
parser.add_argument("--servers", default="gthread", help="comma-separated server models, each NAME or NAME@DIR")
parser.add_argument("--modes", default="api,page")
parser.add_argument("--port", type=int, default=8790)
parser.add_argument("--reuse", action="store_true", help="keep the loaded data if its size matches")
parser.add_argument("--profile", action="store_true",
                    help="py-spy each server during a largest closed-loop API run; print the top entries")
parser.add_argument("--no-open-loop", action="store_true")
args = parser.parse_args()

os.environ["DATABASE_URL"] = args.pg_url
os.environ["DATABASE_CONN_MAX_AGE"] = "600"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
HH = Path(os.environ.get("PREFLOOP_SHARED_DATA", REPO.parent / "shared" / "data")) / "hh-rlhf" / "harmless-base-test.dev.jsonl.gz"
COUNTS = [int(n) for n in args.annotators.split(",")]
PASSWORD = "bench-http-password"  # noqa: S105 -- throwaway accounts in a throwaway database


def create_pg_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    if name in ("prefloop_bench", "prefloop_bench_import"):
        sys.exit(f"{name} is another benchmark's database: pick your own with --pg-url")
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and not args.reuse:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            exists = None
        if not exists:
            admin.execute(f'CREATE DATABASE "{name}"')


create_pg_database(args.pg_url)

import django  # noqa: E402

django.setup()
import httpx  # noqa: E402
import psutil  # noqa: E402
import psycopg  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from annotate.actions import JudgmentInput, do_create_project, do_set_member, do_submit_judgment  # noqa: E402
from annotate.importing import parse_hh  # noqa: E402
from annotate.models import ApiToken, Comparison, Project  # noqa: E402
from annotate.queue import next_comparison_for  # noqa: E402
from annotate.tokens import create_token  # noqa: E402

call_command("migrate", verbosity=0)
logging.getLogger("httpx").setLevel(logging.WARNING)


def load(project: Project, total: int) -> None:
    """Real HH texts, repeated: 4 responses and 4 comparisons per prompt, in bulk SQL (as
    bench/queue_cycles.py loads them)."""
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
        cur.execute(f"""INSERT INTO annotate_prompt (project_id, text, content_hash, external_id, created_at)
                        SELECT {project.pk}, t.prompt, md5(g.x::text), '', now()
                        FROM generate_series(1, %s) AS g(x) JOIN hh_text t ON t.n = g.x %% {n} ORDER BY g.x""",
                    [prompts])
        cur.execute("SELECT min(id) FROM annotate_prompt WHERE project_id = %s", [project.pk])
        first_prompt = cur.fetchone()[0]
        cur.execute(f"""INSERT INTO annotate_candidate (prompt_id, text, content_hash, source, created_at)
                        SELECT p.id, CASE WHEN k.k %% 2 = 0 THEN t.a ELSE t.b END || ' ' || CAST(k.k AS text),
                               md5(CAST(p.id AS text) || '-' || CAST(k.k AS text)), 'model-' || CAST(k.k AS text),
                               now()
                        FROM annotate_prompt p
                        CROSS JOIN (SELECT 0 AS k UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3) k
                        JOIN hh_text t ON t.n = (p.id + (k.k / 2)) %% {n}
                        WHERE p.project_id = %s ORDER BY p.id, k.k""", [project.pk])
        cur.execute("SELECT min(id) FROM annotate_candidate")
        first_candidate = cur.fetchone()[0]
        cur.execute(f"""INSERT INTO annotate_comparison (project_id, prompt_id, candidate_a_id, candidate_b_id, priority,
                            tiebreak, votes_wanted, votes, status, origin, round, created_at)
                        SELECT {project.pk}, p.id, {first_candidate} + 4 * (p.id - {first_prompt}) + pr.x,
                               {first_candidate} + 4 * (p.id - {first_prompt}) + pr.y,
                               CASE WHEN random() < 0.1 THEN 1.0 ELSE 0.0 END,
                               (random() * 4611686018427387903)::bigint, 1, 0, 'open', 'imported', 0, now()
                        FROM annotate_prompt p
                        CROSS JOIN (SELECT 0 AS x, 1 AS y UNION ALL SELECT 2, 3 UNION ALL SELECT 0, 2
                                    UNION ALL SELECT 1, 3) pr
                        WHERE p.project_id = %s""", [project.pk])
    with connection.cursor() as cur:
        cur.execute("ANALYZE")
    print(f"loaded {Comparison.objects.filter(project=project).count():,} comparisons in "
          f"{time.perf_counter() - started:.0f} s", flush=True)


project = Project.objects.filter(slug="bench").first()
if project is None or Comparison.objects.filter(project=project).count() != (args.comparisons // 4) * 4:
    if project is not None:
        sys.exit("data of another size is loaded: run without --reuse")
    owner = get_user_model().objects.create_user("bench-owner")
    project = do_create_project(owner, slug="bench", name="HTTP benchmark")
    load(project, args.comparisons)

# Accounts: one password hash computed once and copied (PBKDF2 costs ~0.5 s a user).
users = []
template_user = get_user_model()(username="x")
template_user.set_password(PASSWORD)
for i in range(max(COUNTS)):
    user, _ = get_user_model().objects.get_or_create(username=f"bench-http-{i}")
    get_user_model().objects.filter(pk=user.pk).update(password=template_user.password)
    do_set_member(project, user.username, "annotator")
    users.append(user)
ApiToken.objects.filter(user__in=users, name="bench-http").delete()
tokens = [create_token(user, "bench-http")[1] for user in users]
inproc_user, _ = get_user_model().objects.get_or_create(username="bench-http-inprocess")
do_set_member(project, inproc_user.username, "annotator")
DB_NAME = args.pg_url.rsplit("/", 1)[1]


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")


def backend_cpu() -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend connected to the benchmark's database."""
    with psycopg.connect(args.pg_url, autocommit=True) as admin:  # not Django's: this runs in the event loop
        pids = [row[0] for row in admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [DB_NAME])]
    out = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            out[pid] = times.user + times.system
        except psutil.Error:
            pass
    return out


def backend_cpu_delta(before: dict[int, float]) -> float:
    after = backend_cpu()
    return sum(after[pid] - before.get(pid, 0.0) for pid in after)


def in_process(seconds: float) -> dict:
    """The queue with no HTTP: one annotator, next + submit called directly in this process."""
    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    backend = psutil.Process(pid)

    def db_cpu():
        t = backend.cpu_times()
        return t.user + t.system

    for _ in range(20):  # warm-up: prepared statements
        lease = next_comparison_for(project, inproc_user)
        do_submit_judgment(project, inproc_user, JudgmentInput(lease.comparison_id, "left", strength="clear",
                                                               ms_spent=1500), [])
    cycles = []
    cpu0, db0, started = time.process_time(), db_cpu(), time.monotonic()
    while time.monotonic() - started < seconds:
        t0 = time.perf_counter()
        lease = next_comparison_for(project, inproc_user)
        do_submit_judgment(project, inproc_user, JudgmentInput(lease.comparison_id, "left", strength="clear",
                                                               ms_spent=1500), [])
        cycles.append(time.perf_counter() - t0)
    elapsed = time.monotonic() - started
    figures = {"cycles_per_s": len(cycles) / elapsed, "p50_ms": pct(cycles, 0.5), "p99_ms": pct(cycles, 0.99),
               "python_cpu_ms_per_cycle": (time.process_time() - cpu0) / len(cycles) * 1000,
               "db_cpu_ms_per_cycle": (db_cpu() - db0) / len(cycles) * 1000}
    print(f"{'in-process, 1 annotator':>40}: {figures['cycles_per_s']:6.1f} cycles/s | cycle p50 "
          f"{figures['p50_ms']:.1f} p99 {figures['p99_ms']:.1f} ms | CPU/cycle: Python "
          f"{figures['python_cpu_ms_per_cycle']:.2f} ms, PostgreSQL {figures['db_cpu_ms_per_cycle']:.2f} ms", flush=True)
    return figures


# --- servers ---------------------------------------------------------------------------------


def server_command(model: str) -> list[str]:
    bind = f"127.0.0.1:{args.port}"
    gunicorn = [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", bind, "--log-level", "warning"]
    if model == "gthread":  # ./prefloop up
        return [*gunicorn, "--workers", "2", "--threads", "4"]
    if m := re.fullmatch(r"gthread(\d+)x(\d+)", model):
        return [*gunicorn, "--workers", m[1], "--threads", m[2]]
    if m := re.fullmatch(r"sync(\d+)", model):
        return [*gunicorn, "--workers", m[1], "--worker-class", "sync"]
    if model == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port",
                str(args.port), "--workers", "2", "--log-level", "warning", "--no-access-log"]
    sys.exit(f"unknown server model {model!r}")


def start_server(model: str, root: Path) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_CONN_MAX_AGE": "60", "PREFLOOP_API_RATE": "1000000/min",
           "PYTHONPATH": str(root), "DJANGO_SETTINGS_MODULE": "config.settings"}
    server = subprocess.Popen(server_command(model), cwd=root, env=env, start_new_session=True)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{args.port}/login/", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            sys.exit(f"the server {model} exited with {server.returncode}")
        time.sleep(0.2)
    sys.exit("the server did not start")


def stop_server(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and all its children (the server's master and workers)."""
    total = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


# --- simulated annotators --------------------------------------------------------------------

BASE = f"http://127.0.0.1:{args.port}"
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
COMPARISON = re.compile(r'data-comparison="(\d+)"')
SESSIONS: dict[tuple[str, int], httpx.Cookies] = {}


class Annotator:
    """One person (or script): its own connection, token or session, and its request timings."""

    def __init__(self, index: int, mode: str):
        self.index, self.mode = index, mode
        self.client = httpx.AsyncClient(base_url=BASE, timeout=60,
                                        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                                        headers={"Authorization": f"Bearer {tokens[index]}"} if mode == "api" else {})
        self.csrf = ""

    async def login(self, server_label: str):
        if self.mode != "page":
            return
        saved = SESSIONS.get((server_label, self.index))
        if saved is not None:  # one login per account and server: PBKDF2 is not what is measured
            self.client.cookies = saved
            return
        page = await self.client.get("/login/")
        csrf = CSRF_INPUT.search(page.text)[1]
        answer = await self.client.post("/login/", data={"username": f"bench-http-{self.index}",
                                                         "password": PASSWORD, "csrfmiddlewaretoken": csrf})
        if answer.status_code != 302:
            raise RuntimeError(f"login failed: {answer.status_code}")
        SESSIONS[(server_label, self.index)] = self.client.cookies

    async def send(self, method: str, url: str, stats, **kwargs) -> httpx.Response:
        """A request; a keep-alive connection the server closed is opened again and the request
        sent again, as browsers and HTTP libraries do (both calls are safe to repeat)."""
        for attempt in range(3):
            try:
                return await self.client.request(method, url, **kwargs)
            except (httpx.RemoteProtocolError, httpx.ConnectError, httpx.ReadError):
                stats["reconnects"] += 1
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def cycle(self, stats) -> bool:
        """One next + judgment; False when "next" said nothing is left."""
        t0 = time.perf_counter()
        if self.mode == "api":
            answer = await self.send("GET", "/api/v1/projects/bench/next/", stats)
            t1 = time.perf_counter()
            if answer.status_code == 204:
                stats["empty"] += 1
                return False
            if answer.status_code != 200:
                stats["errors"] += 1
                return False
            comparison = answer.json()["comparison"]
            posted = await self.send("POST", "/api/v1/projects/bench/judgments/", stats, json={
                "comparison": comparison, "choice": "left", "strength": "clear", "ms_spent": 1500})
            ok = posted.status_code == 201
        else:
            answer = await self.send("GET", "/p/bench/annotate/", stats, headers={"HX-Request": "true"})
            t1 = time.perf_counter()
            found = COMPARISON.search(answer.text) if answer.status_code == 200 else None
            if found is None:
                stats["empty" if answer.status_code == 200 else "errors"] += 1
                return False
            posted = await self.send(
                "POST", "/p/bench/annotate/submit/", stats, headers={"HX-Request": "true"},
                data={"csrfmiddlewaretoken": CSRF_INPUT.search(answer.text)[1], "comparison": found[1],
                      "choice": "left", "strength": "clear", "ms_spent": "1500", "rationale": ""})
            ok = posted.status_code == 200 and "Not recorded" not in posted.text
        t2 = time.perf_counter()
        if not ok:
            stats["errors"] += 1
            return False
        stats["next"].append(t1 - t0)
        stats["judge"].append(t2 - t1)
        stats["cycle"].append(t2 - t0)
        return True


async def drive(annotators: list[Annotator], seconds: float, rate: float | None, stats) -> float:
    rng = random.Random(0)
    deadline = time.monotonic() + seconds

    async def one(annotator: Annotator):
        next_start = time.monotonic() + (rng.expovariate(rate / len(annotators)) if rate else 0.0)
        while True:
            if rate:
                pause = next_start - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
            started = time.monotonic()
            if started >= deadline:
                return
            await annotator.cycle(stats)
            if rate:  # open loop: the next start is due a random interval after the last one began
                next_start = max(started + rng.expovariate(rate / len(annotators)), time.monotonic())

    started = time.monotonic()
    await asyncio.gather(*(one(a) for a in annotators))
    return time.monotonic() - started


def run(server, label: str, mode: str, count: int, rate: float | None = None) -> dict:
    async def go():
        annotators = [Annotator(i, mode) for i in range(count)]
        await asyncio.gather(*(a.login(label) for a in annotators))
        warm = collections.defaultdict(list, empty=0, errors=0, reconnects=0)
        await drive(annotators, 1.0, None, warm)  # warm-up: connections, prepared statements
        stats = collections.defaultdict(list, empty=0, errors=0, reconnects=0)
        cpu0, db0, client0 = tree_cpu(server.pid), backend_cpu(), time.process_time()
        busy0 = psutil.cpu_times()
        elapsed = await drive(annotators, args.seconds, rate, stats)
        server_cpu, db_cpu = tree_cpu(server.pid) - cpu0, backend_cpu_delta(db0)
        client_cpu = time.process_time() - client0
        busy1 = psutil.cpu_times()
        for a in annotators:
            await a.client.aclose()
        return stats, elapsed, server_cpu, db_cpu, client_cpu, (busy1.user + busy1.system) - (busy0.user + busy0.system)

    stats, elapsed, server_cpu, db_cpu, client_cpu, machine = asyncio.run(go())
    n = max(len(stats["cycle"]), 1)
    figures = {
        "server": label, "mode": mode, "annotators": count, "rate": rate,
        "cycles_per_s": len(stats["cycle"]) / elapsed,
        "cycle_p50_ms": pct(stats["cycle"], 0.5), "cycle_p99_ms": pct(stats["cycle"], 0.99),
        "next_p50_ms": pct(stats["next"], 0.5), "next_p99_ms": pct(stats["next"], 0.99),
        "judge_p50_ms": pct(stats["judge"], 0.5), "judge_p99_ms": pct(stats["judge"], 0.99),
        "server_cpu_ms_per_cycle": server_cpu / n * 1000, "db_cpu_ms_per_cycle": db_cpu / n * 1000,
        "client_cpu_ms_per_cycle": client_cpu / n * 1000, "machine_busy_ms_per_cycle": machine / n * 1000,
        "empty": stats["empty"], "errors": stats["errors"], "reconnects": stats["reconnects"],
    }
    name = f"{label} {mode} x{count}" + (f" @{rate:.0f}/s" if rate else "")
    print(f"{name:>40}: {figures['cycles_per_s']:6.1f} cycles/s | cycle p50/p99 {figures['cycle_p50_ms']:.1f}/"
          f"{figures['cycle_p99_ms']:.1f} | next {figures['next_p50_ms']:.1f}/{figures['next_p99_ms']:.1f} | "
          f"judge {figures['judge_p50_ms']:.1f}/{figures['judge_p99_ms']:.1f} ms | CPU/cycle: server "
          f"{figures['server_cpu_ms_per_cycle']:.2f}, PostgreSQL {figures['db_cpu_ms_per_cycle']:.2f}, clients "
          f"{figures['client_cpu_ms_per_cycle']:.2f} ms | empty {stats['empty']} errors {stats['errors']} reconnects {stats['reconnects']}", flush=True)
    return figures


def profile(server, seconds: float) -> list[str]:
    """py-spy over the server's processes while the largest API run goes on: top entries."""
    out = Path(tempfile.mkdtemp()) / "profile.txt"
    if not (Path(sys.executable).parent / "py-spy").exists():
        return ["(py-spy is not installed: pip install py-spy)"]
    spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(server.pid), "--subprocesses", "--nonblocking",
                            "--gil", "--format", "raw", "--duration", str(int(seconds)), "--rate", "200", "--output",
                            str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run(server, "profiled", "api", max(COUNTS))
    spy.wait()
    if not out.exists():
        return ["(py-spy wrote nothing: is ptrace allowed?)"]
    inclusive, own, total = collections.Counter(), collections.Counter(), 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f for f in stack.split(";")[1:] if f]  # drop the process/thread label
        if not frames:
            continue
        n = int(count)
        total += n
        if any("wait" in f and "gunicorn" in f for f in frames[-3:]) or frames[-1].startswith(("select ", "poll ")):
            own["(idle: waiting for a request)"] += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"py-spy: {total} samples over the server's processes"]
    lines += ["top, inclusive:"] + [f"  {c / total:6.1%}  {f}" for f, c in inclusive.most_common(60)]
    lines += ["top, own time:"] + [f"  {c / total:6.1%}  {f}" for f, c in own.most_common(25)]
    return lines


# --- the run ---------------------------------------------------------------------------------

print(f"{Comparison.objects.filter(project=project, status='open').count():,} open comparisons; "
      f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}; {args.seconds:.0f} s a run", flush=True)
baseline = in_process(min(args.seconds, 10))
results = []
profile_lines: list[str] = []
for spec in args.servers.split(","):
    model, _, root = spec.partition("@")
    label = f"{model}@{Path(root).name}" if root else model
    server = start_server(model, Path(root) if root else REPO)
    try:
        for mode in args.modes.split(","):
            for count in COUNTS:
                results.append(run(server, label, mode, count))
            if not args.no_open_loop:
                results.append(run(server, label, mode, max(COUNTS), rate=args.rate))
        if args.profile:
            profile_lines += [f"--- {label}"] + profile(server, args.seconds)
    finally:
        stop_server(server)
baseline_after = in_process(min(args.seconds, 10))

print()
inproc_cpu = (baseline["python_cpu_ms_per_cycle"] + baseline_after["python_cpu_ms_per_cycle"]) / 2
inproc_rate = (baseline["cycles_per_s"] + baseline_after["cycles_per_s"]) / 2
print(f"in process (mean of before and after the HTTP runs): {inproc_rate:.0f} cycles/s at one annotator, "
      f"{inproc_cpu:.2f} ms of Python a cycle")
for r in results:
    if r["annotators"] == 1 and not r["rate"]:
        print(f"{r['server']} {r['mode']}: one annotator does {r['cycles_per_s'] / inproc_rate:.2f}x the in-process "
              f"cycles; server CPU {r['server_cpu_ms_per_cycle']:.2f} ms a cycle = "
              f"{r['server_cpu_ms_per_cycle'] / inproc_cpu:.1f}x the in-process Python")
labels = list(dict.fromkeys(r["server"] for r in results))
if len(labels) > 1:
    first = {(r["mode"], r["annotators"], r["rate"]): r for r in results if r["server"] == labels[0]}
    for r in results:
        base = first.get((r["mode"], r["annotators"], r["rate"]))
        if r["server"] != labels[0] and base:
            print(f"{r['server']} vs {labels[0]}, {r['mode']} x{r['annotators']}"
                  f"{' @' + str(int(r['rate'])) if r['rate'] else ''}: "
                  f"{r['cycles_per_s'] / base['cycles_per_s']:.2f}x the cycles/s, server CPU a cycle "
                  f"{r['server_cpu_ms_per_cycle']:.2f} vs {base['server_cpu_ms_per_cycle']:.2f} ms "
                  f"({base['server_cpu_ms_per_cycle'] / r['server_cpu_ms_per_cycle']:.2f}x less)")
for line in profile_lines:
    print(line)
print("RESULT " + json.dumps({"in_process": [baseline, baseline_after], "http": results}))
ApiToken.objects.filter(user__in=users, name="bench-http").delete()
