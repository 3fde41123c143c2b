"""Resumable uploads (tus 1.0: core, creation, termination) that encrypt while streaming.

A recording's file arrives in any number of PATCH requests of any size. Each request is
encrypted as it is read, in bounded pieces, and the ciphertext goes straight into a
multipart write in the store. Between requests the upload lives in the database only, so any
worker of any process can take the next request:

* the encryptor's state, whose partial chunk (the plaintext carry-over) is sealed under the
  object's carry-over key: plaintext never reaches a disk, a database row or the store;
* the ciphertext tail not yet large enough to be a multipart part (S3 refuses parts under
  5 MiB except the last, while tus requests can be a single byte);
* the store's multipart id and the parts written so far.

Parts are cut at fixed ciphertext offsets (part *n* always holds object bytes
``[(n - 1) * P, n * P)``), so the parts of an upload do not depend on how the client sliced
its requests, and the same plaintext always yields byte-identical parts.

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
three part buffers, taken from a pool so that gigabytes of parts do not fragment the
worker's heap: helper threads write two parts to the store while the next one fills, and
each part's state is acknowledged once the part is stored. A request cut short still
commits what arrived.

**Media type.** The first request must carry at least the first 12 bytes of the file
(``SNIFF_BYTES``); they are checked against the accepted magic numbers before anything is
encrypted or stored, and a file that is not audio or video is discarded (415) and its
recording marked ``failed``. Keeping the first bytes across requests would mean storing a
sniffing buffer between requests; requiring them in one request keeps the only plaintext
carried between requests inside the encryptor's sealed state. Real tus clients send far more
than 12 bytes per request; a first request that is shorter gets 400 and changes nothing.

**Completion.** After the final byte the recording is ``processing``: the last part is
written and the multipart write completed before the final PATCH is answered, so its 204
means the whole object is in the store. Then, on a background thread, the object is read
back and decrypted. That verify pass proves the stored object decrypts to exactly the
declared length and yields the plaintext SHA-256 and the ciphertext SHA-256 (``hashlib``
state cannot be carried between the requests and processes of an upload, so the hashes
cannot be computed on the way in); the recording becomes ``available``. A failed pass
marks it ``failed`` and removes the object. A pass cut short by the process stopping is
taken up again by the lifecycle run, which finds the recording still ``processing``.

**Termination** (tus DELETE) aborts the multipart write, removes the upload row and returns
the recording to ``registered``, so the teacher can upload the file again; the data key made
for the abandoned upload is dropped with it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import math
import queue
import threading
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, cast

from sqlalchemy import LargeBinary, delete, func, select, update
from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, defer

from storage_backends.base import MAX_PARTS, ObjectNotFound, Part, StorageConflict, StorageError
from vault import crypto
from vault.keyring import KeyringError, YearShredded
from vault.models import Recording, Upload
from vault.services import audit, calendar
from vault.services.access import (
    TOMBSTONE_STATUSES,
    Action,
    Status,
    Subject,
    authorize,
    decide,
)
from vault.services.audit import AuditAction, Outcome, RequestContext
from vault.services.errors import (
    N_,
    Conflict,
    Gone,
    KeysUnavailable,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    StorageUnavailable,
    UnsupportedMediaType,
)
from vault.services.runtime import Runtime

__all__ = [
    "MAX_PATCH_BYTES",
    "READ_PIECE_BYTES",
    "SNIFF_BYTES",
    "STALE_AFTER",
    "BadUploadRequest",
    "BodyReader",
    "CleanupItem",
    "CleanupKind",
    "ContentDiverged",
    "OffsetMismatch",
    "UploadClosed",
    "UploadState",
    "append",
    "cleanup_stale_uploads",
    "create_upload",
    "finish_background_work",
    "object_key_for",
    "parse_metadata",
    "parse_offset",
    "sniff_media_type",
    "status",
    "terminate",
]

#: The largest PATCH body accepted; bigger requests gain nothing and tie up a worker thread.
MAX_PATCH_BYTES = 100 * 1024 * 1024
#: The body is read and encrypted in pieces of at most this size (constant memory).
READ_PIECE_BYTES = 1024 * 1024
#: Bytes needed to recognise every accepted format (WAV: "RIFF" size "WAVE").
SNIFF_BYTES = 12
# When the first request carries them, this many bytes settle WebM vs Matroska and
# Ogg audio vs video (the codec ids follow the container headers closely).
_SNIFF_WINDOW = 64
# Pieces (of up to 256 KiB from S3, 1 MiB from a directory) read ahead in the verify pass.
_VERIFY_READ_AHEAD = 4
#: An upload that has not moved for this long is abandoned (``recvault lifecycle run``).
STALE_AFTER = timedelta(hours=24)
_OBJECT_PREFIX = "recordings/"
_log = logging.getLogger(__name__)


class BodyReader(Protocol):
    """The request body: ``readinto`` fills up to ``len(buffer)`` bytes; 0 at its end."""

    def readinto(self, buffer: bytearray | memoryview, /) -> int: ...


# -- errors --------------------------------------------------------------------------------


class BadUploadRequest(ServiceError):
    """A tus request the protocol does not allow (mapped to 400 Bad Request)."""

    message = N_("The upload request is malformed.")


class OffsetMismatch(Conflict):
    message = N_("The upload is at byte %(offset)s; resume from there.")


class UploadClosed(Conflict):
    message = N_("This recording's upload has already finished.")


class ContentDiverged(Conflict):
    message = N_(
        "These bytes differ from the ones already received at this position. Resume with "
        "the same file, or cancel the upload and start again."
    )


# -- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadState:
    upload_id: uuid.UUID
    recording_id: uuid.UUID
    offset: int
    length: int
    recording_status: str
    content_type: str | None = None

    @property
    def complete(self) -> bool:
        return self.offset == self.length


class CleanupKind(StrEnum):
    STALE_UPLOAD = "stale_upload"
    FINISHED_UPLOAD = "finished_upload"
    ORPHANED_WRITE = "orphaned_write"


@dataclass(frozen=True)
class CleanupItem:
    kind: CleanupKind
    object_key: str
    last_activity: datetime
    upload_id: uuid.UUID | None = None
    recording_id: uuid.UUID | None = None


# -- protocol helpers ----------------------------------------------------------------------


def parse_metadata(header: str | None) -> dict[str, str]:
    """Decode tus ``Upload-Metadata``: comma-separated ``key base64value`` pairs."""
    result: dict[str, str] = {}
    for raw_item in (header or "").split(","):
        item = raw_item.strip()
        if not item:
            continue
        key, _, encoded = item.partition(" ")
        encoded = encoded.strip()
        if not key or " " in encoded or key in result:
            raise BadUploadRequest(N_("Upload-Metadata is malformed."))
        try:
            result[key] = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise BadUploadRequest(N_("Upload-Metadata is malformed.")) from None
    return result


def parse_offset(text: str | None, name: str) -> int:
    """A non-negative decimal header value (``Upload-Length``, ``Upload-Offset``)."""
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 19:
        raise BadUploadRequest(N_("The %(header)s header must be a whole number."), header=name)
    return int(text)


def sniff_media_type(head: bytes) -> str | None:
    """The media type the first bytes of a file announce, or None if not accepted.

    Procedure §14 makes every stored file restricted-access information; the check keeps the
    vault to lesson recordings (audio and video), so it cannot become a store for anything
    else. It looks at magic numbers only: a file that merely claims a type is not trusted.
    """
    if len(head) < 4:
        return None
    window = head[:_SNIFF_WINDOW]
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"qt  ":
            return "video/quicktime"
        if brand in (b"M4A ", b"M4B ", b"M4P "):
            return "audio/mp4"
        return "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in window else "video/x-matroska"
    if head.startswith(b"OggS"):
        return "video/ogg" if b"theora" in window else "audio/ogg"
    if len(head) >= 12 and head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"ID3"):
        return "audio/mpeg"
    if head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "audio/mpeg"  # an MPEG audio frame sync (FFEx/FFFx)
    return None


def object_key_for(recording: Recording) -> str:
    return f"{_OBJECT_PREFIX}{recording.school_year}/{recording.id}"


def part_size_for(length: int, min_part_size: int) -> int:
    """Ciphertext bytes per part: the store's minimum, raised if 10 000 parts would not do."""
    total = crypto.ciphertext_length(length, crypto.DEFAULT_CHUNK_SIZE)
    return max(min_part_size, math.ceil(total / MAX_PARTS))


