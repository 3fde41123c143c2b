"""The year-end (procedure §15, §19, §21): every recording of a school year is destroyed no
later than its last school day, provably and in every copy.

A year-end runs six steps, each committed with its audit event (``year_end:step``) and
marked done on the year's ``year_ends`` row, so a run stopped at any point (a crash, a
killed process, a store that is down) is resumed by the next one and ends with exactly one
certificate:

1. **freeze**: the year is closed the moment its row exists (no new upload, order or view;
   a stream already running stops at its next check); uploads in flight are aborted;
2. **manifest**: what will be destroyed (recordings, ciphertext hashes, key ids) is written
   before anything is;
3. **destroy_keys**: the year key is destroyed and the master key rotated (``keys``);
4. **delete_objects**: every object of the year, every version, and every unfinished
   multipart write leaves the store; objects the store refuses are kept for the operator;
5. **tombstones**: the recordings become tombstones with status ``shredded``;
6. **certificate**: one signed deletion certificate for the year.

Callers hold the lifecycle lock (``run_lock``), so two runners never interleave.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from storage_backends.base import StorageError, StoreUnavailable
from vault import signing
from vault.models import (
    AuditEvent,
    MasterKeyVersion,
    Recording,
    SchoolYearKey,
    Upload,
    User,
    YearEnd,
)
from vault.services import audit, calendar, certificates, keys
from vault.services.access import Status
from vault.services.actors import OPERATOR, Actor
from vault.services.audit import AuditAction
from vault.services.errors import N_, Conflict, StorageUnavailable
from vault.services.run_lock import lifecycle_lock
from vault.services.runtime import Runtime
from vault.services.upload_records import (
    OBJECT_PREFIX,
    background_event,
    discard,
    object_key_for,
    remove_stored,
)

#: The kind of the year's deletion certificate.
YEAR_SHRED = "year_shred"
#: Why a shredded recording is gone, as its tombstone records it.
SHRED_REASON = "year_end"


class YearEndStep(StrEnum):
    FREEZE = "freeze"
    MANIFEST = "manifest"
    DESTROY_KEYS = "destroy_keys"
    DELETE_OBJECTS = "delete_objects"
    TOMBSTONES = "tombstones"
    CERTIFICATE = "certificate"


# Called after each step's commit. Tests pass one that stops the run there, to prove that
# the next run resumes; production never does.
AfterStep = Callable[[YearEndStep], None]


class YearNotDue(Conflict):
    message = N_(
        "The school year %(school_year)s is shredded on %(shred_at)s. "
        "Close it before then only with --early."
    )


class LifecycleBusy(Conflict):
    message = N_(
        "Another lifecycle run or year-end is in progress. Try again when it has finished."
    )


@dataclass(frozen=True)
class Plan:
    """What a year-end of ``school_year`` would do now (the dry run, and the consequence a
    calendar change shows)."""

    school_year: str
    shred_at: datetime
    due: bool
    recordings: int
    teachers: int
    objects: int
    deleted_early: int
    steps_left: tuple[YearEndStep, ...]


@dataclass(frozen=True)
class YearEndOutcome:
    school_year: str
    steps_run: tuple[YearEndStep, ...]
    certificate_id: uuid.UUID | None
    keys_pending: str | None
    objects_pending: int

    @property
    def complete(self) -> bool:
        return self.certificate_id is not None and self.keys_pending is None


def shred_at(session: Session, runtime: Runtime, school_year: str) -> datetime:
    settings = runtime.settings
    return calendar.shred_time(
        calendar.last_day(session, school_year), settings.shred_hour, settings.zone
    )


def due_years(runtime: Runtime, now: datetime) -> list[str]:
    """The school years whose shred time has passed and whose year-end has not finished."""
    with runtime.sessions() as session:
        finished = set(
            session.scalars(select(YearEnd.school_year).where(YearEnd.certified_at.is_not(None)))
        )
        started = set(session.scalars(select(YearEnd.school_year)))
        years = {entry.school_year for entry in calendar.known_years(session)} | started
        return [
            year
            for year in sorted(years - finished)
            if year in started or shred_at(session, runtime, year) <= now
        ]


def progress(session: Session, school_year: str) -> YearEnd | None:
    """The year's year-end so far (None if it has not started)."""
    return session.get(YearEnd, school_year)


