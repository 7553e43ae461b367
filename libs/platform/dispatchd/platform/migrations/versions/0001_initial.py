"""Initial schema: jobs, executions (one row per attempt), workers, execution logs.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


SCHEMA = """
        CREATE TABLE jobs (
            job_id             uuid PRIMARY KEY,
            job_type           text NOT NULL,
            payload            bytea NOT NULL,
            status             smallint NOT NULL,
            priority           integer NOT NULL DEFAULT 0,
            idempotency_key    text,
            request_hash       bytea,
            metadata           jsonb NOT NULL DEFAULT '{}'::jsonb,
            max_attempts       integer NOT NULL,
            initial_backoff_ms integer NOT NULL,
            max_backoff_ms     integer NOT NULL,
            retry_policy_set   boolean NOT NULL DEFAULT false,
            attempts           integer NOT NULL DEFAULT 1,
            result             bytea,
            error_message      text NOT NULL DEFAULT '',
            created_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
            updated_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
            finished_at        timestamptz,
            CONSTRAINT jobs_status_valid CHECK (status BETWEEN 1 AND 6),
            CONSTRAINT jobs_priority_valid CHECK (priority >= 0)
        );
        CREATE UNIQUE INDEX jobs_idempotency_key_key ON jobs (idempotency_key)
            WHERE idempotency_key IS NOT NULL;
        CREATE INDEX jobs_created_idx ON jobs (created_at DESC, job_id DESC);
        CREATE INDEX jobs_status_created_idx ON jobs (status, created_at DESC, job_id DESC);
        CREATE INDEX jobs_type_created_idx ON jobs (job_type, created_at DESC, job_id DESC);

        CREATE TABLE executions (
            execution_id     uuid PRIMARY KEY,
            job_id           uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
            attempt          integer NOT NULL,
            status           smallint NOT NULL,
            job_type         text NOT NULL,
            priority         integer NOT NULL,
            worker_id        text,
            session_id       uuid,
            claim_token      uuid,
            lease_expires_at timestamptz,
            error_message    text NOT NULL DEFAULT '',
            result           bytea,
            queued_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
            available_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
            claimed_at       timestamptz,
            started_at       timestamptz,
            finished_at      timestamptz,
            CONSTRAINT executions_job_attempt_key UNIQUE (job_id, attempt),
            CONSTRAINT executions_status_valid CHECK (status BETWEEN 1 AND 7)
        );
        CREATE INDEX executions_queued_idx ON executions (available_at) WHERE status = 1;
        CREATE INDEX executions_owned_lease_idx ON executions (lease_expires_at) WHERE status IN (2, 3);
        CREATE INDEX executions_owned_session_idx ON executions (session_id) WHERE status IN (2, 3);

        CREATE TABLE workers (
            worker_id         text PRIMARY KEY,
            session_id        uuid,
            gateway_id        text,
            capabilities      text[] NOT NULL,
            max_concurrency   integer NOT NULL,
            labels            jsonb NOT NULL DEFAULT '{}'::jsonb,
            status            smallint NOT NULL,
            connected_at      timestamptz,
            last_heartbeat_at timestamptz
        );

        CREATE TABLE execution_logs (
            log_id       bigserial PRIMARY KEY,
            execution_id uuid NOT NULL REFERENCES executions (execution_id) ON DELETE CASCADE,
            stream       text NOT NULL,
            message      text NOT NULL,
            emitted_at   timestamptz NOT NULL
        );
        CREATE INDEX execution_logs_execution_idx ON execution_logs (execution_id, log_id);
"""


def upgrade() -> None:
    # asyncpg prepares each statement, so they run one at a time.
    for statement in SCHEMA.split(";"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE execution_logs, workers, executions, jobs")
