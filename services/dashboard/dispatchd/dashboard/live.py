"""Server-sent event streams: the job-event feed (WatchJobs) and a job's logs (FollowLogs).

Invariant: each browser stream is one gRPC stream made with the caller's token, relayed as it
arrives (no polling anywhere); when the browser goes away the gRPC stream is cancelled, and a
comment line every `KEEPALIVE` seconds keeps idle proxies from cutting a quiet stream. A
refused stream (UNAUTHENTICATED, PERMISSION_DENIED) ends with an `error` event saying so,
which the page shows instead of retrying forever.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

from aiohttp import web

from dispatchd.client import DispatchdError, JobEvent, JobEventKind, LogLine
from dispatchd.dashboard.calls import client_for
from dispatchd.dashboard.rendering import when

KEEPALIVE = 15.0
# Which throughput series of the overview chart an event counts in (others count in none).
CHART_SERIES = {
    JobEventKind.SUBMITTED: "submitted",
    JobEventKind.SUCCEEDED: "succeeded",
    JobEventKind.DEAD_LETTERED: "failed",
    JobEventKind.CANCELED: "canceled",
}

routes = web.RouteTableDef()


async def _open(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    return response


async def _send(response: web.StreamResponse, kind: str, data: Any) -> None:
    await response.write(f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode())


async def _relay(
    request: web.Request, items: AsyncGenerator[tuple[str, Any], None], final: tuple[str, Any] | None
) -> web.StreamResponse:
    """Send each (event, data) of `items` as it comes; then `final`, if the source ended by itself."""
    response = await _open(request)
    pending: asyncio.Task[tuple[str, Any]] | None = None
    try:
        while True:
            pending = pending or asyncio.ensure_future(anext(items))
            done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE)
            if not done:
                await response.write(b": keepalive\n\n")
                continue
            try:
                kind, data = pending.result()
            except StopAsyncIteration:
                pending = None
                if final is not None:
                    await _send(response, *final)
                break
            pending = None
            await _send(response, kind, data)
    except DispatchdError as exc:
        await _send(response, "error", {"code": exc.code, "message": exc.details})
    except ConnectionResetError:
        pass  # the browser left (seen at the next write, a keepalive at the latest): end the gRPC stream
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.wait({pending})  # its outcome is moot; our own cancellation still propagates
        await items.aclose()
    return response


def event_data(event: JobEvent) -> dict[str, Any]:
    at = event.at.timestamp() if event.at is not None else None
    return {
        "job_id": event.job_id,
        "job_type": event.job_type,
        "kind": event.kind.name.lower(),
        "status": event.status.name.lower(),
        "attempt": event.attempt,
        "at": at,
        "chart_series": CHART_SERIES.get(event.kind, ""),
    }


async def _events(request: web.Request) -> AsyncGenerator[tuple[str, Any], None]:
    query = request.query
    feed = client_for(request).watch(
        job_type=query.get("type") or None, status=query.get("status") or None, job_id=query.get("job_id") or None
    )
    async for message in feed:
        if message.is_event:
            yield "job", event_data(message)
        if message.gap:
            yield "gap", {"missed": message.missed}
        if message.subscribed:
            yield "ready", {}


@routes.get("/events")
async def events(request: web.Request) -> web.StreamResponse:
    """Every job event the caller may watch (filters: type, status, job_id), as it happens."""
    return await _relay(request, _events(request), final=None)


def line_data(line: LogLine) -> dict[str, Any]:
    return {
        "attempt": line.attempt,
        "stream": line.stream,
        "message": line.message,
        "at": when(line.emitted_at),
        "log_id": line.log_id,
    }


async def _lines(request: web.Request) -> AsyncGenerator[tuple[str, Any], None]:
    job_id = request.match_info["job_id"]
    after = request.query.get("after", "")
    async for line in client_for(request).follow_logs(job_id, page_token=after):
        yield "line", line_data(line)


@routes.get("/jobs/{job_id}/logs")
async def logs(request: web.Request) -> web.StreamResponse:
    """The job's log lines after position `after` (a resume token), then each new one; `end` when the job is done."""
    return await _relay(request, _lines(request), final=("end", {}))
