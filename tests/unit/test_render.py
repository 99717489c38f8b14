"""Rendered registry host files (R1, R2, R5)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from artifact_cd import render
from artifact_cd.config import RegistryConfig


def test_sha256_is_of_the_exact_content() -> None:
    for f in render.render_all(RegistryConfig()):
        assert f.sha256 == hashlib.sha256(f.content.encode()).hexdigest()


def test_compose_binds_loopback_only_and_mounts_storage() -> None:
    reg = RegistryConfig()
    doc = yaml.safe_load(render.render_compose(reg))
    svc = doc["services"]["registry"]
    assert svc["ports"] == ["127.0.0.1:5000:5000"]
    assert "network_mode" not in svc
    assert svc["image"] == "registry:2.8.3"
    assert svc["container_name"] == "unidesk-artifact-registry"
    mounts = {m["target"]: m for m in svc["volumes"]}
    assert mounts["/var/lib/registry"]["source"] == reg.storage_path
    assert mounts["/var/lib/registry"]["type"] == "bind"
    assert mounts["/etc/docker/registry/config.yml"]["read_only"] is True
    assert svc["labels"][render.SPEC_LABEL] == render.spec_sha256(reg)


def test_ipv6_loopback_endpoint() -> None:
    doc = yaml.safe_load(render.render_compose(RegistryConfig(endpoint="[::1]:5001")))
    assert doc["services"]["registry"]["ports"] == ["[::1]:5001:5000"]


def test_registry_config_is_valid_yaml_without_deletes() -> None:
    doc = yaml.safe_load(render.render_registry_config(RegistryConfig()))
    assert doc["http"]["addr"] == ":5000"
    assert doc["storage"]["delete"]["enabled"] is False
    assert doc["storage"]["filesystem"]["rootdirectory"] == "/var/lib/registry"


def test_unit_runs_the_compose_project() -> None:
    reg = RegistryConfig(compose_command="/usr/bin/docker-compose")
    unit = render.render_unit(reg)
    assert "Requires=docker.service" in unit
    assert f"ExecStart=/usr/bin/docker-compose -p unidesk-artifact-registry -f {reg.compose_path} up" in unit
    assert "--no-build" in unit
    assert "WantedBy=multi-user.target docker.service" in unit


def test_spec_hash_follows_every_input() -> None:
    base = render.spec_sha256(RegistryConfig())
    assert render.spec_sha256(RegistryConfig(image="registry:2.8.3@sha256:" + "0" * 64)) != base
    assert render.spec_sha256(RegistryConfig(storage_path="/srv/registry")) != base
    assert render.spec_sha256(RegistryConfig()) == base


def test_storage_never_appears_in_a_removal() -> None:
    text = "".join(f.content for f in render.render_all(RegistryConfig()))
    assert "rm " not in text and "down -v" not in text and "--volumes" not in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    if not Path("/usr/bin/docker").exists() or not Path("/lib/systemd/system/docker.service").exists():
        pytest.skip("docker.io (docker.service, /usr/bin/docker) is not installed: the unit's dependencies are missing")
    reg = RegistryConfig()  # default compose command: /usr/bin/docker compose
    unit = tmp_path / reg.unit_name
    unit.write_text(render.render_unit(reg))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False)
    problems = [line for line in result.stderr.splitlines() if reg.unit_name in line]
    assert result.returncode == 0, result.stderr
    assert problems == []
