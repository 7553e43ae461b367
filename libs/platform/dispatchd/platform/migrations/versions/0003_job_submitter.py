"""Job submitter: the authenticated subject that submitted a job (NULL without authentication).

A submitter-role caller reads only its own jobs; the index serves its newest-first list.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE jobs ADD COLUMN submitted_by text")
    op.execute(
        "CREATE INDEX jobs_submitter_created_idx ON jobs (submitted_by, created_at DESC, job_id DESC) "
        "WHERE submitted_by IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX jobs_submitter_created_idx")
    op.execute("ALTER TABLE jobs DROP COLUMN submitted_by")
