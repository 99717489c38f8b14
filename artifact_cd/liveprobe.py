"""The live view's collector (issue 10): which facts each host reports, and one probe per host.

- :func:`probe_requests` (pure): from the typed plans, the :class:`LiveProbeArgs` of each host:
  D601 always (the registry facts; every probed commit's manifest; its Compose and k3s services),
  the master server when a probed service or the frontend auth sync lives there;
- :func:`parse_host_view` (pure): one probe's answer -> :class:`artifact_cd.live.HostView`;
- :func:`collect_live`: the hosts' probes concurrently (threads), one read-only SSH round trip per
  host; a host whose probe fails in any way (SSH, timeout, refusal, a bad answer) becomes
  ``HostView(reachable=False, error=...)``, and only that host; it never raises;
- :func:`service_statuses` (pure): :func:`artifact_cd.live.decide_service` for each probed plan;
- :func:`status_document`, :func:`format_status_table`, :func:`live_plan_service`,
  :func:`live_plan_stack` (pure): ``status --services`` and ``plan --live``.

Probed plans are the ``planned`` and ``gated`` ones (a gated service is reported ``held`` with what
is live); ``plan-only``, ``unsupported`` and ``not-configured`` services have nothing to probe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import ValidationError

from . import health
from .config import HostConfig, StackConfig
from .contract import (
    DIGEST_RE,
    ComposeDeployArgs,
    K3sImportArgs,
    K3sVerifyArgs,
    LiveComposeSpec,
    LiveHost,
    LiveK3sDeploymentSpec,
    LiveK3sSpec,
    LiveManifestSpec,
    LiveProbeArgs,
    LiveProbeSpec,
    ManifestCheckArgs,
    ReadAuthArgs,
    ScriptArgs,
)
from .gates import Decision
from .live import HostView, LiveView, ServiceFacts, ServiceStatus, Verdict, decide_service
from .plan import ComposeTargetDoc, K3sTargetDoc, ServicePlan, registry_probe_call
from .remote import RemoteResult, SshFailure, run_call
from .sshlink import SshSettings

PROBED: frozenset[Decision] = frozenset({Decision.PLANNED, Decision.GATED})
HOSTS: tuple[LiveHost, ...] = ("d601", "master")
Runner = Callable[[HostConfig, ScriptArgs, SshSettings], RemoteResult]

# --------------------------------------------------------------------------- what to probe


def probed(plans: Sequence[ServicePlan]) -> list[ServicePlan]:
    """The plans the live view reports on: planned or gated, with a commit and steps."""
    return [p for p in plans if p.decision in PROBED and p.commit is not None and p.steps]


def service_host(plan: ServicePlan) -> LiveHost | None:
    """The host a service runs on (k3s: D601)."""
    match plan.target:
        case ComposeTargetDoc(host="d601") | K3sTargetDoc(host="d601"):
            return "d601"
        case ComposeTargetDoc(host="master"):
            return "master"
        case _:
            return None


def _k3s_spec(plan: ServicePlan, imported: K3sImportArgs, verify: K3sVerifyArgs) -> LiveK3sSpec:
    assert isinstance(plan.target, K3sTargetDoc)
    containers = plan.target.containers
    return LiveK3sSpec(
        service=plan.service,
        namespace=verify.namespace,
        deployments=tuple(LiveK3sDeploymentSpec(name=d, container=containers[d]) for d in verify.deployments),
        kubernetes_service=verify.service,
        health_path=verify.health_path,
        health_port=verify.port,
        image=f"{imported.registry}/{imported.repository}:{imported.tag}",
        socket=imported.socket,
        containerd_namespace=imported.namespace,
    )


def probe_requests(cfg: StackConfig, plans: Sequence[ServicePlan]) -> dict[str, LiveProbeArgs]:
    """The probe of each host: which facts it must report, from the typed plans (pure)."""
    compose: dict[str, list[LiveComposeSpec]] = {h: [] for h in HOSTS}
    k3s: list[LiveK3sSpec] = []
    manifests: dict[str, LiveManifestSpec] = {}
    auth_config: str | None = None
    for plan in probed(plans):
        imported: K3sImportArgs | None = None
        verify: K3sVerifyArgs | None = None
        for step in plan.steps:
            match step.call:
                case ManifestCheckArgs() as check:
                    spec = LiveManifestSpec(
                        endpoint=check.registry, repository=check.repository, tag=check.tag
                    )
                    manifests.setdefault(spec.key, spec)
                case ComposeDeployArgs() as deploy if step.host in compose:
                    compose[step.host].append(LiveComposeSpec.of(plan.service, deploy))
                case K3sImportArgs() as call:
                    imported = call
                case K3sVerifyArgs() as call:
                    verify = call
                case ReadAuthArgs(config=config):
                    auth_config = config
                case _:
                    pass
        if imported is not None and verify is not None:
            k3s.append(_k3s_spec(plan, imported, verify))
    requests = {
        "d601": LiveProbeArgs.of(
            "d601",
            LiveProbeSpec(
                compose=tuple(compose["d601"]), k3s=tuple(k3s), manifests=tuple(manifests.values())
            ),
            registry_probe_call(cfg),
        )
    }
    if compose["master"] or auth_config is not None:
        requests["master"] = LiveProbeArgs.of(
            "master", LiveProbeSpec(compose=tuple(compose["master"]), auth_config=auth_config)
        )
    return requests


# --------------------------------------------------------------------------- one answer


def _text(value: Any, limit: int = 300) -> str:
    return str(value)[:limit]


def parse_host_view(name: LiveHost, host: HostConfig, args: LiveProbeArgs, result: RemoteResult) -> HostView:
    """One host's probe answer as a :class:`HostView` (``reachable=False`` with the reason when
    the answer is a refusal or not the probe's)."""
    base: dict[str, Any] = {"host": name, "address": host.host, "seconds": round(result.seconds, 3)}

    def unreachable(error: str) -> HostView:
        return HostView(reachable=False, error=error, **base)

    data = result.json
    if data is None:
        if result.returncode == 127:
            return unreachable("the probe could not run: bash is not available on the host")
        return unreachable(f"the probe gave no result (exit {result.returncode})")
    if data.get("ok") is not True:
        return unreachable(
            f"the probe refused (exit {result.returncode}): {_text(data.get('error'), 60)}: "
            f"{_text(data.get('detail'))}"
        )
    if data.get("probe") != "live-probe" or data.get("host") != name:
        return unreachable(f"bad answer: not the live probe of {name}")
    wanted = set(args.spec.services)
    try:
        services = {
            key: ServiceFacts.model_validate(value)
            for key, value in dict(data.get("services") or {}).items()
            if key in wanted
        }
    except (ValidationError, TypeError, ValueError) as error:
        return unreachable(f"bad answer: the service facts do not parse: {_text(error, 200)}")
    if any(facts.service != key for key, facts in services.items()):
        return unreachable("bad answer: a service's facts name another service")
    manifests: dict[str, str | None] = {}
    for key, digest in dict(data.get("manifests") or {}).items():
        if digest is not None and not (isinstance(digest, str) and DIGEST_RE.fullmatch(digest)):
            return unreachable(f"bad answer: the manifest digest of {_text(key, 100)} is not a sha256 digest")
        manifests[str(key)] = digest
    errors = {str(k): _text(v) for k, v in dict(data.get("manifestErrors") or {}).items()}
    auth: dict[str, Any] = data["auth"] if isinstance(data.get("auth"), dict) else {}
    auth_sha = auth.get("sha256")
    registry = data.get("registry")
    docker: dict[str, Any] = data["docker"] if isinstance(data.get("docker"), dict) else {}
    probe_seconds = data.get("seconds")
    return HostView(
        reachable=True,
        services=services,
        registry=registry if isinstance(registry, dict) else None,
        registry_error=_text(data["registryError"]) if data.get("registryError") else None,
        manifests=manifests,
        manifest_errors=errors,
        auth_sha256=auth_sha if isinstance(auth_sha, str) and len(auth_sha) == 64 else None,
        auth_error=_text(auth["error"], 60) if auth.get("error") else None,
        hostname=_text(data.get("hostname"), 100) if data.get("hostname") else None,
        docker_state=_text(docker.get("state"), 40) if docker.get("state") else None,
        probe_seconds=probe_seconds if isinstance(probe_seconds, int | float) else None,
        **base,
    )


