"""invoice snapshot: buyer, delivery and language as issued; the customer's language

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 07:40:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SNAPSHOT = (
    ('buyer_name', sa.String(length=200), True),
    ('buyer_street', sa.String(length=200), True),
    ('buyer_postal_code', sa.String(length=4), True),
    ('buyer_city', sa.String(length=100), True),
    ('language', sa.String(length=2), True),
    ('delivery_format', sa.String(length=20), True),
    ('delivery_email', sa.String(length=320), False),
    ('delivery_gln', sa.String(length=13), False),
    ('delivery_peppol_scheme', sa.String(length=4), False),
    ('delivery_peppol_id', sa.String(length=50), False),
)
# Invoices issued before this revision are given the master data and invoice format of now:
# the best that is known of what they said (correlated subqueries: SQLite and PostgreSQL alike).
FROM_CUSTOMER = {
    'buyer_name': 'name',
    'buyer_street': 'street',
    'buyer_postal_code': 'postal_code',
    'buyer_city': 'city',
    'language': 'language',
}
FROM_ACCOUNT = {
    'delivery_format': 'invoice_format',
    'delivery_email': 'invoice_email',
    'delivery_gln': 'invoice_gln',
    'delivery_peppol_scheme': 'peppol_scheme',
    'delivery_peppol_id': 'peppol_id',
}


def upgrade() -> None:
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('language', sa.String(length=2), server_default='da', nullable=False))

    with op.batch_alter_table('invoices', schema=None) as batch_op:
        for name, type_, _ in SNAPSHOT:
            batch_op.add_column(sa.Column(name, type_, nullable=True))

    assignments = [
        f'{column} = (SELECT customers.{source} FROM customers WHERE customers.cvr = invoices.cvr)'
        for column, source in FROM_CUSTOMER.items()
    ] + [
        f'{column} = (SELECT accounts.{source} FROM accounts '
        f'WHERE accounts.account_number = invoices.account_number)'
        for column, source in FROM_ACCOUNT.items()
    ]
    op.execute('UPDATE invoices SET ' + ', '.join(assignments))

    with op.batch_alter_table('invoices', schema=None) as batch_op:
        for name, type_, required in SNAPSHOT:
            if required:
                batch_op.alter_column(name, existing_type=type_, nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('invoices', schema=None) as batch_op:
        for name, _, _ in reversed(SNAPSHOT):
            batch_op.drop_column(name)

    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_column('language')
