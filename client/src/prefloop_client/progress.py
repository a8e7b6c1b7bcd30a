"""Progress for long calls: a tqdm bar on a terminal when tqdm is installed, else plain lines on
stderr (one per change, so a log file or CI output stays readable), or nothing when turned off."""

from __future__ import annotations

import sys
import time


class Progress:
    """`update(done, note)` with `done` out of `total` (a fraction when total is 1.0)."""

    def __init__(self, total: float, desc: str, *, enabled: bool = True, unit: str = "it", stream=None):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.bar = None
        self.last_line = ""
        self.last_time = 0.0
        if enabled and _isatty(self.stream):
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True,
                                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}] {postfix}"
                                if unit != "%" else "{l_bar}{bar}| [{elapsed}] {postfix}")

    def update(self, done: float, note: str = "") -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.n = done
            self.bar.set_postfix_str(note, refresh=False)
            self.bar.refresh()
            return
        shown = f"{done:.0%}" if self.unit == "%" else f"{done:g}/{self.total:g} {self.unit}"
        line = f"{self.desc}: {shown} {note}".rstrip()
        now = time.monotonic()
        # Plain lines: each change, at most one every 2 s unless it is the end.
        if line != self.last_line and (now - self.last_time >= 2.0 or done >= self.total):
            print(line, file=self.stream, flush=True)
            self.last_line, self.last_time = line, now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
