"""secrets: the vault's encrypted values and who may read them

Revision ID: 0008
Revises: 0007_key_ring
Create Date: 2026-11-23 11:20:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
# Revision 0007 belongs to work landing beside this one; whichever is merged
# last points its down_revision at the one merged before it.
down_revision = '0007_key_ring'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('secrets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('owner', sa.String(length=300), nullable=False),
    sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('created_by', sa.String(length=300), nullable=True),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_index(op.f('ix_secrets_owner'), 'secrets', ['owner'], unique=False)
    op.create_table('secret_grants',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('secret_id', sa.Integer(), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=False),
    sa.Column('created_by', sa.String(length=300), nullable=True),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['secret_id'], ['secrets.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('secret_id', 'subject')
    )
    op.create_index(op.f('ix_secret_grants_secret_id'), 'secret_grants', ['secret_id'], unique=False)
    op.create_index(op.f('ix_secret_grants_subject'), 'secret_grants', ['subject'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_secret_grants_subject'), table_name='secret_grants')
    op.drop_index(op.f('ix_secret_grants_secret_id'), table_name='secret_grants')
    op.drop_table('secret_grants')
    op.drop_index(op.f('ix_secrets_owner'), table_name='secrets')
    op.drop_table('secrets')
