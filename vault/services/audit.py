"""Recording audit events.

``record`` adds the event to the caller's session and never commits: the event and the act
it describes are committed together or not at all, so the log can neither claim an act
that was rolled back nor miss one that happened.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vault.models import AuditEvent, DenialTally, utcnow
from vault.services import audit_chain
from vault.services.errors import TooManyRequests

if TYPE_CHECKING:  # the actor carries this module's RequestContext
    from vault.services.actors import Actor


class AuditAction(StrEnum):
    """Every audited act, named ``subject:action``."""

    SYSTEM_INIT = "system:init"
    SYSTEM_DEMO_SEEDED = "system:demo_seeded"
    KEYS_MASTER_INITIALISED = "keys:master_initialised"
    KEYS_YEAR_KEY_DESTROYED = "keys:year_key_destroyed"
    KEYS_MASTER_ROTATED = "keys:master_rotated"
    KEYS_MASTER_DESTROYED = "keys:master_destroyed"
    KEYS_SIGNING_KEY_CREATED = "keys:signing_key_created"
    AUDIT_EXPORTED = "audit:exported"
    AUDIT_CHECKPOINT_CREATED = "audit:checkpoint_created"
    AUDIT_CHECKPOINT_WITNESSED = "audit:checkpoint_witnessed"
    AUDIT_DETAILS_ERASED = "audit:details_erased"
    AUDIT_PURGED = audit_chain.PURGE_ACTION
    AUTH_LOGIN_SUCCEEDED = "auth:login_succeeded"
    AUTH_LOGIN_FAILED = "auth:login_failed"
    AUTH_LOGIN_LOCKED = "auth:login_locked"
    AUTH_LOGOUT = "auth:logout"
    AUTH_SESSION_ENDED = "auth:session_ended"
    AUTH_TOKEN_REJECTED = "auth:token_rejected"
    ACCOUNT_CREATED = "account:created"
    ACCOUNT_ROLES_CHANGED = "account:roles_changed"
    ACCOUNT_DISABLED = "account:disabled"
    ACCOUNT_ENABLED = "account:enabled"
    ACCOUNT_PASSWORD_CHANGED = "account:password_changed"
    ACCOUNT_TOTP_ENROLLED = "account:totp_enrolled"
    ACCOUNT_RECOVERY_CODE_USED = "account:recovery_code_used"
    ACCOUNT_LINK_ISSUED = "account:link_issued"
    ACCOUNT_LINK_REDEEMED = "account:link_redeemed"
    ACCOUNT_LINK_REJECTED = "account:link_rejected"
    ACCOUNT_SECOND_FACTOR_RESET_APPROVED = "account:second_factor_reset_approved"
    ACCOUNT_SECOND_FACTOR_RESET_AT_CONSOLE = "account:second_factor_reset_at_console"
    TOKEN_CREATED = "token:created"
    TOKEN_REVOKED = "token:revoked"
    ACCESS_DENIED = "access:denied"
    ORDER_ISSUED = "order:issued"
    ORDER_REVOKED = "order:revoked"
    CALENDAR_LAST_DAY_SET = "calendar:last_day_set"
    RECORDING_REGISTERED = "recording:registered"
    RECORDING_DOWNLOADED = "recording:downloaded"
    RECORDING_DELETED = "recording:deleted"
    RECORDING_ERASED = "recording:erased"
    RECORDING_RESTRICTED = "recording:restricted"
    RECORDING_RESTRICTION_LIFTED = "recording:restriction_lifted"
    RECORDING_RESPONSIBILITY_TAKEN = "recording:responsibility_taken"
    VIEW_STARTED = "view:started"
    VIEW_ENDED = "view:ended"
    STORAGE_REPAIRED = "storage:repaired"
    REQUEST_CREATED = "request:created"
    UPLOAD_CREATED = "upload:created"
    UPLOAD_COMPLETED = "upload:completed"
    UPLOAD_TERMINATED = "upload:terminated"
    UPLOAD_REJECTED = "upload:rejected"
    UPLOAD_FAILED = "upload:failed"
    UPLOAD_EXPIRED = "upload:expired"
    UPLOAD_ORPHAN_ABORTED = "upload:orphan_aborted"
    ACCESS_DENIED_REPEATED = "access:denied_repeated"
    LIFECYCLE_STEP = "lifecycle:step"
    YEAR_END_STEP = "year_end:step"
    RECORDING_TOMBSTONES_PURGED = "recording:tombstones_purged"
    REPORT_SUBJECT_PRODUCED = "report:subject_produced"


# The role an act is performed in, for acts that belong to one role (SPEC §2): an account
# holding several (a director who also teaches) is recorded in the one the act needs. Other
# acts record every role the account holds; the console records "operator".
ACTING_ROLE: dict[AuditAction, str] = {
    AuditAction.AUDIT_EXPORTED: "auditor",
    AuditAction.RECORDING_RESTRICTED: "auditor",
    AuditAction.RECORDING_RESTRICTION_LIFTED: "auditor",
    AuditAction.RECORDING_ERASED: "auditor",
    AuditAction.ORDER_ISSUED: "director",
    AuditAction.ORDER_REVOKED: "director",
    AuditAction.REQUEST_CREATED: "director",
    AuditAction.RECORDING_RESPONSIBILITY_TAKEN: "director",
    AuditAction.ACCOUNT_CREATED: "admin",
    AuditAction.ACCOUNT_ROLES_CHANGED: "admin",
    AuditAction.ACCOUNT_DISABLED: "admin",
    AuditAction.ACCOUNT_ENABLED: "admin",
    AuditAction.ACCOUNT_LINK_ISSUED: "admin",
    AuditAction.CALENDAR_LAST_DAY_SET: "admin",
    AuditAction.YEAR_END_STEP: "admin",
    AuditAction.REPORT_SUBJECT_PRODUCED: "auditor",
    AuditAction.RECORDING_REGISTERED: "teacher",
    AuditAction.UPLOAD_CREATED: "teacher",
    AuditAction.UPLOAD_COMPLETED: "teacher",
    AuditAction.UPLOAD_TERMINATED: "teacher",
    AuditAction.RECORDING_DOWNLOADED: "teacher",
}


class Outcome(StrEnum):
    SUCCESS = "success"
    DENIED = "denied"
    FAILURE = "failure"


@dataclass(frozen=True)
class RequestContext:
    """Personal details of the request, stored apart from the event so they can be erased."""

    ip_address: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True)
class Event:
    action: AuditAction
    outcome: Outcome = Outcome.SUCCESS
    actor_id: uuid.UUID | None = None
    recording_id: uuid.UUID | None = None
    object_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    context: RequestContext | None = None
    # Free text a person wrote (a data subject's request): personal data, so it is kept in
    # the erasable side table, and the event records only that it exists.
    request_text: str | None = None


# User agents are attacker-chosen; keep the stored copy bounded.
MAX_USER_AGENT_LENGTH = 512


ErrorT = TypeVar("ErrorT", bound=Exception)


def refused(session: Session, event: Event, error: ErrorT) -> ErrorT:
    """Record a refusal and commit it on its own, then hand back the error to raise: the
    request fails, and its refusal must not roll back with it."""
    record(session, event)
    session.commit()
    return error


def by(
    actor: Actor,
    action: AuditAction,
    *,
    outcome: Outcome = Outcome.SUCCESS,
    recording_id: uuid.UUID | None = None,
    object_id: str | None = None,
    details: dict[str, Any] | None = None,
    request_text: str | None = None,
) -> Event:
    """An event of ``actor``'s: their account, the role they acted in (``details`` may name
    it, as a view names the order or ownership that allowed it), and the request's personal
    details kept apart."""
    described = dict(details or {})
    if "role" not in described and (role := actor.acting_role(ACTING_ROLE.get(action))):
        described["role"] = role
    return Event(
        action,
        outcome=outcome,
        actor_id=actor.user_id,
        recording_id=recording_id,
        object_id=object_id,
        details=described,
        context=actor.context,
        request_text=request_text,
    )


def deny(
    session: Session,
    actor: Actor,
    error: ErrorT,
    details: dict[str, Any],
    *,
    action: AuditAction = AuditAction.ACCESS_DENIED,
    recording_id: uuid.UUID | None = None,
    object_id: str | None = None,
) -> ErrorT:
    """The one way a use case refuses ``actor``: the refusal is audited under the actor's
    account and request details, committed at once, and the error handed back to raise."""
    event = by(
        actor,
        action,
        outcome=Outcome.DENIED,
        recording_id=recording_id,
        object_id=object_id,
        details=details,
    )
    return refused(session, event, error)


# A refused request from nobody signed in (a bad token, a forged stream URL, a forged form)
# costs its sender nothing, so it must not cost the log a row each: per address, the first
# few each minute are recorded one by one, the rest are counted and become one event per
# address and minute; past the limit the address is refused outright for the minute.
DENIALS_RECORDED_ONE_BY_ONE = 10
DENIALS_PER_MINUTE = 60


def unauthenticated_denial(
    session: Session, event: Event, address: str | None, now: datetime
) -> None:
    """Record a refused unauthenticated request within the flood guard, and commit.

    Raises TooManyRequests once the address is past DENIALS_PER_MINUTE this minute.
    """
    minute = denial_minute(now)
    key = address or ""
    flush_denial_tallies(session, minute, address=key)
    count = _tally(session, key, minute)
    if count <= DENIALS_RECORDED_ONE_BY_ONE:
        record(session, event)
    session.commit()
    if count > DENIALS_PER_MINUTE:
        raise TooManyRequests()


def denial_minute(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0)


def _tally(session: Session, address: str, minute: datetime) -> int:
    """Count one more refusal for (address, minute), across processes; the new count."""
    for _ in range(2):
        bumped = session.execute(
            update(DenialTally)
            .where(DenialTally.address == address, DenialTally.minute == minute)
            .values(count=DenialTally.count + 1)
            .returning(DenialTally.count)
        ).scalar_one_or_none()
        if bumped is not None:
            return int(bumped)
        try:
            with session.begin_nested():
                session.add(DenialTally(address=address, minute=minute, count=1))
            return 1
        except IntegrityError:
            continue  # another request made the row first: count on it
    raise RuntimeError("the denial tally could not be counted")


def flush_denial_tallies(session: Session, before: datetime, *, address: str | None = None) -> int:
    """Turn the tallies of minutes before ``before`` into one event each (for the refusals
    beyond those recorded one by one) and remove them. Returns how many events were written."""
    query = select(DenialTally).where(DenialTally.minute < before)
    if address is not None:
        query = query.where(DenialTally.address == address)
    written = 0
    for tally in session.scalars(query.with_for_update(skip_locked=True)):
        repeats = tally.count - DENIALS_RECORDED_ONE_BY_ONE
        if repeats > 0:
            record(
                session,
                Event(
                    AuditAction.ACCESS_DENIED_REPEATED,
                    outcome=Outcome.DENIED,
                    details={"minute": tally.minute.isoformat(), "repeats": repeats},
                    context=RequestContext(ip_address=tally.address or None),
                ),
            )
            written += 1
        session.execute(
            delete(DenialTally).where(
                DenialTally.address == tally.address, DenialTally.minute == tally.minute
            )
        )
    return written


def record(session: Session, event: Event) -> AuditEvent:
    """Add ``event`` to the chain in the caller's transaction (it commits with the act)."""
    details = dict(event.details)
    if event.request_text is not None:
        details["request_text_kept_apart"] = True
    context = event.context or RequestContext()
    user_agent = context.user_agent[:MAX_USER_AGENT_LENGTH] if context.user_agent else None
    personal = context.ip_address or user_agent or event.request_text is not None
    salt = audit_chain.new_salt() if personal else None
    row = AuditEvent(
        occurred_at=utcnow(),
        action=event.action.value,
        outcome=event.outcome.value,
        actor_id=event.actor_id,
        recording_id=event.recording_id,
        object_id=event.object_id,
        details=audit_chain.normalised_details(details),
        context_commitment=(
            audit_chain.commitment(salt, context.ip_address, user_agent, event.request_text)
            if salt
            else None
        ),
    )
    kept = (
        audit_chain.KeptDetails(context.ip_address, user_agent, event.request_text, salt)
        if salt
        else None
    )
    # ``row`` is written with Core statements, not through the session's unit of work
    # (``audit_chain.append``); it is returned as a record of what was written.
    audit_chain.append(session, row, kept)
    return row
