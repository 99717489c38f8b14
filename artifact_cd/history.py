"""``history`` and ``rollback`` (issue 13): what happened on each target, and what to roll back to.

- :func:`workloads` (pure): from the typed plans, each service with a target in this stack: its host,
  its audit ``target`` value (``master-compose``, ``d601-compose``, ``d601-k3s``), its registry
  repository and the commit the stack config requests;
- :func:`probe_requests` (pure): the :class:`HistoryProbeArgs` of each host (D601 always: the
  registry; the master server when a service lives there);
- :func:`collect_history`: the hosts' probes concurrently, one read-only SSH round trip each; a host
  whose probe fails becomes a :class:`HostAnswer` with the reason (never raises);
- :func:`history_document` (pure): per service the live commit, the requested commit, the last
  deploys (from the audit log, started/ended runs paired: verdict, from -> to, error, seconds, user;
  ``interrupted`` when a run never ended) and the rollback **candidates**: commits that were live and
  verified healthy before on THAT target (a finished ``compose-deploy``/``k3s-deploy`` run with
  verdict ``ok`` or ``already-live`` for the service, env, target and host), whose manifest is still
  in the registry, excluding the live and the requested commit; newest first;
- :func:`rollback_document` (pure but for the plan's gates): the commit to roll back to (``--to`` or
  the newest candidate), checked against the candidates and the gates of any commit
  (:func:`artifact_cd.plan.plan_service` with the commit), and the exact commands to run. It never
  deploys: Pulumi owns the state;
- :func:`format_history`, :func:`format_rollback` (pure): the terminal views.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from .audit import AuditRun, pair_runs, parse_log
from .catalog import TargetKind
from .config import HostConfig, StackConfig
from .contract import COMMIT_RE, HISTORY_MAX_TAGS, HISTORY_TAIL_BYTES, HistoryProbeArgs, LiveHost
from .gates import ApplyContext, Decision
from .plan import ComposeTargetDoc, K3sTargetDoc, ServicePlan, plan_service
from .remote import RemoteResult, SshFailure, run_call
from .sshlink import SshSettings

HOSTS: tuple[LiveHost, ...] = ("d601", "master")
DEPLOY_STEPS = frozenset({"compose-deploy", "k3s-deploy"})  # the steps whose verdict proves a commit live
HEALTHY = frozenset({"ok", "already-live"})
REGISTRY_TARGET = "registry-host"  # the registry install's runs (registry-install.sh)
DEFAULT_LIMIT = 10
PULUMI_PROJECT = "unidesk-artifact-cd"
# the Pulumi types of the consumer components (components/compose_consumer.py, k3s_consumer.py; a test
# holds them equal): the component of a service is named after the service id
COMPONENT_TYPES: Mapping[str, str] = {
    "compose": "unidesk:cd:ComposeServiceConsumer",
    "k3s": "unidesk:cd:K3sServiceConsumer",
}
Runner = Callable[[HostConfig, HistoryProbeArgs, SshSettings], RemoteResult]

# --------------------------------------------------------------------------- what to look at

AUDIT_TARGETS: Mapping[TargetKind, str] = {
    TargetKind.COMPOSE_MASTER: "master-compose",
    TargetKind.COMPOSE_D601: "d601-compose",
    TargetKind.K3S: "d601-k3s",
}


@dataclass(frozen=True)
class Workload:
    """One service's target in this stack, as the history sees it."""

    service: str
    kind: Literal["compose", "k3s"]
    host: LiveHost
    target: str  # the audit log's target value
    repository: str
    requested: str | None  # the stack config's commit
    decision: str
    item: str  # the probe's --compose / --k3s value

    @property
    def component_urn_type(self) -> str:
        return COMPONENT_TYPES[self.kind]


def workloads(plans: Sequence[ServicePlan]) -> list[Workload]:
    """Every plan with a Compose or k3s target (any decision: a held service has a history too)."""
    out: list[Workload] = []
    for p in plans:
        repository = f"unidesk/{p.service}" if p.registry is None else p.registry.repository
        match p.target:
            case ComposeTargetDoc(kind=kind, host=host, container_name=container, env_prefix=prefix):
                out.append(
                    Workload(
                        service=p.service,
                        kind="compose",
                        host="master" if host == "master" else "d601",
                        target=AUDIT_TARGETS[kind],
                        repository=repository,
                        requested=p.commit,
                        decision=p.decision.value,
                        item=f"{p.service}:{container}:{prefix}",
                    )
                )
            case K3sTargetDoc(deployments=deployments) if deployments:
                namespace, _, name = deployments[0].partition("/")
                out.append(
                    Workload(
                        service=p.service,
                        kind="k3s",
                        host="d601",
                        target=AUDIT_TARGETS[TargetKind.K3S],
                        repository=repository,
                        requested=p.commit,
                        decision=p.decision.value,
                        item=f"{p.service}:{namespace}:{name}",
                    )
                )
            case _:
                pass
    return out


