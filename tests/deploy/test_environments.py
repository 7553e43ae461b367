"""Settings and regions across the rendered environments (Argo CD: test_argocd.py).

The ConfigMap of each overlay is read back through `Settings`, so a setting misspelt in a
manifest (or renamed in config.py) fails here rather than being silently ignored in a cluster.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from dispatchd.platform.config import Settings
from dispatchd.platform.regions import Region
from dispatchd.platform.security.settings import guardrail
from tests.support.manifests import DEPLOY, OVERLAYS, PROD_REGIONS, ROOT, Render, kustomize


def env_names() -> set[str]:
    names = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names |= set(alias.choices) if alias is not None else {f"DISPATCHD_{field_name.upper()}"}  # type: ignore[union-attr]
    return names


def settings_of(render: Render) -> Settings:
    config = render.config
    by_env = {}
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        envs = alias.choices if alias is not None else [f"DISPATCHD_{field_name.upper()}"]  # type: ignore[union-attr]
        for env in envs:
            if env in config:
                by_env[field_name] = config[env]
    return Settings.model_validate(by_env)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_configured_setting_exists_and_is_valid(renders: dict[str, Render], overlay: str) -> None:
    unknown = set(renders[overlay].config) - env_names()
    assert not unknown, f"{overlay}: settings that no process reads: {sorted(unknown)}"
    Region.from_settings(settings_of(renders[overlay]))  # refuses inconsistent region settings


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_production_overlays_pass_the_security_guardrail(renders: dict[str, Render], overlay: str) -> None:
    settings = settings_of(renders[overlay])
    if settings.app_env != "production":
        assert overlay == "dev", "only dev may run without APP_ENV=production"
        return
    assert guardrail(settings) == []


def test_exactly_one_production_region_is_primary(renders: dict[str, Render]) -> None:
    regions = {name: Region.from_settings(settings_of(renders[name])) for name in PROD_REGIONS}
    primaries = [name for name, region in regions.items() if region.allow_mutations]
    assert len(primaries) == 1, f"regions allowing mutations: {primaries}"
    assert {region.primary for region in regions.values()} == {regions[primaries[0]].name}
    assert len({region.name for region in regions.values()}) == len(regions)
    for name, region in regions.items():
        jobs = renders[name].kind("Job")
        assert bool(jobs) == region.allow_mutations, f"{name}: migrations run only in the primary"


def test_promotion_flips_the_regions(tmp_path: Path) -> None:
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    script = ROOT / "scripts" / "promote-region.sh"
    argv = ["bash", script, "region-b", "--config-only", copy / "overlays"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    after = {name: Render(name, kustomize(copy / "overlays" / name)) for name in PROD_REGIONS}
    regions = {name: Region.from_settings(settings_of(render)) for name, render in after.items()}
    assert regions["prod-region-b"].allow_mutations and not regions["prod-region-a"].allow_mutations
    assert {r.primary for r in regions.values()} == {"region-b"}
    assert after["prod-region-b"].kind("Job") and not after["prod-region-a"].kind("Job")

    refused = subprocess.run(
        ["bash", script, "region-c", "--config-only", copy / "overlays"], capture_output=True, text=True, check=False
    )
    assert refused.returncode != 0 and "no overlay has DISPATCHD_REGION=region-c" in refused.stderr
