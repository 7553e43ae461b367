"""`make image-test`: build the image, run the platform from it, one job end to end; evidence in JSON.

    python -m dispatchd.devtools.image.smoke [--no-build] [--evidence evidence/image/image-test.json]

Checks, each a failure (exit 1) when broken: the build succeeds; the image is at most
`MAX_IMAGE_MB` (the stand-in base is ~200 MB of Debian python3, the runtime venv ~135 MB: the
bound leaves ~65 MB, so a stray toolchain or a duplicated dependency fails it); it holds no pip
configuration, no CA the build borrowed from this machine and no installer; migrate, the three
services and a worker run from it as uid `EXPECTED_UID` (the Dockerfile's USER) and a
`builtin.echo` job submitted from the host succeeds. The evidence is written either way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dispatchd.devtools.image import contents
from dispatchd.devtools.image.buildah import DEFAULT_COMMAND, Buildah
from dispatchd.devtools.image.platform import ImagePlatform, image_programs
from dispatchd.devtools.stack import run_check
from dispatchd.devtools.stack.backing import Backing
from dispatchd.devtools.stack.topology import Stores

MAX_IMAGE_MB = 400
EXPECTED_UID = 10001
PROGRAMS = {"control-plane", "scheduler", "worker-gateway", "worker"}
IMAGE = "localhost/dispatchd:local"
BASE_IMAGE = "localhost/dispatchd-python-base:3.11-bookworm"


def build(buildah: str, image: str, base: str) -> float:
    started = time.monotonic()
    env = {**os.environ, "BUILDAH": buildah, "IMAGE": image, "BASE_IMAGE": base}
    subprocess.run(["bash", "scripts/image-build.sh"], env=env, check=True)
    return round(time.monotonic() - started, 1)


def run_platform(buildah: Buildah, image: str, work: Path, report: dict[str, Any]) -> None:
    """Stores, migrate, services, worker, one job; what it saw goes into `report`."""
    backing = Backing(Stores(migrate=False), work / "stores", work, say=print)
    backing.start()
    try:
        with buildah.container(image) as container:
            platform = ImagePlatform(buildah, container, backing.database_url, backing.redis_url, work)
            try:
                platform.migrate()
                report["migrate"] = "succeeded"
                addresses = platform.start_services()
                platform.start_worker(addresses["worker-gateway"])
                seconds = run_check(addresses["control-plane"])  # raises unless SUCCEEDED with its payload
                report["job"] = {"type": "builtin.echo", "status": "SUCCEEDED", "seconds": round(seconds, 3)}
                report["processes"] = sorted({(name, uid) for name, uid in image_programs().values()})
            finally:
                platform.stop()
    finally:
        backing.stop()


def failures(report: dict[str, Any]) -> list[str]:
    found = []
    if "job" not in report:
        found.append("no job completed through the image")
    if report["size_mb"] > MAX_IMAGE_MB:
        found.append(f"image is {report['size_mb']} MB, over the {MAX_IMAGE_MB} MB bound")
    if report["image_user"] != f"{EXPECTED_UID}:{EXPECTED_UID}":
        found.append(f"image user is {report['image_user']!r}")
    if report["leaks"]:
        found.append(f"the image holds what only the build may: {report['leaks']}")
    running = {name for name, _ in report.get("processes", [])}
    if PROGRAMS - running:
        found.append(f"not every program ran from the image: {sorted(running)}")
    if any(uid != EXPECTED_UID for _, uid in report.get("processes", [])):
        found.append(f"a program ran as another uid: {report['processes']}")
    return found


def commit() -> dict[str, str | bool]:
    """The commit the image was built from, and whether the tree had uncommitted changes."""

    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], capture_output=True, text=True, check=False).stdout.strip()

    return {"sha": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", ".", ":!evidence"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="image-test", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--no-build", action="store_true", help="use the image as it is")
    parser.add_argument("--image", default=os.environ.get("IMAGE", IMAGE))
    parser.add_argument("--base-image", default=os.environ.get("BASE_IMAGE", BASE_IMAGE))
    parser.add_argument("--buildah", default=os.environ.get("BUILDAH", DEFAULT_COMMAND))
    parser.add_argument("--work", type=Path, default=Path(".dispatchd/image-test"), help="logs and store data")
    parser.add_argument("--evidence", type=Path, default=Path("evidence/image/image-test.json"))
    args = parser.parse_args(argv)
    buildah = Buildah(args.buildah)
    report: dict[str, Any] = {"commit": commit(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    report |= {"image": args.image, "base_image": args.base_image, "buildah": buildah.version()}
    report["base_cached"] = buildah.has_image(args.base_image)
    report["build_seconds"] = None if args.no_build else build(args.buildah, args.image, args.base_image)
    report["size_bytes"] = buildah.image_bytes(args.image)
    report["size_mb"] = round(report["size_bytes"] / 1e6, 1)
    report["max_size_mb"] = MAX_IMAGE_MB
    report["image_user"] = buildah.image_user(args.image)
    bundle = Path(os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt")
    with buildah.container(args.image) as image, buildah.container(args.base_image) as base:
        report["leaks"] = contents.leaks(image.root, base.root, bundle)
    error = None
    # Kept after the run: the services' logs are what explains a failure.
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    try:
        run_platform(buildah, args.image, args.work, report)
    except Exception as exc:  # reported in the evidence and as the exit status, not hidden
        error = f"{type(exc).__name__}: {exc}"
    report["failures"] = failures(report) + ([error] if error else [])
    report["passed"] = not report["failures"]
    args.evidence.parent.mkdir(parents=True, exist_ok=True)
    args.evidence.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
