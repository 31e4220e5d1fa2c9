"""audit_log: logins without a known user (no actor), details, and billing's entries kept from
billing.audit (source, account number, target)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 04:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.alter_column('actor_id', existing_type=sa.String(length=36), nullable=True)
        batch_op.alter_column('actor_role', existing_type=sa.String(length=20), nullable=True)
        batch_op.add_column(
            sa.Column('source', sa.String(length=10), server_default='identity', nullable=False)
        )
        batch_op.add_column(sa.Column('subject_username', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('account_number', sa.String(length=12), nullable=True))
        batch_op.add_column(sa.Column('target', sa.String(length=60), nullable=True))
        batch_op.add_column(sa.Column('details', sa.JSON(), nullable=True))
        batch_op.drop_index('ix_audit_log_tenant_cvr')
        batch_op.create_index('ix_audit_log_tenant_cvr_at', ['tenant_cvr', 'at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_log_tenant_cvr_at')
        batch_op.create_index('ix_audit_log_tenant_cvr', ['tenant_cvr'], unique=False)
    # Entries without an actor (failed logins with unknown usernames) and billing's cannot be
    # kept in the old shape.
    op.execute("DELETE FROM audit_log WHERE actor_id IS NULL OR source <> 'identity'")
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_column('details')
        batch_op.drop_column('target')
        batch_op.drop_column('account_number')
        batch_op.drop_column('subject_username')
        batch_op.drop_column('source')
        batch_op.alter_column('actor_role', existing_type=sa.String(length=20), nullable=False)
        batch_op.alter_column('actor_id', existing_type=sa.String(length=36), nullable=False)