# -- stored part bookkeeping ----------------------------------------------------------------


@dataclass(frozen=True)
class _StoredPart:
    """A part as the database records it. ``etag`` None: announced, maybe not written."""

    number: int
    size: int
    sha256: str
    etag: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "size": self.size, "sha256": self.sha256, "etag": self.etag}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _StoredPart:
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


def _parts_json(parts: Sequence[_StoredPart]) -> list[dict[str, Any]]:
    return [part.to_json() for part in parts]


# -- shared steps --------------------------------------------------------------------------


def _subject_may_upload(
    session: Session,
    subject: Subject,
    recording: Recording,
    now: datetime,
    runtime: Runtime,
    context: RequestContext | None,
) -> bool:
    """True if the upload is open to ``subject``; False if it is the owner's finished one.

    Anyone else is refused by ``authorize`` (audited, 403; 410 for a tombstone). The owner
    asking about an upload that has moved past ``uploading`` is not an access violation but
    a state conflict, which the caller answers as such.
    """
    zone = runtime.settings.zone
    decision = decide(session, subject, Action.UPLOAD, recording, now, zone)
    if decision.allowed:
        return True
    if decision.reason == "not_uploadable":
        if recording.status in TOMBSTONE_STATUSES:
            raise Gone()
        return False
    authorize(session, subject, Action.UPLOAD, recording, now, zone, context)
    raise AssertionError("authorize refuses what decide refused")  # pragma: no cover


def _load(session: Session, upload_id: uuid.UUID) -> tuple[Upload, Recording]:
    # The ciphertext tail (up to a part) is only ever read in slices, by the appender.
    upload = session.get(Upload, upload_id, options=[defer(Upload.pending_ciphertext)])
    if upload is None:
        raise NotFound()
    recording = session.get(Recording, upload.recording_id)
    if recording is None:  # the row cascades with its recording; defensive only
        raise NotFound()
    return upload, recording


def _state_of(upload: Upload, recording: Recording) -> UploadState:
    return UploadState(
        upload_id=upload.id,
        recording_id=recording.id,
        offset=upload.offset,
        length=upload.length,
        recording_status=recording.status,
        content_type=upload.content_type,
    )


def _data_key(session: Session, runtime: Runtime, recording: Recording) -> bytes:
    if recording.wrapped_data_key is None:
        raise KeysUnavailable()
    try:
        return runtime.keyring.data_key(
            session, recording.id, recording.school_year, recording.wrapped_data_key
        )
    except YearShredded as exc:
        raise Gone() from exc
    except (KeyringError, crypto.IntegrityError) as exc:
        raise KeysUnavailable() from exc


def _record(
    session: Session,
    action: AuditAction,
    actor_id: uuid.UUID | None,
    recording_id: uuid.UUID,
    details: dict[str, Any],
    context: RequestContext | None,
    outcome: Outcome = Outcome.SUCCESS,
    object_id: str | None = None,
) -> None:
    audit.record(
        session,
        audit.Event(
            action,
            outcome=outcome,
            actor_id=actor_id,
            recording_id=recording_id,
            object_id=object_id,
            details=details,
            context=context,
        ),
    )


