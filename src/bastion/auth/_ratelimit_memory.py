"""The in-process rate-limit store: ``limits``' memory store without its timer thread.

``limits``' memory store expires counters lazily when they are read, and also starts a
``threading.Timer`` every 10 ms while requests arrive to sweep expired entries. A thread
started per burst costs more than the limit check itself; here the hub sweeps on the
request path instead, every ``sweep_seconds``, which bounds memory the same way.
"""

from __future__ import annotations

import time

from limits.storage import MemoryStorage

__all__ = ["QuietMemoryStorage"]


class QuietMemoryStorage(MemoryStorage):
    """A memory store swept by :meth:`sweep`, never by a background thread."""

    def __init__(self) -> None:
        super().__init__("memory://")
        self.timer.cancel()

    def _MemoryStorage__schedule_expiry(self) -> None:
        """No timer thread: :meth:`sweep` does the work."""

    def sweep(self, now: float | None = None) -> int:
        """Drop expired counters and emptied moving windows; how many keys went."""
        now = time.time() if now is None else now
        dropped = 0
        for key in [k for k, at in list(self.expirations.items()) if at <= now]:
            with self.locks[key]:
                if self.expirations.get(key, now + 1) <= now:
                    self.storage.pop(key, None)
                    self.expirations.pop(key, None)
                    dropped += 1
            self.locks.pop(key, None)
        events = self.events
        for key in [k for k, e in list(events.items()) if not e or e[0].expiry <= now]:
            with self.locks[key]:
                entries = events.get(key)
                if entries is not None and (not entries or entries[0].expiry <= now):
                    del events[key]
                    dropped += 1
            self.locks.pop(key, None)
        return dropped
