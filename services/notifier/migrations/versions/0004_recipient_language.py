"""recipient language: the language identity keeps for each user, and the one a delivery to a
directory recipient (order confirmation, invoice ready) is written in

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 04:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Recipients heard of before identity's events carried the language were written to in Danish.
    with op.batch_alter_table('recipients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('language', sa.String(length=2), nullable=False, server_default='da'))
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('recipient_language', sa.String(length=2), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('recipient_language')
    with op.batch_alter_table('recipients', schema=None) as batch_op:
        batch_op.drop_column('language')
