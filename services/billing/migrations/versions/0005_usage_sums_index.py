"""usage sums: a covering index of a company's usage by month, category and unit

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 08:30:00.000000
"""
from collections.abc import Sequence

from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ['cvr', 'period', 'category', 'unit', 'quantity', 'amount_ore']


def upgrade() -> None:
    # GET /v1/usage/summary sums a whole company's months from the index alone (S8).
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.create_index('ix_usage_records_cvr_period_sums', COLUMNS, unique=False)


def downgrade() -> None:
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_records_cvr_period_sums')
