"""Execution semantics: timeouts, delayed jobs, redrive budgets, dead-letter index, scheduler fence.

- jobs.execution_timeout_ms: per-job limit on one attempt (NULL: none).
- jobs.run_at: when a delayed job's first attempt became eligible (NULL: not delayed).
- jobs.attempt_base: attempts used before the latest redrive; the budget counts from it.
- executions.deadline_at: when a claimed/running attempt times out (NULL: no timeout).
- scheduler_fence: the newest scheduler leader's epoch; a leader's writes check it.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


SCHEMA = """
        ALTER TABLE jobs ADD COLUMN execution_timeout_ms bigint;
        ALTER TABLE jobs ADD COLUMN run_at timestamptz;
        ALTER TABLE jobs ADD COLUMN attempt_base integer NOT NULL DEFAULT 0;
        ALTER TABLE jobs ADD CONSTRAINT jobs_execution_timeout_valid
            CHECK (execution_timeout_ms IS NULL OR execution_timeout_ms > 0);
        CREATE INDEX jobs_dead_letters_idx ON jobs (finished_at DESC, job_id DESC) WHERE status = 5;

        ALTER TABLE executions ADD COLUMN deadline_at timestamptz;
        CREATE INDEX executions_owned_deadline_idx ON executions (deadline_at)
            WHERE status IN (2, 3) AND deadline_at IS NOT NULL;

        CREATE TABLE scheduler_fence (
            id    integer PRIMARY KEY,
            epoch bigint NOT NULL,
            CONSTRAINT scheduler_fence_single_row CHECK (id = 1)
        );
        INSERT INTO scheduler_fence (id, epoch) VALUES (1, 0)
"""


def upgrade() -> None:
    # asyncpg prepares each statement, so they run one at a time.
    for statement in SCHEMA.split(";"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE scheduler_fence")
    op.execute("DROP INDEX executions_owned_deadline_idx")
    op.execute("ALTER TABLE executions DROP COLUMN deadline_at")
    op.execute("DROP INDEX jobs_dead_letters_idx")
    op.execute(
        "ALTER TABLE jobs DROP CONSTRAINT jobs_execution_timeout_valid, DROP COLUMN attempt_base,"
        " DROP COLUMN run_at, DROP COLUMN execution_timeout_ms"
    )
