"""On PostgreSQL, events are linked into the chain just after the act that wrote them commits.

An act's event commits in the act's transaction as before, but without its number and link
(``seq`` and ``entry_hash`` are empty until then). Right after the commit, ``audit_link()``
numbers and links every committed event not yet linked, in one short transaction that holds
the chain-head row's lock. Before, the act's own transaction held that lock until its commit,
so the chain took at most one event per commit-to-disk: a few hundred a second on a small
server, however many acts were waiting.

``audit_link()`` runs with its owner's rights (SECURITY DEFINER): the runtime roles may call
it, but have no right to write the events' links or the chain head themselves. The
append-only trigger of revision 0011 lets its updates through by the transaction-local
setting ``recvault.audit_link``, which it sets and clears, and then only the one change from
unlinked to linked, with nothing else of the event changed. The hashing below is a frozen
copy of ``vault.services.audit_chain`` (a migration must not change with the code): the
event's canonical JSON with its number, after the domain and before the previous link.

SQLite keeps linking in the act's transaction (its write lock serialises the acts anyway);
its columns become nullable too, so both databases have one schema.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DOMAIN_HEX = b"recvault-audit-event-v1\n".hex()

_context = sa.table(
    "audit_event_context",
    sa.column("event_id", sa.BigInteger()),
    sa.column("ip_address", sa.String(45)),
    sa.column("user_agent", sa.Text()),
    sa.column("request_text", sa.Text()),
    sa.column("salt", sa.String(64)),
)

# The event's canonical entry up to its number, rendered by the database: keys sorted,
# text quoted by its JSON encoder, details as stored (the app stores them canonically),
# the time in UTC as Python's isoformat writes it. "seq" sorts last.
_UNNUMBERED_LINE = """
    '{"action":' || to_json(action)::text
    || ',"actor_id":' || coalesce('"' || actor_id::text || '"', 'null')
    || ',"context_commitment":' || coalesce(to_json(context_commitment)::text, 'null')
    || ',"details":' || details::text
    || ',"object_id":' || coalesce(to_json(object_id)::text, 'null')
    || ',"occurred_at":"'
    || replace(to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
               '.000000', '')
    || '+00:00","outcome":' || to_json(outcome)::text
    || ',"recording_id":' || coalesce('"' || recording_id::text || '"', 'null')
    || ',"seq":'
"""

# The head row's lock serialises linkers: a second one waits for the first to commit, then
# reads the head it left and, as a new statement, sees the events it linked as linked. A
# linker that finds every committed event linked (another took its act's event) takes no
# lock and writes nothing.
#
# The linking commits without waiting for the disk (synchronous_commit off, for this
# transaction only), so the lock is held for the linking alone, not for a disk flush. That
# loses no event: if the server stops before the linking reaches the disk, its events are
# still committed, unlinked, and the next linking links them. Nothing signed can rest on a
# lost link: PostgreSQL writes its log in order, and a checkpoint is signed by a later
# transaction that does wait for the disk, which writes the linking's log records with its
# own. At most a number already shown (an export's own, in its answer) is given anew.
# The search path is fixed to the migration's schema: a function running with its owner's
# rights must not resolve a table or operator through a schema its caller controls.
_LINK_FUNCTION = f"""
CREATE FUNCTION audit_link(OUT linked_after bigint, OUT linked_through bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    head_hash text;
    unlinked record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM audit_events WHERE seq IS NULL) THEN
        SELECT seq INTO linked_through FROM audit_chain_head WHERE id = 1;
        linked_after := linked_through;
        RETURN;
    END IF;
    SELECT seq, entry_hash INTO linked_through, head_hash
    FROM audit_chain_head WHERE id = 1 FOR UPDATE;
    linked_after := linked_through;
    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM set_config('recvault.audit_link', 'on', true);
    FOR unlinked IN
        SELECT id, {_UNNUMBERED_LINE} AS unnumbered
        FROM audit_events WHERE seq IS NULL ORDER BY id
    LOOP
        linked_through := linked_through + 1;
        head_hash := encode(sha256(
            decode('{_DOMAIN_HEX}', 'hex')
            || convert_to(unlinked.unnumbered || linked_through::text || '}}', 'UTF8')
            || decode(head_hash, 'hex')), 'hex');
        UPDATE audit_events SET seq = linked_through, entry_hash = head_hash
        WHERE id = unlinked.id;
    END LOOP;
    IF linked_through > linked_after THEN
        UPDATE audit_chain_head SET seq = linked_through, entry_hash = head_hash WHERE id = 1;
    END IF;
    PERFORM set_config('recvault.audit_link', 'off', true);
