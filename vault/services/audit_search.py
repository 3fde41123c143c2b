"""The auditor's console: pages of the audit log, newest first, and the state of the chain.

The console selects exactly the events an export with the same criteria would hold (the
criteria are parsed by ``audit_export.parse_request`` and matched by its query), so what the
auditor sees on a page is what the export links next to it deliver.

Pages are cut by event number (keyset pagination, ``before``): a page is the newest matching
events numbered below ``before``. Unlike an offset, the cut stays put while new events are
appended, so walking "older" from the first page visits every matching event once. Every
query of a page is bounded by the chain's head as read at its start: an event numbered up to
the head is committed with it, so the count and the pages agree however many acts are being
recorded meanwhile.

The log names accounts and recordings by id only (a person's data can be erased without
breaking the chain). The console resolves the ids it shows to usernames, titles and order
numbers while those rows exist, with one query for each kind, never one per event. Personal
request details (addresses, user agents) are kept apart from the events and never read here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import case, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from vault.keyring import Keyring
from vault.models import AccessOrder, AuditChainHead, AuditEvent, Recording, User
from vault.services import audit_chain, audit_checkpoints, audit_export
from vault.services.audit import AuditAction, Outcome
from vault.services.audit_export import AuditFilter
from vault.services.errors import N_, KeysUnavailable, ValidationFailed

PAGE_SIZE = 50
NameT = TypeVar("NameT")
BAD_CURSOR = N_("Give a whole number of at least 1.")

ACTION_LABELS: dict[AuditAction, str] = {
    AuditAction.SYSTEM_INIT: N_("System initialised"),
    AuditAction.SYSTEM_DEMO_SEEDED: N_("Demonstration data added"),
    AuditAction.KEYS_MASTER_INITIALISED: N_("Master key created"),
    AuditAction.KEYS_YEAR_KEY_DESTROYED: N_("School-year key destroyed"),
    AuditAction.KEYS_MASTER_ROTATED: N_("Master key rotated"),
    AuditAction.KEYS_MASTER_DESTROYED: N_("Old master key versions destroyed"),
    AuditAction.KEYS_SIGNING_KEY_CREATED: N_("Audit signing key created"),
    AuditAction.AUDIT_EXPORTED: N_("Audit log exported"),
    AuditAction.AUDIT_CHECKPOINT_CREATED: N_("Audit checkpoint signed"),
    AuditAction.AUDIT_CHECKPOINT_WITNESSED: N_("Audit checkpoint sent to a witness"),
    AuditAction.LIFECYCLE_STEP: N_("Step of the lifecycle run"),
    AuditAction.YEAR_END_STEP: N_("Step of the year-end shred"),
    AuditAction.RECORDING_TOMBSTONES_PURGED: N_("Tombstones past their keeping period purged"),
    AuditAction.REPORT_SUBJECT_PRODUCED: N_("Data-subject report produced"),
    AuditAction.AUDIT_DETAILS_ERASED: N_("Personal details erased from the log"),
    AuditAction.AUDIT_PURGED: N_("Events past their retention period purged"),
    AuditAction.AUTH_LOGIN_SUCCEEDED: N_("Signed in"),
    AuditAction.AUTH_LOGIN_FAILED: N_("Sign-in failed"),
    AuditAction.AUTH_LOGIN_LOCKED: N_("Sign-in locked"),
    AuditAction.AUTH_LOGOUT: N_("Signed out"),
    AuditAction.AUTH_SESSION_ENDED: N_("Session ended"),
    AuditAction.AUTH_TOKEN_REJECTED: N_("API token refused"),
    AuditAction.ACCOUNT_CREATED: N_("Account created"),
    AuditAction.ACCOUNT_ROLES_CHANGED: N_("Roles changed"),
    AuditAction.ACCOUNT_DISABLED: N_("Account disabled"),
    AuditAction.ACCOUNT_ENABLED: N_("Account enabled"),
    AuditAction.ACCOUNT_PASSWORD_CHANGED: N_("Password changed"),
    AuditAction.ACCOUNT_TOTP_ENROLLED: N_("Second factor set up"),
    AuditAction.ACCOUNT_RECOVERY_CODE_USED: N_("Recovery code used"),
    AuditAction.ACCOUNT_LINK_ISSUED: N_("Account link issued"),
    AuditAction.ACCOUNT_LINK_REDEEMED: N_("Account link used"),
    AuditAction.ACCOUNT_LINK_REJECTED: N_("Account link refused"),
    AuditAction.ACCOUNT_SECOND_FACTOR_RESET_APPROVED: N_("Second-factor reset approved"),
    AuditAction.ACCOUNT_SECOND_FACTOR_RESET_AT_CONSOLE: N_("Second factor reset at the console"),
    AuditAction.TOKEN_CREATED: N_("API token created"),
    AuditAction.TOKEN_REVOKED: N_("API token revoked"),
    AuditAction.ACCESS_DENIED: N_("Access denied"),
    AuditAction.ACCESS_DENIED_REPEATED: N_("Repeated refusals, counted"),
    AuditAction.ORDER_ISSUED: N_("Order issued"),
    AuditAction.ORDER_REVOKED: N_("Order revoked"),
    AuditAction.CALENDAR_LAST_DAY_SET: N_("Last school day set"),
    AuditAction.RECORDING_REGISTERED: N_("Recording registered"),
    AuditAction.RECORDING_DOWNLOADED: N_("Recording downloaded"),
    AuditAction.RECORDING_DELETED: N_("Recording deleted"),
    AuditAction.RECORDING_ERASED: N_("Recording erased (art. 17)"),
    AuditAction.RECORDING_RESTRICTED: N_("Recording restricted (art. 18)"),
    AuditAction.RECORDING_RESTRICTION_LIFTED: N_("Restriction lifted"),
    AuditAction.RECORDING_RESPONSIBILITY_TAKEN: N_("Responsibility for a recording taken over"),
    AuditAction.VIEW_STARTED: N_("Viewing started"),
    AuditAction.VIEW_ENDED: N_("Viewing ended"),
    AuditAction.STORAGE_REPAIRED: N_("Storage repaired"),
    AuditAction.REQUEST_CREATED: N_("Methodological-work request sent"),
    AuditAction.UPLOAD_CREATED: N_("Upload started"),
    AuditAction.UPLOAD_COMPLETED: N_("Upload completed"),
    AuditAction.UPLOAD_TERMINATED: N_("Upload cancelled"),
    AuditAction.UPLOAD_REJECTED: N_("Upload refused"),
    AuditAction.UPLOAD_FAILED: N_("Upload failed"),
    AuditAction.UPLOAD_EXPIRED: N_("Abandoned upload removed"),
    AuditAction.UPLOAD_ORPHAN_ABORTED: N_("Unfinished storage write aborted"),
}

OUTCOME_LABELS: dict[Outcome, str] = {
    Outcome.SUCCESS: N_("succeeded"),
    Outcome.DENIED: N_("denied"),
    Outcome.FAILURE: N_("failed"),
}


def action_label(action: str) -> str | None:
    """The readable name of an action code (a message id); None for a code without one, which
    the console then shows by its code alone."""
    try:
        return ACTION_LABELS.get(AuditAction(action))
    except ValueError:
        return None


def outcome_label(outcome: str) -> str | None:
    try:
        return OUTCOME_LABELS.get(Outcome(outcome))
    except ValueError:
        return None


def cursor(raw: str | None) -> int | None:
    """The ``before`` of a page link: absent for the newest page, else an event number."""
    value = (raw or "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValidationFailed({"before": [BAD_CURSOR]})
    return int(value)


@dataclass(frozen=True)
class OrderReference:
    """The order an event says allowed the act: its id and number as the event or the order
    row gives them; ``exists`` when the order row can still be opened."""

    order_id: uuid.UUID | None
    number: str | None
    exists: bool


@dataclass(frozen=True)
class FoundEvent:
    seq: int
    occurred_at: datetime
    action: str
    outcome: str
    actor_id: uuid.UUID | None
    # None when the account was removed (or the actor was the console): show the id.
    actor_username: str | None
    recording_id: uuid.UUID | None
    # None when the recording row (live or tombstone) is gone: show the id.
    recording_title: str | None
    object_id: str | None
    order: OrderReference | None
    # Set on a view's summary (``view:ended``): the whole file went out faster than it plays.
    fetched_fast: bool
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EventPage:
    events: list[FoundEvent]
    # How many events match in all, and how many of them are newer than this page.
    matching: int
    newer: int
    # ``before`` for the next older page, None when this page reaches the oldest match.
    older_before: int | None
    # Whether a newer page exists, and its ``before`` (None: the newest page).
    has_newer: bool
    newer_before: int | None

    @property
    def first_position(self) -> int:
        """The place of this page's first event among the matches, newest counted as 1."""
        return self.newer + 1 if self.events else 0

    @property
    def last_position(self) -> int:
        return self.newer + len(self.events)


