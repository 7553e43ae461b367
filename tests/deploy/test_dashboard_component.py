"""The dashboard component (deploy/components/dashboard): on in dev, off in staging and production."""

from __future__ import annotations

import pytest

from tests.support.manifests import OVERLAYS, Render

NAME = "dispatchd-dashboard"


def _deployments(render: Render) -> list[str]:
    return [d["metadata"]["name"] for d in render.kind("Deployment")]


def test_dev_runs_the_dashboard_as_a_control_plane_client(renders: dict[str, Render]) -> None:
    (deployment,) = [d for d in renders["dev"].kind("Deployment") if d["metadata"]["name"] == NAME]
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"]["dispatchd.io/api-client"] == "true"  # allowed to reach :50051
    container = template["spec"]["containers"][0]
    assert container["args"] == ["dashboard"]
    # A client, not a service: no datastore secret and no shared service config.
    assert "envFrom" not in container
    assert not any("valueFrom" in env for env in container["env"])


@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if o != "dev"])
def test_the_dashboard_is_off_outside_dev(renders: dict[str, Render], overlay: str) -> None:
    assert NAME not in _deployments(renders[overlay])