# --------------------------------------------------------------------------- the collector


def collect_live(
    cfg: StackConfig,
    plans: Sequence[ServicePlan],
    settings: Mapping[str, SshSettings] | SshSettings,
    *,
    runner: Runner | None = None,
) -> LiveView:
    """Probe every host the plans need, concurrently, one read-only SSH round trip each.

    ``settings``: one :class:`SshSettings` for every host, or one per host name (``d601``,
    ``master``; a missing name gets ``SshSettings()``). ``runner`` replaces the OpenSSH runner
    (:func:`artifact_cd.remote.run_call`) in tests. Never raises for a host's failure."""
    requests = probe_requests(cfg, plans)
    run = runner or run_call

    def probe(name: LiveHost, args: LiveProbeArgs) -> HostView:
        host: HostConfig = getattr(cfg.hosts, name)
        where = f"{host.user}@{host.host}:{host.port}"
        own = settings if isinstance(settings, SshSettings) else settings.get(name, SshSettings())
        started = time.monotonic()

        def unreachable(error: str) -> HostView:
            seconds = round(time.monotonic() - started, 3)
            return HostView(host=name, address=host.host, reachable=False, error=error, seconds=seconds)

        try:
            result = run(host, args, own)
        except SshFailure as failure:
            return unreachable(f"ssh {failure.reason}: {failure.detail} ({where})")
        except Exception as error:  # a host's failure stays that host's: the view never raises
            return unreachable(f"the probe of {where} failed: {type(error).__name__}: {_text(error, 200)}")
        try:
            return parse_host_view(name, host, args, result)
        except Exception as error:  # a malformed answer is that host's failure
            return unreachable(f"bad answer from {where}: {type(error).__name__}: {_text(error, 200)}")

    names = [h for h in HOSTS if h in requests]
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        futures = {name: pool.submit(probe, name, requests[name]) for name in names}
        hosts: dict[str, HostView] = {name: future.result() for name, future in futures.items()}
    return LiveView(stack=cfg.env, hosts=hosts)


