"""Known-answer vectors, checked in both directions.

The vectors under ``vectors/`` were produced by the reference implementation
below, which follows docs/format.md and shares no code with vault.crypto (its
HKDF is RFC 5869 written out with the standard library's hmac). The module
must reproduce them byte for byte when given the same salt and nonces, and
must decrypt them.

Regenerate (only when the format version changes):
    .venv/bin/python -m tests.crypto.test_vectors
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault import crypto
from vault.crypto import aead

from . import Blob

VECTORS = Path(__file__).parent / "vectors"


# --------------------------------------------------------------------------
# Reference implementation, written from docs/format.md


def ref_hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def ref_context(recording_id: str, school_year: str) -> bytes:
    rid, year = recording_id.encode(), school_year.encode()
    return bytes([len(rid)]) + rid + bytes([len(year)]) + year


def ref_params(chunk_size: int, length: int, salt: bytes) -> bytes:
    return b"RVLT" + bytes([1, 1]) + struct.pack(">IQ", chunk_size, length) + salt


def ref_subkey(key: bytes, params: bytes, salt: bytes, context: bytes, label: bytes) -> bytes:
    info = b"recording-vault/object/v1 " + label + b"\x00" + params + context
    return ref_hkdf_sha256(key, salt, info)


def ref_encrypt(
    key: bytes, recording_id: str, school_year: str, chunk_size: int, salt: bytes, plaintext: bytes
) -> bytes:
    context = ref_context(recording_id, school_year)
    params = ref_params(chunk_size, len(plaintext), salt)
    chunk_key = ref_subkey(key, params, salt, context, b"chunk key")
    commitment = ref_subkey(key, params, salt, context, b"key commitment")
    count = max(1, -(-len(plaintext) // chunk_size))
    out = [params, commitment]
    for index in range(count):
        nonce = index.to_bytes(11, "big") + (b"\x01" if index == count - 1 else b"\x00")
        body = plaintext[index * chunk_size : (index + 1) * chunk_size]
        out.append(AESGCM(chunk_key).encrypt(nonce, body, None))
    return b"".join(out)


def ref_state(
    key: bytes,
    recording_id: str,
    school_year: str,
    chunk_size: int,
    length: int,
    salt: bytes,
    fed: bytes,
    nonce: bytes,
) -> bytes:
    context = ref_context(recording_id, school_year)
    params = ref_params(chunk_size, length, salt)
    commitment = ref_subkey(key, params, salt, context, b"key commitment")
    carry_key = ref_subkey(key, params, salt, context, b"carry-over key")
    count = max(1, -(-length // chunk_size))
    done = min(len(fed) // chunk_size, count - 1)
    carry = fed[done * chunk_size :]
    prefix = b"RVST\x01" + params + commitment + struct.pack(">Q", len(fed)) + nonce
    return prefix + AESGCM(carry_key).encrypt(nonce, carry, prefix)


def ref_wrap(kek: bytes, key: bytes, context: bytes, nonce: bytes) -> bytes:
    aad = b"recording-vault/wrap/v1\x00\x01" + context
    return b"\x01" + nonce + AESGCM(kek).encrypt(nonce, key, aad)


# --------------------------------------------------------------------------
# Vector files


VECTOR_FILES = ["object_v1.json", "state_v1.json", "wrap_v1.json"]


def _load(name: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((VECTORS / name).read_text())["cases"]
    return cases


@pytest.mark.parametrize("name", VECTOR_FILES)
def test_vector_files_are_committed(name: str) -> None:
    assert len(_load(name)) >= 2


def _plaintext(case: dict[str, Any]) -> bytes:
    if "plaintext" in case:
        return bytes.fromhex(case["plaintext"])
    assert case["plaintext_pattern"] == "i mod 256"
    return bytes(i % 256 for i in range(case["plaintext_length"]))


class _Random:
    """Replaces vault.crypto's randomness with the values a vector prescribes."""

    def __init__(self, *values: bytes) -> None:
        self._values: Iterator[bytes] = iter(values)

    def __call__(self, size: int) -> bytes:
        value = next(self._values)
        assert len(value) == size
        return value


