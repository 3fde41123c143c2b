"""An upload's rows and stored data as every step of the upload reads and ends them.

Creating, appending, verifying and cleaning up each open their own sessions (an upload
commits in steps); this module holds what they share: where the object goes, loading the
upload with its recording, the data key, the version token of the compare-and-swap, the
audit events of an upload, and discarding an upload with what the store holds for it.
"""

from __future__ import annotations

import uuid
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.orm import Session, defer

from storage_backends.base import StorageError
from vault import crypto
from vault.keyring import KeyringError, YearShredded
from vault.models import Recording, Upload
from vault.services import audit
from vault.services.access import Status
from vault.services.actors import Actor
from vault.services.audit import AuditAction, ErrorT, Outcome
from vault.services.errors import Gone, KeysUnavailable, NotFound, StorageUnavailable
from vault.services.runtime import Runtime

#: Every recording's object lives under this prefix; the stale-upload clean-up aborts
#: multipart writes no upload row names only there.
OBJECT_PREFIX = "recordings/"


def object_key_for(recording: Recording) -> str:
    return f"{OBJECT_PREFIX}{recording.school_year}/{recording.id}"


def load_upload(session: Session, upload_id: uuid.UUID) -> tuple[Upload, Recording]:
    # The ciphertext tail (up to a part) is only ever read in slices, by the part writer.
    upload = session.get(Upload, upload_id, options=[defer(Upload.pending_ciphertext)])
    if upload is None:
        raise NotFound()
    recording = session.get(Recording, upload.recording_id)
    if recording is None:  # the row cascades with its recording; defensive only
        raise NotFound()
    return upload, recording


def unwrap_data_key(session: Session, runtime: Runtime, recording: Recording) -> bytes:
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


def next_version(current: datetime, now: datetime) -> datetime:
    # The version token of the compare-and-swap: strictly increasing even if two commits
    # fall in the same microsecond or the clock steps back.
    return max(now, current + timedelta(microseconds=1))


def background_event(
    action: AuditAction,
    uploader_id: uuid.UUID | None,
    recording_id: uuid.UUID,
    details: dict[str, Any],
    outcome: Outcome = Outcome.SUCCESS,
) -> audit.Event:
    """The audit event of what the vault did with an upload after its requests (verify,
    publish, expire): under the uploader's account, with no request behind it."""
    return audit.Event(
        action, outcome=outcome, actor_id=uploader_id, recording_id=recording_id, details=details
    )


def rejection(
    session: Session,
    actor: Actor,
    recording_id: uuid.UUID,
    error: ErrorT,
    reason: str,
    **details: Any,
) -> ErrorT:
    """Refuse an upload act: audited and committed at once, the error handed back to raise."""
    return audit.deny(
        session,
        actor,
        error,
        {"reason": reason, **details},
        action=AuditAction.UPLOAD_REJECTED,
        recording_id=recording_id,
    )


def discard(
    session: Session,
    upload_id: uuid.UUID,
    recording_id: uuid.UUID,
    event: audit.Event,
    version: datetime | None = None,
) -> bool:
    """Delete the upload row, fail its recording and add ``event``, for the caller to commit.

    With ``version``, only a row nobody changed since that version goes; if it moved on,
    nothing is done and the answer is False.
    """
    removal = delete(Upload).where(Upload.id == upload_id)
    if version is not None:
        removal = removal.where(Upload.updated_at == version)
    removed = session.execute(removal.execution_options(synchronize_session=False))
    if version is not None and getattr(removed, "rowcount", 0) != 1:
        return False
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
    audit.record(session, event)
    return True


def remove_stored(runtime: Runtime, key: str, multipart_id: str | None) -> None:
    """Abort the multipart write and delete the object; a store that is down answers 503."""
    store = runtime.store
    try:
        if multipart_id is not None:
            store.abort_multipart(key, multipart_id)
        store.delete(key)
    except StorageError as exc:
        raise StorageUnavailable() from exc


def remove_leftovers(runtime: Runtime, key: str, keep: str) -> None:
    """Delete the object at ``key`` and abort every multipart write there except ``keep``.

    A failed attempt removes what it stored only if the store answers at that moment; its
    parts and object would otherwise wait for the lifecycle run. A new upload on the same
    recording calls this once it owns the recording, so nothing of the old attempt outlives
    it. A store that is down answers 503.
    """
    store = runtime.store
    try:
        for write in store.list_stale_multipart(datetime.max.replace(tzinfo=UTC)):
            if write.key == key and write.upload_id != keep:
                store.abort_multipart(key, write.upload_id)
        store.delete(key)
    except StorageError as exc:
        raise StorageUnavailable() from exc


def try_remove_stored(runtime: Runtime, key: str, multipart_id: str | None) -> None:
    """Best effort: what cannot be removed now is found again by the stale-upload cleanup."""
    store = runtime.store
    if multipart_id is not None:
        with suppress(StorageError):
            store.abort_multipart(key, multipart_id)
    with suppress(StorageError):
        store.delete(key)
