"""known_administrators: when a pending administrator's letter code expires; past it, the login
no longer holds the companies below it in its group. applications: their kind (an application,
or a takeover of a company's administration)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 04:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('known_administrators', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('applications', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('kind', sa.String(length=20), server_default='application', nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table('applications', schema=None) as batch_op:
        batch_op.drop_column('kind')
    with op.batch_alter_table('known_administrators', schema=None) as batch_op:
        batch_op.drop_column('expires_at')
