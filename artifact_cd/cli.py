"""``python -m artifact_cd <verb>``: the commands that work without the Pulumi engine.

Every verb prints JSON for machines (stable camelCase keys). Refusals are JSON too, with a
non-zero exit and never a traceback:

- 0  done
- 1  status/health: the answer is not ok (status: the query failed; health: not healthy)
- 2  invalid input (config value, argument) — the message names the key and the fix
- 3  refused by a gate (unsupported, deprecated)

``status``, ``health`` and ``plan`` print a table on a terminal and JSON with ``--json`` or when
piped (the JSON is the same document either way; ``plan --resources`` and refusals are always JSON).
``render`` prints its text form unless ``--format json`` (or ``--json``).
``status --services`` (the live view) exits 0 only when every planned service is in sync (held
services do not count), 1 otherwise. ``plan --live`` adds the live view to the plan (read-only).
``history`` (read-only, one SSH round trip per host) exits 0 when every host answered, 1 when one
did not (the answer is partial). ``rollback`` exits 0 with the commands to run, 3 when refused (no
candidate, not a candidate, the gates), 1 when a host did not answer (could not tell); it never deploys.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from . import catalog, render
from .config import ConfigError, Problem, RegistryConfig, StackConfig, describe_commit_problem, load_stack
from .gates import ApplyContext, Decision, deprecated_backend_core
from .plan import ServicePlan, plan_service, plan_services, plan_stack

if TYPE_CHECKING:
    from .sshlink import Preconnected, SshSettings

EXIT_OK = 0
EXIT_NOT_OK = 1
EXIT_INVALID = 2
EXIT_REFUSED = 3
DEFAULT_SSH_TIMEOUT = 120.0

PROJECT_DIR = Path(__file__).resolve().parent.parent


def emit(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def _for_people(args: argparse.Namespace) -> bool:
    """The table instead of JSON: stdout is a terminal and ``--json`` was not given."""
    return not getattr(args, "json", False) and sys.stdout.isatty()


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as JSON (exit 2) instead of free text."""

    def error(self, message: str) -> NoReturn:
        emit(
            {
                "ok": False,
                "decision": "invalid-arguments",
                "retryable": False,
                "reason": message,
                "usage": self.format_usage().strip(),
            }
        )
        raise SystemExit(EXIT_INVALID)


def _project_dir(args: argparse.Namespace) -> Path:
    return Path(args.project_dir) if args.project_dir else PROJECT_DIR


def load(args: argparse.Namespace) -> StackConfig:
    return load_stack(_project_dir(args), args.stack)


# --------------------------------------------------------------------------- verbs


def cmd_plan(args: argparse.Namespace) -> int:
    cfg = load(args)
    ctx = ApplyContext.from_environ(os.environ, live=False)
    if args.commit is not None:
        problem = describe_commit_problem(args.commit)
        if problem is not None:
            raise ConfigError([Problem("--commit", problem, "pass the full 40-hex sha of a pushed commit")])
        if args.service is None:
            raise ConfigError([Problem("--commit", "needs --service", "add --service <id>")])
    _check_live_options(args)
    if getattr(args, "resources", False):
        return _plan_resources(args)
    if args.service is None:
        doc = plan_stack(cfg, ctx)
        doc["upstreamImages"] = _upstream_refusals(cfg)
        if args.live:
            doc = _live_stack(args, cfg, doc, plan_services(cfg, ctx))
        if _for_people(args):
            from .plan.table import format_plan_stack

            sys.stdout.write(format_plan_stack(doc, full=args.full))
        else:
            emit(doc)
        return EXIT_OK
    entry = catalog.get(args.service)
    if entry is None:
        upstream = _upstream_refusal(args.service, cfg)
        if upstream is not None:
            emit(upstream)
            return EXIT_REFUSED
        emit(
            {
                "ok": False,
                "decision": Decision.UNSUPPORTED.value,
                "retryable": False,
                "service": args.service,
                "reason": f"{args.service!r} is not a service in the catalog",
                "knownServices": list(catalog.service_ids()),
            }
        )
        return EXIT_REFUSED
    plan = plan_service(cfg, entry.id, ctx, commit_override=args.commit)
    doc = _live_service(args, cfg, plan) if args.live else plan.to_json()
    if _for_people(args):
        from .plan.table import format_plan_service

        sys.stdout.write(format_plan_service(doc, full=args.full))
    else:
        emit(doc)
    return EXIT_REFUSED if doc["decision"] == Decision.UNSUPPORTED.value else EXIT_OK


