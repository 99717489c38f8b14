"""Helpers of the program tests: the stack configs, recognisable fake secrets, a fake executor
that plays the hosts' script results (no SSH, no daemon: the rig tests do that for real), and the
fake live views the program reads instead of probing (``components.live_source.probe_live``).

Two ways to play the hosts:

- ``FakeHosts()`` alone: every script answers its contract's ok result; the live view is the
  default one (``in_sync_view``: every planned or gated service live on its desired commit, the
  registry as the acceptance probe would see it);
- ``FakeHosts(world=World())``: the hosts keep state across runs. Deploys, k3s patches (through
  ``hosts.patch`` as the test engine's patcher), imports and verifications read and change the
  :class:`World`, and ``use_live(monkeypatch, world)`` makes the program's live view the world's.
  A test changes the world by hand (drift, a stopped registry, a new auth section, a silent host)
  between runs, exactly as an operator's hand fix would change the hosts.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shlex
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from artifact_cd import config as core_config
from artifact_cd.config import StackConfig
from artifact_cd.gates import Decision
from artifact_cd.live import HostView, LiveView, ServiceFacts
from artifact_cd.plan import ComposeTargetDoc, K3sTargetDoc, ServicePlan

ROOT = Path(__file__).resolve().parents[2]

FAKE_SECRETS: dict[str, str] = {
    "d601PrivateKey": "FAKE-D601-PRIVATE-KEY-7f3a9c",
    "masterPrivateKey": "FAKE-MASTER-PRIVATE-KEY-51b2e0",
    "kubeconfig": "FAKE-KUBECONFIG-TOKEN-c0ffee",
}
FAKE_AUTH_SECRET = "FAKE-AUTH-CLIENT-SECRET-93ac11"
FAKE_AUTH: dict[str, Any] = {"clientId": "frontend", "clientSecret": FAKE_AUTH_SECRET}
DEFAULT_PROBE_FACTS: dict[str, Any] = {"ok": True, "probe": "registry-probe"}
REPAIR_ANNOTATION = "unidesk.io/deploy-repair"
GATED = {"dev": "code-queue", "prod": "code-queue-mgr"}  # each stack's supervisor-gated service


# Pinned host keys for the prod stack (issue 11: prod refuses `pulumi up` without them). The shipped
# Pulumi.prod.yaml has none: an operator pins the real ones (`python -m artifact_cd hostkeys`).
FAKE_HOST_KEYS = {
    "d601": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeD601HostKeyForProgramTests0000000",
    "master": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeMasterHostKeyForProgramTests00000",
}


def stack_config(stack: str) -> dict[str, Any]:
    """The project's own ``Pulumi.<stack>.yaml`` (namespace stripped), as a fresh copy; prod with
    its hosts' keys pinned (:data:`FAKE_HOST_KEYS`), as an operator's would be."""
    cfg = copy.deepcopy(core_config.read_stack_file(ROOT / f"Pulumi.{stack}.yaml"))
    if stack == "prod":
        for name, key in FAKE_HOST_KEYS.items():
            cfg["hosts"][name].setdefault("hostKey", key)
    return cfg


def approved(stack: str) -> dict[str, Any]:
    """The stack's own config with the supervisor approval its gated service needs for ``up``."""
    cfg = stack_config(stack)
    gated = GATED[stack]
    cfg["approvals"] = {gated: {"commit": cfg["services"][gated]["commit"], "by": "sup", "reason": "ok"}}
    return cfg


def with_commit(cfg: Mapping[str, Any], **commits: str) -> dict[str, Any]:
    """A copy of ``cfg`` with other commits (``oa_event_flow=...`` for ``oa-event-flow``)."""
    out = copy.deepcopy(dict(cfg))
    for service, commit in commits.items():
        out["services"][service.replace("_", "-")]["commit"] = commit
    return out


def run_kw(cfg: Mapping[str, Any], secrets: Mapping[str, str] = FAKE_SECRETS) -> dict[str, Any]:
    """The inputs of one ``Stack.preview``/``Stack.up`` of ``cfg``: no gate variable set."""
    return {"config": cfg, "secrets": secrets, "environ": {}}


