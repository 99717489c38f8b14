"""The human view of ``plan`` (the CLI prints it on a terminal; JSON when piped or with ``--json``).

Pure formatting of the plan documents as the CLI emits them (``plan_stack``, ``ServicePlan.to_json``,
and their ``--live`` forms): one line per service (service, target, commit, decision, steps, gates),
the registry host line, the assumptions count and how to get the JSON. Same style as
``health.format_table`` and ``liveprobe.format_status_table``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

_HEADER = ("SERVICE", "TARGET", "COMMIT", "DECISION", "STEPS", "GATES")
_LIVE_HEADER = ("LIVE", "VERDICT")


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _commit(value: Any, full: bool) -> str:
    if not value:
        return "-"
    return str(value) if full else str(value)[:12]


def _target(doc: Mapping[str, Any]) -> str:
    target = _dict(doc.get("target"))
    kind = target.get("kind") or "-"
    host = target.get("host")
    return f"{kind}@{host}" if host else str(kind)


def _gates(doc: Mapping[str, Any], full: bool) -> str:
    gates: list[str] = []
    if doc.get("requiresSupervisorApproval"):
        approval = _dict(doc.get("approval"))
        status = approval.get("status") or "needed"
        required = approval.get("requiredFor")
        gates.append(f"approval {status}" + (f" for {_commit(required, full)}" if required else ""))
    if _dict(doc.get("selfBootstrapGuard")).get("enabled"):
        gates.append("not from a Code Queue task")
    return "; ".join(gates) or "-"


def _rows_to_lines(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _service_rows(services: Sequence[Mapping[str, Any]], full: bool) -> list[str]:
    live = any("live" in s for s in services)
    header = _HEADER + (_LIVE_HEADER if live else ())
    rows: list[tuple[str, ...]] = [header]
    for s in services:
        row: tuple[str, ...] = (
            str(s.get("service")),
            _target(s),
            _commit(s.get("commit"), full),
            str(s.get("decision")),
            str(len(s.get("steps") or [])),
            _gates(s, full),
        )
        if live:
            status = _dict(s.get("live"))
            row += (_commit(status.get("liveCommit"), full), str(status.get("verdict") or "not probed"))
        rows.append(row)
    return _rows_to_lines(rows)


def _assumptions(docs: Sequence[Mapping[str, Any]]) -> int:
    """The guesses still standing: a name the stack sets (``source: config``) is not one."""
    return sum(len(d.get("assumptions") or []) for d in docs)


def _names_set(docs: Sequence[Mapping[str, Any]]) -> int:
    return sum(
        1 for d in docs for name in _dict(d.get("names")).values() if _dict(name).get("source") == "config"
    )


def _assumptions_line(docs: Sequence[Mapping[str, Any]], where: str) -> str:
    line = f"assumptions: {_assumptions(docs)} (where the seed is silent; {where})"
    configured = _names_set(docs)
    return line + (f"; names set in stack config: {configured}" if configured else "")


def _live_lines(live_view: Any) -> list[str]:
    view = _dict(live_view)
    if not view:
        return []
    hosts = _dict(view.get("hosts"))
    reach = "; ".join(
        f"{name}: {_dict(h).get('seconds') or '-'} s"
        if _dict(h).get("reachable")
        else f"{name}: UNREACHABLE ({_dict(h).get('error')})"
        for name, h in hosts.items()
    )
    lines = [f"live: {'in sync' if view.get('inSync') else 'NOT in sync'} ({reach or 'no host probed'})"]
    registry = view.get("registry")
    if isinstance(registry, Mapping):
        action = registry.get("recommendedAction")
        lines.append(f"  registry on d601: {registry.get('decision')} (run: {action})")
    return lines


def _held_lines(services: Sequence[Mapping[str, Any]]) -> list[str]:
    lines: list[str] = []
    for s in services:
        if s.get("decision") == "planned":
            continue
        lines.append(f"  {s.get('service')} ({s.get('decision')}): {s.get('reason')}")
        if s.get("fix"):
            lines.append(f"    fix: {s.get('fix')}")
    return lines


def _json_hint(argv_hint: str, full: bool) -> str:
    more = "" if full else "; full commits: --full"
    return f"JSON (the whole plan document): {argv_hint} --json, or pipe the output{more}"


def format_plan_stack(doc: Mapping[str, Any], *, full: bool = False) -> str:
    """``plan --stack S`` on a terminal: the services, the registry host, the assumptions count."""
    services = [_dict(s) for s in doc.get("services") or []]
    summary = _dict(doc.get("summary"))
    counts = ", ".join(f"{len(names)} {decision}" for decision, names in summary.items())
    lines = [f"plan {doc.get('stack')} (env {doc.get('env')}): {len(services)} services ({counts or '-'})"]
    lines += _service_rows(services, full)
    lines.append("")
    registry = _dict(doc.get("registryHost"))
    if registry:
        paths = _dict(registry.get("paths"))
        managed = "managed" if registry.get("managedByThisStack") else "not managed"
        lines.append(
            f"registry host {registry.get('host')} ({registry.get('hostAddress')}): {managed} by this stack; "
            f"{paths.get('image')} at {paths.get('endpoint')}, {len(registry.get('steps') or [])} steps"
        )
    upstream = [_dict(u) for u in doc.get("upstreamImages") or []]
    if upstream:
        names = ", ".join(f"{u.get('service')} ({u.get('decision')})" for u in upstream)
        lines.append(f"upstream images (catalog only, not deployed): {names}")
    lines.append(_assumptions_line([*services, *upstream], "listed per service in the JSON"))
    lines += _live_lines(doc.get("liveView"))
    held = _held_lines(services)
    if held:
        lines.append("")
        lines.append("not planned:")
        lines += held
    lines.append("")
    lines.append(_json_hint(f"plan --stack {doc.get('stack')}", full))
    return "\n".join(lines) + "\n"


def format_plan_service(doc: Mapping[str, Any], *, full: bool = False) -> str:
    """``plan --stack S --service ID`` on a terminal: its line, why, its steps, the assumptions count."""
    lines = [f"plan {doc.get('env')} {doc.get('service')}: {doc.get('decision')} ({doc.get('reason')})"]
    lines += _service_rows([doc], full)
    if doc.get("fix"):
        lines.append(f"  fix: {doc.get('fix')}")
    registry = _dict(doc.get("registry"))
    if registry:
        image = (
            registry.get("imageRef") if full else f"{registry.get('endpoint')}/{registry.get('repository')}"
        )
        lines.append(f"  image: {image}" + ("" if full else " (tagged with the full commit)"))
    steps = [_dict(step) for step in doc.get("steps") or []]
    if steps:
        lines.append("")
        rows: list[tuple[str, ...]] = [("STEP", "HOST", "CHANGES")]
        rows += [(str(s.get("id")), str(s.get("host")), "yes" if s.get("mutates") else "no") for s in steps]
        lines += _rows_to_lines(rows)
    secrets = _dict(doc.get("runtimeSecrets"))
    if secrets:
        keys = ", ".join(secrets.get("requiredSecretKeys") or []) or "-"
        lines.append(f"  runtime secrets (names only): {keys}")
    live = _dict(doc.get("live"))
    if live:
        lines.append(f"  live: {live.get('verdict')}: {live.get('reason')} (run: {live.get('action')})")
    lines.append("")
    lines.append(_assumptions_line([doc], "listed in the JSON"))
    lines += _live_lines(doc.get("liveView"))
    lines.append("")
    lines.append(_json_hint(f"plan --stack {doc.get('env')} --service {doc.get('service')}", full))
    return "\n".join(lines) + "\n"
