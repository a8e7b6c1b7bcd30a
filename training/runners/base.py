"""What every runner shares. Runners take a config dataclass and plain paths and return plain
results; they know nothing of Django, so they run in a notebook or on a GPU box as well."""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable

# Device and precision are chosen once, in rewards.devices (rewards cannot import training);
# runners take them from here.
from rewards.devices import device, load_dtype, precision, trainer_precision, use_bf16  # noqa: F401


class ConfigError(ValueError):
    """A config value that cannot run; names the field and what to change."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Cancelled(Exception):
    """The run was asked to stop; raised at the next step boundary."""


class RunFailed(Exception):
    """A run that cannot go on, with a message a user can act on."""


@dataclasses.dataclass
class RunConfig:
    """Base of runner configs: built from a dict (a job's stored config) with unknown keys and
    wrong types refused by name, then checked by the subclass's `__post_init__`."""

    @classmethod
    def from_dict(cls, data: dict | None):
        data = dict(data or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(unknown[0], f"unknown field; known fields: {', '.join(sorted(fields))}")
        hints = typing.get_type_hints(cls)
        values = {}
        for name, value in data.items():
            values[name] = _coerce(name, value, hints[name])
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def describe(cls) -> list[dict]:
        """Fields, types and defaults, for launch forms and API docs."""
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            choices = f.metadata.get("choices")
            out.append({"name": f.name, "type": _type_name(hints[f.name]), "default": default,
                        "help": f.metadata.get("help", ""),
                        "choices": dict(choices) if isinstance(choices, dict) else
                        {value: "" for value in choices} if choices else None})
        return out


def _type_name(hint) -> str:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return " | ".join(_type_name(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"list[{_type_name(typing.get_args(hint)[0])}]"
    return getattr(hint, "__name__", str(hint))


def _coerce(name: str, value, hint):
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        hint = next(option for option in options if option is not type(None))
    if typing.get_origin(hint) is list:
        if isinstance(value, str):  # a form field: comma-separated
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, list):
            raise ConfigError(name, f"must be a list, got {value!r}")
        inner = typing.get_args(hint)[0]
        return [_coerce(name, item, inner) for item in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(name, f"must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | str | float):
            raise ConfigError(name, f"must be a whole number, got {value!r}")
        try:
            number = float(value)
        except (ValueError, OverflowError):
            raise ConfigError(name, f"must be a whole number, got {value!r}") from None
        if not math.isfinite(number) or number != int(number):
            raise ConfigError(name, f"must be a whole number, got {value!r}")
        return int(number)
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(name, f"must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(name, f"must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(name, "must be a finite number")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(name, f"must be text, got {value!r}")
        return value
    if hint is dict:
        if isinstance(value, str):
            import json

            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ConfigError(name, "must be a JSON object") from None
        if not isinstance(value, dict):
            raise ConfigError(name, f"must be an object of fields, got {value!r}")
        return value
    return value


def check(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ConfigError(field, message)


class Reporter:
    """How a runner talks back: progress, metrics, log lines, and whether to stop. The default
    does nothing, so a runner can be called from a notebook as it is."""

    def progress(self, fraction: float, message: str = "") -> None:
        pass

    def metric(self, step: int, name: str, value: float) -> None:
        pass

    def log(self, line: str) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def checkpoint(self) -> None:
        """Called at step boundaries: raise Cancelled when asked to stop."""
        if self.should_stop():
            raise Cancelled("cancelled at a step boundary")


class Scaled(Reporter):
    """A reporter for a part of a run: progress mapped into [start, start + share]; metrics,
    log lines and stop requests pass through."""

    def __init__(self, inner: Reporter, start: float, share: float):
        self.inner, self.start, self.share = inner, start, share

    def progress(self, fraction, message=""):
        self.inner.progress(self.start + self.share * fraction, message)

    def metric(self, step, name, value):
        self.inner.metric(step, name, value)

    def log(self, line):
        self.inner.log(line)

    def should_stop(self):
        return self.inner.should_stop()


def trainer_callback(reporter: Reporter, progress: Callable, *, step_offset: int = 0,
                     names: tuple[str, ...] | None = None):
    """A transformers TrainerCallback that forwards a Trainer's events to a Reporter.

    progress(state) gives (fraction, message) after each step; logged numbers become metrics
    "train/NAME" at step_offset + global_step (all but epoch and eval_*, or only `names`). A stop
    request ends training at the next step boundary and sets the callback's stop_asked.
    """
    from transformers import TrainerCallback

    def wanted(name: str) -> bool:
        return name in names if names else name != "epoch" and not name.startswith("eval_")

    class Report(TrainerCallback):
        stop_asked = False

        def on_step_end(self, args, state, control, **kwargs):
            reporter.progress(*progress(state))
            if reporter.should_stop():
                self.stop_asked = True
                control.should_training_stop = True
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            for name, value in (logs or {}).items():
                if wanted(name) and isinstance(value, int | float) and not isinstance(value, bool):
                    reporter.metric(step_offset + state.global_step, f"train/{name}", float(value))

    return Report()


class PrintReporter(Reporter):
    def __init__(self, out: Callable[[str], None] = print):
        self.out = out

    def progress(self, fraction, message=""):
        self.out(f"{fraction:6.1%} {message}")

    def log(self, line):
        self.out(line)


def set_threads(threads: int) -> int:
    """Torch threads for this process. 0: one fewer than the cores (at least 1): measured on 2
    shared cores, 2 threads ran several times slower than 1 (see shared notes/cpu-costs.md)."""
    import torch

    if threads <= 0:
        threads = max(1, (os.cpu_count() or 2) - 1)
    torch.set_num_threads(threads)
    return threads
