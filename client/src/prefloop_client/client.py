"""`Client`: Prefloop's REST API (/api/v1/) from a script, with a personal token.

Adds comparisons in batches (each one atomic server call; in a background thread with
`wait=False`), reads judgments page by page since an id, exports datasets to a file or a
`datasets.Dataset`, launches jobs and rounds and waits for them with a progress bar. Every
refused call raises a typed error from `prefloop_client.errors` with the server's message.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .errors import BadRequest, JobFailed, PrefloopError, RateLimited, error_for, flatten
from .progress import Progress

MAX_BATCH = 10_000  # the server's limit for one bulk call
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class BulkResult:
    """What adding comparisons did: the comparison id of each item in order (None where the two
    responses were identical), and what was new."""

    comparisons: list[int | None] = field(default_factory=list)
    created: int = 0
    prompts_added: int = 0
    candidates_added: int = 0
    judgments_added: int = 0

    def add(self, body: dict) -> None:
        self.comparisons += body["comparisons"]
        for name in ("created", "prompts_added", "candidates_added", "judgments_added"):
            setattr(self, name, getattr(self, name) + body[name])


@dataclass
class Export:
    """A downloaded export: where it is, how many rows, and its version (sha256 of the content)."""

    path: Path
    rows: int
    version: str


class Upload:
    """Batches being sent in the background (`add_comparisons(..., wait=False)`)."""

    def __init__(self, future: Future, total: int, state: dict):
        self._future, self.total, self._state = future, total, state

    @property
    def sent(self) -> int:
        """Items the server has accepted so far."""
        return self._state["sent"]

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: float | None = None) -> BulkResult:
        """Wait for the last batch; raises the error of a refused batch (earlier batches stay written)."""
        return self._future.result(timeout)


class Client:
    """A Prefloop server at `url` (e.g. http://127.0.0.1:8000), as the owner of `token`
    (default: $PREFLOOP_TOKEN)."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 120.0, rate_limit_retries: int = 0,
                 progress: bool = True, http: httpx.Client | None = None):
        token = token or os.environ.get("PREFLOOP_TOKEN")
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        base = url.rstrip("/")
        if not base.endswith("/api/v1"):
            base += "/api/v1"
        self.base_url = base + "/"
        self.http = http or httpx.Client(timeout=timeout)
        self.http.headers.update(headers)
        self.rate_limit_retries = rate_limit_retries
        self.progress = progress
        self._executor: ThreadPoolExecutor | None = None

    # --- plumbing ------------------------------------------------------------------------------

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path.lstrip("/")

    def request(self, method: str, path: str, *, params: dict | None = None, json_body=None) -> httpx.Response:
        """One API call; a refusal raises its typed error. 429 is retried `rate_limit_retries`
        times after the wait the server asks for."""
        # None, not {}: httpx would replace the query of a `next` link with an empty one.
        params = {k: v for k, v in (params or {}).items() if v is not None} or None
        for attempt in itertools.count():
            response = self.http.request(method, self._url(path), params=params, json=json_body)
            if response.status_code < 400:
                return response
            error = self._error(response)
            if isinstance(error, RateLimited) and attempt < self.rate_limit_retries:
                time.sleep(min(error.retry_after or 1.0, 60.0))
                continue
            raise error
        raise AssertionError("unreachable")

    def _error(self, response: httpx.Response) -> PrefloopError:
        try:
            body = response.json()
        except ValueError:
            body = response.text.strip()[:2000]
        retry_after = response.headers.get("Retry-After")
        return error_for(response.status_code, body, str(response.url),
                         float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None)

    def _get(self, path: str, **params):
        return self.request("GET", path, params=params).json()

    def _post(self, path: str, body=None):
        response = self.request("POST", path, json_body=body)
        return response.json() if response.content else None

    def _pages(self, path: str, params: dict) -> Iterator[dict]:
        """Every row of a cursor-paginated list, following `next` links."""
        url, query = path, params
        while url:
            page = self._get(url, **query)
            yield from page["results"]
            url, query = page.get("next"), {}

    # --- projects ------------------------------------------------------------------------------

    def projects(self) -> list[dict]:
        """The projects you are a member of, with your role in each."""
        return list(self._pages("projects/", {}))

    def project(self, slug: str) -> dict:
        return self._get(f"projects/{slug}/")

    def create_project(self, slug: str, name: str, *, instructions: str = "", votes_wanted: int = 1) -> dict:
        """A new project you own (staff accounts only)."""
        return self._post("projects/", {"slug": slug, "name": name, "instructions": instructions,
                                        "votes_wanted": votes_wanted})

    # --- adding work ---------------------------------------------------------------------------

    def add_comparisons(self, project: str, items: Iterable[dict], *, labels: str = "judgments",
                        batch_size: int = 1000, wait: bool = True, progress: bool | None = None
                        ) -> BulkResult | Upload:
        """Add comparisons: each item is {prompt (text or chat messages), response_a, response_b}
        and optionally source_a, source_b, preference (a / b / tie), priority, round, votes_wanted,
        id. Sent `batch_size` items per call, each call atomic on the server; existing prompts,
        responses and pairs are reused, so sending the same items again adds nothing twice.

        wait=False returns an `Upload` at once and sends in a background thread.
        A refused batch raises BadRequest naming items by their index in `items`; the batches
        before it are written (`error.written` items)."""
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}")
        items = list(items)
        state = {"sent": 0}
        show = self.progress if progress is None else progress

        def send() -> BulkResult:
            result = BulkResult()
            with Progress(len(items), f"adding to {project}", enabled=show and len(items) > batch_size,
                          unit="items") as bar:
                for start in range(0, len(items), batch_size):
                    batch = items[start:start + batch_size]
                    try:
                        body = self._post(f"projects/{project}/comparisons/", {"items": batch, "labels": labels})
                    except BadRequest as exc:
                        raise _shift_items(exc, start) from None
                    result.add(body)
                    state["sent"] = start + len(batch)
                    bar.update(state["sent"])
            return result

        if not items:
            raise ValueError("no items to add")
        if wait:
            return send()
        if self._executor is None:
            # One thread: batches go in order, so item indexes and reused prompts stay consistent.
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefloop-upload")
        return Upload(self._executor.submit(send), len(items), state)

    def add_candidates(self, project: str, rows: Iterable[dict], **options) -> BulkResult | Upload:
        """Add responses to prompts: each row is {prompt, responses: [text or {text, source}]},
        optionally with priority, round, id; every pair of a prompt's responses becomes a
        comparison (as the `candidates` import format does). Options as for add_comparisons."""
        items = []
        for number, row in enumerate(rows):
            responses = row.get("responses")
            if not isinstance(responses, list) or len(responses) < 2:
                raise ValueError(f"row {number}: 'responses' must list at least two responses")
            shaped = [(r, "") if isinstance(r, str) else (r.get("text"), r.get("source") or "") for r in responses]
            extra = {k: row[k] for k in ("priority", "round", "votes_wanted", "origin") if k in row}
            for (a, source_a), (b, source_b) in itertools.combinations(shaped, 2):
                items.append({"prompt": row.get("prompt"), "response_a": a, "response_b": b, "source_a": source_a,
                              "source_b": source_b, **extra})
        return self.add_comparisons(project, items, **options)

    # --- reading judgments ---------------------------------------------------------------------

    def new_judgments(self, project: str, token: int = 0, *, page_size: int = 1000, **filters) -> tuple[list[dict], int]:
        """Commit-safe polling: (judgments committed since `token`, the token for the next call).
        Start with 0 and keep the returned token; unlike an id cursor, a judgment that commits late
        with a lower id is never skipped (each judgment comes back exactly once across calls)."""
        rows, url, query, next_token = [], f"projects/{project}/judgments/", {
            "since_tx": token, "page_size": page_size, **filters}, token
        while url:
            response = self.request("GET", url, params=query)
            next_token = int(response.headers.get("X-Prefloop-Next-Since-Tx", next_token))
            page = response.json()
            rows.extend(page["results"])
            url, query = page.get("next"), {}
        return rows, next_token

    def judgments(self, project: str, *, since_id: int = 0, page_size: int = 1000, **filters) -> Iterator[dict]:
        """Judgments with an id above `since_id`, oldest first (managers see everyone's,
        annotators their own). The last id you saw is the cursor for the next sync. Filters:
        annotator, choice, origin, round, comparison, since (an ISO time)."""
        return self._pages(f"projects/{project}/judgments/", {"since_id": since_id, "page_size": page_size, **filters})

    def next_comparison(self, project: str) -> dict | None:
        """Lease the next comparison to judge (texts only, sides as to be shown); None when none is left."""
        response = self.request("GET", f"projects/{project}/next/")
        return response.json() if response.status_code == 200 else None

    def judge(self, project: str, comparison: int, choice: str, *, strength: str | None = None,
              rationale: str = "", rubric: dict | None = None) -> dict:
        """Judge the comparison you hold: choice left / right / tie, as it was shown."""
        return self._post(f"projects/{project}/judgments/", {
            "comparison": comparison, "choice": choice, "strength": strength, "rationale": rationale,
            "rubric": rubric or {}})

    # --- export --------------------------------------------------------------------------------

    def export(self, project: str, path: str | Path | None = None, *, format: str = "trl-preference",
               votes: str = "majority", ties: str = "drop", file: str = "jsonl", gzip: bool = False,
               since_id: int | None = None, round: int | None = None, origin: str | None = None,
               progress: bool | None = None) -> Export:
        """Download an export (formats trl-preference, trl-unpaired, rubric, raw) to `path`
        (default: the server's file name in the current directory)."""
        params = {"format": format, "votes": votes, "ties": ties, "file": file, "gzip": "true" if gzip else None,
                  "since_id": since_id, "round": round, "origin": origin}
        params = {k: v for k, v in params.items() if v is not None}
        show = self.progress if progress is None else progress
        with self.http.stream("GET", self._url(f"projects/{project}/export/"), params=params) as response:
            if response.status_code >= 400:
                response.read()
                raise self._error(response)
            if path is None:
                found = re.search(r'filename="?([^";]+)"?', response.headers.get("Content-Disposition", ""))
                path = found.group(1) if found else f"{project}-{format}.jsonl"
            path = Path(path)
            partial = path.with_name(path.name + ".partial")
            size = int(response.headers.get("Content-Length") or 0)
            with open(partial, "wb") as out, Progress(size or 1, f"exporting {project}", unit="B",
                                                      enabled=show and size > 0) as bar:
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
                    bar.update(out.tell())
            os.replace(partial, path)  # never a half file under the real name
            version = response.headers.get("X-Prefloop-Export-Version", "")
            rows = int(response.headers.get("X-Prefloop-Export-Rows") or 0)
        return Export(path=path, rows=rows, version=version)

    def export_dataset(self, project: str, *, format: str = "trl-preference", **options):
        """An export as a `datasets.Dataset` (needs `pip install prefloop-client[datasets]`);
        its `info.description` names the export's version."""
        try:
            import datasets
        except ImportError:
            raise ImportError("export_dataset needs the datasets package: pip install 'prefloop-client[datasets]'"
                              ) from None
        import tempfile

        with tempfile.TemporaryDirectory(prefix="prefloop-export-") as folder:
            exported = self.export(project, Path(folder) / "export.jsonl", format=format, **options)
            with open(exported.path, encoding="utf-8") as handle:
                rows = [json.loads(line) for line in handle if line.strip()]
        info = datasets.DatasetInfo(description=f"Prefloop project {project}, {format}, {exported.version}")
        return datasets.Dataset.from_list(rows, info=info)

    # --- jobs ----------------------------------------------------------------------------------

    def launch(self, project: str, kind: str, config: dict | None = None, *, queue: str | None = None,
               wait: bool = False, progress: bool | None = None, timeout: float | None = None,
               poll: float = 1.0) -> dict:
        """Launch a job (reward_model, score, dpo, grpo, generate, round); a bad config is refused
        (BadRequest naming `config.FIELD`) before anything is queued. wait=True follows it to
        its end with a progress bar and raises JobFailed unless it succeeded."""
        job = self._post("jobs/", {"project": project, "kind": kind, "config": config or {}, "queue": queue})
        return self.wait(job, progress=progress, timeout=timeout, poll=poll) if wait else job

    def run_round(self, project: str, config: dict | None = None, **options) -> dict:
        """The next round as one pipeline (reward model → DPO or GRPO → generate); waits by default."""
        options.setdefault("wait", True)
        return self.launch(project, "round", config, **options)

    def job(self, job_id: int) -> dict:
        return self._get(f"jobs/{job_id}/")

    def jobs(self, project: str | None = None, **filters) -> Iterator[dict]:
        """Jobs of the projects you manage, newest first. Filters: kind, status."""
        return self._pages("jobs/", {"project": project, **filters})

    def metrics(self, job_id: int) -> list[dict]:
        return self._get(f"jobs/{job_id}/metrics/")

    def cancel(self, job_id: int) -> dict:
        return self._post(f"jobs/{job_id}/cancel/")

    def retry(self, job_id: int) -> dict:
        return self._post(f"jobs/{job_id}/retry/")

    def wait(self, job: dict | int, *, progress: bool | None = None, timeout: float | None = None,
             poll: float = 1.0, raise_on_failure: bool = True) -> dict:
        """Poll a job until it ends; returns its final state. A progress bar on a terminal (with
        tqdm), plain lines otherwise. Raises JobFailed when it failed or was cancelled, and
        TimeoutError after `timeout` seconds (the job goes on)."""
        job = self.job(job) if isinstance(job, int) else job
        show = self.progress if progress is None else progress
        deadline = None if timeout is None else time.monotonic() + timeout
        with Progress(1.0, f"job {job['id']} {job['kind']}", unit="%", enabled=show) as bar:
            while True:
                bar.update(job["progress"] or 0.0, f"{job['status']} {job['message']}".strip())
                if job["status"] in TERMINAL:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {job['id']} is still {job['status']} after {timeout} s")
                time.sleep(poll)
                job = self.job(job["id"])
        if raise_on_failure and job["status"] != "succeeded":
            raise JobFailed(job)
        return job

    # --- models --------------------------------------------------------------------------------

    def checkpoints(self, project: str | None = None, kind: str | None = None) -> list[dict]:
        """Checkpoints (reward_model, policy) of the projects you manage, with lineage and snapshots."""
        return list(self._pages("checkpoints/", {"project": project, "kind": kind}))

    def checkpoint(self, checkpoint_id: int) -> dict:
        return self._get(f"checkpoints/{checkpoint_id}/")


def _shift_items(error: BadRequest, offset: int) -> BadRequest:
    """A batch's error with its item indexes made indexes into the caller's whole list."""
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("items"), dict):
        items = {str(int(k) + offset) if str(k).isdigit() else k: v for k, v in body["items"].items()}
        body = {**body, "items": items}
    message = "; ".join(flatten(body)) or error.message
    if offset:
        message += f" (the {offset} items before this batch were written; sending the same items again adds " \
                   "nothing twice)"
    shifted = BadRequest(message, status=400, body=body, url=error.url)
    shifted.written = offset
    return shifted
