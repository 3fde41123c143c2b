"""Early deletion of a recording (procedure §19, §20): object gone, tombstone kept,
certificate signed.

Early deletion is not crypto-shredding. The object is deleted from storage at once, in
every version, and the wrapped data key is dropped from the live database; but while the
school-year key lives, a backup holding both the wrapped data key and the ciphertext could
still decrypt it. The certificate says so and names the year-end date on which
cryptographic erasure completes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage_backends.base import BlobStore, StorageError
from vault.keyring import Keyring
from vault.models import AuditEvent, Certificate, Recording, Upload, User
from vault.services import audit, calendar, certificates
from vault.services.access import Action, authorize
from vault.services.actors import Actor
from vault.services.audit import AuditAction
from vault.services.errors import N_, NotFound, StorageUnavailable, ValidationFailed

EARLY_DELETION = "early_deletion"


def copies_outside_the_vault(session: Session, recording_id: uuid.UUID) -> list[dict[str, str]]:
    """Every owner download of the recording: copies the teacher must delete by hand."""
    rows = session.execute(
        select(AuditEvent.occurred_at, User.username)
        .join(User, User.id == AuditEvent.actor_id, isouter=True)
        .where(
            AuditEvent.recording_id == recording_id,
            AuditEvent.action == AuditAction.RECORDING_DOWNLOADED.value,
        )
        .order_by(AuditEvent.id)
    )
    return [
        {"downloaded_at": occurred_at.isoformat(), "by": username or "unknown"}
        for occurred_at, username in rows
    ]


@dataclass(frozen=True)
class DeletionContext:
    """What a deletion works with besides who deletes what: the keyring that signs the
    certificate, the store the object leaves, and the time read on the school's calendar."""

    keyring: Keyring
    store: BlobStore
    now: datetime
    zone: ZoneInfo
    shred_hour: int


def delete_early(
    session: Session, deletion: DeletionContext, actor: Actor, recording_id: uuid.UUID
) -> Certificate:
    """Early deletion by the owner (or the responsible director), or by the director for a
    methodological recording (procedure §19, §20)."""
    recording = _recording(session, recording_id)
    decision = authorize(session, actor, Action.DELETE, recording, deletion.now, deletion.zone)
    return _remove(session, deletion, actor, recording, decision.reason, None)


def erase(
    session: Session,
    deletion: DeletionContext,
    actor: Actor,
    recording_id: uuid.UUID,
    request_reason: str,
) -> Certificate:
    """GDPR art. 17 erasure on a data subject's request, by the auditor (data-protection
    officer); it overrides a restriction."""
    recording = _recording(session, recording_id)
    authorize(session, actor, Action.ERASE, recording, deletion.now, deletion.zone)
    if not request_reason.strip():
        raise ValidationFailed({"reason": [N_("Say which request this answers.")]})
    return _remove(session, deletion, actor, recording, "erasure_request", request_reason.strip())


def _recording(session: Session, recording_id: uuid.UUID) -> Recording:
    recording = session.get(Recording, recording_id)
    if recording is None:
        raise NotFound()
    return recording


def _remove(
    session: Session,
    deletion: DeletionContext,
    actor: Actor,
    recording: Recording,
    reason: str,
    request_reason: str | None,
) -> Certificate:
    now = deletion.now
    store = deletion.store
    upload = session.scalars(select(Upload).where(Upload.recording_id == recording.id)).first()
    try:
        if upload is not None and upload.multipart_id and recording.object_key:
            store.abort_multipart(recording.object_key, upload.multipart_id)
        if recording.object_key is not None:
            store.delete(recording.object_key)
    except StorageError as exc:
        raise StorageUnavailable() from exc
    if upload is not None:
        session.delete(upload)
    owner = session.get(User, recording.owner_id)
    deleter = session.get(User, actor.user_id) if actor.user_id else None
    shred_at = calendar.shred_time(recording.retain_until, deletion.shred_hour, deletion.zone)
    statement = _statement(session, recording, owner, deleter, reason, now, shred_at)
    if request_reason is not None:
        statement["request"] = request_reason
    certificate = certificates.issue(
        session,
        deletion.keyring,
        kind=EARLY_DELETION,
        school_year=recording.school_year,
        recording=recording,
        now=now,
        statement=statement,
    )
    recording.status = "deleted"
    recording.deleted_at = now
    recording.deletion_reason = reason
    recording.wrapped_data_key = None
    recording.certificate_id = certificate.id
    audit.record(
        session,
        audit.by(
            actor,
            AuditAction.RECORDING_ERASED
            if request_reason is not None
            else AuditAction.RECORDING_DELETED,
            recording_id=recording.id,
            object_id=str(certificate.id),
            details={"reason": reason},
        ),
    )
    session.commit()
    return certificate


def restrict(
    session: Session,
    actor: Actor,
    recording_id: uuid.UUID,
    *,
    lift: bool,
    request_reason: str,
    now: datetime,
    zone: ZoneInfo,
) -> Recording:
    """GDPR art. 18: while restricted, a recording is only stored, never viewed or deleted
    early; lifting returns it to the status it had."""
    recording = _recording(session, recording_id)
    authorize(session, actor, Action.RESTRICT, recording, now, zone)
    if not request_reason.strip():
        raise ValidationFailed({"reason": [N_("Say which request this answers.")]})
    restricted = recording.status == "restricted"
    if lift and restricted:
        recording.status = recording.status_before_restriction or "available"
        recording.status_before_restriction = None
        recording.restricted_at = None
    elif not lift and not restricted:
        recording.status_before_restriction = recording.status
        recording.status = "restricted"
        recording.restricted_at = now
    else:
        return recording
    audit.record(
        session,
        audit.by(
            actor,
            AuditAction.RECORDING_RESTRICTION_LIFTED if lift else AuditAction.RECORDING_RESTRICTED,
            recording_id=recording.id,
            request_text=request_reason.strip(),
        ),
    )
    session.commit()
    return recording


def _statement(
    session: Session,
    recording: Recording,
    owner: User | None,
    deleter: User | None,
    reason: str,
    now: datetime,
    shred_at: datetime,
) -> dict[str, object]:
    return {
        "recording": {
            "id": str(recording.id),
            "title": recording.title,
            "subject": recording.subject,
            "class_group": recording.class_group,
            "lesson_date": recording.lesson_date.isoformat(),
            "purpose": recording.purpose,
            "owner": owner.full_name if owner else None,
        },
        "deleted_at": now.isoformat(),
        "deleted_by": deleter.full_name if deleter else None,
        "reason": reason,
        "object": {
            "key": recording.object_key,
            "size_bytes": recording.size_bytes,
            "ciphertext_sha256": recording.ciphertext_sha256,
            "every_version_deleted": recording.object_key is not None,
        },
        "cryptographic_erasure": {
            "complete": False,
            "completes_at": shred_at.isoformat(),
            "explanation": (
                "The encrypted object was deleted from storage in every version and its "
                "wrapped data key was removed from the database. Until the school year's key "
                "is destroyed at the year-end shred, a backup holding both the wrapped data "
                "key and the ciphertext could still decrypt it; cryptographic erasure "
                "completes then."
            ),
        },
        "copies_outside_the_vault": copies_outside_the_vault(session, recording.id),
    }
