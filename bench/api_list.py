"""API benchmark: the judgment list at 32 concurrent clients, over HTTP, against gunicorn.

    ./prefloop bench api_list [--clients 32] [--seconds 15]

Uses the database the queue and export benchmarks filled (1,000,000 judgments of real HH-RLHF
texts; run `./prefloop bench queue_cycles` and `./prefloop bench export_rows` first). The server is
what `./prefloop up` runs: gunicorn, 2 processes × 4 threads. Each client has its own token and a
keep-alive connection and asks for pages of 100 judgments from random points of the project
(`since_id=…`), like scripts syncing new judgments.

Baseline in the same run, same server, same serializer: DRF's PageNumberPagination (the
framework's default: a COUNT(*) and an OFFSET per page) at random pages.
"""

import argparse
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/prefloop_bench"))
parser.add_argument("--clients", type=int, default=32)
parser.add_argument("--seconds", type=float, default=15.0)
parser.add_argument("--port", type=int, default=8765)
args = parser.parse_args()

os.environ["DATABASE_URL"] = args.pg_url
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.api_settings"
sys.path.insert(0, str(REPO))
import django  # noqa: E402

django.setup()
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

from annotate.models import ApiToken, Judgment, Project  # noqa: E402
from annotate.tokens import create_token  # noqa: E402

call_command("migrate", verbosity=0)
project = Project.objects.filter(slug="bench").first()
if project is None or not Judgment.objects.filter(project=project).exists():
    sys.exit("run ./prefloop bench queue_cycles and ./prefloop bench export_rows first")
owner = get_user_model().objects.get(username="bench-owner")
ApiToken.objects.filter(user=owner, name="bench").delete()
tokens = [create_token(owner, "bench")[1] for _ in range(args.clients)]
ids = Judgment.objects.filter(project=project).order_by("id").values_list("id", flat=True)
low, high = ids.first(), ids.last()
count = Judgment.objects.filter(project=project).count()
print(f"{count:,} judgments; {args.clients} clients; {args.seconds:.0f} s a run; gunicorn 2×4")

env = {**os.environ, "DATABASE_CONN_MAX_AGE": "600", "PREFLOOP_API_RATE": "100000/min"}
server = subprocess.Popen(
    [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{args.port}", "--workers", "2",
     "--threads", "4", "--log-level", "warning"], cwd=REPO, env=env, start_new_session=True)


def wait_for_server():
    for _ in range(100):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", args.port, timeout=2)
            connection.request("GET", "/login/")
            connection.getresponse().read()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit("the server did not start")


def run(name: str, make_path) -> dict:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + args.seconds

    def client(token: str, seed: int):
        rng = random.Random(seed)
        connection = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
        headers = {"Authorization": f"Bearer {token}"}
        mine = []
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                connection.request("GET", make_path(rng), headers=headers)
                response = connection.getresponse()
                body = response.read()
                if response.status != 200 or b'"results"' not in body:
                    errors[0] += 1
            except (OSError, http.client.HTTPException):
                errors[0] += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
                continue
            mine.append(time.monotonic() - started)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(tokens[i], i)) for i in range(args.clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    latencies.sort()

    def pct(q):
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    figures = {"name": name, "requests_per_s": len(latencies) / elapsed, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
               "errors": errors[0], "requests": len(latencies)}
    print(f"{name:>44}: {figures['requests_per_s']:6.1f} requests/s | p50 {figures['p50_ms']:6.1f} ms | "
          f"p99 {figures['p99_ms']:7.1f} ms | errors {errors[0]}", flush=True)
    return figures


try:
    wait_for_server()
    base = f"/api/v1/projects/{project.slug}/judgments/?page_size=100"
    run("warm-up", lambda rng: f"{base}&since_id={rng.randint(low, high)}")
    ours = run("cursor pages, since_id (ours)", lambda rng: f"{base}&since_id={rng.randint(low, high)}")
    pages = max(count // 100, 1)
    baseline = run("page numbers, COUNT + OFFSET (DRF default)",
                   lambda rng: f"/bench-baseline/judgments/?page_size=100&page={rng.randint(1, pages)}")
    print(f"ratio: {ours['requests_per_s'] / baseline['requests_per_s']:.1f}× the baseline's requests per second, "
          f"p99 {ours['p99_ms']:.0f} ms vs {baseline['p99_ms']:.0f} ms")
    print("RESULT " + json.dumps({"ours": ours, "baseline": baseline}))
finally:
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)
    ApiToken.objects.filter(user=owner, name="bench").delete()
