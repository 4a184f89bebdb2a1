"""key ring: named sealing keys, their wrapped versions, and who may use them

Revision ID: 0007_key_ring
Revises: 0006
Create Date: 2026-11-23 11:05:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0007_key_ring'
# 0006_kernel_uids.py's revision id is '0006'; whichever revision is merged
# after it points here, and this one at the one merged before it.
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sealing_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('name_key', sa.String(length=256), nullable=False),
    sa.Column('current_version', sa.Integer(), nullable=False),
    sa.Column('created_by', sa.String(length=300), nullable=True),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name_key')
    )
    op.create_table('sealing_key_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('wrapped', sa.LargeBinary(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['key_id'], ['sealing_keys.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_id', 'version')
    )
    with op.batch_alter_table('sealing_key_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sealing_key_versions_key_id'), ['key_id'], unique=False)
    op.create_table('sealing_key_grants',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key_id', sa.Integer(), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('created_by', sa.String(length=300), nullable=True),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['key_id'], ['sealing_keys.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_id', 'subject')
    )
    with op.batch_alter_table('sealing_key_grants', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sealing_key_grants_key_id'), ['key_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sealing_key_grants_subject'), ['subject'], unique=False)


def downgrade() -> None:
    op.drop_table('sealing_key_grants')
    op.drop_table('sealing_key_versions')
    op.drop_table('sealing_keys')
