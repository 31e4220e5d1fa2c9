"""delivery event time and correlation id: the source event's time, from which the delivery
latency metric is measured, and its correlation id, which the delivery's outcome events carry

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 18:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source_event_time', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('correlation_id', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('correlation_id')
        batch_op.drop_column('source_event_time')
