"""The registry host's status/health decision (R21-R24): pure, from the probe's facts.

``registry-probe.sh`` collects facts over one SSH round trip and decides nothing; :func:`decide`
turns those facts into the answer an operator (or the install's acceptance step) acts on:

- ``healthy``: everything matches the rendered install.
- ``not-installed``: none of the managed pieces exist (unit, files, container). Storage left over
  from an earlier install does not count as installed; it is reported and kept.
- ``service-degraded`` (R24): the registry API still serves (container running, listening on
  loopback only, ``GET /v2/`` 200) but its governance drifted: unit inactive/disabled/stale,
  a managed file differs from the rendered one, or the container runs another image or spec.
- ``unhealthy``: the API does not serve, the storage directory is gone, or the port is exposed
  beyond loopback (named in ``exposures``).
- ``infra-blocked`` (R23): a channel the query needs is missing (``ssh``, ``systemd``,
  ``docker``, or the probe itself); ``channel`` names it. Never a raw tool error.

``status`` is ok whenever the query worked (R22: not installed is ``ok=true, installed=false``);
``health`` is ok only when the decision is ``healthy``.

``health --integrity`` adds the bounded storage-integrity scope (issue 12): the facts of
``registry-blob-verify.sh`` (blob files hashed against their digests, newest first, within a time
and byte budget). A corrupt blob fails the scope with ``registry-blob-corrupt`` (``unhealthy``: pulls
of the images that use it fail); the scope appears in ``healthyScopes``/``failedScopes`` only when
it was checked, so answers without it keep their scope lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

Mode = Literal["status", "health"]

HEALTHY = "healthy"
NOT_INSTALLED = "not-installed"
DEGRADED = "service-degraded"
UNHEALTHY = "unhealthy"
INFRA_BLOCKED = "infra-blocked"

SCOPES: tuple[str, ...] = (
    "ssh",
    "systemd",
    "docker",
    "unit",
    "files",
    "container",
    "listener",
    "registry-api",
    "storage",
)
INTEGRITY_SCOPE = "storage-integrity"
INTEGRITY_CHECK = "blobIntegrity"
BLOB_CORRUPT = "registry-blob-corrupt"
INTEGRITY_PROBE = "registry-blob-verify"
LOOPBACK_ADDRESSES = frozenset({"127.0.0.1", "::1"})
FILE_NAMES: tuple[str, ...] = ("config", "compose", "unit")
PROBE_NAME = "registry-probe"
PROBE_VERSION = 1

# Checks whose failure leaves the runtime API serving: governance drift, not an outage (R24).
_GOVERNANCE_CHECKS = frozenset(
    {
        "unitLoaded",
        "unitActive",
        "unitEnabled",
        "configFile",
        "composeFile",
        "unitFile",
        "containerImage",
        "containerSpec",
    }
)


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def format_address(address: str, port: int) -> str:
    """``127.0.0.1:5000`` / ``[::1]:5000`` / ``0.0.0.0:5000`` / ``[::]:5000``."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _result(
    *,
    mode: Mode,
    decision: str,
    installed: bool | None,
    retryable: bool,
    checks: dict[str, dict[str, Any]],
    runtime_api_healthy: bool,
    actions: list[str],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    scopes = SCOPES + (
        (INTEGRITY_SCOPE,) if any(c["scope"] == INTEGRITY_SCOPE for c in checks.values()) else ()
    )
    scope_state: dict[str, bool | None] = dict.fromkeys(scopes)
    for check in checks.values():
        ok, scope = check["ok"], check["scope"]
        if ok is None:
            continue
        scope_state[scope] = bool(ok) if scope_state[scope] is None else bool(scope_state[scope] and ok)
    ok = decision != INFRA_BLOCKED if mode == "status" else decision == HEALTHY
    doc: dict[str, Any] = {
        "ok": ok,
        "mode": mode,
        "installed": installed,
        "decision": decision,
        "retryable": retryable,
        "healthyScopes": [s for s in scopes if scope_state[s] is True],
        "failedScopes": [s for s in scopes if scope_state[s] is False],
        "uncheckedScopes": [s for s in scopes if scope_state[s] is None],
        "runtimeApiHealthy": runtime_api_healthy,
        "recommendedAction": actions[0] if actions else "none",
        "actions": actions,
        "checks": checks,
    }
    if extra:
        doc.update(extra)
    return doc


