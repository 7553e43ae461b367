"""`make screenshots`: the dashboard's main pages as PNGs (docs/screenshots/), from a live stack.

    python -m dispatchd.devtools.screenshots [--out docs/screenshots] [--data-dir .dispatchd/screenshots]

Starts its own stack (private Postgres and Redis under --data-dir, every service, two workers
and the dashboard, each a process), registers two workflows with runs (ended and still running)
and three schedules, submits demo jobs of each kind (successes, retries, dead letters, a shell
job writing logs, long sleeps that keep queues busy), then photographs each
page with headless Chromium (dispatchd.devtools.browser) and stops everything. The images are
what a fresh platform shows after a minute of mixed work; re-run it when a page changes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

from dispatchd.client import Client, JobStatus
from dispatchd.devtools.browser import chromium
from dispatchd.devtools.stack import Stack, Stores, Topology, Workers

WIDTH, HEIGHT, MAX_HEIGHT = 1200, 720, 800
SHELL = "for i in 1 2 3; do echo \"step $i of 3: copying shard $i\"; sleep 0.2; done; echo 'done' >&2"


def demo_jobs(client: Client) -> str:
    """A minute of mixed work; returns the id of a dead-lettered job whose page shows attempts."""
    client.submit_many([{"job_type": "builtin.echo", "payload": {"order": n}} for n in range(40)])
    client.submit_many(
        [
            {
                "job_type": "builtin.flaky",
                "payload": {"fail_attempts": 1},
                "initial_backoff": dt.timedelta(milliseconds=50),
            }
        ]
        * 8
    )
    client.submit("shell", SHELL)
    failed = client.submit(
        "builtin.fail", {"invoice": 1042}, max_attempts=3, initial_backoff=dt.timedelta(milliseconds=50)
    )
    for n in range(3):
        client.submit("builtin.fail", {"invoice": 1043 + n}, max_attempts=1)
    if client.wait(failed.job.job_id, timeout=dt.timedelta(seconds=30)).status is not JobStatus.FAILED:
        raise RuntimeError(f"demo job {failed.job.job_id} did not fail within 30 s")
    # Then fill every slot and leave work waiting, so the queues and workers pages show some.
    client.submit_many([{"job_type": "builtin.sleep", "payload": {"seconds": 30}} for _ in range(12)])
    client.submit("builtin.echo", "later", delay=dt.timedelta(minutes=10))
    return failed.job.job_id


REPORT = {
    "name": "reports.daily",
    "steps": [
        {"id": "extract", "job_type": "builtin.echo", "payload": {"day": {"$ref": "input.day"}}},
        {"id": "render-pdf", "job_type": "builtin.sleep", "depends_on": ["extract"], "payload": {"seconds": 60}},
        {"id": "render-csv", "job_type": "builtin.echo", "depends_on": ["extract"]},
        {"id": "publish", "job_type": "builtin.echo", "depends_on": ["render-pdf", "render-csv"]},
    ],
}
CHECK = {
    "name": "billing.check",
    "steps": [
        {"id": "load", "job_type": "builtin.echo"},
        {"id": "verify", "job_type": "builtin.fail", "depends_on": ["load"], "retry": {"max_attempts": 1}},
        {"id": "notify", "job_type": "builtin.echo", "depends_on": ["verify"]},
    ],
}


def demo_workflows(client: Client) -> str:
    """Two workflows, runs that ended either way, and schedules; the id of a run still running."""
    for definition in (REPORT, CHECK):
        client.register_workflow(definition)
    ended = [client.start_workflow("billing.check", {"batch": n})[0] for n in range(2)]
    running, _ = client.start_workflow("reports.daily", {"day": "2026-12-03"})
    for run in ended:  # the last step is cancelled in the transaction that fails the run
        last = client.workflow_run(run.run_id).steps[-1]
        if not client.wait(last.job_id, timeout=dt.timedelta(seconds=30)).status.terminal:
            raise RuntimeError(f"demo run {run.run_id} did not end within 30 s")
    client.put_schedule("reports.nightly", "builtin.echo", cron="30 2 * * *", time_zone="Europe/Berlin")
    client.put_schedule("sync.often", "builtin.echo", interval=dt.timedelta(seconds=2), catch_up="once")
    client.put_schedule("reports.weekly", workflow="reports.daily", cron="@weekly", paused=True)
    return running.run_id


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m dispatchd.devtools.screenshots", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"), help="default %(default)s")
    parser.add_argument("--data-dir", type=Path, default=Path(".dispatchd/screenshots"), help="default %(default)s")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    topology = Topology(
        schedulers=1,
        # A short grace: the demo's sleeps are cut off at the end, not waited for.
        workers=(Workers(2, ("--enable-shell", "--builtins"), concurrency=4, grace_seconds=1),),
        stores=Stores(),
        metrics=False,
        dashboard=True,
        settings={"DISPATCHD_LOG_LEVEL": "WARNING"},
    )
    with Stack(topology, args.data_dir.absolute(), say=lambda m: print(f"[screenshots] {m}", flush=True)) as stack:
        with Client(stack.control_plane_target) as client:
            run = demo_workflows(client)  # first: the demo jobs fill every worker slot
            failed = demo_jobs(client)
        time.sleep(2)  # let the live feed and the chart catch the last events
        pages = {
            "overview": "",
            "jobs": "jobs",
            "job": f"jobs/{failed}",
            "dead-letters": "dead-letters",
            "workflows": "workflows",
            "workflow-run": f"workflows/runs/{run}",
            "schedules": "schedules",
            "workers": "workers",
            "queues": "queues",
            "status": "status",
        }
        browser = chromium(WIDTH, HEIGHT)
        try:
            for name, path in pages.items():
                browser.set_window_size(WIDTH, HEIGHT)
                browser.get(stack.dashboard_url + path)
                time.sleep(0.5)  # the charts draw and the feed subscribes after load
                # The whole page, up to MAX_HEIGHT: grow the window by what the viewport lacks.
                page, inner, outer = browser.execute_script(
                    "return [document.documentElement.scrollHeight, window.innerHeight, window.outerHeight]"
                )
                browser.set_window_size(WIDTH, min(page, MAX_HEIGHT) + outer - inner)
                target = args.out / f"{name}.png"
                browser.save_screenshot(str(target))
                print(f"[screenshots] {target} ({target.stat().st_size // 1024} KiB)", flush=True)
        finally:
            browser.quit()


if __name__ == "__main__":
    main()
