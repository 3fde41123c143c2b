"""Key hierarchy: master key versions, school-year keys, sealed secrets

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('master_key_versions',
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('provider', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('must_retire', sa.Boolean(), nullable=False),
    sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('destroyed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_master_key_versions')),
    sa.UniqueConstraint('fingerprint', name=op.f('uq_master_key_versions_fingerprint'))
    )
    op.create_table('school_year_keys',
    sa.Column('school_year', sa.String(length=9), nullable=False),
    sa.Column('master_version', sa.Integer(), nullable=False),
    sa.Column('wrapped_key', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('shredded_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['master_version'], ['master_key_versions.version'], name=op.f('fk_school_year_keys_master_version_master_key_versions')),
    sa.PrimaryKeyConstraint('school_year', name=op.f('pk_school_year_keys'))
    )
    op.create_table('sealed_secrets',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('master_version', sa.Integer(), nullable=False),
    sa.Column('wrapped', sa.LargeBinary(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['master_version'], ['master_key_versions.version'], name=op.f('fk_sealed_secrets_master_version_master_key_versions')),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_sealed_secrets'))
    )


def downgrade() -> None:
    op.drop_table('sealed_secrets')
    op.drop_table('school_year_keys')
    op.drop_table('master_key_versions')
