"""Region primacy: the one row saying which region is the primary, and the region epoch.

The database, not a configuration flag, is the authority on which region may write: a
service mutates only while its region is the one recorded here and its database is not in
recovery (dispatchd.platform.primacy). The row replicates with everything else, so a replica
names the primary it follows, and a rebuilt old primary names its successor.

`primary_region` is NULL only in a fresh database: the first active region to see it claims
it (epoch 1). After that only `dispatchd_promote_region` changes it, on a server that is no
longer in recovery, and every promotion bumps the epoch.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE region_primacy (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            primary_region text,
            epoch bigint NOT NULL DEFAULT 0,
            recorded_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("INSERT INTO region_primacy DEFAULT VALUES")
    op.execute(
        """
        CREATE FUNCTION dispatchd_promote_region(region text) RETURNS bigint
        LANGUAGE plpgsql AS $$
        DECLARE
            next_epoch bigint;
        BEGIN
            IF pg_is_in_recovery() THEN
                RAISE EXCEPTION 'this server is still a replica: promote it (pg_promote) before recording %', region
                    USING ERRCODE = 'object_not_in_prerequisite_state';
            END IF;
            UPDATE region_primacy SET primary_region = region, epoch = epoch + 1, recorded_at = now()
                RETURNING epoch INTO next_epoch;
            RETURN next_epoch;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION dispatchd_promote_region(text)")
    op.execute("DROP TABLE region_primacy")
