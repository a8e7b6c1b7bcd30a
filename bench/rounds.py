"""The rounds experiment of the loop bench: does a round make a better policy? Simulated
annotators judge through the real product, rounds run on real workers, a frozen gold reward model
the loop never trains on judges each round's policy against its parent and the base model.

    ./prefloop bench loop [--rounds 3] [--method best_of_n] [--labels-per-round 200] [--noise 0.25]
                          [--pool FILE] [--eval FILE] [--gold DIR | --gold-train FILE] [--out DIR]
                          [--url URL --token TOKEN --annotator-tokens FILE --media DIR]

What it does, in order:
1. Data. Without --pool/--eval/--gold-train, the 1,600 HH-RLHF harmlessness pairs in
   ../shared/data are split by prompt: half trains the gold reward model, a third is the pool
   (imported with its labels hidden), the rest is the evaluation split (--eval: every round's
   reward model is scored on it). Short single-turn prompts of the evaluation part, then of the
   gold part, are the held-out prompts the policies answer for the gold judge (--heldout-prompts,
   200 by default: about ±7 points at 95%; no policy trains on either part).
   Who answers for a pool pair when it is judged: the gold judge (--pool-oracle gold, the
   default; as in Gao et al.'s synthetic setup the loop then learns what it is measured by: on
   this split the gold model and the HH labels agree on only ~58% of pairs) or the pool's own
   hidden labels (--pool-oracle revealed). A round's new pairs are always judged by the gold.
2. Gold. A MiniLM reward model trained on the gold split only, with another seed and more steps
   than a round's (cached in DIR/gold-*); --gold takes any reward-model checkpoint directory.
3. The instance. By default its own: a scratch data dir, SQLite and the filesystem broker (the
   embedded default), gunicorn and one Celery worker, stopped at the end. --url drives a running
   one (then --token of a project manager, --annotator-tokens of simulated annotators and --media,
   its media directory, so the bench can read the checkpoints).
4. Each round: the simulated annotators (`bench.simulate`: an oracle plus label flips, position
   bias, ties) lease comparisons through the REST API and post --labels-per-round judgments; the
   round is launched through the jobs API with the same pipeline as the "Next round" button and
   watched until it ends; then the new policy, its parent and the base model answer the held-out
   prompts and the gold model judges: win rate over the parent and over the base, each with a 95%
   bootstrap interval over prompts, the same at equal length (`length_controlled_win_rate`: a
   judge that likes short answers rewards a policy for getting shorter), and mean answer tokens.

Writes DIR/rounds.jsonl (one object per round), DIR/rounds.png and DIR/rounds.md (a table).
A round that fails is recorded with its step and error; --stop-on-failure ends the run there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PREFLOOP_SHARED_DATA", REPO.parent / "shared" / "data"))
HH = SHARED / "hh-rlhf" / "harmless-base-test.dev.jsonl.gz"
PROJECT = "loop-bench"


def add_arguments(parser) -> None:
    rounds = parser.add_argument_group("rounds experiment")
    rounds.add_argument("--rounds", type=int, default=3)
    rounds.add_argument("--method", default="", help="dpo, grpo, best_of_n or expert_iteration (default: the "
                                                     "round's default)")
    rounds.add_argument("--round-config", default="{}", help="JSON merged into every round's config")
    rounds.add_argument("--labels-per-round", type=int, default=200)
    rounds.add_argument("--pool-oracle", choices=("gold", "revealed"), default="gold",
                        help="who labels the pool's pairs: the gold judge (default: the loop learns what it is "
                             "measured by) or the pool's own hidden labels")
    rounds.add_argument("--noise", type=float, default=0.25, help="label-flip probability of each annotator")
    rounds.add_argument("--left-bias", type=float, default=0.0)
    rounds.add_argument("--tie-rate", type=float, default=0.0)
    rounds.add_argument("--annotators", type=int, default=4)
    rounds.add_argument("--gold", help="a reward-model checkpoint directory to judge with")
    rounds.add_argument("--gold-train", help="labelled file to train the gold model on (default: half of HH)")
    rounds.add_argument("--gold-steps", type=int, default=300)
    rounds.add_argument("--heldout-prompts", type=int, default=200,
                        help="prompts each policy answers for the gold judge (61 short single-turn ones come from "
                             "the evaluation part of HH, the rest from the gold part)")
    rounds.add_argument("--eval-pairs", type=int, default=200)
    rounds.add_argument("--eval-tokens", type=int, default=64, help="max new tokens of the held-out answers")
    rounds.add_argument("--url", help="drive this running instance instead of starting one")
    rounds.add_argument("--token", help="with --url: a manager's API token")
    rounds.add_argument("--annotator-tokens", help="with --url: a file with one simulated annotator token per line")
    rounds.add_argument("--media", help="with --url: the instance's media directory")
    rounds.add_argument("--slug", default=PROJECT, help="with --url: the project to use")
    rounds.add_argument("--stop-on-failure", action="store_true")
    rounds.add_argument("--replot", action="store_true", help="only write DIR/rounds.md and rounds.png again from "
                                                              "DIR/rounds.jsonl")
    rounds.add_argument("--seed", type=int, default=0)


# --- data ------------------------------------------------------------------------------------------


def prompt_share(prompt) -> float:
    text = json.dumps(prompt, sort_keys=True)
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16) / 16 ** 12


def hh_pairs(path: Path) -> list[dict]:
    """Labelled pairs {prompt (messages), prompt_text, chosen, rejected} of an importable file
    (read as the pool experiment reads them, `bench.loop.read_pairs`)."""
    from bench.loop import read_pairs

    pairs, _ = read_pairs(str(path), "auto")
    return [{"prompt": p["prompt"], "prompt_text": p["prompt_key"], "chosen": p["a"] if p["y"] else p["b"],
             "rejected": p["b"] if p["y"] else p["a"]} for p in pairs]


def pool_rows(pool: list[dict]) -> list:
    """The pool as importer rows with no label (import them with labels="ignore"): which response
    comes first is decided by a hash, not by the label."""
    from annotate.importing import ParsedRow

    rows = []
    for index, pair in enumerate(pool):
        swap = hashlib.sha256(pair["chosen"].encode()).digest()[0] % 2
        responses = [(pair["rejected"], ""), (pair["chosen"], "")] if swap else \
            [(pair["chosen"], ""), (pair["rejected"], "")]
        messages = pair["prompt"] if isinstance(pair["prompt"], list) else None
        rows.append(ParsedRow(pair["prompt_text"], messages, responses, [(0, 1, None)], item=index))
    return rows


@dataclass
class Data:
    gold_train: list[dict]
    pool: list[dict]
    eval_pairs: list[dict]
    heldout: list[tuple[int, object]]  # (id, prompt) answered by the policies for the gold judge


def single_turn(prompt) -> bool:
    return isinstance(prompt, str) or len(prompt) == 1


def prompt_text(prompt) -> str:
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


def load_data(args) -> Data:
    if args.pool:
        pool = hh_pairs(Path(args.pool))
        eval_pairs = hh_pairs(Path(args.eval)) if args.eval else []
        gold_train = hh_pairs(Path(args.gold_train)) if args.gold_train else []
    else:
        everything = hh_pairs(HH)
        gold_train = [p for p in everything if prompt_share(p["prompt"]) < 0.5]
        pool = [p for p in everything if 0.5 <= prompt_share(p["prompt"]) < 0.83]
        eval_pairs = [p for p in everything if prompt_share(p["prompt"]) >= 0.83]
        if args.gold_train:
            gold_train = hh_pairs(Path(args.gold_train))
    if not eval_pairs:
        eval_pairs = [p for p in pool if prompt_share(p["prompt"]) >= 0.8]
        pool = [p for p in pool if prompt_share(p["prompt"]) < 0.8]
    if not pool or not eval_pairs:
        sys.exit("The pool and the evaluation split need labelled pairs; give --pool FILE and --eval FILE.")
    # Held-out prompts: short single-turn ones of the evaluation part, then of the gold part: no
    # policy ever trains on either (the gold judge has seen responses to the second kind, not these).
    heldout = short_prompts(sorted(part, key=lambda p: prompt_share(p["prompt"])) for part in (eval_pairs, gold_train))
    return Data(gold_train, pool, eval_pairs[:args.eval_pairs], heldout[:args.heldout_prompts])


def short_prompts(parts) -> list[tuple[int, object]]:
    """(id, prompt) for each distinct short single-turn prompt of the pairs of `parts`, in order."""
    seen, out = set(), []
    for part in parts:
        for pair in part:
            text = prompt_text(pair["prompt"])
            if single_turn(pair["prompt"]) and len(text) <= 300 and text not in seen:
                seen.add(text)
                out.append((len(out) + 1, pair["prompt"]))
    return out


# --- the gold judge ---------------------------------------------------------------------------------


def train_gold(pairs: list[dict], out: Path, steps: int) -> Path:
    """A reward model on pairs the loop never sees (cached by their content and the settings)."""
    from training.runners.reward_model import RewardModelConfig, train_reward_model

    if not pairs:
        sys.exit("No pairs to train the gold reward model on: give --gold DIR or --gold-train FILE.")
    config = RewardModelConfig(base_model="minilm", max_length=256, batch_size=8, learning_rate=3e-5,
                               max_steps=steps, eval_fraction=0.1, seed=1234, min_pairs=20)
    key = hashlib.sha256(json.dumps([pairs, config.to_dict()], sort_keys=True).encode()).hexdigest()[:12]
    directory = out / f"gold-{key}"
    if (directory / "prefloop.json").exists():
        return directory
    snapshot = out / f"gold-{key}.jsonl"
    with open(snapshot, "w", encoding="utf-8") as handle:
        for index, pair in enumerate(pairs):
            handle.write(json.dumps({"comparison": index, "choice": "a", "strength": None, "prompt": pair["prompt"],
                                     "response_a": pair["chosen"], "response_b": pair["rejected"]}) + "\n")
    print(f"training the gold reward model on {len(pairs)} pairs, {steps} steps (once; cached in {directory})",
          flush=True)
    started = time.perf_counter()
    result = train_reward_model(snapshot, directory.with_suffix(".partial"), config)
    os.replace(directory.with_suffix(".partial"), directory)
    print(f"gold: held-out accuracy {result.metrics.get('eval_accuracy')} in {time.perf_counter() - started:.0f} s",
          flush=True)
    return directory


# --- the instance ----------------------------------------------------------------------------------


@dataclass
class Instance:
    url: str
    slug: str
    token: str
    annotator_tokens: list[str]
    media: Path
    processes: list = field(default_factory=list)
    start_worker: object = None  # () -> Popen, when this bench started the worker (processes[-1])
    worker_restarts: int = 0

    def watch(self) -> None:
        """Start the worker again if it stopped, as `./prefloop up` does: the job sweep then
        requeues what it was running (a worker that died on a broker error once left a round
        queued for good)."""
        if self.start_worker is None or self.processes[-1].poll() is None:
            return
        old = self.processes[-1]
        if self.worker_restarts >= 5:
            raise RuntimeError(f"the worker stopped again (exit code {old.returncode}) after {self.worker_restarts} "
                               "restarts; see worker.log in the instance directory")
        print(f"the worker stopped (exit code {old.returncode}); starting it again", file=sys.stderr)
        _kill_group(old, signal.SIGKILL)  # its beat and pool, or two beats would send every task twice
        self.processes[-1] = self.start_worker()
        self.worker_restarts += 1

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # the leader: Celery's lets a running task end
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        for process in self.processes:  # whatever is left of each group (started by this bench: its own)
            if self.start_worker is not None:
                _kill_group(process, signal.SIGKILL)
            elif process.poll() is None:
                process.kill()


def _kill_group(process, sig) -> None:
    """Every process started with `process` (it leads its own session: start_new_session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_instance(directory: Path, pool: list[dict], args) -> Instance:
    """The embedded default on a scratch data dir: migrate, a manager, the project with the pool
    (labels hidden), simulated annotators; then gunicorn and a worker as `./prefloop up` runs them."""
    import shutil

    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    env = {**os.environ, "PREFLOOP_DATA_DIR": str(directory), "DATABASE_URL": f"sqlite:///{directory / 'db.sqlite3'}",
           "CELERY_BROKER_URL": "filesystem://", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "DJANGO_SETTINGS_MODULE": "config.settings"}
    python = sys.executable
    setup = subprocess.run([python, str(REPO / "bench" / "rounds_setup.py"), str(args.annotators)],
                           input=json.dumps(pool), capture_output=True, text=True, env=env, cwd=REPO)
    if setup.returncode:
        sys.exit(f"setting up the instance failed:\n{setup.stderr[-3000:]}")
    made = json.loads(setup.stdout.strip().splitlines()[-1])
    port = free_port()
    log = open(directory / "processes.log", "a")  # noqa: SIM115 -- the servers write to it until stopped
    bin_dir = Path(python).parent
    web = subprocess.Popen([str(bin_dir / "gunicorn"), "config.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2",
                            "--threads", "4", "--log-level", "warning"], env=env, cwd=REPO, stdout=log, stderr=log,
                           start_new_session=True)

    def start_worker():
        return subprocess.Popen([str(bin_dir / "celery"), "-A", "config", "worker", "-B", "-Q", "default,cpu,gpu",
                                 "--concurrency", "1", "--schedule", str(directory / "celerybeat-schedule"),
                                 "--loglevel", "INFO", "--logfile", str(directory / "worker.log")],
                                env=env, cwd=REPO, stdout=log, stderr=log, start_new_session=True)

    instance = Instance(f"http://127.0.0.1:{port}", made["slug"], made["token"], made["annotators"],
                        directory / "media", [web, start_worker()], start_worker)
    import httpx

    for _ in range(120):
        try:
            if httpx.get(f"{instance.url}/api/v1/projects/", headers=auth(instance.token), timeout=2).status_code == 200:
                return instance
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    instance.stop()
    sys.exit(f"the web server did not answer; see {directory / 'processes.log'}")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def auth(token: str) -> dict:
    return {"Authorization": f"Token {token}"}


# --- a round ---------------------------------------------------------------------------------------


def launch_round(instance: Instance, config: dict) -> dict:
    import httpx

    response = httpx.post(f"{instance.url}/api/v1/jobs/", headers=auth(instance.token), timeout=60,
                          json={"project": instance.slug, "kind": "round", "config": config})
    if response.status_code != 201:
        raise RuntimeError(f"the round was refused: {response.status_code} {response.text[:500]}")
    job = response.json()
    while job["status"] in ("queued", "running"):
        time.sleep(3)
        instance.watch()
        job = httpx.get(f"{instance.url}/api/v1/jobs/{job['id']}/", headers=auth(instance.token), timeout=60).json()
    return job


def step_seconds(instance: Instance, pipeline: dict) -> dict:
    """Wall time of each step of a finished round, by kind."""
    import httpx
    from django.utils.dateparse import parse_datetime

    out = {}
    for step_id in (pipeline.get("result") or {}).get("steps", []):
        step = httpx.get(f"{instance.url}/api/v1/jobs/{step_id}/", headers=auth(instance.token), timeout=60).json()
        if step.get("started_at") and step.get("finished_at"):
            seconds = (parse_datetime(step["finished_at"]) - parse_datetime(step["started_at"])).total_seconds()
            out[step["kind"]] = round(seconds, 1)
    return out


def checkpoint(instance: Instance, checkpoint_id: int) -> dict:
    import httpx

    return httpx.get(f"{instance.url}/api/v1/checkpoints/{checkpoint_id}/", headers=auth(instance.token),
                     timeout=60).json()


def model_name(instance: Instance, record: dict) -> str:
    return str(instance.media / record["path"]) if record["path"] else record["base_model"]


def answer_stats(answers: list[dict]) -> dict:
    """One policy's held-out answers in three figures: mean length in tokens, how repetitive they
    are (distinct-2) and their mean gold reward."""
    from bench.simulate import distinct_2

    return {"mean_answer_tokens": round(sum(r["tokens"] for r in answers) / len(answers), 1),
            "distinct_2": distinct_2([r["text"] for r in answers]),
            "mean_gold_reward": round(sum(r["gold"] for r in answers) / len(answers), 4)}


class Judge:
    """The gold reward model, and the answers of each policy on the held-out prompts (cached)."""

    def __init__(self, gold_dir: Path, heldout: list[tuple[int, object]], out: Path, tokens: int, seed: int):
        from rewards.scoring import RewardModel

        self.gold = RewardModel(gold_dir)
        self.heldout, self.out, self.tokens, self.seed = heldout, out, tokens, seed
        self.answers: dict[int, list[dict]] = {}

    def answers_of(self, checkpoint_id: int, name: str) -> list[dict]:
        """Each held-out prompt's answer by a policy, with its gold reward."""
        if checkpoint_id not in self.answers:
            from training.runners.generate import GenerateConfig, generate_answers

            path = self.out / f"answers-{checkpoint_id}.jsonl"
            config = GenerateConfig(samples=1, max_new_tokens=self.tokens, temperature=0.7, batch_size=8,
                                    backend="transformers", seed=self.seed + checkpoint_id)
            generate_answers(name, self.heldout, path, config)
            rows = read_jsonl(path)
            prompts = dict(self.heldout)
            rewards = self.gold.score([prompts[r["prompt_id"]] for r in rows], [r["text"] for r in rows]).mean
            for row, reward in zip(rows, rewards, strict=True):
                row["gold"] = float(reward)
            self.answers[checkpoint_id] = rows
        return self.answers[checkpoint_id]

    def win_rate(self, new: list[dict], old: list[dict], seed: int) -> dict:
        """The gold win rate of `new` over `old` with its interval, and the same at equal length
        (`length_controlled_win_rate`): a judge that likes short answers rewards a policy for
        getting shorter, and the raw rate alone would call that learning."""
        from bench.simulate import length_controlled_win_rate, win_rate

        theirs = {r["prompt_id"]: r for r in old}
        wins, diffs = [], []
        for row in new:
            other = theirs[row["prompt_id"]]
            wins.append(0.5 if row["text"] == other["text"] else float(row["gold"] > other["gold"]))
            diffs.append(row["tokens"] - other["tokens"])
        rate = win_rate(wins, seed=seed)
        controlled = length_controlled_win_rate(wins, diffs, seed=seed)
        return {"win": round(rate["win_rate"], 3), "ci": [round(rate["low"], 3), round(rate["high"], 3)],
                "lc": round(controlled["win_rate"], 3),
                "lc_ci": [round(controlled["low"], 3), round(controlled["high"], 3)]}


class LoopOracle:
    """The simulated annotators' truth: for a pool pair its hidden label (`revealed`, when
    `pool_oracle` says so), for any other pair (a round's new answer against its parent's) the gold
    reward model's preference (`gold`), scored on the whole prompt (the API shows a chat prompt's
    last turn; the pool knows the rest)."""

    def __init__(self, pool: list[dict], gold, pool_oracle: str = "revealed"):
        from bench.simulate import GoldOracle, RevealedOracle

        self.revealed = RevealedOracle.from_pairs(
            (p["prompt_text"], p["chosen"], p["rejected"], "a") for p in pool if pool_oracle == "revealed")
        self.prompts = {p["prompt_text"]: p["prompt"] for p in pool}
        self.gold = GoldOracle(lambda prompt, responses: gold.score(
            [self.prompts.get(prompt, prompt)] * len(responses), list(responses)).mean)
        self.asked = {"revealed": 0, "gold": 0}

    def prefers_a(self, prompt: str, response_a: str, response_b: str) -> bool | None:
        from bench.simulate import UnknownPair

        try:
            answer = self.revealed.prefers_a(prompt, response_a, response_b)
            self.asked["revealed"] += 1
        except UnknownPair:
            answer = self.gold.prefers_a(prompt, response_a, response_b)
            self.asked["gold"] += 1
        return answer


def preferences(model, pairs: list[dict]) -> list[bool]:
    """Per pair, whether `model` (a RewardModel) scores the labelled-chosen response higher."""
    chosen = model.score([p["prompt"] for p in pairs], [p["chosen"] for p in pairs]).mean
    rejected = model.score([p["prompt"] for p in pairs], [p["rejected"] for p in pairs]).mean
    return [bool(c > r) for c, r in zip(chosen, rejected, strict=True)]


def proxy_accuracy(reward_dir: Path, pairs: list[dict], gold: list[bool] | None = None) -> tuple[float, float | None]:
    """A reward model's accuracy on the labelled pairs, and (given the gold model's preferences on
    them) how often it agrees with the gold judge, which is what a round's proxy should learn."""
    from rewards.scoring import RewardModel

    mine = preferences(RewardModel(reward_dir), pairs)
    agreement = sum(m == g for m, g in zip(mine, gold, strict=True)) / len(pairs) if gold else None
    return sum(mine) / len(pairs), agreement


def run(args) -> None:
    from bench.simulate import NoisyAnnotator, run_annotators

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        rows = read_jsonl(out / "rounds.jsonl")
        write_table(out / "rounds.md", rows, args, sum(r.get("seconds", {}).get(stage, 0) for r in rows
                                                       for stage in ("judging", "round", "evaluation")))
        plot(out / "rounds.png", rows)
        print((out / "rounds.md").read_text())
        return
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{out / 'unused.sqlite3'}")
    os.environ.setdefault("CELERY_BROKER_URL", "memory://")
    os.environ.setdefault("PREFLOOP_DATA_DIR", str(out / "django"))
    import django

    django.setup()  # the parsers and runners only: this process touches no database
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = time.perf_counter()
    data = load_data(args)
    print(f"data: {len(data.gold_train)} gold-training pairs, {len(data.pool)} in the pool (labels hidden), "
          f"{len(data.eval_pairs)} evaluation pairs, {len(data.heldout)} held-out prompts", flush=True)
    gold_dir = Path(args.gold) if args.gold else train_gold(data.gold_train, out, args.gold_steps)
    judge = Judge(gold_dir, data.heldout, out, args.eval_tokens, args.seed)
    gold_model = judge.gold
    gold_prefers = preferences(gold_model, data.eval_pairs)
    print(f"gold judge: {gold_dir}; its accuracy on the evaluation split: "
          f"{sum(gold_prefers) / len(gold_prefers):.3f}", flush=True)

    if args.url:
        if not (args.token and args.annotator_tokens and args.media):
            sys.exit("--url needs --token (a manager's), --annotator-tokens FILE and --media DIR")
        tokens = Path(args.annotator_tokens).read_text().split()
        instance = Instance(args.url.rstrip("/"), args.slug, args.token, tokens, Path(args.media))
    else:
        instance = start_instance(out / "instance", data.pool, args)
        # SIGTERM would end Python without the `finally` below, and the instance's web server and worker
        # (process groups of their own) would outlive the bench: make it an exit that stops them.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"instance: {instance.url}, project {instance.slug}, {len(instance.annotator_tokens)} simulated annotators",
          flush=True)

    oracle = LoopOracle(data.pool, gold_model, args.pool_oracle)
    annotator = NoisyAnnotator(flip=args.noise, left_bias=args.left_bias, tie_rate=args.tie_rate)
    config = json.loads(args.round_config)
    if args.method:
        config["method"] = args.method
    results_path = out / "rounds.jsonl"
    results_path.unlink(missing_ok=True)
    labels = 0
    try:
        for number in range(1, args.rounds + 1):
            record = {"round": number, "method": config.get("method", "default")}
            tick = time.perf_counter()
            judged = run_annotators(instance.url, instance.slug, instance.annotator_tokens, oracle,
                                    replace(annotator, seed=args.seed * 1000 + number),
                                    max_labels=args.labels_per_round)
            labels += judged["labels"]
            record.update(labels=labels, labels_this_round=judged["labels"], oracle=dict(oracle.asked),
                          annotator_agreement_with_oracle=judged.get("agreement"), judging_errors=judged["errors"])
            seconds = {"judging": round(time.perf_counter() - tick, 1)}
            tick = time.perf_counter()
            pipeline = launch_round(instance, config)
            seconds["round"] = round(time.perf_counter() - tick, 1)
            seconds.update(step_seconds(instance, pipeline))
            if pipeline["status"] != "succeeded":
                record.update(status=pipeline["status"], error=pipeline.get("error"), seconds=seconds)
                print(f"round {number} {pipeline['status']}: {pipeline.get('error')}", flush=True)
                with open(results_path, "a") as handle:
                    handle.write(json.dumps(record) + "\n")
                if args.stop_on_failure:
                    break
                continue
            result = pipeline["result"]
            tick = time.perf_counter()
            policy = checkpoint(instance, result["policy"])
            parent = checkpoint(instance, policy["parent"])
            base = checkpoint(instance, policy["lineage"][-1])
            reward = checkpoint(instance, result["reward_model"]) if result.get("reward_model") else None
            new_answers = judge.answers_of(policy["id"], model_name(instance, policy))
            over_parent = judge.win_rate(new_answers, judge.answers_of(parent["id"], model_name(instance, parent)),
                                         number)
            over_base = judge.win_rate(new_answers, judge.answers_of(base["id"], model_name(instance, base)), number)
            accuracy, agreement = proxy_accuracy(instance.media / reward["path"], data.eval_pairs, gold_prefers) \
                if reward else (None, None)
            parents = answer_stats(judge.answers[parent["id"]])
            record.update(
                status="succeeded", policy=policy["id"], parent=parent["id"], pipeline=pipeline["id"],
                proxy_accuracy=round(accuracy, 3) if reward else None,
                proxy_agreement_with_gold=round(agreement, 3) if reward else None,
                reward_model_eval_accuracy=(reward or {}).get("metrics", {}).get("eval_accuracy"),
                gold_win_rate=over_parent["win"], gold_win_rate_ci=over_parent["ci"],
                gold_win_rate_lc=over_parent["lc"], gold_win_rate_lc_ci=over_parent["lc_ci"],
                gold_win_rate_vs_base=over_base["win"], gold_win_rate_vs_base_ci=over_base["ci"],
                gold_win_rate_vs_base_lc=over_base["lc"], gold_win_rate_vs_base_lc_ci=over_base["lc_ci"],
                heldout_prompts=len(new_answers), **answer_stats(new_answers),
                parent_mean_answer_tokens=parents["mean_answer_tokens"], parent_distinct_2=parents["distinct_2"],
                comparisons_added=result.get("comparisons_added"), round_warnings=result.get("round_warnings", []))
            seconds["evaluation"] = round(time.perf_counter() - tick, 1)
            record["seconds"] = seconds
            record["worker_restarts"] = instance.worker_restarts  # so far in this run
            print(json.dumps(record), flush=True)
            with open(results_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
    finally:
        if not args.url:
            instance.stop()
    rows = read_jsonl(results_path) if results_path.exists() else []
    write_table(out / "rounds.md", rows, args, time.perf_counter() - started)
    plot(out / "rounds.png", rows)
    print((out / "rounds.md").read_text())


def write_table(path: Path, rows: list[dict], args, seconds: float) -> None:
    lines = [f"Rounds: method {args.method or 'default'}, {args.labels_per_round} labels per round, flip {args.noise}, "
             f"pool labelled by {args.pool_oracle}, "
             f"{args.annotators} simulated annotators; whole run {seconds / 60:.0f} min.", "",
             "| round | labels | proxy acc. (eval) | proxy = gold | gold win vs parent (95% CI) | "
             "at equal length (95% CI) | gold win vs base (95% CI) | answer tokens (parent) | distinct-2 (parent) | "
             "round min | eval min |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("status") != "succeeded":
            lines.append(f"| {r['round']} | {r.get('labels')} | failed: {str(r.get('error'))[:80]} | | | | | | | | |")
            continue
        ci, cib, s = r["gold_win_rate_ci"], r["gold_win_rate_vs_base_ci"], r["seconds"]
        verdict = "" if ci[0] > 0.5 else " (not above 50%)"
        lc_ci = r.get("gold_win_rate_lc_ci")  # absent in runs from before it was measured
        controlled = (f"{r['gold_win_rate_lc']:.0%} ({lc_ci[0]:.0%}–{lc_ci[1]:.0%})"
                      f"{'' if lc_ci[0] > 0.5 else ' (not above 50%)'}" if lc_ci else "–")
        lines.append(f"| {r['round']} | {r['labels']} | {r['proxy_accuracy']} | {r.get('proxy_agreement_with_gold')} | "
                     f"{r['gold_win_rate']:.0%} ({ci[0]:.0%}–{ci[1]:.0%}){verdict} | {controlled} | "
                     f"{r['gold_win_rate_vs_base']:.0%} ({cib[0]:.0%}–{cib[1]:.0%}) | "
                     f"{r['mean_answer_tokens']} ({r['parent_mean_answer_tokens']}) | "
                     f"{r.get('distinct_2', '–')} ({r.get('parent_distinct_2', '–')}) | {s['round'] / 60:.1f} | "
                     f"{s['evaluation'] / 60:.1f} |")
    path.write_text("\n".join(lines) + "\n")


def plot(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.get("status") == "succeeded"]
    if not done:
        return
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    x = [r["round"] for r in done]
    for key, label in (("gold_win_rate", "over its parent"), ("gold_win_rate_vs_base", "over the base")):
        y = [r[key] for r in done]
        low = [r[key] - r[key + "_ci"][0] for r in done]
        high = [r[key + "_ci"][1] - r[key] for r in done]
        left.errorbar(x, y, yerr=[low, high], marker="o", capsize=4, label=label)
    left.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    left.set(xlabel="round", ylabel="gold win rate (95% CI)", ylim=(0, 1), xticks=x)
    left.legend(fontsize=8)
    right.plot(x, [r["proxy_accuracy"] for r in done], marker="o", label="proxy RM accuracy (eval labels)")
    if all(r.get("proxy_agreement_with_gold") is not None for r in done):
        right.plot(x, [r["proxy_agreement_with_gold"] for r in done], marker="^", label="proxy agrees with gold")
    right.set(xlabel="round", ylabel="accuracy on the evaluation pairs", xticks=x, ylim=(0.4, 0.8))
    twin = right.twinx()
    twin.plot(x, [r["mean_answer_tokens"] for r in done], marker="s", color="tab:green", label="answer tokens")
    twin.set_ylabel("mean answer tokens")
    right.legend(loc="upper left", fontsize=8)
    twin.legend(loc="lower right", fontsize=8)
    figure.suptitle("The loop, judged by a gold reward model it never trained on", fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