# --------------------------------------------------------------------------- the live view


def _check_live_options(args: argparse.Namespace) -> None:
    """``--ssh-*``/``--timeout`` only with ``--live``; ``--live`` not with ``--resources``."""
    if not args.live and (args.ssh_key is not None or args.ssh_option or args.timeout is not None):
        raise ConfigError([Problem("--ssh-option", "only with --live", "add --live or drop the SSH options")])
    if args.live and getattr(args, "resources", False):
        raise ConfigError([Problem("--live", "not with --resources", "drop one of --live and --resources")])


def _ssh_settings(args: argparse.Namespace) -> SshSettings:
    from .remote import cli_settings

    timeout = args.timeout if args.timeout is not None else DEFAULT_SSH_TIMEOUT
    settings = cli_settings(
        ssh_key=args.ssh_key, ssh_options=args.ssh_option, timeout=timeout, environ=os.environ
    )
    return replace(settings, preconnected=getattr(args, "preconnected", None))


def _live_stack(
    args: argparse.Namespace, cfg: StackConfig, doc: dict[str, Any], plans: list[ServicePlan]
) -> dict[str, Any]:
    from .liveprobe import collect_live, live_plan_stack

    settings = _ssh_settings(args)
    return live_plan_stack(cfg, doc, plans, collect_live(cfg, plans, settings))


def _live_service(args: argparse.Namespace, cfg: StackConfig, plan: ServicePlan) -> dict[str, Any]:
    from .liveprobe import collect_live, live_plan_service, live_view_summary, service_statuses

    settings = _ssh_settings(args)
    view = collect_live(cfg, [plan], settings)
    statuses = service_statuses(cfg, [plan], view)
    doc = live_plan_service(plan, view, statuses[0] if statuses else None)
    doc["liveView"] = live_view_summary([plan], view, statuses)
    return doc


def cmd_status_services(args: argparse.Namespace) -> int:
    """``status --services``: one read-only probe per host; per service desired vs live."""
    from .liveprobe import collect_live, format_status_table, status_document

    cfg = load(args)
    settings = _ssh_settings(args)
    plans = plan_services(cfg, ApplyContext.from_environ(os.environ, live=False))
    started = time.monotonic()
    view = collect_live(cfg, plans, settings)
    doc = status_document(cfg, plans, view, seconds=round(time.monotonic() - started, 3))
    if args.json or not sys.stdout.isatty():
        emit(doc)
    else:
        sys.stdout.write(format_status_table(doc))
    return EXIT_OK if doc["ok"] else EXIT_NOT_OK


# --------------------------------------------------------------------------- history and rollback


def _history_of(args: argparse.Namespace, cfg: StackConfig, service: str | None) -> tuple[Any, Any]:
    """(the workloads looked at, the history document): one read-only probe per host (issue 13)."""
    from .history import collect_history, history_document, probe_requests, workloads

    loads = workloads(plan_services(cfg, ApplyContext.from_environ(os.environ, live=False)))
    if service is not None:
        loads = [w for w in loads if w.service == service]
    settings = _ssh_settings(args)
    started = time.monotonic()
    answers = collect_history(cfg, probe_requests(cfg, loads), settings)
    limit = getattr(args, "limit", None) or 10
    seconds = round(time.monotonic() - started, 3)
    doc = history_document(cfg, loads, answers, limit=limit, seconds=seconds, registry_host=service is None)
    return loads, doc


def _history_refusal(cfg: StackConfig, service: str) -> dict[str, Any] | None:
    """A service without a Compose or k3s target in this stack: a structured refusal (exit 3)."""
    from .history import workloads

    if service in {w.service for w in workloads(plan_services(cfg))}:
        return None
    known = catalog.get(service) is not None
    return {
        "ok": False,
        "decision": Decision.UNSUPPORTED.value,
        "retryable": False,
        "service": service,
        "reason": f"{service!r} has no Compose or k3s target in {cfg.env}"
        if known
        else f"{service!r} is not a service in the catalog",
        "knownServices": list(catalog.service_ids()),
    }


