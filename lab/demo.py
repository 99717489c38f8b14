"""``./run demo``: watch the main job happen on two local hosts, then leave nothing behind.

1. set up (``./run`` does it: ``.venv`` and the Debian packages the hosts need);
2. start a local D601 and master server (``tests.rig.Rig.up``: real systemd hosts in their own
   namespaces, sshd, dockerd, the project's registry unit on D601's loopback, nothing on the
   machine's network);
3. publish two commits A and B of a sample service with ``python -m artifact_cd publish`` (the CI
   side), run inside D601 as CI would, into D601's registry;
4. deploy A, then 5. B: the Pulumi program (``__main__.py``) run by the in-process engine of the
   tests (``tests/engine.py``; no Pulumi CLI needed) with the state carried between the two runs;
   each ``command:remote:Command`` runs its exact command and script over real OpenSSH on the host
   its connection names, logged in as the unprivileged ``ubuntu`` (the project's own steps:
   manifest check on D601, SSH-tunnel transfer and Compose recreate with verification on the master);
6. ``status --services``: the live view, read-only, one SSH round trip per host;
7. ``history``: the deploys of the service from the hosts' audit logs and the registry's tags;
8. ``rollback``: the commit to roll back to (A) and the commands; it never deploys;
9. tear everything down and check that no process, mount, cgroup, network link or namespace and no
   directory is left.

Every phase prints its duration. Exit 0 only when A and then B were verified live and nothing is
left; on a failure the hosts are torn down all the same and the exit is 1.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from artifact_cd.contract import AUDIT_LOG_DEFAULT, last_json_object
from tests.engine import CommandCall, RunReport, Stack
from tests.git_source import Checkout
from tests.integration.compose_project import ComposeProject, write_dispatch
from tests.rig import Rig, RigError

from . import sample
from .control import REPO_ROOT, leftovers, ssh_options, write_stack_file

SERVICE = "oa-event-flow"  # Compose on the master server; its image comes from D601 through an SSH tunnel
PROJECT = ComposeProject("unidesk-demo", {SERVICE: "master"})
ENV = PROJECT.env
INDENT = "      "


class DemoFailed(Exception):
    """A phase did not do what it must; the message says what."""


def short(commit: str) -> str:
    return commit[:12]


def say(text: str = "") -> None:
    print(text, flush=True)


class Phases:
    """Numbered phases, each announced when it starts and closed with its duration."""

    def __init__(self, titles: list[str]) -> None:
        self.titles = titles

    def header(self, key: str) -> str:
        index = next(i for i, t in enumerate(self.titles) if t.startswith(key))
        return f"[{index + 1}/{len(self.titles)}] {self.titles[index]}"

    @contextmanager
    def phase(self, key: str) -> Iterator[None]:
        say()
        say(self.header(key))
        started = time.monotonic()
        try:
            yield
        except BaseException:
            say(f"{INDENT}FAILED after {time.monotonic() - started:.1f} s")
            raise
        say(f"{INDENT}done in {time.monotonic() - started:.1f} s")


class Demo:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.rig: Rig | None = None
        self.stack = Stack(ENV)
        self.commits: dict[str, str] = {}
        self.published: dict[str, dict[str, Any]] = {}
        self.live: list[tuple[str, str]] = []  # (label, commit) verified live, in order
        self.dispatch = workdir / "dispatch"  # the ssh ProxyCommand into a host's network namespace
        self.source: Checkout | None = None  # the sample service's repository

    @property
    def the_rig(self) -> Rig:
        if self.rig is None:
            raise DemoFailed("the local hosts are not up")
        return self.rig

    # ------------------------------------------------------------------ hosts

    def start_hosts(self) -> None:
        self.rig = Rig.up(self.workdir / "rig")
        rig = self.rig
        say(f"{INDENT}rig {rig.id}: each host is its own systemd (PID 1) in Linux namespaces, over SSH only")
        say(f"{INDENT}d601    systemd PID {rig.d601.pid}: sshd, dockerd, the registry unit")
        say(f"{INDENT}        ({rig.registry}, on D601's loopback only), a containerd standing in for k3s")
        say(f"{INDENT}master  systemd PID {rig.master.pid}: sshd, dockerd; reaches d601 only over SSH")
        say(f"{INDENT}both    every step logs in as the unprivileged {rig.master.user} (docker group)")
        for h in (rig.d601, rig.master):
            # a host's root is an overlay over the machine's /: a new host starts without the
            # machine's deploy audit log, if the machine has one (the machine's file is untouched)
            h.sh('rm -f -- "$1" "$1.1"', AUDIT_LOG_DEFAULT)
        PROJECT.install(rig, "# controlled env file of the demo's Compose project\n")
        say(f"{INDENT}master  Compose project {PROJECT.base} runs service {SERVICE} (not started yet)")
        write_dispatch(rig, self.dispatch)

    # ------------------------------------------------------------------ publish

    def publish(self, label: str, greeting: str) -> None:
        rig = self.the_rig
        if self.source is None:
            self.source = sample.create(self.workdir / "source", SERVICE)
        commit = sample.commit_and_push(self.source, greeting, f"{SERVICE}: {greeting}")
        env = {
            **os.environ,
            "DOCKER_HOST": rig.d601.docker_host,
            "DOCKER_BUILDKIT": "0",
            "DOCKER_CLI_HINTS": "false",
        }
        argv = [*rig.d601.netns_argv(), sys.executable, "-m", "artifact_cd", "publish", "--service", SERVICE]
        argv += ["--repo", str(self.source.path), "--registry", rig.registry]
        started = time.monotonic()
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=600, check=False
        )
        try:
            doc = json.loads(proc.stdout)
        except ValueError:
            doc = {}
        if proc.returncode != 0 or doc.get("sourceCommit") != commit:
            output = proc.stdout[-1500:] + proc.stderr[-1500:]
            raise DemoFailed(f"publish of {label} failed (exit {proc.returncode}): {output}")
        self.commits[label] = commit
        self.published[label] = doc
        repository = doc["imageRef"].rsplit(":", 1)[0]
        say(f"{INDENT}{label} = {short(commit)} ({greeting!r}): pushed {repository}:{short(commit)}...")
        say(f"{INDENT}    digest {doc['digest'][:19]}...  {time.monotonic() - started:.1f} s")

    # ------------------------------------------------------------------ deploy

    def raw_config(self, commit: str) -> dict[str, Any]:
        raw = PROJECT.stack_config(self.the_rig, {SERVICE: commit})
        raw["registry"]["manage"] = False  # the rig installed it with the project's own install steps
        return raw

    def execute(self, call: CommandCall) -> dict[str, Any]:
        """What the pulumi-command provider does: ``call.command`` over SSH to the host the
        Command's connection names, the step script on stdin."""
        rig = self.the_rig
        h = rig.host(call.host)
        if (call.user, call.port) != (h.user, h.port):
            raise RigError(f"{call.user}@{call.host}:{call.port} is not how the local {h.name} is reached")
        started = time.monotonic()
        proc = h.ssh(call.command, input=call.stdin, timeout=300)
        doc = last_json_object(proc.stdout) or {}
        result = "ok" if proc.returncode == 0 else f"exit {proc.returncode} {doc.get('error', '')}".rstrip()
        say(f"{INDENT}{h.name:7} {call.name:32} {time.monotonic() - started:5.1f} s  {result}")
        return {"stdout": proc.stdout, "stderr": proc.stderr, "returncode": proc.returncode}

    def deploy(self, label: str) -> None:
        rig = self.the_rig
        commit = self.commits[label]
        key = rig.machine_key_file.read_text()
        say(f"{INDENT}stack {ENV}: services.{SERVICE}.commit = {short(commit)} ({label}); pulumi up:")
        report: RunReport = self.stack.up(
            executor=self.execute,
            config=self.raw_config(commit),
            secrets={
                "d601PrivateKey": key,
                "masterPrivateKey": key,
                "kubeconfig": "unused: no k3s service here",
            },
            environ={"ARTIFACT_CD_SSH_OPTIONS": shlex.quote(f"ProxyCommand={self.dispatch} %h %p")},
        )
        if report.error is not None:
            raise DemoFailed(f"pulumi up of {label} failed: {report.error}")
        changed = report.changed_names()
        ops: dict[str, int] = {}
        for op in changed.values():
            ops[op] = ops.get(op, 0) + 1
        say(f"{INDENT}resources: " + ", ".join(f"{n} {op}d" for op, n in sorted(ops.items())))
        result: Mapping[str, Any] = report.run.outputs["results"][SERVICE]
        verdict: Mapping[str, Any] = result.get("verdict") or {}
        health: Mapping[str, Any] = verdict.get("health") or {}
        if (
            not verdict.get("ok")
            or health.get("deployCommit") != commit
            or verdict.get("revisionLabel") != commit
        ):
            raise DemoFailed(f"deploy of {label} is not verified live: {json.dumps(verdict)[:1500]}")
        previous = verdict.get("previousCommit") or ""
        was = (
            next((lbl for lbl, c in self.commits.items() if c == previous), short(previous))
            if previous
            else "nothing"
        )
        say(f"{INDENT}LIVE on master: {SERVICE} at {label} ({short(commit)}), before: {was}")
        image = str(verdict.get("containerImageId"))[:19]
        say(f"{INDENT}  verified: container image {image}... = the registry's; revision label and")
        say(f"{INDENT}  /health deploy.commit = {label}")
        self.live.append((label, commit))

    # ------------------------------------------------------------------ read-only views

    def cli(self, *args: str) -> tuple[int, dict[str, Any]]:
        """``python -m artifact_cd`` against the demo's stack file, as JSON (the demo formats it)."""
        rig = self.the_rig
        project = self.workdir / "project"
        write_stack_file(project, ENV, self.raw_config(self.live[-1][1]))
        argv = [
            sys.executable,
            "-m",
            "artifact_cd",
            "--project-dir",
            str(project),
            *args,
            "--stack",
            ENV,
            "--json",
        ]
        argv += ["--ssh-key", str(rig.machine_key_file)]
        for option in ssh_options(rig, self.dispatch):
            argv += ["--ssh-option", option]
        proc = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180, check=False)
        try:
            doc = json.loads(proc.stdout)
        except ValueError:
            raise DemoFailed(
                f"{' '.join(args)} printed no JSON (exit {proc.returncode}): {proc.stderr[-1500:]}"
            ) from None
        return proc.returncode, doc

    def show(self, text: str) -> None:
        for line in text.splitlines():
            if not line.startswith("JSON: "):  # the hint to pipe: the demo already did
                say(f"{INDENT}{line}")

    def history(self) -> None:
        from artifact_cd.history import format_history

        say(f"{INDENT}$ ./run history --stack {ENV} --service {SERVICE}")
        code, doc = self.cli("history", "--service", SERVICE)
        self.show(format_history(doc))
        services = doc.get("services") or [{}]
        if code != 0 or services[0].get("liveCommit") != self.commits["B"]:
            raise DemoFailed(f"history: exit {code}, live commit {services[0].get('liveCommit')}, expected B")

    def rollback(self) -> None:
        from artifact_cd.history import format_rollback

        say(f"{INDENT}$ ./run rollback --stack {ENV} --service {SERVICE}")
        code, doc = self.cli("rollback", "--service", SERVICE)
        self.show(format_rollback(doc))
        if code != 0 or doc.get("toCommit") != self.commits["A"]:
            raise DemoFailed(
                f"rollback: exit {code}, to {doc.get('toCommit')}, expected A: {doc.get('reason')}"
            )
        say(f"{INDENT}=> rollback suggests A ({short(self.commits['A'])}): it was live and healthy before")

    def status(self) -> None:
        from artifact_cd.liveprobe import format_status_table

        say(f"{INDENT}$ ./run status --services --stack {ENV}   (with the demo's stack file and SSH options)")
        code, doc = self.cli("status", "--services")
        unconfigured = 0
        for line in format_status_table(doc).splitlines():
            if line.startswith("not probed:") and line.endswith("(not-configured)"):
                unconfigured += 1  # the rest of the catalog: this stack configures one service
            elif line.strip():
                say(f"{INDENT}{line}")
        say(f"{INDENT}(and {unconfigured} more catalog services this stack does not configure)")
        services = {s.get("service"): s for s in doc.get("services", [])}
        live = (services.get(SERVICE) or {}).get("liveCommit")
        if code != 0 or live != self.commits["B"]:
            raise DemoFailed(f"status --services: exit {code}, live commit {live}, expected B")

    # ------------------------------------------------------------------ teardown

    def teardown(self) -> list[str]:
        if self.rig is None:
            return []
        rig_id, rigdir = self.rig.id, self.rig.dir
        problems = self.rig.down()
        left = problems + leftovers(rig_id, rigdir)
        self.rig = None
        return left


