"""Views of recordings and the raw records of their stream requests

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('views',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('recording_id', sa.Uuid(), nullable=False),
    sa.Column('viewer_id', sa.Uuid(), nullable=False),
    sa.Column('login_session_id', sa.String(length=64), nullable=True),
    sa.Column('order_id', sa.Uuid(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('end_reason', sa.String(length=32), nullable=True),
    sa.Column('played_reported', sa.JSON(), nullable=False),
    sa.Column('duration_reported', sa.Float(), nullable=True),
    sa.Column('fetched_fast', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['order_id'], ['access_orders.id'], name=op.f('fk_views_order_id_access_orders')),
    sa.ForeignKeyConstraint(['recording_id'], ['recordings.id'], name=op.f('fk_views_recording_id_recordings'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['viewer_id'], ['users.id'], name=op.f('fk_views_viewer_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_views'))
    )
    with op.batch_alter_table('views', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_views_ended_at'), ['ended_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_views_recording_id'), ['recording_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_views_viewer_id'), ['viewer_id'], unique=False)

    op.create_table('view_ranges',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('view_id', sa.Uuid(), nullable=False),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.Column('first', sa.BigInteger(), nullable=False),
    sa.Column('end', sa.BigInteger(), nullable=False),
    sa.Column('sent', sa.BigInteger(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['view_id'], ['views.id'], name=op.f('fk_view_ranges_view_id_views'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_view_ranges'))
    )
    with op.batch_alter_table('view_ranges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_view_ranges_view_id'), ['view_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('view_ranges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_view_ranges_view_id'))

    op.drop_table('view_ranges')
    with op.batch_alter_table('views', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_views_viewer_id'))
        batch_op.drop_index(batch_op.f('ix_views_recording_id'))
        batch_op.drop_index(batch_op.f('ix_views_ended_at'))

    op.drop_table('views')