def probe_requests(
    cfg: StackConfig,
    loads: Sequence[Workload],
    *,
    tail_bytes: int = HISTORY_TAIL_BYTES,
    max_tags: int = HISTORY_MAX_TAGS,
) -> dict[LiveHost, HistoryProbeArgs]:
    """The probe of each host (pure): D601 always (the registry's tags), the master when needed."""
    requests: dict[LiveHost, HistoryProbeArgs] = {}
    for host in HOSTS:
        mine = [w for w in loads if w.host == host]
        if host == "master" and not mine:
            continue
        on_d601 = host == "d601"
        requests[host] = HistoryProbeArgs(
            host=host,
            audit_log=getattr(cfg.hosts, host).audit_log,
            tail_bytes=tail_bytes,
            compose=tuple(w.item for w in mine if w.kind == "compose"),
            k3s=tuple(w.item for w in mine if w.kind == "k3s"),
            registry=cfg.registry.endpoint if on_d601 else None,
            repository=tuple(dict.fromkeys(w.repository for w in loads)) if on_d601 else (),
            max_tags=max_tags,
            elevate=getattr(cfg.hosts, host).elevate if any(w.kind == "k3s" for w in mine) else None,
        )
    return requests


# --------------------------------------------------------------------------- the probes


@dataclass(frozen=True)
class HostAnswer:
    """One host's probe: its facts (``reachable``) or why there are none."""

    host: LiveHost
    address: str
    reachable: bool
    seconds: float
    facts: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None


def _text(value: Any, limit: int = 300) -> str:
    return str(value)[:limit]


def parse_answer(host: LiveHost, address: str, result: RemoteResult) -> HostAnswer:
    """One probe's result as a :class:`HostAnswer` (unreachable, with the reason, when not the probe's)."""
    seconds = round(result.seconds, 3)
    data = result.json
    if data is None:
        why = "bash is not available on the host" if result.returncode == 127 else "no result"
        return HostAnswer(
            host, address, False, seconds, error=f"the probe gave {why} (exit {result.returncode})"
        )
    if data.get("ok") is not True:
        return HostAnswer(
            host,
            address,
            False,
            seconds,
            error=f"the probe refused: {_text(data.get('error'), 60)}: {_text(data.get('detail'))}",
        )
    if data.get("probe") != "history-probe" or data.get("host") != host:
        return HostAnswer(host, address, False, seconds, error=f"bad answer: not the history probe of {host}")
    return HostAnswer(host, address, True, seconds, facts=data)


def collect_history(
    cfg: StackConfig,
    requests: Mapping[LiveHost, HistoryProbeArgs],
    settings: SshSettings,
    *,
    runner: Runner | None = None,
) -> dict[LiveHost, HostAnswer]:
    """Every host's probe, concurrently, one read-only SSH round trip each; never raises for a host."""
    run: Runner = runner or run_call

    def probe(name: LiveHost, args: HistoryProbeArgs) -> HostAnswer:
        host: HostConfig = getattr(cfg.hosts, name)
        where = f"{host.user}@{host.host}:{host.port}"
        started = time.monotonic()

        def unreachable(error: str) -> HostAnswer:
            return HostAnswer(name, host.host, False, round(time.monotonic() - started, 3), error=error)

        try:
            return parse_answer(name, host.host, run(host, args, settings))
        except SshFailure as failure:
            return unreachable(f"ssh {failure.reason}: {failure.detail} ({where})")
        except Exception as error:  # a host's failure stays that host's
            return unreachable(f"the probe of {where} failed: {type(error).__name__}: {_text(error, 200)}")

    names = [h for h in HOSTS if h in requests]
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        futures = {name: pool.submit(probe, name, requests[name]) for name in names}
        return {name: future.result() for name, future in futures.items()}


