"""The region fence: may this process change work right now? Its database decides.

Invariant: a process mutates only while (a) its configuration lets it (`Region`: active,
and the region it runs in) and (b) the last answer from its own database said this region
is the recorded primary (`region_primacy`, migration 0006) and the server is not in
recovery (nor fenced read-only by the promotion procedure). Until the first answer, and
after any write failed because the database turned read-only, the fence is closed. So a
region on a replica never writes, a newly promoted region writes only once the promotion was
recorded there, and an old primary rebuilt as a replica (or whose database names another
primary) refuses writes within one refresh.

The answer is cached: one small query per `interval` (1 s) in a background task, never one
per RPC, so the hot path only reads an attribute. A fresh database (no primary recorded yet)
is claimed by the first active region that sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from dispatchd.platform.regions import Region

log = logging.getLogger("dispatchd.primacy")

REFRESH_SECONDS = 1.0
# Read-only: a replica (in recovery), or an old primary the promotion procedure fenced
# (default_transaction_read_only, see scripts/promote-region.sh).
_READ = (
    "SELECT primary_region, epoch, pg_is_in_recovery() OR current_setting('transaction_read_only')::bool AS read_only"
    " FROM region_primacy"
)
# Only a fresh database, never one whose primary is recorded: promotion is the only way to move it.
_CLAIM = (
    "UPDATE region_primacy SET primary_region = $1, epoch = epoch + 1, recorded_at = now() WHERE primary_region IS NULL"
)


@dataclass(frozen=True, slots=True)
class Primacy:
    """What a database says about the regions: the recorded primary, its epoch, whether it takes writes."""

    primary: str | None
    epoch: int
    read_only: bool  # in recovery (a replica) or fenced read-only


async def read_primacy(conn: asyncpg.Pool | asyncpg.Connection) -> Primacy:
    row = await conn.fetchrow(_READ)
    if row is None:
        raise RuntimeError("region_primacy has no row: run the migrations (dispatchd-migrate)")
    return Primacy(row["primary_region"], int(row["epoch"]), bool(row["read_only"]))


def may_mutate(region: Region, primacy: Primacy | None) -> bool:
    """The fence's rule: an active region that its writable database records as the primary."""
    return not region.passive and primacy is not None and not primacy.read_only and primacy.primary == region.name


class RegionFence:
    def __init__(self, region: Region, pool: asyncpg.Pool, interval: float = REFRESH_SECONDS) -> None:
        self.region = region
        self.pool = pool
        self.interval = interval
        self.primacy: Primacy | None = None
        self._open = False
        self._changed = asyncio.Event()  # set (and replaced) whenever `open` flips
        self._wake = asyncio.Event()

    @property
    def open(self) -> bool:
        return self._open

    def _decide(self, primacy: Primacy | None) -> bool:
        return may_mutate(self.region, primacy)

    def _set(self, primacy: Primacy | None) -> None:
        self.primacy = primacy
        opened = self._decide(primacy)
        if opened != self._open:
            self._open = opened
            fields: dict[str, object] = {"event": "region_fence", "region": self.region.name, "open": opened}
            if primacy is not None:
                fields |= {"recorded_primary": primacy.primary, "epoch": primacy.epoch, "read_only": primacy.read_only}
            state = "opened: mutations allowed" if opened else "closed: mutations refused"
            log.warning("region fence %s", state, extra={"fields": fields})
            self._changed.set()
            self._changed = asyncio.Event()

    async def refresh(self) -> Primacy:
        """Ask the database now (claiming a fresh one if this region may); update the fence."""
        primacy = await read_primacy(self.pool)
        if primacy.primary is None and not primacy.read_only and not self.region.passive:
            if await self.pool.execute(_CLAIM, self.region.name) == "UPDATE 1":
                log.info("claimed a fresh database for region %s", self.region.name)
            primacy = await read_primacy(self.pool)
        self._set(primacy)
        return primacy

    def distrust(self) -> None:
        """A write failed as read-only: close at once and ask again now, not at the next tick."""
        self._set(None)
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Refresh every `interval` (sooner after `distrust`) until `stopping` is set."""
        while not stopping.is_set():
            try:
                async with asyncio.timeout(max(self.interval * 2, 2.0)):
                    await self.refresh()
            except Exception as exc:  # the database is down: writes fail on their own, keep the last answer
                log.debug("region fence refresh failed: %s", exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    async def until(self, opened: bool, stopping: asyncio.Event) -> None:
        """Wait until the fence is `opened` (or `stopping` is set)."""
        while self._open != opened and not stopping.is_set():
            changed = asyncio.ensure_future(self._changed.wait())
            stop = asyncio.ensure_future(stopping.wait())
            await asyncio.wait([changed, stop], return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            stop.cancel()

    async def while_open(self, stopping: asyncio.Event, work: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        """Run `work(halt)` during each period the fence is open; `halt` is set when it closes or we stop."""
        while not stopping.is_set():
            await self.until(True, stopping)
            if stopping.is_set():
                return
            halt = asyncio.Event()

            async def watch(halt: asyncio.Event = halt) -> None:
                await self.until(False, stopping)
                halt.set()

            watcher = asyncio.create_task(watch())
            try:
                await work(halt)
            finally:
                watcher.cancel()

    def refusal(self, full_method: str) -> str:
        """Why `full_method` is refused here, naming the primary the caller should use instead."""
        method = full_method.rpartition("/")[2] or full_method
        primacy = self.primacy
        recorded = primacy.primary if primacy is not None else None
        if self.region.passive:
            return self.region.refusal(full_method, recorded)
        if primacy is None:
            return (
                f"region {self.region.name!r} has not confirmed with its database that it is the primary: "
                f"{method} is refused (retry, or send it to the primary region)"
            )
        if primacy.read_only:
            return (
                f"region {self.region.name!r} runs on a read-only database (a replica, or fenced): "
                f"send {method} to the primary region {recorded or self.region.primary!r}"
            )
        return (
            f"region {self.region.name!r} is not the primary: its database records {recorded!r} as the primary region "
            f"(region epoch {primacy.epoch}); send {method} there"
        )

    def read_only(self, full_method: str) -> str:
        """A write of `full_method` hit a read-only database: distrust the cache and say why it was refused."""
        self.distrust()
        method = full_method.rpartition("/")[2] or full_method
        return f"region {self.region.name!r}: its database is read-only now (demoted?); {method} is refused"
