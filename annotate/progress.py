"""Progress on the command line (import_data, export_data, run_job --wait): a tqdm bar when the
output is a terminal, plain lines when it is not (a log file, CI, a pipe), so logs stay readable."""

from __future__ import annotations

import sys
import time
from typing import IO


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class CommandProgress:
    """`update(done, note)` with `done` out of `total` (unit "%": out of 100). On a terminal a tqdm
    bar; otherwise a line each time another tenth is done or the note changes, at most one every
    `every` seconds, and always the last state."""

    def __init__(self, total: float, desc: str, *, stream: IO[str] | None = None, unit: str = "",
                 scale: bool = False, every: float = 5.0, terminal: bool | None = None):
        self.stream = getattr(stream, "_out", stream) or sys.stderr  # Django's OutputWrapper adds newlines
        self.total, self.desc, self.unit, self.scale, self.every = total, desc, unit, scale, every
        self.done, self.note = 0.0, ""
        self.bar = None
        self.shown, self.shown_at = None, float("-inf")
        if _isatty(self.stream) if terminal is None else terminal:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit or "it", unit_scale=scale, file=self.stream,
                            dynamic_ncols=True, mininterval=0.2,
                            bar_format="{l_bar}{bar}| [{elapsed}<{remaining}] {postfix}" if unit == "%" else None)

    def advance(self, amount: float, note: str = "") -> None:
        self.update(self.done + amount, note or self.note)

    def update(self, done: float, note: str = "") -> None:
        self.done, self.note = (min(done, self.total) if self.total else done), note
        if self.bar is not None:
            self.bar.n = self.done
            self.bar.set_postfix_str(note, refresh=False)
            self.bar.refresh()
            return
        now = time.monotonic()
        final = bool(self.total) and self.done >= self.total
        if self._state() != self.shown and (now - self.shown_at >= self.every or final):
            self._print()
            self.shown_at = now

    def _state(self) -> tuple:
        return (int(10 * self.done / self.total) if self.total else int(self.done), self.note)

    def _print(self) -> None:
        if self.unit == "%":
            amount = f"{self.done:.0f}%"
        else:
            share = f"{self.done / self.total:.0%} " if self.total else ""
            amount = f"{share}({self._amount(self.done)} of {self._amount(self.total)} {self.unit})"
        print(f"{self.desc}: {amount} {self.note}".rstrip(), file=self.stream, flush=True)
        self.shown = self._state()

    def _amount(self, value: float) -> str:
        if not self.scale:
            return f"{value:,.0f}"
        for prefix in ("", "k", "M", "G"):
            if abs(value) < 1000:
                return f"{value:.1f}{prefix}"
            value /= 1000
        return f"{value:.1f}T"

    def close(self) -> None:
        """The last state is always shown."""
        if self.bar is not None:
            self.bar.close()
        elif self._state() != self.shown:
            self._print()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ReadProgress:
    """A binary file whose reads move a progress display: handed to a reader that calls read()."""

    def __init__(self, raw: IO[bytes], progress: CommandProgress):
        self.raw, self.progress = raw, progress

    def read(self, size: int = -1) -> bytes:
        chunk = self.raw.read(size)
        self.progress.advance(len(chunk))
        return chunk

    def __getattr__(self, name):
        return getattr(self.raw, name)
