"""Encryption: an object written piece by piece, resumable between upload requests.

``docs/format.md``, "Chunks" and "Serialised encryption state": the encryptor
seals whole chunks as plaintext arrives, holds back only the partial chunk, and
can serialise that partial chunk, sealed, to resume in another process.
"""

from __future__ import annotations

import struct
import uuid
from typing import Final, TypedDict, Unpack

from cryptography.exceptions import InvalidTag

from vault.crypto import aead
from vault.crypto.aead import NONCE_SIZE, TAG_SIZE, BytesLike, IntegrityError, as_view
from vault.crypto.keys import ObjectKeys, object_context, object_keys, verified_keys
from vault.crypto.layout import (
    COMMITMENT_SIZE,
    DEFAULT_CHUNK_SIZE,
    HEADER_SIZE,
    SALT_SIZE,
    Header,
    check_chunk_size,
    check_length,
    chunk_nonce,
)

_STATE_MAGIC: Final = b"RVST"
_STATE_VERSION: Final = 1
# magic, state version, header, bytes fed so far, carry-over nonce
_STATE = struct.Struct(f">4sB{HEADER_SIZE}sQ{NONCE_SIZE}s")


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

    def __init__(self, header: Header, keys: ObjectKeys, position: int, carry: bytes) -> None:
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
        context = object_context(data_key, recording_id, school_year)
        check_chunk_size(chunk_size)
        check_length(plaintext_length)
        draft = Header(
            chunk_size=chunk_size,
            plaintext_length=plaintext_length,
            salt=aead.random_bytes(SALT_SIZE),
            commitment=bytes(COMMITMENT_SIZE),
        )
        keys = object_keys(data_key, draft, context)
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

    def _check_open(self) -> None:
        if self._finished:
            raise ValueError("encryptor already finished")

    @property
    def chunk_size(self) -> int:
        """Plaintext bytes per chunk, for a caller that sizes its pieces or buffers."""
        return self._header.chunk_size

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
        index, chunks = self._take(as_view(piece))
        encrypt = self._keys.chunk.encrypt
        if len(chunks) == 1:
            return encrypt(chunk_nonce(index, False), chunks[0], None)
        return b"".join(
            [encrypt(chunk_nonce(i, False), chunk, None) for i, chunk in enumerate(chunks, index)]
        )

    def feed_into(self, piece: BytesLike, out: bytearray | memoryview) -> int:
        """Like :meth:`feed`, writing the ciphertext into ``out``; return its length.

        ``out`` must hold at least ``feed_size(len(piece))`` bytes. This avoids
        one copy of the ciphertext when the caller assembles it in a buffer of
        its own (e.g. a multipart upload part).
        """
        view = as_view(piece)
        needed = self.feed_size(len(view))
        target = as_view(out)
        if len(target) < needed:
            raise ValueError(f"output buffer must hold at least {needed} bytes")
        index, chunks = self._take(view)
        encrypt_into = self._keys.chunk.encrypt_into
        written = 0
        for i, chunk in enumerate(chunks, index):
            end = written + len(chunk) + TAG_SIZE
            encrypt_into(chunk_nonce(i, False), chunk, None, target[written:end])
            written = end
        return written

    def finish(self) -> bytes:
        """Return the final chunk; ValueError unless exactly the declared length was fed."""
        self._check_open()
        if self._position != self._header.plaintext_length:
            raise ValueError("less plaintext than the declared length")
        sealed = self._keys.chunk.encrypt(chunk_nonce(self._last_index, True), self._carry, None)
        self._finished = True
        self._carry = bytearray()
        self._next_index = self._last_index
        return sealed

    @property
    def position(self) -> int:
        """Plaintext bytes fed so far: where a resumed upload continues."""
        return self._position

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
            aead.random_bytes(NONCE_SIZE),
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
        context = object_context(data_key, recording_id, school_year)
        if len(state) < _STATE.size + TAG_SIZE:
            raise IntegrityError("encryption state is malformed")
        magic, version, header_bytes, position, nonce = _STATE.unpack_from(state)
        if magic != _STATE_MAGIC or version != _STATE_VERSION:
            raise IntegrityError("encryption state is malformed or of an unknown version")
        header = Header.parse(header_bytes)
        keys = verified_keys(data_key, header, context)
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


class StartOptions(TypedDict, total=False):
    """The keyword options of :meth:`Encryptor.start`, which ``encrypt_bytes`` passes on."""

    chunk_size: int


def encrypt_bytes(
    data_key: bytes,
    recording_id: str | uuid.UUID,
    school_year: str,
    plaintext: BytesLike,
    **options: Unpack[StartOptions],
) -> bytes:
    """Encrypt a whole plaintext held in memory into one object."""
    view = as_view(plaintext)
    enc = Encryptor.start(data_key, recording_id, school_year, len(view), **options)
    return b"".join((enc.header, enc.feed(view), enc.finish()))
