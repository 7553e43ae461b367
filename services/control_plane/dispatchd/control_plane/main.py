"""Control plane process: JobService on `DISPATCHD_CONTROL_PLANE_LISTEN`."""

from __future__ import annotations

from dispatchd.control_plane.servicer import JobService
from dispatchd.control_plane.waiters import JobWaiters
from dispatchd.platform import command_line, paging, server
from dispatchd.platform.queues import ReadyQueues
from dispatchd.v1 import job_service_pb2, job_service_pb2_grpc

SERVICE_NAME = job_service_pb2.DESCRIPTOR.services_by_name["JobService"].full_name


async def build(runtime: server.Runtime) -> server.Service:
    queues = ReadyQueues(
        runtime.redis, runtime.settings.redis_prefix, aging_seconds=runtime.settings.priority_aging_seconds
    )
    waiters = JobWaiters(runtime.redis, queues.keys.job_channel)
    try:
        pages = paging.PageTokens.from_key_file(runtime.settings.page_token_secret_file)
    except paging.PageKeyError as exc:
        raise SystemExit(f"control-plane: {exc}") from None
    servicer = JobService(runtime.settings, runtime.pool, queues, waiters, pages)
    runtime.on_shutdown.append(waiters.close)
    runtime.on_shutdown.append(servicer.observed.close)
    return server.Service(
        register=lambda srv: job_service_pb2_grpc.add_JobServiceServicer_to_server(servicer, srv),
        service_names=[SERVICE_NAME],
        tasks=[waiters.run, servicer.observed.run],
    )


def main(argv: list[str] | None = None) -> None:
    command_line.service_main(
        "control-plane",
        __doc__,
        "control_plane_listen",
        build,
        argv,
    )


if __name__ == "__main__":
    main()
