"""A client that goes away while the server writes to it is a normal disconnect, logged as one.

grpc's asyncio server logs "ExecuteBatchError raised in core by servicer method [...]" as an
error with a traceback when a client cancels while a server write is blocked and the
failed write is noticed before the cancellation (the two race inside grpc). Invariant:
such a record reaches the handlers as one INFO line without a traceback; every other
record of grpc's logger passes unchanged; and `went_away` tells our own handlers (the
audit line of a stream) that such a failure is a disconnect, not an error of ours.
"""

from __future__ import annotations

import logging

from grpc._cython import cygrpc  # type: ignore[attr-defined]  # grpc-stubs leave out the core module

GRPC_LOGGER = "grpc._cython.cygrpc"
_GRPC_TEXT = "ExecuteBatchError raised in core by servicer method"


class DisconnectFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        if isinstance(message, str) and message.startswith(_GRPC_TEXT):
            record.msg = "client went away while a response was being sent: %s"
            record.args = (message[len(_GRPC_TEXT) :].strip(" []"),)
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
            record.exc_info, record.exc_text = None, None
        return True


def install() -> None:
    """Idempotent: one filter on grpc's server logger."""
    logger = logging.getLogger(GRPC_LOGGER)
    if not any(isinstance(f, DisconnectFilter) for f in logger.filters):
        logger.addFilter(DisconnectFilter())


def went_away(exc: BaseException) -> bool:
    """True for what a handler sees when its client is gone mid-write.

    The failed write itself, or GeneratorExit: grpc closes a streaming handler it stops
    consuming, which it only does once the call is over.
    """
    return isinstance(exc, (cygrpc.ExecuteBatchError, GeneratorExit))
