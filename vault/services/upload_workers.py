"""The threads and the buffers that every upload served by one runtime shares.

The composition root builds one ``UploadWorkers`` per runtime. Both thread pools start their
threads on first use, so a runtime that serves no upload (a console command, a health
check) starts none; the interpreter joins the threads still there when the process exits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

# Threads that write parts and read objects back, shared by every upload of the process:
# no thread is started per request, and the store sees a bounded number of writes from one
# worker however many uploads it serves.
HELPER_THREADS = 8
# Verify passes a worker runs at once; more wait their turn. Each reads a whole object back,
# so a few at a time use the store and the processor well without crowding out requests.
VERIFIER_THREADS = 2


class BufferPool:
    """Large buffers reused across requests, so that a long upload allocates none per part.

    An upload moves gigabytes through a worker in part-sized pieces. Allocating and freeing
    megabytes per part, from whichever thread serves each request, leaves freed memory in
    the allocator's per-thread heaps, and the worker's resident size creeps up with every
    gigabyte; reused buffers keep it flat (performance target P4). Part buffers only ever
    hold ciphertext; the read buffer holds plaintext and is wiped before it is kept, so no
    request's plaintext lingers in memory for the next one.
    """

    def __init__(self, keep: int = 8) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._free: dict[int, list[bytearray]] = {}

    def take(self, size: int) -> bytearray:
        with self._lock:
            free = self._free.get(size)
            if free:
                return free.pop()
        return bytearray(size)

    def give(self, buffer: bytearray, *, wipe: bool = False) -> None:
        if wipe:
            memoryview(buffer)[:] = bytes(len(buffer))
        with self._lock:
            free = self._free.setdefault(len(buffer), [])
            # A buffer kept twice would be handed to two users at once and mix their data.
            if len(free) < self._keep and all(kept is not buffer for kept in free):
                free.append(buffer)


class UploadWorkers:
    """The helper threads, the verifier threads and the buffer pool of a runtime's uploads."""

    def __init__(self) -> None:
        self.buffers = BufferPool()
        self.helpers = ThreadPoolExecutor(
            max_workers=HELPER_THREADS, thread_name_prefix="upload-io"
        )
        # Separate from the helpers: a verify pass waits for helper reads, so sharing one
        # pool could leave every thread waiting for a read that never starts.
        self._verifiers = ThreadPoolExecutor(
            max_workers=VERIFIER_THREADS, thread_name_prefix="upload-verify"
        )
        self._lock = threading.Lock()
        self._verifying: set[Future[object]] = set()

    def verify_later(self, run: Callable[[], object]) -> None:
        """Run a verify pass on a verifier thread; ``finish`` waits for it."""
        with self._lock:
            future = self._verifiers.submit(run)
            self._verifying.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[object]) -> None:
        with self._lock:
            self._verifying.discard(future)

    def finish(self, timeout: float | None = None) -> bool:
        """Wait for the verify passes still running; True if none is left.

        For a graceful shutdown (and for tests): a pass cut short is not lost, since the
        lifecycle run verifies recordings left ``processing``, but finishing it here spares
        the owner the wait.
        """
        with self._lock:
            pending = set(self._verifying)
        _, left = wait(pending, timeout=timeout)
        return not left

    def shutdown(self) -> None:
        """Let the verify passes end, then stop every thread: the runtime is done uploading."""
        # The verifiers first: a pass still running hands its reads to the helpers.
        self._verifiers.shutdown(wait=True)
        self.helpers.shutdown(wait=True)