def _reject(
    session: Session,
    subject: Subject,
    recording: Recording,
    reason: str,
    context: RequestContext | None,
    error: ServiceError,
    **details: Any,
) -> ServiceError:
    """Audit a refused upload act (committed on its own) and return the error to raise."""
    session.rollback()
    return audit.refused(
        session,
        audit.Event(
            AuditAction.UPLOAD_REJECTED,
            outcome=Outcome.DENIED,
            actor_id=subject.id,
            recording_id=recording.id,
            details={"reason": reason, **details},
            context=context,
        ),
        error,
    )


def _next_version(current: datetime, now: datetime) -> datetime:
    # The version token of the compare-and-swap: strictly increasing even if two commits
    # fall in the same microsecond or the clock steps back.
    return max(now, current + timedelta(microseconds=1))


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


# -- creation ------------------------------------------------------------------------------


def _quota_used(session: Session, owner_id: uuid.UUID) -> int:
    """Bytes the owner holds: live recordings plus the declared length of open uploads."""
    stored = session.scalar(
        select(func.coalesce(func.sum(Recording.size_bytes), 0)).where(
            Recording.owner_id == owner_id,
            Recording.status.in_([Status.AVAILABLE.value, Status.RESTRICTED.value]),
        )
    )
    pending = session.scalar(
        select(func.coalesce(func.sum(Upload.length), 0))
        .join(Recording, Recording.id == Upload.recording_id)
        .where(Recording.owner_id == owner_id, Upload.completed_at.is_(None))
    )
    return int(stored or 0) + int(pending or 0)


def _check_creation(
    session: Session,
    runtime: Runtime,
    subject: Subject,
    recording: Recording,
    length: int,
    now: datetime,
    context: RequestContext | None,
) -> None:
    """Refuse a creation the policy, the recording's state or the limits do not allow."""
    settings = runtime.settings
    if not _subject_may_upload(session, subject, recording, now, runtime, context):
        raise _reject(session, subject, recording, "upload_finished", context, UploadClosed())
    existing = session.scalar(select(Upload.id).where(Upload.recording_id == recording.id))
    if existing is not None or recording.status != Status.REGISTERED:
        error: ServiceError = Conflict(N_("This recording already has an upload in progress."))
        raise _reject(session, subject, recording, "upload_exists", context, error)
    if length > settings.max_upload_bytes:
        error = PayloadTooLarge(
            N_("The file is larger than the limit of %(limit)s MiB."),
            limit=settings.max_upload_bytes // (1024 * 1024),
        )
        raise _reject(session, subject, recording, "too_large", context, error, length=length)
    used = _quota_used(session, recording.owner_id)
    if used + length > settings.teacher_quota_bytes:
        error = PayloadTooLarge(
            N_(
                "The file does not fit in your storage quota (%(free)s MiB free). "
                "Delete recordings you no longer need, or ask the administrator."
            ),
            free=max(0, settings.teacher_quota_bytes - used) // (1024 * 1024),
        )
        raise _reject(session, subject, recording, "over_quota", context, error, length=length)
    if length < SNIFF_BYTES:
        error = UnsupportedMediaType(N_("A file this small cannot be a lesson recording."))
        raise _reject(session, subject, recording, "too_short", context, error, length=length)


def create_upload(
    runtime: Runtime,
    subject: Subject,
    length: int,
    metadata: dict[str, str],
    now: datetime,
    context: RequestContext | None = None,
) -> UploadState:
    """tus creation: a new upload for the owner's registered recording.

    Makes the recording's data key, starts the multipart write with the object's tags and
    moves the recording to ``uploading``, all or nothing.
    """
    try:
        recording_id = uuid.UUID(metadata.get("recording_id", ""))
    except ValueError:
        raise BadUploadRequest(
            N_("Upload-Metadata must name the recording (recording_id).")
        ) from None
    try:
        return _create(runtime, subject, recording_id, length, now, context)
    except _YearKeyRace:
        # The first upload of a school year creates the year's key; when two start at once,
        # one insert loses. The key exists now, so the second attempt simply uses it.
        try:
            return _create(runtime, subject, recording_id, length, now, context)
        except _YearKeyRace as exc:
            raise Conflict(
                N_("Another request changed this upload at the same time. Try again.")
            ) from exc


class _YearKeyRace(Exception):
    """The school-year key was created by a concurrent request inside this transaction."""


def _create(
    runtime: Runtime,
    subject: Subject,
    recording_id: uuid.UUID,
    length: int,
    now: datetime,
    context: RequestContext | None,
) -> UploadState:
    store = runtime.store
    with runtime.sessions() as session:
        recording = session.get(Recording, recording_id)
        if recording is None:
            raise NotFound()
        _check_creation(session, runtime, subject, recording, length, now, context)
        try:
            data_key, wrapped = runtime.keyring.new_data_key(
                session, recording.id, recording.school_year
            )
        except YearShredded as exc:
            raise Gone() from exc
        except KeyringError as exc:
            raise KeysUnavailable() from exc
        except (DatabaseIntegrityError, OperationalError) as exc:
            session.rollback()
            raise _YearKeyRace() from exc
        encryptor = crypto.Encryptor.start(data_key, recording.id, recording.school_year, length)
        key = object_key_for(recording)
        tags = calendar.object_tags(recording.school_year, recording.retain_until)
        try:
            multipart_id = store.start_multipart(key, tags)
        except StorageError as exc:
            raise StorageUnavailable() from exc
        try:
            moved = session.execute(
                update(Recording)
                .where(Recording.id == recording.id, Recording.status == Status.REGISTERED.value)
                .values(status=Status.UPLOADING.value, object_key=key, wrapped_data_key=wrapped)
                .execution_options(synchronize_session=False)
            )
            if getattr(moved, "rowcount", 0) != 1:
                raise Conflict(N_("This recording already has an upload in progress."))
            upload = Upload(
                recording_id=recording.id,
                length=length,
                offset=0,
                multipart_id=multipart_id,
                parts=[],
                encryptor_state=encryptor.to_bytes(),
                # The header is public (salt, lengths, key commitment): it opens the object.
                pending_ciphertext=encryptor.header,
                content_type=None,
                created_at=now,
                updated_at=now,
            )
            session.add(upload)
            session.flush()
            _record(
                session,
                AuditAction.UPLOAD_CREATED,
                subject.id,
                recording.id,
                {"length": length, "upload_id": str(upload.id)},
                context,
            )
            session.commit()
        except BaseException as exc:
            # Nothing may point at a write that is not recorded, nor the other way round.
            session.rollback()
            with suppress(StorageError):
                store.abort_multipart(key, multipart_id)
            if isinstance(exc, DatabaseIntegrityError):
                raise Conflict(N_("This recording already has an upload in progress.")) from exc
            raise
        return UploadState(
            upload_id=upload.id,
            recording_id=recording.id,
            offset=0,
            length=length,
            recording_status=Status.UPLOADING.value,
        )


