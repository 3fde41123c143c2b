"""Resumable uploads (tus 1.0: core, creation, termination) that encrypt while streaming.

A recording's file arrives in any number of PATCH requests of any size. Each request is
encrypted as it is read, in bounded pieces, and the ciphertext goes straight into a
multipart write in the store (``part_writer``). Between requests the upload lives in the
database only, so any worker of any process can take the next request. After the final
byte the object is verified in the background (``upload_verification``); uploads abandoned
along the way are cleaned up by the lifecycle run (``lifecycle``).

**Media type.** The first request must carry at least the first 12 bytes of the file
(``SNIFF_BYTES``); they are checked against the accepted magic numbers before anything is
encrypted or stored, and a file that is not audio or video is discarded (415) and its
recording marked ``failed``. Keeping the first bytes across requests would mean storing a
sniffing buffer between requests; requiring them in one request keeps the only plaintext
carried between requests inside the encryptor's sealed state. Real tus clients send far more
than 12 bytes per request; a first request that is shorter gets 400 and changes nothing.

**Termination** (tus DELETE) aborts the multipart write, removes the upload row and returns
the recording to ``registered``, so the teacher can upload the file again; the data key made
for the abandoned upload is dropped with it.
"""

from __future__ import annotations

import time
import uuid
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from storage_backends.base import StorageError
from vault import crypto
from vault.keyring import KeyringError, YearShredded
from vault.models import Recording, Upload
from vault.services import audit, calendar
from vault.services.access import (
    TOMBSTONE_STATUSES,
    Action,
    Status,
    authorize,
    decide,
)
from vault.services.actors import Actor
from vault.services.audit import AuditAction, Outcome
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
    UploadBusy,
)
from vault.services.media import SNIFF_BYTES, SNIFF_WINDOW, sniff_media_type
from vault.services.part_writer import READ_PIECE_BYTES, Appender, longer_than_declared
from vault.services.runtime import Runtime
from vault.services.tus import BadUploadRequest
from vault.services.upload_records import (
    discard,
    load_upload,
    next_version,
    object_key_for,
    rejection,
    remove_leftovers,
    remove_stored,
    try_remove_stored,
    unwrap_data_key,
)
from vault.services.upload_verification import complete_upload

__all__ = [
    "MAX_PATCH_BYTES",
    "BodyReader",
    "OffsetMismatch",
    "UploadClosed",
    "UploadState",
    "append",
    "create_upload",
    "status",
    "terminate",
]

#: The largest PATCH body accepted; bigger requests gain nothing and tie up a worker thread.
MAX_PATCH_BYTES = 100 * 1024 * 1024


class BodyReader(Protocol):
    """The request body: ``readinto`` fills up to ``len(buffer)`` bytes; 0 at its end."""

    def readinto(self, buffer: bytearray | memoryview, /) -> int: ...


class OffsetMismatch(Conflict):
    message = N_("The upload is at byte %(offset)s; resume from there.")


class UploadClosed(Conflict):
    message = N_("This recording's upload has already finished.")


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


# -- shared steps --------------------------------------------------------------------------


def _may_upload(
    session: Session, actor: Actor, recording: Recording, now: datetime, runtime: Runtime
) -> bool:
    """True if the upload is open to ``actor``; False if it is the owner's finished one.

    Anyone else is refused by ``authorize`` (audited, 403; 410 for a tombstone). The owner
    asking about an upload that has moved past ``uploading`` is not an access violation but
    a state conflict, which the caller answers as such.
    """
    zone = runtime.settings.zone
    decision = decide(session, actor, Action.UPLOAD, recording, now, zone)
    if decision.allowed:
        return True
    if decision.reason == "not_uploadable":
        if recording.status in TOMBSTONE_STATUSES:
            raise Gone()
        return False
    authorize(session, actor, Action.UPLOAD, recording, now, zone)
    raise AssertionError("authorize refuses what decide refused")  # pragma: no cover


