"""The retention purge of the audit log, on PostgreSQL one function that alone may delete
events: only a whole range from the first event up to a signed checkpoint, and only when
the purge has recorded itself in the chain first. Also on PostgreSQL: TRUNCATE of the events
is refused (the row triggers of revision 0011 never see it), and the checkpoints are never
changed, removed or truncated.

The function runs with its owner's rights (SECURITY DEFINER), so neither the web app's role
nor the scheduler's needs DELETE on the events; the append-only trigger lets its deletes
through by the transaction-local setting ``recvault.audit_purge``, which it sets and clears.
SQLite has no roles: there ``vault.services.audit_retention`` deletes the same range itself.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The search path is fixed to the migration's schema: a function running with its owner's
# rights must not resolve a table or operator through a schema its caller controls.
_PURGE_FUNCTION = """
CREATE FUNCTION audit_purge(through_seq bigint) RETURNS bigint
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
        WHERE action = 'audit:purged' AND seq > through_seq
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


_CHECKPOINTS_KEPT_FUNCTION = """
CREATE FUNCTION audit_checkpoints_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit checkpoints are never changed or removed (%)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""

_TRIGGERS = (
    # A statement trigger: TRUNCATE fires no row trigger. The function of revision 0011
    # lets through only a DELETE during the purge, so it refuses this.
    "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()",
    "CREATE TRIGGER audit_checkpoints_kept BEFORE UPDATE OR DELETE ON audit_checkpoints "
    "FOR EACH ROW EXECUTE FUNCTION audit_checkpoints_kept()",
    "CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_checkpoints_kept()",
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PURGE_FUNCTION)
        op.execute(_CHECKPOINTS_KEPT_FUNCTION)
        for statement in _TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_checkpoints_no_truncate ON audit_checkpoints")
        op.execute("DROP TRIGGER audit_checkpoints_kept ON audit_checkpoints")
        op.execute("DROP TRIGGER audit_events_no_truncate ON audit_events")
        op.execute("DROP FUNCTION audit_checkpoints_kept()")
        op.execute("DROP FUNCTION audit_purge(bigint)")