def of_service(names: Mapping[str, Any] | set[str], service: str) -> set[str]:
    """The names of ``service``'s own resources among ``names`` (the service and ``<service>-*``)."""
    return {n for n in names if n == service or n.startswith(service + "-")}


def with_mode_verify(create: str) -> str:
    """A Compose deploy's ``create`` as its ``update`` runs it: ``--mode verify`` in its model place
    (ComposeDeployArgs' declaration order: before the fields declared after ``mode``)."""
    from artifact_cd.contract import ComposeDeployArgs

    names = list(ComposeDeployArgs.model_fields)
    later = {"--" + n.replace("_", "-") for n in names[names.index("mode") + 1 :]}
    words = shlex.split(create)
    at = next((i for i, w in enumerate(words) if w in later), len(words))
    return " ".join(shlex.quote(w) for w in [*words[:at], "--mode", "verify", *words[at:]])


def is_verify_command(command: str) -> bool:
    """The command line runs compose-deploy.sh --mode verify."""
    words = shlex.split(command)
    return any(words[i : i + 2] == ["--mode", "verify"] for i in range(len(words)))


def fake_digest(kind: str, repository: str, tag: str) -> str:
    return "sha256:" + hashlib.sha256(f"test-{kind}:{repository}:{tag}".encode()).hexdigest()


def auth_sha256(auth: Mapping[str, Any]) -> str:
    """The hash the live probe reports for the master's auth section (canonical JSON)."""
    text = json.dumps(auth, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _arg(argv: list[str], flag: str, default: str | None = None) -> str:
    if flag not in argv:
        if default is None:
            raise KeyError(flag)
        return default
    return argv[argv.index(flag) + 1]


# =========================================================================== the world


@dataclass
class Live:
    """One service as it runs on its host."""

    commit: str
    healthy: bool = True
    image_present: bool = True
    requested: str | None = None  # the requested commit (env); None: the commit
    container: int = 1  # the container's generation: a recreate (or a k3s restart) bumps it
    repair: str | None = None  # k3s: the pod template's repair annotation of the last rollout

    @property
    def requested_commit(self) -> str:
        return self.requested or self.commit


@dataclass
class World:
    """What runs on the fake hosts, shared by the executor, the patcher and the live view."""

    services: dict[str, Live] = field(default_factory=dict)
    registry_facts: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PROBE_FACTS))
    # what a registry install leaves: the rendered files, unit and container (drift repaired); an
    # outage the install cannot fix keeps registry_facts (set install_repairs_registry False)
    install_repairs_registry: bool = True
    auth: dict[str, Any] = field(default_factory=lambda: dict(FAKE_AUTH))
    silent: set[str] = field(default_factory=set)  # hosts that do not answer (d601, master)
    recreated: list[str] = field(default_factory=list)  # every recreate/restart, by service
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def deploy(self, service: str, commit: str) -> bool:
        """Deploy ``commit``; False (nothing changed) when it is already live and healthy."""
        with self.lock:
            live = self.services.get(service)
            if (
                live is not None
                and live.commit == commit
                and live.requested_commit == commit
                and live.healthy
                and live.image_present
            ):
                return False
            self.services[service] = Live(commit, container=(live.container + 1) if live else 1)
            self.recreated.append(service)
            return True

    def in_sync(self, service: str, commit: str) -> bool:
        live = self.services.get(service)
        return live is not None and live.commit == commit == live.requested_commit and live.healthy

    def drift(self, service: str, commit: str) -> None:
        """A hand fix: the service recreated on another commit (requested commit included)."""
        with self.lock:
            live = self.services[service]
            self.services[service] = Live(commit, container=live.container + 1)

    def view(self, cfg: StackConfig, plans: Sequence[ServicePlan]) -> LiveView:
        """The live view the probe would report of this world."""
        hosts: dict[str, HostView] = {}
        for name, address in (("d601", cfg.hosts.d601.host), ("master", cfg.hosts.master.host)):
            if name in self.silent:
                hosts[name] = HostView(host=name, address=address, reachable=False, error="connection-refused")
            else:
                hosts[name] = HostView(host=name, address=address, reachable=True)
        d601 = hosts["d601"]
        if d601.reachable:
            d601 = d601.model_copy(update={"registry": dict(self.registry_facts)})
        services: dict[str, dict[str, ServiceFacts]] = {"d601": {}, "master": {}}
        manifests: dict[str, str | None] = {}
        for p in plans:
            if p.commit is None or p.registry is None:
                continue
            repo = p.registry.repository
            manifests[f"{repo}:{p.commit}"] = fake_digest("manifest", repo, p.commit)
            match p.target:
                case ComposeTargetDoc(host=where) | K3sTargetDoc(host=where):
                    services[where][p.service] = self.facts(p, repo)
                case _:
                    pass
        d601 = d601.model_copy(update={"services": services["d601"], "manifests": manifests})
        master = hosts["master"]
        if master.reachable:
            master = master.model_copy(
                update={"services": services["master"], "auth_sha256": auth_sha256(self.auth)}
            )
        return LiveView(stack=cfg.env, hosts={"d601": d601, "master": master})

    def facts(self, plan: ServicePlan, repository: str) -> ServiceFacts:
        live = self.services.get(plan.service)
        if live is None:
            return ServiceFacts(service=plan.service, found=False)
        return ServiceFacts(
            service=plan.service,
            found=True,
            running=True,
            container_id=f"{plan.service}-container-{live.container}",
            image=f"127.0.0.1:5000/{repository}:{live.commit}",
            revision=live.commit,
            requested_commit=live.requested_commit,
            health_ok=live.healthy,
            health_commit=live.commit if live.healthy else None,
            health_requested_commit=live.requested_commit if live.healthy else None,
            image_present=live.image_present if live.commit == plan.commit else True,
        )