# --------------------------------------------------------------------------- verdicts and views


def service_statuses(cfg: StackConfig, plans: Sequence[ServicePlan], view: LiveView) -> list[ServiceStatus]:
    """The verdict on every probed plan (pure)."""
    return [
        decide_service(
            service=plan.service,
            decision=plan.decision,
            commit=plan.commit,
            host=service_host(plan),
            repository=plan.registry.repository if plan.registry is not None else f"unidesk/{plan.service}",
            view=view,
            approval_fix=plan.fix,
            stack=cfg.env,
        )
        for plan in probed(plans)
    ]


def host_summary(view: LiveView) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "address": hv.address,
            "reachable": hv.reachable,
            "error": hv.error,
            "seconds": hv.seconds,
            "probeSeconds": hv.probe_seconds,
            "dockerState": hv.docker_state,
        }
        for name, hv in view.hosts.items()
    }


def registry_summary(view: LiveView) -> dict[str, Any] | None:
    """The registry host's status decision from the D601 probe's registry facts (health.decide)."""
    d601 = view.host("d601")
    if d601 is None or not d601.reachable or d601.registry is None:
        return None
    answer = health.decide(d601.registry, mode="status")
    return {
        key: answer.get(key) for key in ("ok", "installed", "decision", "failedScopes", "recommendedAction")
    }


def in_sync(plans: Sequence[ServicePlan], statuses: Sequence[ServiceStatus]) -> bool:
    """Every planned (not held) service is in sync."""
    planned = {p.service for p in plans if p.decision == Decision.PLANNED}
    return all(s.verdict == Verdict.IN_SYNC for s in statuses if s.service in planned)


def status_document(
    cfg: StackConfig, plans: Sequence[ServicePlan], view: LiveView, *, seconds: float | None = None
) -> dict[str, Any]:
    """``status --services``: per probed service desired vs live commit, manifest, verdict, what to run."""
    statuses = service_statuses(cfg, plans, view)
    decisions = {p.service: p.decision.value for p in plans}
    decisions_probed = {p.service for p in probed(plans)}
    summary: dict[str, list[str]] = {}
    for s in statuses:
        summary.setdefault(s.verdict.value, []).append(s.service)
    ok = in_sync(plans, statuses)
    return {
        "ok": ok,
        "stack": cfg.env,
        "decision": "in-sync" if ok else "not-in-sync",
        "services": [{**s.to_json(), "decision": decisions[s.service]} for s in statuses],
        "summary": summary,
        "notProbed": [
            {"service": p.service, "decision": p.decision.value, "reason": p.reason}
            for p in plans
            if p.service not in decisions_probed
        ],
        "hosts": host_summary(view),
        "registry": registry_summary(view),
        "query": {"roundTrips": len(view.hosts), "seconds": seconds},
    }


def _short(commit: Any) -> str:
    return str(commit)[:12] if commit else "-"


