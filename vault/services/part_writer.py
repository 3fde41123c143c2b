"""One PATCH's body, encrypted as it is read and written to the store in fixed-size parts.

Parts are cut at fixed ciphertext offsets (part *n* always holds object bytes
``[(n - 1) * P, n * P)``), so the parts of an upload do not depend on how the client sliced
its requests, and the same plaintext always yields byte-identical parts. Between requests
the upload lives in the database only: the encryptor's state, whose partial chunk (the
plaintext carry-over) is sealed under the object's carry-over key, the ciphertext tail not
yet large enough to be a part (S3 refuses parts under 5 MiB except the last, while tus
requests can be a single byte), and the parts written so far.

**Nonce safety across crashes.** A saved encryptor state must be resumed only once: resuming
it twice with different plaintext would encrypt one chunk index twice under one key, and two
GCM ciphertexts under one nonce leak the XOR of their plaintexts and the authentication key.
Every commit that moves the offset stores the new state together with the ciphertext tail
and the parts list, in one transaction guarded by a compare-and-swap on the row's version,
so two requests racing on one upload cannot both continue from the same state (the loser
gets 409 before any of its ciphertext leaves the process). The one place where ciphertext
leaves the process before its state is committed is a part written to the store; a crash
there means the old state is resumed again by the retry. Therefore each part is first
*announced* in the database with the SHA-256 of its ciphertext; a retry that produces a
different part under the same number (the client sent different bytes for an offset it had
already sent) is refused with 409 instead of being written, so the store never holds two
different ciphertexts under one nonce.

**Memory and speed.** A request holds one read piece, one chunk of scratch space and at most
three part buffers, taken from the runtime's pool so that gigabytes of parts do not fragment
the worker's heap: helper threads write two parts to the store while the next one fills,
and each part's state is acknowledged once the part is stored. A request cut short still
commits what arrived.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections import deque
from concurrent.futures import Future, wait
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import LargeBinary, func, select, update
from sqlalchemy.orm import Session

from storage_backends.base import MAX_PARTS, Part, StorageConflict, StorageError
from vault import crypto
from vault.models import Recording, Upload
from vault.services.access import Status
from vault.services.actors import Actor
from vault.services.errors import (
    N_,
    Conflict,
    KeysUnavailable,
    PayloadTooLarge,
    StorageUnavailable,
)
from vault.services.runtime import Runtime
from vault.services.upload_records import next_version, object_key_for, rejection

#: The body is read and encrypted in pieces of at most this size (constant memory).
READ_PIECE_BYTES = 1024 * 1024
# Parts one upload writes at the same time while it fills the next: S3 servers take parts
# faster two at a time than one by one (measured with SeaweedFS: about 1.4 times), and each
# costs a part's worth of memory (5 MiB).
_PARTS_IN_FLIGHT = 2


class ContentDiverged(Conflict):
    message = N_(
        "These bytes differ from the ones already received at this position. Resume with "
        "the same file, or cancel the upload and start again."
    )


def longer_than_declared() -> PayloadTooLarge:
    return PayloadTooLarge(N_("The request carries more bytes than the upload declared."))


def part_size_for(length: int, min_part_size: int) -> int:
    """Ciphertext bytes per part: the store's minimum, raised if 10 000 parts would not do."""
    total = crypto.ciphertext_length(length, crypto.DEFAULT_CHUNK_SIZE)
    return max(min_part_size, math.ceil(total / MAX_PARTS))


@dataclass(frozen=True)
class StoredPart:
    """A part as the database records it. ``etag`` None: announced, maybe not written."""

    number: int
    size: int
    sha256: str
    etag: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "size": self.size, "sha256": self.sha256, "etag": self.etag}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredPart:
        etag = data.get("etag")
        return cls(
            number=int(data["number"]),
            size=int(data["size"]),
            sha256=str(data["sha256"]),
            etag=str(etag) if etag is not None else None,
        )

    def as_part(self) -> Part:
        assert self.etag is not None
        return Part(number=self.number, etag=self.etag, size=self.size)


def _number(part: StoredPart) -> int:
    return part.number


