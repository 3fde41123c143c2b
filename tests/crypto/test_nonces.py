"""No (key, nonce) pair is ever used twice for AES-GCM encryption."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault import crypto
from vault.crypto import aead

from . import KEY, OTHER_KEY, RECORDING_ID, SCHOOL_YEAR, encrypt_pieces, open_and_read


class _Use:
    """One AES-GCM encryption: the key, the nonce, and whether it had associated data."""

    __slots__ = ("aad", "key", "nonce")

    def __init__(self, key: bytes, nonce: bytes, aad: bool) -> None:
        self.key, self.nonce, self.aad = key, nonce, aad


class _RecordingAESGCM:
    """Stands in for AESGCM in vault.crypto and logs every encryption."""

    log: list[_Use] = []  # noqa: RUF012

    def __init__(self, key: bytes) -> None:
        self._key = bytes(key)
        self._inner = AESGCM(key)

    def encrypt(self, nonce: bytes, data: Any, aad: Any) -> bytes:
        _RecordingAESGCM.log.append(_Use(self._key, bytes(nonce), aad is not None))
        return self._inner.encrypt(nonce, data, aad)

    def encrypt_into(self, nonce: bytes, data: Any, aad: Any, buf: Any) -> int:
        _RecordingAESGCM.log.append(_Use(self._key, bytes(nonce), aad is not None))
        return self._inner.encrypt_into(nonce, data, aad, buf)

    def decrypt(self, nonce: bytes, data: Any, aad: Any) -> bytes:
        return self._inner.decrypt(nonce, data, aad)


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> list[_Use]:
    monkeypatch.setattr(aead, "AESGCM", _RecordingAESGCM)
    _RecordingAESGCM.log = []
    return _RecordingAESGCM.log


def _assert_unique(log: list[_Use]) -> None:
    pairs = Counter((use.key, use.nonce) for use in log)
    repeated = [pair for pair, count in pairs.items() if count > 1]
    assert not repeated, f"{len(repeated)} (key, nonce) pairs used more than once"


def test_no_pair_repeats_across_objects_reencryptions_and_resumed_uploads(
    log: list[_Use],
) -> None:
    rng = random.Random(4)
    same_plaintext = rng.randbytes(40)
    objects = 0

    # 10,000 objects under one data key; every tenth re-encrypts the same
    # plaintext, and a few use a second data key.
    for number in range(10_000):
        key = OTHER_KEY if number % 97 == 0 else KEY
        plaintext = same_plaintext if number % 10 == 0 else rng.randbytes(rng.randrange(0, 60))
        crypto.encrypt_bytes(key, RECORDING_ID, SCHOOL_YEAR, plaintext, chunk_size=16)
        objects += 1

    # Uploads fed 1 byte at a time, the state serialised and resumed after
    # every byte, all of the same plaintext under the same data key.
    carry_overs_before = sum(use.aad for use in log)
    for _ in range(30):
        obj = encrypt_pieces(same_plaintext, [1] * 40, chunk_size=16, resume_after=range(40))
        assert open_and_read(obj).plaintext == same_plaintext
        objects += 1
    carry_overs = sum(use.aad for use in log) - carry_overs_before

    assert objects == 10_030
    assert carry_overs == 30 * 40
    assert len(log) > 20_000
    _assert_unique(log)

    # Carry-overs never borrow a chunk key, whatever their nonce.
    chunk_keys = {use.key for use in log if not use.aad}
    carry_keys = {use.key for use in log if use.aad}
    assert chunk_keys.isdisjoint(carry_keys)


def test_chunk_nonces_are_index_and_last_flag(log: list[_Use]) -> None:
    crypto.encrypt_bytes(KEY, RECORDING_ID, SCHOOL_YEAR, bytes(50), chunk_size=16)
    nonces = [use.nonce for use in log]
    assert nonces == [
        bytes(11) + b"\x00",
        (1).to_bytes(11, "big") + b"\x00",
        (2).to_bytes(11, "big") + b"\x00",
        (3).to_bytes(11, "big") + b"\x01",
    ]
    assert len({use.key for use in log}) == 1


def test_feed_into_uses_the_same_nonces_as_feed(log: list[_Use]) -> None:
    enc = crypto.Encryptor.start(KEY, RECORDING_ID, SCHOOL_YEAR, 50, chunk_size=16)
    enc.feed_into(bytes(50), bytearray(100))
    enc.finish()
    assert [use.nonce[-1] for use in log] == [0, 0, 0, 1]
    assert [int.from_bytes(use.nonce[:11], "big") for use in log] == [0, 1, 2, 3]


def test_wrapping_many_keys_under_one_kek_never_repeats_a_nonce(log: list[_Use]) -> None:
    for number in range(2_000):
        crypto.wrap_key(KEY, crypto.new_key(), number.to_bytes(4, "big"))
        crypto.wrap_key(KEY, KEY, b"same key, same context")
    _assert_unique(log)
