"""The checks `make image-test` applies to a built image, each shown to catch a broken image.

The image itself is built and run by `make image-test` (and the CI job `image`); here its
checks run on small file trees standing for an image's root and its base's, and on reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dispatchd.devtools.image import contents, smoke

DEBIAN_CA = "-----BEGIN CERTIFICATE-----\nREJJQU4=\n-----END CERTIFICATE-----\n"
MACHINE_CA = "-----BEGIN CERTIFICATE-----\nTUFDSElORQ==\n-----END CERTIFICATE-----\n"


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(a clean image, its base, the bundle the build trusted: Debian's plus this machine's CA)."""
    base = tree(tmp_path / "base", {contents.BUNDLE: DEBIAN_CA})
    image = tree(tmp_path / "image", {contents.BUNDLE: DEBIAN_CA, "opt/dispatchd/bin/python": ""})
    bundle = tree(tmp_path, {"build-bundle.crt": DEBIAN_CA + MACHINE_CA}) / "build-bundle.crt"
    return image, base, bundle


def test_a_clean_image_leaks_nothing(roots: tuple[Path, Path, Path]) -> None:
    assert contents.leaks(*roots) == []


@pytest.mark.parametrize(
    ("path", "text", "found"),
    [
        ("etc/pip.conf", "", "etc/pip.conf"),  # an empty mount point left in a layer is still a pip.conf
        ("root/.config/pip/pip.conf", "[global]\ncert = /root/.config/pip/ca-bundle.crt\n", "root/.config/pip"),
        ("usr/local/bin/pip", "#!/usr/local/bin/python\n", "usr/local/bin/pip"),
        (contents.BUNDLE, DEBIAN_CA + MACHINE_CA, contents.BUNDLE),  # the machine's bundle over the image's
        ("opt/venv/certifi/cacert.pem", MACHINE_CA, "opt/venv/certifi/cacert.pem"),
    ],
)
def test_what_the_build_borrowed_is_found(roots: tuple[Path, Path, Path], path: str, text: str, found: str) -> None:
    image, base, bundle = roots
    tree(image, {path: text})
    assert contents.leaks(image, base, bundle) == [found]


def good_report() -> dict[str, Any]:
    return {
        "size_mb": 334.0,
        "image_user": "10001:10001",
        "leaks": [],
        "job": {"status": "SUCCEEDED"},
        "processes": [["control-plane", 10001], ["scheduler", 10001], ["worker", 10001], ["worker-gateway", 10001]],
    }


def test_a_good_report_passes() -> None:
    assert smoke.failures(good_report()) == []


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("size_mb", smoke.MAX_IMAGE_MB + 1, "over the"),
        ("image_user", "0:0", "image user"),
        ("leaks", ["etc/pip.conf"], "holds what only the build may"),
        ("processes", [["control-plane", 10001]], "not every program ran"),
        ("processes", [["control-plane", 0], ["scheduler", 10001], ["worker", 10001], ["worker-gateway", 10001]],
         "another uid"),
    ],
)
def test_a_broken_report_fails(key: str, value: object, expected: str) -> None:
    report = good_report() | {key: value}
    assert any(expected in failure for failure in smoke.failures(report))


def test_no_job_fails() -> None:
    report = good_report()
    del report["job"]
    assert smoke.failures(report) == ["no job completed through the image"]
