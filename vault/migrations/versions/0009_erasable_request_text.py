"""Free text of data-subject requests beside the audit event, where it can be erased.

The text a person gave with an art. 18 restriction request (a name, a class, a reason) was
kept inside the audit event, which is never rewritten. It moves to the erasable side table,
and the event keeps only the fact that a request text exists.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REQUEST_ACTIONS = ("recording:restricted", "recording:restriction_lifted")

_events = sa.table(
    "audit_events",
    sa.column("id", sa.BigInteger()),
    sa.column("action", sa.String(64)),
    sa.column("details", sa.JSON()),
)
_context = sa.table(
    "audit_event_context",
    sa.column("event_id", sa.BigInteger()),
    sa.column("request_text", sa.Text()),
)


def upgrade() -> None:
    with op.batch_alter_table("audit_event_context") as batch_op:
        batch_op.add_column(sa.Column("request_text", sa.Text(), nullable=True))
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(_events.c.id, _events.c.details).where(_events.c.action.in_(_REQUEST_ACTIONS))
    ).all()
    for event_id, details in rows:
        if not isinstance(details, dict) or "request" not in details:
            continue
        text = details["request"]
        kept = {key: value for key, value in details.items() if key != "request"}
        kept["request_text_kept_apart"] = True
        exists = connection.execute(
            sa.select(_context.c.event_id).where(_context.c.event_id == event_id)
        ).first()
        if exists:
            connection.execute(
                _context.update()
                .where(_context.c.event_id == event_id)
                .values(request_text=text)
            )
        else:
            connection.execute(_context.insert().values(event_id=event_id, request_text=text))
        connection.execute(_events.update().where(_events.c.id == event_id).values(details=kept))


def downgrade() -> None:
    with op.batch_alter_table("audit_event_context") as batch_op:
        batch_op.drop_column("request_text")
