"""Recordings, uploads, school-year calendar, methodological requests, access orders

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('school_years',
    sa.Column('school_year', sa.String(length=9), nullable=False),
    sa.Column('last_day', sa.Date(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('school_year', name=op.f('pk_school_years'))
    )
    op.create_table('access_orders',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('number', sa.String(length=64), nullable=False),
    sa.Column('issued_on', sa.Date(), nullable=False),
    sa.Column('purpose', sa.Text(), nullable=False),
    sa.Column('issued_by', sa.Uuid(), nullable=False),
    sa.Column('valid_from', sa.Date(), nullable=False),
    sa.Column('valid_until', sa.Date(), nullable=False),
    sa.Column('selection_filter', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_by', sa.Uuid(), nullable=True),
    sa.Column('revocation_reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['issued_by'], ['users.id'], name=op.f('fk_access_orders_issued_by_users')),
    sa.ForeignKeyConstraint(['revoked_by'], ['users.id'], name=op.f('fk_access_orders_revoked_by_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_access_orders'))
    )
    op.create_table('methodological_requests',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('director_id', sa.Uuid(), nullable=False),
    sa.Column('teacher_id', sa.Uuid(), nullable=False),
    sa.Column('lesson', sa.String(length=300), nullable=False),
    sa.Column('aim', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['director_id'], ['users.id'], name=op.f('fk_methodological_requests_director_id_users')),
    sa.ForeignKeyConstraint(['teacher_id'], ['users.id'], name=op.f('fk_methodological_requests_teacher_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_methodological_requests'))
    )
    with op.batch_alter_table('methodological_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_methodological_requests_teacher_id'), ['teacher_id'], unique=False)

    op.create_table('access_order_grantees',
    sa.Column('order_id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['order_id'], ['access_orders.id'], name=op.f('fk_access_order_grantees_order_id_access_orders'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_access_order_grantees_user_id_users')),
    sa.PrimaryKeyConstraint('order_id', 'user_id', name=op.f('pk_access_order_grantees'))
    )
    with op.batch_alter_table('access_order_grantees', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_access_order_grantees_user_id'), ['user_id'], unique=False)

    op.create_table('recordings',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('owner_id', sa.Uuid(), nullable=False),
    sa.Column('responsible_id', sa.Uuid(), nullable=True),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('subject', sa.String(length=100), nullable=False),
    sa.Column('class_group', sa.String(length=50), nullable=False),
    sa.Column('lesson_date', sa.Date(), nullable=False),
    sa.Column('platform', sa.String(length=16), nullable=False),
    sa.Column('purpose', sa.String(length=24), nullable=False),
    sa.Column('aim', sa.Text(), nullable=False),
    sa.Column('visible', sa.String(length=24), nullable=False),
    sa.Column('subjects_informed_method', sa.String(length=300), nullable=False),
    sa.Column('subjects_informed_at', sa.Date(), nullable=False),
    sa.Column('third_party_warning', sa.Boolean(), nullable=False),
    sa.Column('device', sa.String(length=24), nullable=False),
    sa.Column('request_id', sa.Uuid(), nullable=True),
    sa.Column('school_year', sa.String(length=9), nullable=False),
    sa.Column('retain_until', sa.Date(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('object_key', sa.String(length=200), nullable=True),
    sa.Column('wrapped_data_key', sa.LargeBinary(), nullable=True),
    sa.Column('size_bytes', sa.BigInteger(), nullable=True),
    sa.Column('content_type', sa.String(length=64), nullable=True),
    sa.Column('plaintext_sha256', sa.String(length=64), nullable=True),
    sa.Column('ciphertext_sha256', sa.String(length=64), nullable=True),
    sa.Column('available_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('restricted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('deletion_reason', sa.String(length=32), nullable=True),
    sa.Column('certificate_id', sa.Uuid(), nullable=True),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_recordings_owner_id_users')),
    sa.ForeignKeyConstraint(['request_id'], ['methodological_requests.id'], name=op.f('fk_recordings_request_id_methodological_requests')),
    sa.ForeignKeyConstraint(['responsible_id'], ['users.id'], name=op.f('fk_recordings_responsible_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recordings'))
    )
    with op.batch_alter_table('recordings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recordings_class_group'), ['class_group'], unique=False)
        batch_op.create_index(batch_op.f('ix_recordings_lesson_date'), ['lesson_date'], unique=False)
        batch_op.create_index(batch_op.f('ix_recordings_owner_id'), ['owner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_recordings_school_year'), ['school_year'], unique=False)
        batch_op.create_index(batch_op.f('ix_recordings_status'), ['status'], unique=False)

    op.create_table('access_order_recordings',
    sa.Column('order_id', sa.Uuid(), nullable=False),
    sa.Column('recording_id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['order_id'], ['access_orders.id'], name=op.f('fk_access_order_recordings_order_id_access_orders'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['recording_id'], ['recordings.id'], name=op.f('fk_access_order_recordings_recording_id_recordings')),
    sa.PrimaryKeyConstraint('order_id', 'recording_id', name=op.f('pk_access_order_recordings'))
    )
    with op.batch_alter_table('access_order_recordings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_access_order_recordings_recording_id'), ['recording_id'], unique=False)

    op.create_table('uploads',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('recording_id', sa.Uuid(), nullable=False),
    sa.Column('length', sa.BigInteger(), nullable=False),
    sa.Column('offset', sa.BigInteger(), nullable=False),
    sa.Column('multipart_id', sa.String(length=1024), nullable=True),
    sa.Column('parts', sa.JSON(), nullable=False),
    sa.Column('encryptor_state', sa.LargeBinary(), nullable=True),
    sa.Column('pending_ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('content_type', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['recording_id'], ['recordings.id'], name=op.f('fk_uploads_recording_id_recordings'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_uploads')),
    sa.UniqueConstraint('recording_id', name=op.f('uq_uploads_recording_id'))
    )
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_uploads_updated_at'), ['updated_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_uploads_updated_at'))

    op.drop_table('uploads')
    with op.batch_alter_table('access_order_recordings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_access_order_recordings_recording_id'))

    op.drop_table('access_order_recordings')
    with op.batch_alter_table('recordings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recordings_status'))
        batch_op.drop_index(batch_op.f('ix_recordings_school_year'))
        batch_op.drop_index(batch_op.f('ix_recordings_owner_id'))
        batch_op.drop_index(batch_op.f('ix_recordings_lesson_date'))
        batch_op.drop_index(batch_op.f('ix_recordings_class_group'))

    op.drop_table('recordings')
    with op.batch_alter_table('access_order_grantees', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_access_order_grantees_user_id'))

    op.drop_table('access_order_grantees')
    with op.batch_alter_table('methodological_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_methodological_requests_teacher_id'))

    op.drop_table('methodological_requests')
    op.drop_table('access_orders')
    op.drop_table('school_years')
