"""applications: the status detail is text of any length. It is written for people and names
the companies of a group (up to 200 characters each, several times), and the detail that offers
a takeover is longer than the 500 characters the column had.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 06:10:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('applications', schema=None) as batch_op:
        batch_op.alter_column('status_detail', existing_type=sa.String(length=500), type_=sa.Text())


def downgrade() -> None:
    with op.batch_alter_table('applications', schema=None) as batch_op:
        batch_op.alter_column('status_detail', existing_type=sa.Text(), type_=sa.String(length=500))
