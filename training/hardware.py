"""Whether this machine has a GPU, asked cheaply (no torch import in the web process), so the
pages can name a "gpu" queue honestly where every job runs on the CPU."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def has_gpu() -> bool:
    """PREFLOOP_DEVICE decides when set (as for the runners); else an NVIDIA or ROCm device node."""
    chosen = os.environ.get("PREFLOOP_DEVICE", "").strip().lower()
    if chosen:
        return chosen.startswith(("cuda", "gpu", "rocm"))
    return any(Path(node).exists() for node in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd"))


def queue_label(queue: str) -> str:
    """The queue's name as the pages say it: "gpu (runs on CPU here)" on a machine without one."""
    if queue == "gpu" and not has_gpu():
        return "gpu (runs on CPU here)"
    return queue
