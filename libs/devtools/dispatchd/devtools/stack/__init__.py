"""One way to run the platform on this machine: `make up`, perf drills, chaos and the tests all use it.

- `ServiceProcess` (process): one supervised process (start, wait healthy, stop, kill, restart, log);
  `service_process` (service): a control plane, gateway or scheduler as one.
- `wait_serving` (health): the one health wait, grpc.health.v1 until SERVING.
- `Topology`, `Workers`, `Stores` (topology): what to run, as plain data.
- `Stack` (stack): stores, migrations, services and workers; every part killable by name.
"""

from __future__ import annotations

from dispatchd.devtools.stack.backing import redact
from dispatchd.devtools.stack.check import CheckFailed, run_check
from dispatchd.devtools.stack.health import CHANNEL_OPTIONS, check_serving, wait_serving
from dispatchd.devtools.stack.process import ServiceFailed, ServiceProcess, python_module_argv
from dispatchd.devtools.stack.service import free_listen, service_process
from dispatchd.devtools.stack.stack import Exit, Stack
from dispatchd.devtools.stack.topology import (
    CONTROL_PLANE,
    GATEWAY,
    SCHEDULER,
    Security,
    Stores,
    Topology,
    Workers,
    kind_of,
)

__all__ = [
    "CHANNEL_OPTIONS",
    "CONTROL_PLANE",
    "GATEWAY",
    "SCHEDULER",
    "CheckFailed",
    "Exit",
    "Security",
    "ServiceFailed",
    "ServiceProcess",
    "Stack",
    "Stores",
    "Topology",
    "Workers",
    "check_serving",
    "free_listen",
    "kind_of",
    "python_module_argv",
    "redact",
    "run_check",
    "service_process",
    "wait_serving",
]
