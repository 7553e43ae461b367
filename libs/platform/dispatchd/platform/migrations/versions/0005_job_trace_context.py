"""Job trace context: the W3C trace context (traceparent, tracestate) a job was submitted under.

NULL when tracing was off at submit time. The gateway parents every attempt's "assign" span
on it, so all attempts of a job, retries and redrives included, join one trace. Nothing
reads it by value, so it has no index.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE jobs ADD COLUMN trace_context jsonb")


def downgrade() -> None:
    op.execute("ALTER TABLE jobs DROP COLUMN trace_context")