def blocked(
    channel: str, detail: str, *, mode: Mode, retryable: bool, host: str | None = None
) -> dict[str, Any]:
    """An ``infra-blocked`` answer for a channel that failed before any fact arrived (e.g. SSH).

    ``installed`` is ``None`` (unknown) here: nothing on the host could be looked at."""
    action = {
        "ssh": "restore SSH to the D601 host (sshd running, key accepted, host reachable), then retry",
        "probe": "re-run the query; if it persists, run the probe by hand over SSH and check its stderr",
    }.get(channel, f"restore the {channel} channel on the D601 host, then retry")
    checks = {
        channel: {"ok": False, "scope": channel if channel in SCOPES else "ssh", "detail": detail},
    }
    return _result(
        mode=mode,
        decision=INFRA_BLOCKED,
        installed=None,  # unknown: nothing could be looked at
        retryable=retryable,
        checks=checks,
        runtime_api_healthy=False,
        actions=[action],
        extra={"channel": channel, "detail": detail, "host": host},
    )


_FACT_KEYS: tuple[str, ...] = (
    "expected",
    "systemd",
    "unit",
    "docker",
    "container",
    "listeners",
    "http",
    "storage",
    "files",
)


def _probe_problem(facts: object) -> str | None:
    if not isinstance(facts, Mapping):
        return "the probe did not return a JSON object"
    if facts.get("probe") != PROBE_NAME or facts.get("ok") is not True:
        return "the probe output is not registry-probe facts"
    if facts.get("version") != PROBE_VERSION:
        return f"the probe reported version {facts.get('version')!r}, expected {PROBE_VERSION}"
    for key in _FACT_KEYS:
        if not isinstance(facts.get(key), Mapping):
            return f"the probe facts lack {key!r}"
    files = _dict(facts.get("files"))
    for name in FILE_NAMES:
        if not isinstance(files.get(name), Mapping):
            return f"the probe facts lack files.{name}"
    return None


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else 0


