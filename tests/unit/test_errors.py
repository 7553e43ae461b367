"""Domain errors know no gRPC; the edge maps each to its status, once, and hides the rest."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, NoReturn

import grpc
import pytest

from dispatchd.platform import errors
from dispatchd.platform.interceptors import STATUS_OF, abort_for


class Aborted(Exception):
    pass


class Context:
    """Records the status a handler's call was aborted with, as grpc's abort would."""

    def __init__(self) -> None:
        self.status: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        self.status = (code, details)
        raise Aborted


async def _status(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    context: Any = Context()
    with pytest.raises(Aborted):
        await abort_for(exc, context)
    status: tuple[grpc.StatusCode, str] | None = context.status
    return status


def _domain_errors() -> list[type[errors.DispatchdError]]:
    found: list[type[errors.DispatchdError]] = []
    pending = [errors.DispatchdError]
    while pending:
        cls = pending.pop()
        found += cls.__subclasses__()
        pending += cls.__subclasses__()
    return [cls for cls in found if cls.__module__ == errors.__name__]


def test_the_store_and_the_errors_import_no_grpc() -> None:
    modules = "errors states store.executions store.repairs store.jobs store.dead_letters store.workers"
    imports = "; ".join(f"import dispatchd.platform.{m}" for m in modules.split())
    check = f"{imports}; import sys; print(sorted(m for m in sys.modules if m.split('.')[0] == 'grpc'))"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_domain_error_has_a_status() -> None:
    assert set(_domain_errors()) == set(STATUS_OF)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidArgument("page_size must be positive"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("job 1 not found"), grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists("key taken"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.FailedPrecondition("job is done"), grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
async def test_a_domain_error_keeps_its_message(error: errors.DispatchdError, code: grpc.StatusCode) -> None:
    assert await _status(error) == (code, str(error))


async def test_a_subclass_maps_like_its_parent_and_the_docstring_is_the_default() -> None:
    class JobGone(errors.NotFound):
        """The job was deleted."""

    assert await _status(JobGone()) == (grpc.StatusCode.NOT_FOUND, "The job was deleted.")


async def test_a_lost_store_is_unavailable() -> None:
    status = await _status(ConnectionRefusedError("connect to 10.0.0.7:5432 failed"))
    assert status == (grpc.StatusCode.UNAVAILABLE, "a backing store is unavailable; retry later")


@pytest.mark.parametrize("exc", [KeyError("secret_column"), errors.DispatchdError("pool at 0x7f3 is broken")])
async def test_anything_else_is_internal_and_says_nothing_more(exc: BaseException) -> None:
    assert await _status(exc) == (grpc.StatusCode.INTERNAL, "internal error")