# --------------------------------------------------------------------------- the document


def _runs(answer: HostAnswer | None) -> tuple[list[AuditRun], int]:
    if answer is None or not answer.reachable:
        return [], 0
    audit = answer.facts.get("audit")
    lines = audit.get("lines") if isinstance(audit, Mapping) else None
    parsed = parse_log("\n".join(str(line) for line in lines or ()))
    return pair_runs(parsed.records), parsed.skipped_lines


def _running(answer: HostAnswer | None) -> frozenset[str]:
    audit = answer.facts.get("audit") if answer is not None and answer.reachable else None
    runs = audit.get("runningRuns") if isinstance(audit, Mapping) else None
    return frozenset(str(r) for r in runs or ())


def run_json(run: AuditRun, running: Iterable[str] = ()) -> dict[str, Any]:
    """One deploy as ``history`` prints it; ``running``: the run ids whose process still runs (a run
    without an end line is ``in-progress`` then, else ``interrupted``)."""
    rec = run.record
    start = run.started or rec
    verdict = "in-progress" if run.ended is None and rec.run_id in set(running) else run.verdict
    return {
        "time": run.time,
        "endTime": run.ended.time if run.ended is not None else None,
        "step": rec.step,
        "verdict": verdict,
        "fromCommit": start.from_commit if rec.from_commit is None else rec.from_commit,
        "toCommit": rec.to_commit or start.to_commit,
        "error": rec.error if run.ended is not None else None,
        "seconds": rec.seconds if run.ended is not None else None,
        "exitCode": rec.exit_code if run.ended is not None else None,
        "user": rec.user,
        "stack": rec.stack,
        "host": rec.host,
        "runId": rec.run_id,
        "digest": rec.digest or start.digest,
    }


def _mine(run: AuditRun, cfg: StackConfig, w: Workload) -> bool:
    rec = run.record
    return rec.env == cfg.env and rec.service == w.service and rec.target == w.target


def _registry(d601: HostAnswer | None, repository: str) -> tuple[dict[str, Any] | None, str | None]:
    """(commit tag -> facts, None) of the repository, or (None, why the registry is unknown)."""
    if d601 is None or not d601.reachable:
        return None, "D601 did not answer" + (f" ({d601.error})" if d601 is not None and d601.error else "")
    registry = d601.facts.get("registry")
    repos = registry.get("repositories") if isinstance(registry, Mapping) else None
    repo = repos.get(repository) if isinstance(repos, Mapping) else None
    if not isinstance(repo, Mapping):
        return None, "the probe did not report the repository"
    if repo.get("error"):
        return None, _text(repo["error"])
    tags = repo.get("tags")
    return (dict(tags) if isinstance(tags, Mapping) else {}), None


def _live(answer: HostAnswer | None, w: Workload) -> dict[str, Any]:
    if answer is None or not answer.reachable:
        why = answer.error if answer is not None else "not probed"
        return {"known": False, "commit": None, "detail": f"{w.host} did not answer: {why}"}
    facts = answer.facts.get("workloads")
    mine = facts.get(w.service) if isinstance(facts, Mapping) else None
    if not isinstance(mine, Mapping):
        return {"known": False, "commit": None, "detail": "the probe did not report this service"}
    found = mine.get("found")
    commit = mine.get("liveCommit") if found else None
    return {
        "known": found is not None,
        "commit": commit if isinstance(commit, str) and COMMIT_RE.fullmatch(commit) else None,
        "found": found,
        "running": mine.get("running"),
        "requestedCommit": mine.get("requestedCommit"),
        "detail": mine.get("detail"),
    }


