"""The verify pass that follows an upload's final byte, and the recording's publication.

After the final byte the recording is ``processing``: the last part is written and the
multipart write completed before the final PATCH is answered, so its 204 means the whole
object is in the store. Then, on a verifier thread of the runtime's ``UploadWorkers``, the
object is read back and decrypted. That verify pass proves the stored object decrypts to
exactly the declared length and yields the plaintext SHA-256 and the ciphertext SHA-256
(``hashlib`` state cannot be carried between the requests and processes of an upload, so the
hashes cannot be computed on the way in); the recording becomes ``available``. A failed pass
marks it ``failed`` and removes the upload row, the wrapped data key and the object; its
owner may then upload the file again on the same registration (``uploads.create_upload``).
A pass cut short by the process stopping is taken up again by the lifecycle run, which finds
the recording still ``processing``.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import wait
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy.orm import Session

from storage_backends.base import Part, StorageConflict, StorageError
from vault import crypto
from vault.services import audit, calendar
from vault.services.access import Status
from vault.services.audit import AuditAction, Outcome
from vault.services.errors import StorageUnavailable
from vault.services.part_writer import StoredPart
from vault.services.runtime import Runtime
from vault.services.upload_records import (
    background_event,
    discard,
    load_upload,
    next_version,
    object_key_for,
    try_remove_stored,
)

# Pieces (of up to 256 KiB from S3, 1 MiB from a directory) read ahead in the verify pass.
_VERIFY_READ_AHEAD = 4
_log = logging.getLogger(__name__)


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

    reader = runtime.upload_workers.helpers.submit(read_ahead)
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
class Finished:
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


def finished_upload(session: Session, upload_id: uuid.UUID) -> Finished:
    upload, recording = load_upload(session, upload_id)
    assert upload.multipart_id is not None
    return Finished(
        upload_id=upload.id,
        recording_id=recording.id,
        key=recording.object_key or object_key_for(recording),
        multipart_id=upload.multipart_id,
        parts=tuple(StoredPart.from_json(item).as_part() for item in upload.parts),
        school_year=recording.school_year,
        retain_until=recording.retain_until,
        length=upload.length,
        content_type=upload.content_type,
    )


def store_object(runtime: Runtime, done: Finished) -> None:
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


def fail_upload(runtime: Runtime, done: Finished, reason: str, actor_id: uuid.UUID | None) -> None:
    """Status ``failed``, the upload row and the object removed; audited."""
    details = {"reason": reason}
    event = background_event(
        AuditAction.UPLOAD_FAILED, actor_id, done.recording_id, details, Outcome.FAILURE
    )
    with runtime.sessions() as session:
        discard(session, done.upload_id, done.recording_id, event)
        session.commit()
    try_remove_stored(runtime, done.key, done.multipart_id)


def verify_and_publish(
    runtime: Runtime,
    done: Finished,
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
        fail_upload(runtime, done, "verification_failed", actor_id)
        return Status.FAILED.value
    except StorageError as exc:
        raise StorageUnavailable() from exc
    with runtime.sessions() as session:
        upload, recording = load_upload(session, done.upload_id)
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
        upload.updated_at = next_version(upload.updated_at, now)
        details = {
            "size": done.length,
            "content_type": done.content_type,
            "plaintext_sha256": digest.plaintext_sha256,
            "ciphertext_sha256": digest.ciphertext_sha256,
        }
        audit.record(
            session,
            background_event(AuditAction.UPLOAD_COMPLETED, actor_id, recording.id, details),
        )
        session.commit()
    return Status.AVAILABLE.value


def complete_upload(
    runtime: Runtime,
    upload_id: uuid.UUID,
    data_key: bytes,
    actor_id: uuid.UUID | None,
    now: datetime,
) -> None:
    """Join the parts now; verify in the background; the recording is ``processing``.

    The final PATCH is answered once the whole object is in the store. Reading it back takes
    about as long again as writing it, so the verify pass runs afterwards on a background
    thread and moves the recording to ``available`` (or ``failed``); the upload page polls
    the recording's status. If this process stops before the pass ends, the lifecycle run
    finds the recording still ``processing`` and verifies it then.
    """
    with runtime.sessions() as session:
        done = finished_upload(session, upload_id)
    try:
        store_object(runtime, done)
    except StorageError as exc:
        fail_upload(runtime, done, "storage_unavailable", actor_id)
        raise StorageUnavailable() from exc
    _publish_later(runtime, done, data_key, actor_id, now)


def _publish_later(
    runtime: Runtime,
    done: Finished,
    data_key: bytes,
    actor_id: uuid.UUID | None,
    now: datetime,
) -> None:
    def run() -> str:
        try:
            return verify_and_publish(runtime, done, data_key, actor_id, now)
        except Exception:
            # Nobody waits for this thread: say what happened. The recording stays
            # ``processing`` and the lifecycle run verifies it again.
            _log.exception("verifying upload %s failed; left for the lifecycle run", done.upload_id)
            raise

    runtime.upload_workers.verify_later(run)
