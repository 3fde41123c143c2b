"""Keeping a long-running worker's resident memory flat (performance target P4).

glibc serves a request for more than ``M_MMAP_THRESHOLD`` bytes with its own mapping and
unmaps it on free. By default the threshold is dynamic: the first time such a mapping is
freed, glibc raises the threshold to that size, and from then on blocks of that size come
from its heaps instead. A gunicorn worker serves requests from many threads, each with its
own heap (arena), so every part-sized buffer or database blob that a thread once held stays
resident in that thread's heap after it is freed, and the worker's size climbs with the
number of threads that ever served an upload.

Setting the threshold explicitly turns the dynamic adjustment off: blocks above it are
always mapped and returned to the system when freed. The value keeps the megabyte-sized
read pieces of streams and uploads (reused at a high rate) on the heap, and maps what is
larger: upload parts, the ciphertext tail of an upload read from or written to the
database, and the bodies the S3 client builds around them.
"""

from __future__ import annotations

import ctypes

# mallopt's parameter number for the threshold (malloc.h: #define M_MMAP_THRESHOLD -3).
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 2 * 1024 * 1024


def map_large_blocks(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Pin glibc's mmap threshold; False where the C library is not glibc (nothing changes).

    Called in the server's master process before it forks its workers: the setting is part
    of the allocator's state, which each worker inherits.
    """
    try:
        # The symbols already loaded into the interpreter, the C library's among them.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False  # musl and other C libraries without mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))