def cmd_history(args: argparse.Namespace) -> int:
    """``history``: per service live/requested commit, last deploys, rollback candidates (exit 0/1)."""
    cfg = load(args)
    if args.limit < 1:
        raise ConfigError([Problem("--limit", "must be at least 1", "pass --limit N with N >= 1")])
    if args.service is not None:
        refusal = _history_refusal(cfg, args.service)
        if refusal is not None:
            emit(refusal)
            return EXIT_REFUSED
    _, doc = _history_of(args, cfg, args.service)
    if _for_people(args):
        from .history import format_history

        sys.stdout.write(format_history(doc, full=args.full))
    else:
        emit(doc)
    return EXIT_OK if doc["ok"] else EXIT_NOT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    """``rollback``: the commit to roll back to and the commands; never deploys (exit 0/1/3)."""
    from .history import rollback_document

    cfg = load(args)
    if args.to is not None:
        problem = describe_commit_problem(args.to)
        if problem is not None:
            raise ConfigError([Problem("--to", problem, "pass the full 40-hex sha of a rollback candidate")])
    refusal = _history_refusal(cfg, args.service)
    if refusal is not None:
        emit(refusal)
        return EXIT_REFUSED
    loads, doc = _history_of(args, cfg, args.service)
    ctx = ApplyContext.from_environ(os.environ, live=True)
    answer = rollback_document(cfg, loads[0], doc["services"][0], to=args.to, ctx=ctx)
    if _for_people(args):
        from .history import format_rollback

        sys.stdout.write(format_rollback(answer))
    else:
        emit(answer)
    if answer["ok"]:
        return EXIT_OK
    return EXIT_NOT_OK if answer["decision"] == "unknown" else EXIT_REFUSED


def _upstream_refusal(service_id: str, cfg: StackConfig) -> dict[str, Any] | None:
    """An ``upstream-image`` entry of CI.json: catalog only, a structured ``unsupported`` (R26)."""
    from . import ci

    try:
        upstream = ci.load_ci().upstream.get(service_id)
    except ci.CIError:
        return None
    return None if upstream is None else ci.upstream_plan_refusal(upstream, cfg.env, cfg.registry.endpoint)


def _upstream_refusals(cfg: StackConfig) -> list[dict[str, Any]]:
    """Every ``upstream-image`` entry of CI.json, each with why CD does not deploy it (R26)."""
    from . import ci

    try:
        upstream = ci.load_ci().upstream
    except ci.CIError as error:
        return [{"ok": False, "decision": "invalid-ci-catalog", "reason": str(error)}]
    return [ci.upstream_plan_refusal(a, cfg.env, cfg.registry.endpoint) for _, a in sorted(upstream.items())]


