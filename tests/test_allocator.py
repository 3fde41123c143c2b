"""The server's allocator setting returns freed multi-megabyte buffers to the system.

Run in fresh interpreters, since the setting is process-wide: threads take and free
part-sized buffers, as upload requests do from gunicorn's thread pool, and the resident
size afterwards is compared with the size before.
"""

from __future__ import annotations

import subprocess
import sys

_SCENARIO = """
import os, sys, threading
from tests.support.processes import resident_mib
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
    threads = [threading.Thread(target=serve_requests) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
print(resident_mib(os.getpid()) - before)
"""


def _growth_mib(mode: str) -> float:
    result = subprocess.run(
        [sys.executable, "-c", _SCENARIO, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return float(result.stdout.strip())


def test_freed_part_buffers_leave_the_worker() -> None:
    pinned = _growth_mib("pinned")
    default = _growth_mib("default")
    # The scenario reproduces the problem: with glibc's dynamic threshold, the freed
    # buffers stay resident in the threads' heaps.
    assert default >= 3, default
    assert pinned < 1.5, pinned
