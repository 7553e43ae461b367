"""The dashboard in a real browser (headless Chromium) against the real, secured stack.

One stack (control plane, gateway, scheduler, a builtin worker and the dashboard, each its own
process, JWT auth + TLS + client certificates on) and one browser for the module. The jobs page
shows jobs submitted from the CLI without a reload (server-sent events from WatchJobs); a failed
job's page shows every attempt and its error; an operator redrives a dead letter with the button;
a viewer gets no button, and a forged POST (no or a wrong CSRF token, or a viewer's token with a
valid one) is refused and changes nothing. A workflow run's page follows its steps to the end
without a reload, an operator cancels a run and pauses a schedule (shown with its next fire time
and the jobs its fires started), and a viewer is offered neither.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from dispatchd.client import Client, JobStatus, WorkflowRunStatus
from dispatchd.dashboard.rendering import when
from dispatchd.devtools.browser import chromium
from dispatchd.devtools.stack import Stack, Stores, Topology, Workers
from dispatchd.devtools.stack.dashboard import dashboard_process, url_of
from dispatchd.devtools.stack.health import check_serving, wait_serving
from dispatchd.devtools.stores import RedisInstance
from tests.support.dashboard import cookies, csrf_token, element, fetch, forge, sign_in, text_of, wait_for
from tests.support.databases import PgServer
from tests.support.polling import wait_until
from tests.support.security import Credentials, make_credentials

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    made = make_credentials(tmp_path_factory.mktemp("dashboard-creds"))
    made.pki.create(workers=["worker-1"])  # the stack's worker, under the same CA
    return made


@pytest.fixture(scope="module")
def stack(
    creds: Credentials, pg: PgServer, redis_server: RedisInstance | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    name = pg.create_database()
    redis_url = redis_server.url if redis_server is not None else os.environ["DISPATCHD_TEST_REDIS_URL"]
    topology = Topology(
        schedulers=1,
        workers=(Workers(1, ("--builtins", "--enable-shell")),),
        stores=Stores(database_url=pg.url_for(name), redis_url=redis_url, migrate=False),
        security=creds,
        health_ports=True,
        metrics=False,
        dashboard=True,
        redis_prefix=f"dash-{uuid.uuid4().hex[:8]}",
        settings={"DISPATCHD_SHUTDOWN_GRACE_SECONDS": "2", "DISPATCHD_LOG_LEVEL": "INFO"},
    )
    try:
        with Stack(topology, tmp_path_factory.mktemp("dashboard-stack")) as started:
            yield started
    finally:
        pg.drop_database(name)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def admin(stack: Stack, creds: Credentials) -> Iterator[Client]:
    security = creds.client("admin-cli", token=creds.token("admin-cli", "admin", ttl_seconds=3600))
    with Client(stack.control_plane_target, security=security) as client:
        yield client


def dispatchctl(stack: Stack, creds: Credentials, tmp: Path, *args: str) -> str:
    """The CLI as an operator uses it, with the admin's credentials; its standard output."""
    token = tmp / "admin.jwt"
    token.write_text(creds.token("admin-cli", "admin"))
    cert, key = creds.pki.client("admin-cli")
    argv = [sys.executable, "-m", "dispatchd.cli.main", "--target", stack.control_plane_target, "-o", "json"]
    argv += ["--token-file", str(token), "--ca", str(creds.pki.ca), "--cert", str(cert), "--key", str(key), *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode in (0, 1), result.stderr
    return result.stdout


def test_jobs_appear_live_as_the_cli_submits_them(
    stack: Stack, creds: Credentials, browser: WebDriver, tmp_path: Path
) -> None:
    sign_in(browser, stack.dashboard_url, creds.token("olga", "operator"))
    element(browser, "#jobs")
    wait_for(browser, lambda b: b.find_element(By.ID, "live").is_displayed())  # subscribed to WatchJobs
    browser.execute_script("window.notReloaded = true")
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"job_type": "builtin.echo", "payload": f"hello {i}"}) + "\n" for i in range(3)))
    out = dispatchctl(stack, creds, tmp_path, "submit", "--from-file", str(jobs))
    ids = [result["job_id"] for result in json.loads(out)["results"]]
    assert len(ids) == 3
    for job_id in ids:
        # Looked up afresh each time: a status cell is replaced as the job's events arrive.
        wait_for(browser, lambda b, job_id=job_id: text_of(b, f"#job-{job_id} .status") == "succeeded")
    assert browser.execute_script("return window.notReloaded") is True


def test_a_failed_job_shows_its_executions_and_error(
    stack: Stack, creds: Credentials, browser: WebDriver, admin: Client
) -> None:
    job = admin.submit("builtin.fail", max_attempts=2).job
    assert admin.wait(job.job_id).status == JobStatus.FAILED
    browser.get(f"{stack.dashboard_url}jobs/{job.job_id}")
    # Read in one step each: the page re-reads itself if one of the job's last events arrives late.
    wait_for(browser, lambda b: text_of(b, "#job-status") == "failed")
    attempts = browser.execute_script(
        "return [...document.querySelectorAll('#executions tbody tr')].map((row) => [row.id, row.textContent])"
    )
    assert [row_id for row_id, _ in attempts] == ["attempt-1", "attempt-2"]
    assert all("worker-1" in text and "always fails" in text for _, text in attempts)
    assert "dead_lettered" in attempts[-1][1]
    assert "builtin.fail always fails" in (text_of(browser, "#job-error") or "")


