"""Simulated annotators that judge through the REST API, the way people do.

After AlpacaFarm (Dubois et al. 2023; ../shared/notes/loop-evidence.md): an oracle knows which of
two responses is better, and each simulated annotator answers from it with noise: 25% of labels
flipped by default, which brought simulated agreement down to the human-human rate (~65%).

- `NoisyAnnotator`: the noise model (label flips, a left/A bias, ties).
- Oracles: `RevealedOracle` (the hidden labels of an imported pool, revealed one judgment at a
  time) and `GoldOracle` (a frozen reward model the loop never trains on).
- `run_annotators`: one thread per annotator token leases `GET next/`, asks the oracle about the
  sides as shown, and posts left / right / tie to `judgments/`, until the queue is empty or
  enough labels are in.
- `bootstrap_ci`, `win_rate`: percentile-bootstrap intervals for the win rates the loop reports;
  `length_controlled_win_rate`: the same at equal length (AlpacaEval 2's regression);
  `distinct_2`: how repetitive answers are, so a policy that games the judge with repeated
  phrases shows, as length shows a policy that games it with brevity.

Plain Python (httpx, numpy): importable without Django, so a benchmark can drive a server that
runs elsewhere. Accounts and tokens come from `manage.py simulated_annotators SLUG --count N`.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import httpx
import numpy as np

# --- the noise model -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NoisyAnnotator:
    """How one simulated annotator answers. In order: with probability `tie_rate` a tie; else with
    probability `left_bias` "a" (the left side, whatever it shows); else the oracle's answer,
    flipped with probability `flip`. An oracle that cannot tell (None) gets a tie.

    >>> rng = random.Random(0)
    >>> NoisyAnnotator(flip=0.0).judge(True, rng), NoisyAnnotator(flip=1.0).judge(True, rng)
    ('a', 'b')
    """

    flip: float = 0.25
    left_bias: float = 0.0
    tie_rate: float = 0.0
    seed: int | None = None

    def __post_init__(self):
        for name in ("flip", "left_bias", "tie_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"NoisyAnnotator.{name} is a probability from 0 to 1; it was {value!r}.")

    def judge(self, prefers_a: bool | None, rng) -> str:
        """"a", "b" or "tie" for a pair the oracle judged `prefers_a` (A is the side shown left);
        `rng` is anything with .random() (random.Random, numpy's Generator)."""
        if rng.random() < self.tie_rate:
            return "tie"
        if rng.random() < self.left_bias:
            return "a"
        if prefers_a is None:
            return "tie"
        if rng.random() < self.flip:
            prefers_a = not prefers_a
        return "a" if prefers_a else "b"

    def rng(self, index: int = 0) -> random.Random:
        """The random source of annotator `index` under these settings: seeded, or fresh when seed is None."""
        return random.Random() if self.seed is None else random.Random(self.seed * 1_000_003 + index)


# --- oracles -------------------------------------------------------------------------------------


def _text(value: str) -> str:
    return value.replace("\r\n", "\n")  # as the server's content hash normalises line endings


def pair_key(prompt: str, response_1: str, response_2: str) -> str:
    """sha256 of a prompt and two responses, the same in either order of the responses.

    >>> pair_key("Hi", "Hello!", "Go away.") == pair_key("Hi", "Go away.", "Hello!")
    True
    """
    first, second = sorted((_text(response_1), _text(response_2)))
    return hashlib.sha256(json.dumps([_text(prompt), first, second]).encode()).hexdigest()


class UnknownPair(KeyError):
    """The oracle holds no label for this pair (a comparison it was not given)."""


@dataclass
class RevealedOracle:
    """The labels of an imported pool, hidden from the product (imported with labels=ignore) and
    revealed only as each pair is judged: {pair_key: the winning response's text, None for a tie}.
    `prefers_a` answers for the sides as displayed, whichever way round they are shown."""

    labels: dict[str, str | None]

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str, str, str | None]]) -> RevealedOracle:
        """From (prompt, response_a, response_b, label a / b / tie) rows; unlabelled rows are left out."""
        labels: dict[str, str | None] = {}
        for prompt, response_a, response_b, label in pairs:
            if label in ("a", "b", "tie"):
                labels[pair_key(prompt, response_a, response_b)] = {
                    "a": response_a, "b": response_b, "tie": None}[label]
        return cls(labels)

    @classmethod
    def from_parsed_rows(cls, rows: Iterable) -> RevealedOracle:
        """From the importer's ParsedRow objects (annotate.importing.iter_parsed reads any file it imports)."""
        return cls.from_pairs(
            (row.prompt_text, row.responses[i][0], row.responses[j][0], label)
            for row in rows for i, j, label in row.pairs)

    def prefers_a(self, prompt: str, response_a: str, response_b: str) -> bool | None:
        key = pair_key(prompt, response_a, response_b)
        if key not in self.labels:
            raise UnknownPair(key)
        winner = self.labels[key]
        if winner is None:
            return None
        return _text(winner) == _text(response_a)


