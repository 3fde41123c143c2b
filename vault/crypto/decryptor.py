"""Decryption: an opened object serving verified byte ranges, and a front-to-back pass.

``docs/format.md``, "Reading a range": the header and key commitment are checked
on opening, the final chunk once per handle, and every chunk before its
plaintext is released.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Final

from cryptography.exceptions import InvalidTag

from vault.crypto.aead import TAG_SIZE, BytesLike, IntegrityError, as_view
from vault.crypto.keys import ObjectKeys, object_context, verified_keys
from vault.crypto.layout import HEADER_SIZE, Header, chunk_nonce, ciphertext_range

# read(offset, length) returns the object's bytes [offset, offset + length);
# fewer bytes only where the object ends.
ReadAt = Callable[[int, int], BytesLike]

# Ranged reads are batched so a long range costs few storage round trips while
# memory stays bounded whatever the chunk size.
_READ_BATCH_BYTES: Final = 1 << 20


class Decryptor:
    """An opened object: header and key commitment verified, then chunks on demand.

    Keep one instance per object to serve many ranges: the final chunk, which
    proves the object's length, is read and verified once (``verify_end``) and
    the result is cached in the instance.
    """

    __slots__ = ("_end_verified", "_header", "_keys")

    def __init__(self, header: Header, keys: ObjectKeys) -> None:
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
        return cls._verified(header, data_key, object_context(data_key, recording_id, school_year))

    @classmethod
    def _verified(cls, header: BytesLike, data_key: bytes, context: bytes) -> Decryptor:
        """Parse ``header`` and check its key commitment against the caller's key and context."""
        parsed = Header.parse(header)
        return cls(parsed, verified_keys(data_key, parsed, context))

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
    def plaintext_length(self) -> int:
        return self._header.plaintext_length

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
            return self._keys.chunk.decrypt(chunk_nonce(index, last), ciphertext, None)
        except InvalidTag:
            raise IntegrityError(f"chunk {index} does not verify") from None

    @property
    def end_verified(self) -> bool:
        """Whether the final chunk verified, so ranges of this object may be decrypted."""
        return self._end_verified

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
                plain = decrypt(chunk_nonce(index, index == final), sealed, None)
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
            view = as_view(piece)
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
    context = object_context(data_key, recording_id, school_year)
    return _decrypt_stream(data_key, context, iter(ciphertext))


def _decrypt_stream(
    data_key: bytes, context: bytes, pieces: Iterator[BytesLike]
) -> Iterator[bytes]:
    head = bytearray()
    rest: BytesLike = b""
    for piece in pieces:
        view = as_view(piece)
        take = HEADER_SIZE - len(head)
        head += view[:take]
        if len(head) == HEADER_SIZE:
            rest = view[take:]
            break
    dec = Decryptor._verified(head, data_key, context)

    def body() -> Iterator[BytesLike]:
        yield rest
        yield from pieces

    yield from dec._decrypt_chunks(0, dec._header.chunk_count - 1, body())