def _state_of(upload: Upload, recording: Recording) -> UploadState:
    return UploadState(
        upload_id=upload.id,
        recording_id=recording.id,
        offset=upload.offset,
        length=upload.length,
        recording_status=recording.status,
        content_type=upload.content_type,
    )


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
    actor: Actor,
    recording: Recording,
    length: int,
    now: datetime,
) -> None:
    """Refuse a creation the policy, the recording's state or the limits do not allow."""

    def refuse(reason: str, error: ServiceError, **details: Any) -> ServiceError:
        # Only the refusal is committed: whatever the check read is rolled back first.
        session.rollback()
        return rejection(session, actor, recording.id, error, reason, **details)

    settings = runtime.settings
    if not _may_upload(session, actor, recording, now, runtime):
        raise refuse("upload_finished", UploadClosed())
    existing = session.scalar(select(Upload.id).where(Upload.recording_id == recording.id))
    if existing is not None or recording.status not in _STARTABLE:
        raise refuse(
            "upload_exists", Conflict(N_("This recording already has an upload in progress."))
        )
    if length > settings.max_upload_bytes:
        error = PayloadTooLarge(
            N_("The file is larger than the limit of %(limit)s MiB."),
            limit=settings.max_upload_bytes // (1024 * 1024),
        )
        raise refuse("too_large", error, length=length)
    used = _quota_used(session, recording.owner_id)
    if used + length > settings.teacher_quota_bytes:
        error = PayloadTooLarge(
            N_(
                "The file does not fit in your storage quota (%(free)s MiB free). "
                "Delete recordings you no longer need, or ask the administrator."
            ),
            free=max(0, settings.teacher_quota_bytes - used) // (1024 * 1024),
        )
        raise refuse("over_quota", error, length=length)
    if length < SNIFF_BYTES:
        too_short = UnsupportedMediaType(N_("A file this small cannot be a lesson recording."))
        raise refuse("too_short", too_short, length=length)


#: A recording a new upload may start on: registered, or failed (the failure discarded the
#: upload row, its data key and what was stored, so nothing of that attempt is reused).
_STARTABLE = (Status.REGISTERED.value, Status.FAILED.value)


def create_upload(
    runtime: Runtime,
    actor: Actor,
    length: int,
    metadata: dict[str, str],
    now: datetime,
) -> UploadState:
    """tus creation: a new upload for the owner's registered (or failed) recording.

    Makes the recording's data key, starts the multipart write with the object's tags and
    moves the recording to ``uploading``, all or nothing. On a failed recording, whatever
    the failed attempt may have left at the object's key is removed before the commit.
    """
    try:
        recording_id = uuid.UUID(metadata.get("recording_id", ""))
    except ValueError:
        raise BadUploadRequest(
            N_("Upload-Metadata must name the recording (recording_id).")
        ) from None
    try:
        return _create(runtime, actor, recording_id, length, now)
    except _YearKeyRace:
        # The first upload of a school year creates the year's key; when two start at once,
        # one insert loses. The key exists now, so the second attempt simply uses it.
        try:
            return _create(runtime, actor, recording_id, length, now)
        except _YearKeyRace as exc:
            raise Conflict(
                N_("Another request changed this upload at the same time. Try again.")
            ) from exc


class _YearKeyRace(Exception):
    """The school-year key was created by a concurrent request inside this transaction."""


def _create(
    runtime: Runtime,
    actor: Actor,
    recording_id: uuid.UUID,
    length: int,
    now: datetime,
) -> UploadState:
    store = runtime.store
    with runtime.sessions() as session:
        recording = session.get(Recording, recording_id)
        if recording is None:
            raise NotFound()
        _check_creation(session, runtime, actor, recording, length, now)
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
                .where(Recording.id == recording.id, Recording.status == recording.status)
                .values(status=Status.UPLOADING.value, object_key=key, wrapped_data_key=wrapped)
                .execution_options(synchronize_session=False)
            )
            if getattr(moved, "rowcount", 0) != 1:
                raise Conflict(N_("This recording already has an upload in progress."))
            if recording.status == Status.FAILED.value:
                # The recording is now ours (no other creation can move it), so whatever
                # is at its key belongs to the failed attempt: removed now, or 503.
                remove_leftovers(runtime, key, keep=multipart_id)
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
            details = {"length": length, "upload_id": str(upload.id)}
            audit.record(
                session,
                audit.by(
                    actor, AuditAction.UPLOAD_CREATED, recording_id=recording.id, details=details
                ),
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
    actor: Actor,
    upload_id: uuid.UUID,
    now: datetime,
) -> UploadState:
    """tus HEAD: the acknowledged offset. A finished upload reports its full length.

    A request still receiving the upload is waited for (briefly), so that a client which
    reconnects right after a dropped PATCH learns the offset that request ends at. Past the
    wait, the offset committed so far is the answer: never a refusal, which tus clients
    without retries would give up on.
    """
    state, held = _checked_state(runtime, actor, upload_id, now)
    if not held:
        return state
    _wait_for_holder(runtime, upload_id)
    return _checked_state(runtime, actor, upload_id, now)[0]


