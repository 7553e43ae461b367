"""Worker gateway process: the WorkerService streams that hand executions to workers, on `DISPATCHD_GATEWAY_LISTEN`."""

from __future__ import annotations

from dispatchd.platform import command_line, metrics, server
from dispatchd.platform.queues import ReadyQueues
from dispatchd.v1 import worker_service_pb2 as pb
from dispatchd.v1 import worker_service_pb2_grpc as pb_grpc
from dispatchd.worker_gateway import metrics as gateway_metrics
from dispatchd.worker_gateway.dispatcher import Dispatcher
from dispatchd.worker_gateway.events import Events
from dispatchd.worker_gateway.messages import Messages
from dispatchd.worker_gateway.outcomes import Outcomes
from dispatchd.worker_gateway.servicer import WorkerGateway

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["WorkerService"].full_name


async def build(runtime: server.Runtime) -> server.Service:
    settings = runtime.settings
    queues = ReadyQueues(runtime.redis, settings.redis_prefix, aging_seconds=settings.priority_aging_seconds)
    dispatcher = Dispatcher(runtime.pool, queues, settings.lease_seconds)
    outcomes = Outcomes(queues)
    messages = Messages(
        runtime.pool,
        dispatcher,
        outcomes,
        lease_seconds=settings.lease_seconds,
        max_payload_bytes=settings.max_payload_bytes,
        heartbeat_seconds=settings.heartbeat_seconds,
    )
    gateway = WorkerGateway(
        pool=runtime.pool,
        dispatcher=dispatcher,
        messages=messages,
        outcomes=outcomes,
        gateway_id=settings.gateway_id,
        stopping=runtime.stopping,
        shutdown_grace_seconds=settings.shutdown_grace_seconds,
        registration_timeout_seconds=settings.registration_timeout_seconds,
        stall_seconds=settings.stream_stall_seconds,
        batches=settings.stream_batches,
    )
    events = Events(queues, dispatcher)
    runtime.on_shutdown.append(gateway.drain)
    gauges = gateway_metrics.stream_gauges(dispatcher)
    return server.Service(
        register=lambda grpc_server: pb_grpc.add_WorkerServiceServicer_to_server(gateway, grpc_server),
        service_names=[SERVICE_NAME],
        tasks=[dispatcher.run, events.run, lambda: metrics.sample_every(gateway_metrics.GAUGE_SAMPLE_SECONDS, gauges)],
    )


def main(argv: list[str] | None = None) -> None:
    command_line.service_main(
        "worker-gateway",
        __doc__,
        "gateway_listen",
        build,
        argv,
    )


if __name__ == "__main__":
    main()
