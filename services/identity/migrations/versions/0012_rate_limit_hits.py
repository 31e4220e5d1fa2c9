"""rate_limit_hits: the per-address limits of the public routes, counted in the database so
that every instance of the API shares them (shared.ratelimit.RateLimit): one row per accepted
request while it counts (60 seconds), purged after.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 17:45:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('rate_limit_hits',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('limit_name', sa.String(length=40), nullable=False),
    sa.Column('party', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rate_limit_hits'))
    )
    with op.batch_alter_table('rate_limit_hits', schema=None) as batch_op:
        batch_op.create_index('ix_rate_limit_hits_at', ['at'], unique=False)
        batch_op.create_index('ix_rate_limit_hits_limit_party_at', ['limit_name', 'party', 'at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('rate_limit_hits', schema=None) as batch_op:
        batch_op.drop_index('ix_rate_limit_hits_limit_party_at')
        batch_op.drop_index('ix_rate_limit_hits_at')

    op.drop_table('rate_limit_hits')
