"""The one access policy: who may do what with a recording, and which order allows it.

Procedure §22: only the subject teacher and persons named in a director's order may access
a recording. ``decide`` is the single place that rule lives; every route that touches a
recording goes through ``authorize``, which calls ``decide`` and audits every denial.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time
from enum import StrEnum
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.models import (
    AccessOrder,
    AccessOrderGrantee,
    AccessOrderRecording,
    Recording,
    SchoolYearKey,
    User,
    YearEnd,
)
from vault.services import audit
from vault.services.actors import Actor
from vault.services.errors import Gone, PermissionDenied


class Action(StrEnum):
    VIEW_METADATA = "view_metadata"
    START_VIEW = "start_view"
    STREAM = "stream"
    DOWNLOAD = "download"
    DELETE = "delete"
    LIST_ACCESSES = "list_accesses"
    RESTRICT = "restrict"
    ERASE = "erase"
    UPLOAD = "upload"
    TAKE_RESPONSIBILITY = "take_responsibility"


class Status(StrEnum):
    REGISTERED = "registered"
    UPLOADING = "uploading"
    PROCESSING = "processing"
    AVAILABLE = "available"
    FAILED = "failed"
    RESTRICTED = "restricted"
    DELETED = "deleted"
    SHREDDED = "shredded"


TOMBSTONE_STATUSES = frozenset({Status.DELETED, Status.SHREDDED})
LIVE_STATUSES = tuple(status for status in Status if status not in TOMBSTONE_STATUSES)
# What a tombstone still answers (art. 15): its metadata, and who accessed it while it lived.
TOMBSTONE_ACTIONS = frozenset({Action.VIEW_METADATA, Action.LIST_ACCESSES})
# Acts on the media itself need an available object.
MEDIA_ACTIONS = frozenset({Action.START_VIEW, Action.STREAM, Action.DOWNLOAD})
# Where the owner may (re)start or continue sending the file.
UPLOADABLE_STATUSES = frozenset({Status.REGISTERED, Status.UPLOADING, Status.FAILED})
# What stops the moment a year's year-end starts.
CLOSED_YEAR_ACTIONS = MEDIA_ACTIONS | {Action.UPLOAD}
# Roles that may be named in an order (SPEC §2).
DESIGNATABLE_ROLES = frozenset({"teacher", "staff", "director"})
# Separation of duties: whoever runs the machine (admin) or checks the director (auditor) is
# never the one who watches, whatever other role the same account also holds.
NEVER_DESIGNATED_ROLES = frozenset({"admin", "auditor"})


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    order: AccessOrder | None = None

    @property
    def gone(self) -> bool:
        return self.reason == "gone"


def designatable(roles: frozenset[str]) -> bool:
    """Whether an account with ``roles`` may be named in an order and act on one."""
    return bool(roles & DESIGNATABLE_ROLES) and not roles & NEVER_DESIGNATED_ROLES


def orders_naming(
    session: Session, user_id: uuid.UUID, recording_id: uuid.UUID
) -> list[AccessOrder]:
    return list(
        session.scalars(
            select(AccessOrder)
            .join(AccessOrderGrantee, AccessOrderGrantee.order_id == AccessOrder.id)
            .join(AccessOrderRecording, AccessOrderRecording.order_id == AccessOrder.id)
            .where(
                AccessOrderGrantee.user_id == user_id,
                AccessOrderRecording.recording_id == recording_id,
            )
            .order_by(AccessOrder.valid_until.desc())
        )
    )


def order_is_valid(order: AccessOrder, today: date) -> bool:
    return order.revoked_at is None and order.valid_from <= today <= order.valid_until


def _valid_order(orders: Iterable[AccessOrder], today: date) -> AccessOrder | None:
    return next((order for order in orders if order_is_valid(order, today)), None)


def decide(
    session: Session,
    actor: Actor,
    action: Action,
    recording: Recording,
    now: datetime,
    zone: ZoneInfo,
) -> Decision:
    """Whether ``actor`` may perform ``action`` on ``recording`` at ``now``, and why."""
    status = Status(recording.status)
    # A year whose year-end has started (or whose key is destroyed) is gone for its media at
    # once, before the recordings become tombstones; a body being sent stops at its next
    # check, and an upload's next request is refused.
    shredded = action in CLOSED_YEAR_ACTIONS and year_closed(session, recording.school_year)
    if (status in TOMBSTONE_STATUSES or shredded) and action not in TOMBSTONE_ACTIONS:
        # Only someone the live recording would have admitted (on its last day at the
        # latest) learns that it is gone; anyone else gets the ordinary refusal, so probing
        # ids tells a stranger nothing.
        last_day = datetime.combine(recording.retain_until, time(12), tzinfo=zone)
        if any(
            _rules(session, actor, action, recording, live, min(now, last_day), zone).allowed
            for live in LIVE_STATUSES
        ):
            return Decision(False, "gone")
        return _rules(session, actor, action, recording, Status.AVAILABLE, now, zone)
    return _rules(session, actor, action, recording, status, now, zone)


def _rules(
    session: Session,
    actor: Actor,
    action: Action,
    recording: Recording,
    status: Status,
    now: datetime,
    zone: ZoneInfo,
) -> Decision:
    """SPEC §2 for a recording in ``status``."""
    is_owner = recording.owner_id == actor.user_id
    is_responsible = recording.responsible_id == actor.user_id
    roles = actor.roles

    if action is Action.VIEW_METADATA:
        if is_owner or is_responsible:
            return Decision(True, "owner")
        if "director" in roles:
            return Decision(True, "director_register")
        if "auditor" in roles:
            return Decision(True, "auditor")
    elif action is Action.LIST_ACCESSES:
        if is_owner or is_responsible:
            return Decision(True, "owner")
        if "auditor" in roles:
            return Decision(True, "auditor")
        return Decision(False, "not_permitted")
    elif action is Action.DELETE:
        if status is Status.RESTRICTED:
            return Decision(False, "restricted")
        if is_owner or is_responsible:
            return Decision(True, "owner")
        if "director" in roles and recording.purpose == "methodological":
            return Decision(True, "director_methodological")
        return Decision(False, "not_permitted")
    elif action is Action.UPLOAD:
        if not is_owner:
            return Decision(False, "not_permitted")
        # A failed upload left nothing behind (its row, data key and object are discarded),
        # so the owner may send the file again on the same registration.
        if status in UPLOADABLE_STATUSES:
            return Decision(True, "owner")
        return Decision(False, "not_uploadable")
    elif action is Action.TAKE_RESPONSIBILITY:
        # A disabled teacher's recordings stay; the director may take over the duty to
        # delete them (procedure §20: school and teacher share that responsibility).
        owner = session.get(User, recording.owner_id)
        if "director" in roles and owner is not None and owner.disabled_at is not None:
            return Decision(True, "director_handover")
        return Decision(False, "not_permitted")
    elif action in (Action.RESTRICT, Action.ERASE):
        if "auditor" in roles:
            return Decision(True, "auditor")
        return Decision(False, "not_permitted")
    elif action in MEDIA_ACTIONS:
        if status is Status.RESTRICTED:
            return Decision(False, "restricted")
        if status is not Status.AVAILABLE:
            return Decision(False, "not_available")
        # Procedure §15: kept until the last school day and no longer, whatever an order
        # says (the calendar may have moved the day earlier since the order was issued).
        if now.astimezone(zone).date() > recording.retain_until:
            return Decision(False, "retention_ended")
        if is_owner:
            return Decision(True, "owner")
        if action is Action.DOWNLOAD:
            return Decision(False, "download_owner_only")

    # Everything left needs an order naming this person and this recording.
    if not designatable(roles):
        return Decision(False, "not_permitted")
    orders = orders_naming(session, actor.account_id, recording.id)
    if not orders:
        return Decision(False, "not_named")
    order = _valid_order(orders, now.astimezone(zone).date())
    if order is None:
        return Decision(False, "order_not_valid")
    return Decision(True, "order", order)


def year_closed(session: Session, school_year: str) -> bool:
    """Whether nothing new may happen in the year: its year-end has started, or its key is
    destroyed."""
    if session.get(YearEnd, school_year, populate_existing=True) is not None:
        return True
    row = session.get(SchoolYearKey, school_year, populate_existing=True)
    return row is not None and row.wrapped_key is None


def authorize(
    session: Session,
    actor: Actor,
    action: Action,
    recording: Recording,
    now: datetime,
    zone: ZoneInfo,
) -> Decision:
    """``decide``, then audit a denial and raise it as the service's own exception."""
    decision = decide(session, actor, action, recording, now, zone)
    if decision.allowed:
        return decision
    raise audit.deny(
        session,
        actor,
        Gone() if decision.gone else PermissionDenied(),
        {"action": action.value, "reason": decision.reason},
        recording_id=recording.id,
    )
