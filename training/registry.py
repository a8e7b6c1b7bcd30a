"""The registry of job kinds: what a kind is (config, queue, check, execute) and what a run hands
back. The job core looks kinds up here and knows nothing else about them; each module of
`training.kinds` registers its kind when the app starts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .runners.base import RunConfig

if TYPE_CHECKING:
    from annotate.models import Project

    from .models import Job
    from .runners.base import Reporter


class LaunchRefused(Exception):
    """A job that must not be queued; the message says why and what to change."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass
class Outcome:
    """What `execute` hands back: final metrics and, for a job that trained a model, the
    checkpoint to register (files already complete in `checkpoint_dir`)."""

    metrics: dict
    checkpoint: dict | None = None  # kind, name, base_model, parent_id, reward_model_id, snapshot_ids, config
    checkpoint_dir: Path | None = None


@dataclass(frozen=True)
class KindSpec:
    """One kind of job. A kind with `execute` runs on a worker of `queue`; a pipeline kind has
    `start` and `advance` instead: it runs no code of its own and launches its steps."""

    name: str
    config: type[RunConfig]
    queue: str
    check: Callable[[Project, RunConfig], None]
    label: str
    execute: Callable[[Job, RunConfig, Reporter], Outcome] | None = None
    start: Callable[[Job], None] | None = None  # pipeline: called once its row is committed
    advance: Callable[[int], None] | None = None  # pipeline: look at the steps, launch the next or close
    steps: Callable[[RunConfig], list[str]] | None = None  # pipeline: the kinds of its steps, in order
    max_attempts: int = 2  # runs of one launch before a lost worker fails it for good
    time_limit_seconds: int = 6 * 3600  # a run still going after this is stopped and failed

    @property
    def pipeline(self) -> bool:
        return self.start is not None


_KINDS: dict[str, KindSpec] = {}


def register(spec: KindSpec) -> KindSpec:
    if spec.pipeline != (spec.advance is not None) or spec.pipeline == (spec.execute is not None):
        raise ValueError(f"kind {spec.name!r}: give either execute, or start and advance (a pipeline)")
    _KINDS[spec.name] = spec
    return spec


def spec_for(kind: str) -> KindSpec | None:
    return _KINDS.get(kind)


def all_kinds() -> dict[str, KindSpec]:
    """Every registered kind, in registration order."""
    return dict(_KINDS)
