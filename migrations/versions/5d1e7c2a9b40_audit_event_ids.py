"""audit event ids, so a retried insert never writes twice

Revision ID: 5d1e7c2a9b40
Revises: b617f5fbdcf9
Create Date: 2026-11-30 16:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '5d1e7c2a9b40'
down_revision = 'b617f5fbdcf9'


def upgrade():
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('event_id', sa.String(length=32), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_audit_events_event_id'), ['event_id'])


def downgrade():
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_audit_events_event_id'), type_='unique')
        batch_op.drop_column('event_id')