def _swap(session: Session, upload_id: uuid.UUID, version: datetime, **values: Any) -> None:
    """Update the upload row only if nobody changed it since ``version`` was read.

    Raises Conflict otherwise: another request (a retry racing the original, a second tab)
    has moved the upload on or terminated it, and this request must not continue from the
    state it holds.
    """
    result = session.execute(
        update(Upload)
        .where(Upload.id == upload_id, Upload.updated_at == version)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        raise Conflict(N_("Another request changed this upload at the same time. Try again."))


@dataclass(frozen=True)
class _Snapshot:
    """The state to commit once a part is in the store: everything fed when it was cut."""

    position: int
    encryptor_state: bytes
    tail: bytes | memoryview


@dataclass
class _InFlight:
    part: StoredPart
    buffer: bytearray
    future: Future[StoredPart]
    snapshot: _Snapshot | None


class Appender:
    """One PATCH: reads the body, encrypts it, writes parts, and commits progress.

    Memory is bounded whatever the body's size: one read piece, one chunk of scratch space,
    and a part buffer being filled while helper threads write up to ``_PARTS_IN_FLIGHT``
    earlier ones to the store, so reading and encrypting overlap with the store's writes.
    """

    def __init__(
        self,
        runtime: Runtime,
        actor: Actor,
        upload: Upload,
        recording: Recording,
        data_key: bytes,
        now: datetime,
    ) -> None:
        assert upload.encryptor_state is not None and upload.multipart_id is not None
        self.runtime = runtime
        self.store = runtime.store
        self.buffers = runtime.upload_workers.buffers
        self.helpers = runtime.upload_workers.helpers
        self.actor = actor
        self.now = now
        self.data_key = data_key
        # Copied out of the rows: the session that loaded them is closed before the body is
        # read, and every commit from here on checks the row's version instead.
        self.upload_id = upload.id
        self.recording_id = recording.id
        self.object_key = recording.object_key or object_key_for(recording)
        self.multipart_id = upload.multipart_id
        self.length = upload.length
        self.start_offset = upload.offset
        self.content_type = upload.content_type
        self.version = upload.updated_at
        try:
            self.encryptor = crypto.Encryptor.from_bytes(
                upload.encryptor_state, data_key, recording.id, recording.school_year
            )
        except crypto.IntegrityError as exc:
            raise KeysUnavailable() from exc
        if self.encryptor.position != upload.offset:
            # A state that does not match its row was altered outside the vault.
            raise KeysUnavailable()
        stored = [StoredPart.from_json(item) for item in upload.parts]
        self.written = [part for part in stored if part.etag is not None]
        self.announced = {part.number: part for part in stored if part.etag is None}
        # Written parts are always numbers 1..k: each is written only after the previous one.
        self.next_number = len(self.written) + 1
        self.part_size = part_size_for(upload.length, self.store.min_part_size)
        self.chunk_size = self.encryptor.chunk_size
        self.current: bytearray | None = None
        self.fill = 0
        self.scratch: bytearray | None = None
        self.in_flight: deque[_InFlight] = deque()
        self.landed: _Snapshot | None = None
        self.finished = False

    # -- buffers ----------------------------------------------------------------------------

    def open(self) -> None:
        """Take the buffers and place the ciphertext tail the last request left behind.

        The tail (up to a part) is read in slices straight into the part buffer, so no
        megabyte-sized object is made for it. Any change to the row meanwhile makes the
        first commit fail its compare-and-swap, before a part built on it is written.
        """
        self.current = self.buffers.take(self.part_size)
        # Fed at most one chunk at a time, the encryptor seals at most one chunk per call.
        self.scratch = self.buffers.take(self.chunk_size + crypto.TAG_SIZE)
        column = Upload.pending_ciphertext
        with self.runtime.sessions() as session:
            size = session.scalar(select(func.length(column)).where(Upload.id == self.upload_id))
            for start in range(0, size or 0, READ_PIECE_BYTES):
                piece = session.scalar(
                    select(
                        func.substr(column, start + 1, READ_PIECE_BYTES, type_=LargeBinary)
                    ).where(Upload.id == self.upload_id)
                )
                self._place(memoryview(piece or b""))

    def close(self) -> None:
        """Wait for the parts being written, then return the buffers (also after a failure)."""
        flights, self.in_flight = self.in_flight, deque()
        wait([flight.future for flight in flights])
        for flight in flights:
            self.buffers.give(flight.buffer)
        for buffer in (self.current, self.scratch):
            if buffer is not None:
                self.buffers.give(buffer)
        self.current = self.scratch = None

    # -- database steps ---------------------------------------------------------------------

    def _commit(self, **values: Any) -> None:
        version = next_version(self.version, self.now)
        with self.runtime.sessions() as session:
            _swap(session, self.upload_id, self.version, updated_at=version, **values)
            session.commit()
        self.version = version

    # -- the hold on the upload (see ``Upload.hold_beat``) -----------------------------------

    def beat(self) -> None:
        """Show that this request is still receiving. Conflict if another took the upload
        over (its client reconnected), so this one stops instead of reading on."""
        with self.runtime.sessions() as session:
            _swap(session, self.upload_id, self.version, hold_beat=Upload.hold_beat + 1)
            session.commit()

    def closing(self) -> None:
        """The body has ended: what arrived is being committed, however long the store takes."""
        with self.runtime.sessions() as session:
            _swap(session, self.upload_id, self.version, hold_closing=True)
            session.commit()

    def release(self) -> None:
        """Free the upload for the client's next request, also after a failure. A request
        that lost the upload to another, or saw it removed, has nothing to free."""
        with suppress(Conflict), self.runtime.sessions() as session:
            _swap(session, self.upload_id, self.version, hold_beat=None, hold_closing=False)
            session.commit()

    def _parts_json(self) -> list[dict[str, Any]]:
        announced = sorted(self.announced.values(), key=_number)
        return [part.to_json() for part in (*self.written, *announced)]

    def _refuse_divergence(self, number: int) -> None:
        with self.runtime.sessions() as session:
            raise rejection(
                session,
                self.actor,
                self.recording_id,
                ContentDiverged(),
                "content_diverged",
                part=number,
            )

    # -- parts ------------------------------------------------------------------------------

    def _put(self, part: StoredPart, data: bytearray) -> StoredPart:
        try:
            # The port declares bytes; every store only reads the part during the call, and
            # handing over the pooled buffer itself spares a part-sized copy per part.
            written = self.store.put_part(
                self.object_key, self.multipart_id, part.number, cast(bytes, data)
            )
        except StorageConflict as exc:
            # The multipart write is gone: terminated or cleaned up while this request ran.
            raise Conflict(N_("This upload was cancelled.")) from exc
        except StorageError as exc:
            raise StorageUnavailable() from exc
        return StoredPart(part.number, part.size, part.sha256, written.etag)

    def _land_oldest(self) -> bytearray:
        """Wait for the oldest part being written; return its buffer, free again.

        The state cut with that part becomes ``self.landed``, acknowledged by the next
        commit. If the part failed, what earlier parts acknowledged is committed first.
        """
        flight = self.in_flight.popleft()
        try:
            written = flight.future.result()
        except Exception:
            self.buffers.give(flight.buffer)
            if self.landed is not None:
                self._record_progress(self.landed)
                self.landed = None
            raise
        self.announced.pop(written.number, None)
        self.written.append(written)
        self.landed = flight.snapshot or self.landed
        return flight.buffer

    def _acknowledge(self) -> None:
        if self.landed is not None:
            self._record_progress(self.landed)
            self.landed = None

    def _land_all(self) -> None:
        while self.in_flight:
            self.buffers.give(self._land_oldest())

    def _record_progress(self, snapshot: _Snapshot | None) -> None:
        """One commit: the parts list, and the state cut with the last part written."""
        values: dict[str, Any] = {"parts": self._parts_json(), "content_type": self.content_type}
        if snapshot is not None:
            values.update(
                offset=snapshot.position,
                encryptor_state=snapshot.encryptor_state,
                pending_ciphertext=snapshot.tail,
            )
        self._commit(**values)

    def _ship(self, size: int, rest: memoryview, *, last: bool = False) -> None:
        """Hand the current buffer's first ``size`` bytes to the store as the next part.

        The part is announced with its digest before it is written, in the same commit that
        acknowledges the parts written since the last one. ``rest`` is ciphertext produced
        but not yet placed: with the encryptor's state it is what a later request resumes
        from if this part turns out to be the last one acknowledged.

        Up to ``_PARTS_IN_FLIGHT`` parts are written while the next one fills; beyond that,
        the buffer of the oldest is reused once it is in the store, so an upload holds at
        most ``_PARTS_IN_FLIGHT + 1`` part buffers.
        """
        assert self.current is not None
        data = self.current if size == len(self.current) else self.current[:size]
        part = StoredPart(self.next_number, size, hashlib.sha256(data).hexdigest())
        known = self.announced.get(part.number)
        if known is not None and (known.size, known.sha256) != (part.size, part.sha256):
            self._refuse_divergence(part.number)
        snapshot = None
        if not self.finished:
            snapshot = _Snapshot(self.encryptor.position, self.encryptor.to_bytes(), bytes(rest))
        # Parts already in the store are acknowledged now, in the commit announcing this one.
        while self.in_flight and self.in_flight[0].future.done():
            self.buffers.give(self._land_oldest())
        if known is None or self.landed is not None:
            self.announced[part.number] = part
            self._record_progress(self.landed)
            self.landed = None
        future = self.helpers.submit(self._put, part, data)
        self.in_flight.append(_InFlight(part, self.current, future, snapshot))
        # The buffer now belongs to the part in flight, until it lands.
        self.current = None
        self.next_number += 1
        self.fill = 0
        if len(self.in_flight) > _PARTS_IN_FLIGHT:
            freed = self._land_oldest()
            # Acknowledged at once: a slow store must not hold back what it already has.
            self._acknowledge()
            if last:
                self.buffers.give(freed)
            else:
                self.current = freed
        elif not last:
            self.current = self.buffers.take(self.part_size)

    def _place(self, data: memoryview) -> None:
        """Copy ciphertext into the part buffer, shipping each buffer as it fills up."""
        while len(data):
            assert self.current is not None
            take = min(self.part_size - self.fill, len(data))
            self.current[self.fill : self.fill + take] = data[:take]
            self.fill += take
            data = data[take:]
            if self.fill == self.part_size:
                self._ship(self.part_size, data)

    # -- the body ---------------------------------------------------------------------------

    def feed(self, piece: memoryview) -> None:
        if self.encryptor.position + len(piece) > self.length:
            self.save_progress()
            raise longer_than_declared()
        assert self.scratch is not None
        scratch = memoryview(self.scratch)
        # A chunk at a time: a part boundary then falls at most one chunk short of where the
        # encryptor stands, so the ciphertext tail committed with each part stays small.
        for start in range(0, len(piece), self.chunk_size):
            produced = self.encryptor.feed_into(piece[start : start + self.chunk_size], scratch)
            if produced:
                self._place(scratch[:produced])

    def save_progress(self) -> None:
        self._land_all()
        if self.encryptor.position == self.start_offset and self.landed is None:
            return
        assert self.current is not None
        self._record_progress(
            _Snapshot(
                self.encryptor.position,
                self.encryptor.to_bytes(),
                # Bound straight from the part buffer: no megabyte-sized copy per request.
                memoryview(self.current)[: self.fill],
            )
        )

    def finish(self) -> None:
        """Seal the last chunk, write the last parts, and mark the recording ``processing``."""
        self.finished = True
        self._place(memoryview(self.encryptor.finish()))
        if self.fill:
            self._ship(self.fill, memoryview(b""), last=True)
        self._land_all()
        with self.runtime.sessions() as session:
            version = next_version(self.version, self.now)
            _swap(
                session,
                self.upload_id,
                self.version,
                updated_at=version,
                offset=self.length,
                encryptor_state=None,
                pending_ciphertext=b"",
                parts=self._parts_json(),
                content_type=self.content_type,
            )
            session.execute(
                update(Recording)
                .where(Recording.id == self.recording_id)
                .values(status=Status.PROCESSING.value)
                .execution_options(synchronize_session=False)
            )
            session.commit()
        self.version = version