END
$$
"""

_APPEND_ONLY_BODY = """
CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The retention purge is the one sanctioned removal; it announces itself in its own
    -- transaction. Nothing ever rewrites an event.
    IF TG_OP = 'DELETE' AND current_setting('recvault.audit_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
LINKING    RAISE EXCEPTION 'audit events are never changed or removed (%)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""
# Linking gives an unlinked event its number and link once; nothing else of it may change
# then, and a linked event never changes again.
_LINKING = """    IF TG_OP = 'UPDATE' AND current_setting('recvault.audit_link', true) = 'on' THEN
        IF OLD.seq IS NULL AND OLD.entry_hash IS NULL
           AND NEW.seq IS NOT NULL AND NEW.entry_hash IS NOT NULL
           AND to_jsonb(NEW) - 'seq' - 'entry_hash' = to_jsonb(OLD) - 'seq' - 'entry_hash' THEN
            RETURN NEW;
        END IF;
    END IF;
"""


# The purge records itself in its own transaction before deleting: that event is now linked
# only after the commit, so an unlinked announcement counts (it will be numbered after every
# linked event, so after the purged ones).
_PURGE_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_purge(through_seq bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    removed bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM audit_checkpoints WHERE tree_size = through_seq) THEN
        RAISE EXCEPTION 'no checkpoint covers exactly % events: the purge stops only at one',
            through_seq;
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM audit_events
        WHERE action = 'audit:purged' AND ANNOUNCED
          AND (details::jsonb ->> 'through_seq')::bigint = through_seq
    ) THEN
        RAISE EXCEPTION 'the purge through event % has not recorded itself', through_seq;
    END IF;
    PERFORM set_config('recvault.audit_purge', 'on', true);
    DELETE FROM audit_event_context
    WHERE event_id IN (SELECT id FROM audit_events WHERE seq <= through_seq);
    DELETE FROM audit_events WHERE seq <= through_seq;
    GET DIAGNOSTICS removed = ROW_COUNT;
    PERFORM set_config('recvault.audit_purge', 'off', true);
    RETURN removed;
END
$$
"""


def _kept_details(connection: sa.Connection) -> list[dict[str, Any]]:
    """The details kept beside the events, to put back after SQLite rebuilds audit_events
    (dropping the old table cascades to them)."""
    query = sa.select(
        _context.c.event_id,
        _context.c.ip_address,
        _context.c.user_agent,
        _context.c.request_text,
        _context.c.salt,
    ).order_by(_context.c.event_id)
    return [dict(row._mapping) for row in connection.execute(query)]


def _set_nullable(nullable: bool) -> None:
    connection = op.get_bind()
    kept = _kept_details(connection) if connection.dialect.name == "sqlite" else []
    with op.batch_alter_table("audit_events") as batch_op:
        batch_op.alter_column("seq", existing_type=sa.BigInteger(), nullable=nullable)
        batch_op.alter_column("entry_hash", existing_type=sa.String(length=64), nullable=nullable)
    if kept:
        connection.execute(_context.delete())
        connection.execute(_context.insert(), kept)


def upgrade() -> None:
    _set_nullable(True)
    # The linker's search: only the few events not yet linked are ever in this index.
    op.create_index(
        "ix_audit_events_unlinked",
        "audit_events",
        ["id"],
        postgresql_where=sa.text("seq IS NULL"),
        sqlite_where=sa.text("seq IS NULL"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_LINK_FUNCTION)
        op.execute(_APPEND_ONLY_BODY.replace("LINKING", _LINKING))
        op.execute(_PURGE_FUNCTION.replace("ANNOUNCED", "(seq > through_seq OR seq IS NULL)"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Whatever is still unlinked is linked first, as the revision before links everything.
        op.execute("SELECT audit_link()")
        op.execute(_APPEND_ONLY_BODY.replace("LINKING", ""))
        op.execute(_PURGE_FUNCTION.replace("ANNOUNCED", "seq > through_seq"))
        op.execute("DROP FUNCTION audit_link()")
    op.drop_index("ix_audit_events_unlinked", table_name="audit_events")
    _set_nullable(False)
