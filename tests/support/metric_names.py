"""The metric-name contract of issue 11: every metric a dispatchd process exports, by type.

Invariant: this table is the one list of exported names. The dashboard and alert checks
(tests/deploy/test_observability.py) accept a query only if each name it reads is here (or is
one of Prometheus's own, `PROMETHEUS`), so a panel or alert cannot silently watch a metric
nothing emits. Counter names carry their `_total`; a histogram is listed by its base name and
is queried only through the `_bucket`, `_sum` and `_count` series Prometheus derives from it.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]

EXPORTED: dict[str, Kind] = {
    "dispatchd_grpc_server_requests_total": "counter",
    "dispatchd_grpc_server_request_duration_seconds": "histogram",
    "dispatchd_grpc_server_streams": "gauge",
    "dispatchd_jobs_submitted_total": "counter",
    "dispatchd_jobs_finished_total": "counter",
    "dispatchd_jobs_retried_total": "counter",
    "dispatchd_jobs_dead_lettered_total": "counter",
    "dispatchd_jobs_redriven_total": "counter",
    "dispatchd_jobs_cancelled_total": "counter",
    "dispatchd_queue_depth": "gauge",
    "dispatchd_queue_oldest_due_age_seconds": "gauge",
    "dispatchd_job_submit_to_claim_seconds": "histogram",
    "dispatchd_job_submit_to_terminal_seconds": "histogram",
    "dispatchd_lease_expiries_total": "counter",
    "dispatchd_execution_timeouts_total": "counter",
    "dispatchd_stream_close_requeues_total": "counter",
    "dispatchd_stale_results_total": "counter",
    "dispatchd_worker_streams": "gauge",
    "dispatchd_worker_stream_messages_total": "counter",
    "dispatchd_worker_stream_items_total": "counter",
    "dispatchd_worker_free_slots": "gauge",
    "dispatchd_scheduler_is_leader": "gauge",
    "dispatchd_scheduler_epoch": "gauge",
    "dispatchd_scheduler_takeovers_total": "counter",
    "dispatchd_scheduler_pass_duration_seconds": "histogram",
    "dispatchd_scheduler_repairs_total": "counter",
    "dispatchd_schedule_fires_total": "counter",
    "dispatchd_schedule_fires_dropped_total": "counter",
    "dispatchd_store_errors_total": "counter",
    "dispatchd_worker_executions_total": "counter",
    "dispatchd_worker_execution_duration_seconds": "histogram",
    "dispatchd_worker_inflight": "gauge",
    "dispatchd_build_info": "gauge",
}

# Series Prometheus (and the blackbox exporter behind the health Probe) produce themselves.
PROMETHEUS: dict[str, Kind] = {"up": "gauge", "probe_success": "gauge"}
