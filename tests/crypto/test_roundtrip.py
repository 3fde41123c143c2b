"""Round trips, resumption and random access of the encrypted object format."""

from __future__ import annotations

import itertools
import random
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vault import crypto

from . import (
    KEY,
    RECORDING_ID,
    SCHOOL_YEAR,
    Blob,
    boundary_lengths,
    chunk_offsets,
    encrypt_pieces,
    open_and_read,
    stream_all,
)


def _pattern(length: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(length)


@st.composite
def _cuts(draw: st.DrawFn, length: int) -> list[int]:
    """Piece sizes summing to ``length``: random cut points, 1-byte pieces included."""
    points = draw(st.lists(st.integers(0, length), max_size=24))
    bounds = [0, *sorted(points), length]
    return [b - a for a, b in itertools.pairwise(bounds)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip_boundary_lengths_in_random_pieces(data: st.DataObject) -> None:
    chunk_size = data.draw(st.sampled_from([16, 17, 64, 1000]), label="chunk_size")
    length = data.draw(st.sampled_from(boundary_lengths(chunk_size)), label="length")
    plaintext = data.draw(st.binary(min_size=length, max_size=length))
    pieces = data.draw(_cuts(length), label="pieces")
    resume_after = data.draw(st.sets(st.integers(0, max(0, len(pieces) - 1))), label="resume_after")

    obj = encrypt_pieces(plaintext, pieces, chunk_size=chunk_size, resume_after=resume_after)

    assert len(obj) == crypto.ciphertext_length(length, chunk_size)
    assert open_and_read(obj).plaintext == plaintext
    assert stream_all(obj, piece=data.draw(st.integers(1, 200))).plaintext == plaintext


@pytest.mark.parametrize("length", boundary_lengths(crypto.DEFAULT_CHUNK_SIZE)[:9])
def test_round_trip_default_chunk_size(length: int) -> None:
    rng = random.Random(length)
    plaintext = _pattern(length, length)
    pieces: list[int] = []
    left = length
    while left:
        pieces.append(min(left, rng.choice([1, 7, 4096, 65535, 65536, 65537, 200_000])))
        left -= pieces[-1]
    resume_after = {i for i in range(len(pieces)) if rng.random() < 0.3}

    obj = encrypt_pieces(
        plaintext, pieces, chunk_size=crypto.DEFAULT_CHUNK_SIZE, resume_after=resume_after
    )

    assert crypto.Header.parse(obj).chunk_size == 65536
    assert open_and_read(obj).plaintext == plaintext
    assert stream_all(obj, piece=50_000).plaintext == plaintext


@pytest.mark.parametrize("length", [0, 1, 15, 16, 17, 48, 49])
def test_one_byte_pieces_resumed_from_serialised_state_after_each(length: int) -> None:
    plaintext = _pattern(length, 7)
    obj = encrypt_pieces(plaintext, [1] * length, chunk_size=16, resume_after=range(length))
    assert open_and_read(obj).plaintext == plaintext


def test_state_holds_no_plaintext_and_is_fresh_each_time() -> None:
    plaintext = b"A secret sentence the carry-over must never expose!!"
    enc = crypto.Encryptor.start(KEY, RECORDING_ID, SCHOOL_YEAR, 100, chunk_size=64)
    enc.feed(plaintext)
    first, second = enc.to_bytes(), enc.to_bytes()
    for state in (first, second):
        for window in range(0, len(plaintext) - 3):
            assert plaintext[window : window + 4] not in state
    # A fresh random nonce per serialisation: never the same ciphertext twice.
    assert first != second


def test_feed_into_matches_feed() -> None:
    plaintext = _pattern(1000, 3)
    enc = crypto.Encryptor.start(KEY, RECORDING_ID, SCHOOL_YEAR, 1000, chunk_size=64)
    out = [enc.header]
    buf = bytearray(1000)
    for offset in range(0, 1000, 150):
        piece = plaintext[offset : offset + 150]
        expected = enc.feed_size(len(piece))
        written = enc.feed_into(piece, buf)
        assert written == expected
        out.append(bytes(buf[:written]))
    out.append(enc.finish())
    obj = b"".join(out)
    assert open_and_read(obj).plaintext == plaintext
    assert stream_all(obj).plaintext == plaintext


def test_feed_into_refuses_a_short_buffer_without_consuming() -> None:
    enc = crypto.Encryptor.start(KEY, RECORDING_ID, SCHOOL_YEAR, 64, chunk_size=16)
    with pytest.raises(ValueError, match="at least 64"):
        enc.feed_into(b"x" * 40, bytearray(63))
    assert enc.position == 0


def test_one_shot_helper_matches_incremental_layout() -> None:
    plaintext = _pattern(100)
    obj = crypto.encrypt_bytes(KEY, RECORDING_ID, SCHOOL_YEAR, plaintext, chunk_size=16)
    assert len(obj) == crypto.ciphertext_length(100, 16)
    assert open_and_read(obj).plaintext == plaintext


@pytest.mark.parametrize("length", [0, 1, 15, 16, 17, 31, 32, 33, 50, 64])
def test_every_range_equals_slicing(length: int) -> None:
    chunk_size = 16
    plaintext = _pattern(length, length)
    obj = crypto.encrypt_bytes(KEY, RECORDING_ID, SCHOOL_YEAR, plaintext, chunk_size=chunk_size)
    spans = chunk_offsets(length, chunk_size)
    final_start, final_end = spans[-1]
    shared = crypto.Decryptor.from_header(obj[: crypto.HEADER_SIZE], KEY, RECORDING_ID, SCHOOL_YEAR)
    shared.verify_end(Blob(obj).read)

    for start in range(length + 1):
        for end in range(start, length + 1):
            blob = Blob(obj)
            dec = crypto.Decryptor.open(KEY, RECORDING_ID, SCHOOL_YEAR, blob.read)
            assert b"".join(dec.read_range(start, end, blob.read)) == plaintext[start:end]

            # Only the header, the final chunk (plus one byte, to see appended
            # data) and the chunks covering the range are read.
            cstart, cend = dec.ciphertext_range(start, end)
            assert blob.reads[0] == (0, crypto.HEADER_SIZE)
            assert blob.reads[1] == (final_start, final_end - final_start + 1)
            for offset, size in blob.reads[2:]:
                assert cstart <= offset
                assert offset + size <= cend
            assert sum(size for _, size in blob.reads[2:]) == cend - cstart
            if start < end:
                first, last = start // chunk_size, (end - 1) // chunk_size
                assert (cstart, cend) == (spans[first][0], spans[last][1])

            # The same range through a long-lived handle, fed by the caller in
            # 3-byte pieces of exactly the covering span.
            span = obj[cstart:cend]
            pieces = [span[i : i + 3] for i in range(0, len(span), 3)]
            assert b"".join(shared.decrypt_span(start, end, pieces)) == plaintext[start:end]


def test_handle_verifies_the_end_once() -> None:
    plaintext = _pattern(200)
    obj = crypto.encrypt_bytes(KEY, RECORDING_ID, SCHOOL_YEAR, plaintext, chunk_size=16)
    blob = Blob(obj)
    dec = crypto.Decryptor.open(KEY, RECORDING_ID, SCHOOL_YEAR, blob.read)
    assert dec.end_verified
    blob.reads.clear()
    assert b"".join(dec.read_range(20, 40, blob.read)) == plaintext[20:40]
    assert b"".join(dec.read_range(100, 101, blob.read)) == plaintext[100:101]
    cover = [dec.ciphertext_range(20, 40), dec.ciphertext_range(100, 101)]
    assert blob.reads == [(a, b - a) for a, b in cover]


def test_long_range_is_read_in_bounded_batches() -> None:
    length = 3 * 1024 * 1024 + 5
    plaintext = _pattern(length, 11)
    obj = crypto.encrypt_bytes(KEY, RECORDING_ID, SCHOOL_YEAR, plaintext)
    blob = Blob(obj)
    dec = crypto.Decryptor.open(KEY, RECORDING_ID, SCHOOL_YEAR, blob.read)
    blob.reads.clear()
    assert b"".join(dec.read_range(1, length, blob.read)) == plaintext[1:]
    assert len(blob.reads) > 1
    assert max(size for _, size in blob.reads) <= 1 << 20


def test_ciphertext_range_geometry() -> None:
    header, stride = crypto.HEADER_SIZE, 16 + crypto.TAG_SIZE
    geometry = {"plaintext_length": 40, "chunk_size": 16}
    assert crypto.ciphertext_range(0, 1, **geometry) == (header, header + stride)
    assert crypto.ciphertext_range(15, 17, **geometry) == (header, header + 2 * stride)
    assert crypto.ciphertext_range(32, 40, **geometry) == (
        header + 2 * stride,
        header + 2 * stride + 8 + crypto.TAG_SIZE,
    )
    assert crypto.ciphertext_range(7, 7, **geometry) == (header, header)
    assert crypto.ciphertext_length(0, 16) == header + crypto.TAG_SIZE
    assert crypto.chunk_count(0, 16) == 1
    assert crypto.chunk_count(32, 16) == 2
    assert crypto.chunk_count(33, 16) == 3
    for bad in [(-1, 3), (3, 2), (0, 41)]:
        with pytest.raises(ValueError, match="range"):
            crypto.ciphertext_range(*bad, **geometry)


def test_recording_id_spellings_are_one_context() -> None:
    rid = uuid.UUID(RECORDING_ID)
    obj = crypto.encrypt_bytes(KEY, rid, SCHOOL_YEAR, b"hello", chunk_size=16)
    assert open_and_read(obj, recording_id=RECORDING_ID.upper()).plaintext == b"hello"
    assert open_and_read(obj, recording_id=rid.hex).plaintext == b"hello"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data_key": b"short"}, "data key"),
        ({"recording_id": "not-a-uuid"}, "UUID"),
        ({"school_year": "2025/2026"}, "school year"),
        ({"school_year": "2025-2027"}, "school year"),
        ({"plaintext_length": -1}, "length"),
        ({"plaintext_length": crypto.MAX_PLAINTEXT_LENGTH + 1}, "length"),
        ({"chunk_size": 15}, "chunk size"),
        ({"chunk_size": 65537}, "chunk size"),
    ],
)
def test_start_refuses_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "data_key": KEY,
        "recording_id": RECORDING_ID,
        "school_year": SCHOOL_YEAR,
        "plaintext_length": 10,
        "chunk_size": 16,
    } | kwargs
    with pytest.raises(ValueError, match=message):
        crypto.Encryptor.start(
            args["data_key"],  # type: ignore[arg-type]
            args["recording_id"],  # type: ignore[arg-type]
            args["school_year"],  # type: ignore[arg-type]
            args["plaintext_length"],  # type: ignore[arg-type]
            chunk_size=args["chunk_size"],  # type: ignore[arg-type]
        )