def _candidates(
    healthy: Mapping[str, tuple[int, str]],
    tags: Mapping[str, Any] | None,
    live: str | None,
    requested: str | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(candidates newest first, the healthy-before commits that are not, with why)."""
    chosen: list[dict[str, Any]] = []
    excluded: list[dict[str, Any]] = []
    for commit, (_, at) in sorted(healthy.items(), key=lambda item: item[1][0], reverse=True):
        if commit == live:
            excluded.append({"commit": commit, "lastHealthy": at, "reason": "live now"})
        elif commit == requested:
            excluded.append({"commit": commit, "lastHealthy": at, "reason": "the requested commit"})
        elif tags is None:
            excluded.append({"commit": commit, "lastHealthy": at, "reason": "the registry is unknown"})
        elif commit not in tags:
            excluded.append(
                {"commit": commit, "lastHealthy": at, "reason": "its manifest is not in the registry"}
            )
        else:
            facts = tags[commit] if isinstance(tags[commit], Mapping) else {}
            chosen.append(
                {
                    "commit": commit,
                    "lastHealthy": at,
                    "digest": facts.get("digest"),
                    "created": facts.get("created"),
                    "revision": facts.get("revision"),
                    "size": facts.get("size"),
                }
            )
    return chosen, excluded


def service_history(
    cfg: StackConfig, w: Workload, answers: Mapping[LiveHost, HostAnswer], *, limit: int
) -> dict[str, Any]:
    runs, _ = _runs(answers.get(w.host))
    mine = [r for r in runs if _mine(r, cfg, w)]
    mine.sort(key=lambda r: r.time)  # stable: the log's order within a second
    healthy: dict[str, tuple[int, str]] = {}  # commit -> (its last healthy run's place, end time)
    for place, r in enumerate(mine):
        rec = r.record
        if r.ended is not None and rec.step in DEPLOY_STEPS and r.verdict in HEALTHY and rec.to_commit:
            healthy[rec.to_commit] = (place, r.ended.time)
    live = _live(answers.get(w.host), w)
    tags, registry_error = _registry(answers.get("d601"), w.repository)
    candidates, excluded = _candidates(healthy, tags, live["commit"], w.requested)
    deploys = [run_json(r, _running(answers.get(w.host))) for r in reversed(mine)]
    return {
        "service": w.service,
        "target": w.target,
        "host": w.host,
        "decision": w.decision,
        "requestedCommit": w.requested,
        "liveCommit": live["commit"],
        "live": live,
        "deploys": deploys[:limit],
        "deployCount": len(deploys),
        "registry": {
            "known": tags is not None,
            "repository": w.repository,
            "commitTags": len(tags) if tags is not None else None,
            "error": registry_error,
        },
        "candidates": candidates,
        "notCandidates": excluded,
    }


def registry_host_history(cfg: StackConfig, d601: HostAnswer | None, *, limit: int) -> dict[str, Any]:
    """The registry install's runs on D601 (audit target ``registry-host``), newest first."""
    runs, _ = _runs(d601)
    mine = sorted(
        (r for r in runs if r.record.env == cfg.env and r.record.target == REGISTRY_TARGET),
        key=lambda r: r.time,
    )
    deploys = [run_json(r, _running(d601)) for r in reversed(mine)]
    known = d601 is not None and d601.reachable
    return {"known": known, "deploys": deploys[:limit], "deployCount": len(deploys) if known else None}


def _host_summary(cfg: StackConfig, answers: Mapping[LiveHost, HostAnswer]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, a in answers.items():
        audit = a.facts.get("audit") if a.reachable else None
        audit = audit if isinstance(audit, Mapping) else {}
        _, skipped = _runs(a)
        out[name] = {
            "address": a.address,
            "reachable": a.reachable,
            "error": a.error,
            "seconds": a.seconds,
            "auditLog": getattr(cfg.hosts, name).audit_log,
            "auditLines": len(audit.get("lines") or ()) if a.reachable else None,
            "auditTruncated": audit.get("truncated") if a.reachable else None,
            "auditError": audit.get("error") if a.reachable else None,
            "skippedLines": skipped if a.reachable else None,
        }
    return out


def history_document(
    cfg: StackConfig,
    loads: Sequence[Workload],
    answers: Mapping[LiveHost, HostAnswer],
    *,
    limit: int = DEFAULT_LIMIT,
    seconds: float | None = None,
    registry_host: bool = True,
) -> dict[str, Any]:
    """``history``: per service live and requested commit, the last deploys, the rollback candidates;
    with ``registry_host`` also the registry install's runs on D601 (``registryHost``)."""
    ok = all(a.reachable for a in answers.values())
    return {
        "ok": ok,
        "stack": cfg.env,
        "decision": "answered" if ok else "partial",
        "services": [service_history(cfg, w, answers, limit=limit) for w in loads],
        "registryHost": registry_host_history(cfg, answers.get("d601"), limit=limit)
        if registry_host
        else None,
        "hosts": _host_summary(cfg, answers),
        "query": {"roundTrips": len(answers), "seconds": seconds},
    }


# --------------------------------------------------------------------------- rollback


def component_urn(stack: str, w: Workload) -> str:
    return f"urn:pulumi:{stack}::{PULUMI_PROJECT}::{w.component_urn_type}::{w.service}"


RollbackDecision = Literal["rollback", "no-candidate", "not-a-candidate", "gated", "unknown"]


def rollback_document(
    cfg: StackConfig,
    w: Workload,
    history: Mapping[str, Any],
    *,
    to: str | None,
    ctx: ApplyContext,
) -> dict[str, Any]:
    """The rollback of one service: the commit, why it qualifies (or why none does), the commands.

    ``history`` is the service's entry of :func:`history_document`. ``decision``: ``rollback`` (ok),
    ``no-candidate`` / ``not-a-candidate`` / ``gated`` (refused), ``unknown`` (a host did not answer)."""
    candidates = list(history.get("candidates") or [])
    base: dict[str, Any] = {
        "service": w.service,
        "stack": cfg.env,
        "target": w.target,
        "liveCommit": history.get("liveCommit"),
        "requestedCommit": w.requested,
        "candidates": [c["commit"] for c in candidates],
    }

    def refuse(
        decision: RollbackDecision, reason: str, *, commit: str | None = to, **more: Any
    ) -> dict[str, Any]:
        return {"ok": False, "decision": decision, **base, "toCommit": commit, "reason": reason, **more}

    live, registry = history.get("live") or {}, history.get("registry") or {}
    unknown = [
        why
        for known, why in (
            (live.get("known"), live.get("detail")),
            (registry.get("known"), registry.get("error")),
        )
        if not known
    ]
    if to is None and not candidates:
        if unknown:
            return refuse(
                "unknown", "could not tell the candidates: " + "; ".join(map(str, unknown)), retryable=True
            )
        return refuse(
            "no-candidate",
            f"no commit was live and verified healthy before on {w.target} with its manifest still in "
            "the registry (other than the live and the requested commit)",
            notCandidates=history.get("notCandidates") or [],
            retryable=False,
        )
    chosen = to if to is not None else candidates[0]["commit"]
    match = next((c for c in candidates if c["commit"] == chosen), None)
    if match is None:
        if unknown:
            return refuse(
                "unknown", "could not tell the candidates: " + "; ".join(map(str, unknown)), retryable=True
            )
        why = next((e["reason"] for e in history.get("notCandidates") or [] if e["commit"] == chosen), None)
        reason = f"{chosen} is not a rollback candidate of {w.service}: " + (
            why if why is not None else f"it was never live and verified healthy on {w.target}"
        )
        return refuse("not-a-candidate", reason, retryable=False)
    plan = plan_service(cfg, w.service, ctx, commit_override=chosen)
    if plan.decision != Decision.PLANNED:
        return refuse(
            "gated",
            f"{chosen} does not pass the gates of {w.service}: {plan.decision.value}: {plan.reason}",
            commit=chosen,
            fix=plan.fix,
            retryable=False,
        )
    urn = component_urn(cfg.env, w)
    warning = (
        None
        if live.get("known")
        else f"the live commit is unknown ({live.get('detail')}): {chosen} may be what runs now"
    )
    return {
        "ok": True,
        "decision": "rollback",
        **base,
        "toCommit": chosen,
        "candidate": match,
        "gates": {"decision": plan.decision.value, "reason": plan.reason},
        "reason": f"{chosen} was live and verified healthy on {w.target} at {match['lastHealthy']}, "
        "and its manifest is in the registry",
        "commands": [
            f"pulumi stack select {cfg.env}",
            f"pulumi config set --path 'services.{w.service}.commit' {chosen}",
            "pulumi up",
        ],
        "onlyThisService": f"pulumi up --target '{urn}'",
        "note": "nothing was deployed: Pulumi owns the state; run the commands to roll back",
        "warning": warning,
    }


# --------------------------------------------------------------------------- the terminal views


def _short(commit: Any) -> str:
    return str(commit)[:12] if commit else "-"


def _rows(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _seconds(value: Any) -> str:
    return f"{value:g}s" if isinstance(value, int | float) else "-"


def _deploy_rows(deploys: Sequence[Mapping[str, Any]], short: Callable[[Any], str]) -> list[str]:
    """The deploys as table rows; a STEP column when they are not all one step."""
    steps = len({d.get("step") for d in deploys}) > 1
    rows: list[tuple[str, ...]] = [
        ("TIME", *(("STEP",) if steps else ()), "VERDICT", "FROM", "TO", "SECONDS", "ERROR", "USER")
    ]
    rows += [
        (
            str(d.get("time")),
            *((str(d.get("step")),) if steps else ()),
            str(d.get("verdict")),
            short(d.get("fromCommit")),
            short(d.get("toCommit")),
            _seconds(d.get("seconds")),
            str(d.get("error") or "-"),
            str(d.get("user")),
        )
        for d in deploys
    ]
    return _rows(rows)


def format_history(doc: Mapping[str, Any], *, full: bool = False) -> str:
    """``history`` on a terminal: per service a line, its deploys, its candidates."""
    short: Callable[[Any], str] = (lambda c: str(c) if c else "-") if full else _short
    hosts = dict(doc.get("hosts") or {})
    reach = "; ".join(
        f"{n}: {h.get('auditLines')} audit lines"
        if h.get("reachable")
        else f"{n}: UNREACHABLE ({h.get('error')})"
        for n, h in hosts.items()
    )
    lines = [f"history {doc.get('stack')}: {doc.get('decision')} ({reach})"]
    services = list(doc.get("services") or [])
    quiet = [  # nothing recorded and nothing running: one line for all of them
        s for s in services
        if not s.get("deploys") and (s.get("live") or {}).get("known") and not s.get("liveCommit")
    ]  # fmt: skip
    for s in (s for s in services if s not in quiet):
        live = s.get("live") or {}
        live_text = short(s.get("liveCommit")) if live.get("known") else f"unknown ({live.get('detail')})"
        lines.append("")
        requested = short(s.get("requestedCommit"))
        lines.append(f"{s.get('service')} on {s.get('target')}: live {live_text}, requested {requested}")
        deploys = list(s.get("deploys") or [])
        if deploys:
            lines += _deploy_rows(deploys, short)
            more = int(s.get("deployCount") or 0) - len(deploys)
            if more > 0:
                lines.append(f"  ... {more} older (--limit)")
        else:
            lines.append("  no deploy in the audit log")
        candidates = list(s.get("candidates") or [])
        if candidates:
            text = ", ".join(f"{short(c['commit'])} (healthy {c['lastHealthy']})" for c in candidates)
            lines.append(f"  rollback candidates: {text}")
        else:
            registry = s.get("registry") or {}
            why = "" if registry.get("known") else f" (registry unknown: {registry.get('error')})"
            lines.append(f"  rollback candidates: none{why}")
    registry = doc.get("registryHost") or {}
    if registry.get("deploys"):
        lines.append("")
        lines.append("registry host on d601 (registry-install runs):")
        lines += _deploy_rows(list(registry["deploys"]), short)
    if quiet:
        lines.append("")
        lines.append(f"no deploy recorded and not running: {', '.join(str(s.get('service')) for s in quiet)}")
    lines.append("")
    lines.append(f"JSON: history --stack {doc.get('stack')} --json, or pipe the output")
    return "\n".join(lines) + "\n"


def format_rollback(doc: Mapping[str, Any]) -> str:
    """``rollback`` on a terminal: the commit and the commands, or why not."""
    head = f"rollback {doc.get('stack')} {doc.get('service')} on {doc.get('target')}"
    live = f"live {_short(doc.get('liveCommit'))}, requested {_short(doc.get('requestedCommit'))}"
    if not doc.get("ok"):
        lines = [f"{head}: REFUSED ({doc.get('decision')})", f"  {live}", f"  {doc.get('reason')}"]
        if doc.get("fix"):
            lines.append(f"  fix: {doc.get('fix')}")
        if doc.get("candidates"):
            lines.append(f"  candidates: {', '.join(doc['candidates'])}")
        return "\n".join(lines) + "\n"
    lines = [f"{head}: to {doc.get('toCommit')}", f"  {live}", f"  {doc.get('reason')}", "", "run:"]
    lines += [f"  {c}" for c in doc.get("commands") or []]
    lines.append(f"  (only this service: {doc.get('onlyThisService')})")
    if doc.get("warning"):
        lines.append(f"warning: {doc.get('warning')}")
    lines.append("")
    lines.append(str(doc.get("note")))
    return "\n".join(lines) + "\n"


def by_service(loads: Iterable[Workload]) -> dict[str, Workload]:
    return {w.service: w for w in loads}
