"""The chaos driver: at random intervals, SIGKILL one part of the platform and bring it back.

Strikes cycle through every kind in shuffled rounds, so each kind is hit about equally
often and all are hit at least once in a run that lasts a round:

- scheduler_leader: the replica holding the leader lease (found by its token), restarted;
- gateway, control_plane: restarted on the same address after a short downtime;
- worker: a random worker, restarted under the same worker id;
- redis: killed and started empty (it never persists);
- postgres: SIGKILLed with all backends and restarted on the same data (crash recovery).

Strikes run one at a time, off the event loop (they block on processes); after each one,
processes that died on their own are recorded and started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from dispatchd.devtools.stack import CONTROL_PLANE, GATEWAY, Exit, Stack
from perf.cluster import leader

KINDS = ("scheduler_leader", "gateway", "control_plane", "worker", "redis", "postgres")


@dataclass
class Strike:
    kind: str
    target: str
    at: float  # seconds since the driver started
    seconds: float  # until the part was back (healthy, for services)


@dataclass
class DriverReport:
    strikes: list[Strike] = field(default_factory=list)
    exits: list[Exit] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def kills(self) -> Counter[str]:
        return Counter(s.kind for s in self.strikes)


class Driver:
    def __init__(
        self, stack: Stack, rng: random.Random, interval: tuple[float, float], max_downtime: float = 1.0
    ) -> None:
        self.stack = stack
        self.rng = rng
        self.interval = interval
        self.max_downtime = max_downtime
        self.report = DriverReport()
        self._order: list[str] = []

    def _next_kind(self) -> str:
        if not self._order:
            self._order = list(KINDS)
            self.rng.shuffle(self._order)
        return self._order.pop()

    async def run(self, stop: asyncio.Event, min_strikes: int = 0) -> DriverReport:
        """Strike until `stop` is set, and at least `min_strikes` times."""
        started = time.monotonic()
        while not stop.is_set() or len(self.report.strikes) < min_strikes:
            pause = self.rng.uniform(*self.interval)
            if stop.is_set():
                await asyncio.sleep(pause)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
                if stop.is_set() and len(self.report.strikes) >= min_strikes:
                    break
            kind = self._next_kind()
            began = time.monotonic()
            try:
                target = await asyncio.to_thread(self.strike, kind)
            except Exception as exc:  # the part did not come back: note it, bring it back below
                self.report.failures.append(f"{kind}: {type(exc).__name__}: {exc}")
                target = "?"
                await asyncio.to_thread(self.stack.ensure_stores)
            back = round(time.monotonic() - began, 2)
            self.report.strikes.append(Strike(kind, target, round(began - started, 2), back))
            self.report.exits += await asyncio.to_thread(self.stack.unexpected_exits)
        return self.report

    def strike(self, kind: str) -> str:
        stack = self.stack
        downtime = self.rng.uniform(0, self.max_downtime)
        if kind == "scheduler_leader":
            # No leader at this instant (Redis just restarted): any replica will do.
            leader_name = leader(stack)
            name = leader_name or self.rng.choice(stack.schedulers)
            stack.restart(name)
            return name if leader_name else f"{name} (no leader at the time)"
        if kind == "gateway":
            stack.restart(GATEWAY, downtime)
            return GATEWAY
        if kind == "control_plane":
            stack.restart(CONTROL_PLANE, downtime)
            return CONTROL_PLANE
        if kind == "worker":
            name = self.rng.choice(stack.workers)
            stack.restart(name, downtime)
            return name
        if kind == "redis":
            stack.crash_redis(downtime)
            return "redis"
        if kind == "postgres":
            stack.crash_postgres(downtime)
            return "postgres"
        raise ValueError(f"unknown strike kind {kind!r}")
