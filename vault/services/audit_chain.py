"""The audit log's hash chain: every event is linked to the one before it.

Each event gets a gap-free sequence number and
``entry_hash = SHA-256(DOMAIN ‖ canonical JSON of the event ‖ previous entry_hash)``.
Editing, deleting or reordering a stored event breaks every hash from that point on, which
``verify`` finds and names. Appends are serialised on one chain-head row: its UPDATE takes a
row lock on PostgreSQL and the write lock on SQLite, both held until the act's transaction
commits, so two acts can never take the same number or link to the same predecessor.

Past ``VAULT_AUDIT_RETENTION_DAYS`` the oldest events are purged (``audit_retention``), always
up to a signed checkpoint and after recording the purge itself: the chain then begins after
that checkpoint, whose head hash is the first remaining event's link (``start_of``).

Personal request details (address, user agent, a data subject's free text) stay in the
erasable side table; the chain holds only an HMAC commitment to them under a per-event salt
kept beside them, so erasing the details (and the salt) leaves the chain verifiable.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from vault.models import AuditChainHead, AuditCheckpoint, AuditEvent

DOMAIN = b"recvault-audit-event-v1\n"
GENESIS_HASH = "0" * 64
HEAD_ROW_ID = 1
SALT_BYTES = 32
# The action of the purge's own event (``audit.AuditAction.AUDIT_PURGED``): the chain's start
# after a purge is vouched for by it.
PURGE_ACTION = "audit:purged"
# A checkpoint is signed at every multiple of this many events, as soon as the transaction
# that reached it commits (``audit_checkpoints.sign_at_intervals``), besides the lifecycle
# run's hourly one: a busy day is never left long without a signed state to witness.
CHECKPOINT_INTERVAL = 1000
# The session's note that its transaction took the chain to such a multiple.
CHECKPOINT_DUE = "recvault.audit_checkpoint_due"
_VERIFY_BATCH = 5000


def canonical(value: Any) -> str:
    """Sorted keys, no insignificant white space, UTF-8 as is.

    Integers are written exactly. The only fractional numbers in events are a player's
    reported seconds (tenths), written in their shortest round-trip form; NaN and the
    infinities have no JSON form and are refused.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def normalised_details(details: dict[str, Any]) -> dict[str, Any]:
    """``details`` as the database gives them back (tuples become lists), so the hash is
    computed over exactly what a verifier will read."""
    normal: dict[str, Any] = json.loads(canonical(details))
    return normal


def new_salt() -> str:
    return secrets.token_hex(SALT_BYTES)


def commitment(salt: str, ip_address: str | None, user_agent: str | None, text: str | None) -> str:
    """The event's binding to its personal details, without revealing them."""
    body = canonical({"ip_address": ip_address, "user_agent": user_agent, "request_text": text})
    return hmac.new(bytes.fromhex(salt), body.encode(), hashlib.sha256).hexdigest()


def utc_text(moment: datetime) -> str:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat()


def entry_of(event: AuditEvent) -> dict[str, Any]:
    """What the chain covers of a stored event."""
    return {
        "seq": event.seq,
        "occurred_at": utc_text(event.occurred_at),
        "action": event.action,
        "outcome": event.outcome,
        "actor_id": str(event.actor_id) if event.actor_id else None,
        "recording_id": str(event.recording_id) if event.recording_id else None,
        "object_id": event.object_id,
        "details": event.details,
        "context_commitment": event.context_commitment,
    }


def link(entry: dict[str, Any], previous_hash: str) -> str:
    digest = hashlib.sha256(DOMAIN)
    digest.update(canonical(entry).encode())
    digest.update(bytes.fromhex(previous_hash))
    return digest.hexdigest()


