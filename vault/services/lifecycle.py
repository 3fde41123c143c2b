"""The daily lifecycle run (`recvault lifecycle run`), which a scheduler starts hourly:
abandoned uploads are cleaned, lapsed views are ended and summarised, and the counts of
refused unauthenticated requests of past minutes become audit events, a signed checkpoint of
the audit chain is made if anything happened since the last, and audit events past their
retention are purged up to a checkpoint (``audit_retention``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select

from storage_backends.base import ObjectNotFound, StorageError
from vault.models import Recording, Upload
from vault.services import audit, audit_checkpoints, audit_retention, streaming
from vault.services.access import Status
from vault.services.audit import AuditAction
from vault.services.errors import Gone, KeysUnavailable, StorageUnavailable
from vault.services.runtime import Runtime
from vault.services.upload_records import (
    OBJECT_PREFIX,
    background_event,
    discard,
    object_key_for,
    remove_stored,
    unwrap_data_key,
)
from vault.services.upload_verification import (
    fail_upload,
    finished_upload,
    store_object,
    verify_and_publish,
)

#: An upload that has not moved for this long is abandoned.
STALE_AFTER = timedelta(hours=24)


class CleanupKind(StrEnum):
    """What the clean-up found: an abandoned upload, one whose verify pass never ended, or
    a multipart write that no upload row names."""

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


@dataclass(frozen=True)
class DailyReport:
    stale_uploads: list[CleanupItem]
    ended_views: int
    denial_tallies_recorded: int = 0
    # The checkpoint signed at the end of the run (the number of events it covers), if
    # anything happened since the last one.
    checkpoint_tree_size: int | None = None
    # The audit events removed past VAULT_AUDIT_RETENTION_DAYS, if any were.
    audit_purge: audit_retention.Purge | None = None


def run(runtime: Runtime, now: datetime, *, dry_run: bool) -> DailyReport:
    cleaned = cleanup_stale_uploads(runtime, now, dry_run=dry_run)
    ended = tallies = 0
    checkpointed: int | None = None
    purge: audit_retention.Purge | None = None
    if not dry_run:
        with runtime.sessions() as session, session.begin():
            ended = streaming.end_idle_views(session, now, runtime.settings.view_idle_timeout)
        with runtime.sessions() as session, session.begin():
            tallies = audit.flush_denial_tallies(session, audit.denial_minute(now))
        # Last, so that it covers what this run recorded.
        checkpoint = audit_checkpoints.checkpoint_now(runtime, now)
        checkpointed = checkpoint.tree_size if checkpoint is not None else None
        with runtime.sessions() as session, session.begin():
            purge = audit_retention.purge_expired(
                session, now, runtime.settings.audit_retention_days
            )
    return DailyReport(
        stale_uploads=cleaned,
        ended_views=ended,
        denial_tallies_recorded=tallies,
        checkpoint_tree_size=checkpointed,
        audit_purge=purge,
    )


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
        remove_stored(runtime, key, multipart_id)
        details = {"upload_id": str(upload_id), "last_activity": updated_at.isoformat()}
        event = background_event(AuditAction.UPLOAD_EXPIRED, None, recording_id, details)
        with runtime.sessions() as session:
            if not discard(session, upload_id, recording_id, event, updated_at):
                items.pop()  # it moved on after all: a live upload, left alone
                session.rollback()
                continue
            session.commit()
    items.extend(_abort_orphans(runtime, cutoff, dry_run))
    return items


def _finish_received(runtime: Runtime, upload_id: uuid.UUID, now: datetime) -> None:
    """Complete and verify an upload whose last byte arrived but whose pass never ended."""
    with runtime.sessions() as session:
        done = finished_upload(session, upload_id)
        recording = session.get(Recording, done.recording_id)
        assert recording is not None
        try:
            data_key = unwrap_data_key(session, runtime, recording)
        except (Gone, KeysUnavailable):
            data_key = None
    if data_key is None:
        fail_upload(runtime, done, "key_unavailable", None)
        return
    try:
        store_object(runtime, done)
    except ObjectNotFound:
        fail_upload(runtime, done, "object_missing", None)
        return
    except StorageError as exc:
        raise StorageUnavailable() from exc
    verify_and_publish(runtime, done, data_key, None, now)


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
        if write.upload_id in known or not write.key.startswith(OBJECT_PREFIX):
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