@dataclass
class GoldOracle:
    """A fixed judge the loop never trains on: `score_fn(prompt, [response_a, response_b])` gives
    two scores (e.g. a frozen reward model, rewards.scoring.RewardModel); equal scores cannot tell."""

    score_fn: Callable[[str, list[str]], Sequence[float]]

    def prefers_a(self, prompt: str, response_a: str, response_b: str) -> bool | None:
        score_a, score_b = (float(s) for s in self.score_fn(prompt, [response_a, response_b]))
        return None if score_a == score_b else score_a > score_b


# --- win rates -----------------------------------------------------------------------------------


def bootstrap_ci(wins: Sequence[float], n: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `wins` (1 a win, 0 a loss, 0.5 a tie).
    Resampling draws multinomial counts of the distinct values, which is the same distribution
    as resampling items and costs O(n × distinct values), not O(n × items).

    >>> bootstrap_ci([1.0] * 20)
    (1.0, 1.0)
    """
    if len(wins) == 0:
        raise ValueError("bootstrap_ci needs at least one outcome.")
    if not 0 < level < 1:
        raise ValueError(f"level is a probability between 0 and 1; it was {level!r}.")
    values, counts = np.unique(np.asarray(wins, dtype=float), return_counts=True)
    draws = np.random.default_rng(seed).multinomial(len(wins), counts / counts.sum(), size=n)
    means = draws @ values / len(wins)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def distinct_2(texts: Sequence[str]) -> float:
    """Distinct-2 (Li et al. 2016), per answer and averaged: the share of an answer's bigrams of
    words and punctuation marks that are unique. Fluent text sits near 0.9; text that repeats
    itself falls (the base policy's held-out answers 0.89–0.92, a DPO policy that apologised over
    and over 0.68). An answer of fewer than two tokens counts 1.0, so very short answers need
    their length read beside it.

    >>> distinct_2(["no no no no no no", "I am here to help you with that."])
    0.6
    """
    if len(texts) == 0:
        raise ValueError("distinct_2 needs at least one answer.")
    shares = []
    for text in texts:
        tokens = re.findall(r"\w+|[^\w\s]", text.lower())  # words and punctuation: "sorry, I'm sorry," repeats
        bigrams = list(zip(tokens[:-1], tokens[1:], strict=True))
        shares.append(len(set(bigrams)) / len(bigrams) if bigrams else 1.0)
    return round(float(np.mean(shares)), 4)


def win_rate(wins: Sequence[float], n: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """The mean of `wins` (ties count 0.5) with its bootstrap interval and the counts behind it."""
    values = [float(w) for w in wins]
    if not values:
        return {"win_rate": None, "low": None, "high": None, "n": 0, "wins": 0, "ties": 0, "losses": 0}
    low, high = bootstrap_ci(values, n=n, seed=seed, level=level)
    return {"win_rate": sum(values) / len(values), "low": low, "high": high, "n": len(values),
            "wins": sum(v == 1 for v in values), "ties": sum(v == 0.5 for v in values),
            "losses": sum(v == 0 for v in values)}


def _logistic_fit(wins: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    """(b0, b1) of the logistic fit P(win) = sigmoid(b0 + b1·x), ties as 0.5 (a tiny ridge on b1
    keeps a fit on separable data finite)."""
    from scipy.optimize import minimize
    from scipy.special import expit, log_expit

    def loss(beta: np.ndarray) -> float:
        z = beta[0] + beta[1] * x
        return -float(np.sum(wins * log_expit(z) + (1 - wins) * log_expit(-z))) + 1e-3 * beta[1] ** 2

    def grad(beta: np.ndarray) -> np.ndarray:
        r = expit(beta[0] + beta[1] * x) - wins
        return np.array([r.sum(), (r * x).sum() + 2e-3 * beta[1]])

    b0, b1 = minimize(loss, np.zeros(2), jac=grad, method="L-BFGS-B").x
    return float(b0), float(b1)


def length_controlled_win_rate(wins: Sequence[float], length_diffs: Sequence[float], n: int = 1000,
                               seed: int = 0, level: float = 0.95) -> dict:
    """The win rate at equal length, after AlpacaEval 2's length-controlled win rate (Dubois et
    al. 2024): a logistic regression of each outcome (1 win, 0 loss, 0.5 tie) on the length
    difference (new minus old, in tokens, scaled by its standard deviation) and an intercept; the
    answer is the fitted win probability where the difference is zero. The interval is a percentile
    bootstrap over pairs, and `length_effect` the fitted change in win probability per standard
    deviation of length difference, as a sign to read (negative: the judge prefers shorter).

    A judge that only rewards brevity gives a raw win rate far from 0.5 and a length-controlled one
    near it:

    >>> diffs = [-10] * 30 + [10] * 10 + [0] * 20
    >>> wins = [1] * 30 + [0] * 10 + [1, 0] * 10
    >>> round(win_rate(wins)["win_rate"], 2), round(length_controlled_win_rate(wins, diffs)["win_rate"], 2)
    (0.67, 0.5)
    """
    y = np.asarray(wins, dtype=float)
    d = np.asarray(length_diffs, dtype=float)
    if len(y) != len(d):
        raise ValueError(f"{len(y)} outcomes but {len(d)} length differences: one of each per pair.")
    if len(y) == 0:
        return {"win_rate": None, "low": None, "high": None, "n": 0, "length_effect": None}
    from scipy.special import expit

    x = d / (d.std() or 1.0)
    b0, b1 = _logistic_fit(y, x)
    rng = np.random.default_rng(seed)
    draws = [expit(_logistic_fit(y[idx], x[idx])[0]) for idx in rng.integers(0, len(y), size=(n, len(y)))]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    point = float(expit(b0))
    return {"win_rate": point, "low": float(low), "high": float(high), "n": len(y),
            "length_effect": float(expit(b0 + b1)) - point}


# --- annotators through the API ---------------------------------------------------------------------

SHOWN = {"a": "left", "b": "right", "tie": "tie"}  # the API takes sides as they were shown


@dataclass
class AnnotatorTally:
    index: int
    labels: int = 0  # judgments recorded (201, or 200 for one recorded by an earlier try)
    ties: int = 0
    decided: int = 0  # a / b answers where the oracle had an answer
    agreed: int = 0  # … that agree with it
    conflicts: int = 0  # 409: the lease was lost (expired and taken, or the comparison retired)
    throttled: int = 0  # 429s waited out
    skipped: int = 0  # comparisons the oracle had no label for, skipped through the API
    errors: int = 0
    last_error: str = ""

    def as_dict(self) -> dict:
        return {"index": self.index, "labels": self.labels, "ties": self.ties, "decided": self.decided,
                "agreement": self.agreed / self.decided if self.decided else None, "conflicts": self.conflicts,
                "throttled": self.throttled, "skipped": self.skipped, "errors": self.errors,
                "last_error": self.last_error}


@dataclass
class _Run:
    """What the annotators share. An annotator stops when max_labels are in, or when every one
    that started is idle or stopped, each idle one's last `next` having said 204 with no judgment
    or skip by anyone since it asked: then no lease any of them holds can free a comparison for
    another. The run is over when that holds and every annotator has started (with fewer threads
    than tokens, later annotators start as earlier ones stop)."""

    annotators: int
    max_labels: int | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    posted: int = 0
    reserved: int = 0  # leases asked for or held that may become labels
    version: int = 0  # judgments and skips so far, by anyone
    # index -> ("asking", version) / ("working",) / ("ready",) / ("idle", version) / ("done",); absent: not started
    state: dict = field(default_factory=dict)
    finished: str = ""

    def reserve(self, index: int) -> str:
        """"go" (a label may be taken: ask for one), "wait" (others hold the remaining budget) or "stop"."""
        with self.lock:
            if self.finished:
                return "stop"
            if self.max_labels is not None and self.posted >= self.max_labels:
                self.finished = "max_labels"
                return "stop"
            if self.max_labels is not None and self.posted + self.reserved >= self.max_labels:
                return "wait"
            self.reserved += 1
            self.state[index] = ("asking", self.version)
            return "go"

    def leased(self, index: int) -> None:
        with self.lock:
            self.state[index] = ("working",)

    def released(self, index: int, posted: bool, changed: bool) -> None:
        """A lease ended: judged (posted), skipped (changed) or lost."""
        with self.lock:
            self.reserved -= 1
            self.posted += posted
            self.version += posted or changed
            self.state[index] = ("ready",)

    def empty(self, index: int) -> bool:
        """`next` said 204 (to a request asked at the version recorded in reserve); True: stop."""
        with self.lock:
            self.reserved -= 1
            self.state[index] = ("idle", self.state[index][1])
            settled = all(s[0] == "done" or (s[0] == "idle" and s[1] == self.version) for s in self.state.values())
            if settled and len(self.state) == self.annotators and not self.finished:
                self.finished = "empty"
            return settled or bool(self.finished)

    def failed(self, index: int) -> None:
        """The annotator gave up: what it had reserved goes back."""
        with self.lock:
            self.reserved -= self.state.get(index, ("ready",))[0] in ("asking", "working")
            self.state[index] = ("done",)

    def done(self, index: int) -> None:
        with self.lock:
            self.state[index] = ("done",)


class _Refused(Exception):
    """An answer that ends this annotator's work (401, 403, 404): retrying cannot help."""