class _Evaluation:
    """The checks of one set of facts; each method reads one area and records its checks."""

    def __init__(self, facts: Mapping[str, Any]) -> None:
        self.facts = facts
        self.expected = _dict(facts["expected"])
        self.unit_name = _str(self.expected.get("unit")) or "the registry unit"
        self.container_name = _str(self.expected.get("container")) or "the registry container"
        self.endpoint = _str(self.expected.get("endpoint"))
        self.checks: dict[str, dict[str, Any]] = {
            "ssh": {"ok": True, "scope": "ssh", "detail": "the probe ran over SSH"},
        }
        self.blocked_channel: str | None = None
        self.blocked_retryable = False
        self.blocked_action = ""
        self.drift: list[dict[str, Any]] = []
        self.exposures: list[str] = []
        self.unit_exists = False
        self.active_state = ""
        self.sub_state = ""
        self.container_exists = False
        self.container_running = False
        self.loopback_ok: bool | None = None
        self.api_ok = False
        self.storage_path = ""
        self.storage_ok = False

    def check(self, name: str, scope: str, ok: bool | None, detail: str, **more: Any) -> None:
        self.checks[name] = {"ok": ok, "scope": scope, "detail": detail, **more}

    def channels(self) -> None:
        systemd = _dict(self.facts["systemd"])
        systemd_ok = systemd.get("running") is True and systemd.get("systemctl") is True
        self.check(
            "systemd",
            "systemd",
            systemd_ok,
            "systemd runs as the init system"
            if systemd_ok
            else "systemd is not running on the host (or systemctl is missing)",
        )
        if not systemd_ok:
            self.blocked_channel = "systemd"
            self.blocked_action = "the registry is a systemd unit: run it on a host booted with systemd"
        docker = _dict(self.facts["docker"])
        state = _str(docker.get("state"))
        reachable = docker.get("reachable") is True
        version = _str(docker.get("serverVersion"))
        detail = {
            "reachable": f"the Docker daemon answers (Engine {version or 'unknown version'})",
            "not-installed": "Docker is not installed",
            "permission-denied": "the SSH user may not use the Docker daemon",
            "daemon-unreachable": "the Docker daemon does not answer",
            "timeout": "the Docker daemon did not answer in time",
        }.get(state, "the Docker daemon state is unknown")
        self.check("dockerReachable", "docker", reachable, detail)
        if not reachable and self.blocked_channel is None:
            self.blocked_channel = "docker"
            self.blocked_retryable = state in ("daemon-unreachable", "timeout")
            self.blocked_action = {
                "not-installed": "install Docker Engine and Compose on the D601 host",
                "permission-denied": "add the SSH user to the docker group (or give it passwordless sudo)",
            }.get(state, "start the Docker daemon: systemctl start docker.service")

    def files(self) -> None:
        files = _dict(self.facts["files"])
        for name in FILE_NAMES:
            f = _dict(files[name])
            path = _str(f.get("path"))
            if f.get("matches") is True:
                self.check(f"{name}File", "files", True, f"{path} matches the rendered {name}")
                continue
            if f.get("exists") is not True:
                state, detail = "missing", f"{path} is missing"
            elif f.get("readable") is not True:
                state, detail = "unreadable", f"{path} cannot be read by the SSH user"
            else:
                state, detail = "differs", f"{path} differs from the rendered {name} (drift)"
            self.drift.append(
                {
                    "file": name,
                    "path": path,
                    "state": state,
                    "expectedSha256": f.get("expectedSha256"),
                    "actualSha256": f.get("sha256"),
                }
            )
            self.check(f"{name}File", "files", False, detail, file=name, path=path)

    def _queried(self, section: str) -> Mapping[str, Any] | None:
        """A section of the facts, when the probe could query it (None: it says nothing)."""
        facts = _dict(self.facts[section])
        return facts if facts.get("queried") is True else None

    def unit(self) -> None:
        if (unit := self._queried("unit")) is None:
            return
        name = self.unit_name
        self.unit_exists = unit.get("exists") is True
        self.active_state = _str(unit.get("activeState"))
        self.sub_state = _str(unit.get("subState"))
        stale = unit.get("needDaemonReload") is True
        if not self.unit_exists:
            detail = f"systemd has no {name}"
        elif stale:
            detail = f"{name} changed on disk; systemd still runs the old definition"
        else:
            detail = f"{name} is loaded"
        self.check("unitLoaded", "unit", self.unit_exists and not stale, detail)
        state = self.active_state or "unknown"
        self.check(
            "unitActive",
            "unit",
            unit.get("active") is True,
            f"{name} is {state}" + (f" ({self.sub_state})" if self.sub_state else ""),
        )
        enabled = unit.get("enabled") is True
        file_state = _str(unit.get("unitFileState")) or "not installed"
        self.check(
            "unitEnabled",
            "unit",
            enabled,
            f"{name} is enabled" if enabled else f"{name} is not enabled ({file_state})",
        )

    def container(self) -> None:
        if (container := self._queried("container")) is None:
            return
        name = self.container_name
        self.container_exists = container.get("exists") is True
        self.container_running = self.container_exists and container.get("running") is True
        status = _str(container.get("status")) or "in an unknown state"
        self.check(
            "containerRunning",
            "container",
            self.container_running,
            f"{name} is {status}" if self.container_exists else f"there is no container {name}",
        )
        if not self.container_exists:
            return
        want_ref = _str(self.expected.get("image"))
        have_ref = _str(container.get("image"))
        local_id = _dict(self.facts.get("expectedImage")).get("localImageId")
        have_id = _str(container.get("imageId"))
        ref_ok = have_ref == want_ref
        id_ok = not isinstance(local_id, str) or local_id == have_id
        if not ref_ok:
            detail = f"{name} runs {have_ref}, expected {want_ref}"
        elif not id_ok:
            detail = f"{name} runs an older {want_ref} ({have_id[:19]}); the tag now names {local_id}"
        else:
            detail = f"{name} runs {want_ref} ({have_id[:19]})"
        self.check(
            "containerImage",
            "container",
            ref_ok and id_ok,
            detail,
            image=have_ref,
            imageId=have_id,
            repoDigests=container.get("repoDigests"),
        )
        want_spec = self.expected.get("specSha256")
        if isinstance(want_spec, str) and want_spec:
            have_spec = container.get("specLabel")
            spec_ok = have_spec == want_spec
            shown = str(have_spec)[:12] if isinstance(have_spec, str) and have_spec else "no spec label"
            self.check(
                "containerSpec",
                "container",
                spec_ok,
                f"{name} runs the rendered spec"
                if spec_ok
                else f"{name} runs {shown}, the rendered spec is {want_spec[:12]} (restart pending)",
            )

    def listener(self) -> None:
        listeners = _dict(self.facts["listeners"])
        port = _int(listeners.get("port"))
        raw = listeners.get("addresses")
        addresses = [a for a in raw if isinstance(a, str)] if isinstance(raw, list) else []
        for address in addresses:
            if address not in LOOPBACK_ADDRESSES:
                self.exposures.append(format_address(address, port))
        container = _dict(self.facts["container"])
        bindings = container.get("portBindings") if self.container_exists else None
        for binding in bindings if isinstance(bindings, list) else []:
            b = _dict(binding)
            host_ip = (_str(b.get("hostIp")) or "0.0.0.0").strip("[]")  # noqa: S104 - "" binds every address
            exposure = format_address(host_ip, _int(b.get("hostPort")))
            if host_ip not in LOOPBACK_ADDRESSES and exposure not in self.exposures:
                self.exposures.append(exposure)
        if listeners.get("queried") is not True:
            return
        self.loopback_ok = not self.exposures
        allowed = [format_address(a, port) for a in addresses if a in LOOPBACK_ADDRESSES]
        if self.exposures:
            detail = "exposed beyond loopback: " + ", ".join(self.exposures)
        elif allowed:
            detail = "listening on loopback only: " + ", ".join(allowed)
        else:
            detail = f"nothing listens on port {port}"
        self.check(
            "loopbackOnly",
            "listener",
            self.loopback_ok,
            detail,
            addresses=addresses,
            exposures=list(self.exposures),
        )

    def api_and_storage(self) -> None:
        http = _dict(self.facts["http"])
        code = _int(http.get("code"))
        url = _str(http.get("url")) or "/v2/"
        self.api_ok = code == 200
        self.check(
            "registryApi",
            "registry-api",
            self.api_ok,
            f"GET {url} answered {code}" if code else f"GET {url}: no answer (connection failed)",
            code=code,
        )
        storage = _dict(self.facts["storage"])
        self.storage_path = _str(storage.get("path"))
        self.storage_ok = storage.get("isDir") is True
        data = " (holds registry data)" if storage.get("hasData") is True else ""
        self.check(
            "storage",
            "storage",
            self.storage_ok,
            f"{self.storage_path} exists{data}" if self.storage_ok else f"{self.storage_path} is missing",
        )

    def integrity(self, facts: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The storage-integrity scope from ``registry-blob-verify.sh``'s facts (None: not asked)."""
        if facts is None:
            return None
        if facts.get("ok") is not True or facts.get("probe") != INTEGRITY_PROBE:
            detail = _str(facts.get("detail")) or "the blob verification gave no facts"
            self.check(INTEGRITY_CHECK, INTEGRITY_SCOPE, None, f"not checked: {detail}")
            return {"checked": False, "detail": detail}
        raw = facts.get("corrupt")
        corrupt = [_dict(c) for c in raw] if isinstance(raw, list) else []
        checked, total = _int(facts.get("checkedBlobs")), _int(facts.get("totalBlobs"))
        checked_bytes, total_bytes = _int(facts.get("checkedBytes")), _int(facts.get("totalBytes"))
        unreadable = _int(facts.get("unreadableBlobs"))
        summary: dict[str, Any] = {
            "checked": True,
            "checkedBlobs": checked,
            "totalBlobs": total,
            "checkedBytes": checked_bytes,
            "totalBytes": total_bytes,
            "unreadableBlobs": unreadable,
            "complete": facts.get("complete") is True,
            "stoppedBy": facts.get("stoppedBy"),
            "budgetSeconds": facts.get("budgetSeconds"),
            "budgetBytes": facts.get("budgetBytes"),
            "seconds": facts.get("seconds"),
            "corrupt": corrupt,
        }
        scope = f"{checked} of {total} blobs ({checked_bytes} of {total_bytes} bytes) hashed"
        if corrupt:
            names = ", ".join(_str(c.get("digest")) for c in corrupt)
            summary["error"] = BLOB_CORRUPT
            self.check(
                INTEGRITY_CHECK,
                INTEGRITY_SCOPE,
                False,
                f"{BLOB_CORRUPT}: {len(corrupt)} blob(s) do not hash to their digest: {names} ({scope})",
                error=BLOB_CORRUPT,
            )
        elif checked == 0 and total > 0:
            self.check(
                INTEGRITY_CHECK,
                INTEGRITY_SCOPE,
                None,
                f"not checked: none of the {total} blob files could be read "
                f"({unreadable} unreadable by the SSH user)",
            )
        else:
            more = "" if summary["complete"] else f"; the budget stopped the check ({facts.get('stoppedBy')})"
            self.check(INTEGRITY_CHECK, INTEGRITY_SCOPE, True, f"no corrupt blob: {scope}{more}")
        return summary

    @property
    def installed(self) -> bool:
        files = _dict(self.facts["files"])
        return (
            self.unit_exists
            or self.container_exists
            or any(_dict(files[n]).get("exists") is True for n in FILE_NAMES)
        )

    @property
    def restarting(self) -> bool:
        """systemd itself is (re)starting the unit: an outage that may clear by itself."""
        return self.active_state in ("activating", "reloading") or self.sub_state == "auto-restart"

    @property
    def runtime_api_healthy(self) -> bool:
        return self.container_running and self.loopback_ok is True and self.api_ok

    def actions(self, failed: list[str]) -> list[str]:
        unit, container = self.unit_name, self.container_name
        reinstall = "re-run the install (pulumi up on the stack with registry.manage: true)"
        actions: list[str] = []
        if self.exposures:
            actions.append(
                f"the registry port is exposed on {', '.join(self.exposures)}: stop what publishes it "
                f"(host networking or a non-loopback port mapping), then {reinstall} so only "
                f"{self.endpoint} is bound"
            )
        if "storage" in failed:
            actions.append(
                f"the storage directory {self.storage_path} is missing: restore it from backup before "
                f"restarting {unit} (the install never deletes or replaces registry data)"
            )
        if "containerRunning" in failed and self.restarting:
            actions.append(
                f"systemd is restarting {unit}: retry the query shortly; "
                f"if it stays down: journalctl -u {unit}"
            )
        elif "containerRunning" in failed:
            actions.append(f"start the registry: systemctl restart {unit}; if it fails: journalctl -u {unit}")
        elif "registryApi" in failed:
            code = self.checks["registryApi"].get("code")
            actions.append(
                f"{container} runs but GET /v2/ answered {code or 'nothing'}: check docker logs "
                f"{container}, then systemctl restart {unit}"
            )
        if self.drift:
            names = ", ".join(f"{d['file']} ({d['path']})" for d in self.drift)
            actions.append(
                f"managed files differ from the rendered ones: {names}; confirm whether this is a "
                f"controlled upgrade, then {reinstall} to restore them"
            )
        if "unitLoaded" in failed:
            actions.append(f"{reinstall}; it reloads systemd and restarts {unit} onto the rendered unit")
        if "unitActive" in failed and "containerRunning" not in failed:
            actions.append(f"put the running registry back under systemd: systemctl start {unit}")
        if "unitEnabled" in failed:
            actions.append(f"systemctl enable {unit} (or {reinstall})")
        if "containerImage" in failed or "containerSpec" in failed:
            actions.append(f"{reinstall}; it restarts {unit} onto the rendered image and spec")
        if INTEGRITY_CHECK in failed:
            actions += self.repair_actions()
        return actions

    def repair_actions(self) -> list[str]:
        """One action per corrupt blob: the commits whose image uses it, and publish --repair."""
        actions = []
        for entry in _dict(self.checks.get(INTEGRITY_CHECK)).get("corrupt") or []:
            c = _dict(entry)
            users = [_dict(u) for u in c.get("usedBy") or []]
            named = (
                ", ".join(f"{_str(u.get('repository'))}:{_str(u.get('tag'))}" for u in users)
                or "no tag found"
            )
            actions.append(
                f"blob {_str(c.get('digest'))} is corrupt (used by {named}): from a clean checkout of "
                "each commit, python -m artifact_cd publish --repair --stack <stack> --service <id> "
                "--repo <checkout> drops it and uploads the same content again"
            )
        return actions


def decide(
    facts: Mapping[str, Any], *, mode: Mode, integrity: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The status/health answer for the probe ``facts`` (see the module docstring); ``integrity``:
    the facts of ``registry-blob-verify.sh`` when the storage-integrity scope was asked for."""
    problem = _probe_problem(facts)
    if problem is not None:
        return blocked("probe", problem, mode=mode, retryable=True)
    ev = _Evaluation(facts)
    ev.channels()
    ev.files()
    ev.unit()
    ev.container()
    ev.listener()
    ev.api_and_storage()
    integrity_summary = ev.integrity(integrity)
    if integrity_summary is not None:
        ev.checks[INTEGRITY_CHECK]["corrupt"] = integrity_summary.get("corrupt", [])
    extra: dict[str, Any] = {
        "host": _str(facts.get("host")) or None,
        "drift": ev.drift,
        "exposures": ev.exposures,
        "storage": {
            "path": ev.storage_path,
            "exists": ev.storage_ok,
            "hasData": _dict(facts["storage"]).get("hasData") is True,
        },
    }
    if integrity_summary is not None:
        extra["storageIntegrity"] = integrity_summary

    def answer(
        decision: str, *, installed: bool, retryable: bool, actions: list[str], **more: Any
    ) -> dict[str, Any]:
        return _result(
            mode=mode,
            decision=decision,
            installed=installed,
            retryable=retryable,
            checks=ev.checks,
            runtime_api_healthy=ev.runtime_api_healthy,
            actions=actions,
            extra=extra | more,
        )

    if ev.blocked_channel is not None:
        detail_check = "systemd" if ev.blocked_channel == "systemd" else "dockerReachable"
        return answer(
            INFRA_BLOCKED,
            installed=ev.installed,
            retryable=ev.blocked_retryable,
            actions=[ev.blocked_action],
            channel=ev.blocked_channel,
            detail=ev.checks[detail_check]["detail"],
        )

    if not ev.installed:
        action = "install the registry host: pulumi up on the stack with registry.manage: true"
        if ev.storage_ok:
            action += f" (the existing storage {ev.storage_path} is kept as it is)"
        return answer(
            NOT_INSTALLED,
            installed=False,
            retryable=False,
            actions=[action],
            detail="nothing of the registry host is installed",
        )

    failed = [name for name, c in ev.checks.items() if c["ok"] is False]
    if not failed:
        return answer(
            HEALTHY,
            installed=True,
            retryable=False,
            actions=[],
            detail=f"the registry serves on {ev.endpoint} as rendered",
        )

    if ev.runtime_api_healthy and all(name in _GOVERNANCE_CHECKS for name in failed):
        decision, retryable = DEGRADED, False
    else:
        # Unhealthy; worth a retry only while systemd itself is (re)starting the unit.
        decision, retryable = UNHEALTHY, ev.restarting and not ev.exposures
    return answer(
        decision,
        installed=True,
        retryable=retryable,
        actions=ev.actions(failed),
        detail="; ".join(ev.checks[name]["detail"] for name in failed),
    )


def format_table(doc: Mapping[str, Any]) -> str:
    """The human view of a status/health answer (the CLI prints it on a terminal)."""

    def yn(value: Any) -> str:
        return "yes" if value is True else "no" if value is False else "unknown"

    target = _dict(doc.get("target"))
    where = f"{target.get('user')}@{target.get('host')}:{target.get('port')}" if target else doc.get("host")
    lines = [
        f"registry {doc.get('mode')} on {where}: {doc.get('decision')}",
        f"  ok: {yn(doc.get('ok'))}   installed: {yn(doc.get('installed'))}   retryable: "
        f"{yn(doc.get('retryable'))}   runtimeApiHealthy: {yn(doc.get('runtimeApiHealthy'))}",
    ]
    if doc.get("channel"):
        lines.append(f"  blocked channel: {doc.get('channel')}")
    lines.append(f"  healthy scopes: {', '.join(doc.get('healthyScopes') or []) or '-'}")
    lines.append(f"  failed scopes:  {', '.join(doc.get('failedScopes') or []) or '-'}")
    checks = _dict(doc.get("checks"))
    if checks:
        width = max(len(name) for name in checks)
        lines.append("")
        lines.append(f"  {'CHECK'.ljust(width)}  {'SCOPE'.ljust(12)}  RESULT  DETAIL")
        for name, raw in checks.items():
            c = _dict(raw)
            ok = c.get("ok")
            result = "ok" if ok is True else "FAIL" if ok is False else "-"
            scope = _str(c.get("scope"))
            lines.append(f"  {name.ljust(width)}  {scope.ljust(12)}  {result.ljust(6)}  {c.get('detail')}")
    lines.append("")
    actions = doc.get("actions") or []
    if actions:
        lines.append("recommended:")
        lines += [f"  - {a}" for a in actions]
    else:
        lines.append(f"recommended: {doc.get('recommendedAction')}")
    return "\n".join(lines) + "\n"
