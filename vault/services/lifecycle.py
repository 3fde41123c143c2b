"""The daily lifecycle run (`recvault lifecycle run`), which a scheduler starts hourly.

One runner at a time (``run_lock``): a second one started meanwhile does nothing. In order:
each school year whose shred time has passed gets its year-end (``year_end``, resumed if an
earlier run stopped half-way); the store's expiry rules follow the calendar; abandoned
uploads are cleaned; lapsed views are ended and summarised; the counts of refused
unauthenticated requests of past minutes become audit events; tombstones past
VAULT_TOMBSTONE_DAYS are purged; reminders of deletions in the next 30 days are e-mailed;
a signed checkpoint of the audit chain is made if anything happened since the last; and
audit events past their retention are purged up to a checkpoint (``audit_retention``).
Each step is recorded as a ``lifecycle:step`` event with what it did, or that it failed."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from storage_backends.base import ObjectNotFound, StorageError
from vault.models import AccessOrderRecording, Recording, Upload, View
from vault.services import (
    audit,
    audit_checkpoints,
    audit_retention,
    keys,
    reminders,
    streaming,
    year_end,
)
from vault.services.access import Status
from vault.services.audit import AuditAction, Outcome
from vault.services.errors import Gone, KeysUnavailable, ServiceError, StorageUnavailable
from vault.services.run_lock import lifecycle_lock
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


class Step(StrEnum):
    """The steps of a run, in order; each is recorded as a ``lifecycle:step`` event."""

    YEAR_END = "year_end"
    STORAGE_RULES = "storage_rules"
    STALE_UPLOADS = "stale_uploads"
    IDLE_VIEWS = "idle_views"
    DENIAL_TALLIES = "denial_tallies"
    TOMBSTONE_PURGE = "tombstone_purge"
    REMINDERS = "reminders"
    AUDIT_CHECKPOINT = "audit_checkpoint"
    AUDIT_PURGE = "audit_purge"


@dataclass(frozen=True)
class StepFailure:
    step: Step
    error: str


@dataclass(frozen=True)
class DailyReport:
    stale_uploads: list[CleanupItem]
    ended_views: int
    # The year-ends this run finished or advanced; in a dry run, those it would start.
    year_ends: tuple[year_end.YearEndOutcome, ...] = ()
    years_due: tuple[year_end.Plan, ...] = ()
    denial_tallies_recorded: int = 0
    tombstones_purged: int = 0
    reminders_sent: int = 0
    # The checkpoint signed at the end of the run (the number of events it covers), if
    # anything happened since the last one.
    checkpoint_tree_size: int | None = None
    # The audit events removed past VAULT_AUDIT_RETENTION_DAYS, if any were.
    audit_purge: audit_retention.Purge | None = None
    # Steps that could not be done this time; the others ran, and the next run tries again.
    failures: tuple[StepFailure, ...] = ()
    # Another runner held the lifecycle lock: this one did nothing.
    busy: bool = False


_Result = TypeVar("_Result")


class _Steps:
    """Runs each step on its own: one that fails (storage or keys unavailable) is recorded
    and the others still run, so a store that is down does not stop the audit checkpoint."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.failures: list[StepFailure] = []

    def run(
        self,
        step: Step,
        work: Callable[[], _Result],
        summary: Callable[[_Result], dict[str, Any]],
    ) -> _Result | None:
        try:
            result = work()
        except ServiceError as exc:
            self.failures.append(StepFailure(step, str(exc)))
            self._record(step, Outcome.FAILURE, {"error": type(exc).__name__})
            return None
        self._record(step, Outcome.SUCCESS, summary(result))
        return result

    def _record(self, step: Step, outcome: Outcome, details: dict[str, Any]) -> None:
        with self.runtime.sessions() as session, session.begin():
            audit.record(
                session,
                audit.Event(
                    AuditAction.LIFECYCLE_STEP,
                    outcome=outcome,
                    object_id=step.value,
                    details={"step": step.value, **details},
                ),
            )


def run(runtime: Runtime, now: datetime, *, dry_run: bool) -> DailyReport:
    """The hourly run; each step audited. ``dry_run`` only reports the years due and the
    stale uploads."""
    if dry_run:
        return DailyReport(
            cleanup_stale_uploads(runtime, now, dry_run=True),
            0,
            years_due=tuple(
                year_end.plan(runtime, year, now) for year in year_end.due_years(runtime, now)
            ),
        )
    with lifecycle_lock(runtime) as held:
        if not held:
            return DailyReport([], 0, busy=True)
        return _run_locked(runtime, now)


