"""Workflow definitions from a directory (GitOps): registered at start, re-registered on change.

Invariants: every `*.yaml` / `*.yml` file of `DISPATCHD_WORKFLOWS_DIR` (a mounted ConfigMap in
Kubernetes) holds one or more definition documents; each goes through the same validation
as RegisterWorkflow and is registered as a new version only when its content changed (an
unchanged definition keeps its version, so every replica and every restart may load the
same files). A file is read again when its mtime or size changed (a cheap stat every
`DISPATCHD_WORKFLOWS_RELOAD_SECONDS`, no inotify); a file that does not parse or validate is
logged and skipped, and the versions registered before stay. Runs keep the version they
started with, so a changed file never alters a run in flight.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from dispatchd.platform import metrics
from dispatchd.platform.errors import InvalidArgument
from dispatchd.platform.interceptors import STORE_UNAVAILABLE
from dispatchd.platform.store import workflows
from dispatchd.platform.workflow_definitions import Definition, parse

log = logging.getLogger("dispatchd.control_plane.workflow_files")

PATTERNS = ("*.yaml", "*.yml")


def load_file(path: Path) -> list[Definition]:
    """The validated definitions of one file; InvalidArgument (naming the file) if any is wrong."""
    try:
        documents: list[Any] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidArgument(f"{path.name}: cannot read it: {exc}") from None
    try:
        return [parse(doc) for doc in documents]
    except InvalidArgument as exc:
        raise InvalidArgument(f"{path.name}: {exc}") from None


def definition_files(directory: Path) -> list[Path]:
    return sorted({p for pattern in PATTERNS for p in directory.glob(pattern) if p.is_file()})


class WorkflowFiles:
    def __init__(self, pool: asyncpg.Pool, directory: str, interval_seconds: float) -> None:
        self.pool = pool
        self.directory = Path(directory)
        self.interval = interval_seconds
        self._seen: dict[Path, tuple[int, int]] = {}

    async def sync(self) -> list[tuple[str, int]]:
        """Register what changed since the last look; the (name, version) pairs that are new."""
        registered: list[tuple[str, int]] = []
        for path in definition_files(self.directory):
            try:
                stat = path.stat()
            except OSError:  # removed between the glob and the stat
                continue
            mark = (stat.st_mtime_ns, stat.st_size)
            if self._seen.get(path) == mark:
                continue
            try:
                definitions = load_file(path)
            except InvalidArgument as exc:
                log.error("workflow file not loaded (earlier versions stay): %s", exc)
                self._seen[path] = mark  # until it changes again
                continue
            async with self.pool.acquire() as conn:
                for definition in definitions:
                    stored, created = await workflows.register(conn, definition, f"file:{path.name}")
                    if created:
                        registered.append((definition.name, stored.version))
                        log.info("registered workflow %s version %d from %s", definition.name, stored.version, path)
            self._seen[path] = mark
        return registered

    async def run(self) -> None:
        """Look every interval until cancelled; a store error is logged and retried next time."""
        if not self.directory.is_dir():
            log.error("DISPATCHD_WORKFLOWS_DIR %s is not a directory; no workflow files are loaded", self.directory)
            return
        while True:
            try:
                await self.sync()
            except (OSError, asyncpg.PostgresError, *STORE_UNAVAILABLE) as exc:
                metrics.count_store_error(exc)
                log.warning("could not sync workflow files (next look in %.0f s): %s", self.interval, exc)
            await asyncio.sleep(self.interval)
