"""Tampering is detected before any plaintext of the tampered chunk is released."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from vault import crypto
from vault.crypto import aead

from . import (
    KEY,
    OTHER_KEY,
    OTHER_RECORDING_ID,
    OTHER_SCHOOL_YEAR,
    RECORDING_ID,
    SCHOOL_YEAR,
    Blob,
    Outcome,
    chunk_offsets,
    open_and_read,
    stream_all,
)

CHUNK = 16
LENGTH = 3 * CHUNK + 5  # chunks of 16, 16, 16 and 5 bytes
PLAINTEXT = random.Random(1).randbytes(LENGTH)
OBJ = crypto.encrypt_bytes(KEY, RECORDING_ID, SCHOOL_YEAR, PLAINTEXT, chunk_size=CHUNK)
SPANS = chunk_offsets(LENGTH, CHUNK)
FINAL = len(SPANS) - 1


def _chunks(obj: bytes = OBJ) -> list[bytes]:
    return [obj[a:b] for a, b in SPANS]


def _assemble(chunks: list[bytes], header: bytes = OBJ[: crypto.HEADER_SIZE]) -> bytes:
    return header + b"".join(chunks)


def _flip(obj: bytes, position: int, bit: int = 0) -> bytes:
    data = bytearray(obj)
    data[position] ^= 1 << bit
    return bytes(data)


def _assert_refused(outcome: Outcome, released: int = 0) -> None:
    """IntegrityError, and nothing but the first ``released`` verified bytes came out."""
    assert isinstance(outcome.error, crypto.IntegrityError)
    assert outcome.plaintext == PLAINTEXT[:released]


# Every region of the object, as (name, first byte, end) ranges.
_HEADER_FIELDS = [
    ("magic", 0, 4),
    ("version", 4, 5),
    ("algorithm", 5, 6),
    ("chunk size", 6, 10),
    ("plaintext length", 10, 18),
    ("salt", 18, 50),
    ("commitment", 50, 82),
]
_REGIONS: list[tuple[str, int, int, int | None]] = [
    (name, a, b, None) for name, a, b in _HEADER_FIELDS
]
for _index, (_a, _b) in enumerate(SPANS):
    _REGIONS.append((f"chunk {_index} body", _a, _b - crypto.TAG_SIZE, _index))
    _REGIONS.append((f"chunk {_index} tag", _b - crypto.TAG_SIZE, _b, _index))


def test_regions_cover_the_whole_object() -> None:
    covered = sorted((a, b) for _, a, b, _ in _REGIONS if b > a)
    assert covered[0][0] == 0
    assert covered[-1][1] == len(OBJ)
    assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(covered))
    assert _HEADER_FIELDS[-1][2] == crypto.HEADER_SIZE


@pytest.mark.parametrize(
    ("start", "end", "chunk"),
    [(a, b, c) for _, a, b, c in _REGIONS if b > a],
    ids=[name for name, a, b, _ in _REGIONS if b > a],
)
def test_every_flipped_bit_is_refused(start: int, end: int, chunk: int | None) -> None:
    for position in range(start, end):
        for bit in range(8):
            tampered = _flip(OBJ, position, bit)
            # Opening verifies the header, then the final chunk; a range then
            # releases only chunks that verified before the bad one.
            ranged = 0 if chunk is None or chunk == FINAL else chunk * CHUNK
            _assert_refused(open_and_read(tampered), ranged)
            # Reading front to back releases the verified chunks before it.
            streamed = 0 if chunk is None else chunk * CHUNK
            _assert_refused(stream_all(tampered), streamed)


@settings(max_examples=100, deadline=None)
@given(position=st.integers(0, len(OBJ) - 1), bit=st.integers(0, 7), piece=st.integers(1, 64))
def test_a_random_flipped_bit_never_releases_its_chunk(position: int, bit: int, piece: int) -> None:
    tampered = _flip(OBJ, position, bit)
    chunk = next((i for i, (a, b) in enumerate(SPANS) if a <= position < b), None)
    streamed = stream_all(tampered, piece)
    _assert_refused(streamed, 0 if chunk is None else chunk * CHUNK)
    # Any range that does not include the bad chunk still reads correctly
    # once the object opened; any range that does is refused.
    if chunk is not None and chunk != FINAL:
        blob = Blob(tampered)
        dec = crypto.Decryptor.open(KEY, RECORDING_ID, SCHOOL_YEAR, blob.read)
        with pytest.raises(crypto.IntegrityError):
            b"".join(dec.read_range(chunk * CHUNK, chunk * CHUNK + 1, blob.read))


def test_swapped_chunks_are_refused() -> None:
    c = _chunks()
    swapped = _assemble([c[1], c[0], c[2], c[3]])
    _assert_refused(open_and_read(swapped))
    _assert_refused(stream_all(swapped))


def test_a_non_final_chunk_moved_to_the_end_is_refused() -> None:
    c = _chunks()
    _assert_refused(open_and_read(_assemble([c[0], c[1], c[3], c[2]])))


def test_duplicated_chunk_is_refused() -> None:
    c = _chunks()
    duplicated = _assemble([c[0], c[1], c[1], c[2], c[3]])
    _assert_refused(open_and_read(duplicated))
    _assert_refused(open_and_read(duplicated, 0, CHUNK))
    _assert_refused(stream_all(duplicated), 2 * CHUNK)


def test_dropped_chunk_is_refused() -> None:
    c = _chunks()
    dropped = _assemble([c[0], c[2], c[3]])
    _assert_refused(open_and_read(dropped))
    _assert_refused(open_and_read(dropped, 0, CHUNK))
    _assert_refused(stream_all(dropped), CHUNK)


@pytest.mark.parametrize("keep", [0, 1, 2, 3])
def test_truncation_at_a_chunk_boundary_is_caught_by_a_range_not_touching_the_end(
    keep: int,
) -> None:
    truncated = _assemble(_chunks()[:keep])
    # The range [0, 16) lives wholly in chunk 0, which is intact when keep > 0.
    _assert_refused(open_and_read(truncated, 0, CHUNK))
    _assert_refused(stream_all(truncated), keep * CHUNK)
    # A handle built from the header alone refuses to decrypt a span until the
    # end has been verified, and the truncated end does not verify.
    dec = crypto.Decryptor.from_header(truncated, KEY, RECORDING_ID, SCHOOL_YEAR)
    with pytest.raises(ValueError, match="verify_end"):
        dec.decrypt_span(0, CHUNK, [truncated[SPANS[0][0] : SPANS[0][1]]])
    with pytest.raises(crypto.IntegrityError):
        dec.verify_end(Blob(truncated).read)


def test_truncation_inside_the_header_is_refused() -> None:
    for size in (0, 1, crypto.HEADER_SIZE - 1):
        _assert_refused(open_and_read(OBJ[:size]))
        _assert_refused(stream_all(OBJ[:size]))


@pytest.mark.parametrize("extra", [b"\x00", b"garbage", OBJ[-crypto.TAG_SIZE :]])
def test_appended_bytes_are_refused(extra: bytes) -> None:
    extended = OBJ + extra
    _assert_refused(open_and_read(extended))
    _assert_refused(open_and_read(extended, 0, 1))
    # Front to back, the final chunk is held back until the input ends, so the
    # extension is refused before the final chunk's plaintext comes out.
    _assert_refused(stream_all(extended, piece=1000), FINAL * CHUNK)
    _assert_refused(stream_all(extended, piece=1), FINAL * CHUNK)


def test_span_with_extra_bytes_is_refused_before_its_last_chunk() -> None:
    blob = Blob(OBJ)
    dec = crypto.Decryptor.open(KEY, RECORDING_ID, SCHOOL_YEAR, blob.read)
    cstart, cend = dec.ciphertext_range(0, 2 * CHUNK)
    outcome = Outcome(b"", None)
    try:
        outcome = Outcome(b"".join(dec.decrypt_span(0, 2 * CHUNK, [OBJ[cstart : cend + 1]])), None)
    except crypto.IntegrityError as exc:
        outcome = Outcome(b"", exc)
    _assert_refused(outcome)
    pieces = dec.decrypt_span(0, 2 * CHUNK, [OBJ[cstart : cend - 1]])
    with pytest.raises(crypto.IntegrityError):
        b"".join(pieces)


@pytest.mark.parametrize("other_key", [KEY, OTHER_KEY], ids=["same key", "other key"])
def test_chunk_spliced_from_another_object_is_refused(other_key: bytes) -> None:
    other = crypto.encrypt_bytes(other_key, RECORDING_ID, SCHOOL_YEAR, PLAINTEXT, chunk_size=CHUNK)
    theirs = _chunks(other)
    for index in range(len(SPANS)):
        mine = _chunks()
        mine[index] = theirs[index]
        spliced = _assemble(mine)
        released = 0 if index == FINAL else index * CHUNK
        _assert_refused(open_and_read(spliced), released)
        _assert_refused(stream_all(spliced), index * CHUNK)
    # Their header on our chunks: the header verifies under the same key, but
    # no chunk does, because each object's chunk key comes from its own salt.
    hybrid = _assemble(_chunks(), header=other[: crypto.HEADER_SIZE])
    _assert_refused(open_and_read(hybrid))
    _assert_refused(stream_all(hybrid))


class _DecryptSpy:
    """Stands in for AESGCM and records every decryption attempt."""

    calls: list[bytes] = []  # noqa: RUF012

    def __init__(self, key: bytes) -> None:
        self._inner = AESGCM(key)

    def encrypt(self, nonce: bytes, data: Any, aad: Any) -> bytes:
        return self._inner.encrypt(nonce, data, aad)

    def decrypt(self, nonce: bytes, data: Any, aad: Any) -> bytes:
        _DecryptSpy.calls.append(nonce)
        return self._inner.decrypt(nonce, data, aad)


@pytest.mark.parametrize(
    ("label", "opener"),
    [
        ("wrong key", lambda obj: open_and_read(obj, key=OTHER_KEY)),
        ("wrong recording id", lambda obj: open_and_read(obj, recording_id=OTHER_RECORDING_ID)),
        ("wrong school year", lambda obj: open_and_read(obj, school_year=OTHER_SCHOOL_YEAR)),
        ("wrong key, streamed", lambda obj: stream_all(obj, key=OTHER_KEY)),
    ],
)
def test_wrong_key_or_context_fails_at_the_commitment_check(
    monkeypatch: pytest.MonkeyPatch, label: str, opener: Callable[[bytes], Outcome]
) -> None:
    monkeypatch.setattr(aead, "AESGCM", _DecryptSpy)
    _DecryptSpy.calls = []
    outcome = opener(OBJ)
    _assert_refused(outcome)
    assert "commitment" in str(outcome.error), label
    assert _DecryptSpy.calls == [], "no chunk may be decrypted before the commitment verifies"


def _with_header_field(offset: int, value: bytes) -> bytes:
    return OBJ[:offset] + value + OBJ[offset + len(value) :]


@pytest.mark.parametrize(
    ("offset", "value", "reason"),
    [
        (4, b"\x02", "version"),
        (4, b"\x00", "version"),
        (5, b"\x02", "algorithm"),
        (5, b"\x00", "algorithm"),
        (6, (32).to_bytes(4, "big"), "commitment"),  # a valid but different chunk size
        (6, (15).to_bytes(4, "big"), "chunk size"),
        (6, (65537).to_bytes(4, "big"), "chunk size"),
        (10, (LENGTH - 1).to_bytes(8, "big"), "commitment"),
        (10, (LENGTH + 1).to_bytes(8, "big"), "commitment"),
        (10, (1 << 63).to_bytes(8, "big"), "length"),
        (0, b"RVLU", "vault object"),
    ],
)
def test_changed_header_fields_are_refused(offset: int, value: bytes, reason: str) -> None:
    tampered = _with_header_field(offset, value)
    for outcome in (open_and_read(tampered), stream_all(tampered)):
        _assert_refused(outcome)
        assert reason in str(outcome.error)


# --------------------------------------------------------------------------
# The serialised encryption state is authenticated too.


def _state() -> bytes:
    enc = crypto.Encryptor.start(KEY, RECORDING_ID, SCHOOL_YEAR, LENGTH, chunk_size=CHUNK)
    enc.feed(PLAINTEXT[:21])
    return enc.to_bytes()


def test_every_flipped_bit_of_a_state_is_refused() -> None:
    state = _state()
    for position in range(len(state)):
        for bit in (0, 7):
            with pytest.raises(crypto.IntegrityError):
                crypto.Encryptor.from_bytes(
                    _flip(state, position, bit), KEY, RECORDING_ID, SCHOOL_YEAR
                )


@pytest.mark.parametrize(
    ("key", "recording_id", "school_year"),
    [
        (OTHER_KEY, RECORDING_ID, SCHOOL_YEAR),
        (KEY, OTHER_RECORDING_ID, SCHOOL_YEAR),
        (KEY, RECORDING_ID, OTHER_SCHOOL_YEAR),
    ],
)
def test_state_does_not_resume_under_another_key_or_context(
    key: bytes, recording_id: str, school_year: str
) -> None:
    with pytest.raises(crypto.IntegrityError):
        crypto.Encryptor.from_bytes(_state(), key, recording_id, school_year)


def test_truncated_or_extended_state_is_refused() -> None:
    state = _state()
    for variant in (state[:-1], state + b"\x00", state[:10], b""):
        with pytest.raises(crypto.IntegrityError):
            crypto.Encryptor.from_bytes(variant, KEY, RECORDING_ID, SCHOOL_YEAR)
