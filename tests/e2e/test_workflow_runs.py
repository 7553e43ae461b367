"""Workflows on the real stack (every service its own process, one worker with the builtins).

One stack for the module: the control plane loads examples/workflows at start (GitOps), and
each test starts its own runs. A run is read with GetWorkflowRun until it settles (there is
no push feed for runs; the steps themselves are released without polling, in the gateway's
settle transaction).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatchd.cli import main as cli
from dispatchd.client import Client, InvalidArgument, JobStatus, WorkflowRun, WorkflowRunStatus
from dispatchd.devtools.stack import Stack, Stores, Topology
from tests.support.databases import PgServer
from tests.support.polling import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"


@pytest.fixture(scope="module")
def stack(pg: PgServer, redis_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    name = pg.create_database()
    redis_url = getattr(redis_server, "url", None) or os.environ["DISPATCHD_TEST_REDIS_URL"]
    topology = Topology(
        schedulers=1,
        workers=(),
        stores=Stores(database_url=pg.url_for(name), redis_url=redis_url, migrate=False),
        settings={
            "DISPATCHD_WORKFLOWS_DIR": str(EXAMPLES),
            "DISPATCHD_REDIS_PREFIX": "wf-e2e",
            "DISPATCHD_SHUTDOWN_GRACE_SECONDS": "3",
        },
    )
    try:
        with Stack(topology, tmp_path_factory.mktemp("wf")) as started:
            started.add_worker("wf-worker", "--builtins")
            yield started
    finally:
        pg.drop_database(name)


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[Client]:
    with Client(stack.control_plane_target) as c:
        yield c


def settled(client: Client, run_id: str, timeout: float = 30) -> WorkflowRun:
    """The run once it is terminal and none of its steps is active any more."""
    runs: list[WorkflowRun] = []

    def done() -> bool:
        runs.append(client.workflow_run(run_id))
        return runs[-1].status.terminal and all(s.status.terminal for s in runs[-1].steps)

    wait_until(done, timeout, f"run {run_id} settled", interval=0.05)
    return runs[-1]


def steps(run: WorkflowRun) -> dict[str, tuple[JobStatus, object]]:
    return {s.step_id: (s.status, json.loads(s.result) if s.result else None) for s in run.steps}


def test_gitops_diamond_d_sees_the_results_of_b_and_c(client: Client) -> None:
    wait_until(lambda: {"examples.diamond", "examples.etl"} <= {d.name for d in client.workflows()}, 20)
    run, deduplicated = client.start_workflow("examples.diamond", {"n": 7}, idempotency_key="diamond-1")
    assert not deduplicated and run.workflow_version == 1
    assert [(s.step_id, s.status) for s in run.steps] == [
        ("a", JobStatus.PENDING),
        ("b", JobStatus.WAITING),
        ("c", JobStatus.WAITING),
        ("d", JobStatus.WAITING),
    ]
    done = settled(client, run.run_id)
    assert done.status is WorkflowRunStatus.SUCCEEDED
    result = steps(done)
    a = {"input": {"n": 7}, "parents": {}}
    b = c = {"input": {"n": 7}, "parents": {"a": a}}
    assert result["d"] == (JobStatus.SUCCEEDED, {"input": {"n": 7}, "parents": {"b": b, "c": c}})
    by_id = {s.step_id: s for s in done.steps}
    for parent in ("b", "c"):  # d was released only once both had finished
        assert by_id["d"].released_at is not None and by_id[parent].finished_at is not None
        assert by_id["d"].released_at >= by_id[parent].finished_at
    again, deduplicated = client.start_workflow("examples.diamond", {"n": 7}, idempotency_key="diamond-1")
    assert deduplicated and again.run_id == run.run_id


def test_templates_read_the_input_and_earlier_results(client: Client) -> None:
    wait_until(lambda: "examples.etl" in {d.name for d in client.workflows()}, 20)
    run, _ = client.start_workflow("examples.etl", {"source": "s3://in", "target": "db"})
    done = settled(client, run.run_id)
    assert done.status is WorkflowRunStatus.SUCCEEDED, done
    assert steps(done)["load"] == (JobStatus.SUCCEEDED, {"target": "db", "rows": [1, 2, 3]})


FAILING = {
    "name": "test.failing",
    "steps": [
        {"id": "a", "job_type": "builtin.echo"},
        # Fails its only attempt; a redrive (attempt 2) succeeds.
        {"id": "f", "job_type": "builtin.flaky", "depends_on": ["a"], "payload": {"fail_attempts": 1},
         "retry": {"max_attempts": 1}},
        {"id": "g", "job_type": "builtin.echo", "depends_on": ["f"]},
        {"id": "h", "job_type": "builtin.echo", "depends_on": ["g"]},
        {"id": "side", "job_type": "builtin.echo", "depends_on": ["a"]},
        {"id": "optional", "job_type": "builtin.fail", "continue_on_failure": True, "retry": {"max_attempts": 1}},
        {"id": "after", "job_type": "builtin.echo", "depends_on": ["optional"]},
    ],
}  # fmt: skip


def test_a_failed_step_fails_the_run_and_cancels_its_dependants_then_a_redrive_resumes_it(client: Client) -> None:
    client.register_workflow(FAILING)
    run, _ = client.start_workflow("test.failing")
    failed = settled(client, run.run_id)
    assert failed.status is WorkflowRunStatus.FAILED and "step 'f' failed" in failed.error_message
    status = {k: v[0] for k, v in steps(failed).items()}
    assert status == {
        "a": JobStatus.SUCCEEDED,
        "f": JobStatus.FAILED,
        "g": JobStatus.CANCELED,
        "h": JobStatus.CANCELED,
        "side": JobStatus.SUCCEEDED,  # not downstream of f: it still ran
        "optional": JobStatus.FAILED,  # continue_on_failure: its dependant ran
        "after": JobStatus.SUCCEEDED,
    }
    cancelled_g = {s.step_id: s.job_id for s in failed.steps}["g"]
    redrive = client.redrive([{s.step_id: s.job_id for s in failed.steps}["f"]])
    assert len(redrive.redriven) == 1
    resumed = settled(client, run.run_id)
    assert resumed.status is WorkflowRunStatus.SUCCEEDED, resumed
    after = {s.step_id: s for s in resumed.steps}
    assert after["f"].status is JobStatus.SUCCEEDED and after["f"].attempts == 2
    # g ran as a new job: the cancelled one is never resurrected.
    assert after["g"].status is JobStatus.SUCCEEDED and after["g"].job_id != cancelled_g
    assert client.get(cancelled_g).status is JobStatus.CANCELED
    assert after["h"].status is JobStatus.SUCCEEDED


def test_a_step_of_a_cancelled_run_is_not_redriven(client: Client) -> None:
    client.register_workflow(FAILING)
    run, _ = client.start_workflow("test.failing")
    assert settled(client, run.run_id).status is WorkflowRunStatus.FAILED
    assert client.cancel_workflow(run.run_id, reason="given up").status is WorkflowRunStatus.CANCELED
    failed_step = {s.step_id: s.job_id for s in client.workflow_run(run.run_id).steps}["f"]
    redrive = client.redrive([failed_step])
    assert redrive.redriven == ()
    assert [(s.job_id, s.reason) for s in redrive.skipped] == [
        (failed_step, f"its workflow run {run.run_id} was canceled; start the workflow again instead")
    ]
    assert len(client.executions(failed_step)) == 1  # no new attempt
    assert client.workflow_run(run.run_id).status is WorkflowRunStatus.CANCELED


def test_a_cycle_is_rejected_naming_the_step(client: Client) -> None:
    cyclic = {
        "name": "test.cyclic",
        "steps": [
            {"id": "a", "job_type": "builtin.echo", "depends_on": ["c"]},
            {"id": "b", "job_type": "builtin.echo", "depends_on": ["a"]},
            {"id": "c", "job_type": "builtin.echo", "depends_on": ["b"]},
        ],
    }
    with pytest.raises(InvalidArgument, match=r"step '[abc]': is part of a dependency cycle"):
        client.register_workflow(cyclic)
    assert "test.cyclic" not in {d.name for d in client.workflows()}


def test_cancelling_a_run_cancels_its_active_steps(client: Client) -> None:
    client.register_workflow(
        {
            "name": "test.slow",
            "steps": [
                {"id": "slow", "job_type": "builtin.sleep", "payload": {"seconds": 60}},
                {"id": "next", "job_type": "builtin.echo", "depends_on": ["slow"]},
            ],
        }
    )
    run, _ = client.start_workflow("test.slow")
    wait_until(lambda: client.workflow_run(run.run_id).steps[0].status is JobStatus.RUNNING, 20)
    waiting = {s.step_id: s for s in client.workflow_run(run.run_id).steps}["next"]
    assert (waiting.status, waiting.attempts) == (JobStatus.WAITING, 0)  # not run yet: no attempt
    cancelled = client.cancel_workflow(run.run_id, reason="test")
    assert cancelled.status is WorkflowRunStatus.CANCELED
    done = settled(client, run.run_id)
    assert {k: v[0] for k, v in steps(done).items()} == {"slow": JobStatus.CANCELED, "next": JobStatus.CANCELED}
    assert [s.attempts for s in done.steps] == [1, 0]  # the cancelled waiting step never ran


def test_dispatchctl_registers_starts_follows_and_lists(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ["--target", stack.control_plane_target]
    definition = tmp_path / "pair.yaml"
    definition.write_text("name: test.cli\nsteps:\n  - {id: one, job_type: builtin.echo}\n"
                          "  - {id: two, job_type: builtin.echo, depends_on: [one]}\n")  # fmt: skip
    assert cli.main([*target, "workflow", "register", str(definition)]) == 0
    assert "test.cli  1        registered" in capsys.readouterr().out
    assert cli.main([*target, "workflow", "register", str(definition)]) == 0
    assert "unchanged" in capsys.readouterr().out

    assert cli.main([*target, "workflow", "start", "test.cli", "--input", '{"k": 1}', "--follow"]) == 0
    shown = capsys.readouterr().out
    last = shown.split("run ")[-1]
    assert "test.cli v1  succeeded" in last and last.count("succeeded") == 3  # the run and both steps

    assert cli.main([*target, "-o", "json", "workflow", "runs", "--name", "test.cli"]) == 0
    listed = json.loads(capsys.readouterr().out)["runs"]
    assert [r["status"] for r in listed] == ["WORKFLOW_RUN_STATUS_SUCCEEDED"]
    assert cli.main([*target, "workflow", "list"]) == 0
    assert "test.cli" in capsys.readouterr().out