def format_status_table(doc: Mapping[str, Any]) -> str:
    """The human view of ``status --services`` (the CLI prints it on a terminal)."""
    services = list(doc.get("services") or [])
    hosts = dict(doc.get("hosts") or {})
    reach = "; ".join(
        f"{name}: {h.get('seconds') or '-'} s"
        if h.get("reachable")
        else f"{name}: UNREACHABLE ({h.get('error')})"
        for name, h in hosts.items()
    )
    in_sync_count = sum(1 for s in services if s.get("verdict") == Verdict.IN_SYNC.value)
    counts = f"{in_sync_count} of {len(services)} in sync"
    lines = [f"stack {doc.get('stack')}: {doc.get('decision')} ({counts}; {reach})"]
    rows = [("SERVICE", "HOST", "DESIRED", "LIVE", "MANIFEST", "VERDICT")]
    for s in services:
        manifest = {True: "yes", False: "MISSING", None: "unknown"}[s.get("manifestPresent")]
        rows.append(
            (
                str(s.get("service")),
                str(s.get("host") or "-"),
                _short(s.get("desiredCommit")),
                _short(s.get("liveCommit")),
                manifest,
                str(s.get("verdict")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += [
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.append("")
    for s in services:  # the ones with something to do (in sync with nothing to do: the table says it)
        if s.get("verdict") == Verdict.IN_SYNC.value and s.get("action") == "nothing to do":
            continue
        lines.append(f"  {s.get('service')} ({s.get('verdict')}): {s.get('reason')}")
        lines.append(f"    run: {s.get('action')}")
        if s.get("missingSecretKeys"):
            lines.append(f"    missing secret keys (names only): {', '.join(s['missingSecretKeys'])}")
    registry = doc.get("registry")
    if isinstance(registry, Mapping):
        lines.append(
            f"registry on d601: {registry.get('decision')} (run: {registry.get('recommendedAction')})"
        )
    for other in doc.get("notProbed") or []:
        lines.append(f"not probed: {other.get('service')} ({other.get('decision')})")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- plan --live


def _runtime_secrets(
    doc: dict[str, Any], status: ServiceStatus, facts: ServiceFacts | None
) -> dict[str, Any]:
    secrets = dict(doc)
    keys = tuple(secrets.get("requiredSecretKeys") or ())
    reported = facts is not None and all(k in facts.secrets for k in keys)
    if not reported:
        secrets["recommendedAction"] = (
            f"could not check the env file live ({status.reason}); {secrets.get('recommendedAction')}"
        )
        return secrets
    assert facts is not None
    missing = [k for k in keys if not facts.secrets[k].present]
    secrets["requiredSecretsPresent"] = not missing
    secrets["missingSecretKeys"] = missing
    if missing:
        secrets["recommendedAction"] = (
            f"restore {', '.join(missing)} in the env file on {status.host}, recreate only {status.service} "
            f"(pulumi up), then verify `microservice health {status.service}`; values are never printed"
        )
    else:
        secrets["recommendedAction"] = (
            "nothing to restore: every required key is present (present/length only)"
        )
    return secrets


def live_plan_service(plan: ServicePlan, view: LiveView, status: ServiceStatus | None) -> dict[str, Any]:
    """One plan document with the live view's answers (``plan --live``); ``status`` None: not probed."""
    doc = plan.to_json()
    if status is None:
        doc["live"] = None
        return doc
    hv = view.host(status.host) if status.host else None
    facts = hv.services.get(plan.service) if hv is not None and hv.reachable else None
    doc["live"] = status.to_json()
    doc["rollback"] = {**doc["rollback"], "fromCommit": status.live_commit}
    if doc.get("runtimeSecrets") is not None:
        doc["runtimeSecrets"] = _runtime_secrets(doc["runtimeSecrets"], status, facts)
    return doc


def live_plan_stack(
    cfg: StackConfig, stack_doc: Mapping[str, Any], plans: Sequence[ServicePlan], view: LiveView
) -> dict[str, Any]:
    """``plan --stack S --live``: the stack plan, each service with its live answers, and the view."""
    statuses = {s.service: s for s in service_statuses(cfg, plans, view)}
    doc = dict(stack_doc)
    doc["services"] = [live_plan_service(p, view, statuses.get(p.service)) for p in plans]
    doc["liveView"] = live_view_summary(plans, view, list(statuses.values()))
    return doc


def live_view_summary(
    plans: Sequence[ServicePlan], view: LiveView, statuses: Sequence[ServiceStatus]
) -> dict[str, Any]:
    """``plan --live``'s top-level ``liveView``: the hosts, the registry decision, all in sync or not."""
    return {
        "hosts": host_summary(view),
        "registry": registry_summary(view),
        "inSync": in_sync(plans, statuses),
    }
