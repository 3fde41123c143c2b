"""P6: throughput of the encrypted object format against raw AES-256-GCM.

Both sides encrypt and decrypt the same in-memory plaintext in 64 KiB chunks,
each with one reused AESGCM object, and hand every ciphertext or plaintext piece
to a consumer that drops it (as an upload or a stream would after sending it).
The raw side is the floor of any chunked AES-GCM format: one AESGCM call per
chunk with a counter nonce. The format adds the header, the key derivation and
commitment, the final-chunk check, and the carry-over bookkeeping of
incremental feeding.

Encryption is measured twice, pairing like with like:
  feed_into vs encrypt_into: ciphertext written into a caller-owned buffer
                             (the upload path, which fills multipart parts);
  feed vs encrypt:           each call returns a new bytes object.

Run: .venv/bin/python -m bench.crypto [--size-mib 1024] [--rounds 3]

The last line printed is JSON: {"P6": {"encrypt": r, "decrypt": r, ...}}, each
ratio being format throughput / raw throughput, best round of each side.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.crypto import TAG_SIZE, Decryptor, Encryptor, new_key

MIB = 1 << 20
CHUNK = 64 * 1024
SCHOOL_YEAR = "2025-2026"


def raw_encrypt(aead: AESGCM, plaintext: memoryview) -> int:
    total = 0
    for index, offset in enumerate(range(0, len(plaintext), CHUNK)):
        nonce = index.to_bytes(12, "big")
        total += len(aead.encrypt(nonce, plaintext[offset : offset + CHUNK], None))
    return total


def raw_encrypt_into(aead: AESGCM, plaintext: memoryview, piece: int) -> int:
    buf = memoryview(bytearray(piece // CHUNK * (CHUNK + TAG_SIZE)))
    total = 0
    index = 0
    for start in range(0, len(plaintext), piece):
        written = 0
        for offset in range(start, min(start + piece, len(plaintext)), CHUNK):
            data = plaintext[offset : offset + CHUNK]
            end = written + len(data) + TAG_SIZE
            aead.encrypt_into(index.to_bytes(12, "big"), data, None, buf[written:end])
            written = end
            index += 1
        total += written
    return total


def raw_decrypt(aead: AESGCM, sealed: memoryview) -> int:
    total = 0
    stride = CHUNK + TAG_SIZE
    for index, offset in enumerate(range(0, len(sealed), stride)):
        nonce = index.to_bytes(12, "big")
        total += len(aead.decrypt(nonce, sealed[offset : offset + stride], None))
    return total


def format_feed(key: bytes, recording_id: str, plaintext: memoryview, piece: int) -> int:
    enc = Encryptor.start(key, recording_id, SCHOOL_YEAR, len(plaintext))
    total = len(enc.header)
    for offset in range(0, len(plaintext), piece):
        total += len(enc.feed(plaintext[offset : offset + piece]))
    return total + len(enc.finish())


def format_feed_into(key: bytes, recording_id: str, plaintext: memoryview, piece: int) -> int:
    enc = Encryptor.start(key, recording_id, SCHOOL_YEAR, len(plaintext))
    buf = memoryview(bytearray(enc.feed_size(piece)))
    total = len(enc.header)
    for offset in range(0, len(plaintext), piece):
        total += enc.feed_into(plaintext[offset : offset + piece], buf)
    return total + len(enc.finish())


def format_decrypt(key: bytes, recording_id: str, obj: memoryview) -> int:
    def read(offset: int, length: int) -> memoryview:
        return obj[offset : offset + length]

    dec = Decryptor.open(key, recording_id, SCHOOL_YEAR, read)
    total = 0
    for piece in dec.read_range(0, dec.plaintext_length, read):
        total += len(piece)
    return total


def timed(fn: Callable[[], int]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="P6: format vs raw AES-256-GCM throughput")
    parser.add_argument("--size-mib", type=int, default=1024, help="plaintext size (MiB)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per method (best counts)")
    parser.add_argument("--piece-kib", type=int, default=1024, help="plaintext per feed (KiB)")
    args = parser.parse_args(argv)
    size: int = args.size_mib * MIB
    piece: int = args.piece_kib * 1024
    if piece % CHUNK or size % CHUNK:
        parser.error("--size-mib and --piece-kib must be multiples of 64 KiB")

    print(f"P6: {args.size_mib} MiB in memory, {CHUNK // 1024} KiB chunks, AES-256-GCM,")
    print(f"    {args.piece_kib} KiB per feed, {args.rounds} interleaved rounds")
    plaintext = memoryview(os.urandom(size))
    key = new_key()
    recording_id = str(uuid.uuid4())
    raw_aead = AESGCM(new_key())

    # Untimed set-up: the objects to decrypt, and a check that the format
    # round-trips, so the timed decryption is of a real, verified object.
    enc = Encryptor.start(key, recording_id, SCHOOL_YEAR, size)
    parts = [enc.header]
    parts.extend(enc.feed(plaintext[o : o + piece]) for o in range(0, size, piece))
    parts.append(enc.finish())
    obj = memoryview(b"".join(parts))
    del parts
    # Both sides decrypt from one contiguous buffer, as a ranged read returns it.
    raw_sealed = memoryview(
        b"".join(
            raw_aead.encrypt(i.to_bytes(12, "big"), plaintext[o : o + CHUNK], None)
            for i, o in enumerate(range(0, size, CHUNK))
        )
    )
    check = hashlib.sha256()
    dec = Decryptor.open(key, recording_id, SCHOOL_YEAR, lambda o, n: obj[o : o + n])
    for out in dec.read_range(0, size, lambda o, n: obj[o : o + n]):
        check.update(out)
    if check.digest() != hashlib.sha256(plaintext).digest():
        print("format round trip FAILED", file=sys.stderr)
        return 1

    methods: dict[str, Callable[[], int]] = {
        "raw encrypt_into": lambda: raw_encrypt_into(raw_aead, plaintext, piece),
        "fmt feed_into": lambda: format_feed_into(key, recording_id, plaintext, piece),
        "raw encrypt": lambda: raw_encrypt(raw_aead, plaintext),
        "fmt feed": lambda: format_feed(key, recording_id, plaintext, piece),
        "raw decrypt": lambda: raw_decrypt(raw_aead, raw_sealed),
        "fmt read_range": lambda: format_decrypt(key, recording_id, obj),
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    # Interleaved rounds, so a slow spell on a shared machine hits both sides.
    for _ in range(args.rounds):
        for name, fn in methods.items():
            times[name].append(timed(fn))

    def mib_s(seconds: float) -> float:
        return size / MIB / seconds

    print()
    print(f"{'method':<18}{'best MiB/s':>12}{'median MiB/s':>14}{'best s':>9}")
    for name, samples in times.items():
        best = min(samples)
        print(
            f"{name:<18}{mib_s(best):>12.0f}{mib_s(statistics.median(samples)):>14.0f}{best:>9.3f}"
        )

    def ratio(fmt: str, raw: str) -> float:
        return round(min(times[raw]) / min(times[fmt]), 3)

    ratios = {
        "encrypt": ratio("fmt feed_into", "raw encrypt_into"),
        "decrypt": ratio("fmt read_range", "raw decrypt"),
        "encrypt_feed_bytes": ratio("fmt feed", "raw encrypt"),
    }
    print()
    print(f"P6 encrypt (feed_into / encrypt_into): {ratios['encrypt']:.3f}  target >= 0.9")
    print(f"P6 decrypt (read_range / decrypt):     {ratios['decrypt']:.3f}  target >= 0.9")
    print(f"   encrypt (feed / encrypt):           {ratios['encrypt_feed_bytes']:.3f}")
    print(json.dumps({"P6": ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