@pytest.mark.parametrize("case", _load("object_v1.json"), ids=lambda c: c["name"])
def test_object_vectors(case: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    key = bytes.fromhex(case["data_key"])
    rid, year, chunk_size = case["recording_id"], case["school_year"], case["chunk_size"]
    salt = bytes.fromhex(case["salt"])
    plaintext = _plaintext(case)
    expected = bytes.fromhex(case["object"])

    assert ref_encrypt(key, rid, year, chunk_size, salt, plaintext) == expected

    monkeypatch.setattr(aead, "random_bytes", _Random(salt))
    produced = crypto.encrypt_bytes(key, rid, year, plaintext, chunk_size=chunk_size)
    assert produced == expected

    blob = Blob(expected)
    dec = crypto.Decryptor.open(key, rid, year, blob.read)
    assert dec.plaintext_length == len(plaintext)
    assert b"".join(dec.read_range(0, len(plaintext), blob.read)) == plaintext
    assert b"".join(crypto.decrypt_stream(key, rid, year, [expected])) == plaintext


@pytest.mark.parametrize("case", _load("state_v1.json"), ids=lambda c: c["name"])
def test_state_vectors(case: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    key = bytes.fromhex(case["data_key"])
    rid, year, chunk_size = case["recording_id"], case["school_year"], case["chunk_size"]
    salt, nonce = bytes.fromhex(case["salt"]), bytes.fromhex(case["carry_nonce"])
    plaintext = bytes.fromhex(case["plaintext"])
    fed = plaintext[: case["fed"]]
    state = bytes.fromhex(case["state"])
    before = bytes.fromhex(case["object_before_state"])
    expected = bytes.fromhex(case["object"])

    assert ref_state(key, rid, year, chunk_size, len(plaintext), salt, fed, nonce) == state
    assert ref_encrypt(key, rid, year, chunk_size, salt, plaintext) == expected

    # Encrypting direction: the same randomness gives the same state.
    monkeypatch.setattr(aead, "random_bytes", _Random(salt, nonce))
    enc = crypto.Encryptor.start(key, rid, year, len(plaintext), chunk_size=chunk_size)
    assert enc.header + enc.feed(fed) == before
    assert enc.to_bytes() == state

    # Resuming direction: the committed state resumes into the committed object.
    resumed = crypto.Encryptor.from_bytes(state, key, rid, year)
    assert resumed.position == len(fed)
    rest = resumed.feed(plaintext[len(fed) :]) + resumed.finish()
    assert before + rest == expected
    assert b"".join(crypto.decrypt_stream(key, rid, year, [expected])) == plaintext


@pytest.mark.parametrize("case", _load("wrap_v1.json"), ids=lambda c: c["name"])
def test_wrap_vectors(case: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    kek, key = bytes.fromhex(case["kek"]), bytes.fromhex(case["key"])
    context, nonce = bytes.fromhex(case["context"]), bytes.fromhex(case["nonce"])
    wrapped = bytes.fromhex(case["wrapped"])

    assert ref_wrap(kek, key, context, nonce) == wrapped
    monkeypatch.setattr(aead, "random_bytes", _Random(nonce))
    assert crypto.wrap_key(kek, key, context) == wrapped
    assert crypto.unwrap_key(kek, wrapped, context) == key


# --------------------------------------------------------------------------
# Generation


def _generate() -> None:
    key = bytes(range(32))
    other_key = bytes(range(0xA0, 0xC0))
    rid = "0b7d5f5e-3c1a-4d8e-9f2a-6a1c2b3d4e5f"
    other_rid = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
    salt = bytes(range(0x40, 0x60))
    objects = []
    shapes = [
        ("empty", 16, 0),
        ("one byte", 16, 1),
        ("chunk minus one", 16, 15),
        ("one full chunk", 16, 16),
        ("chunk plus one", 16, 17),
        ("three chunks and five bytes", 16, 53),
        ("two full chunks of 32", 32, 64),
    ]
    for name, chunk_size, length in shapes:
        plaintext = bytes((7 * i + 3) % 256 for i in range(length))
        objects.append(
            {
                "name": name,
                "data_key": key.hex(),
                "recording_id": rid,
                "school_year": "2025-2026",
                "chunk_size": chunk_size,
                "salt": salt.hex(),
                "plaintext": plaintext.hex(),
                "object": ref_encrypt(key, rid, "2025-2026", chunk_size, salt, plaintext).hex(),
            }
        )
    plaintext = bytes(i % 256 for i in range(100))
    objects.append(
        {
            "name": "other key, recording and year",
            "data_key": other_key.hex(),
            "recording_id": other_rid,
            "school_year": "2024-2025",
            "chunk_size": 64,
            "salt": salt[::-1].hex(),
            "plaintext": plaintext.hex(),
            "object": ref_encrypt(
                other_key, other_rid, "2024-2025", 64, salt[::-1], plaintext
            ).hex(),
        }
    )
    length = 16385
    plaintext = bytes(i % 256 for i in range(length))
    objects.append(
        {
            "name": "16 KiB chunks, one byte into the second",
            "data_key": key.hex(),
            "recording_id": rid,
            "school_year": "2025-2026",
            "chunk_size": 16384,
            "salt": salt.hex(),
            "plaintext_pattern": "i mod 256",
            "plaintext_length": length,
            "object": ref_encrypt(key, rid, "2025-2026", 16384, salt, plaintext).hex(),
        }
    )

    nonce = bytes(range(0xE0, 0xEC))
    states = []
    for name, chunk_size, length, fed in [
        ("mid-chunk carry-over", 16, 40, 21),
        ("final chunk full, not yet sealed", 16, 32, 32),
        ("nothing fed", 16, 40, 0),
    ]:
        plaintext = bytes((5 * i + 1) % 256 for i in range(length))
        obj = ref_encrypt(key, rid, "2025-2026", chunk_size, salt, plaintext)
        done = min(fed // chunk_size, max(1, -(-length // chunk_size)) - 1)
        before = obj[: crypto.HEADER_SIZE + done * (chunk_size + 16)]
        states.append(
            {
                "name": name,
                "data_key": key.hex(),
                "recording_id": rid,
                "school_year": "2025-2026",
                "chunk_size": chunk_size,
                "salt": salt.hex(),
                "carry_nonce": nonce.hex(),
                "plaintext": plaintext.hex(),
                "fed": fed,
                "state": ref_state(
                    key, rid, "2025-2026", chunk_size, length, salt, plaintext[:fed], nonce
                ).hex(),
                "object_before_state": before.hex(),
                "object": obj.hex(),
            }
        )

    wraps = []
    for name, wrapped_key, context in [
        ("data key", bytes(range(0x20, 0x40)), f"data-key\x00{rid}\x002025-2026".encode()),
        ("20-byte secret", bytes(range(20)), b"totp\x00user-42"),
    ]:
        wraps.append(
            {
                "name": name,
                "kek": other_key.hex(),
                "key": wrapped_key.hex(),
                "context": context.hex(),
                "nonce": nonce.hex(),
                "wrapped": ref_wrap(other_key, wrapped_key, context, nonce).hex(),
            }
        )

    for file_name, description, cases in [
        ("object_v1.json", "Encrypted objects, format version 1 (docs/format.md).", objects),
        ("state_v1.json", "Serialised encryption states, state version 1.", states),
        ("wrap_v1.json", "Wrapped keys, wrap version 1.", wraps),
    ]:
        text = json.dumps({"description": description, "cases": cases}, indent=1)
        (VECTORS / file_name).write_text(text + "\n")


if __name__ == "__main__":
    _generate()
