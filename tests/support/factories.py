"""Types of the factory fixtures that the conftest files hand out, for test annotations.

Invariant: test modules import these names from here, never from a conftest (pytest imports
conftest files itself; importing one again would load it twice under two names).
"""

from __future__ import annotations

from collections.abc import Callable

from dispatchd.devtools.stack import ServiceProcess
from dispatchd.sdk import Worker
from tests.support.gateway import Gateway
from tests.support.processes import Spawner
from tests.support.streams import WorkerStream

Spawn = Spawner  # spawn_service(name, argv, env=None); spawn_service.service(kind, env)
GatewayWith = Callable[..., Gateway]  # gateway_with(**env): a gateway process of the test's own
Streams = Callable[..., WorkerStream]  # streams(target=None): a new raw stream, closed at teardown
Workers = Callable[..., Worker]  # workers(register, **options): a running SDK worker
StartScheduler = Callable[..., ServiceProcess]  # start_scheduler(name, wait=True, **settings)
StartControlPlane = Callable[[str], ServiceProcess]  # start_control_plane(target)
