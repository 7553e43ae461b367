"""Schedules and their fires: a fire is a row keyed by (schedule, fire time).

`schedules` holds each schedule's timing (a cron expression in a time zone, or an interval
from an anchor), what it starts (a job template), its policies, whether it is paused, and
its `cursor`: every fire time up to it has been decided (fired or dropped by the catch-up
policy). `next_fire_at` is the first fire time after the cursor, so the leader finds what is
due, and how long to sleep, with one index scan.

A schedule starts either a job (`job_type`, `payload`, `job_options`) or a run of a workflow
(`workflow_name`, `workflow_version` — NULL: the latest — and `workflow_input`), never both.

`schedule_fires` has one row per fire time that was fired, with the job or workflow run it
created (both NULL when the overlap policy skipped it). Its primary key makes a second fire of the same time
impossible, whatever two leaders do; the leader writes it under its fence, in the same
transaction as the job and the cursor.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE schedules (
            schedule_id uuid PRIMARY KEY,
            name text NOT NULL UNIQUE,
            cron text,
            interval_ms bigint CHECK (interval_ms > 0),
            time_zone text NOT NULL DEFAULT 'UTC',
            anchor_at timestamptz NOT NULL,
            CHECK ((cron IS NULL) <> (interval_ms IS NULL)),
            job_type text,
            payload bytea NOT NULL DEFAULT '',
            job_options jsonb NOT NULL DEFAULT '{}',
            workflow_name text,
            workflow_version integer,
            workflow_input bytea NOT NULL DEFAULT '',
            CHECK ((job_type IS NULL) <> (workflow_name IS NULL)),
            catch_up smallint NOT NULL,
            catch_up_limit integer NOT NULL DEFAULT 0,
            overlap smallint NOT NULL,
            paused boolean NOT NULL DEFAULT false,
            cursor_at timestamptz NOT NULL,
            next_fire_at timestamptz NOT NULL,
            last_fire_at timestamptz,
            last_job_id uuid,
            last_run_id uuid,
            source text NOT NULL DEFAULT 'api',
            definition_hash bytea NOT NULL,
            created_by text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE NOT paused")
    op.execute(
        """
        CREATE TABLE schedule_fires (
            schedule_id uuid NOT NULL REFERENCES schedules (schedule_id) ON DELETE CASCADE,
            fire_time timestamptz NOT NULL,
            fired_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            job_id uuid,
            run_id uuid,
            -- Why the fire started nothing although it should have (e.g. its workflow is gone).
            error text NOT NULL DEFAULT '',
            epoch bigint,
            PRIMARY KEY (schedule_id, fire_time)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE schedule_fires")
    op.execute("DROP TABLE schedules")