def test_feeding_more_or_less_than_declared_is_refused() -> None:
    enc = crypto.Encryptor.start(KEY, RECORDING_ID, SCHOOL_YEAR, 20, chunk_size=16)
    enc.feed(b"x" * 15)
    with pytest.raises(ValueError, match="more plaintext"):
        enc.feed(b"x" * 6)
    assert enc.position == 15  # the refused piece left no trace
    with pytest.raises(ValueError, match="less plaintext"):
        enc.finish()
    enc.feed(b"x" * 5)
    enc.finish()
    with pytest.raises(ValueError, match="finished"):
        enc.feed(b"")
    with pytest.raises(ValueError, match="finished"):
        enc.to_bytes()


def test_span_decryption_requires_a_verified_end() -> None:
    obj = crypto.encrypt_bytes(KEY, RECORDING_ID, SCHOOL_YEAR, b"x" * 40, chunk_size=16)
    dec = crypto.Decryptor.from_header(obj, KEY, RECORDING_ID, SCHOOL_YEAR)
    assert not dec.end_verified
    with pytest.raises(ValueError, match="verify_end"):
        dec.decrypt_span(0, 16, [obj[crypto.HEADER_SIZE : crypto.HEADER_SIZE + 32]])
    with pytest.raises(ValueError, match="range"):
        dec.read_range(0, 41, Blob(obj).read)


def test_new_key_is_random() -> None:
    keys = {crypto.new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(k) == crypto.KEY_SIZE for k in keys)
