"""Idempotency keys are scoped per submitter: unique on (submitted_by, idempotency_key).

Before, one key was unique across everyone, so a second submitter reusing it learned the
first one's job id and could squat keys others would use. NULLS NOT DISTINCT keeps the
jobs submitted without authentication (submitted_by NULL) in one shared scope; it needs
Postgres 15 or newer.

Downgrade: the global index cannot hold a key two submitters both use, so every such job
but the oldest loses its key first (the jobs stay; only their deduplication is gone).

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE UNIQUE INDEX jobs_submitter_idempotency_key_key ON jobs (submitted_by, idempotency_key) "
        "NULLS NOT DISTINCT WHERE idempotency_key IS NOT NULL"
    )
    op.execute("DROP INDEX jobs_idempotency_key_key")


def downgrade() -> None:
    op.execute(
        """
        UPDATE jobs SET idempotency_key = NULL, request_hash = NULL
        WHERE idempotency_key IS NOT NULL AND EXISTS (
            SELECT 1 FROM jobs older WHERE older.idempotency_key = jobs.idempotency_key
              AND (older.created_at, older.job_id) < (jobs.created_at, jobs.job_id)
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX jobs_idempotency_key_key ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL"
    )
    op.execute("DROP INDEX jobs_submitter_idempotency_key_key")