def world_of(stack: str, config: Mapping[str, Any]) -> World:
    """A world in which every planned or gated service of ``config`` runs its commit."""
    from artifact_cd.config import parse_stack_config
    from artifact_cd.plan import plan_services

    cfg = parse_stack_config(dict(config), stack)
    return in_sync_world(cfg, plan_services(cfg))


def in_sync_world(cfg: StackConfig, plans: Sequence[ServicePlan]) -> World:
    """A world in which every planned or gated service runs its desired commit."""
    return World(
        services={
            p.service: Live(p.commit)
            for p in plans
            if p.commit is not None and p.decision in (Decision.PLANNED, Decision.GATED)
        }
    )


def in_sync_view(cfg: StackConfig, plans: Sequence[ServicePlan], keys: Mapping[str, str]) -> LiveView:
    """The default live view of the program tests: everything live on its desired commit, the
    registry as ``FakeHosts()``'s acceptance probe answers (``DEFAULT_PROBE_FACTS``)."""
    del keys
    return in_sync_world(cfg, plans).view(cfg, plans)


LiveSource = Callable[[StackConfig, Sequence[ServicePlan], Mapping[str, str]], LiveView]


def use_live(monkeypatch: pytest.MonkeyPatch, source: World | LiveSource) -> list[LiveView]:
    """Make the program read its live view from ``source`` (a world, or a function of the config,
    the plans and the private keys); returns the list of views it read (one per run)."""
    from components import live_source

    seen: list[LiveView] = []

    def probe(cfg: StackConfig, plans: Sequence[ServicePlan], keys: Mapping[str, str]) -> LiveView:
        assert set(keys) <= {"d601", "master"} and all(keys.values()), "the probe gets the private keys"
        view = source.view(cfg, plans) if isinstance(source, World) else source(cfg, plans, keys)
        seen.append(view)
        return view

    monkeypatch.setattr(live_source, "probe_live", probe)
    return seen


# =========================================================================== the executor


