"""The perf harness's pure parts: percentiles, /proc parsing, journeys, locust CSV, pacing, the table, ratios."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from perf.compare import ratios
from perf.cpu import TICKS, CpuMeter, parse_stat, per_job_ms, seconds, tree
from perf.journeys import Journey, handler_times, legs, throughput
from perf.load import Gate, open_loop, saturate
from perf.locust_run import parse_failures, parse_stats
from perf.profiles import PROFILES
from perf.stats import percentile, summary_ms
from perf.summary import cpu_cell, render, rows


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, q) for q in (50, 90, 99, 100)] == [50.0, 90.0, 99.0, 100.0]
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summary_is_in_milliseconds_and_empty_safe() -> None:
    assert summary_ms([0.001, 0.002, 0.003, 0.010]) == {
        "count": 4, "mean": 4.0, "p50": 2.0, "p90": 10.0, "p99": 10.0, "max": 10.0,
    }  # fmt: skip
    assert summary_ms([]) == {"count": 0}


def stat_line(pid: int, comm: str, ppid: int, utime: int, stime: int) -> str:
    rest = ["S", str(ppid)] + ["0"] * 9 + [str(utime), str(stime)] + ["0"] * 30
    return f"{pid} ({comm}) {' '.join(rest)}\n"


def test_stat_parsing_survives_spaces_and_parentheses_in_the_command() -> None:
    stat = parse_stat(stat_line(42, "postgres: dispatchd (idle) x", 7, 300, 45))
    assert (stat.pid, stat.ppid, stat.ticks) == (42, 7, 345)


def fake_proc(root: Path, processes: list[tuple[int, int, int]]) -> Path:
    for pid, ppid, ticks in processes:
        (root / str(pid)).mkdir(exist_ok=True)
        (root / str(pid) / "stat").write_text(stat_line(pid, "p", ppid, ticks, 0))
    return root


def test_cpu_of_a_process_tree_over_a_window(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, [(10, 1, 100), (11, 10, 50), (12, 11, 5), (20, 1, 999)])
    assert tree(10, proc) == {10: 100, 11: 50, 12: 5}
    meter = CpuMeter({"server": 10}, proc=proc)
    meter.start()
    fake_proc(tmp_path, [(10, 1, 100 + TICKS), (13, 10, TICKS)])  # 1 s more, and a new child with 1 s
    (tmp_path / "12" / "stat").unlink()  # a child that ended inside the window
    assert meter.stop() == {"server": 2.0}
    assert seconds({1: 5}, {1: 5 + TICKS // 2}) == round((TICKS // 2) / TICKS, 3)
    assert per_job_ms({"server": 2.0}, 1000) == {"server": 2.0}
    assert per_job_ms({"server": 2.0}, 0) == {}


def test_journeys_leave_out_missing_legs_and_count_them() -> None:
    assert handler_times(b"10.000000 10.000500") == (10.0, 10.0005)
    assert handler_times(b"not ours") == (None, None)
    done = Journey(submitted=10.0, succeeded=True, claim=10.001, handler_start=10.002, handler_done=10.003,
                   recorded=10.004)  # fmt: skip
    failed = Journey(submitted=10.0, succeeded=False, recorded=10.5)
    figures = legs([done, failed])
    assert figures["submit_to_claim_ms"]["count"] == 1 and figures["missing_claim"] == 1
    assert figures["submit_to_recorded_ms"]["max"] == 500.0
    assert throughput([done, failed], 10.0, 12.0) == {
        "window_seconds": 2.0, "completed_in_window": 1, "jobs_per_second": 0.5,
    }  # fmt: skip


LOCUST_STATS = """Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,\
Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,\
99.9%,99.99%,100%
grpc,SubmitJob,120,2,4,5.1,1,40,60,40.04,0.67,4,5,6,7,9,12,20,31,40,40,40
,Aggregated,120,2,4,5.1,1,40,60,40.04,0.67,4,5,6,7,9,12,20,31,40,40,40
"""


def test_locust_statistics_are_read_from_its_csv() -> None:
    stats = parse_stats(LOCUST_STATS)
    assert stats["SubmitJob"] == {
        "requests": 120, "failures": 2, "per_second": 40.0, "p50": 4.0, "p90": 9.0, "p99": 31.0, "max": 40.0,
    }  # fmt: skip
    assert "Aggregated" in stats
    failures = "Method,Name,Error,Occurrences\ngrpc,SubmitJob,UNAVAILABLE,2\n"
    assert parse_failures(failures) == {"SubmitJob: UNAVAILABLE": 2}


def test_open_loop_starts_every_submission_without_waiting_for_earlier_ones() -> None:
    started: list[float] = []

    async def slow_submit() -> None:
        started.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.2)  # far longer than the spacing

    elapsed = asyncio.run(open_loop(200, 0.1, slow_submit))
    assert len(started) == 20
    assert started[-1] - started[0] < 0.15  # not 20 x 0.2 s: the loop is open
    assert elapsed >= 0.2


def test_profiles_scale_down_for_tiny_runs() -> None:
    tiny = PROFILES["smoke"].scaled(seconds=2, jobs=50)
    assert tiny.open_seconds == 2 and tiny.worker_streams == 50 and tiny.bulk_jobs == 50
    assert tiny.locust_seconds == 5
    assert tiny.saturation_seconds - tiny.warmup_seconds == 2
    assert PROFILES["smoke"].scaled() == PROFILES["smoke"]


def test_the_table_shows_measured_and_skipped_phases() -> None:
    evidence = {
        "end_to_end": {
            "saturation/single": {
                "phase": "saturation", "throughput": {"jobs_per_second": 512.0}, "errors": {"UNAVAILABLE": 1},
                "unfinished": 0, "not_succeeded": 0, "submit_to_handler_done_ms": summary_ms([0.002]),
                "cpu_ms_per_job": {"control-plane": 0.5, "worker-gateway": 0.25, "worker-1": 0.1, "worker-2": 0.1},
            },
            "saturation/batch": {"phase": "saturation", "skipped": "BatchSubmitJobs not served: UNIMPLEMENTED"},
        }
    }  # fmt: skip
    table = rows(evidence)
    assert table[0][:2] == ("saturation/single", "512.0 jobs/s") and table[0][6] == "1"
    assert table[0][7] == "cp 0.50 gw 0.25 wk 0.20"
    assert table[1][0] == "  submit -> handler done" and table[1][2] == "2.0"
    assert table[2][1] == "BatchSubmitJobs not served: UNIMPLEMENTED"
    assert render(table).count("\n") == len(table) + 1
    assert cpu_cell({}) == "-"


def test_ratios_pair_the_same_figure_of_both_sides() -> None:
    celery = {"saturation": {"throughput": {"jobs_per_second": 800.0}, "cpu_ms_per_job": {"a": 1.0, "b": 1.0}}}
    ours = {
        "saturation/single": {"throughput": {"jobs_per_second": 1600.0}, "cpu_ms_per_job": {"a": 0.5, "c": 0.5}},
        "saturation/batch": {"skipped": "x"},
    }
    found = {r["figure"]: r for r in ratios(celery, ours)}
    assert found["saturation jobs/s (single submit)"]["dispatchd_over_celery"] == 2.0
    assert found["saturation CPU ms/job, all processes (single submit)"]["dispatchd_over_celery"] == 0.5
    assert found["saturation jobs/s (batch submit)"]["dispatchd_over_celery"] is None
    assert found["open loop: submit -> handler done p50 ms"]["celery"] is None


def test_saturation_never_exceeds_its_call_budget_and_waits_behind_the_gate() -> None:
    calls: list[int] = []
    backlog = [5]

    async def queue_length() -> int:
        return backlog[0]

    async def submit() -> None:
        calls.append(backlog[0])
        await asyncio.sleep(0.001)

    async def run() -> None:
        gate = Gate(queue_length, limit=5)  # closed until the backlog drops
        reopen = asyncio.get_running_loop().call_later(0.2, backlog.__setitem__, 0, 0)
        await saturate(8, 5.0, submit, gate, calls=13)
        reopen.cancel()

    asyncio.run(run())
    assert len(calls) == 13 and set(calls) == {0}


def test_the_gate_keeps_the_queue_within_its_limit_whatever_the_window() -> None:
    # 64 submitters of 200-job calls against a limit of 1,000: a gate that only read the
    # backlog let every submitter through between two readings (12,800 jobs at once).
    queue = [0]
    highest = [0]

    async def queue_length() -> int:
        await asyncio.sleep(0.01)  # a reading takes time; calls keep landing meanwhile
        return queue[0]

    async def submit() -> None:
        await asyncio.sleep(0.002)
        queue[0] += 200
        highest[0] = max(highest[0], queue[0])

    async def drain() -> None:
        while True:
            await asyncio.sleep(0.001)
            queue[0] = max(0, queue[0] - 20)

    async def run() -> None:
        draining = asyncio.create_task(drain())
        await saturate(64, 0.5, submit, Gate(queue_length, limit=1000), per_call=200)
        draining.cancel()

    asyncio.run(run())
    assert 0 < highest[0] <= 1000 + 200