# -- status --------------------------------------------------------------------------------


def status(
    runtime: Runtime,
    subject: Subject,
    upload_id: uuid.UUID,
    now: datetime,
    context: RequestContext | None = None,
) -> UploadState:
    """tus HEAD: the acknowledged offset. A finished upload reports its full length."""
    with runtime.sessions() as session:
        upload, recording = _load(session, upload_id)
        _subject_may_upload(session, subject, recording, now, runtime, context)
        return _state_of(upload, recording)


# -- appending -----------------------------------------------------------------------------


class _BufferPool:
    """Large buffers reused across requests, so that a long upload allocates none per part.

    An upload moves gigabytes through a worker in part-sized pieces. Allocating and freeing
    megabytes per part, from whichever thread serves each request, leaves freed memory in
    the allocator's per-thread heaps, and the worker's resident size creeps up with every
    gigabyte; reused buffers keep it flat (performance target P4). Part buffers only ever
    hold ciphertext; the read buffer holds plaintext and is wiped before it is kept, so no
    request's plaintext lingers in memory for the next one.
    """

    def __init__(self, keep: int = 8) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._free: dict[int, list[bytearray]] = {}

    def take(self, size: int) -> bytearray:
        with self._lock:
            free = self._free.get(size)
            if free:
                return free.pop()
        return bytearray(size)

    def give(self, buffer: bytearray, *, wipe: bool = False) -> None:
        if wipe:
            memoryview(buffer)[:] = bytes(len(buffer))
        with self._lock:
            free = self._free.setdefault(len(buffer), [])
            # A buffer kept twice would be handed to two users at once and mix their data.
            if len(free) < self._keep and all(kept is not buffer for kept in free):
                free.append(buffer)


_BUFFERS = _BufferPool()
_HELPERS_LOCK = threading.Lock()
_HELPERS: list[ThreadPoolExecutor] = []
# Threads that write parts and read objects back, shared by every upload of the process:
# no thread is started per request, and the store sees a bounded number of writes from one
# worker however many uploads it serves.
_HELPER_THREADS = 8
# Parts one upload writes at the same time while it fills the next: S3 servers take parts
# faster two at a time than one by one (measured with SeaweedFS: about 1.4 times), and each
# costs a part's worth of memory (5 MiB).
_PARTS_IN_FLIGHT = 2


def _helpers() -> ThreadPoolExecutor:
    with _HELPERS_LOCK:
        if not _HELPERS:
            _HELPERS.append(
                ThreadPoolExecutor(max_workers=_HELPER_THREADS, thread_name_prefix="upload-io")
            )
        return _HELPERS[0]


@dataclass(frozen=True)
class _Snapshot:
    """The state to commit once a part is in the store: everything fed when it was cut."""

    position: int
    encryptor_state: bytes
    tail: bytes | memoryview


@dataclass
class _InFlight:
    part: _StoredPart
    buffer: bytearray
    future: Future[_StoredPart]
    snapshot: _Snapshot | None