def test_a_running_job_streams_its_logs_into_its_page(stack: Stack, browser: WebDriver, admin: Client) -> None:
    job = admin.submit("shell", "echo first; sleep 1; echo second").job
    browser.get(f"{stack.dashboard_url}jobs/{job.job_id}")
    logs = element(browser, "#logs")
    wait_for(browser, lambda b: "second" in logs.text)  # written after the page was served
    assert logs.text.index("first") < logs.text.index("second")
    wait_for(browser, lambda b: b.find_element(By.ID, "logs-state").text == "complete")


def test_an_operator_redrives_a_dead_letter(
    stack: Stack, creds: Credentials, browser: WebDriver, admin: Client
) -> None:
    job = admin.submit("builtin.fail", max_attempts=1).job
    admin.wait(job.job_id)
    browser.get(stack.dashboard_url + "dead-letters")
    element(browser, f"#letter-{job.job_id} button.redrive").click()
    assert f"redriven: {job.job_id}" in element(browser, "#notice").text
    assert len(admin.executions(job.job_id)) == 2  # a new attempt; the first keeps its row


def test_a_viewer_gets_no_button_and_forged_actions_are_refused(
    stack: Stack, creds: Credentials, browser: WebDriver, admin: Client
) -> None:
    job = admin.submit("builtin.fail", max_attempts=1).job
    admin.wait(job.job_id)
    url = stack.dashboard_url + "dead-letters/redrive"
    operator = cookies(browser)  # still signed in as the operator of the tests above
    browser.get(stack.dashboard_url + "dead-letters")
    operator_token = csrf_token(browser)
    assert forge(url, operator, {"job_id": job.job_id})[0] == 403  # no CSRF token
    assert forge(url, operator, {"job_id": job.job_id, "csrf_token": "0" * 64})[0] == 403
    other_session = {**operator, "dispatchd_session": "another"}  # a token is good for its own session only
    assert forge(url, other_session, {"job_id": job.job_id, "csrf_token": operator_token})[0] == 403

    sign_in(browser, stack.dashboard_url, creds.token("vera", "viewer"))
    browser.get(stack.dashboard_url + "dead-letters")
    row = element(browser, f"#letter-{job.job_id}")
    assert row.find_elements(By.CSS_SELECTOR, "button.redrive") == []
    status, body = forge(url, cookies(browser), {"job_id": job.job_id, "csrf_token": csrf_token(browser)})
    assert status == 403 and "PERMISSION_DENIED" in body  # the control plane's refusal, shown as such
    assert len(admin.executions(job.job_id)) == 1  # nothing was redriven


def test_behind_an_auth_proxy_the_header_carries_the_token(
    stack: Stack, creds: Credentials, admin: Client, tmp_path: Path
) -> None:
    """A second dashboard reading the JWT from a proxy's header: no login page, no cookie needed."""
    job = admin.submit("builtin.fail", max_attempts=1).job
    admin.wait(job.job_id)
    proxied = dashboard_process(
        stack.control_plane_target,
        stack.client_security(),
        tmp_path,
        settings={"DISPATCHD_DASHBOARD_TOKEN_HEADER": "X-Forwarded-Access-Token"},
    )
    proxied.start()
    try:
        proxied.wait_healthy()
        base = url_of(proxied)
        viewer = {"X-Forwarded-Access-Token": creds.token("vera", "viewer")}
        status, page = fetch(base + "dead-letters", viewer)
        assert status == 200 and f"letter-{job.job_id}" in page and "Redrive</button>" not in page
        operator = {"X-Forwarded-Access-Token": "Bearer " + creds.token("olga", "operator")}
        assert "Redrive</button>" in fetch(base + "dead-letters", operator)[1]
        assert fetch(base + "jobs", {})[0] == 401  # no header: the control plane's UNAUTHENTICATED
        assert fetch(base + "login", viewer)[0] == 404  # sign-in belongs to the proxy
    finally:
        proxied.stop(5)


PAIR = {
    "name": "dash.pair",
    "steps": [
        {"id": "first", "job_type": "builtin.sleep", "payload": {"seconds": {"$ref": "input.seconds"}}},
        {"id": "second", "job_type": "builtin.echo", "depends_on": ["first"]},
    ],
}


