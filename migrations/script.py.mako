<%!
def body(code):
    """Autogenerate's commands without its "# ### commands auto generated" marker lines."""
    return "\n".join(line for line in code.splitlines() if not line.lstrip().startswith("# ###")).strip()
%>\
"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

"""
from alembic import op
import sqlalchemy as sa
${imports if imports else ""}

# revision identifiers, used by Alembic.
revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
% if branch_labels:
branch_labels = ${repr(branch_labels)}
% endif
% if depends_on:
depends_on = ${repr(depends_on)}
% endif


def upgrade():
    ${body(upgrades) if upgrades else "pass"}


def downgrade():
    ${body(downgrades) if downgrades else "pass"}