def plan(runtime: Runtime, school_year: str, now: datetime) -> Plan:
    """What a year-end would do; reads only."""
    calendar.parse_school_year(school_year)
    with runtime.sessions() as session:
        state = session.get(YearEnd, school_year)
        statuses = session.execute(
            select(Recording.status, Recording.owner_id, Recording.object_key).where(
                Recording.school_year == school_year
            )
        ).all()
        live = [row for row in statuses if row.status not in _TOMBSTONES]
        return Plan(
            school_year=school_year,
            shred_at=shred_at(session, runtime, school_year),
            due=shred_at(session, runtime, school_year) <= now,
            recordings=len(live),
            teachers=len({row.owner_id for row in live}),
            objects=sum(1 for row in live if row.object_key),
            deleted_early=sum(1 for row in statuses if row.status == Status.DELETED.value),
            steps_left=_steps_left(state),
        )


def run(
    runtime: Runtime,
    school_year: str,
    now: datetime,
    *,
    early: bool,
    actor: Actor = OPERATOR,
    after_step: AfterStep | None = None,
) -> YearEndOutcome:
    """`recvault year-end`: take the lifecycle lock and run (or resume) the year-end."""
    with _only_runner(runtime, school_year):
        return run_locked(
            runtime, school_year, now, early=early, actor=actor, after_step=after_step
        )


@contextmanager
def _only_runner(runtime: Runtime, school_year: str) -> Iterator[None]:
    """A valid school year, and the lifecycle lock held for the block (refused if taken)."""
    calendar.parse_school_year(school_year)
    with lifecycle_lock(runtime) as held:
        if not held:
            raise LifecycleBusy()
        yield


def close_now(runtime: Runtime, school_year: str, now: datetime, *, actor: Actor) -> None:
    """Close a year at once from the web (its first step, the freeze); the scheduler's next
    lifecycle run does the rest. The web app may not hold the keys writable (the compose
    deployment mounts them read-only there), and destroying them is the scheduler's job."""
    with _only_runner(runtime, school_year):
        steps = _YearEnd(runtime, school_year, now, actor)
        steps.start(early=True)
        if YearEndStep.FREEZE in steps.left():
            steps.perform(YearEndStep.FREEZE)


def run_locked(
    runtime: Runtime,
    school_year: str,
    now: datetime,
    *,
    early: bool,
    actor: Actor = OPERATOR,
    after_step: AfterStep | None = None,
) -> YearEndOutcome:
    """The year-end, for a caller that holds the lifecycle lock."""
    steps = _YearEnd(runtime, school_year, now, actor)
    steps.start(early)
    done: list[YearEndStep] = []
    for step in steps.left():
        steps.perform(step)
        done.append(step)
        if after_step is not None:
            after_step(step)
    with runtime.sessions() as session:
        state = session.get(YearEnd, school_year)
        assert state is not None
        return YearEndOutcome(
            school_year=school_year,
            steps_run=tuple(done),
            certificate_id=state.certificate_id if state.certified_at else None,
            keys_pending=state.keys_pending,
            objects_pending=len(state.objects_pending or []),
        )


_TOMBSTONES = frozenset({Status.DELETED.value, Status.SHREDDED.value})

# The column that marks each step done.
_DONE_AT = {
    YearEndStep.FREEZE: YearEnd.frozen_at,
    YearEndStep.MANIFEST: YearEnd.manifest_at,
    YearEndStep.DESTROY_KEYS: YearEnd.keys_destroyed_at,
    YearEndStep.DELETE_OBJECTS: YearEnd.objects_deleted_at,
    YearEndStep.TOMBSTONES: YearEnd.tombstoned_at,
    YearEndStep.CERTIFICATE: YearEnd.certified_at,
}


def _steps_left(state: YearEnd | None) -> tuple[YearEndStep, ...]:
    if state is None:
        return tuple(YearEndStep)
    return tuple(step for step in YearEndStep if getattr(state, _DONE_AT[step].key) is None)