class _Appender:
    """One PATCH: reads the body, encrypts it, writes parts, and commits progress.

    Memory is bounded whatever the body's size: one read piece, one chunk of scratch space,
    and a part buffer being filled while helper threads write up to ``_PARTS_IN_FLIGHT``
    earlier ones to the store, so reading and encrypting overlap with the store's writes.
    """

    def __init__(
        self,
        runtime: Runtime,
        subject: Subject,
        upload: Upload,
        recording: Recording,
        data_key: bytes,
        now: datetime,
        context: RequestContext | None,
    ) -> None:
        assert upload.encryptor_state is not None and upload.multipart_id is not None
        self.runtime = runtime
        self.store = runtime.store
        self.subject = subject
        self.upload_id = upload.id
        self.recording_id = recording.id
        self.object_key = recording.object_key or object_key_for(recording)
        self.multipart_id = upload.multipart_id
        self.length = upload.length
        self.start_offset = upload.offset
        self.content_type = upload.content_type
        self.version = upload.updated_at
        self.now = now
        self.context = context
        self.data_key = data_key
        try:
            self.encryptor = crypto.Encryptor.from_bytes(
                upload.encryptor_state, data_key, recording.id, recording.school_year
            )
        except crypto.IntegrityError as exc:
            raise KeysUnavailable() from exc
        if self.encryptor.position != upload.offset:
            # A state that does not match its row was altered outside the vault.
            raise KeysUnavailable()
        stored = [_StoredPart.from_json(item) for item in upload.parts]
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
        self.current = _BUFFERS.take(self.part_size)
        # Fed at most one chunk at a time, the encryptor seals at most one chunk per call.
        self.scratch = _BUFFERS.take(self.chunk_size + crypto.TAG_SIZE)
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
            _BUFFERS.give(flight.buffer)
        for buffer in (self.current, self.scratch):
            if buffer is not None:
                _BUFFERS.give(buffer)
        self.current = self.scratch = None

    # -- database steps ---------------------------------------------------------------------

    def _commit(self, **values: Any) -> None:
        version = _next_version(self.version, self.now)
        with self.runtime.sessions() as session:
            _swap(session, self.upload_id, self.version, updated_at=version, **values)
            session.commit()
        self.version = version

    def _parts_json(self) -> list[dict[str, Any]]:
        return _parts_json([*self.written, *sorted(self.announced.values(), key=_number)])

    def _refuse_divergence(self, number: int) -> None:
        with self.runtime.sessions() as session:
            _record(
                session,
                AuditAction.UPLOAD_REJECTED,
                self.subject.id,
                self.recording_id,
                {"reason": "content_diverged", "part": number},
                self.context,
                outcome=Outcome.DENIED,
            )
            session.commit()
        raise ContentDiverged()

    # -- parts ------------------------------------------------------------------------------

    def _put(self, part: _StoredPart, data: bytearray) -> _StoredPart:
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
        return _StoredPart(part.number, part.size, part.sha256, written.etag)

    def _land_oldest(self) -> bytearray:
        """Wait for the oldest part being written; return its buffer, free again.

        The state cut with that part becomes ``self.landed``, acknowledged by the next
        commit. If the part failed, what earlier parts acknowledged is committed first.
        """
        flight = self.in_flight.popleft()
        try:
            written = flight.future.result()
        except Exception:
            _BUFFERS.give(flight.buffer)
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
            _BUFFERS.give(self._land_oldest())

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
        part = _StoredPart(self.next_number, size, hashlib.sha256(data).hexdigest())
        known = self.announced.get(part.number)
        if known is not None and (known.size, known.sha256) != (part.size, part.sha256):
            self._refuse_divergence(part.number)
        snapshot = None
        if not self.finished:
            snapshot = _Snapshot(self.encryptor.position, self.encryptor.to_bytes(), bytes(rest))
        # Parts already in the store are acknowledged now, in the commit announcing this one.
        while self.in_flight and self.in_flight[0].future.done():
            _BUFFERS.give(self._land_oldest())
        if known is None or self.landed is not None:
            self.announced[part.number] = part
            self._record_progress(self.landed)
            self.landed = None
        future = _helpers().submit(self._put, part, data)
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
                _BUFFERS.give(freed)
            else:
                self.current = freed
        elif not last:
            self.current = _BUFFERS.take(self.part_size)

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
            raise _longer_than_declared()
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
            version = _next_version(self.version, self.now)
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


def _number(part: _StoredPart) -> int:
    return part.number


def _read_at_least(body: BodyReader, buffer: bytearray, minimum: int) -> int:
    """Read into ``buffer`` until ``minimum`` bytes (or the end of the body) have arrived."""
    view = memoryview(buffer)
    filled = 0
    while filled < minimum:
        count = body.readinto(view[filled:])
        if not count:
            break
        filled += count
    return filled


def append(
    runtime: Runtime,
    subject: Subject,
    upload_id: uuid.UUID,
    offset: int,
    body: BodyReader,
    now: datetime,
    context: RequestContext | None = None,
    content_length: int | None = None,
) -> UploadState:
    """tus PATCH: append the body at ``offset``; return the new acknowledged state.

    A body cut short (the client went away) still commits what arrived, so a resumed upload
    loses only the bytes the server never received.
    """
    with runtime.sessions() as session:
        upload, recording = _load(session, upload_id)
        if not _subject_may_upload(session, subject, recording, now, runtime, context):
            raise UploadClosed()
        if offset != upload.offset:
            raise OffsetMismatch(offset=upload.offset)
        remaining = upload.length - upload.offset
        if content_length is not None and content_length > remaining:
            raise _longer_than_declared()
        if content_length is not None and content_length > MAX_PATCH_BYTES:
            raise _too_large_request()
        if upload.offset == 0 and content_length is not None and content_length < SNIFF_BYTES:
            raise _first_request_too_short()
        data_key = _data_key(session, runtime, recording)
        appender = _Appender(runtime, subject, upload, recording, data_key, now, context)
        session.commit()

    # The read buffer holds plaintext: it is wiped before the pool keeps it.
    piece = _BUFFERS.take(READ_PIECE_BYTES)
    try:
        return _append_body(runtime, appender, body, piece, subject, now, context)
    finally:
        _BUFFERS.give(piece, wipe=True)


def _append_body(
    runtime: Runtime,
    appender: _Appender,
    body: BodyReader,
    piece: bytearray,
    subject: Subject,
    now: datetime,
    context: RequestContext | None,
) -> UploadState:
    view = memoryview(piece)
    count = 0
    if appender.content_type is None:
        count = _read_at_least(body, piece, SNIFF_BYTES)
        if not count:
            return _progress(appender)
        if count < SNIFF_BYTES:
            raise _first_request_too_short()
        media_type = sniff_media_type(bytes(view[: min(count, _SNIFF_WINDOW)]))
        if media_type is None:
            _discard_unsupported(runtime, appender, subject, now, context)
            raise UnsupportedMediaType(N_("This file is not an accepted audio or video recording."))
        appender.content_type = media_type
    appender.open()
    try:
        received = 0
        while True:
            if not count:
                count = body.readinto(view)
                if not count:
                    break
            received += count
            if received > MAX_PATCH_BYTES:
                appender.save_progress()
                raise _too_large_request()
            appender.feed(view[:count])
            count = 0
        if appender.encryptor.position == appender.length:
            appender.finish()
        else:
            appender.save_progress()
    finally:
        appender.close()
    if appender.finished:
        return _complete(runtime, appender.upload_id, appender.data_key, subject.id, now)
    return _progress(appender)


def _progress(appender: _Appender) -> UploadState:
    return UploadState(
        upload_id=appender.upload_id,
        recording_id=appender.recording_id,
        offset=appender.encryptor.position,
        length=appender.length,
        recording_status=Status.UPLOADING.value,
        content_type=appender.content_type,
    )