def _plan_resources(args: argparse.Namespace) -> int:
    """``plan --resources``: the program itself, previewed in-process (components/preview.py)."""
    if args.service is not None or args.commit is not None:
        raise ConfigError(
            [Problem("--resources", "lists the whole stack", "drop --service/--commit or --resources")]
        )
    from components.preview import resources_document, run_program  # Pulumi is imported only here

    run = run_program(args.stack, project_dir=_project_dir(args))
    if run.error is not None:
        emit({"ok": False, "decision": "program-refused", "retryable": False, "reason": str(run.error)})
        return EXIT_INVALID
    sys.stdout.write(json.dumps(resources_document(run), indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    from .publish import SshBlobDropper, run_publish

    dropper = None
    if args.stack is not None:
        if not args.repair:
            raise ConfigError([Problem("--stack", "only with --repair", "add --repair or drop --stack")])
        cfg = load(args)
        settings = _ssh_settings(args)
        dropper = SshBlobDropper(
            cfg.hosts.d601, settings, cfg.registry.storage_path, cfg.registry.container_name
        )
    elif args.ssh_key is not None or args.ssh_option or args.timeout is not None:
        raise ConfigError([Problem("--ssh-option", "only with --stack", "add --repair --stack or drop them")])
    from .publish_progress import for_stream, summary_text

    progress = for_stream(sys.stderr)
    code, doc = run_publish(
        args.service, args.repo, args.registry, repair=args.repair, dropper=dropper, progress=progress
    )
    if _for_people(args):
        sys.stdout.write(summary_text(code, doc))
    else:
        emit(doc)
    return code


def cmd_render(args: argparse.Namespace) -> int:
    registry = load(args).registry if args.stack else RegistryConfig()
    files = render.render_all(registry)
    if args.format == "json" or args.json:
        emit(
            {
                "specSha256": render.spec_sha256(registry),
                "files": [
                    {"name": f.name, "path": f.path, "mode": f.mode, "sha256": f.sha256, "content": f.content}
                    for f in files
                ],
            }
        )
    else:
        for f in files:
            sys.stdout.write(f"### {f.name}: {f.path}\n### sha256 {f.sha256}\n{f.content}\n")
    return EXIT_OK


def cmd_deploy_backend_core(args: argparse.Namespace) -> int:
    emit(deprecated_backend_core(args.env, args.commit))
    return EXIT_REFUSED


def cmd_registry_query(args: argparse.Namespace) -> int:
    """status / health: one read-only SSH round trip to D601 (artifact_cd.remote, artifact_cd.health)."""
    from .remote import cli_query

    if getattr(args, "services", False):
        return cmd_status_services(args)

    mode: Literal["status", "health"] = "health" if args.verb == "health" else "status"
    integrity = None
    if mode == "health" and args.integrity:
        from .contract import RegistryBlobVerifyArgs

        if args.integrity_budget_seconds < 1 or args.integrity_budget_bytes < 0:
            raise ConfigError(
                [Problem("--integrity-budget-seconds", "must be >= 1 (bytes >= 0)", "pass positive budgets")]
            )
        integrity = RegistryBlobVerifyArgs(
            storage=load(args).registry.storage_path,
            budget_seconds=args.integrity_budget_seconds,
            budget_bytes=args.integrity_budget_bytes,
        )
    return cli_query(
        load(args),
        mode,
        ssh_key=args.ssh_key,
        ssh_options=args.ssh_option,
        timeout=args.timeout if args.timeout is not None else DEFAULT_SSH_TIMEOUT,
        as_json=args.json,
        environ=os.environ,
        out=sys.stdout,
        integrity=integrity,
        preconnected=args.preconnected,
    )


def cmd_hostkeys(args: argparse.Namespace) -> int:
    """hostkeys: read the hosts' SSH keys (read-only), print the lines that pin them; master -> D601."""
    from .hostkeys import cli_hostkeys

    return cli_hostkeys(load(args), args.stack, _ssh_settings(args), as_json=args.json, out=sys.stdout)


# --------------------------------------------------------------------------- parser

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m artifact_cd", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--project-dir", help="directory holding Pulumi.<stack>.yaml (default: this project)")
    sub = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)

    p = sub.add_parser(
        "plan", help="offline plan of a stack (a table on a terminal, else JSON); no network, no Pulumi"
    )
    p.add_argument("--stack", required=True, choices=catalog.ENVS)
    p.add_argument(
        "--service", help="one service id (default: every service of the stack + the registry host)"
    )
    p.add_argument("--commit", help="plan this commit instead of the stack's (with --service)")
    p.add_argument(
        "--resources",
        action="store_true",
        help="run the Pulumi program under the mock engine (preview); list every resource it registers"
        " (always JSON)",
    )
    p.add_argument("--json", action="store_true", help="JSON even on a terminal (always JSON when piped)")
    p.add_argument("--full", action="store_true", help="on a terminal: full 40-hex commits (JSON has them)")
    _ssh_arguments(
        p, live=("--live", "read-only: fill the dry-run's live fields from one probe per host over SSH")
    )
    p.set_defaults(handler=cmd_plan)

    p = sub.add_parser("render", help="the registry config, compose file and systemd unit with SHA-256")
    p.add_argument(
        "--stack", choices=catalog.ENVS, help="use this stack's registry settings (default: R1 defaults)"
    )
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--json", action="store_true", help="the same as --format json")
    p.set_defaults(handler=cmd_render)

    p = sub.add_parser("deploy-backend-core", help="deprecated: prints a structured refusal")
    p.add_argument("--env")
    p.add_argument("--commit")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(handler=cmd_deploy_backend_core)

    p = sub.add_parser(
        "publish", help="CI only: build a clean, pushed commit (CI.json Dockerfile) and push it commit-pinned"
    )
    p.add_argument("--service", required=True, help="a service-image id of CI.json")
    p.add_argument("--repo", required=True, help="a clean git checkout whose HEAD is pushed")
    p.add_argument("--registry", default="127.0.0.1:5000", help="the D601 registry endpoint (loopback)")
    _repair_arguments(p)
    p.set_defaults(handler=cmd_publish)

    services = ("--services", "the live view: per service desired vs live commit, verdict, what to run")
    for verb, text, live in (
        ("status", "read-only registry host status over SSH (ok when the query worked; exit 0/1)", services),
        ("health", "read-only registry host health over SSH (ok only when healthy; exit 0/1)", None),
    ):
        p = sub.add_parser(verb, help=text)
        p.add_argument("--stack", required=True, choices=catalog.ENVS)
        p.add_argument("--json", action="store_true", help="JSON even on a terminal (always JSON when piped)")
        _ssh_arguments(p, live=live)
        _integrity_arguments(p, verb)
        p.set_defaults(handler=cmd_registry_query)

    p = sub.add_parser(
        "history",
        help="read-only, one SSH round trip per host: per service live/requested commit, the last deploys "
        "(audit log) and the rollback candidates (exit 0, 1 when a host did not answer)",
    )
    p.add_argument("--stack", required=True, choices=catalog.ENVS)
    p.add_argument("--service", help="one service id (default: every service with a target)")
    p.add_argument("--limit", type=int, default=10, help="deploys shown per service (default 10)")
    p.add_argument("--json", action="store_true", help="JSON even on a terminal (always JSON when piped)")
    p.add_argument("--full", action="store_true", help="on a terminal: full 40-hex commits (JSON has them)")
    _ssh_arguments(p)
    p.set_defaults(handler=cmd_history)

    p = sub.add_parser(
        "rollback",
        help="the commit to roll back to (a candidate that passes the gates) and the commands to run;"
        " never deploys (exit 0; 3 refused; 1 a host did not answer)",
    )
    p.add_argument("--stack", required=True, choices=catalog.ENVS)
    p.add_argument("--service", required=True, help="the service id")
    p.add_argument("--to", help="this candidate commit (default: the newest candidate)")
    p.add_argument("--json", action="store_true", help="JSON even on a terminal (always JSON when piped)")
    _ssh_arguments(p)
    p.set_defaults(handler=cmd_rollback)

    return _hostkeys_parser(parser, sub)