def _run_locked(runtime: Runtime, now: datetime) -> DailyReport:
    steps = _Steps(runtime)
    settings = runtime.settings

    def in_transaction(work: Callable[[Session], _Result]) -> Callable[[], _Result]:
        def done() -> _Result:
            with runtime.sessions() as session, session.begin():
                return work(session)

        return done

    # First: the procedure's deadline matters more than any tidying below.
    shredded = [
        outcome
        for year in year_end.due_years(runtime, now)
        if (
            outcome := steps.run(
                Step.YEAR_END,
                partial(year_end.run_locked, runtime, year, now, early=False),
                lambda done: {
                    "school_year": done.school_year,
                    "steps": [step.value for step in done.steps_run],
                    "certificate_id": str(done.certificate_id) if done.certificate_id else None,
                },
            )
        )
        is not None
    ]
    steps.run(
        Step.STORAGE_RULES,
        lambda: keys.apply_storage_rules(runtime),
        lambda rules: {"years": len(rules.years)},
    )
    cleaned = steps.run(
        Step.STALE_UPLOADS,
        lambda: cleanup_stale_uploads(runtime, now),
        lambda items: {"cleaned": len(items)},
    )
    ended = steps.run(
        Step.IDLE_VIEWS,
        in_transaction(lambda s: streaming.end_idle_views(s, now, settings.view_idle_timeout)),
        lambda count: {"ended": count},
    )
    tallies = steps.run(
        Step.DENIAL_TALLIES,
        in_transaction(lambda s: audit.flush_denial_tallies(s, audit.denial_minute(now))),
        lambda count: {"recorded": count},
    )
    purged = steps.run(
        Step.TOMBSTONE_PURGE,
        in_transaction(lambda s: purge_tombstones(s, now, settings.tombstone_days)),
        lambda count: {"purged": count},
    )
    reminded = steps.run(
        Step.REMINDERS,
        lambda: reminders.send_reminders(runtime, now),
        lambda sent: {"sent": sent.sent, "failed": sent.failed},
    )
    # After the steps that record acts, so that it covers them.
    checkpoint = steps.run(
        Step.AUDIT_CHECKPOINT,
        lambda: audit_checkpoints.checkpoint_now(runtime, now),
        lambda made: {"tree_size": made.tree_size if made is not None else None},
    )
    purge = steps.run(
        Step.AUDIT_PURGE,
        in_transaction(
            lambda s: audit_retention.purge_expired(s, now, settings.audit_retention_days)
        ),
        lambda done: {"through_seq": done.through_seq if done is not None else None},
    )
    return DailyReport(
        stale_uploads=cleaned or [],
        ended_views=ended or 0,
        year_ends=tuple(shredded),
        denial_tallies_recorded=tallies or 0,
        tombstones_purged=purged or 0,
        reminders_sent=reminded.sent if reminded is not None else 0,
        checkpoint_tree_size=checkpoint.tree_size if checkpoint is not None else None,
        audit_purge=purge,
        failures=tuple(steps.failures),
    )


# -- tombstones ------------------------------------------------------------------------------


def purge_tombstones(session: Session, now: datetime, keep_days: int) -> int:
    """Remove tombstones deleted more than ``keep_days`` ago (SPEC §4: art. 15 questions are
    answered from them until then). The purge is one audit event naming every id."""
    expired = list(
        session.scalars(
            select(Recording.id).where(
                Recording.status.in_([Status.DELETED.value, Status.SHREDDED.value]),
                Recording.deleted_at < now - timedelta(days=keep_days),
            )
        )
    )
    if not expired:
        return 0
    for chunk_start in range(0, len(expired), _PURGE_CHUNK):
        chunk = expired[chunk_start : chunk_start + _PURGE_CHUNK]
        session.execute(
            delete(AccessOrderRecording).where(AccessOrderRecording.recording_id.in_(chunk))
        )
        session.execute(delete(View).where(View.recording_id.in_(chunk)))
        session.execute(delete(Recording).where(Recording.id.in_(chunk)))
    audit.record(
        session,
        audit.Event(
            AuditAction.RECORDING_TOMBSTONES_PURGED,
            details={
                "count": len(expired),
                "keep_days": keep_days,
                "recording_ids": [str(recording_id) for recording_id in expired],
            },
        ),
    )
    return len(expired)


# Bound the statements' parameter lists (SQLite allows 32,766 per statement).
_PURGE_CHUNK = 500


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