def _longer_than_declared() -> PayloadTooLarge:
    return PayloadTooLarge(N_("The request carries more bytes than the upload declared."))


def _too_large_request() -> PayloadTooLarge:
    return PayloadTooLarge(
        N_("Send at most %(limit)s MiB per request."), limit=MAX_PATCH_BYTES // (1024 * 1024)
    )


def _first_request_too_short() -> BadUploadRequest:
    return BadUploadRequest(
        N_(
            "The first request must carry at least the first %(count)s bytes of the file, "
            "so its type can be checked."
        ),
        count=SNIFF_BYTES,
    )


def _discard_unsupported(
    runtime: Runtime,
    appender: _Appender,
    subject: Subject,
    now: datetime,
    context: RequestContext | None,
) -> None:
    """Throw away an upload whose first bytes are not audio or video; recording ``failed``."""
    with runtime.sessions() as session:
        removed = session.execute(
            delete(Upload)
            .where(Upload.id == appender.upload_id, Upload.updated_at == appender.version)
            .execution_options(synchronize_session=False)
        )
        if getattr(removed, "rowcount", 0) != 1:
            raise Conflict(N_("Another request changed this upload at the same time. Try again."))
        _fail_recording(session, appender.recording_id)
        _record(
            session,
            AuditAction.UPLOAD_REJECTED,
            subject.id,
            appender.recording_id,
            {"reason": "unsupported_media_type"},
            context,
            outcome=Outcome.DENIED,
        )
        session.commit()
    _remove_stored(runtime, appender.object_key, appender.multipart_id)


def _fail_recording(session: Session, recording_id: uuid.UUID) -> None:
    # Only a recording still receiving its file fails; one deleted or shredded meanwhile
    # keeps its tombstone status.
    session.execute(
        update(Recording)
        .where(
            Recording.id == recording_id,
            Recording.status.in_([Status.UPLOADING.value, Status.PROCESSING.value]),
        )
        .values(status=Status.FAILED.value, object_key=None, wrapped_data_key=None)
        .execution_options(synchronize_session=False)
    )


def _remove_stored(runtime: Runtime, key: str, multipart_id: str | None) -> None:
    """Best effort: what cannot be removed now is found again by the stale-upload cleanup."""
    store = runtime.store
    if multipart_id is not None:
        with suppress(StorageError):
            store.abort_multipart(key, multipart_id)
    with suppress(StorageError):
        store.delete(key)


# -- completion and the verify pass --------------------------------------------------------


@dataclass(frozen=True)
class _Digest:
    plaintext_sha256: str
    ciphertext_sha256: str
    size: int