def _hostkeys_parser(parser: argparse.ArgumentParser, sub: Any) -> argparse.ArgumentParser:
    """``hostkeys`` (issue 11): added last; returns ``parser``."""
    p = sub.add_parser(
        "hostkeys",
        help="read-only: the hosts' SSH host keys and the pulumi config set lines that pin them;"
        " checks that the master server can log in to D601",
    )
    p.add_argument("--stack", required=True, choices=catalog.ENVS)
    p.add_argument("--json", action="store_true", help="JSON even on a terminal (always JSON when piped)")
    _ssh_arguments(p)
    p.set_defaults(handler=cmd_hostkeys)
    return parser


def _integrity_arguments(p: argparse.ArgumentParser, verb: str) -> None:
    """``health --integrity``: the bounded storage-integrity scope (issue 12; not for status)."""
    if verb != "health":
        return
    p.add_argument(
        "--integrity",
        action="store_true",
        help="also hash the registry blobs against their digests (scope storage-integrity; a 2nd round trip)",
    )
    p.add_argument("--integrity-budget-seconds", type=int, default=10, help="time budget of --integrity (10)")
    p.add_argument(
        "--integrity-budget-bytes", type=int, default=512 * 2**20, help="bytes hashed at most (512 MiB)"
    )


def _repair_arguments(p: argparse.ArgumentParser) -> None:
    """``publish --repair [--stack S]`` (issue 12) and the SSH options of its D601 blob drop."""
    p.add_argument(
        "--repair",
        action="store_true",
        help="re-upload the same content of a commit whose registry blobs are missing or corrupt",
    )
    p.add_argument(
        "--stack", choices=catalog.ENVS, help="with --repair: the stack whose D601 drops a corrupt blob (SSH)"
    )
    _ssh_arguments(p)
    p.add_argument("--json", action="store_true", help="JSON even on a terminal (always JSON when piped)")


def _ssh_arguments(p: argparse.ArgumentParser, *, live: tuple[str, str] | None = None) -> None:
    """The SSH arguments of a verb that reads the hosts, after ``live`` (flag, help): its switch to
    the per-service live view, when it has one."""
    if live is not None:
        flag, text = live
        p.add_argument(flag, action="store_true", help=text)
    p.add_argument("--ssh-key", help="private key file (default: $ARTIFACT_CD_SSH_KEY or ssh's)")
    p.add_argument(
        "--ssh-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra OpenSSH -o option, repeatable (also $ARTIFACT_CD_SSH_OPTIONS, shell-quoted words)",
    )
    p.add_argument("--timeout", type=float, default=None, help="seconds for an SSH round trip (default 120)")


def main(argv: Sequence[str] | None = None, *, preconnected: Preconnected | None = None) -> int:
    """``preconnected``: D601's connection ``__main__`` opened before the imports (sshlink); used
    by status/health when it is the connection they would open, else closed unused."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        args.preconnected = preconnected
        handler: Handler = args.handler
        try:
            return handler(args)
        except ConfigError as error:
            emit(error.as_json())
            return EXIT_INVALID
    finally:
        if preconnected is not None:
            preconnected.close()