def _call(http: httpx.Client, tally: AnnotatorTally, method: str, url: str, max_errors: int,
          body: dict | None = None) -> httpx.Response:
    """One API call, waiting out 429s (Retry-After) and retrying transport errors and 5xx answers
    up to `max_errors` times in a row; any other answer is returned as it is."""
    failures = 0
    while True:
        try:
            response = http.request(method, url, json=body)
        except httpx.TransportError as exc:
            response, problem = None, f"{method} {url}: {type(exc).__name__}: {exc}"
        else:
            if response.status_code == 429:
                tally.throttled += 1
                retry_after = response.headers.get("Retry-After", "")
                wait = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else 1.0
                time.sleep(min(max(wait, 0.05), 60.0))
                continue
            if response.status_code in (401, 403, 404):
                raise _Refused(f"{method} {url}: {response.status_code} {response.text[:300]}")
            if response.status_code < 500:
                return response
            problem = f"{method} {url}: {response.status_code} {response.text[:300]}"
        tally.errors += 1
        tally.last_error = problem
        failures += 1
        if failures >= max_errors:
            raise _Refused(f"{problem} ({failures} failures in a row)")
        time.sleep(min(0.2 * 2 ** failures, 5.0))


def _annotate(index: int, api: str, slug: str, token: str, oracle, settings: NoisyAnnotator, run: _Run,
              timeout: float, max_errors: int, poll: float) -> AnnotatorTally:
    tally = AnnotatorTally(index)
    rng = settings.rng(index)
    project = f"{api}projects/{slug}/"
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    try:
        with httpx.Client(headers=headers, timeout=timeout) as http:
            while True:
                go = run.reserve(index)
                if go == "stop":
                    return tally
                if go == "wait":
                    time.sleep(poll)
                    continue
                response = _call(http, tally, "GET", project + "next/", max_errors)
                if response.status_code == 204:
                    if run.empty(index):
                        return tally
                    time.sleep(poll)  # others still hold comparisons this annotator may yet judge
                    continue
                if response.status_code != 200:
                    raise _Refused(f"GET next/: {response.status_code} {response.text[:300]}")
                run.leased(index)
                posted, changed = _judge_one(http, tally, project, response.json(), oracle, settings, rng, max_errors)
                run.released(index, posted, changed)
    except Exception as exc:  # _Refused, or a failing oracle: this annotator stops, the others go on
        tally.errors += 1
        tally.last_error = str(exc) if isinstance(exc, _Refused) else f"{type(exc).__name__}: {exc}"
        run.failed(index)
        return tally
    finally:
        run.done(index)


