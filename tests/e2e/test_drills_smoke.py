"""The backup drill in a tiny mode, and the manifest comparison it rests on, so neither can rot.

`make drill-backup` runs the full drill and writes the evidence; this writes nothing there.
The failover drill's smoke run is tests/chaos/test_drills.py.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from dispatchd.devtools.drills import manifest
from perf.drill_backup import run


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_backup_drill_restores_equal_content_and_every_job_ends(tmp_path: Path) -> None:
    evidence = run(jobs=60, seconds=4, directory=tmp_path)
    failed = {name: check for name, check in evidence["checks"].items() if not check["ok"]}
    assert evidence["passed"] and not failed, failed
    assert evidence["manifest"]["backed_up"] == evidence["manifest"]["restored"]
    assert evidence["manifest"]["backed_up"]["jobs"]["rows"] == evidence["backup"]["jobs_in_backup"] > 0
    assert evidence["backup"]["jobs_active_in_backup"] > 0  # the backup caught work in flight


@pytest.mark.asyncio
async def test_manifest_catches_one_changed_row_and_one_missing_row(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        await conn.execute("CREATE TABLE drill_rows (id int PRIMARY KEY, body text, at timestamptz DEFAULT now())")
        await conn.execute("INSERT INTO drill_rows (id, body) SELECT i, 'row ' || i FROM generate_series(1, 50) i")
        backed_up = await manifest.take(conn)
        assert manifest.differences(backed_up, await manifest.take(conn)) == []

        await conn.execute("UPDATE drill_rows SET body = 'corrupted' WHERE id = 17")
        changed = manifest.differences(backed_up, await manifest.take(conn))
        assert len(changed) == 1 and changed[0].startswith("drill_rows: checksum"), changed

        await conn.execute("DELETE FROM drill_rows WHERE id = 17")
        missing = manifest.differences(backed_up, await manifest.take(conn))
        assert missing == ["drill_rows: 50 rows backed up, 49 restored"], missing

        await conn.execute("DROP TABLE drill_rows")
        assert manifest.differences(backed_up, await manifest.take(conn)) == [
            "drill_rows: only in the backed-up database"
        ]
