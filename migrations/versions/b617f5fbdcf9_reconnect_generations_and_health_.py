"""reconnect generations and health transitions shared by instances

Revision ID: b617f5fbdcf9
Revises: ce4994785816
Create Date: 2026-11-30 16:19:41.390546

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b617f5fbdcf9'
down_revision = 'ce4994785816'


def upgrade():
    op.create_table('health_transitions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('instance', sa.String(length=64), nullable=False),
    sa.Column('component', sa.String(length=64), nullable=False),
    sa.Column('from_status', sa.String(length=16), nullable=True),
    sa.Column('to_status', sa.String(length=16), nullable=False),
    sa.Column('message', sa.String(length=500), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_health_transitions'))
    )
    op.create_index(op.f('ix_health_transitions_at'), 'health_transitions', ['at'], unique=False)
    op.create_table('reconnect_applied',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('instance', sa.String(length=64), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('applied_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reconnect_applied'))
    )
    op.create_index(op.f('ix_reconnect_applied_generation'), 'reconnect_applied', ['generation'], unique=False)
    op.create_table('reconnect_generations',
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('requested_at', sa.DateTime(), nullable=False),
    sa.Column('instance', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('generation', name=op.f('pk_reconnect_generations'))
    )


def downgrade():
    op.drop_table('reconnect_generations')
    op.drop_table('reconnect_applied')
    op.drop_table('health_transitions')
