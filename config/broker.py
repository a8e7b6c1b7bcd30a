"""The embedded default's Celery broker: kombu's filesystem transport, with each message made
visible only once it is whole.

kombu's own `_put` creates `<time>_<uuid>.<queue>.msg` and then writes it (the lock it takes is
advisory, and `_get` never takes it), so a worker polling at that instant moves the empty file out
of the queue, fails to parse it and stops: "Unrecoverable error: JSONDecodeError" in the worker
log, the message lost, and every job after it left queued with no worker to run it. Seen in a
loop bench run (docs/benchmarks.md, "Does a round learn?"), at a beat tick while a round's step
was being queued. Here a message is written under a name `_get` does not read (no `.msg` suffix)
and renamed into place, which is atomic on one filesystem.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        """Put `payload` onto `queue`: written to a hidden name, then renamed to its message name."""
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f"partial-{uuid.uuid4()}")
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