def test_a_workflow_run_page_follows_its_steps_live(
    stack: Stack, creds: Credentials, browser: WebDriver, admin: Client
) -> None:
    admin.register_workflow(PAIR)
    sign_in(browser, stack.dashboard_url, creds.token("olga", "operator"))
    run, _ = admin.start_workflow("dash.pair", {"seconds": 1})
    browser.get(f"{stack.dashboard_url}workflows/runs/{run.run_id}")
    browser.execute_script("window.notReloaded = true")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#dag a.node")) == 2
    wait_for(browser, lambda b: text_of(b, "#run-status") == "succeeded")
    assert [text_of(browser, f"#step-{step} .status") for step in ("first", "second")] == ["succeeded"] * 2
    assert browser.execute_script("return window.notReloaded") is True  # re-read in place, from the feed
    element(browser, "#step-second a.job-link").click()
    assert str(element(browser, "#workflow-run").get_attribute("href")).endswith(f"/workflows/runs/{run.run_id}")
    browser.get(f"{stack.dashboard_url}workflows?name=dash.pair&status=succeeded")
    assert "dash.pair" in element(browser, "#definitions").text
    assert element(browser, f"#run-{run.run_id}").find_element(By.CSS_SELECTOR, ".status").text == "succeeded"


def test_an_operator_cancels_a_run(stack: Stack, browser: WebDriver, admin: Client) -> None:
    run, _ = admin.start_workflow("dash.pair", {"seconds": 30})
    browser.get(f"{stack.dashboard_url}workflows/runs/{run.run_id}")
    # The page re-reads itself as the first step starts: click once it shows that.
    wait_for(browser, lambda b: text_of(b, "#step-first .status") == "running")
    element(browser, "#cancel-run").click()
    assert "cancel requested: the run is canceled" in element(browser, "#notice").text
    assert admin.workflow_run(run.run_id).status == WorkflowRunStatus.CANCELED


def test_schedules_show_their_next_fire_and_fires_and_an_operator_pauses_one(
    stack: Stack, browser: WebDriver, admin: Client
) -> None:
    admin.put_schedule("dash.hourly", "builtin.echo", cron="0 * * * *", time_zone="Europe/Berlin")
    admin.put_schedule("dash.often", "builtin.echo", interval=dt.timedelta(milliseconds=200))
    hourly = admin.get_schedule("dash.hourly", next_fires=1)
    browser.get(stack.dashboard_url + "schedules")
    row = element(browser, "[id='schedule-dash.hourly']")
    assert when(hourly.next_fire_times[0]) in row.find_element(By.CSS_SELECTOR, ".next-fire").text
    assert "0 * * * * (Europe/Berlin)" in row.text
    row.find_element(By.CSS_SELECTOR, "button.pause").click()
    assert element(browser, "#notice").text == "dash.hourly is paused"
    assert element(browser, "[id='schedule-dash.hourly'] .state").text == "paused"
    assert admin.get_schedule("dash.hourly").paused

    wait_until(lambda: bool(admin.schedule_fires("dash.often")), what="the interval schedule's first fire")
    admin.pause_schedule("dash.often")  # no fire after this one returns
    fires = admin.schedule_fires("dash.often")
    browser.get(stack.dashboard_url + "schedules/dash.often")
    links = browser.find_elements(By.CSS_SELECTOR, "#fires a.fire-link")
    assert [str(link.get_attribute("href")).rsplit("/", 1)[-1] for link in links] == [f.job_id for f in fires]
    assert len(links) >= 1 and element(browser, "#schedule-state").text == "paused"


def test_a_viewer_can_neither_pause_nor_cancel(
    stack: Stack, creds: Credentials, browser: WebDriver, admin: Client
) -> None:
    admin.resume_schedule("dash.hourly")
    run, _ = admin.start_workflow("dash.pair", {"seconds": 30})
    pause = stack.dashboard_url + "schedules/dash.hourly/pause"
    try:
        sign_in(browser, stack.dashboard_url, creds.token("vera", "viewer"))
        browser.get(stack.dashboard_url + "schedules")
        row = element(browser, "[id='schedule-dash.hourly']")
        assert row.find_elements(By.CSS_SELECTOR, "button") == []
        browser.get(f"{stack.dashboard_url}workflows/runs/{run.run_id}")
        assert text_of(browser, "#run-status") == "running"
        assert browser.find_elements(By.ID, "cancel-run") == []
        assert forge(pause, cookies(browser), {})[0] == 403  # no CSRF token
        status, body = forge(pause, cookies(browser), {"csrf_token": csrf_token(browser)})
        assert status == 403 and "PERMISSION_DENIED" in body  # the control plane's refusal
        assert not admin.get_schedule("dash.hourly").paused
    finally:
        admin.cancel_workflow(run.run_id)


def test_the_dashboard_is_healthy_exactly_while_the_control_plane_is(stack: Stack) -> None:
    """Last in the module: it restarts the control plane."""
    dashboard = stack.processes["dashboard"].health
    assert dashboard is not None and check_serving(dashboard) is None
    stack.kill("control-plane")
    wait_until(lambda: check_serving(dashboard) is not None, what="the dashboard following the control plane down")
    stack.start_again("control-plane")
    wait_serving(dashboard, timeout=20)
