"""The server's allocator setting returns freed multi-megabyte buffers to the system.

Run in fresh interpreters, since the setting is process-wide: threads take and free
part-sized buffers, as upload requests do from gunicorn's thread pool, and the resident
size afterwards is compared with the size before.
"""

from __future__ import annotations

from tests.support.processes import measure_in_fresh_interpreter

_SCENARIO = """
import os, sys
from tests.support.processes import resident_mib, run_threads
from vault import allocator

if sys.argv[1] == "pinned" and not allocator.map_large_blocks():
    raise SystemExit("mallopt refused")
before = resident_mib(os.getpid())

def serve_requests():
    for _ in range(4):
        part = bytearray(5 << 20)
        part[::4096] = b"x" * len(part[::4096])  # touch every page, as a filled part does
        del part
        tail = bytes(3 << 20)
        del tail

for _ in range(2):
    run_threads(serve_requests, 16)
print(resident_mib(os.getpid()) - before)
"""


def _growth_mib(mode: str) -> float:
    return measure_in_fresh_interpreter(_SCENARIO, mode, timeout=60)


def test_freed_part_buffers_leave_the_worker() -> None:
    pinned = _growth_mib("pinned")
    default = _growth_mib("default")
    # The scenario reproduces the problem: with glibc's dynamic threshold, the freed
    # buffers stay resident in the threads' heaps.
    assert default >= 3, default
    assert pinned < 1.5, pinned