class _YearEnd:
    """The steps of one school year's year-end at one instant."""

    def __init__(self, runtime: Runtime, school_year: str, now: datetime, actor: Actor) -> None:
        self.runtime = runtime
        self.school_year = school_year
        self.now = now
        self.actor = actor

    def start(self, early: bool) -> None:
        """Close the year (the row's existence does), or refuse before its shred time."""
        with self.runtime.sessions() as session, session.begin():
            if session.get(YearEnd, self.school_year) is not None:
                return
            scheduled = shred_at(session, self.runtime, self.school_year)
            if not early and self.now < scheduled:
                raise YearNotDue(
                    school_year=self.school_year,
                    shred_at=scheduled.strftime("%Y-%m-%d %H:%M"),
                )
            session.add(
                YearEnd(
                    school_year=self.school_year,
                    early=self.now < scheduled,
                    started_at=self.now,
                    objects_pending=[],
                )
            )
            self._record(session, "started", {"early": self.now < scheduled})

    def left(self) -> tuple[YearEndStep, ...]:
        with self.runtime.sessions() as session:
            return _steps_left(session.get(YearEnd, self.school_year))

    def perform(self, step: YearEndStep) -> None:
        work: dict[YearEndStep, Callable[[], None]] = {
            YearEndStep.FREEZE: self.freeze,
            YearEndStep.MANIFEST: self.manifest,
            YearEndStep.DESTROY_KEYS: self.destroy_keys,
            YearEndStep.DELETE_OBJECTS: self.delete_objects,
            YearEndStep.TOMBSTONES: self.tombstones,
            YearEndStep.CERTIFICATE: self.certificate,
        }
        work[step]()

    # -- the steps -------------------------------------------------------------------------

    def freeze(self) -> None:
        """Abort the uploads still receiving their file: the policy already refuses their
        next request, since the year is closed."""
        with self.runtime.sessions() as session:
            in_flight = session.execute(
                select(Upload.id, Upload.multipart_id, Recording.id, Recording.owner_id, Recording)
                .join(Recording, Recording.id == Upload.recording_id)
                .where(Recording.school_year == self.school_year, Upload.completed_at.is_(None))
            ).all()
            stored = [
                (upload_id, multipart_id, recording_id, owner_id, _object_key(recording))
                for upload_id, multipart_id, recording_id, owner_id, recording in in_flight
            ]
        for upload_id, multipart_id, recording_id, owner_id, key in stored:
            remove_stored(self.runtime, key, multipart_id)
            event = background_event(
                AuditAction.UPLOAD_TERMINATED,
                owner_id,
                recording_id,
                {"upload_id": str(upload_id), "reason": SHRED_REASON},
            )
            with self.runtime.sessions() as session, session.begin():
                discard(session, upload_id, recording_id, event)
        self._mark(YearEndStep.FREEZE, {"uploads_aborted": len(stored)})

    def manifest(self) -> None:
        keyring = self.runtime.keyring
        with keys.keyring_errors(), self.runtime.sessions() as session, session.begin():
            state = self._state(session)
            recordings = session.scalars(
                select(Recording)
                .where(Recording.school_year == self.school_year)
                .order_by(Recording.lesson_date, Recording.id)
            ).all()
            names: dict[uuid.UUID, str] = dict(
                session.execute(
                    select(User.id, User.full_name).where(
                        User.id.in_(
                            select(Recording.owner_id).where(
                                Recording.school_year == self.school_year
                            )
                        )
                    )
                ).all()
            )
            year_key = session.get(SchoolYearKey, self.school_year)
            document: dict[str, Any] = {
                "recordings": [_listed(recording, names) for recording in recordings],
                "keys": {
                    "school_year_key": None
                    if year_key is None or year_key.wrapped_key is None
                    else {
                        "school_year": self.school_year,
                        "fingerprint": keyring.year_key_fingerprint(session, self.school_year),
                        "wrapped_by_master_version": year_key.master_version,
                    },
                    "master_versions": [
                        {"version": row.version, "fingerprint": row.fingerprint}
                        for row in session.scalars(
                            select(MasterKeyVersion)
                            .where(MasterKeyVersion.destroyed_at.is_(None))
                            .order_by(MasterKeyVersion.version)
                        )
                    ],
                },
                "copies_outside_the_vault": self._downloads(session),
            }
            state.manifest = document
            state.manifest_at = self.now
            self._record(
                session,
                YearEndStep.MANIFEST.value,
                {
                    "recordings": len(recordings),
                    "sha256": hashlib.sha256(signing.canonical_json(document).encode()).hexdigest(),
                },
            )

    def destroy_keys(self) -> None:
        # Destroying a key already destroyed is a no-op there, so a resumed run only
        # finishes the rotation.
        outcome = keys.shred_year_key(self.runtime, self.school_year, self.now)
        pending = outcome.rotation.pending_operator_action
        with self.runtime.sessions() as session, session.begin():
            state = self._state(session)
            state.keys_pending = pending
            state.keys_destroyed_at = self.now
            self._record(
                session,
                YearEndStep.DESTROY_KEYS.value,
                {"pending_operator_action": pending is not None},
            )

    def delete_objects(self) -> None:
        """Every version of every object of the year, and unfinished multipart writes.

        A store that is down stops the step (the next run does it again; deleting is
        idempotent). An object the store refuses to delete is kept for the operator."""
        store = self.runtime.store
        with self.runtime.sessions() as session:
            manifest = self._state(session).manifest or {}
        prefix = f"{OBJECT_PREFIX}{self.school_year}/"
        listed = {
            entry["object_key"]
            for entry in manifest.get("recordings", [])
            if entry["status"] != Status.DELETED.value
        }
        refused: list[dict[str, str]] = []
        try:
            for write in store.list_stale_multipart(self.now + timedelta(days=1)):
                if write.key.startswith(prefix) or write.key in listed:
                    store.abort_multipart(write.key, write.upload_id)
            keys_to_delete = sorted(listed | set(store.iter_keys(prefix)))
            for key in keys_to_delete:
                try:
                    store.delete(key)
                except StoreUnavailable:
                    raise
                except StorageError as exc:
                    refused.append({"key": key, "error": str(exc)})
        except StorageError as exc:
            raise StorageUnavailable() from exc
        with self.runtime.sessions() as session, session.begin():
            state = self._state(session)
            state.objects_pending = refused
            state.objects_deleted_at = self.now
            self._record(
                session,
                YearEndStep.DELETE_OBJECTS.value,
                {"deleted": len(keys_to_delete) - len(refused), "refused": len(refused)},
            )

    def tombstones(self) -> None:
        with self.runtime.sessions() as session, session.begin():
            state = self._state(session)
            session.execute(
                delete(Upload)
                .where(
                    Upload.recording_id.in_(
                        select(Recording.id).where(Recording.school_year == self.school_year)
                    )
                )
                .execution_options(synchronize_session=False)
            )
            changed = session.execute(
                update(Recording)
                .where(
                    Recording.school_year == self.school_year,
                    Recording.status.not_in(_TOMBSTONES),
                )
                .values(
                    status=Status.SHREDDED.value,
                    status_before_restriction=None,
                    deleted_at=self.now,
                    deletion_reason=SHRED_REASON,
                    wrapped_data_key=None,
                )
                .execution_options(synchronize_session=False)
            )
            self._record(
                session,
                YearEndStep.TOMBSTONES.value,
                {"shredded": int(getattr(changed, "rowcount", 0))},
            )
            state.tombstoned_at = self.now

    def certificate(self) -> None:
        settings = self.runtime.settings
        with self.runtime.sessions() as session, session.begin():
            state = self._state(session)
            assert state.manifest is not None
            statement = _statement(
                session,
                state,
                calendar.shred_time(
                    calendar.last_day(session, self.school_year),
                    settings.shred_hour,
                    settings.zone,
                ),
            )
            issued = certificates.issue(
                session,
                self.runtime.keyring,
                kind=YEAR_SHRED,
                school_year=self.school_year,
                statement=statement,
                now=self.now,
            )
            # The tombstones name it; signed and named in one transaction, so there is
            # never a second certificate nor a tombstone without one.
            session.execute(
                update(Recording)
                .where(
                    Recording.school_year == self.school_year,
                    Recording.status == Status.SHREDDED.value,
                    Recording.certificate_id.is_(None),
                )
                .values(certificate_id=issued.id)
                .execution_options(synchronize_session=False)
            )
            state.certificate_id = issued.id
            state.certified_at = self.now
            self._record(session, YearEndStep.CERTIFICATE.value, {"certificate_id": str(issued.id)})

    # -- helpers ---------------------------------------------------------------------------

    def _state(self, session: Session) -> YearEnd:
        state = session.get(YearEnd, self.school_year, populate_existing=True)
        assert state is not None, "the year-end has started"
        return state

    def _mark(self, step: YearEndStep, details: dict[str, Any]) -> None:
        with self.runtime.sessions() as session, session.begin():
            setattr(self._state(session), _DONE_AT[step].key, self.now)
            self._record(session, step.value, details)

    def _record(self, session: Session, step: str, details: dict[str, Any]) -> None:
        audit.record(
            session,
            audit.by(
                self.actor,
                AuditAction.YEAR_END_STEP,
                object_id=self.school_year,
                details={"step": step, "via": self.actor.via, **details},
            ),
        )

    def _downloads(self, session: Session) -> list[dict[str, str]]:
        """Owner downloads of the year's recordings: copies outside the vault."""
        rows = session.execute(
            select(AuditEvent.recording_id, AuditEvent.occurred_at, User.username)
            .join(Recording, Recording.id == AuditEvent.recording_id)
            .join(User, User.id == AuditEvent.actor_id, isouter=True)
            .where(
                Recording.school_year == self.school_year,
                AuditEvent.action == AuditAction.RECORDING_DOWNLOADED.value,
            )
            .order_by(AuditEvent.id)
        )
        return [
            {
                "recording_id": str(recording_id),
                "downloaded_at": occurred_at.isoformat(),
                "by": username or "unknown",
            }
            for recording_id, occurred_at, username in rows
        ]