@dataclass
class FakeHosts:
    """An executor: answers each Command with the result line its script's contract promises;
    with a ``world``, the deploys, imports and verifications act on it (``patch`` is the patcher)."""

    probe_facts: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PROBE_FACTS))
    fail: Mapping[str, tuple[int, str]] = field(default_factory=dict)  # Command name -> (exit, stdout)
    world: World | None = None
    calls: list[Any] = field(default_factory=list)
    patches: list[Any] = field(default_factory=list)
    threads: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, call: Any) -> dict[str, Any]:
        with self._lock:
            self.calls.append(call)
            self.threads.add(threading.current_thread().name)
        if call.name in self.fail:
            code, stdout = self.fail[call.name]
            return {"stdout": stdout, "stderr": "failed on purpose\n", "returncode": code}
        argv = shlex.split(call.command)
        result: dict[str, Any] = {"ok": True}
        code = 0
        if call.script == "manifest-check.sh":
            repo, tag = _arg(argv, "--repository"), _arg(argv, "--tag")
            result.update(digest=fake_digest("manifest", repo, tag), imageId=fake_digest("config", repo, tag))
        elif call.script == "read-auth.sh":
            result.update(auth=dict(self.world.auth) if self.world else dict(FAKE_AUTH))
        elif call.script == "registry-probe.sh":
            result = dict(self.world.registry_facts if self.world else self.probe_facts)
        elif call.script == "compose-deploy.sh":
            result, code = self._deploy(argv)
        elif call.script == "k3s-verify.sh":
            result, code = self._k3s_verify(call.name.removesuffix("-verify"), argv)
        elif call.script == "registry-install.sh" and self.world is not None:
            if self.world.install_repairs_registry:
                self.world.registry_facts = dict(DEFAULT_PROBE_FACTS)
        elif call.script == "k3s-import.sh" and self.world is not None:
            live = self.world.services.get(call.name.removesuffix("-import"))
            if live is not None and live.commit == _arg(argv, "--tag"):
                live.image_present = True
        return {
            "stdout": "diagnostics go to stderr\n" + json.dumps(result) + "\n",
            "stderr": "",
            "returncode": code,
        }

    def _deploy(self, argv: list[str]) -> tuple[dict[str, Any], int]:
        service, commit = _arg(argv, "--service-id"), _arg(argv, "--commit")
        mode = _arg(argv, "--mode", "deploy")
        base = {"service": service, "commit": commit, "mode": mode}
        if self.world is None:  # no state: a deploy recreates, a verification passes
            recreated = mode == "deploy"
            return {"ok": True, **base, "recreated": recreated, "alreadyLive": not recreated}, 0
        if mode == "verify":
            if self.world.in_sync(service, commit):
                return {"ok": True, **base, "recreated": False, "alreadyLive": True}, 0
            return {"ok": False, "error": "commit-mismatch", **base, "recreated": False}, 6
        recreated = self.world.deploy(service, commit)
        return {"ok": True, **base, "recreated": recreated, "alreadyLive": not recreated}, 0

    def _k3s_verify(self, service: str, argv: list[str]) -> tuple[dict[str, Any], int]:
        commit = _arg(argv, "--commit")
        health = {"deployCommit": commit, "requestedCommit": commit}
        if self.world is not None and not self.world.in_sync(service, commit):
            return {"ok": False, "error": "commit-mismatch", "health": health}, 6
        return {"ok": True, "health": health}, 0

    def patch(self, call: Any) -> None:
        """The test engine's patcher: a DeploymentPatch puts its commit live (a forced apply of
        another image, or a repair annotation, restarts the pods: a new generation)."""
        with self._lock:
            self.patches.append(call)
        if self.world is None or call.op == "delete" or not call.type.endswith("DeploymentPatch"):
            return
        annotations = call.inputs["metadata"].get("annotations", {})
        service = annotations.get("unidesk.io/deploy-service")
        commit = annotations.get("unidesk.io/deploy-commit")
        template = call.inputs["spec"]["template"]["metadata"].get("annotations", {})
        if not service or not commit:
            return
        repair = template.get(REPAIR_ANNOTATION)
        with self.world.lock:
            live = self.world.services.get(service)
            same = live is not None and live.commit == commit == live.requested_commit and live.healthy
            if same and live is not None and repair == live.repair:
                return  # a server-side apply of the values that are live: no new ReplicaSet
            generation = (live.container + 1) if live else 1
            self.world.services[service] = Live(commit, container=generation, repair=repair)
            self.world.recreated.append(service)

    def names(self) -> list[str]:
        return [c.name for c in self.calls]

    def up_kw(self) -> dict[str, Any]:
        """The executor and the patcher of ``Stack.up``."""
        return {"executor": self, "patcher": self.patch}