TITLES = [
    "set up: .venv and the Debian packages the hosts need",
    "start the local hosts: D601 and the master server",
    "publish commits A and B of a sample service (CI's side: python -m artifact_cd publish, on D601)",
    "deploy A: pulumi up (the Pulumi program, in-process engine, real SSH)",
    "deploy B: the same pulumi up with the stack's commit set to B",
    "status --services: what runs where (read-only)",
    "history: what happened on the hosts (read-only: the audit logs and the registry)",
    "rollback: the commit to go back to and the commands to run (never deploys)",
    "tear down: stop both hosts, then check that nothing is left",
]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _main_job(demo: Demo, phases: Phases) -> BaseException | None:
    """Phases 2 to 8; the first failure stops them and is returned (the teardown runs anyway)."""
    try:
        with phases.phase("start"):
            demo.start_hosts()
        with phases.phase("publish"):
            demo.publish("A", "hello from A")
            demo.publish("B", "hello from B")
        with phases.phase("deploy A"):
            demo.deploy("A")
        with phases.phase("deploy B"):
            demo.deploy("B")
        with phases.phase("status"):
            demo.status()
        with phases.phase("history"):
            demo.history()
        with phases.phase("rollback"):
            demo.rollback()
    except KeyboardInterrupt as error:
        say(f"{INDENT}interrupted")
        return error
    except Exception as error:  # any failure: reported, then the hosts are torn down all the same
        say(f"{INDENT}{type(error).__name__}: {error}")
        return error
    return None


