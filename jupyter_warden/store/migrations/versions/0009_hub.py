"""hub: group memberships mirrored from JupyterHub carry their source

Revision ID: 0009_hub
Revises: 0008
Create Date: 2026-11-23 11:20:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0009_hub'
# The brief names "0006_kernel_uids" as the parent; the revision id in
# 0006_kernel_uids.py is '0006'. Whoever merges fixes the chain.
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('group_members') as batch:
        batch.add_column(sa.Column('source', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('group_members') as batch:
        batch.drop_column('source')
