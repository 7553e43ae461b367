"""Local TCP ports: one that is free now, and whether a given listen address is free."""

from __future__ import annotations

import socket

# Every port this process handed out: the kernel may offer a port again once the probing
# socket closed, before the server it was meant for has bound it, and two parts of one stack
# (a service's gRPC port and its metrics port) must never be given the same one.
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago and that this process never handed out before.

    The race with other processes remains (a port is only reserved by binding it).
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def port_free(listen: str) -> bool:
    """Whether a server could bind `listen` (host:port) now."""
    host, _, port = listen.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the gRPC server binds: sockets in TIME_WAIT do not count, listeners do.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]") or "127.0.0.1", int(port)))
        except OSError:
            return False
    return True
