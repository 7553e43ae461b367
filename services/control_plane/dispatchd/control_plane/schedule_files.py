"""Schedules from a directory of YAML files (GitOps): applied at start and whenever a file changes.

Invariants: the files of `DISPATCHD_SCHEDULES_DIR` (a mounted ConfigMap in Kubernetes) are
the truth for every schedule whose source is "gitops": each document with `kind: Schedule`
goes through the same validation as CreateSchedule and is upserted (an unchanged definition
changes nothing, so every replica and every restart may apply the same files), and a gitops
schedule no longer in any file is deleted — but only after a pass in which every file was
read and valid, so a broken file never deletes anything. Schedules defined through the API
(source "api") are never touched. Files are looked at again when their mtime or size
changes (`ChangedFiles`: a stat every `DISPATCHD_SCHEDULES_RELOAD_SECONDS`, no inotify).

Document format (JSON Schema: deploy/base/schedules/schedule.schema.json): the fields of
`dispatchd.v1.Schedule` in snake_case, plus `kind: Schedule`; `payload` (of `job`) and `input`
(of `workflow`) may be any YAML value (sent as JSON; a string as its UTF-8 text), durations
are strings such as "30s", and the policies are spelled `skip|once|all` and `allow|skip`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path
from typing import Any

import asyncpg
import yaml
from google.protobuf import json_format

from dispatchd.control_plane import schedule_defs
from dispatchd.control_plane.schedules import announce_change
from dispatchd.platform import metrics
from dispatchd.platform.config import Settings
from dispatchd.platform.errors import InvalidArgument
from dispatchd.platform.interceptors import STORE_UNAVAILABLE
from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.store import schedules
from dispatchd.platform.store.schedules import SOURCE_GITOPS, Definition
from dispatchd.v1 import schedule_pb2

log = logging.getLogger("dispatchd.control_plane.schedule_files")

PATTERNS = ("*.yaml", "*.yml")
KIND = "Schedule"
_POLICIES = {"catch_up": "CATCH_UP_POLICY_", "overlap": "OVERLAP_POLICY_"}


class ChangedFiles:
    """The YAML files of a directory, and which of them changed since the last look (mtime, size)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seen: dict[Path, tuple[int, int]] = {}

    def look(self) -> tuple[list[Path], bool]:
        """Every file now, and whether any was added, changed or removed since the last look."""
        marks: dict[Path, tuple[int, int]] = {}
        for path in sorted({p for pattern in PATTERNS for p in self.directory.glob(pattern) if p.is_file()}):
            try:
                stat = path.stat()
            except OSError:  # removed between the glob and the stat
                continue
            marks[path] = (stat.st_mtime_ns, stat.st_size)
        changed, self._seen = marks != self._seen, marks
        return list(marks), changed


def _encoded(value: Any) -> str:
    """A YAML payload or input as the bytes field's base64 (proto JSON)."""
    raw = value.encode() if isinstance(value, str) else json.dumps(value).encode()
    return base64.b64encode(raw).decode()


def parse(doc: Any, settings: Settings) -> Definition:
    """One `kind: Schedule` document as a Definition; InvalidArgument naming the field."""
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise InvalidArgument(f"not a schedule document (kind: {KIND} is required)")
    fields = {k: v for k, v in doc.items() if k not in ("kind", "apiVersion")}
    for key, prefix in _POLICIES.items():
        if isinstance(fields.get(key), str):
            fields[key] = prefix + fields[key].upper()
    for target, key in (("job", "payload"), ("workflow", "input")):
        if isinstance(fields.get(target), dict) and key in fields[target]:
            fields[target] = {**fields[target], key: _encoded(fields[target][key])}
    try:
        message = json_format.ParseDict(fields, schedule_pb2.Schedule())
    except json_format.ParseError as exc:
        raise InvalidArgument(str(exc)) from None
    return schedule_defs.definition(message, settings, None, source=SOURCE_GITOPS)


def load_file(path: Path, settings: Settings) -> list[Definition]:
    """The schedules of one file; InvalidArgument naming the file (and schedule) at fault."""
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidArgument(f"{path.name}: cannot read it: {exc}") from None
    found = []
    for doc in documents:
        try:
            found.append(parse(doc, settings))
        except InvalidArgument as exc:
            name = doc.get("name", "?") if isinstance(doc, dict) else "?"
            raise InvalidArgument(f"{path.name}: schedule {name}: {exc}") from None
    return found


class ScheduleFiles:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, queues: ReadyQueues) -> None:
        self.settings = settings
        self.pool = pool
        self.queues = queues
        self.files = ChangedFiles(Path(settings.schedules_dir))

    async def sync(self, *, force: bool = False) -> list[str]:
        """Apply the files if any changed (or `force`); the names of schedules created, changed or deleted."""
        paths, changed = self.files.look()
        if not (changed or force):
            return []
        wanted: dict[str, Definition] = {}
        complete = True
        for path in paths:
            try:
                for d in load_file(path, self.settings):
                    if d.name in wanted:
                        raise InvalidArgument(f"{path.name}: schedule {d.name} is defined twice")
                    wanted[d.name] = d
            except InvalidArgument as exc:
                log.error("schedule file not applied (what it defined before stays): %s", exc)
                complete = False
        applied: list[str] = []
        async with self.pool.acquire() as conn:
            existing = await schedules.names_from(conn, SOURCE_GITOPS)
            for name, d in wanted.items():
                if existing.get(name) == d.digest():
                    continue
                async with conn.transaction():
                    await schedule_defs.check_workflow(conn, d)
                    await schedules.put(conn, d)
                applied.append(name)
            if complete:
                applied += await schedules.delete(conn, [n for n in existing if n not in wanted])
        for name in applied:
            log.info("applied schedule %s from %s", name, self.files.directory)
            await announce_change(self.queues, name)
        return applied

    async def run(self) -> None:
        """Apply the files every reload interval until cancelled; errors are logged and retried."""
        if not self.files.directory.is_dir():
            log.error("DISPATCHD_SCHEDULES_DIR %s is not a directory; no schedule files are applied",
                      self.files.directory)
            return
        force = True
        while True:
            try:
                await self.sync(force=force)
                force = False
            except (OSError, asyncpg.PostgresError, InvalidArgument, *STORE_UNAVAILABLE) as exc:
                metrics.count_store_error(exc)
                log.warning("could not apply schedule files (next look in %.0f s): %s",
                            self.settings.schedules_reload_seconds, exc)
            await asyncio.sleep(self.settings.schedules_reload_seconds)