def _head_seq(session: Session) -> int:
    head = session.get(AuditChainHead, audit_chain.HEAD_ROW_ID)
    return head.seq if head is not None else 0


def search(
    session: Session, audit_filter: AuditFilter, before: int | None, page_size: int = PAGE_SIZE
) -> EventPage:
    """The newest ``page_size`` events matching ``audit_filter`` numbered below ``before``
    (all of them when None), with the counts and the cursors of the neighbouring pages."""
    head_seq = _head_seq(session)
    # The export's own query, so that the console and the export select the same events.
    matching = audit_export.matching(audit_filter, head_seq)
    cut = before if before is not None else head_seq + 1
    rows = list(
        session.scalars(
            matching.where(AuditEvent.seq < cut)
            .order_by(AuditEvent.seq.desc())
            .limit(page_size + 1)
        )
    )
    shown = rows[:page_size]
    counted = matching.with_only_columns(AuditEvent.seq).subquery()
    total, newer = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((counted.c.seq >= cut, 1), else_=0)), 0),
        ).select_from(counted)
    ).one()
    # The newer page ends just before the (page_size + 1)-th newer match; with fewer newer
    # matches than that, the newer page is the newest one.
    newer_cut = session.scalars(
        select(counted.c.seq)
        .where(counted.c.seq >= cut)
        .order_by(counted.c.seq)
        .offset(page_size)
        .limit(1)
    ).first()
    return EventPage(
        events=_resolved(session, shown),
        matching=int(total),
        newer=int(newer),
        older_before=shown[-1].seq if len(rows) > page_size else None,
        has_newer=int(newer) > 0,
        newer_before=newer_cut,
    )


