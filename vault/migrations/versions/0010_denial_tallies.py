"""Per-address counters of refused unauthenticated requests (the audit log's flood guard).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "denial_tallies",
        sa.Column("address", sa.String(length=45), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("address", "minute", name=op.f("pk_denial_tallies")),
    )


def downgrade() -> None:
    op.drop_table("denial_tallies")
