"""Active/passive regions: one region (the primary) changes work, the others only read.

A passive region runs the same services against a read replica of the primary's Postgres.
It must not change anything, or it would fork the truth (and a replica refuses writes with
an unhelpful error anyway). So, outside the primary:

- the control plane serves reads and refuses every mutating JobService call with
  FAILED_PRECONDITION, naming the primary region the caller should use instead;
- the worker gateway refuses `WorkerService.Connect` the same way: a worker that cannot
  connect is never assigned work and cannot report results or starts, which are the only
  work-changing messages the gateway takes;
- the scheduler never campaigns for leadership, so nothing is repaired or re-queued here.

Which region is the primary is the database's answer, not this configuration's: the
`RegionFence` (primacy.py) opens only while the database records this region as the primary
and is not in recovery. The configuration can only hold a region back: ALLOW_MUTATIONS=false
keeps it passive whatever the database says, and PRIMARY_REGION names the primary in refusals
until the database has recorded one. Both refusals are made by one server interceptor,
installed on every service by `server.serve`; which calls change work is a column of the one
method table (`methods.is_mutating`), so a new RPC is refused here until the table says it
only reads. Promotion is `scripts/promote-region.sh`: fence the old primary, promote the
database and record the new primary there, then switch the configuration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from dispatchd.platform.config import Settings
from dispatchd.platform.interceptors import Handler, HandlerInterceptor
from dispatchd.platform.methods import is_mutating
from dispatchd.platform.streams import await_first_message

if TYPE_CHECKING:
    from dispatchd.platform.primacy import RegionFence


class RegionConfigError(ValueError):
    """The region settings contradict each other; the process must not start."""


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    primary: str
    allow_mutations: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> Region:
        region = cls(settings.region, settings.primary_region, settings.allow_mutations)
        if not region.name or not region.primary:
            raise RegionConfigError("DISPATCHD_REGION and DISPATCHD_PRIMARY_REGION must not be empty")
        if region.allow_mutations and region.name != region.primary:
            # Two regions both accepting writes is the split brain promotion must avoid.
            raise RegionConfigError(
                f"DISPATCHD_ALLOW_MUTATIONS is true in region {region.name!r}, but the primary region is "
                f"{region.primary!r}: only the primary may allow mutations (see scripts/promote-region.sh)"
            )
        return region

    @property
    def passive(self) -> bool:
        return not self.allow_mutations

    def refusal(self, full_method: str, recorded_primary: str | None = None) -> str:
        """Why a passive region refuses `full_method`; names the database's primary when it has recorded one."""
        method = full_method.rpartition("/")[2] or full_method
        primary = recorded_primary or self.primary
        if self.name == primary:
            return (
                f"region {self.name!r} is the primary but has mutations disabled (a promotion is in progress?): "
                f"{method} is refused until DISPATCHD_ALLOW_MUTATIONS is true again"
            )
        return (
            f"region {self.name!r} is passive and serves reads only: send {method} to the primary region "
            f"{primary!r}"
        )


# A string: grpc's runtime classes are not subscriptable, only its stubs are.
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class PassiveRegionInterceptor(HandlerInterceptor):
    """Refuses mutating calls with FAILED_PRECONDITION while the region fence is closed."""

    # Decided per call, never cached per method: the fence opens and closes while the server
    # runs. Its answer is an attribute read, not a query.
    cached = False

    def __init__(self, fence: RegionFence) -> None:
        super().__init__()
        self.fence = fence

    def wrap(self, handler: Handler, details: grpc.HandlerCallDetails) -> Handler:
        method = details.method
        if self.fence.open or not is_mutating(method):
            return handler
        message = self.fence.refusal(method)

        async def refuse(context: Context) -> None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, message)

        # The refusing handler keeps the call's shape so the client sees a clean status.
        if handler.unary_unary is not None:

            async def unary_unary(request: Any, context: Context) -> Any:
                await refuse(context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:

            async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
                await refuse(context)
                yield  # pragma: no cover - abort raised above

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_unary is not None:

            async def stream_unary(requests: Any, context: Context) -> Any:
                await await_first_message(requests)
                await refuse(context)

            return grpc.stream_unary_rpc_method_handler(
                stream_unary, handler.request_deserializer, handler.response_serializer
            )

        async def stream_stream(requests: Any, context: Context) -> AsyncIterator[Any]:
            await await_first_message(requests)  # see streams.py: asyncio clients need it
            await refuse(context)
            yield  # pragma: no cover - abort raised above

        return grpc.stream_stream_rpc_method_handler(
            stream_stream, handler.request_deserializer, handler.response_serializer
        )
