"""Workflows: definitions (name, version), runs, and the steps of each run (one job each).

- workflow_definitions: one row per (name, version); `definition` is the canonical JSON the
  run's steps are built from, `digest` its hash (a re-registration of the same content is
  not a new version).
- workflow_runs: one row per run, the version it started with; idempotency keys are scoped
  per submitter, as for jobs.
- workflow_steps: the run's steps, each with its job (jobs.workflow_run_id points back),
  its dependencies and its payload template (resolved when the step is released).
  `skipped` marks a step the run cancelled because a dependency failed: a redrive of that
  dependency gives it a new job (a cancelled job is never resurrected).
- jobs.status may be 7 (WAITING): a step whose dependencies are not done, with no attempt.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


SCHEMA = """
        ALTER TABLE jobs DROP CONSTRAINT jobs_status_valid;
        ALTER TABLE jobs ADD CONSTRAINT jobs_status_valid CHECK (status BETWEEN 1 AND 7);
        ALTER TABLE jobs ADD COLUMN workflow_run_id uuid;

        CREATE TABLE workflow_definitions (
            name        text NOT NULL,
            version     integer NOT NULL,
            definition  jsonb NOT NULL,
            digest      bytea NOT NULL,
            source      text NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
            PRIMARY KEY (name, version),
            CONSTRAINT workflow_definitions_version_valid CHECK (version >= 1)
        );

        CREATE TABLE workflow_runs (
            run_id            uuid PRIMARY KEY,
            workflow_name     text NOT NULL,
            workflow_version  integer NOT NULL,
            status            smallint NOT NULL,
            input             bytea NOT NULL,
            idempotency_key   text,
            request_hash      bytea,
            submitted_by      text,
            error_message     text NOT NULL DEFAULT '',
            created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
            updated_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
            finished_at       timestamptz,
            FOREIGN KEY (workflow_name, workflow_version) REFERENCES workflow_definitions (name, version),
            CONSTRAINT workflow_runs_status_valid CHECK (status BETWEEN 1 AND 4)
        );
        CREATE UNIQUE INDEX workflow_runs_idempotency_key ON workflow_runs (submitted_by, idempotency_key)
            NULLS NOT DISTINCT WHERE idempotency_key IS NOT NULL;
        CREATE INDEX workflow_runs_created_idx ON workflow_runs (created_at DESC, run_id DESC);

        CREATE TABLE workflow_steps (
            run_id              uuid NOT NULL REFERENCES workflow_runs (run_id) ON DELETE CASCADE,
            step_id             text NOT NULL,
            position            integer NOT NULL,
            job_id              uuid NOT NULL UNIQUE REFERENCES jobs (job_id),
            depends_on          text[] NOT NULL,
            continue_on_failure boolean NOT NULL,
            payload_template    jsonb NOT NULL,
            skipped             boolean NOT NULL DEFAULT false,
            released_at         timestamptz,
            PRIMARY KEY (run_id, step_id)
        )
"""


def upgrade() -> None:
    # asyncpg prepares each statement, so they run one at a time.
    for statement in SCHEMA.split(";"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE workflow_steps, workflow_runs, workflow_definitions")
    op.execute("DELETE FROM jobs WHERE status = 7")
    op.execute("ALTER TABLE jobs DROP COLUMN workflow_run_id")
    op.execute("ALTER TABLE jobs DROP CONSTRAINT jobs_status_valid")
    op.execute("ALTER TABLE jobs ADD CONSTRAINT jobs_status_valid CHECK (status BETWEEN 1 AND 6)")
