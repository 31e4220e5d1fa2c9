"""browser sessions

Revision ID: 0001
Revises:
Create Date: 2026-12-02 00:40:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'browser_sessions',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('user_id', sa.String(length=36), nullable=True),
        sa.Column('sealed', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_browser_sessions_expires_at', 'browser_sessions', ['expires_at'])


def downgrade() -> None:
    op.drop_index('ix_browser_sessions_expires_at', table_name='browser_sessions')
    op.drop_table('browser_sessions')
