"""`Client`: the blocking twin of `AsyncClient`, for scripts and synchronous applications.

Invariant: there is one implementation. Each method runs the AsyncClient's coroutine to
completion on the Client's own event loop, which also owns the gRPC channel; so a Client
must not be used from inside a running event loop (use AsyncClient there).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar, Unpack

from dispatchd.client._async import AsyncClient, Options
from dispatchd.common import loops

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def _blocking(
    method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[Client, P], R]:
    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._runner.run(method(self._client, *args, **kwargs))

    functools.update_wrapper(call, method)
    return call


def _blocking_iter(
    method: Callable[Concatenate[AsyncClient, P], AsyncGenerator[T, None]],
) -> Callable[Concatenate[Client, P], Iterator[T]]:
    def iterate(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        pages = method(self._client, *args, **kwargs)
        try:
            while True:
                try:
                    yield self._runner.run(anext(pages))
                except StopAsyncIteration:
                    return
        finally:
            self._runner.run(pages.aclose())

    functools.update_wrapper(iterate, method)
    return iterate


class Client:
    """The same methods, arguments and results as `AsyncClient`, without `await`."""

    def __init__(self, target: str | None = None, **options: Unpack[Options]) -> None:
        self._runner = asyncio.Runner(loop_factory=loops.new_loop)
        self._client = AsyncClient(target, **options)

    @property
    def target(self) -> str:
        return self._client.target

    submit = _blocking(AsyncClient.submit)
    submit_many = _blocking(AsyncClient.submit_many)
    get = _blocking(AsyncClient.get)
    cancel = _blocking(AsyncClient.cancel)
    wait = _blocking(AsyncClient.wait)
    list_jobs = _blocking(AsyncClient.list_jobs)
    iter_jobs = _blocking_iter(AsyncClient.iter_jobs)
    executions = _blocking(AsyncClient.executions)
    dead_letters = _blocking(AsyncClient.dead_letters)
    iter_dead_letters = _blocking_iter(AsyncClient.iter_dead_letters)
    redrive = _blocking(AsyncClient.redrive)
    redrive_matching = _blocking(AsyncClient.redrive_matching)
    list_logs = _blocking(AsyncClient.list_logs)
    iter_logs = _blocking_iter(AsyncClient.iter_logs)
    follow_logs = _blocking_iter(AsyncClient.follow_logs)
    workers = _blocking(AsyncClient.workers)
    queue_stats = _blocking(AsyncClient.queue_stats)
    cluster_status = _blocking(AsyncClient.cluster_status)
    watch = _blocking_iter(AsyncClient.watch)

    def close(self) -> None:
        self._runner.run(self._client.close())
        self._runner.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
