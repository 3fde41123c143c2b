"""The year-end's resumable state per school year, and the deletion notices already sent.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "year_ends",
        sa.Column("school_year", sa.String(length=9), nullable=False),
        sa.Column("early", sa.Boolean(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("frozen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("manifest", sa.JSON(), nullable=True),
        sa.Column("manifest_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("certificate_id", sa.Uuid(), nullable=True),
        sa.Column("keys_destroyed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("keys_pending", sa.Text(), nullable=True),
        sa.Column("objects_deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("objects_pending", sa.JSON(), nullable=False),
        sa.Column("tombstoned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("certified_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("school_year", name=op.f("pk_year_ends")),
    )
    op.create_table(
        "notices_sent",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("school_year", sa.String(length=9), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("about_date", sa.Date(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_notices_sent_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notices_sent")),
        sa.UniqueConstraint(
            "kind", "school_year", "user_id", "about_date", name=op.f("uq_notices_sent_kind")
        ),
    )


def downgrade() -> None:
    op.drop_table("notices_sent")
    op.drop_table("year_ends")
