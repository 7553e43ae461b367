"""buildah as this machine runs it: vfs storage, chroot isolation, the host's network.

Invariant: every command goes through one `Buildah` (one storage driver), and a working
container made by `container()` is removed when its block ends, whatever happened inside.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_COMMAND = "buildah --storage-driver vfs"


@dataclass(frozen=True)
class Container:
    """A working container of an image, and where its root filesystem is mounted on the host."""

    name: str
    root: Path


class Buildah:
    def __init__(self, command: str = DEFAULT_COMMAND) -> None:
        self.argv = shlex.split(command)

    def _run(self, *args: str) -> str:
        done = subprocess.run([*self.argv, *args], capture_output=True, text=True, check=False, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"buildah {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout.strip()

    def version(self) -> str:
        return self._run("--version")

    def has_image(self, image: str) -> bool:
        try:
            self.inspect_image(image)
        except RuntimeError:
            return False
        return True

    def inspect_image(self, image: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self._run("inspect", "--type", "image", image))
        return found

    def image_bytes(self, image: str) -> int:
        """The image's size unpacked: the sum of its layers (what `buildah images` shows)."""
        manifest = json.loads(self.inspect_image(image)["Manifest"])
        return sum(int(layer["size"]) for layer in manifest["layers"])

    def image_user(self, image: str) -> str:
        return str(self.inspect_image(image)["OCIv1"]["config"].get("User", ""))

    @contextlib.contextmanager
    def container(self, image: str) -> Iterator[Container]:
        name = self._run("from", "--quiet", "--pull=never", image)
        try:
            yield Container(name, Path(self._run("mount", name)))
        finally:
            with contextlib.suppress(RuntimeError):
                self._run("umount", name)
            self._run("rm", name)

    def run_argv(self, container: Container, argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
        """argv that runs `argv` in `container` as the image's user, on the host's network."""
        flags = [f"--env={key}={value}" for key, value in env.items()]
        return [*self.argv, "run", "--isolation", "chroot", *flags, container.name, "--", *argv]