def _judge_one(http, tally: AnnotatorTally, project: str, assignment: dict, oracle, settings: NoisyAnnotator,
               rng, max_errors: int) -> tuple[bool, bool]:
    """Judge one leased comparison. Returns (a judgment was recorded, the queue changed otherwise)."""
    comparison = assignment["comparison"]
    prompt, left, right = assignment["prompt"]["text"], assignment["left"]["text"], assignment["right"]["text"]
    try:
        prefers_left = oracle.prefers_a(prompt, left, right)
    except UnknownPair:
        _call(http, tally, "POST", project + "skip/", max_errors, {"comparison": comparison})
        tally.skipped += 1
        return False, True
    choice = settings.judge(prefers_left, rng)
    response = _call(http, tally, "POST", project + "judgments/", max_errors,
                     {"comparison": comparison, "choice": SHOWN[choice]})
    if response.status_code == 409:
        tally.conflicts += 1
        return False, False
    if response.status_code not in (200, 201):  # e.g. 400: a required rubric criterion this run cannot score
        tally.errors += 1
        tally.last_error = f"POST judgments/: {response.status_code} {response.text[:300]}"
        _call(http, tally, "POST", project + "skip/", max_errors, {"comparison": comparison})
        return False, True
    tally.labels += 1
    if choice == "tie":
        tally.ties += 1
    elif prefers_left is not None:
        tally.decided += 1
        tally.agreed += (choice == "a") == prefers_left
    return True, True


