"""The audit log's hash chain: a gap-free number, a link to the previous event, a commitment
to the erasable personal details, the chain-head row, and (on PostgreSQL) a trigger that
refuses to change or remove an event.

Events written before this revision are chained here, in the order they were written; the
chain proves nothing about what happened to them before this moment. The hashing below is a
frozen copy of ``vault.services.audit_chain``: a migration must not change with the code.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DOMAIN = b"recvault-audit-event-v1\n"
_GENESIS = "0" * 64

_events = sa.table(
    "audit_events",
    sa.column("id", sa.BigInteger()),
    sa.column("occurred_at", sa.DateTime(timezone=True)),
    sa.column("action", sa.String(64)),
    sa.column("outcome", sa.String(16)),
    sa.column("actor_id", sa.Uuid()),
    sa.column("recording_id", sa.Uuid()),
    sa.column("object_id", sa.String(64)),
    sa.column("details", sa.JSON()),
    sa.column("seq", sa.BigInteger()),
    sa.column("entry_hash", sa.String(64)),
    sa.column("context_commitment", sa.String(64)),
)
_context = sa.table(
    "audit_event_context",
    sa.column("event_id", sa.BigInteger()),
    sa.column("ip_address", sa.String(45)),
    sa.column("user_agent", sa.Text()),
    sa.column("request_text", sa.Text()),
    sa.column("salt", sa.String(64)),
)
_head = sa.table(
    "audit_chain_head",
    sa.column("id", sa.Integer()),
    sa.column("seq", sa.BigInteger()),
    sa.column("entry_hash", sa.String(64)),
)

_APPEND_ONLY_FUNCTION = """
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The retention purge is the one sanctioned removal; it announces itself in its own
    -- transaction. Nothing ever rewrites an event.
    IF TG_OP = 'DELETE' AND current_setting('recvault.audit_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit events are never changed or removed (%)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""
_APPEND_ONLY_TRIGGER = """
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()
"""


def _canonical(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _utc_text(moment: datetime) -> str:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat()


def _commitment(salt: str, ip_address: str | None, user_agent: str | None, text: str | None) -> str:
    body = _canonical({"ip_address": ip_address, "user_agent": user_agent, "request_text": text})
    return hmac.new(bytes.fromhex(salt), body.encode(), hashlib.sha256).hexdigest()


def _link(entry: dict[str, Any], previous: str) -> str:
    digest = hashlib.sha256(_DOMAIN)
    digest.update(_canonical(entry).encode())
    digest.update(bytes.fromhex(previous))
    return digest.hexdigest()


def _kept_details(connection: sa.Connection) -> list[dict[str, Any]]:
    """The details kept beside the events, to put back after SQLite rebuilds audit_events
    (dropping the old table cascades to them)."""
    query = sa.select(
        _context.c.event_id, _context.c.ip_address, _context.c.user_agent, _context.c.request_text
    ).order_by(_context.c.event_id)
    return [dict(row._mapping) for row in connection.execute(query)]


def upgrade() -> None:
    connection = op.get_bind()
    # SQLite rebuilds audit_events below to make the new columns NOT NULL; dropping the old
    # table cascades to the details kept beside the events, so they are put back after.
    contexts = _kept_details(connection)
    for context in contexts:
        context["salt"] = secrets.token_hex(32)
    by_event = {context["event_id"]: context for context in contexts}

    with op.batch_alter_table("audit_events") as batch_op:
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("entry_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("context_commitment", sa.String(length=64), nullable=True))
    op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_chain_head")),
    )

    previous, seq = _GENESIS, 0
    for event in connection.execute(sa.select(_events).order_by(_events.c.id)).all():
        seq += 1
        kept = by_event.get(event.id)
        commitment = (
            _commitment(kept["salt"], kept["ip_address"], kept["user_agent"], kept["request_text"])
            if kept is not None
            else None
        )
        entry = {
            "seq": seq,
            "occurred_at": _utc_text(event.occurred_at),
            "action": event.action,
            "outcome": event.outcome,
            "actor_id": str(event.actor_id) if event.actor_id else None,
            "recording_id": str(event.recording_id) if event.recording_id else None,
            "object_id": event.object_id,
            "details": event.details,
            "context_commitment": commitment,
        }
        previous = _link(entry, previous)
        connection.execute(
            _events.update()
            .where(_events.c.id == event.id)
            .values(seq=seq, entry_hash=previous, context_commitment=commitment)
        )
    connection.execute(_head.insert().values(id=1, seq=seq, entry_hash=previous))

    with op.batch_alter_table("audit_events") as batch_op:
        batch_op.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch_op.alter_column("entry_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_audit_events_seq"), ["seq"])
    with op.batch_alter_table("audit_event_context") as batch_op:
        batch_op.add_column(sa.Column("salt", sa.String(length=64), nullable=True))
    connection.execute(_context.delete())
    if contexts:
        connection.execute(_context.insert(), contexts)
    if connection.dialect.name == "postgresql":
        op.execute(_APPEND_ONLY_FUNCTION)
        op.execute(_APPEND_ONLY_TRIGGER)


def downgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_events_append_only ON audit_events")
        op.execute("DROP FUNCTION audit_events_append_only()")
    kept = _kept_details(connection)
    op.drop_table("audit_chain_head")
    with op.batch_alter_table("audit_events") as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_audit_events_seq"), type_="unique")
        batch_op.drop_column("context_commitment")
        batch_op.drop_column("entry_hash")
        batch_op.drop_column("seq")
    with op.batch_alter_table("audit_event_context") as batch_op:
        batch_op.drop_column("salt")
    restored = sa.table(
        "audit_event_context",
        sa.column("event_id", sa.BigInteger()),
        sa.column("ip_address", sa.String(45)),
        sa.column("user_agent", sa.Text()),
        sa.column("request_text", sa.Text()),
    )
    connection.execute(restored.delete())
    if kept:
        connection.execute(restored.insert(), kept)