def _checked_state(
    runtime: Runtime, actor: Actor, upload_id: uuid.UUID, now: datetime
) -> tuple[UploadState, bool]:
    """The upload's state for someone allowed to ask, and whether a request holds it. Only
    an allowed asker ever waits for the holder: nobody else learns that bytes are arriving."""
    with runtime.sessions() as session:
        upload, recording = load_upload(session, upload_id)
        _may_upload(session, actor, recording, now, runtime)
        return _state_of(upload, recording), upload.hold_beat is not None


# -- the hold on an upload ------------------------------------------------------------------

#: The longest a request waits for the request holding its upload.
HOLD_WAIT_SECONDS = 10.0
#: A holder that has received nothing for this long is taken for dead: its connection was
#: dropped without the server noticing yet, or its worker was killed.
HOLD_SILENCE_SECONDS = 2.0
#: How often a receiving request shows it is alive (one small update each time).
HOLD_BEAT_SECONDS = 0.5
_HOLD_POLL_SECONDS = 0.05


def _wait_for_holder(runtime: Runtime, upload_id: uuid.UUID) -> bool:
    """Wait until no live request holds the upload. False if one is still receiving after
    ``HOLD_WAIT_SECONDS`` (another client sending the same upload at the same time).

    A holder whose beat stops for ``HOLD_SILENCE_SECONDS`` while receiving, or for the whole
    wait while committing, is dead: the waiter goes on, and the request it then makes takes
    the upload over (a version check stops the old one if it was alive after all).
    """
    started = time.monotonic()
    seen: tuple[int, bool] | None = None
    seen_at = started
    while True:
        with runtime.sessions() as session:
            row = session.execute(
                select(Upload.hold_beat, Upload.hold_closing).where(Upload.id == upload_id)
            ).one_or_none()
        if row is None or row.hold_beat is None:
            return True
        moment = time.monotonic()
        if (row.hold_beat, row.hold_closing) != seen:
            seen, seen_at = (row.hold_beat, row.hold_closing), moment
        silence = HOLD_WAIT_SECONDS if row.hold_closing else HOLD_SILENCE_SECONDS
        if moment - seen_at >= silence:
            return True
        if moment - started >= HOLD_WAIT_SECONDS:
            return False
        time.sleep(_HOLD_POLL_SECONDS)


def _take_hold(session: Session, upload: Upload, now: datetime) -> None:
    """Hold the upload for this PATCH. The new version stops any earlier request that is
    still running at its next beat or commit, so only this one continues."""
    taken = session.execute(
        update(Upload)
        .where(Upload.id == upload.id, Upload.updated_at == upload.updated_at)
        .values(updated_at=next_version(upload.updated_at, now), hold_beat=0, hold_closing=False)
        .execution_options(synchronize_session=False)
    )
    if getattr(taken, "rowcount", 0) != 1:
        raise Conflict(N_("Another request changed this upload at the same time. Try again."))
    session.refresh(upload, ["updated_at"])


# -- appending -----------------------------------------------------------------------------


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
    actor: Actor,
    upload_id: uuid.UUID,
    offset: int,
    body: BodyReader,
    now: datetime,
    content_length: int | None = None,
) -> UploadState:
    """tus PATCH: append the body at ``offset``; return the new acknowledged state.

    A body cut short (the client went away) still commits what arrived, so a resumed upload
    loses only the bytes the server never received. A request still receiving the upload is
    waited for first (``status``); one that goes on receiving is answered 423 (``UploadBusy``).
    """
    appender = _taken(runtime, actor, upload_id, offset, now, content_length, wait=True)
    if appender is None:
        # Held by a request still running: wait for it (outside any transaction), then
        # take the upload over, or refuse if it is still receiving.
        if not _wait_for_holder(runtime, upload_id):
            raise UploadBusy()
        appender = _taken(runtime, actor, upload_id, offset, now, content_length, wait=False)
        assert appender is not None

    # The read buffer holds plaintext: it is wiped before the pool keeps it.
    piece = runtime.upload_workers.buffers.take(READ_PIECE_BYTES)
    try:
        return _append_body(runtime, appender, body, piece, now)
    finally:
        runtime.upload_workers.buffers.give(piece, wipe=True)
        appender.release()


