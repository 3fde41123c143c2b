"""`recvault fsck`: do the database and the storage agree?

Findings: a row whose object is missing, an object no row references, a multipart write
nobody owns, and tags that disagree with the database. ``repair`` fixes each the only safe
way: an orphan object or write is removed (it is ciphertext nobody can reach), a missing
object marks its recording ``failed`` (so no metadata points to nothing), wrong tags are
rewritten from the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select

from storage_backends.base import ObjectNotFound, StorageError
from vault.models import Recording, Upload
from vault.services import audit, calendar, upload_records
from vault.services.audit import AuditAction
from vault.services.errors import StorageUnavailable
from vault.services.runtime import Runtime

RECORDINGS_PREFIX = "recordings/"
# Live statuses whose object must exist.
STORED_STATUSES = frozenset({"available", "restricted"})
# A write younger than this may belong to an upload whose row is being committed right now.
STALE_WRITE_AGE = timedelta(hours=24)


class FindingKind(StrEnum):
    MISSING_OBJECT = "missing_object"
    ORPHAN_OBJECT = "orphan_object"
    STALE_WRITE = "stale_write"
    TAG_MISMATCH = "tag_mismatch"


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    object_key: str
    detail: str
    repaired: bool = False


def check(runtime: Runtime, now: datetime, *, repair: bool) -> list[Finding]:
    try:
        return _check(runtime, now, repair=repair)
    except StorageError as exc:
        raise StorageUnavailable() from exc


def _check(runtime: Runtime, now: datetime, *, repair: bool) -> list[Finding]:
    store = runtime.store
    findings: list[Finding] = []
    with runtime.sessions() as session:
        recordings = list(session.scalars(select(Recording)))
        writing = set(
            session.scalars(select(Upload.multipart_id).where(Upload.multipart_id.is_not(None)))
        )
    # An object may exist for a live recording, or be in the making for one being uploaded.
    expected_keys = {
        recording.object_key or upload_records.object_key_for(recording)
        for recording in recordings
        if recording.status not in ("deleted", "shredded", "failed")
    }

    for recording in recordings:
        key = recording.object_key
        if key is None or recording.status not in STORED_STATUSES:
            continue
        try:
            tags = store.get_tags(key)
        except ObjectNotFound:
            if repair:
                _mark_failed(runtime, recording.id)
            findings.append(
                Finding(
                    FindingKind.MISSING_OBJECT,
                    key,
                    f"recording {recording.id} has no object",
                    repair,
                )
            )
            continue
        expected = calendar.object_tags(recording.school_year, recording.retain_until)
        if tags != expected:
            if repair:
                store.set_tags(key, expected)
            findings.append(
                Finding(
                    FindingKind.TAG_MISMATCH, key, f"tags {tags} differ from {expected}", repair
                )
            )

    for key in store.iter_keys(RECORDINGS_PREFIX):
        if key in expected_keys:
            continue
        if repair:
            store.delete(key)
        findings.append(
            Finding(FindingKind.ORPHAN_OBJECT, key, "no recording references it", repair)
        )

    for write in store.list_stale_multipart(now - STALE_WRITE_AGE):
        if write.upload_id in writing:
            continue
        if repair:
            store.abort_multipart(write.key, write.upload_id)
        findings.append(
            Finding(
                FindingKind.STALE_WRITE,
                write.key,
                f"unfinished write started {write.started.isoformat()}",
                repair,
            )
        )

    if repair and findings:
        with runtime.sessions() as session, session.begin():
            audit.record(
                session,
                audit.Event(
                    AuditAction.STORAGE_REPAIRED,
                    details={
                        kind.value: sum(1 for f in findings if f.kind is kind)
                        for kind in FindingKind
                    },
                ),
            )
    return findings


def _mark_failed(runtime: Runtime, recording_id: object) -> None:
    with runtime.sessions() as session, session.begin():
        recording = session.get(Recording, recording_id)
        if recording is not None:
            recording.status = "failed"
