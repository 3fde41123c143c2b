"""The PATCH receiving an upload holds it (``uploads.hold_beat``, ``uploads.hold_closing``),
so that a client that reconnects at once waits for that request to end instead of
resuming from a stale offset.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("hold_beat", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("hold_closing", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("hold_closing")
        batch.drop_column("hold_beat")
