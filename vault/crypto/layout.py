"""The object layout: the 82-byte header, where each chunk lies and which nonce seals it.

``docs/format.md``, "Object layout": the header fields, the chunk count and
object length they fix, the nonce of each chunk, and the object bytes that
cover a plaintext range.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from vault.crypto.aead import NONCE_SIZE, TAG_SIZE, BytesLike, IntegrityError

MAGIC: Final = b"RVLT"
FORMAT_VERSION: Final = 1
ALGORITHM_AES256GCM_HKDF_SHA256: Final = 1
SALT_SIZE: Final = 32
COMMITMENT_SIZE: Final = 32
MIN_CHUNK_SIZE: Final = 16
MAX_CHUNK_SIZE: Final = 65536
DEFAULT_CHUNK_SIZE: Final = 65536
# 256 TiB: far beyond any lesson recording, and small enough that every
# chunk index fits the 88-bit counter of the nonce with room to spare.
MAX_PLAINTEXT_LENGTH: Final = 1 << 48

# magic, version, algorithm, chunk size, plaintext length, salt, commitment
_HEADER = struct.Struct(">4sBBIQ32s32s")
HEADER_SIZE: Final = _HEADER.size
_PARAMS_SIZE: Final = HEADER_SIZE - COMMITMENT_SIZE


def check_chunk_size(chunk_size: int) -> None:
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size must be {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE} bytes")


def check_length(plaintext_length: int) -> None:
    if not 0 <= plaintext_length <= MAX_PLAINTEXT_LENGTH:
        raise ValueError(f"plaintext length must be 0..{MAX_PLAINTEXT_LENGTH}")


@dataclass(frozen=True, slots=True)
class Header:
    """The parsed header. Its fields are untrusted until the commitment verifies."""

    chunk_size: int
    plaintext_length: int
    salt: bytes
    commitment: bytes
    version: int = FORMAT_VERSION
    algorithm: int = ALGORITHM_AES256GCM_HKDF_SHA256

    @classmethod
    def parse(cls, data: BytesLike) -> Header:
        """Parse the first HEADER_SIZE bytes of an object; IntegrityError if malformed."""
        if len(data) < HEADER_SIZE:
            raise IntegrityError("object shorter than its header")
        magic, version, algorithm, chunk_size, length, salt, commitment = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise IntegrityError("not a vault object")
        if version != FORMAT_VERSION:
            raise IntegrityError("unsupported format version")
        if algorithm != ALGORITHM_AES256GCM_HKDF_SHA256:
            raise IntegrityError("unsupported algorithm")
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise IntegrityError("chunk size out of range")
        if length > MAX_PLAINTEXT_LENGTH:
            raise IntegrityError("plaintext length out of range")
        return cls(
            chunk_size=chunk_size,
            plaintext_length=length,
            salt=salt,
            commitment=commitment,
            version=version,
            algorithm=algorithm,
        )

    def params_bytes(self) -> bytes:
        """The header bytes before the commitment; every one of them feeds the KDF."""
        return self.to_bytes()[:_PARAMS_SIZE]

    def to_bytes(self) -> bytes:
        return _HEADER.pack(
            MAGIC,
            self.version,
            self.algorithm,
            self.chunk_size,
            self.plaintext_length,
            self.salt,
            self.commitment,
        )

    @property
    def chunk_count(self) -> int:
        return max(1, -(-self.plaintext_length // self.chunk_size))

    @property
    def ciphertext_length(self) -> int:
        return HEADER_SIZE + self.plaintext_length + TAG_SIZE * self.chunk_count


def chunk_count(plaintext_length: int, chunk_size: int) -> int:
    """Number of chunks: at least one (an empty object has one empty final chunk)."""
    check_chunk_size(chunk_size)
    check_length(plaintext_length)
    return max(1, -(-plaintext_length // chunk_size))


def ciphertext_length(plaintext_length: int, chunk_size: int) -> int:
    """Total object size in bytes, header included."""
    return HEADER_SIZE + plaintext_length + TAG_SIZE * chunk_count(plaintext_length, chunk_size)


def ciphertext_range(
    start: int, end: int, *, plaintext_length: int, chunk_size: int
) -> tuple[int, int]:
    """Object byte range [cstart, cend) of the chunks covering plaintext [start, end).

    An empty plaintext range maps to an empty ciphertext range.
    """
    count = chunk_count(plaintext_length, chunk_size)
    if not 0 <= start <= end <= plaintext_length:
        raise ValueError("range outside the plaintext")
    if start == end:
        return (HEADER_SIZE, HEADER_SIZE)
    stride = chunk_size + TAG_SIZE
    first = start // chunk_size
    last = (end - 1) // chunk_size
    cstart = HEADER_SIZE + first * stride
    if last == count - 1:
        cend = HEADER_SIZE + plaintext_length + TAG_SIZE * count
    else:
        cend = HEADER_SIZE + (last + 1) * stride
    return (cstart, cend)


def chunk_nonce(index: int, last: bool) -> bytes:
    # 88-bit big-endian chunk index ‖ last-chunk flag (STREAM): a chunk only
    # verifies at its own position, and only the real final chunk verifies as
    # final, so reordering, truncation and extension all fail.
    return ((index << 8) | last).to_bytes(NONCE_SIZE, "big")
