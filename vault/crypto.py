"""The encrypted object format of the vault and the key-wrapping primitive.

Every recording is stored as one object: an authenticated header followed by
AES-256-GCM chunks (the STREAM construction: chunk index and a last-chunk flag
in the nonce). ``docs/format.md`` specifies the format byte by byte; this module
is its only implementation.

The module does no I/O. It works on bytes, iterables of bytes and a
caller-supplied ``read(offset, length)`` callable, so the storage adapters and
the upload path decide where ciphertext lives while the format decides what it
contains.

Errors: anything that looks like tampering, a wrong key or a wrong context
raises :class:`IntegrityError`; misuse by the caller (a bad argument, feeding
too many bytes) raises :class:`ValueError`.
"""

from __future__ import annotations

import hmac
import os
import re
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "ALGORITHM_AES256GCM_HKDF_SHA256",
    "DEFAULT_CHUNK_SIZE",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "KEY_SIZE",
    "MAX_CHUNK_SIZE",
    "MAX_PLAINTEXT_LENGTH",
    "MIN_CHUNK_SIZE",
    "TAG_SIZE",
    "BytesLike",
    "Decryptor",
    "Encryptor",
    "Header",
    "IntegrityError",
    "ReadAt",
    "chunk_count",
    "ciphertext_length",
    "ciphertext_range",
    "decrypt_stream",
    "encrypt_bytes",
    "new_key",
    "unwrap_key",
    "wrap_key",
]

BytesLike = bytes | bytearray | memoryview
# read(offset, length) returns the object's bytes [offset, offset + length);
# fewer bytes only where the object ends.
ReadAt = Callable[[int, int], BytesLike]

MAGIC: Final = b"RVLT"
FORMAT_VERSION: Final = 1
ALGORITHM_AES256GCM_HKDF_SHA256: Final = 1
KEY_SIZE: Final = 32
SALT_SIZE: Final = 32
COMMITMENT_SIZE: Final = 32
TAG_SIZE: Final = 16
NONCE_SIZE: Final = 12
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

_STATE_MAGIC: Final = b"RVST"
_STATE_VERSION: Final = 1
# magic, state version, header, bytes fed so far, carry-over nonce
_STATE = struct.Struct(f">4sB{HEADER_SIZE}sQ{NONCE_SIZE}s")

_WRAP_VERSION: Final = 1
_WRAPPED_MIN_SIZE: Final = 1 + NONCE_SIZE + TAG_SIZE

_KDF_PREFIX: Final = b"recording-vault/object/v1 "
_LABEL_CHUNK: Final = b"chunk key"
_LABEL_COMMIT: Final = b"key commitment"
_LABEL_CARRY: Final = b"carry-over key"
_WRAP_AAD_PREFIX: Final = b"recording-vault/wrap/v1\x00"

_SCHOOL_YEAR = re.compile(r"([0-9]{4})-([0-9]{4})")
# Ranged reads are batched so a long range costs few storage round trips while
# memory stays bounded whatever the chunk size.
_READ_BATCH_BYTES: Final = 1 << 20


def _random_bytes(size: int) -> bytes:
    # The single source of salts and nonces. Known-answer tests replace this
    # private function to make output reproducible; no public parameter lets a
    # caller choose a salt or nonce, so no caller can repeat one by mistake.
    return os.urandom(size)


class IntegrityError(Exception):
    """The ciphertext, its header or its context does not verify.

    Raised alike for tampering, truncation, extension, reordering, a wrong key
    and a wrong recording id or school year. Treat every case the same way:
    the message helps a log reader, not control flow. No plaintext of a chunk
    that failed to verify is ever released before it is raised.
    """


def new_key() -> bytes:
    """Return a fresh random 256-bit key."""
    return os.urandom(KEY_SIZE)


def _check_key(key: bytes, what: str) -> None:
    if len(key) != KEY_SIZE:
        raise ValueError(f"{what} must be {KEY_SIZE} bytes")


# --------------------------------------------------------------------------
# Key wrapping


def _wrap_aad(context: bytes) -> bytes:
    return _WRAP_AAD_PREFIX + bytes([_WRAP_VERSION]) + context


