"""What must hold after a backup is restored and the platform runs on it, beyond the chaos checks.

- every job acknowledged before the snapshot was exported is in the backup (none lost);
- every job not terminal in the backup ended terminal on the restored platform;
- every handler run on the restored platform is an execution row of the restored database,
  and no execution ran twice there (a re-run is always a new, recorded attempt).
Runs of the old platform after the snapshot are not violations: the backup predates them,
so the restored platform redoes that work; they are counted (`redone_after_restore`).
"""

from __future__ import annotations

from dispatchd.devtools.drills.backup import Backup
from dispatchd.platform.states import JOB_TERMINAL
from dispatchd.platform.states import JobStatus as J
from perf.chaos_checks import Check, Snapshot
from perf.chaos_handlers import Entry


def acknowledged_in_backup(acknowledged_before: dict[str, str], backup: Backup) -> Check:
    check = Check("acknowledged_before_backup_are_in_it")
    for key, job_id in acknowledged_before.items():
        if job_id not in backup.snapshot_jobs:
            check.fail(f"job {job_id} ({key}) was acknowledged before the snapshot but is not in the backup")
    return check


def active_ended_terminal(backup: Backup, snap: Snapshot) -> Check:
    check = Check("active_at_backup_ended_terminal")
    for job_id in sorted(backup.active_jobs):
        job = snap.jobs.get(job_id)
        if job is None:
            check.fail(f"job {job_id} was active in the backup and is missing after the restore")
        elif J(job["status"]) not in JOB_TERMINAL:
            check.fail(f"job {job_id} was active in the backup and is still {J(job['status']).name}")
    return check


def runs_recorded(snap: Snapshot, runs: list[Entry]) -> Check:
    check = Check("restored_runs_are_recorded_attempts")
    executions = {str(e["execution_id"]): job_id for job_id, rows in snap.executions.items() for e in rows}
    seen: set[str] = set()
    for entry in (e for e in runs if e.event == "start"):
        if executions.get(entry.execution_id) != entry.job_id:
            check.fail(f"job {entry.job_id}: execution {entry.execution_id} ran but has no row in the database")
        if entry.execution_id in seen:
            check.fail(f"job {entry.job_id}: execution {entry.execution_id} ran twice")
        seen.add(entry.execution_id)
    return check


def redone(old_runs: list[Entry], new_runs: list[Entry], backup: Backup) -> int:
    """Jobs in the backup that the old platform ran after the snapshot and the restored one ran again."""
    old = {e.job_id for e in old_runs if e.event == "start" and e.job_id in backup.snapshot_jobs}
    return len(old & {e.job_id for e in new_runs if e.event == "start"})
