"""AES-256-GCM as the object format and key wrapping both use it.

The sizes of its key, nonce and tag, the one source of salts and nonces, and the
error raised for anything that does not verify.
"""

from __future__ import annotations

import os
from typing import Final

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# AESGCM is exported: the other modules call it as ``aead.AESGCM``, looked up
# here at call time, so a test standing in for it sees every key the package
# uses, for chunks, carry-overs and wrapped keys alike.
__all__ = [
    "AESGCM",
    "KEY_SIZE",
    "NONCE_SIZE",
    "TAG_SIZE",
    "BytesLike",
    "IntegrityError",
    "as_view",
    "check_key",
    "new_key",
    "random_bytes",
]

BytesLike = bytes | bytearray | memoryview

KEY_SIZE: Final = 32
TAG_SIZE: Final = 16
NONCE_SIZE: Final = 12


class IntegrityError(Exception):
    """The ciphertext, its header or its context does not verify.

    Raised alike for tampering, truncation, extension, reordering, a wrong key
    and a wrong recording id or school year. Treat every case the same way:
    the message helps a log reader, not control flow. No plaintext of a chunk
    that failed to verify is ever released before it is raised.
    """


def random_bytes(size: int) -> bytes:
    # The single source of salts and nonces, looked up here at call time by
    # every module of the package. Known-answer tests replace it to make output
    # reproducible; no public parameter lets a caller choose a salt or nonce,
    # so no caller can repeat one by mistake.
    return os.urandom(size)


def new_key() -> bytes:
    """Return a fresh random 256-bit key."""
    return os.urandom(KEY_SIZE)


def check_key(key: bytes, what: str) -> None:
    if len(key) != KEY_SIZE:
        raise ValueError(f"{what} must be {KEY_SIZE} bytes")


def as_view(data: BytesLike) -> memoryview:
    # A flat byte view, so lengths and slices count bytes whatever buffer the
    # caller passed, without copying it.
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")
