"""Pinned host keys in the program (issue 11): the prod stack refuses ``pulumi up`` while a host has
no ``hostKey``, before anything is registered, naming the key and the fix; a prod preview and the
dev stack warn with the same fix and go on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .program_support import approved, stack_config


def test_prod_up_refuses_while_a_host_key_is_unpinned(
    cached_run: Any, healthy_registry: list[Mapping[str, Any]]
) -> None:
    cfg = approved("prod")
    del cfg["hosts"]["master"]["hostKey"]
    run = cached_run("prod", preview=False, config=cfg)
    assert run.error is not None
    message = str(run.error)
    assert "host keys are not pinned; nothing was registered" in message
    assert "hosts.master.hostKey" in message and "hosts.d601.hostKey" not in message
    assert "python -m artifact_cd hostkeys --stack prod" in message
    assert "pulumi config set --path 'hosts.master.hostKey' '<key>'" in message
    assert not run.program_resources, "nothing is registered"

    preview = cached_run("prod", config=cfg)
    assert preview.error is None, preview.error
    assert any("hosts.master.hostKey" in w and "hostkeys --stack prod" in w for w in preview.warnings())

    pinned = cached_run("prod", preview=False, config=approved("prod"))
    assert pinned.error is None, pinned.error
    assert not any("hostKey" in w for w in pinned.warnings())


def test_dev_warns_about_unpinned_host_keys_and_deploys(cached_run: Any) -> None:
    cfg = approved("dev")
    assert all("hostKey" not in h for h in cfg["hosts"].values()), "the shipped dev stack pins nothing"
    run = cached_run("dev", preview=False, config=cfg)
    assert run.error is None, run.error
    warnings = run.warnings()
    for name in ("d601", "master"):
        assert any(f"hosts.{name}.hostKey" in w and "hostkeys --stack dev" in w for w in warnings), name
    assert run.program_resources
    assert stack_config("dev")["hosts"] == cfg["hosts"]


def test_the_transfer_hop_to_d601_carries_d601s_pinned_key(
    cached_run: Any, healthy_registry: list[Mapping[str, Any]]
) -> None:
    """Issue 11 item 4: the master -> D601 hop of a compose-master transfer trusts hosts.d601.hostKey
    (move-image.sh --d601-host-key); unpinned (dev), the flag is absent."""
    cfg = approved("prod")
    run = cached_run("prod", preview=False, config=cfg)
    assert run.error is None, run.error
    create = str(run.named("baidu-netdisk-transfer").inputs["create"])
    assert f"--d601-host-key '{cfg['hosts']['d601']['hostKey']}'" in create, create
    dev = cached_run("dev", preview=False, config=approved("dev"))
    assert "--d601-host-key" not in str(dev.named("baidu-netdisk-transfer").inputs["create"])