def _taken(
    runtime: Runtime,
    actor: Actor,
    upload_id: uuid.UUID,
    offset: int,
    now: datetime,
    content_length: int | None,
    *,
    wait: bool,
) -> Appender | None:
    """Check the PATCH against the upload and hold the upload for it. None, with nothing
    changed, if another request holds it and ``wait`` asks to wait for that one first."""
    with runtime.sessions() as session:
        upload, recording = load_upload(session, upload_id)
        if not _may_upload(session, actor, recording, now, runtime):
            raise UploadClosed()
        if wait and upload.hold_beat is not None:
            return None
        if offset != upload.offset:
            raise OffsetMismatch(offset=upload.offset)
        remaining = upload.length - upload.offset
        if content_length is not None and content_length > remaining:
            raise longer_than_declared()
        if content_length is not None and content_length > MAX_PATCH_BYTES:
            raise _too_large_request()
        if upload.offset == 0 and content_length is not None and content_length < SNIFF_BYTES:
            raise _first_request_too_short()
        data_key = unwrap_data_key(session, runtime, recording)
        _take_hold(session, upload, now)
        appender = Appender(runtime, actor, upload, recording, data_key, now)
        session.commit()
        return appender


def _append_body(
    runtime: Runtime,
    appender: Appender,
    body: BodyReader,
    piece: bytearray,
    now: datetime,
) -> UploadState:
    view = memoryview(piece)
    count = 0
    if appender.content_type is None:
        count = _read_at_least(body, piece, SNIFF_BYTES)
        if not count:
            return _progress(appender, Status.UPLOADING)
        if count < SNIFF_BYTES:
            raise _first_request_too_short()
        media_type = sniff_media_type(bytes(view[: min(count, SNIFF_WINDOW)]))
        if media_type is None:
            _discard_unsupported(runtime, appender)
            raise UnsupportedMediaType(N_("This file is not an accepted audio or video recording."))
        appender.content_type = media_type
    appender.open()
    try:
        received = 0
        last_beat = time.monotonic()
        while True:
            if not count:
                count = body.readinto(view)
                if not count:
                    break
            if time.monotonic() - last_beat >= HOLD_BEAT_SECONDS:
                appender.beat()
                last_beat = time.monotonic()
            received += count
            if received > MAX_PATCH_BYTES:
                appender.save_progress()
                raise _too_large_request()
            appender.feed(view[:count])
            count = 0
        appender.closing()
        if appender.encryptor.position == appender.length:
            appender.finish()
        else:
            appender.save_progress()
    finally:
        appender.close()
    if appender.finished:
        complete_upload(runtime, appender.upload_id, appender.data_key, appender.actor.user_id, now)
        return _progress(appender, Status.PROCESSING)
    return _progress(appender, Status.UPLOADING)


def _progress(appender: Appender, recording_status: Status) -> UploadState:
    return UploadState(
        upload_id=appender.upload_id,
        recording_id=appender.recording_id,
        offset=appender.encryptor.position,
        length=appender.length,
        recording_status=recording_status.value,
        content_type=appender.content_type,
    )


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


def _discard_unsupported(runtime: Runtime, appender: Appender) -> None:
    """Throw away an upload whose first bytes are not audio or video; recording ``failed``."""
    event = audit.by(
        appender.actor,
        AuditAction.UPLOAD_REJECTED,
        outcome=Outcome.DENIED,
        recording_id=appender.recording_id,
        details={"reason": "unsupported_media_type"},
    )
    with runtime.sessions() as session:
        if not discard(session, appender.upload_id, appender.recording_id, event, appender.version):
            raise Conflict(N_("Another request changed this upload at the same time. Try again."))
        session.commit()
    try_remove_stored(runtime, appender.object_key, appender.multipart_id)


# -- termination ---------------------------------------------------------------------------


def terminate(
    runtime: Runtime,
    actor: Actor,
    upload_id: uuid.UUID,
    now: datetime,
) -> None:
    """tus termination: remove every trace of an unfinished upload.

    The multipart write is aborted first (a store that is down answers 503 and nothing
    changes), then the row goes and the recording is ``registered`` again, ready for a new
    upload. A finished upload is not terminated: deleting a recording is its own act, with a
    certificate.
    """
    store = runtime.store
    with runtime.sessions() as session:
        upload, recording = load_upload(session, upload_id)
        if not _may_upload(session, actor, recording, now, runtime):
            raise UploadClosed()
        key = recording.object_key or object_key_for(recording)
        multipart_id = upload.multipart_id
        offset = upload.offset
        remove_stored(runtime, key, multipart_id)
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
        details = {"upload_id": str(upload_id), "offset": offset}
        audit.record(
            session,
            audit.by(
                actor, AuditAction.UPLOAD_TERMINATED, recording_id=recording.id, details=details
            ),
        )
        session.commit()
    # A part that was being written while the abort ran can outlive it on S3; a second
    # abort after the row is gone (no request can add parts any more) catches it.
    if multipart_id is not None:
        with suppress(StorageError):
            store.abort_multipart(key, multipart_id)
