"""users: when the activation code of a login not yet activated expires, kept on the login
(`expired` is a status); filled from the live codes of the logins waiting for activation.
takeovers and takeover_notices: taking over a company's administration through its e-Boks

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 04:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('activation_expires_at', sa.DateTime(timezone=True), nullable=True))
    # One live code a login: issuing a new one revokes the ones before it.
    op.execute(
        "UPDATE users SET activation_expires_at = (SELECT MAX(c.expires_at) FROM activation_codes c "
        "WHERE c.user_id = users.id AND c.revoked_at IS NULL AND c.used_at IS NULL) "
        "WHERE status = 'pending'"
    )
    op.create_table(
        'takeovers',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('cvr', sa.String(length=8), nullable=False),
        sa.Column('user_id', sa.String(length=36), nullable=False),
        sa.Column('application_id', sa.String(length=36), nullable=False),
        sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('usable_from', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('ended_by', sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ['user_id'], ['users.id'], name=op.f('fk_takeovers_user_id_users'), ondelete='CASCADE'
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_takeovers')),
    )
    with op.batch_alter_table('takeovers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_takeovers_cvr'), ['cvr'], unique=False)
        batch_op.create_index(batch_op.f('ix_takeovers_user_id'), ['user_id'], unique=False)
        batch_op.create_index(
            'uq_takeovers_open_cvr',
            ['cvr'],
            unique=True,
            sqlite_where=sa.text("status = 'open'"),
            postgresql_where=sa.text("status = 'open'"),
        )
    op.create_table(
        'takeover_notices',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('takeover_id', sa.String(length=36), nullable=False),
        sa.Column('user_id', sa.String(length=36), nullable=False),
        sa.Column('token_hash', sa.String(length=200), nullable=False),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ['takeover_id'],
            ['takeovers.id'],
            name=op.f('fk_takeover_notices_takeover_id_takeovers'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_takeover_notices')),
    )
    with op.batch_alter_table('takeover_notices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_takeover_notices_takeover_id'), ['takeover_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_takeover_notices_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    op.drop_table('takeover_notices')
    op.drop_table('takeovers')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('activation_expires_at')
