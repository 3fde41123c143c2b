"""Order numbers unique per calendar year of issue, enforced by the database.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_orders = sa.table(
    "access_orders",
    sa.column("issued_on", sa.Date()),
    sa.column("issued_year", sa.Integer()),
)


def upgrade() -> None:
    with op.batch_alter_table("access_orders") as batch_op:
        batch_op.add_column(sa.Column("issued_year", sa.Integer(), nullable=True))
    op.execute(
        _orders.update().values(
            issued_year=sa.cast(sa.extract("year", _orders.c.issued_on), sa.Integer())
        )
    )
    # Upgrading fails here, changing nothing, if two orders already share a number within a
    # year: the director's office must renumber one of them first.
    with op.batch_alter_table("access_orders") as batch_op:
        batch_op.alter_column("issued_year", existing_type=sa.Integer(), nullable=False)
        batch_op.create_unique_constraint(
            "uq_access_orders_number", ["number", "issued_year"]
        )


def downgrade() -> None:
    with op.batch_alter_table("access_orders") as batch_op:
        batch_op.drop_constraint("uq_access_orders_number", type_="unique")
        batch_op.drop_column("issued_year")
