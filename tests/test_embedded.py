"""`./prefloop up`, the embedded default, keeps its worker running: a worker that dies (killed,
or stopped by an unrecoverable error, as one once did on a half-written broker message) is
started again with nothing of the old one left behind, and Ctrl+C still stops everything."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bench.rounds import free_port

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.worker, pytest.mark.faults]


def _processes_of(data_dir: Path) -> dict[int, int]:
    """pid → process group of every live process whose command line names `data_dir`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if str(data_dir) in cmdline and (entry / "stat").read_text().split()[2] != "Z":
                found[int(entry.name)] = os.getpgid(int(entry.name))
        except (OSError, ProcessLookupError):
            continue
    return found


def _worker_leader(data_dir: Path) -> int | None:
    leaders = [pid for pid, group in _processes_of(data_dir).items() if pid == group]
    return leaders[0] if len(leaders) == 1 else None


def _wait(what: str, check, timeout: float, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"{what} within {timeout} s; ./prefloop up said:\n{log.read_text()[-3000:]}")


def _log_count(data_dir: Path, text: str) -> int:
    path = data_dir / "worker.log"
    return path.read_text(errors="replace").count(text) if path.exists() else 0


def _ready_count(data_dir: Path) -> int:
    return _log_count(data_dir, " ready.")


def test_prefloop_up_starts_a_dead_worker_again_and_stops_cleanly(tmp_path):
    data_dir = tmp_path / "data"
    port = free_port()
    env = {key: value for key, value in os.environ.items()
           if key not in ("DATABASE_URL", "CELERY_BROKER_URL", "DATABASE_CONN_MAX_AGE")}  # the embedded defaults
    env.update(PREFLOOP_DATA_DIR=str(data_dir), PREFLOOP_PORT=str(port), PREFLOOP_VENV=str(Path(sys.executable).parent.parent))
    log = tmp_path / "up.log"
    with open(log, "w") as out:
        up = subprocess.Popen([str(REPO / "prefloop"), "up"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        def healthy():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz/", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        _wait("the web server answered", healthy, 300, log)
        first = _wait("the worker was ready", lambda: _ready_count(data_dir) >= 1 and _worker_leader(data_dir), 180, log)
        _wait("the worker's beat started", lambda: _log_count(data_dir, "beat: Starting") >= 1, 60, log)

        os.kill(first, signal.SIGKILL)  # as an unrecoverable error or the OOM killer would stop it
        second = _wait("a new worker was ready", lambda: _ready_count(data_dir) >= 2 and _worker_leader(data_dir), 180, log)
        _wait("its beat started", lambda: _log_count(data_dir, "beat: Starting") >= 2, 60, log)
        assert second != first
        assert "the worker stopped; starting it again" in log.read_text()
        # Nothing of the old worker is left: a leftover beat would send every periodic task twice.
        assert not [pid for pid, group in _processes_of(data_dir).items() if group == first]
        assert healthy(), "the web server kept serving"
        ping = subprocess.run([str(Path(sys.executable).parent / "celery"), "-A", "config", "inspect", "ping",
                               "--timeout", "20"], cwd=REPO, env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
                              capture_output=True, text=True, timeout=120)
        assert "pong" in ping.stdout, ping.stdout + ping.stderr

        up.send_signal(signal.SIGTERM)  # what Ctrl+C does
        assert up.wait(timeout=120) == 0
        _wait("every process stopped", lambda: not _processes_of(data_dir) and not healthy(), 60, log)
        assert "stopped" in log.read_text()
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
        for pid in _processes_of(data_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
