"""A client that goes away while the server writes to it is a normal disconnect, logged as one.

grpc's asyncio server logs "ExecuteBatchError raised in core by servicer method [...]" as an
error with a traceback when a client cancels while a server write is blocked and the
failed write is noticed before the cancellation (the two race inside grpc). Invariant:
such a record reaches the handlers as one INFO line without a traceback; every other
record of grpc's logger passes unchanged.
"""

from __future__ import annotations

import logging

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
