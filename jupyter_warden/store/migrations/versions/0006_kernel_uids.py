"""kernel_uids: the host uid each subject's sandboxed kernels run under

Revision ID: 0006
Revises: 0002
Create Date: 2026-11-23 08:20:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
# Revisions 0003-0005 belong to work landing beside this one; whichever is
# merged last points its down_revision at the one merged before it.
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('kernel_uids',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=False),
    sa.Column('uid', sa.Integer(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('subject'),
    sa.UniqueConstraint('uid')
    )


def downgrade() -> None:
    op.drop_table('kernel_uids')