def _tear_down(demo: Demo, phases: Phases) -> list[str]:
    with phases.phase("tear down"):
        left = demo.teardown()
        shutil.rmtree(demo.workdir, ignore_errors=True)
        if demo.workdir.exists():
            left.append(f"directory {demo.workdir}")
        if left:
            say(f"{INDENT}LEFT BEHIND:\n" + "\n".join(f"{INDENT}  {item}" for item in left))
        else:
            say(f"{INDENT}nothing left: no process, mount, cgroup, network link or namespace, no container; "
                f"{demo.workdir} removed")  # fmt: skip
    return left


def run_demo(*, setup_started: float | None = None) -> int:
    started = time.monotonic()
    phases = Phases(TITLES)
    say(f"./run demo: the main job on two local hosts: {SERVICE} from commit A to commit B, then teardown.")
    say(f"Stack {ENV} (a stack config written for the local hosts), target: Compose on the master server;")
    say("images are pulled from D601's loopback-only registry through an SSH tunnel. Needs no network.")
    say()
    say(phases.header("set up"))
    if setup_started is not None:
        say(f"{INDENT}done in {max(0.0, time.time() - setup_started):.1f} s")
    else:
        say(f"{INDENT}skipped (run through ./run demo to set up)")
    demo = Demo(Path(tempfile.mkdtemp(prefix="unidesk-demo-")))
    stops = (signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, _interrupt) for sig in stops}  # like Ctrl-C: tear down first
    try:
        failure = _main_job(demo, phases)
        for sig in stops:
            signal.signal(sig, signal.SIG_IGN)  # the teardown is not to be cut short
        left = _tear_down(demo, phases)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say()
    total = time.monotonic() - started
    if failure is None and not left and [lbl for lbl, _ in demo.live] == ["A", "B"]:
        say(f"demo OK in {total:.1f} s: A then B deployed and verified live; nothing left behind.")
        say("Next: ./run plan --stack dev (the real dev stack's offline plan); ./run lab up (hosts to keep)")
        return 0
    say(
        f"demo FAILED after {total:.1f} s"
        + (f": {failure}" if failure else "")
        + ("; see LEFT BEHIND" if left else "")
    )
    return 1
