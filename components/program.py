"""The Pulumi program (``__main__.py`` calls :func:`main`).

Order of business, and nothing is registered before the refusals:

1. read every config key of the project namespace; :func:`artifact_cd.config.parse_stack_config`
   refuses unknown keys and bad values exactly as the offline ``plan`` does;
2. plan every service of the stack (:func:`artifact_cd.plan.plan_services`) with the gates'
   :class:`ApplyContext` (``live`` = not a preview; Code Queue task detection from the environment);
3. the secrets the planned (and gated) services need must be set, encrypted;
4. read the live view (``components.live_source.probe_live``: one read-only SSH round trip per
   host, in preview and up alike) and decide from it how each service and the registry install
   are registered (``components.reconcile``): in sync, repaired, held, or refused;
5. register the registry host (only when ``registry.manage``) and one consumer per planned (or
   held) service; plan-only / unsupported / not-configured services register nothing;
6. print the live view's warnings (drift to repair, held services and the approval to set,
   hosts that did not answer) with ``pulumi.log``;
7. export ``plans`` ({service: plan document}, exactly ``python -m artifact_cd plan --stack S``),
   ``registryHost`` (its plan), ``results`` (the live digest, image ID and verdict of each
   registered consumer), ``held`` and, when the registry is managed, ``registryAcceptance``;
8. in ``pulumi up``, a service (or the registry install) whose host did not answer was not
   registered: the program then fails, after every other service was deployed, so the engine
   deletes nothing of it (docs/engine-semantics.md E1: a run that fails performs no deletes).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi.runtime import config as runtime_config

from artifact_cd import plan as core_plan
from artifact_cd.config import (
    PLAIN_KEYS,
    PROJECT,
    SECRET_KEYS,
    ConfigError,
    Problem,
    StackConfig,
    parse_stack_config,
    sibling_problems,
)
from artifact_cd.gates import ApplyContext, Decision
from artifact_cd.hostkeys import pin_problems
from artifact_cd.live import LiveView
from artifact_cd.plan import (
    ComposeTargetDoc,
    K3sTargetDoc,
    NoTargetDoc,
    RegistryHostPlan,
    ServicePlan,
    plan_registry_host,
    plan_services,
)

from . import compose_consumer, k3s_consumer, live_source, registry_host
from .compose_consumer import ComposeServiceConsumer, ComposeServiceConsumerArgs
from .k3s_consumer import K3sServiceConsumer, K3sServiceConsumerArgs
from .reconcile import Note, Posture, Reconciliation, reconcile
from .registry_host import ArtifactRegistryHost, ArtifactRegistryHostArgs
from .steps import MissingScript, ServiceConsumer, connections

REGISTRY_COMPONENT = "artifact-registry"
K8S_PROVIDER = "d601-k3s"
HOST_SECRET = {core_plan.HOST_D601: "d601PrivateKey", core_plan.HOST_MASTER: "masterPrivateKey"}
KUBECONFIG = "kubeconfig"


class ProgramRefused(pulumi.RunError):
    """The program refused before registering any resource (config, missing secret, live probe setup)."""


class ServicesRefused(pulumi.RunError):
    """``pulumi up`` did not register services whose host did not answer; every other service was
    deployed. Failing the run keeps their state (a successful run would delete it, E1)."""


# --------------------------------------------------------------------------- config


def _all_config() -> tuple[dict[str, Any], frozenset[str]]:
    """Every config value the engine handed this program, and which keys are secret.

    The language host passes config in ``PULUMI_CONFIG`` (+ ``PULUMI_CONFIG_SECRET_KEYS``); the SDK
    (and ``set_all_config`` under mocks) may also hold it in the runtime map. Both are read.
    """
    values: dict[str, Any] = dict(runtime_config.get_config_env())
    values.update(runtime_config.CONFIG.get())
    secret = {k for k in values if runtime_config.is_config_secret(k)}
    secret |= set(runtime_config.get_config_secret_keys_env())
    return values, frozenset(secret)


def read_raw_config(project: str = PROJECT) -> tuple[dict[str, Any], frozenset[str], frozenset[str]]:
    """(plain keys → decoded values, secret keys present, secret keys stored as secrets).

    Object-valued keys arrive as JSON text. Unknown keys are kept as they are so the parser
    refuses them with its usual message.
    """
    values, secret = _all_config()
    prefix = project + ":"
    raw: dict[str, Any] = {}
    present: set[str] = set()
    encrypted: set[str] = set()
    problems: list[Problem] = []
    for full_key, value in values.items():
        if not isinstance(full_key, str) or not full_key.startswith(prefix):
            continue
        key = full_key[len(prefix) :]
        if key in SECRET_KEYS:
            if value not in (None, ""):
                present.add(key)
                if full_key in secret:
                    encrypted.add(key)
            continue
        if key in PLAIN_KEYS and key != "env" and isinstance(value, str):
            try:
                raw[key] = json.loads(value)
            except json.JSONDecodeError:
                problems.append(
                    Problem(
                        key,
                        "is not a structured value",
                        f"pulumi config set --path '{key}.<field>' <value> (see Pulumi.yaml)",
                    )
                )
            continue
        raw[key] = value
    if problems:
        raise ConfigError(problems)
    return raw, frozenset(present), frozenset(encrypted)


def _refuse(title: str, lines: list[str]) -> ProgramRefused:
    return ProgramRefused(title + "\n" + "\n".join(f"  - {line}" for line in lines))


# --------------------------------------------------------------------------- what to register


def needed_secrets(cfg: StackConfig, planned: Sequence[ServicePlan]) -> dict[str, list[str]]:
    """Secret key → who needs it, for the resources this run may register (a gated service is
    held at its live commit, so its hosts are probed and its Commands registered)."""
    need: dict[str, list[str]] = {}
    if cfg.registry.manage:
        need.setdefault(HOST_SECRET[core_plan.HOST_D601], []).append("registry host")
    for p in planned:
        for step in p.steps:
            match step.host:
                case core_plan.HOST_K8S_API:
                    key = KUBECONFIG
                case host:
                    key = HOST_SECRET[host]
            users = need.setdefault(key, [])
            if p.service not in users:
                users.append(p.service)
    return need


def check_secrets(need: Mapping[str, list[str]], present: frozenset[str], encrypted: frozenset[str]) -> None:
    problems: list[str] = []
    for key, users in sorted(need.items()):
        full = f"{PROJECT}:{key}"
        if key not in present:
            problems.append(
                f"{full} is required by {', '.join(users)}. Fix: pulumi config set --secret {key} < FILE"
            )
        elif key not in encrypted:
            problems.append(
                f"{full} is stored in plaintext. "
                f"Fix: pulumi config rm {key} && pulumi config set --secret {key} < FILE"
            )
    if problems:
        raise _refuse("secrets missing or not encrypted; nothing was registered:", problems)


def check_translatable(
    cfg: StackConfig, planned: Sequence[ServicePlan], registry_plan: RegistryHostPlan
) -> None:
    """Every plan to register is one a component can translate and every script exists — checked
    before the first resource, so a broken checkout never leaves a half-registered program."""
    problems: list[str] = []
    checks: list[tuple[str, Callable[[], object]]] = []
    if cfg.registry.manage:
        checks.append(("registry host", partial(registry_host.check_plan, registry_plan)))
    for p in planned:
        match p.target:
            case K3sTargetDoc():
                checks.append((p.service, partial(k3s_consumer.check_plan, p)))
            case ComposeTargetDoc():
                checks.append((p.service, partial(compose_consumer.check_plan, p)))
            case NoTargetDoc(kind=kind):
                problems.append(
                    f"{p.service}: planned, but target kind {kind.value!r} has no consumer component"
                )
    for who, check in checks:
        try:
            check()
        except (ValueError, MissingScript) as error:
            problems.append(f"{who}: {error}")
    if problems:
        raise _refuse("the plans cannot be translated into resources; nothing was registered:", problems)


# --------------------------------------------------------------------------- main


def read_live(
    cfg: StackConfig, plans: Sequence[ServicePlan], config: pulumi.Config, need: Mapping[str, list[str]]
) -> LiveView | None:
    """This run's live view of the hosts the stack's services and registry use; None when the run
    has none (placeholder secrets: ``components.live_source.without_live_view``). The private keys
    are read as plaintext here and handed only to the probe (never logged, never in an Output)."""
    if not live_source.live_view_available():
        return None
    keys: dict[str, str] = {}
    for host, key in HOST_SECRET.items():
        if key in need:
            value = config.get(key)
            if value:
                keys[host] = value
    try:
        return live_source.probe_live(cfg, plans, keys)  # looked up when called (tests replace it)
    except live_source.LiveSourceError as error:
        raise _refuse(
            "the live probe cannot be set up; nothing was registered:",
            [f"{error}. Fix: {live_source.SSH_OPTIONS_FIX}"],
        ) from None


def check_host_keys(cfg: StackConfig, stack: str, *, live: bool) -> None:
    """Hosts without a pinned ``hostKey`` (issue 11): the prod stack refuses ``pulumi up`` before
    anything is registered; a preview, and the dev stack, warn with the same fix."""
    problems = pin_problems(cfg, stack)
    if problems and live and cfg.env == "prod":
        title = f"stack {stack!r}: host keys are not pinned; nothing was registered:"
        raise _refuse(title, [p.render() for p in problems])
    for problem in problems:
        pulumi.log.warn(problem.render())


def _log(note: Note, component: pulumi.Resource | None = None) -> None:
    match note.severity:
        case "error":
            pulumi.log.error(note.message, resource=component)
        case "warning":
            pulumi.log.warn(note.message, resource=component)
        case _:
            pulumi.log.info(note.message, resource=component)


def _refused(rec: Reconciliation) -> list[str]:
    lines = [f"{h.service} ({h.commit}): {h.reason}. Fix: {h.fix}" for h in rec.refused]
    if rec.registry is not None and rec.registry.posture is None:
        lines.insert(0, f"the registry install: {rec.registry.reason}")
    return lines


def project_root() -> Path:
    """Where Pulumi.yaml and the stack files are: the engine's root directory, else (under mocks,
    whose root is a placeholder) the project this package belongs to."""
    root = Path(pulumi.get_root_directory() or ".")
    return root if (root / "Pulumi.yaml").is_file() else Path(__file__).resolve().parent.parent


def stack_config(raw: Mapping[str, Any], stack: str) -> StackConfig:
    """The validated config; nothing it mutates may be the sibling stack's (issue 12: its
    ``Pulumi.<other>.yaml`` is read offline from the project root)."""
    cfg = parse_stack_config(raw, stack)
    owned = sibling_problems(cfg, project_root())
    if owned:
        raise ConfigError(owned)
    return cfg


def main(environ: Mapping[str, str] | None = None) -> None:
    stack = pulumi.get_stack()
    try:
        raw, present, encrypted = read_raw_config()
        cfg = stack_config(raw, stack)
    except ConfigError as error:
        raise _refuse(
            f"stack {stack!r}: config refused; nothing was registered:", str(error).splitlines()
        ) from None

    ctx = ApplyContext.from_environ(
        os.environ if environ is None else environ, live=not pulumi.runtime.is_dry_run()
    )
    check_host_keys(cfg, stack, live=ctx.live)
    plans = plan_services(cfg, ctx)
    registry_plan: RegistryHostPlan = plan_registry_host(cfg)
    planned = [p for p in plans if p.decision == Decision.PLANNED]
    gated = [p for p in plans if p.decision == Decision.GATED]
    check_translatable(cfg, planned, registry_plan)
    need = needed_secrets(cfg, planned + gated)
    check_secrets(need, present, encrypted)

    config = pulumi.Config(PROJECT)
    view = read_live(cfg, planned + gated, config, need)
    rec = reconcile(cfg, ctx, plans, view, decide_registry=registry_host.health_decide)
    check_translatable(cfg, [a.plan for a in rec.actions if a.plan not in planned], registry_plan)

    keys = {host: config.require_secret(key) for host, key in HOST_SECRET.items() if key in need}
    conns = connections(cfg, keys)

    acceptance: pulumi.Output[dict[str, Any]] | None = None
    after: list[pulumi.Input[pulumi.Resource]] = []
    if rec.registry is not None and rec.registry.posture is not None:
        registry = ArtifactRegistryHost(
            REGISTRY_COMPONENT,
            ArtifactRegistryHostArgs(plan=registry_plan, connections=conns, action=rec.registry),
        )
        acceptance = registry.acceptance
        after = [registry.ready]

    provider: k8s.Provider | None = None
    if any(isinstance(a.plan.target, K3sTargetDoc) for a in rec.actions):
        provider = k8s.Provider(
            K8S_PROVIDER,
            kubeconfig=config.require_secret(KUBECONFIG),
            enable_server_side_apply=True,
        )

    consumers: dict[str, ServiceConsumer] = {}
    for action in rec.actions:
        p = action.plan
        match p.target:
            case K3sTargetDoc():
                assert provider is not None
                consumers[p.service] = K3sServiceConsumer(
                    p.service,
                    K3sServiceConsumerArgs(
                        plan=p, connections=conns, provider=provider, after=after, action=action
                    ),
                )
            case ComposeTargetDoc():
                consumers[p.service] = ComposeServiceConsumer(
                    p.service,
                    ComposeServiceConsumerArgs(plan=p, connections=conns, after=after, action=action),
                )
            case NoTargetDoc():  # refused by check_translatable before anything was registered
                raise AssertionError(f"{p.service}: planned without a consumer target")

    for note in rec.notes:
        _log(note, consumers.get(note.service) if note.service else None)

    # the plan documents exactly as the offline plan prints them, in preview and up alike (the
    # live digest is in `results`): a preview after an up shows no output change
    pulumi.export("plans", {p.service: p.to_json() for p in plans})
    pulumi.export("registryHost", registry_plan.to_json())
    pulumi.export(
        "results",
        {
            a.service: {
                "commit": a.plan.commit,
                "digest": consumers[a.service].digest,
                "imageId": consumers[a.service].image_id,
                "verdict": consumers[a.service].verdict,
            }
            for a in rec.actions
            if a.posture != Posture.HOLD
        },
    )
    pulumi.export("held", [h.to_json() for h in sorted(rec.held, key=lambda h: h.service)])
    if acceptance is not None:
        pulumi.export("registryAcceptance", acceptance)

    if ctx.live and (rec.refused or (rec.registry is not None and rec.registry.posture is None)):
        raise ServicesRefused(
            "pulumi up refused what it could not see; every other service was deployed, and the "
            "state of these is kept (fix, then run pulumi up again):\n"
            + "\n".join(f"  - {line}" for line in _refused(rec))
        )