def _object_key(recording: Recording) -> str:
    return recording.object_key or object_key_for(recording)


def _listed(recording: Recording, names: dict[uuid.UUID, str]) -> dict[str, Any]:
    return {
        "id": str(recording.id),
        "title": recording.title,
        "owner": names.get(recording.owner_id),
        "subject": recording.subject,
        "class_group": recording.class_group,
        "lesson_date": recording.lesson_date.isoformat(),
        "status": recording.status,
        "object_key": _object_key(recording),
        "size_bytes": recording.size_bytes,
        "ciphertext_sha256": recording.ciphertext_sha256,
        "certificate_id": str(recording.certificate_id) if recording.certificate_id else None,
    }


def _statement(session: Session, state: YearEnd, scheduled: datetime) -> dict[str, Any]:
    """The year certificate's content, in the early-deletion certificate's shape."""
    manifest = state.manifest or {}
    listed: Sequence[dict[str, Any]] = manifest.get("recordings", [])
    versions = {
        row.version: row
        for row in session.scalars(
            select(MasterKeyVersion).where(
                MasterKeyVersion.version.in_(
                    [entry["version"] for entry in manifest["keys"]["master_versions"]]
                )
            )
        )
    }
    masters = [
        {
            "version": entry["version"],
            "fingerprint": entry["fingerprint"],
            "destroyed_at": certificates.iso(versions[entry["version"]].destroyed_at),
        }
        for entry in manifest["keys"]["master_versions"]
    ]
    complete = state.keys_pending is None and all(m["destroyed_at"] for m in masters)
    return {
        "recordings": [
            _certified(entry) for entry in listed if entry["status"] != Status.DELETED.value
        ],
        "deleted_early": [
            {"id": entry["id"], "certificate_id": entry["certificate_id"]}
            for entry in listed
            if entry["status"] == Status.DELETED.value
        ],
        "deleted_at": certificates.iso(state.tombstoned_at),
        "keys": {
            "school_year_key": manifest["keys"]["school_year_key"],
            "master_versions": masters,
        },
        "cryptographic_erasure": {
            "complete": complete,
            "completed_at": certificates.iso(state.keys_destroyed_at) if complete else None,
            "explanation": (
                "The school year's key was destroyed and every master key version that ever "
                "wrapped it was replaced and destroyed, so no copy of these recordings "
                "(in any backup of the database or the store) can be decrypted."
                if complete
                else "The school year's key was removed from the database, but a master key "
                "version that wrapped it is not destroyed yet: a database backup from "
                "before the year-end, with that key, could still decrypt these recordings. "
                "Finish the step under 'pending'."
            ),
        },
        "copies_outside_the_vault": manifest.get("copies_outside_the_vault", []),
        "pending": {
            "objects": list(state.objects_pending or []),
            "keys": state.keys_pending,
        },
        "times": {
            "scheduled": scheduled.isoformat(),
            "early": state.early,
            "started_at": state.started_at.isoformat(),
            "frozen_at": certificates.iso(state.frozen_at),
            "manifest_at": certificates.iso(state.manifest_at),
            "keys_destroyed_at": certificates.iso(state.keys_destroyed_at),
            "objects_deleted_at": certificates.iso(state.objects_deleted_at),
            "tombstoned_at": certificates.iso(state.tombstoned_at),
        },
    }


def _certified(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        key: entry[key]
        for key in (
            "id",
            "title",
            "owner",
            "subject",
            "class_group",
            "lesson_date",
            "object_key",
            "size_bytes",
            "ciphertext_sha256",
        )
    }
