"""No one person or view may hold more than a bounded share of a server process.

A stream request holds a server thread for as long as its body flows, and a browser's
player keeps one open for the whole lesson; an upload's PATCH holds one while its body
arrives. Without a bound, one signed-in person with a script could take every thread of
every worker and stop sign-in and uploads for the whole school. The slots are counted per
process, which is where the threads are: each worker of `recvault serve` gives a person at
most ``STREAMS_PER_USER`` streams (at most ``STREAMS_PER_VIEW`` on one view) and
``UPLOADS_PER_USER`` uploads at once; above that, 429 with ``Retry-After``.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator

from vault.services.errors import N_, TooManyRequests

# A player needs one request at a time, two while it seeks; a few more leave room for a
# second tab without letting one view crowd out others.
STREAMS_PER_VIEW = 3
STREAMS_PER_USER = 6
UPLOADS_PER_USER = 3


class TooManyAtOnce(TooManyRequests):
    message = N_("You have too many streams or uploads open at once. Close one and try again.")
    retry_after_seconds = 5


class Slot:
    """One held place; ``release`` frees it (once, whatever calls it how often)."""

    def __init__(self, slots: Slots, keys: tuple[Hashable, ...]) -> None:
        self._slots = slots
        self._keys = keys
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots._release(self._keys)


class Slots:
    """Counters of what each key holds in this process, each key with its own limit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: Counter[Hashable] = Counter()

    def take(self, limits: dict[Hashable, int]) -> Slot:
        """A slot counted against every key in ``limits``; 429 if any is at its limit."""
        with self._lock:
            if any(self._held[key] >= limit for key, limit in limits.items()):
                raise TooManyAtOnce()
            for key in limits:
                self._held[key] += 1
        return Slot(self, tuple(limits))

    def held(self, key: Hashable) -> int:
        with self._lock:
            return self._held[key]

    def _release(self, keys: tuple[Hashable, ...]) -> None:
        with self._lock:
            for key in keys:
                self._held[key] -= 1
                if self._held[key] <= 0:
                    del self._held[key]


class HoldingBody:
    """A response body that holds its slot until the server is done with it: when it is
    exhausted, or closed (a client that went away), even if it never started."""

    def __init__(self, body: Iterable[bytes], slot: Slot) -> None:
        self._body = body
        self._slot = slot

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._body
        finally:
            self._slot.release()

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._slot.release()