def append(session: Session, event: AuditEvent) -> None:
    """Number ``event`` and link it to the head, in the caller's transaction.

    The head row's UPDATE comes first: it is what serialises concurrent appends, and a
    rolled-back act rolls its number back with it, so the sequence has no gaps.
    """
    # Core statements on the session's connection: the ORM's bulk UPDATE path would cost
    # more than the statement itself, and every instant here is spent holding the lock.
    connection = session.connection()
    seq, previous = connection.execute(
        update(AuditChainHead)
        .where(AuditChainHead.id == HEAD_ROW_ID)
        .values(seq=AuditChainHead.seq + 1)
        .returning(AuditChainHead.seq, AuditChainHead.entry_hash)
    ).one()
    event.seq = seq
    event.entry_hash = link(entry_of(event), previous)
    connection.execute(
        update(AuditChainHead)
        .where(AuditChainHead.id == HEAD_ROW_ID)
        .values(entry_hash=event.entry_hash)
    )
    if seq % CHECKPOINT_INTERVAL == 0:
        session.info[CHECKPOINT_DUE] = True


class Damage(StrEnum):
    """What is wrong at the first bad place of the chain."""

    EDITED = "edited"  # the event no longer hashes to its stored link
    DELETED = "deleted"  # a sequence number is missing
    OUT_OF_ORDER = "reordered"  # a number appears again, or goes backwards
    INSERTED = "inserted"  # an exported line that the chain never held
    TRUNCATED = "truncated"  # the head counts events that are no longer there
    HEAD_MISMATCH = "head_mismatch"  # the last event is not the one the head names
    # Found against signed checkpoints (``vault.services.audit_checkpoints``):
    ROLLED_BACK = "rolled_back"  # the log no longer holds what a kept checkpoint covers
    BAD_SIGNATURE = "bad_signature"  # a checkpoint not signed by the audit signing key
    INCONSISTENT_CHECKPOINT = "inconsistent_checkpoint"  # a stored checkpoint disagrees


@dataclass(frozen=True)
class Verdict:
    count: int
    head_hash: str
    damage: Damage | None = None
    at_seq: int | None = None
    # Events removed by the retention purge before the first one checked.
    purged: int = 0

    @property
    def intact(self) -> bool:
        return self.damage is None


@dataclass(frozen=True)
class Start:
    """Where the stored chain begins: after ``purged`` events, linking to ``previous_hash``."""

    purged: int
    previous_hash: str


def start_of(session: Session) -> Start | None:
    """The chain's beginning; None when events are missing from the start and no purge
    accounts for it.

    A purge stops at a signed checkpoint (the one covering exactly the purged events, whose
    head hash is the next event's link) and records itself after it, naming that checkpoint;
    without both, the missing events were deleted.
    """
    first = session.scalar(select(func.min(AuditEvent.seq)))
    if first is None or first == 1:
        return Start(0, GENESIS_HASH)
    through = first - 1
    boundary = session.scalars(
        select(AuditCheckpoint).where(AuditCheckpoint.tree_size == through)
    ).first()
    announced = session.scalars(
        select(AuditEvent.details).where(
            AuditEvent.action == PURGE_ACTION, AuditEvent.seq > through
        )
    )
    if boundary is None or not any(d.get("through_seq") == through for d in announced):
        return None
    return Start(through, boundary.head_hash)


def verify(session: Session) -> Verdict:
    """Walk the stored chain from its start and report the first damage found."""
    head = session.get(AuditChainHead, HEAD_ROW_ID)
    head_seq, head_hash = (head.seq, head.entry_hash) if head else (0, GENESIS_HASH)
    start = start_of(session)
    if start is None:
        return Verdict(0, GENESIS_HASH, Damage.DELETED, 1)
    expected, previous, count = start.purged + 1, start.previous_hash, 0

    def verdict(damage: Damage | None = None, at: int | None = None) -> Verdict:
        return Verdict(count, previous, damage, at, purged=start.purged)

    events = session.scalars(
        select(AuditEvent).order_by(AuditEvent.seq).execution_options(yield_per=_VERIFY_BATCH)
    )
    for event in events:
        if event.seq > expected:
            return verdict(Damage.DELETED, expected)
        if event.seq < expected:
            return verdict(Damage.OUT_OF_ORDER, event.seq)
        if link(entry_of(event), previous) != event.entry_hash:
            return verdict(Damage.EDITED, event.seq)
        previous, count, expected = event.entry_hash, count + 1, expected + 1
    if start.purged + count < head_seq:
        return verdict(Damage.TRUNCATED, expected)
    if previous != head_hash or start.purged + count > head_seq:
        return verdict(Damage.HEAD_MISMATCH, expected - 1)
    return verdict()
