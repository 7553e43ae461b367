"""The harness's port and reachability helpers, with no server running."""

from __future__ import annotations

import asyncio
import socket

from dispatchd.devtools.stores import free_port, reachable_postgres, reachable_redis


def test_probes_report_unreachable_servers() -> None:
    port = free_port()
    assert not asyncio.run(reachable_postgres(f"postgresql://postgres@127.0.0.1:{port}/x", timeout=0.5))
    assert not asyncio.run(reachable_redis(f"redis://127.0.0.1:{port}/0", timeout=0.5))


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