def _identifier(value: Any) -> uuid.UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _names(
    session: Session,
    ids: Iterable[uuid.UUID],
    key: InstrumentedAttribute[uuid.UUID],
    name: InstrumentedAttribute[NameT],
) -> dict[uuid.UUID, NameT]:
    """id → name for those of ``ids`` whose rows still exist, in one query."""
    wanted = set(ids)
    if not wanted:
        return {}
    return dict(session.execute(select(key, name).where(key.in_(wanted))).all())


def _resolved(session: Session, rows: list[AuditEvent]) -> list[FoundEvent]:
    orders_named = {row.seq: _identifier(row.details.get("order_id")) for row in rows}
    usernames = _names(session, (r.actor_id for r in rows if r.actor_id), User.id, User.username)
    titles = _names(
        session, (r.recording_id for r in rows if r.recording_id), Recording.id, Recording.title
    )
    numbers = _names(
        session, (o for o in orders_named.values() if o), AccessOrder.id, AccessOrder.number
    )
    return [
        FoundEvent(
            seq=audit_chain.number_of(row),
            occurred_at=row.occurred_at,
            action=row.action,
            outcome=row.outcome,
            actor_id=row.actor_id,
            actor_username=usernames.get(row.actor_id) if row.actor_id else None,
            recording_id=row.recording_id,
            recording_title=titles.get(row.recording_id) if row.recording_id else None,
            object_id=row.object_id,
            order=_order_of(row.details, orders_named[row.seq], numbers),
            fetched_fast=row.details.get("fetched_fast") is True,
            details=dict(row.details),
        )
        for row in rows
    ]


def _order_of(
    details: Mapping[str, Any], order_id: uuid.UUID | None, numbers: Mapping[uuid.UUID, str]
) -> OrderReference | None:
    """A view's start names the order and its number, its summary the order's id only."""
    if order_id is not None and order_id in numbers:
        return OrderReference(order_id, numbers[order_id], exists=True)
    stated = details.get("order_number")
    number = stated if isinstance(stated, str) and stated else None
    if order_id is None and number is None:
        return None
    return OrderReference(order_id, number, exists=False)


# -- the state of the chain -------------------------------------------------------------------


@dataclass(frozen=True)
class LatestCheckpoint:
    tree_size: int
    created_at: datetime
    root_hash: str
    head_hash: str


@dataclass(frozen=True)
class ChainState:
    """What the auditor compares with the copies kept away from the server."""

    # None when the signing key cannot be unsealed (keys missing or mismatched).
    fingerprint: str | None
    latest_checkpoint: LatestCheckpoint | None
    head_seq: int
    head_hash: str


def chain_state(session: Session, keyring: Keyring) -> ChainState:
    try:
        fingerprint: str | None = audit_checkpoints.public_identity(session, keyring).fingerprint
    except KeysUnavailable:
        # The console still searches the log; only the key's fingerprint cannot be shown.
        fingerprint = None
    latest = audit_checkpoints.latest(session)
    head = session.get(AuditChainHead, audit_chain.HEAD_ROW_ID)
    return ChainState(
        fingerprint=fingerprint,
        latest_checkpoint=(
            LatestCheckpoint(
                latest.tree_size, latest.created_at, latest.root_hash, latest.head_hash
            )
            if latest is not None
            else None
        ),
        head_seq=head.seq if head is not None else 0,
        head_hash=head.entry_hash if head is not None else audit_chain.GENESIS_HASH,
    )