def _verify(
    runtime: Runtime, key: str, data_key: bytes, recording_id: uuid.UUID, school_year: str
) -> _Digest:
    """Read the stored object back, decrypt every chunk, and hash both sides.

    A helper thread reads ahead and hashes the ciphertext while this one decrypts and hashes
    the plaintext, so the pass costs about one read of the object rather than the sum of the
    read and both hashes. At most ``_VERIFY_READ_AHEAD`` pieces wait in between.
    """
    ciphertext_hash = hashlib.sha256()
    plaintext_hash = hashlib.sha256()
    pieces: queue.Queue[bytes | BaseException | None] = queue.Queue(_VERIFY_READ_AHEAD)
    stop = threading.Event()

    def hand_over(item: bytes | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                pieces.put(item, timeout=0.2)
            except queue.Full:
                continue
            return True
        return False

    def read_ahead() -> None:
        try:
            for piece in runtime.store.read_range(key):
                ciphertext_hash.update(piece)
                if not hand_over(piece):
                    return
        except BaseException as exc:  # handed to the decrypting thread, which raises it
            hand_over(exc)
        else:
            hand_over(None)

    def ciphertext() -> Iterator[bytes]:
        while (item := pieces.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    reader = _helpers().submit(read_ahead)
    size = 0
    try:
        for plain in crypto.decrypt_stream(data_key, recording_id, school_year, ciphertext()):
            plaintext_hash.update(plain)
            size += len(plain)
    finally:
        stop.set()
        wait([reader])
    return _Digest(plaintext_hash.hexdigest(), ciphertext_hash.hexdigest(), size)


@dataclass(frozen=True)
class _Finished:
    """An upload whose last byte is in: what completing and verifying it needs."""

    upload_id: uuid.UUID
    recording_id: uuid.UUID
    key: str
    multipart_id: str
    parts: tuple[Part, ...]
    school_year: str
    retain_until: date
    length: int
    content_type: str | None


def _finished(session: Session, upload_id: uuid.UUID) -> _Finished:
    upload, recording = _load(session, upload_id)
    assert upload.multipart_id is not None
    return _Finished(
        upload_id=upload.id,
        recording_id=recording.id,
        key=recording.object_key or object_key_for(recording),
        multipart_id=upload.multipart_id,
        parts=tuple(_StoredPart.from_json(item).as_part() for item in upload.parts),
        school_year=recording.school_year,
        retain_until=recording.retain_until,
        length=upload.length,
        content_type=upload.content_type,
    )


def _store_object(runtime: Runtime, done: _Finished) -> None:
    """Join the parts into the object and tag it; a write already joined is left as it is."""
    store = runtime.store
    try:
        store.complete_multipart(done.key, done.multipart_id, done.parts)
    except StorageConflict:
        # Joined before, by a request or a run that stopped before the verify pass ended;
        # head() proves the object is there (ObjectNotFound otherwise).
        store.head(done.key)
    # The calendar may have moved the year's last day while the file was arriving.
    store.set_tags(done.key, calendar.object_tags(done.school_year, done.retain_until))


def _fail_upload(
    runtime: Runtime, done: _Finished, reason: str, actor_id: uuid.UUID | None
) -> None:
    """Status ``failed``, the upload row and the object removed; audited."""
    with runtime.sessions() as session:
        session.execute(
            delete(Upload)
            .where(Upload.id == done.upload_id)
            .execution_options(synchronize_session=False)
        )
        _fail_recording(session, done.recording_id)
        _record(
            session,
            AuditAction.UPLOAD_FAILED,
            actor_id,
            done.recording_id,
            {"reason": reason},
            None,
            outcome=Outcome.FAILURE,
        )
        session.commit()
    _remove_stored(runtime, done.key, done.multipart_id)


def _verify_and_publish(
    runtime: Runtime,
    done: _Finished,
    data_key: bytes,
    actor_id: uuid.UUID | None,
    now: datetime,
) -> str:
    """The verify pass; then ``available`` with size, type and hashes, or ``failed``.

    Returns the recording's new status. A store that cannot be read now leaves the
    recording ``processing``, for the lifecycle run to verify later (StorageUnavailable).
    """
    try:
        digest = _verify(runtime, done.key, data_key, done.recording_id, done.school_year)
        if digest.size != done.length:
            raise crypto.IntegrityError("the stored object holds a different length")
    except crypto.IntegrityError:
        _fail_upload(runtime, done, "verification_failed", actor_id)
        return Status.FAILED.value
    except StorageError as exc:
        raise StorageUnavailable() from exc
    with runtime.sessions() as session:
        upload, recording = _load(session, done.upload_id)
        if recording.status != Status.PROCESSING.value:
            # Deleted or shredded meanwhile: that act decides, not this one.
            return recording.status
        recording.status = Status.AVAILABLE.value
        recording.size_bytes = done.length
        recording.content_type = done.content_type
        recording.plaintext_sha256 = digest.plaintext_sha256
        recording.ciphertext_sha256 = digest.ciphertext_sha256
        recording.available_at = now
        upload.completed_at = now
        upload.updated_at = _next_version(upload.updated_at, now)
        _record(
            session,
            AuditAction.UPLOAD_COMPLETED,
            actor_id,
            recording.id,
            {
                "size": done.length,
                "content_type": done.content_type,
                "plaintext_sha256": digest.plaintext_sha256,
                "ciphertext_sha256": digest.ciphertext_sha256,
            },
            None,
        )
        session.commit()
    return Status.AVAILABLE.value


def _complete(
    runtime: Runtime,
    upload_id: uuid.UUID,
    data_key: bytes,
    actor_id: uuid.UUID | None,
    now: datetime,
) -> UploadState:
    """Join the parts now; verify in the background; the recording is ``processing``.

    The final PATCH is answered once the whole object is in the store. Reading it back takes
    about as long again as writing it, so the verify pass runs afterwards on a background
    thread and moves the recording to ``available`` (or ``failed``); the upload page polls
    the recording's status. If this process stops before the pass ends, the lifecycle run
    finds the recording still ``processing`` and verifies it then.
    """
    with runtime.sessions() as session:
        done = _finished(session, upload_id)
    try:
        _store_object(runtime, done)
    except StorageError as exc:
        _fail_upload(runtime, done, "storage_unavailable", actor_id)
        raise StorageUnavailable() from exc
    _publish_later(runtime, done, data_key, actor_id, now)
    return UploadState(
        upload_id=done.upload_id,
        recording_id=done.recording_id,
        offset=done.length,
        length=done.length,
        recording_status=Status.PROCESSING.value,
        content_type=done.content_type,
    )


_PUBLISHING_LOCK = threading.Lock()
_PUBLISHING: set[Future[str]] = set()
_VERIFIERS: list[ThreadPoolExecutor] = []
# Verify passes a worker runs at once; more wait their turn. Each reads a whole object back,
# so a few at a time use the store and the processor well without crowding out requests.
_VERIFIER_THREADS = 2


def _publish_later(
    runtime: Runtime,
    done: _Finished,
    data_key: bytes,
    actor_id: uuid.UUID | None,
    now: datetime,
) -> None:
    def run() -> str:
        try:
            return _verify_and_publish(runtime, done, data_key, actor_id, now)
        except Exception:
            # Nobody waits for this thread: say what happened. The recording stays
            # ``processing`` and the lifecycle run verifies it again.
            _log.exception("verifying upload %s failed; left for the lifecycle run", done.upload_id)
            raise

    with _PUBLISHING_LOCK:
        if not _VERIFIERS:
            # Separate from the helpers: a verify pass waits for helper reads, so sharing
            # one pool could leave every thread waiting for a read that never starts.
            _VERIFIERS.append(
                ThreadPoolExecutor(
                    max_workers=_VERIFIER_THREADS, thread_name_prefix="upload-verify"
                )
            )
        future = _VERIFIERS[0].submit(run)
        _PUBLISHING.add(future)
    future.add_done_callback(_forget_publishing)


def _forget_publishing(future: Future[str]) -> None:
    with _PUBLISHING_LOCK:
        _PUBLISHING.discard(future)


def finish_background_work(timeout: float | None = None) -> bool:
    """Wait for the verify passes still running in this process; True if none is left.

    For a graceful shutdown (and for tests): a pass cut short is not lost, since the
    lifecycle run verifies recordings left ``processing``, but finishing it here spares the
    owner the wait.
    """
    with _PUBLISHING_LOCK:
        pending = set(_PUBLISHING)
    _, left = wait(pending, timeout=timeout)
    return not left


# -- termination ---------------------------------------------------------------------------


def terminate(
    runtime: Runtime,
    subject: Subject,
    upload_id: uuid.UUID,
    now: datetime,
    context: RequestContext | None = None,
) -> None:
    """tus termination: remove every trace of an unfinished upload.

    The multipart write is aborted first (a store that is down answers 503 and nothing
    changes), then the row goes and the recording is ``registered`` again, ready for a new
    upload. A finished upload is not terminated: deleting a recording is its own act, with a
    certificate.
    """
    store = runtime.store
    with runtime.sessions() as session:
        upload, recording = _load(session, upload_id)
        if not _subject_may_upload(session, subject, recording, now, runtime, context):
            raise UploadClosed()
        key = recording.object_key or object_key_for(recording)
        multipart_id = upload.multipart_id
        offset = upload.offset
        try:
            if multipart_id is not None:
                store.abort_multipart(key, multipart_id)
            store.delete(key)
        except StorageError as exc:
            raise StorageUnavailable() from exc
        session.execute(
            delete(Upload)
            .where(Upload.id == upload_id)
            .execution_options(synchronize_session=False)
        )
        session.execute(
            update(Recording)
            .where(Recording.id == recording.id)
            .values(status=Status.REGISTERED.value, object_key=None, wrapped_data_key=None)
            .execution_options(synchronize_session=False)
        )
        _record(
            session,
            AuditAction.UPLOAD_TERMINATED,
            subject.id,
            recording.id,
            {"upload_id": str(upload_id), "offset": offset},
            context,
        )
        session.commit()
    # A part that was being written while the abort ran can outlive it on S3; a second
    # abort after the row is gone (no request can add parts any more) catches it.
    if multipart_id is not None:
        with suppress(StorageError):
            store.abort_multipart(key, multipart_id)


# -- stale uploads -------------------------------------------------------------------------


def cleanup_stale_uploads(
    runtime: Runtime,
    now: datetime,
    older_than: timedelta = STALE_AFTER,
    dry_run: bool = False,
) -> list[CleanupItem]:
    """Remove abandoned uploads: the daily lifecycle run calls this.

    An upload untouched for ``older_than`` has its multipart write aborted and any object
    removed, its row (with the sealed carry-over and ciphertext tail) deleted, and its
    recording marked ``failed``. An upload that received its last byte but whose recording
    is still ``processing`` (the process stopped during the verify pass) is finished
    instead: its object is joined if need be and verified, and the recording becomes
    ``available`` (or ``failed``). Multipart writes the store still holds but no upload row
    names (a crash between starting a write and committing its row) are aborted too. Each
    act is audited. ``dry_run`` reports without changing anything.
    """
    cutoff = now - older_than
    store = runtime.store
    items: list[CleanupItem] = []
    with runtime.sessions() as session:
        rows = session.execute(
            select(Upload, Recording)
            .join(Recording, Recording.id == Upload.recording_id)
            .where(Upload.completed_at.is_(None), Upload.updated_at < cutoff)
            .order_by(Upload.updated_at)
        ).all()
        stale = [
            (
                upload.id,
                upload.updated_at,
                upload.multipart_id,
                recording.id,
                recording.object_key or object_key_for(recording),
                recording.status == Status.PROCESSING and upload.encryptor_state is None,
            )
            for upload, recording in rows
        ]
    for upload_id, updated_at, multipart_id, recording_id, key, received in stale:
        kind = CleanupKind.FINISHED_UPLOAD if received else CleanupKind.STALE_UPLOAD
        items.append(CleanupItem(kind, key, updated_at, upload_id, recording_id))
        if dry_run:
            continue
        if received:
            _finish_received(runtime, upload_id, now)
            continue
        try:
            if multipart_id is not None:
                store.abort_multipart(key, multipart_id)
            store.delete(key)
        except StorageError as exc:
            raise StorageUnavailable() from exc
        with runtime.sessions() as session:
            removed = session.execute(
                delete(Upload)
                .where(Upload.id == upload_id, Upload.updated_at == updated_at)
                .execution_options(synchronize_session=False)
            )
            if getattr(removed, "rowcount", 0) != 1:
                items.pop()  # it moved on after all: a live upload, left alone
                session.rollback()
                continue
            _fail_recording(session, recording_id)
            _record(
                session,
                AuditAction.UPLOAD_EXPIRED,
                None,
                recording_id,
                {"upload_id": str(upload_id), "last_activity": updated_at.isoformat()},
                None,
            )
            session.commit()
    items.extend(_abort_orphans(runtime, cutoff, dry_run))
    return items


def _finish_received(runtime: Runtime, upload_id: uuid.UUID, now: datetime) -> None:
    """Complete and verify an upload whose last byte arrived but whose pass never ended."""
    with runtime.sessions() as session:
        done = _finished(session, upload_id)
        recording = session.get(Recording, done.recording_id)
        assert recording is not None
        try:
            data_key = _data_key(session, runtime, recording)
        except (Gone, KeysUnavailable):
            data_key = None
    if data_key is None:
        _fail_upload(runtime, done, "key_unavailable", None)
        return
    try:
        _store_object(runtime, done)
    except ObjectNotFound:
        _fail_upload(runtime, done, "object_missing", None)
        return
    except StorageError as exc:
        raise StorageUnavailable() from exc
    _verify_and_publish(runtime, done, data_key, None, now)


def _abort_orphans(runtime: Runtime, cutoff: datetime, dry_run: bool) -> list[CleanupItem]:
    store = runtime.store
    try:
        pending = store.list_stale_multipart(cutoff)
    except StorageError as exc:
        raise StorageUnavailable() from exc
    if not pending:
        return []
    with runtime.sessions() as session:
        known = set(
            session.scalars(select(Upload.multipart_id).where(Upload.multipart_id.is_not(None)))
        )
    items: list[CleanupItem] = []
    for write in pending:
        if write.upload_id in known or not write.key.startswith(_OBJECT_PREFIX):
            continue
        items.append(CleanupItem(CleanupKind.ORPHANED_WRITE, write.key, write.started))
        if dry_run:
            continue
        try:
            store.abort_multipart(write.key, write.upload_id)
        except StorageError as exc:
            raise StorageUnavailable() from exc
        with runtime.sessions() as session:
            audit.record(
                session,
                audit.Event(
                    AuditAction.UPLOAD_ORPHAN_ABORTED,
                    object_id=write.key[:64],
                    details={"key": write.key, "started": write.started.isoformat()},
                ),
            )
            session.commit()
    return items
