"""The audit log's hash chain: every event is linked to the one before it.

Each event gets a gap-free sequence number and
``entry_hash = SHA-256(DOMAIN ‖ canonical JSON of the event ‖ previous entry_hash)``.
Editing, deleting or reordering a stored event breaks every hash from that point on, which
``verify`` finds and names. Appends are serialised on one chain-head row: its UPDATE takes a
row lock on PostgreSQL and the write lock on SQLite, both held until the act's transaction
commits, so two acts can never take the same number or link to the same predecessor.

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

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from vault.models import AuditChainHead, AuditEvent

DOMAIN = b"recvault-audit-event-v1\n"
GENESIS_HASH = "0" * 64
HEAD_ROW_ID = 1
SALT_BYTES = 32
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
    seq, previous = session.execute(
        update(AuditChainHead)
        .where(AuditChainHead.id == HEAD_ROW_ID)
        .values(seq=AuditChainHead.seq + 1)
        .returning(AuditChainHead.seq, AuditChainHead.entry_hash)
    ).one()
    event.seq = seq
    event.entry_hash = link(entry_of(event), previous)
    session.execute(
        update(AuditChainHead)
        .where(AuditChainHead.id == HEAD_ROW_ID)
        .values(entry_hash=event.entry_hash)
    )


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

    @property
    def intact(self) -> bool:
        return self.damage is None


def verify(session: Session) -> Verdict:
    """Walk the stored chain from its first event and report the first damage found."""
    head = session.get(AuditChainHead, HEAD_ROW_ID)
    head_seq, head_hash = (head.seq, head.entry_hash) if head else (0, GENESIS_HASH)
    expected, previous, count = 1, GENESIS_HASH, 0
    events = session.scalars(
        select(AuditEvent).order_by(AuditEvent.seq).execution_options(yield_per=_VERIFY_BATCH)
    )
    for event in events:
        if event.seq > expected:
            return Verdict(count, previous, Damage.DELETED, expected)
        if event.seq < expected:
            return Verdict(count, previous, Damage.OUT_OF_ORDER, event.seq)
        if link(entry_of(event), previous) != event.entry_hash:
            return Verdict(count, previous, Damage.EDITED, event.seq)
        previous, count, expected = event.entry_hash, count + 1, expected + 1
    if count < head_seq:
        return Verdict(count, previous, Damage.TRUNCATED, count + 1)
    if previous != head_hash or count > head_seq:
        return Verdict(count, previous, Damage.HEAD_MISMATCH, count)
    return Verdict(count, previous)