def wrap_key(kek: bytes, key: bytes, context: bytes) -> bytes:
    """Encrypt ``key`` under ``kek``, bound to ``context``.

    Output: version (1 byte) ‖ random nonce (12) ‖ AES-256-GCM ciphertext ‖ tag.
    The context (for a data key: the recording id and school year) is the
    associated data, so a wrapped key copied to another row does not unwrap.
    """
    _check_key(kek, "kek")
    if not key:
        raise ValueError("key must not be empty")
    nonce = _random_bytes(NONCE_SIZE)
    sealed = AESGCM(kek).encrypt(nonce, key, _wrap_aad(context))
    return bytes([_WRAP_VERSION]) + nonce + sealed


def unwrap_key(kek: bytes, wrapped: bytes, context: bytes) -> bytes:
    """Recover a key wrapped by :func:`wrap_key`; IntegrityError on any mismatch."""
    _check_key(kek, "kek")
    if len(wrapped) <= _WRAPPED_MIN_SIZE or wrapped[0] != _WRAP_VERSION:
        raise IntegrityError("wrapped key is malformed or of an unknown version")
    nonce = wrapped[1 : 1 + NONCE_SIZE]
    try:
        return AESGCM(kek).decrypt(nonce, wrapped[1 + NONCE_SIZE :], _wrap_aad(context))
    except InvalidTag:
        raise IntegrityError("wrapped key does not verify") from None


# --------------------------------------------------------------------------
# Geometry: how plaintext maps onto chunks and ciphertext offsets


def _check_chunk_size(chunk_size: int) -> None:
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size must be {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE} bytes")


def _check_length(plaintext_length: int) -> None:
    if not 0 <= plaintext_length <= MAX_PLAINTEXT_LENGTH:
        raise ValueError(f"plaintext length must be 0..{MAX_PLAINTEXT_LENGTH}")


def chunk_count(plaintext_length: int, chunk_size: int) -> int:
    """Number of chunks: at least one (an empty object has one empty final chunk)."""
    _check_chunk_size(chunk_size)
    _check_length(plaintext_length)
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


# --------------------------------------------------------------------------
# Header and key derivation


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


def _context(recording_id: str | uuid.UUID, school_year: str) -> bytes:
    # One canonical spelling each: two spellings of one recording id derive the
    # same keys, and a school year has a single accepted form, so no two
    # strings can name the same year and silently derive different keys.
    try:
        rid = str(uuid.UUID(str(recording_id))).encode("ascii")
    except ValueError:
        raise ValueError("recording id must be a UUID") from None
    match = _SCHOOL_YEAR.fullmatch(school_year)
    if match is None or int(match[2]) != int(match[1]) + 1:
        raise ValueError("school year must look like 2025-2026")
    year = school_year.encode("ascii")
    return bytes([len(rid)]) + rid + bytes([len(year)]) + year


def _derive(data_key: bytes, params: bytes, salt: bytes, context: bytes, label: bytes) -> bytes:
    info = _KDF_PREFIX + label + b"\x00" + params + context
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=info).derive(data_key)


@dataclass(frozen=True, slots=True)
class _Keys:
    chunk: AESGCM
    carry: AESGCM
    commitment: bytes


def _object_keys(data_key: bytes, header: Header, context: bytes) -> _Keys:
    params = header.params_bytes()
    return _Keys(
        chunk=AESGCM(_derive(data_key, params, header.salt, context, _LABEL_CHUNK)),
        carry=AESGCM(_derive(data_key, params, header.salt, context, _LABEL_CARRY)),
        commitment=_derive(data_key, params, header.salt, context, _LABEL_COMMIT),
    )


def _verified_keys(data_key: bytes, header: Header, context: bytes) -> _Keys:
    keys = _object_keys(data_key, header, context)
    # GCM alone is not key-committing: without this check a crafted object
    # could decrypt to different valid plaintexts under two keys. The
    # comparison is constant-time so it leaks nothing about the expected value.
    if not hmac.compare_digest(keys.commitment, header.commitment):
        raise IntegrityError("key commitment mismatch: wrong key, context or header")
    return keys


def _chunk_nonce(index: int, last: bool) -> bytes:
    # 88-bit big-endian chunk index ‖ last-chunk flag (STREAM): a chunk only
    # verifies at its own position, and only the real final chunk verifies as
    # final, so reordering, truncation and extension all fail.
    return ((index << 8) | last).to_bytes(NONCE_SIZE, "big")


def _as_view(data: BytesLike) -> memoryview:
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


# --------------------------------------------------------------------------
# Encryption


