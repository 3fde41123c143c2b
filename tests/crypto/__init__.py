"""Tests of the encrypted object format (vault.crypto) and shared helpers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from vault import crypto

RECORDING_ID = "0b7d5f5e-3c1a-4d8e-9f2a-6a1c2b3d4e5f"
OTHER_RECORDING_ID = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
SCHOOL_YEAR = "2025-2026"
OTHER_SCHOOL_YEAR = "2024-2025"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def boundary_lengths(chunk_size: int) -> list[int]:
    """0, 1, chunk−1, chunk, chunk+1 and k·chunk±1 for a few k."""
    lengths = {0, 1, chunk_size - 1, chunk_size, chunk_size + 1}
    for k in (2, 3, 5):
        lengths.update({k * chunk_size - 1, k * chunk_size, k * chunk_size + 1})
    return sorted(lengths)


def encrypt_pieces(
    plaintext: bytes,
    pieces: Sequence[int],
    *,
    chunk_size: int,
    resume_after: Iterable[int] = (),
    key: bytes = KEY,
    recording_id: str = RECORDING_ID,
    school_year: str = SCHOOL_YEAR,
) -> bytes:
    """Encrypt ``plaintext`` fed in ``pieces`` (sizes), serialising the state and
    resuming from it after every piece index in ``resume_after``."""
    assert sum(pieces) == len(plaintext)
    resume = set(resume_after)
    enc = crypto.Encryptor.start(
        key, recording_id, school_year, len(plaintext), chunk_size=chunk_size
    )
    out = [enc.header]
    offset = 0
    for number, size in enumerate(pieces):
        out.append(enc.feed(plaintext[offset : offset + size]))
        offset += size
        if number in resume:
            state = enc.to_bytes()
            enc = crypto.Encryptor.from_bytes(state, key, recording_id, school_year)
    out.append(enc.finish())
    return b"".join(out)


@dataclass
class Blob:
    """An object in memory behind a ``read(offset, length)`` that logs each read."""

    data: bytes
    reads: list[tuple[int, int]] = field(default_factory=list)

    def read(self, offset: int, length: int) -> bytes:
        assert offset >= 0
        assert length >= 0
        self.reads.append((offset, length))
        return self.data[offset : offset + length]


@dataclass
class Outcome:
    """What a consumer received before the iteration ended or raised."""

    plaintext: bytes
    error: Exception | None


def consume(pieces: Iterable[bytes]) -> Outcome:
    received: list[bytes] = []
    try:
        for piece in pieces:
            received.append(piece)
    except crypto.IntegrityError as exc:
        return Outcome(b"".join(received), exc)
    return Outcome(b"".join(received), None)


def open_and_read(
    obj: bytes,
    start: int = 0,
    end: int | None = None,
    *,
    key: bytes = KEY,
    recording_id: str = RECORDING_ID,
    school_year: str = SCHOOL_YEAR,
) -> Outcome:
    """Open ``obj`` and read a range the way the streaming path does."""
    blob = Blob(obj)

    def pieces() -> Iterator[bytes]:
        dec = crypto.Decryptor.open(key, recording_id, school_year, blob.read)
        stop = dec.plaintext_length if end is None else end
        yield from dec.read_range(start, stop, blob.read)

    return consume(pieces())


def stream_all(
    obj: bytes,
    piece: int = 7,
    *,
    key: bytes = KEY,
    recording_id: str = RECORDING_ID,
    school_year: str = SCHOOL_YEAR,
) -> Outcome:
    """Decrypt ``obj`` front to back, fed in ``piece``-byte pieces."""
    parts = [obj[i : i + piece] for i in range(0, len(obj), piece)]
    return consume(crypto.decrypt_stream(key, recording_id, school_year, parts))


def chunk_offsets(plaintext_length: int, chunk_size: int) -> list[tuple[int, int]]:
    """Object offsets [start, end) of every sealed chunk (ciphertext ‖ tag)."""
    count = crypto.chunk_count(plaintext_length, chunk_size)
    spans = []
    for index in range(count):
        start = crypto.HEADER_SIZE + index * (chunk_size + crypto.TAG_SIZE)
        body = min(chunk_size, plaintext_length - index * chunk_size)
        spans.append((start, start + body + crypto.TAG_SIZE))
    return spans
