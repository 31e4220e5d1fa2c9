"""users: when the activation code of a login not yet activated expires, kept on the login
(`expired` is a status); filled from the live codes of the logins waiting for activation

Revision ID: 0010
Revises: 0007
Create Date: 2026-12-02 04:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0010'
down_revision: str | None = '0007'
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


def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('activation_expires_at')