class Encryptor:
    """Incremental, resumable encryption of one object of known length.

    ``feed`` returns the ciphertext of every chunk it completes, except the
    final chunk, which ``finish`` returns. Between pieces the only plaintext held
    is the partial chunk (at most one chunk), so memory stays constant.
    """

    __slots__ = (
        "_carry",
        "_chunk_size",
        "_finished",
        "_header",
        "_header_bytes",
        "_keys",
        "_last_index",
        "_length",
        "_next_index",
        "_position",
    )

    def __init__(self, header: Header, keys: _Keys, position: int, carry: bytes) -> None:
        self._header = header
        self._header_bytes = header.to_bytes()
        self._keys = keys
        self._chunk_size = header.chunk_size
        self._length = header.plaintext_length
        self._last_index = header.chunk_count - 1
        self._position = position
        self._next_index = min(position // header.chunk_size, self._last_index)
        self._carry = bytearray(carry)
        self._finished = False

    @classmethod
    def start(
        cls,
        data_key: bytes,
        recording_id: str | uuid.UUID,
        school_year: str,
        plaintext_length: int,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Encryptor:
        """Begin a new object with a fresh random salt. Write ``header`` first."""
        _check_key(data_key, "data key")
        _check_chunk_size(chunk_size)
        _check_length(plaintext_length)
        context = _context(recording_id, school_year)
        draft = Header(
            chunk_size=chunk_size,
            plaintext_length=plaintext_length,
            salt=_random_bytes(SALT_SIZE),
            commitment=bytes(COMMITMENT_SIZE),
        )
        keys = _object_keys(data_key, draft, context)
        header = Header(
            chunk_size=chunk_size,
            plaintext_length=plaintext_length,
            salt=draft.salt,
            commitment=keys.commitment,
        )
        return cls(header, keys, 0, b"")

    @property
    def header(self) -> bytes:
        """The object's header bytes (HEADER_SIZE): the first bytes of the object."""
        return self._header_bytes

    @property
    def plaintext_length(self) -> int:
        return self._header.plaintext_length

    @property
    def chunk_size(self) -> int:
        return self._header.chunk_size

    @property
    def position(self) -> int:
        """Plaintext bytes fed so far."""
        return self._position

    def _check_open(self) -> None:
        if self._finished:
            raise ValueError("encryptor already finished")

    def feed_size(self, size: int) -> int:
        """Ciphertext bytes that feeding ``size`` more plaintext bytes produces."""
        self._check_open()
        if size < 0 or self._position + size > self._header.plaintext_length:
            raise ValueError("more plaintext than the declared length")
        whole = (len(self._carry) + size) // self._header.chunk_size
        return min(whole, self._last_index - self._next_index) * (
            self._header.chunk_size + TAG_SIZE
        )

    def _take(self, view: memoryview) -> tuple[int, list[BytesLike]]:
        """Advance past ``view``; return the first index and plaintexts of completed chunks.

        Refuses, before changing any state, input beyond the declared length.
        The final chunk is never completed here: ``finish`` seals it with the
        last-chunk flag.
        """
        size = len(view)
        if self._finished:
            raise ValueError("encryptor already finished")
        if self._position + size > self._length:
            raise ValueError("more plaintext than the declared length")
        self._position += size
        chunk_size = self._chunk_size
        last_index = self._last_index
        first = index = self._next_index
        chunks: list[BytesLike] = []
        offset = 0
        carry = self._carry
        if carry:
            if index >= last_index:
                carry += view
                return first, chunks
            offset = min(chunk_size - len(carry), size)
            carry += view[:offset]
            if len(carry) < chunk_size:
                return first, chunks
            chunks.append(carry)
            index += 1
            self._carry = carry = bytearray()
        # Whole chunks are encrypted straight from the caller's buffer.
        while index < last_index and size - offset >= chunk_size:
            end = offset + chunk_size
            chunks.append(view[offset:end])
            offset = end
            index += 1
        self._next_index = index
        if offset < size:
            carry += view[offset:]
        return first, chunks

    def feed(self, piece: BytesLike) -> bytes:
        """Consume plaintext; return the ciphertext of the chunks it completed."""
        index, chunks = self._take(_as_view(piece))
        encrypt = self._keys.chunk.encrypt
        if len(chunks) == 1:
            return encrypt(_chunk_nonce(index, False), chunks[0], None)
        return b"".join(
            [encrypt(_chunk_nonce(i, False), chunk, None) for i, chunk in enumerate(chunks, index)]
        )

    def feed_into(self, piece: BytesLike, out: bytearray | memoryview) -> int:
        """Like :meth:`feed`, writing the ciphertext into ``out``; return its length.

        ``out`` must hold at least ``feed_size(len(piece))`` bytes. This avoids
        one copy of the ciphertext when the caller assembles it in a buffer of
        its own (e.g. a multipart upload part).
        """
        view = _as_view(piece)
        needed = self.feed_size(len(view))
        target = _as_view(out)
        if len(target) < needed:
            raise ValueError(f"output buffer must hold at least {needed} bytes")
        index, chunks = self._take(view)
        encrypt_into = self._keys.chunk.encrypt_into
        written = 0
        for i, chunk in enumerate(chunks, index):
            end = written + len(chunk) + TAG_SIZE
            encrypt_into(_chunk_nonce(i, False), chunk, None, target[written:end])
            written = end
        return written

    def finish(self) -> bytes:
        """Return the final chunk; ValueError unless exactly the declared length was fed."""
        self._check_open()
        if self._position != self._header.plaintext_length:
            raise ValueError("less plaintext than the declared length")
        sealed = self._keys.chunk.encrypt(_chunk_nonce(self._last_index, True), self._carry, None)
        self._finished = True
        self._carry = bytearray()
        self._next_index = self._last_index
        return sealed

    def to_bytes(self) -> bytes:
        """Serialise the state between pieces, e.g. between two upload requests.

        The partial chunk is encrypted under the object's carry-over key with a
        fresh random nonce on every call, never under a chunk key: the same
        plaintext is later encrypted again as a real chunk, and reusing that
        chunk's nonce would break GCM. The whole state is the associated data,
        so a tampered position or header does not resume.

        Resume a saved state at most once per stored ciphertext: two resumptions
        of one state fed different plaintext would encrypt the same chunk index
        twice under the same key.
        """
        self._check_open()
        prefix = _STATE.pack(
            _STATE_MAGIC,
            _STATE_VERSION,
            self._header_bytes,
            self._position,
            _random_bytes(NONCE_SIZE),
        )
        nonce = prefix[-NONCE_SIZE:]
        return prefix + self._keys.carry.encrypt(nonce, bytes(self._carry), prefix)

    @classmethod
    def from_bytes(
        cls,
        state: bytes,
        data_key: bytes,
        recording_id: str | uuid.UUID,
        school_year: str,
    ) -> Encryptor:
        """Resume from :meth:`to_bytes`; IntegrityError if the state does not verify."""
        _check_key(data_key, "data key")
        context = _context(recording_id, school_year)
        if len(state) < _STATE.size + TAG_SIZE:
            raise IntegrityError("encryption state is malformed")
        magic, version, header_bytes, position, nonce = _STATE.unpack_from(state)
        if magic != _STATE_MAGIC or version != _STATE_VERSION:
            raise IntegrityError("encryption state is malformed or of an unknown version")
        header = Header.parse(header_bytes)
        keys = _verified_keys(data_key, header, context)
        prefix = state[: _STATE.size]
        try:
            carry = keys.carry.decrypt(nonce, state[_STATE.size :], prefix)
        except InvalidTag:
            raise IntegrityError("encryption state does not verify") from None
        if position > header.plaintext_length:
            raise IntegrityError("encryption state is inconsistent")
        expected_carry = position - min(position // header.chunk_size, header.chunk_count - 1) * (
            header.chunk_size
        )
        if len(carry) != expected_carry:
            raise IntegrityError("encryption state is inconsistent")
        return cls(header, keys, position, carry)


def encrypt_bytes(
    data_key: bytes,
    recording_id: str | uuid.UUID,
    school_year: str,
    plaintext: BytesLike,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> bytes:
    """Encrypt a whole plaintext held in memory into one object."""
    view = _as_view(plaintext)
    enc = Encryptor.start(data_key, recording_id, school_year, len(view), chunk_size=chunk_size)
    return b"".join((enc.header, enc.feed(view), enc.finish()))


# --------------------------------------------------------------------------
# Decryption


class Decryptor:
    """An opened object: header and key commitment verified, then chunks on demand.

    Keep one instance per object to serve many ranges: the final chunk, which
    proves the object's length, is read and verified once (``verify_end``) and
    the result is cached in the instance.
    """

    __slots__ = ("_end_verified", "_header", "_keys")

    def __init__(self, header: Header, keys: _Keys) -> None:
        self._header = header
        self._keys = keys
        self._end_verified = False

    @classmethod
    def from_header(
        cls,
        header: BytesLike,
        data_key: bytes,
        recording_id: str | uuid.UUID,
        school_year: str,
    ) -> Decryptor:
        """Verify the header bytes and the key commitment; the end is not yet verified."""
        _check_key(data_key, "data key")
        context = _context(recording_id, school_year)
        parsed = Header.parse(header)
        return cls(parsed, _verified_keys(data_key, parsed, context))

    @classmethod
    def open(
        cls,
        data_key: bytes,
        recording_id: str | uuid.UUID,
        school_year: str,
        read: ReadAt,
    ) -> Decryptor:
        """Read and verify the header, the key commitment and the final chunk."""
        header = bytes(read(0, HEADER_SIZE))
        if len(header) != HEADER_SIZE:
            raise IntegrityError("object shorter than its header")
        dec = cls.from_header(header, data_key, recording_id, school_year)
        dec.verify_end(read)
        return dec

    @property
    def header(self) -> Header:
        return self._header

    @property
    def plaintext_length(self) -> int:
        return self._header.plaintext_length

    @property
    def chunk_size(self) -> int:
        return self._header.chunk_size

    @property
    def chunk_count(self) -> int:
        return self._header.chunk_count

    @property
    def ciphertext_length(self) -> int:
        return self._header.ciphertext_length

    @property
    def end_verified(self) -> bool:
        return self._end_verified

    def ciphertext_range(self, start: int, end: int) -> tuple[int, int]:
        """Object byte range of the chunks covering plaintext [start, end)."""
        return ciphertext_range(
            start,
            end,
            plaintext_length=self._header.plaintext_length,
            chunk_size=self._header.chunk_size,
        )

    def _chunk_span(self, index: int) -> tuple[int, int]:
        """Object offset and ciphertext length of chunk ``index``."""
        header = self._header
        offset = HEADER_SIZE + index * (header.chunk_size + TAG_SIZE)
        if index == header.chunk_count - 1:
            return offset, header.plaintext_length - index * header.chunk_size + TAG_SIZE
        return offset, header.chunk_size + TAG_SIZE

    def decrypt_chunk(self, index: int, ciphertext: BytesLike) -> bytes:
        """Verify and decrypt one chunk (ciphertext ‖ tag) at its index."""
        if not 0 <= index < self._header.chunk_count:
            raise ValueError("chunk index out of range")
        last = index == self._header.chunk_count - 1
        if len(ciphertext) != self._chunk_span(index)[1]:
            raise IntegrityError(f"chunk {index} has the wrong length")
        try:
            return self._keys.chunk.decrypt(_chunk_nonce(index, last), ciphertext, None)
        except InvalidTag:
            raise IntegrityError(f"chunk {index} does not verify") from None

    def verify_end(self, read: ReadAt) -> None:
        """Read and verify the final chunk once: proves the length, detects truncation.

        One byte past the end is requested too, so bytes appended to the object
        are detected.
        """
        if self._end_verified:
            return
        index = self._header.chunk_count - 1
        offset, length = self._chunk_span(index)
        data = read(offset, length + 1)
        if len(data) != length:
            raise IntegrityError("object truncated or extended")
        self.decrypt_chunk(index, data)
        self._end_verified = True

    def read_range(self, start: int, end: int, read: ReadAt) -> Iterator[bytes]:
        """Plaintext [start, end) as verified pieces, reading only the covering chunks.

        The arguments are checked and the final chunk verified (once per
        instance) before this returns; then each chunk's plaintext is yielded
        only after its tag verified.
        """
        cstart, cend = self.ciphertext_range(start, end)
        self.verify_end(read)
        stride = self._header.chunk_size + TAG_SIZE
        batch = max(1, _READ_BATCH_BYTES // stride) * stride

        def pieces() -> Iterator[BytesLike]:
            offset = cstart
            while offset < cend:
                length = min(batch, cend - offset)
                data = read(offset, length)
                if len(data) != length:
                    raise IntegrityError("object truncated")
                yield data
                offset += length

        return self._decrypt_covering(start, end, pieces())

    def decrypt_span(
        self, start: int, end: int, ciphertext: Iterable[BytesLike]
    ) -> Iterator[bytes]:
        """Like :meth:`read_range`, for a caller that fetched the covering bytes itself.

        ``ciphertext`` yields, in pieces of any size, exactly the object bytes
        ``ciphertext_range(start, end)``. ``verify_end`` must have succeeded, so
        a truncated object is refused even when the range does not reach its end.
        """
        self.ciphertext_range(start, end)
        if not self._end_verified:
            raise ValueError("verify_end() must succeed before a range is decrypted")
        return self._decrypt_covering(start, end, ciphertext)

    def _decrypt_covering(
        self, start: int, end: int, ciphertext: Iterable[BytesLike]
    ) -> Iterator[bytes]:
        if start == end:
            for piece in ciphertext:
                if len(piece):
                    raise IntegrityError("unexpected bytes after the range")
            return
        chunk_size = self._header.chunk_size
        first = start // chunk_size
        last = (end - 1) // chunk_size
        head = start - first * chunk_size
        tail = end - last * chunk_size
        index = first
        for plain in self._decrypt_chunks(first, last, ciphertext):
            if index in (first, last):
                lo = head if index == first else 0
                hi = tail if index == last else len(plain)
                yield plain[lo:hi]
            else:
                yield plain
            index += 1

    def _decrypt_chunks(
        self, first: int, last: int, ciphertext: Iterable[BytesLike]
    ) -> Iterator[bytes]:
        final = self._header.chunk_count - 1
        decrypt = self._keys.chunk.decrypt
        index = first
        for sealed in self._split(first, last, ciphertext):
            try:
                plain = decrypt(_chunk_nonce(index, index == final), sealed, None)
            except InvalidTag:
                raise IntegrityError(f"chunk {index} does not verify") from None
            yield plain
            index += 1

    def _split(self, first: int, last: int, ciphertext: Iterable[BytesLike]) -> Iterator[BytesLike]:
        """Cut ciphertext into sealed chunks first..last; IntegrityError on a length mismatch.

        Chunk ``last`` is handed out only once the input has ended, so bytes
        beyond it are refused before its plaintext can be released.
        """
        final = self._header.chunk_count - 1
        stride = self._header.chunk_size + TAG_SIZE
        final_size = self._chunk_span(final)[1]
        index = first
        need = final_size if index == final else stride
        pending = bytearray()
        held: BytesLike = b""
        for piece in ciphertext:
            view = _as_view(piece)
            size = len(view)
            offset = 0
            if pending:
                offset = min(need - len(pending), size)
                pending += view[:offset]
                if len(pending) < need:
                    continue
                if index == last:
                    held = pending
                else:
                    yield pending
                pending = bytearray()
                index += 1
                if index == final:
                    need = final_size
            while index <= last and size - offset >= need:
                end = offset + need
                if index == last:
                    held = view[offset:end]
                else:
                    yield view[offset:end]
                offset = end
                index += 1
                if index == final:
                    need = final_size
            if offset < size:
                if index > last:
                    raise IntegrityError("unexpected bytes after the last chunk")
                pending += view[offset:]
        if index <= last:
            raise IntegrityError("ciphertext ends before the last chunk")
        yield held


def decrypt_stream(
    data_key: bytes,
    recording_id: str | uuid.UUID,
    school_year: str,
    ciphertext: Iterable[BytesLike],
) -> Iterator[bytes]:
    """Decrypt a whole object read front to back, in constant memory.

    Each chunk is yielded once its tag verified. The end of the object is only
    known when the input ends, so a truncated or extended object raises
    IntegrityError after the verified chunks before it: a consumer must treat
    everything it received as void when the iteration raises.
    """
    _check_key(data_key, "data key")
    return _decrypt_stream(data_key, _context(recording_id, school_year), iter(ciphertext))


def _decrypt_stream(
    data_key: bytes, context: bytes, pieces: Iterator[BytesLike]
) -> Iterator[bytes]:
    head = bytearray()
    rest: BytesLike = b""
    for piece in pieces:
        view = _as_view(piece)
        take = HEADER_SIZE - len(head)
        head += view[:take]
        if len(head) == HEADER_SIZE:
            rest = view[take:]
            break
    header = Header.parse(head)
    dec = Decryptor(header, _verified_keys(data_key, header, context))

    def body() -> Iterator[BytesLike]:
        yield rest
        yield from pieces

    yield from dec._decrypt_chunks(0, header.chunk_count - 1, body())
