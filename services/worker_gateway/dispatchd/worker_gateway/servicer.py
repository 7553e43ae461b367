"""WorkerService.Connect: one bidirectional stream per connected worker.

The handler is an async generator that yields what the stream's outbox holds (acks,
assignments, cancels, drain signals) while a reader task consumes the worker's messages.
A stream must register within the registration timeout (DEADLINE_EXCEEDED otherwise).
The reader does not read while the outbox is full, so a worker that stops reading its
replies is stopped by gRPC flow control, and ended with RESOURCE_EXHAUSTED once nothing
has left its outbox for the stall time. Whatever ends the stream (the worker closing, a
transport error, the gateway draining, superseding or stalling it), closing the session
starts the release of what it held, so its executions are re-queued at once even while
a write to a worker that no longer reads is still blocked.

Batches (negotiated at registration, see outbox.py for the way out): each item of a
result_batch / started_batch goes through the lanes alone, to the same handler, and is
acknowledged as if it had come alone; a batch the stream did not negotiate, an empty one
or one over MAX_BATCH_ITEMS gets one REJECTED ack of the batch's kind, and the stream lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc

from dispatchd.common import correlation, names
from dispatchd.platform import interceptors, metrics
from dispatchd.platform.interceptors import STORE_UNAVAILABLE
from dispatchd.platform.store import executions, workers
from dispatchd.platform.streams import drain
from dispatchd.v1 import worker_service_pb2 as pb
from dispatchd.v1 import worker_service_pb2_grpc as pb_grpc
from dispatchd.worker_gateway import lifetimes
from dispatchd.worker_gateway import metrics as gateway_metrics
from dispatchd.worker_gateway.dispatcher import Dispatcher
from dispatchd.worker_gateway.lifetimes import TokenLifetimes
from dispatchd.worker_gateway.messages import REJECTED, Messages, item_lane_key, lane_key
from dispatchd.worker_gateway.outcomes import Outcomes
from dispatchd.worker_gateway.sessions import REREGISTERED, Session, StreamEnd

log = logging.getLogger("dispatchd.gateway")

MAX_WORKER_ID_CHARS = 128
MAX_CONCURRENCY = 1000
MAX_LABELS = 64
MAX_LABEL_CHARS = 256
MAX_CAPABILITIES = 256
# How long messages already read may take to land once a stream ends.
LANES_GRACE_SECONDS = 5.0
# Items one result_batch / started_batch may hold (a worker runs at most MAX_CONCURRENCY).
MAX_BATCH_ITEMS = 1000
STALLED = "the worker stopped reading its stream (too many unread replies); reconnect"

Context = grpc.aio.ServicerContext[pb.ConnectRequest, pb.ConnectResponse]

_ACK_KIND = {
    "heartbeat": "heartbeat",
    "started": "started",
    "result": "result",
    "log_chunk": "log",
    "token_refresh": lifetimes.KIND,
}
# A batch payload -> (its items' field, the handler kind of one item).
_BATCHES = {"result_batch": ("results", "result"), "started_batch": ("started", "started")}


def _validate(reg: pb.WorkerRegistration) -> str | None:
    """The problem with a registration, or None when it is fine."""
    if not 1 <= len(reg.worker_id) <= MAX_WORKER_ID_CHARS:
        return f"registration.worker_id must be 1 to {MAX_WORKER_ID_CHARS} characters"
    if any("\x00" in k or "\x00" in v for k, v in reg.labels.items()):
        # Postgres text cannot hold NUL: without this it would surface as an internal error.
        return "registration.labels must not contain NUL characters"
    if len(reg.capabilities) > MAX_CAPABILITIES:
        return f"registration.capabilities may name at most {MAX_CAPABILITIES} job types"
    if not reg.capabilities:
        return "registration.capabilities must name at least one job type"
    try:
        names.printable(reg.worker_id, "registration.worker_id")  # it is logged
        for index, capability in enumerate(reg.capabilities):
            names.job_type(capability, f"registration.capabilities[{index}]")
    except names.InvalidName as exc:
        return str(exc)
    if not 0 <= reg.max_concurrency <= MAX_CONCURRENCY:
        return f"registration.max_concurrency must be between 0 and {MAX_CONCURRENCY} (0 means 1)"
    if len(reg.labels) > MAX_LABELS:
        return f"registration.labels may have at most {MAX_LABELS} entries"
    if any(len(k) > MAX_LABEL_CHARS or len(v) > MAX_LABEL_CHARS for k, v in reg.labels.items()):
        return f"registration.labels keys and values must be at most {MAX_LABEL_CHARS} characters"
    return None


class WorkerGateway(pb_grpc.WorkerServiceServicer):
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        dispatcher: Dispatcher,
        messages: Messages,
        outcomes: Outcomes,
        gateway_id: str,
        stopping: asyncio.Event,
        shutdown_grace_seconds: float,
        registration_timeout_seconds: float,
        stall_seconds: float,
        batches: bool = True,
    ) -> None:
        self.pool = pool
        self.dispatcher = dispatcher
        self.messages = messages
        self.outcomes = outcomes
        self.gateway_id = gateway_id
        self.stopping = stopping
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self.registration_timeout_seconds = registration_timeout_seconds
        self.stall_seconds = stall_seconds
        # Whether workers that ask for batches get them.
        self.batches = batches
        # Streams whose end-of-stream cleanup has not finished yet.
        self.live: set[Session] = set()
        # Set whenever an execution leaves a stream or a stream ends (drain waits on it).
        self.changed = asyncio.Event()
        # Ends a stream when its token expires; TokenRefresh messages move that instant.
        self.lifetimes = TokenLifetimes()
        self._handlers: dict[str, Callable[[Session, Any], Awaitable[None]]] = {
            "heartbeat": messages.heartbeat,
            "started": messages.started,
            "result": messages.result,
            "log_chunk": messages.log_chunk,
            "token_refresh": self.lifetimes.refresh,
        }

    async def Connect(  # noqa: N802 - the gRPC method name
        self, request_iterator: AsyncIterator[pb.ConnectRequest], context: Context
    ) -> AsyncIterator[pb.ConnectResponse]:
        requests = aiter(request_iterator)
        session = await self._register(requests, context)
        if session is None:
            return
        reader = asyncio.create_task(self._read(session, requests))
        # Not in `finally` alone: a write to a worker that stopped reading may never finish.
        cleanup = asyncio.create_task(self._end(session, reader))
        try:
            while (message := await session.outbox.get()) is not None:
                gateway_metrics.count_outbound(message)
                yield message
        finally:
            session.close()
            # Shielded: the cleanup must finish even when the RPC is being cancelled.
            await asyncio.shield(cleanup)
        if session.end.code is not None:
            await context.abort(session.end.code, session.end.message)

    # ----------------------------------------------------------------- registration

    async def _register(self, requests: AsyncIterator[pb.ConnectRequest], context: Context) -> Session | None:
        try:
            async with asyncio.timeout(self.registration_timeout_seconds):
                first = await anext(requests)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            # The worker sent nothing, so no write of its can race this status (grpc#36066).
            seconds = f"{self.registration_timeout_seconds:g}"
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"no registration within {seconds}s")
        if first.WhichOneof("payload") != "registration":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "first message must be a registration")
        reg = first.registration
        problem = _validate(reg)
        if problem is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        if self.stopping.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "gateway is shutting down; connect to another replica")

        session = Session(
            worker_id=reg.worker_id,
            capabilities=tuple(dict.fromkeys(reg.capabilities)),
            max_concurrency=reg.max_concurrency or 1,
            labels=dict(reg.labels),
            inflight_changed=self.changed,
        )
        # One live stream per worker id: a newer registration supersedes older streams here.
        for old in self.dispatcher.by_worker(session.worker_id):
            self.dispatcher.remove(old)
            # Its cleanup may release its work before the release below does: same reason either way.
            old.release_reason = REREGISTERED
            old.close(StreamEnd(grpc.StatusCode.ABORTED, "superseded by a newer registration of this worker"))
        try:
            await workers.register(
                self.pool,
                worker_id=session.worker_id,
                session_id=session.session_id,
                gateway_id=self.gateway_id,
                capabilities=list(session.capabilities),
                max_concurrency=session.max_concurrency,
                labels=session.labels,
            )
            # What the worker held on earlier streams (here or on another gateway) is lost to it.
            released = await executions.release_owned(
                self.pool,
                worker_id=session.worker_id,
                exclude_session=session.session_id,
                reason=REREGISTERED,
            )
        except Exception as exc:  # UNAVAILABLE when a store is down, INTERNAL otherwise
            await interceptors.abort_for(exc, context)
            raise
        gateway_metrics.count_released(released)
        await self.outcomes.announce(released)
        # The ack goes on the queue before the dispatcher can see the stream, so no
        # assignment can ever precede it.
        ack = pb.WorkerAck(
            kind="registration",
            status=pb.ACK_STATUS_ACCEPTED,
            message=f"registered; session {session.session_id}",
            worker_id=session.worker_id,
            supports_token_refresh=True,
            supports_batches=self.batches and reg.supports_batches,
        )
        session.send(pb.ConnectResponse(ack=ack))
        session.outbox.batching = ack.supports_batches
        self.lifetimes.open(session)
        self.live.add(session)
        self.dispatcher.add(session)
        log.info(
            "worker registered",
            extra={
                "fields": {
                    "worker_id": session.worker_id,
                    "session_id": str(session.session_id),
                    "capabilities": list(session.capabilities),
                    "max_concurrency": session.max_concurrency,
                    "released": len(released),
                }
            },
        )
        return session

    # ----------------------------------------------------------------- reading

    async def _read(self, session: Session, requests: AsyncIterator[pb.ConnectRequest]) -> None:
        try:
            async for request in requests:
                kind = request.WhichOneof("payload")
                gateway_metrics.count_inbound(request, kind)
                if kind in self._handlers:
                    apply = functools.partial(self._apply, session, kind, getattr(request, kind))
                    await session.lanes.submit(lane_key(request), apply, request.ByteSize())
                elif kind in _BATCHES:
                    await self._unpack(session, kind, request)
                else:
                    what = "a second registration" if kind == "registration" else "an empty message"
                    session.ack(kind or "unknown", REJECTED, f"unexpected {what} on a registered stream")
                # Backpressure: the next message is read only once the worker reads its replies.
                if session.outbox.full and not await session.outbox.wait_room(self.stall_seconds):
                    await self._stalled(session, requests)
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the transport failed or the worker went away
            log.info("worker stream broke: %s", exc, extra={"fields": {"worker_id": session.worker_id}})
        # The worker closed its side: let what it already sent land, then end the stream.
        await session.lanes.wait_idle(LANES_GRACE_SECONDS)
        session.close()

    async def _unpack(self, session: Session, kind: str, request: pb.ConnectRequest) -> None:
        """Each item of a batch through the lanes, exactly as if it had come in its own message."""
        field, item_kind = _BATCHES[kind]
        items = getattr(getattr(request, kind), field)
        if not session.batches:
            session.ack(kind, REJECTED, "batches were not negotiated at registration on this stream")
            return
        if not 1 <= len(items) <= MAX_BATCH_ITEMS:
            session.ack(kind, REJECTED, f"a batch must hold 1 to {MAX_BATCH_ITEMS} items")
            return
        for item in items:
            apply = functools.partial(self._apply, session, item_kind, item)
            await session.lanes.submit(item_lane_key(item_kind, item.execution_id), apply, item.ByteSize())

    async def _stalled(self, session: Session, requests: AsyncIterator[pb.ConnectRequest]) -> None:
        """End a stream whose worker stopped reading; other streams are unaffected."""
        log.warning(
            "worker stopped reading its stream; ending it",
            extra={"fields": {"worker_id": session.worker_id, "unread": len(session.outbox)}},
        )
        self.dispatcher.remove(session)
        # Let its pending writes land, so that it learns why once it reads (grpc#36066).
        await drain(requests)
        session.close(StreamEnd(grpc.StatusCode.RESOURCE_EXHAUSTED, STALLED), discard=True)

    async def _apply(self, session: Session, kind: str, message: Any) -> None:
        # Log lines about one execution's message say which (results, start notices, log chunks).
        with correlation.bound(execution_id=getattr(message, "execution_id", "")):
            try:
                await self._handlers[kind](session, message)
            except asyncpg.exceptions.DataError as exc:  # a value Postgres cannot store: the message is bad
                log.warning("could not apply a %s: %s", kind, exc)
                session.ack(_ACK_KIND[kind], REJECTED, f"could not apply the message: {exc.__class__.__name__}")
            except STORE_UNAVAILABLE as exc:
                # Results can no longer be recorded: end the stream, the worker reconnects later.
                metrics.count_store_error(exc)
                log.warning("store unavailable while applying a %s: %s", kind, exc)
                session.close(StreamEnd(grpc.StatusCode.UNAVAILABLE, "a backing store is unavailable; reconnect later"))
            except Exception:
                log.exception("applying a %s failed", kind)
                session.ack(_ACK_KIND[kind], REJECTED, "internal error while applying the message")

    # ----------------------------------------------------------------- the end

    async def _end(self, session: Session, reader: asyncio.Task[None]) -> None:
        await session.ended.wait()
        self.dispatcher.remove(session)
        self.lifetimes.close(session)
        try:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await session.lanes.wait_idle(LANES_GRACE_SECONDS)
            await session.lanes.cancel()
            # A claim in progress for this stream finishes first, so the release below sees it.
            async with session.fill_lock:
                pass
            released = await executions.release_owned(
                self.pool, session_id=session.session_id, reason=session.release_reason
            )
            gateway_metrics.count_released(released)
            await self.outcomes.announce(released)
            await workers.disconnect(self.pool, session.worker_id, session.session_id)
            log.info(
                "worker stream closed",
                extra={
                    "fields": {
                        "worker_id": session.worker_id,
                        "session_id": str(session.session_id),
                        "released": len(released),
                    }
                },
            )
        except STORE_UNAVAILABLE as exc:  # leases expire and the scheduler re-queues; nothing is lost
            log.warning("could not release a closed worker stream now: %s", exc)
        except Exception:
            log.exception("cleanup of a worker stream failed")
        finally:
            self.live.discard(session)
            self.changed.set()

    async def drain(self) -> None:
        """Shutdown hook: stop assigning, ask workers to finish, wait, then end the streams."""
        self.dispatcher.stop()
        for session in list(self.live):
            session.draining = True
            session.send(pb.ConnectResponse(drain_signal=pb.DrainSignal(reason="gateway shutting down")))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_grace_seconds
        while any(s.inflight for s in self.live) and loop.time() < deadline:
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline - loop.time()):
                    await self.changed.wait()
        for session in list(self.live):
            session.close()
        # Wait for the cleanups (they release what is still held) before the pool closes.
        deadline = loop.time() + LANES_GRACE_SECONDS + 5.0
        while self.live and loop.time() < deadline:
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline - loop.time()):
                    await self.changed.wait()
