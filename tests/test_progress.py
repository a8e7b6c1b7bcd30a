"""Progress on the command line: import_data, export_data and run_job --wait draw a tqdm bar when
stderr is a terminal (a real pseudo-terminal here) and write plain lines when it is not (a pipe,
as in CI or a log file); stdout keeps its JSON last line either way."""

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios

import pytest

from annotate.models import Comparison

from .conftest import ALPACA_JUDGMENTS, REPO, database_url_for_subprocess, shared_file
from .tiny_models import tiny_reward_checkpoint

ALPACA = ALPACA_JUDGMENTS / "gpt4_1106_preview_vs_text_davinci_003.jsonl"


def manage(*arguments, terminal=False, timeout=300):
    """manage.py ARGUMENTS in a subprocess on the test database; stderr to a pipe, or to a
    pseudo-terminal when `terminal`. Returns (returncode, stdout, stderr)."""
    env = {**os.environ, "DATABASE_URL": database_url_for_subprocess(), "DATABASE_CONN_MAX_AGE": "0",
           "COLUMNS": "120"}
    command = [sys.executable, str(REPO / "manage.py"), *arguments]
    if not terminal:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        return done.returncode, done.stdout, done.stderr
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a new pty is 0 columns wide
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=child, text=True)
    os.close(child)
    chunks = []
    while True:
        ready, _, _ = select.select([parent], [], [], timeout)
        if not ready:
            process.kill()
            raise AssertionError("no output from the command")
        try:
            data = os.read(parent, 65536)
        except OSError:  # the terminal closed: the command ended
            break
        if not data:
            break
        chunks.append(data)
    os.close(parent)
    stdout = process.stdout.read()
    return process.wait(timeout=timeout), stdout, b"".join(chunks).decode(errors="replace")


def test_import_shows_plain_lines_off_a_terminal_and_a_bar_on_one(project, transactional_db):
    path = shared_file(ALPACA)
    code, stdout, stderr = manage("import_data", str(path), "--project", project.slug)
    assert code == 0, stderr
    assert json.loads(stdout.strip().splitlines()[-1])["comparisons_added"] == Comparison.objects.count() > 0
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith(f"importing {path.name}: 100% (") and "\r" not in stderr
    assert len(lines) <= 11  # a line per tenth at most, not one per read

    code, _, stderr = manage("import_data", str(path), "--project", project.slug, terminal=True)
    assert code == 0, stderr
    assert "\r" in stderr and "100%|" in stderr and "B/s" in stderr  # tqdm redraws one line


def test_export_progress_counts_judgments(project, transactional_db, tmp_path):
    from annotate.importing import import_path

    import_path(project, shared_file(ALPACA))
    code, stdout, stderr = manage("export_data", "--project", project.slug, "--format", "trl-preference",
                                  "--out", str(tmp_path / "prefs.jsonl"))
    assert code == 0, stderr
    judgments = project.judgments.count()
    assert stderr.strip().splitlines()[-1] == f"exporting {project.slug} (trl-preference): 100% ({judgments:,} of " \
                                              f"{judgments:,} judgments)"
    assert json.loads(stdout.strip().splitlines()[-1])["rows"] > 0

    code, _, stderr = manage("export_data", "--project", project.slug, "--format", "raw", terminal=True)
    assert code == 0 and "100%|" in stderr and "judgments" in stderr


@pytest.mark.ml
def test_run_job_wait_reports_to_its_end(project, transactional_db):
    from annotate.importing import import_path

    import_path(project, shared_file(ALPACA), labels="ignore")
    checkpoint = tiny_reward_checkpoint(project)
    config = json.dumps({"checkpoint": checkpoint.pk, "batch_size": 64})
    code, stdout, stderr = manage("run_job", "score", "--project", project.slug, "--config", config, "--here",
                                  "--wait")
    assert code == 0, stderr
    last = json.loads(stdout.strip().splitlines()[-1])
    assert last["status"] == "succeeded" and stderr.strip().splitlines()[-1] == \
        f"job {last['job']} score: 100% succeeded"

    code, stdout, stderr = manage("run_job", "score", "--project", project.slug, "--config", config, "--here",
                                  "--wait", terminal=True)
    assert code == 0 and "100%|" in stderr and json.loads(stdout.strip().splitlines()[-1])["status"] == "succeeded"