def run_annotators(base_url: str, slug: str, tokens: Sequence[str], oracle,
                   annotator_settings: NoisyAnnotator | Sequence[NoisyAnnotator] = NoisyAnnotator(),
                   max_labels: int | None = None, threads: int | None = None, *, timeout: float = 60.0,
                   max_errors: int = 10, poll: float = 0.2) -> dict:
    """Simulated annotators judge project `slug` on the server at `base_url` through its REST API,
    each token one annotator in its own thread (at most `threads` at a time): lease with GET next/,
    ask `oracle.prefers_a(prompt, left, right)`, answer through its NoisyAnnotator (the settings
    are given per token, or one for all), post left / right / tie as shown. Stops when the queue
    is empty for every annotator, or after `max_labels` judgments in all. A 429 is waited out
    (Retry-After), a 409 (the lease lost) moves on to the next comparison, a pair the oracle has
    no label for is skipped, and an annotator gives up after `max_errors` failures in a row or a
    401/403/404.

    Returns {"labels", "agreement" (of decided answers with the oracle), "conflicts", "throttled",
    "skipped", "errors", "seconds", "stopped" ("empty", "max_labels" or "errors"),
    "annotators": [per token: labels, ties, decided, agreement, conflicts, throttled, skipped,
    errors, last_error]}.
    """
    if not tokens:
        raise ValueError("run_annotators needs at least one annotator token.")
    if max_labels is not None and max_labels < 0:
        raise ValueError(f"max_labels must be 0 or more; it was {max_labels}.")
    settings = ([annotator_settings] * len(tokens) if isinstance(annotator_settings, NoisyAnnotator)
                else list(annotator_settings))
    if len(settings) != len(tokens):
        raise ValueError(f"{len(settings)} annotator settings for {len(tokens)} tokens: give one, or one per token.")
    api = base_url.rstrip("/")
    api = (api if api.endswith("/api/v1") else api + "/api/v1") + "/"
    run = _Run(annotators=len(tokens), max_labels=max_labels)
    tallies: list[AnnotatorTally | None] = [None] * len(tokens)
    width = threading.BoundedSemaphore(threads or len(tokens))
    started = time.perf_counter()

    def work(index: int) -> None:
        with width:
            tallies[index] = _annotate(index, api, slug, tokens[index], oracle, settings[index], run, timeout,
                                       max_errors, poll)

    workers = [threading.Thread(target=work, args=(i,), name=f"simulated-annotator-{i}", daemon=True)
               for i in range(len(tokens))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    rows = [t.as_dict() for t in tallies if t is not None]
    decided = sum(t.decided for t in tallies if t is not None)
    agreed = sum(t.agreed for t in tallies if t is not None)
    return {
        "labels": sum(r["labels"] for r in rows), "agreement": agreed / decided if decided else None,
        "conflicts": sum(r["conflicts"] for r in rows), "throttled": sum(r["throttled"] for r in rows),
        "skipped": sum(r["skipped"] for r in rows), "errors": sum(r["errors"] for r in rows),
        "seconds": round(time.perf_counter() - started, 3), "stopped": run.finished or "errors",
        "annotators": rows,
    }
