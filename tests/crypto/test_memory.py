"""A 64 MiB object is encrypted and decrypted in bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from . import RECORDING_ID, SCHOOL_YEAR

MIB = 1 << 20

# Run in a fresh interpreter so the measurement sees only this workload. The
# ciphertext goes to a temporary file, as it would go to storage; plaintext is
# produced and hashed piece by piece, never held whole.
_CHILD = textwrap.dedent(
    f"""
    import hashlib, json, os, resource, tempfile, tracemalloc
    from vault import crypto

    KEY, RID, YEAR = bytes(range(32)), {RECORDING_ID!r}, {SCHOOL_YEAR!r}
    SIZE, PIECE = 64 * {MIB}, {MIB}

    def rss_kib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    rss_before = rss_kib()
    tracemalloc.start()
    peaks = {{}}
    digests = {{}}
    with tempfile.TemporaryFile() as f:
        enc = crypto.Encryptor.start(KEY, RID, YEAR, SIZE)
        f.write(enc.header)
        plain = hashlib.sha256()
        for number in range(SIZE // PIECE):
            # Pieces that do not align with chunks, so carry-overs occur.
            piece = os.urandom(PIECE - 7 if number % 2 else PIECE + 7)
            plain.update(piece)
            f.write(enc.feed(piece))
            if number % 16 == 5:
                enc = crypto.Encryptor.from_bytes(enc.to_bytes(), KEY, RID, YEAR)
        f.write(enc.finish())
        digests["plaintext"] = plain.hexdigest()
        peaks["encrypt"] = tracemalloc.get_traced_memory()[1]
        size = f.tell()

        def read(offset, length):
            f.seek(offset)
            return f.read(length)

        tracemalloc.reset_peak()
        dec = crypto.Decryptor.open(KEY, RID, YEAR, read)
        ranged = hashlib.sha256()
        for out in dec.read_range(0, SIZE, read):
            ranged.update(out)
        digests["read_range"] = ranged.hexdigest()
        peaks["read_range"] = tracemalloc.get_traced_memory()[1]

        tracemalloc.reset_peak()
        f.seek(0)
        streamed = hashlib.sha256()
        for out in crypto.decrypt_stream(KEY, RID, YEAR, iter(lambda: f.read(PIECE), b"")):
            streamed.update(out)
        digests["decrypt_stream"] = streamed.hexdigest()
        peaks["decrypt_stream"] = tracemalloc.get_traced_memory()[1]

    print(json.dumps({{
        "object_size": size,
        "peaks": peaks,
        "digests": digests,
        "rss_growth": (rss_kib() - rss_before) * 1024,
    }}))
    """
)


def test_64_mib_stream_stays_in_bounded_memory() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=300, check=True
    )
    report = json.loads(result.stdout)

    assert report["object_size"] > 64 * MIB
    digests = report["digests"]
    assert digests["read_range"] == digests["plaintext"]
    assert digests["decrypt_stream"] == digests["plaintext"]
    # Python-level allocations: a feed piece, its ciphertext and one chunk of
    # carry-over, a 1 MiB read batch; nothing that grows with the object.
    for phase, peak in report["peaks"].items():
        assert peak < 8 * MIB, f"{phase} peaked at {peak / MIB:.1f} MiB"
    # The whole process, allocator slack included, stays far below 64 MiB growth.
    assert report["rss_growth"] < 24 * MIB, report
