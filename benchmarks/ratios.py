"""Benchmark: every figure of issue 14 as a ratio measured in the same run (prints; asserts nothing).

    .venv/bin/python benchmarks/ratios.py [--rounds 5] [--pad-mb 50] [--json] [--quiet-wait SECONDS]
                                          [--only deploy,query,stack,bytes] [--no-bytecode-cache]
                                          [--login-env production|machine]

Starts its own rig (tests/rig: D601 + master server as real systemd hosts in network namespaces,
linked only by SSH; all traffic on loopback / the rig's veth), publishes test images, and measures
with the project's own plan steps, each run over real OpenSSH exactly as ``Host.run_step`` runs a
Pulumi remote Command (the plan's command line, the script text on stdin). For every figure each
round measures the numerator and the denominator back to back (their order alternates), so the
ratio is one of the same round; the figure is the median of the per-round ratios with min-max.

1. deploy: one verified D601-direct deploy of a fresh commit of ``findjob`` with every step the
   plan gives (manifest-check, pull, deploy) vs the hand-typed ``docker pull && docker tag &&
   docker-compose up -d --no-deps --force-recreate && curl`` for another fresh commit (one ssh).
   Breakdown: ``ssh d601 true`` (one SSH connection), each step's wall time, the phases
   compose-deploy.sh logs on stderr (``compose-deploy [Xs]: ...``; intervals between its log lines,
   the last one up to the verdict's ``seconds``), the hand line's phases (timestamps it prints).
2. query: ``python -m artifact_cd status --stack prod`` and ``health`` (the CLI against the rig's
   D601, run as tests/integration/test_registry_host.py runs it: ``--project-dir``, ``--ssh-key``,
   ``--ssh-option ProxyCommand=...``) and, when the live view exists, ``status --services`` vs
   ``ssh d601 true`` with the very same OpenSSH argv (``artifact_cd.remote.ssh_argv``).
   The CLI runs as an operator's ``./run status`` does, with Python's bytecode cache (kept out of the
   tree by ``PYTHONPYCACHEPREFIX``; ``--no-bytecode-cache`` runs it as inherited: this build machine
   sets ``PYTHONDONTWRITEBYTECODE=1``, so every module would be compiled again on every run).
   Breakdown: ``python -c pass``; ``python -c 'import artifact_cd.cli, artifact_cd.remote'``
   (start-up + imports, also without any bytecode cache; plus ``-X importtime`` self times grouped by
   top-level package, once); the
   probe's own time on the host (the probe script run by ``bash -s`` inside the host, no ssh,
   timed inside the host); the CLI's own ``query.seconds`` (its one SSH round trip).
3. stack: 4 Compose services change at once (oa-event-flow + project-manager on the master,
   findjob + pipeline on D601), each service's plan steps in its own thread (as Pulumi runs
   independent consumers) vs one service alone: the master one (manifest-check, transfer, deploy)
   and the D601 one (manifest-check, pull, deploy), each alone; ratio = stack wall / the slower
   of the two alone. Breakdown: per service and step in the stack vs alone, compose-deploy's
   ``lockWaitSeconds`` and phases; CPU seconds of each rig host's cgroup and of the benchmark's own
   processes, and the whole machine's busy CPUs (/proc/stat), during each; two CPU floors as ratios:
   everything on this machine's CPUs (the rig: D601, the master and the operator's side share them)
   and each machine on CPUs of its own (production: the busiest machine's CPU decides).
4. bytes: redeploy A -> B of ``oa-event-flow`` to the master (A there; images share a --pad-mb
   random base layer and differ in a small top layer): tunnel bytes (move-image's ``bytesMoved``:
   what the SSH client received) vs the missing layers' bytes (from the registry manifests: the
   sizes of B's layers whose digests A lacks) vs stream bytes (``docker save`` tar bytes).
   Breakdown: an idle tunnel's bytes (move-image's ssh options, ``-N -L``, one GET /v2/, nothing
   pulled) and B's config + manifest bytes.

Login environment: the rig's hosts are overlays of this machine's root file system, so they would
run this machine's /root/.bashrc (``pyenv init`` for every SSH command, python3 through pyenv's
shims). ``--login-env production`` (the default) gives each rig host a stock ~/.bashrc that does
nothing for a non-interactive shell, as on a stock Ubuntu D601 or master (python3 =
/usr/bin/python3), in the host's own overlay; figure 2 also measures status vs ``ssh true`` once
per round with this machine's .bashrc on D601. ``--login-env machine`` keeps this machine's.

CPU: for figures 1 and 3 each block also records the CPU seconds of the measured work (the rig
hosts' cgroups + this benchmark's own processes: ssh clients, relays, the CLI) and the whole
machine's busy CPUs (/proc/stat); "others" is the difference, i.e. whatever else ran on the machine
(another test run) and disturbed the round. ``--quiet-wait N`` waits up to N s before each round
for the machine to be idle. The benchmark builds on tests/rig and reuses benchmarks/transfer.py's
helpers; transfer.py itself is unchanged and still runs on its own.

No timing is asserted anywhere. ``--json`` prints one JSON document on stdout (the table then goes
to stderr); progress lines always go to stderr. Exit 1 when a figure could not be measured (its
error is in the output; the other figures are still measured).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TextIO, TypeVar

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from artifact_cd import catalog  # noqa: E402
from artifact_cd.catalog import ComposeTarget  # noqa: E402
from artifact_cd.config import PROJECT as PULUMI_PROJECT  # noqa: E402
from artifact_cd.config import StackConfig, parse_stack_config  # noqa: E402
from artifact_cd.plan import ServicePlan, Step, plan_service  # noqa: E402
from artifact_cd.remote import acceptance_step  # noqa: E402
from artifact_cd.scripts import script_text  # noqa: E402
from artifact_cd.sshlink import SshSettings, ssh_argv  # noqa: E402
from benchmarks.transfer import BASE, PROJECT, compose_project, drop_image, sha  # noqa: E402
from tests.rig import Host, Rig  # noqa: E402
from tests.rig.host import read_cgroup_list  # noqa: E402
from tests.rig.images import fetch_manifest  # noqa: E402
from tests.rig.rig import COMPOSE_V2, link_compose_v2  # noqa: E402

PYTHON = sys.executable
STEP_TIMEOUT = 180.0
ALLOWANCE = 64 * 1024  # issue 14: tunnel bytes <= 1.05 x missing layers + 64 KiB
DIRECT = "findjob"  # D601-direct Compose service (figure 1)
STACK = {"oa-event-flow": "master", "project-manager": "master", "findjob": "d601", "pipeline": "d601"}
ALONE = {"master": "oa-event-flow", "d601": "findjob"}
MOVED = "oa-event-flow"  # figure 4
FIGURES = ("deploy", "query", "stack", "bytes")
# --compose: v1 (bookworm's docker-compose 1.29, every rig test's) or v2 (Docker's Compose plugin,
# linked into both hosts from ./run's COMPOSE_V2 as tests/integration/test_compose_v2.py does; the
# stack config names no Compose command, so compose-deploy.sh finds it as a real host's would).
HAND_COMPOSE = ["docker-compose"]  # the hand-typed line's Compose (docker compose with --compose v2)
TARGETS = {"deploy": 1.25, "query": 2.0, "stack": 1.5}  # issue 14's acceptance, shown, never asserted
LOG_RE = re.compile(r"^(?P<script>[a-z0-9][a-z0-9-]*) \[(?P<t>\d+(?:\.\d+)?)s\]: (?P<msg>.*)$")

# The hand-typed line of the issue, with a timestamp after each command (bash builtin, no fork).
HAND = r"""
set -euo pipefail
t() { printf 'hand %s %s\n' "$1" "$EPOCHREALTIME" >&2; }
t start
ref=127.0.0.1:5000/unidesk/$1:$2
docker pull -q "$ref" >/dev/null
t "docker pull"
docker tag "$ref" "$1" && docker tag "$ref" "$1:$2"
t "docker tag"
read -r -a compose <<<"$6"
cd "$3" && "${compose[@]}" -p "$4" up -d --no-build --no-deps --force-recreate "$1" >/dev/null 2>&1
t "compose up"
ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$5")
for i in $(seq 100); do
  curl -sf "http://$ip:8080/health" >/dev/null && { t "curl health"; exit 0; }
  sleep 0.1
done
exit 1
"""

# Figure 4's fixed cost of a tunnel: move-image.sh's own ssh options and readiness check (one GET
# /v2/), nothing pulled; prints the bytes the SSH client received (its VERBOSE "Transferred:" line).
IDLE_TUNNEL = r"""
set -euo pipefail
log=$(mktemp) port=$((20000 + RANDOM % 20000)) code=""
ssh -o BatchMode=yes -o ConnectTimeout=10 -o ServerAliveInterval=5 -o ServerAliveCountMax=3 \
  -o LogLevel=VERBOSE -p "$2" -o ExitOnForwardFailure=yes -E "$log" -N -L "127.0.0.1:$port:$1" \
  -- "$3" </dev/null &
pid=$!
for i in $(seq 150); do
  code=$(curl -s -o /dev/null --max-time 5 -w '%{http_code}' "http://127.0.0.1:$port/v2/" 2>/dev/null || true)
  [[ $code == 200 ]] && break
  sleep 0.1
done
kill -TERM "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
sed -n 's/.*Transferred: sent [0-9]*, received \([0-9]*\) bytes.*/\1/p' "$log" | tail -n 1
rm -f "$log"
[[ $code == 200 ]]
"""

# ProxyCommand for the CLI: one option for both hosts (the live view probes both), so it picks the
# host's network namespace by name, then the rig's own relay (tests/rig/relay.py) as ssh_config does.
PROXY = """#!/bin/sh
case "$1" in
{cases}  *) echo "bench proxy: unknown host $1" >&2; exit 1 ;;
esac
exec nsenter -t "$pid" -n -- {python} -I -S {relay} 127.0.0.1 "$2"
"""


class BenchError(RuntimeError):
    """A measurement could not be taken; the message says which step and why."""


def describe(error: BaseException) -> str:
    """``Type: message (at file:line)``: where it was raised (the tree may change under a run)."""
    where = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
    at = f" (at {Path(where[0].filename).name}:{where[0].lineno})" if where else ""
    return f"{type(error).__name__}: {str(error)[:1500]}{at}"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        return cls(statistics.median(values), min(values), max(values), len(values))

    def json(self, digits: int = 3) -> dict[str, Any]:
        return {
            "median": round(self.median, digits),
            "min": round(self.low, digits),
            "max": round(self.high, digits),
            "n": self.n,
        }

    def text(self, unit: str = " s", digits: int = 2) -> str:
        if self.n == 0:
            return "n/a"
        if self.n == 1 or self.low == self.high:
            return f"{self.median:.{digits}f}{unit}"
        return f"{self.median:.{digits}f}{unit} [{self.low:.{digits}f}-{self.high:.{digits}f}]"


def ratio_text(s: Spread) -> str:
    return s.text(unit="x", digits=2)


class Samples:
    """Named series of values, kept in first-seen order (one value per round and name)."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)

    def spread(self, name: str) -> Spread:
        return Spread.of(self.values.get(name, []))

    def json(self) -> dict[str, Any]:
        return {
            name: {**Spread.of(v).json(), "values": [round(x, 4) for x in v]}
            for name, v in self.values.items()
        }


# --------------------------------------------------------------------------- measuring tools


def host_cpu_seconds(h: Host) -> float:
    """CPU seconds one rig host used so far (its cgroup: cpuacct.usage, else cpu.stat)."""
    dirs = read_cgroup_list(h.hostdir)
    acct = [d / "cpuacct.usage" for d in dirs if (d / "cpuacct.usage").exists()]
    if acct:
        return int(acct[0].read_text()) / 1e9
    for d in dirs:
        stat = d / "cpu.stat"
        if stat.exists():
            usage = dict(line.split() for line in stat.read_text().splitlines() if line.count(" ") == 1)
            return int(usage.get("usage_usec", 0)) / 1e6
    return 0.0


def rig_cpu_seconds(rig: Rig) -> float:
    """CPU seconds the rig hosts used so far (all of them)."""
    return sum(host_cpu_seconds(h) for h in rig.hosts.values())


def own_cpu_seconds() -> float:
    """CPU seconds of this process and its reaped children (ssh clients, relays, the CLI runs)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def machine_busy_seconds() -> float:
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


QUIET = {"max_wait": 0.0, "waited": 0.0}  # --quiet-wait: the most seconds to wait before each round


def machine_busy_now(seconds: float = 1.0) -> float:
    busy0 = machine_busy_seconds()
    time.sleep(seconds)
    return (machine_busy_seconds() - busy0) / seconds


T = TypeVar("T")


def alternating(i: int, items: Sequence[T]) -> Sequence[T]:
    """``items`` in round ``i``'s order: as given in an even round, reversed in an odd one (so that
    no measurement of a pair always runs first)."""
    return items if i % 2 == 0 else items[::-1]


def before_round() -> None:
    """With --quiet-wait N: wait (at most N s) until the machine is idle (< 0.25 busy CPUs over a
    second), so a round does not start while other work (another test run) loads the 2 CPUs."""
    deadline = time.monotonic() + QUIET["max_wait"]
    start = time.monotonic()
    while QUIET["max_wait"] > 0 and machine_busy_now() >= 0.25 and time.monotonic() < deadline:
        pass
    QUIET["waited"] += time.monotonic() - start


@dataclass
class Cpu:
    """Over one block: ``work`` CPU seconds of the measured work (the rig hosts' cgroups + this
    benchmark's processes), ``busy`` average busy CPUs of the whole machine (/proc/stat; it also
    counts whatever else runs here), ``wall`` seconds; ``parts``: ``work`` by machine (each rig host,
    and this benchmark's own processes: the operator's side, ssh clients and the rig's relays)."""

    work: float = 0.0
    busy: float = 0.0
    wall: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)

    def record(self, s: Samples, prefix: str) -> None:
        s.add(f"{prefix}CPU seconds (rig hosts + benchmark)", self.work)
        for name, seconds in self.parts.items():
            s.add(f"{prefix}CPU seconds: {name}", seconds)
        s.add(f"{prefix}busy CPUs (whole machine)", self.busy)
        s.add(
            f"{prefix}busy CPUs (others: machine - measured work)",
            max(0.0, self.busy - self.work / self.wall),
        )


BENCH_PART = "benchmark (operator side: ssh clients, relays, CLI)"


def cpu_parts(rig: Rig) -> dict[str, float]:
    return {**{h.name: host_cpu_seconds(h) for h in rig.hosts.values()}, BENCH_PART: own_cpu_seconds()}


@contextmanager
def cpu_meter(rig: Rig) -> Iterator[Cpu]:
    cpu = Cpu()
    parts0, busy0, t0 = cpu_parts(rig), machine_busy_seconds(), time.monotonic()
    try:
        yield cpu
    finally:
        cpu.wall = max(time.monotonic() - t0, 1e-6)
        cpu.parts = {name: seconds - parts0[name] for name, seconds in cpu_parts(rig).items()}
        cpu.work = sum(cpu.parts.values())
        cpu.busy = (machine_busy_seconds() - busy0) / cpu.wall


def phase_label(message: str) -> str:
    """A log line's message as a phase name: its first words (at most 6), up to the first path,
    image ref, option or value (a leading command path is cut to its basename)."""
    words: list[str] = []
    for i, raw in enumerate(message.split()):
        word = raw.rsplit("/", 1)[1] if i == 0 and "/" in raw else raw
        if i > 0 and (any(c in word for c in "/:@=") or word == "->" or word.startswith("-")):
            if word.endswith(":") and not any(c in word[:-1] for c in "/:@="):
                words.append(word)
            break
        words.append(word)
        if len(words) == 6:
            break
    return " ".join(words).rstrip(";,:") or "(log line)"


def logged_phases(stderr: str, total: float | None) -> list[tuple[str, float]]:
    """The intervals between a script's own timing log lines (``<script> [Xs]: message``): each
    named by the line that opens it, the first ``(start)``; the last runs to ``total`` (the
    verdict's ``seconds``) when known. Repeated names within one run are summed."""
    marks = [(float(m["t"]), phase_label(m["msg"])) for m in map(LOG_RE.match, stderr.splitlines()) if m]
    if not marks:
        return []
    phases: dict[str, float] = {}
    prev_t, prev_label = 0.0, "(start)"
    for t, label in marks:
        phases[prev_label] = phases.get(prev_label, 0.0) + max(0.0, t - prev_t)
        prev_t, prev_label = t, label
    if total is not None and total >= prev_t:
        phases[prev_label] = phases.get(prev_label, 0.0) + total - prev_t
    return list(phases.items())


def hand_phases(stderr: str) -> tuple[list[tuple[str, float]], float]:
    """(phases, seconds on the host) from the hand line's ``hand <name> <epoch>`` lines."""
    marks = []
    for line in stderr.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "hand":
            marks.append((" ".join(parts[1:-1]), float(parts[-1])))
    phases = [(name, t - marks[i][1]) for i, (name, t) in enumerate(marks[1:])]
    return phases, (marks[-1][1] - marks[0][1]) if len(marks) > 1 else 0.0


def timed_run(
    argv: Sequence[str], *, timeout: float = 120, env: dict[str, str] | None = None
) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.monotonic()
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    return time.monotonic() - start, proc


def ssh_true(h: Host) -> float:
    start = time.monotonic()
    proc = h.ssh("true", timeout=60)
    if proc.returncode != 0:
        raise BenchError(f"ssh {h.name} true: exit {proc.returncode}: {proc.stderr[-500:]}")
    return time.monotonic() - start


def on_host_seconds(h: Host, script: str, argv: Sequence[str]) -> tuple[float, float]:
    """A step script run by ``bash -s`` inside the host (no ssh): (wall seconds timed inside the
    host, CPU seconds of it and every process it waited for: bash's ``times``)."""
    proc = h.sh(
        't0=$EPOCHREALTIME; rc=0; bash -s -- "$@" >/dev/null 2>&1 || rc=$?; '
        'echo "$t0 $EPOCHREALTIME $rc"; times',
        *argv,
        input=script_text(script),
        check=True,
        timeout=120,
    )
    lines = proc.stdout.splitlines()
    t0, t1, rc = lines[0].split()
    if rc != "0":
        raise BenchError(f"{script} on {h.name} (no ssh) exited {rc}")
    cpu = 0.0
    for word in lines[-1].split():  # the children's user and system time: "0m0.052s 0m0.031s"
        minutes, _, secs = word.rstrip("s").partition("m")
        cpu += 60 * float(minutes) + float(secs)
    return float(t1) - float(t0), cpu


# --------------------------------------------------------------------------- the hosts' login environment

# The rig's hosts are overlays of this machine's root file system, so they start with this machine's
# /root/.bashrc, which runs `pyenv init` for every SSH command (bash reads ~/.bashrc when sshd starts
# it) and puts pyenv's shims first in PATH (every `python3` of a script then runs through pyenv's
# bash scripts). A stock Ubuntu D601 or master does neither: its ~/.bashrc returns at once for a
# non-interactive shell and python3 is /usr/bin/python3. ``--login-env production`` (the default)
# gives each rig host that stock behaviour (in the host's own overlay: this machine's file is not
# touched); ``machine`` keeps this machine's.
STOCK_BASHRC = (
    "# rig host as a stock Ubuntu host (benchmarks/ratios.py): nothing for a non-interactive shell\n"
    "case $- in *i*) ;; *) return ;; esac\n"
)
LOGIN_ENVS = ("production", "machine")


def login_bashrc(h: Host) -> str:
    """The ~/.bashrc sshd's bash reads for the login user (the operator ``ubuntu`` on the rig)."""
    return "/root/.bashrc" if h.user == "root" else f"/home/{h.user}/.bashrc"


class LoginEnv:
    """Switches the login user's ~/.bashrc on the rig hosts between the stock one and this
    machine's /root/.bashrc (the overlays start with the latter for root; the operator's home
    starts from /etc/skel)."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.machine = {
            name: h.sh("cat /root/.bashrc 2>/dev/null || true", timeout=30).stdout
            for name, h in rig.hosts.items()
        }
        self.current = "machine"

    def use(self, which: str, hosts: Sequence[str] | None = None) -> None:
        for name in hosts or list(self.rig.hosts):
            h = self.rig.hosts[name]
            text = STOCK_BASHRC if which == "production" else self.machine[name]
            h.write_file(login_bashrc(h), text, owner=None if h.user == "root" else h.user)
        self.current = which


# --------------------------------------------------------------------------- running plans


@dataclass
class StepRun:
    id: str
    host: str
    start: float  # offset from the run's reference time
    seconds: float
    doc: dict[str, Any]
    phases: list[tuple[str, float]]


@dataclass
class PlanRun:
    service: str
    seconds: float
    steps: list[StepRun] = field(default_factory=list)

    @property
    def connections(self) -> int:
        return len(self.steps)


def host_of(rig: Rig, step: Step) -> Host:
    return rig.d601 if step.host == "d601" else rig.master


def run_plan(rig: Rig, plan: ServicePlan, t_ref: float | None = None) -> PlanRun:
    """Every step of the plan, in order, over real SSH (``Host.run_step``); the manifest check's
    digest and image ID fill the later steps' placeholders, as the Pulumi program does."""
    start = time.monotonic()
    ref = start if t_ref is None else t_ref
    facts = {"digest": "", "imageId": ""}
    run = PlanRun(plan.service, 0.0)
    for step in plan.steps:
        if step.call is None:
            continue
        t0 = time.monotonic()
        result = host_of(rig, step).run_step(
            step, digest=facts["digest"], image_id=facts["imageId"], timeout=STEP_TIMEOUT
        )
        seconds = time.monotonic() - t0
        doc = result.json or {}
        if result.returncode != 0 or not doc.get("ok"):
            raise BenchError(
                f"{plan.service} step {step.id} on {step.host} exited {result.returncode}:"
                f" {doc.get('error')}: {str(doc.get('detail'))[:600]} | stderr: {result.stderr[-900:]}"
            )
        if not facts["digest"] and isinstance(doc.get("digest"), str) and isinstance(doc.get("imageId"), str):
            facts = {"digest": doc["digest"], "imageId": doc["imageId"]}
        total = doc.get("seconds")
        phases = logged_phases(result.stderr, float(total) if isinstance(total, int | float) else None)
        run.steps.append(StepRun(step.id, step.host, t0 - ref, seconds, doc, phases))
    run.seconds = time.monotonic() - start
    return run


def stack_raw(rig: Rig, commits: dict[str, str], mode: str = "tunnel") -> dict[str, Any]:
    raw = rig.stack_config("prod", commits)
    raw["compose"] = {"master": dict(PROJECT), "d601": dict(PROJECT)}
    raw["transfer"]["mode"] = mode
    raw["registry"]["manage"] = False
    return raw


def stack_cfg(rig: Rig, commits: dict[str, str], mode: str = "tunnel") -> StackConfig:
    return parse_stack_config(stack_raw(rig, commits, mode), "prod")


def compose_target(service: str) -> ComposeTarget:
    entry = catalog.get(service)
    target = entry.target("prod") if entry else None
    if not isinstance(target, ComposeTarget):
        raise BenchError(f"{service} is not a prod Compose service")
    return target


def write_compose_projects(rig: Rig) -> None:
    """One Compose project per host (BASE) holding the services the figures deploy there."""
    for where in ("master", "d601"):
        h: Host = getattr(rig, where)
        services = [s for s, w in STACK.items() if w == where]
        targets = [compose_target(s) for s in services]
        h.remove_containers(*(t.container_name for t in targets))
        compose_project(h, targets[0].compose_service, targets[0].retag_name, targets[0].container_name)
        lines = ['version: "2.4"', "services:"]
        for t in targets:
            lines += [
                f"  {t.compose_service}:",
                f"    image: {t.retag_name}",
                f"    container_name: {t.container_name}",
                f"    env_file: {PROJECT['envFile']}",
                "    init: true",
            ]
        h.write_file(f"{BASE}/docker-compose.yml", "\n".join(lines) + "\n", owner=h.user)


def publish(rig: Rig, service: str, label: str, pad: int = 0) -> str:
    commit = sha(f"ratios-{service}-{label}")
    rig.publish_test_image(service, commit, pad_bytes=pad)
    return commit


# --------------------------------------------------------------------------- figure 1: deploy


def figure_deploy(rig: Rig, rounds: int) -> dict[str, Any]:
    log(f"deploy: publishing {2 * rounds + 1} commits of {DIRECT}")
    warm = publish(rig, DIRECT, "warm")
    ours = [publish(rig, DIRECT, f"ours-{i}") for i in range(rounds)]
    hand = [publish(rig, DIRECT, f"hand-{i}") for i in range(rounds)]
    container = compose_target(DIRECT).container_name
    run_plan(rig, plan_service(stack_cfg(rig, {DIRECT: warm}), DIRECT))  # containers, network, layers
    s = Samples()

    def project(commit: str) -> None:
        plan = plan_service(stack_cfg(rig, {DIRECT: commit}), DIRECT)
        with cpu_meter(rig) as cpu:
            run = run_plan(rig, plan)
        s.add("project: total", run.seconds)
        s.add("project: ssh connections", run.connections)
        for st in run.steps:
            s.add(f"project: step {st.id} ({st.host}, wall over ssh)", st.seconds)
            if isinstance(st.doc.get("seconds"), int | float):
                s.add(f"project: step {st.id}: the script's own seconds", float(st.doc["seconds"]))
        for st in run.steps:
            for name, secs in st.phases:
                s.add(f"project: {st.id} phase {name}", secs)
        cpu.record(s, "project: ")

    def typed(commit: str) -> None:
        argv = [DIRECT, commit, BASE, PROJECT["projectName"], container, HAND_COMPOSE[0]]
        with cpu_meter(rig) as cpu:
            start = time.monotonic()
            proc = rig.d601.ssh("bash -s -- " + shlex.join(argv), input=HAND, timeout=STEP_TIMEOUT)
            wall = time.monotonic() - start
        if proc.returncode != 0:
            raise BenchError(f"hand-typed line exited {proc.returncode}: {proc.stderr[-800:]}")
        phases, on_host = hand_phases(proc.stderr)
        s.add("hand: total", wall)
        s.add("hand: ssh + bash start (total - on host)", wall - on_host)
        for name, secs in phases:
            s.add(f"hand: {name}", secs)
        cpu.record(s, "hand: ")

    for i in range(rounds):
        before_round()
        s.add("ssh d601 true", ssh_true(rig.d601))
        for measure in alternating(i, (partial(project, ours[i]), partial(typed, hand[i]))):
            measure()
        s.add("ratio", s.values["project: total"][-1] / s.values["hand: total"][-1])
        log(
            f"deploy round {i + 1}/{rounds}: project {s.values['project: total'][-1]:.2f} s, "
            f"hand {s.values['hand: total'][-1]:.2f} s"
        )
    return {"samples": s}


# --------------------------------------------------------------------------- figure 2: status / health


def python_env(cache: Path | None) -> dict[str, str]:
    """The environment of a Python run of the CLI. With ``cache``: as an operator's ``./run status``
    runs, Python writing and reusing its bytecode cache (``./run`` sets nothing against it), the
    cache kept out of the tree (``PYTHONPYCACHEPREFIX``). Without: as inherited here (this build
    machine sets ``PYTHONDONTWRITEBYTECODE=1``: every module is compiled again on every run)."""
    env = dict(os.environ)
    if cache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


def no_cache_env(rig: Rig) -> dict[str, str]:
    """No bytecode cache at all: nothing written, nothing read (an empty prefix directory)."""
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(rig.dir / "no-pycache")}


@dataclass
class CliSetup:
    project_dir: Path
    key: Path
    options: list[str]
    cfg: StackConfig
    env: dict[str, str]
    bytecode_cache: bool

    def argv(self, *verb: str) -> list[str]:
        argv = [
            PYTHON,
            "-m",
            "artifact_cd",
            "--project-dir",
            str(self.project_dir),
            *verb,
            "--stack",
            "prod",
            "--ssh-key",
            str(self.key),
            "--timeout",
            "60",
        ]
        for option in self.options:
            argv += ["--ssh-option", option]
        return argv


def cli_setup(rig: Rig, services: dict[str, str], bytecode_cache: bool = True) -> CliSetup:
    workdir = rig.dir / "bench-cli"
    (workdir / "project").mkdir(parents=True, exist_ok=True)
    raw = rig.stack_config("prod", services)
    raw["compose"] = {"master": dict(PROJECT), "d601": dict(PROJECT)}
    doc = {"config": {f"{PULUMI_PROJECT}:{k}": v for k, v in raw.items()}}
    (workdir / "project" / "Pulumi.prod.yaml").write_text(yaml.safe_dump(doc))
    cases = "".join(f"  {h.address}) pid={h.pid} ;;\n" for h in (rig.d601, rig.master))
    proxy = workdir / "proxy.sh"
    proxy.write_text(
        PROXY.format(
            cases=cases, python=shlex.quote(PYTHON), relay=shlex.quote(str(ROOT / "tests/rig/relay.py"))
        )
    )
    proxy.chmod(0o755)
    options = [
        f"ProxyCommand={proxy} %h %p",
        f"UserKnownHostsFile={rig.dir / 'known_hosts'}",
        "GlobalKnownHostsFile=/dev/null",
        "StrictHostKeyChecking=yes",
    ]
    env = python_env(rig.dir / "pycache" if bytecode_cache else None)
    return CliSetup(
        workdir / "project",
        rig.machine_key_file,
        options,
        parse_stack_config(raw, "prod"),
        env,
        bytecode_cache,
    )


def importtime(code: str, env: dict[str, str]) -> list[tuple[str, float]]:
    """(module, self seconds) of every module ``python -X importtime -c CODE`` imports."""
    proc = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env=env,
    )
    found = []
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        head = parts[0].split(":")
        if len(parts) == 3 and head[0] == "import time" and head[1].strip().isdigit():
            found.append((parts[2].strip(), int(head[1]) / 1e6))
    return found


def import_breakdown(env: dict[str, str]) -> list[tuple[str, float]]:
    """``-X importtime`` self times of what ``import artifact_cd.cli, artifact_cd.remote`` adds to
    the interpreter's own start-up (``-c pass``), summed by top-level package (an exact partition
    of that import time), seconds, heaviest first."""
    startup = {name for name, _ in importtime("pass", env)}
    by_root: dict[str, float] = {}
    for name, secs in importtime("import artifact_cd.cli, artifact_cd.remote", env):
        if name not in startup:
            root = name.split(".")[0]
            by_root[root] = by_root.get(root, 0.0) + secs
    return sorted(by_root.items(), key=lambda kv: -kv[1])


def cli_answer(s: Samples, name: str, setup: CliSetup, *verb: str) -> dict[str, Any]:
    wall, proc = timed_run(setup.argv(*verb), env=setup.env)
    try:
        doc: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        raise BenchError(
            f"{' '.join(verb)}: no JSON (exit {proc.returncode}): {proc.stderr[-800:]}"
        ) from None
    s.add(f"{name}: total", wall)
    query = doc.get("query")
    if isinstance(query, dict) and isinstance(query.get("seconds"), int | float):
        s.add(f"{name}: round trip", float(query["seconds"]))
    elif isinstance(doc.get("seconds"), int | float):  # status --services: its probes, hosts concurrently
        s.add(f"{name}: round trip", float(doc["seconds"]))
    return doc


def python_samples(s: Samples, rig: Rig, setup: CliSetup) -> None:
    """Python's own start-up: nothing, the CLI's imports (also without any bytecode cache), --help."""
    s.add("python: -c pass", timed_run([PYTHON, "-c", "pass"], env=setup.env)[0])
    imports_code = [PYTHON, "-c", "import artifact_cd.cli, artifact_cd.remote"]
    s.add("python: import artifact_cd.cli+remote", timed_run(imports_code, env=setup.env)[0])
    if setup.bytecode_cache:
        s.add(
            "python: import artifact_cd.cli+remote, no bytecode cache",
            timed_run(imports_code, env=no_cache_env(rig))[0],
        )
    s.add(
        "python: -m artifact_cd --help",
        timed_run([PYTHON, "-m", "artifact_cd", "--help"], env=setup.env)[0],
    )


MACHINE_LOGIN = "this machine's .bashrc on D601: "


def machine_login_pair(s: Samples, setup: CliSetup, true_argv: Sequence[str], login: LoginEnv) -> None:
    """``ssh d601 true`` and ``status`` once more with this machine's /root/.bashrc on D601."""
    login.use("machine", ["d601"])
    try:
        other, proc = timed_run(true_argv, env=setup.env)
        if proc.returncode == 0:
            s.add(f"{MACHINE_LOGIN}ssh d601 true", other)
            cli_answer(s, f"{MACHINE_LOGIN}status", setup, "status")
            s.add(
                "ratio status, " + MACHINE_LOGIN.rstrip(": "),
                s.values[f"{MACHINE_LOGIN}status: total"][-1] / other,
            )
    finally:
        login.use("production", ["d601"])


def figure_query(
    rig: Rig,
    rounds: int,
    services: dict[str, str],
    bytecode_cache: bool = True,
    login: LoginEnv | None = None,
) -> dict[str, Any]:
    setup = cli_setup(rig, services, bytecode_cache)
    settings = SshSettings(key_file=str(setup.key), options=tuple(setup.options), timeout=60)
    true_argv = ssh_argv(setup.cfg.hosts.d601, "true", settings)
    probe = acceptance_step(setup.cfg)
    if probe.call is None or probe.script is None:
        raise BenchError("the registry acceptance step runs no script")
    probe_script, probe_argv = probe.script, list(probe.call.to_argv())
    live: dict[str, Any] = {}
    live_error = ""
    try:
        from artifact_cd.liveprobe import probe_requests  # the live view (issue 10), when it exists
        from artifact_cd.plan import plan_services

        live = dict(probe_requests(setup.cfg, plan_services(setup.cfg)))
    except Exception as error:  # reported, not fatal: the live view is optional here
        live_error = describe(error)
    s = Samples()
    decisions: dict[str, str] = {}
    timed_run(setup.argv("health"), env=setup.env)  # warm the page cache, sshd and the bytecode cache
    imports = import_breakdown(setup.env)
    for i in range(rounds):
        before_round()
        with cpu_meter(rig) as cpu:
            wall, proc = timed_run(true_argv, env=setup.env)
            if proc.returncode != 0:
                raise BenchError(
                    f"ssh d601 true (CLI options) exited {proc.returncode}: {proc.stderr[-500:]}"
                )
            s.add("ssh d601 true (the CLI's argv)", wall)
            python_samples(s, rig, setup)
            wall_on_host, cpu_on_host = on_host_seconds(rig.d601, probe_script, probe_argv)
            s.add("probe on host: registry-probe.sh (d601, no ssh)", wall_on_host)
            s.add("probe on host: registry-probe.sh (d601, no ssh): CPU seconds", cpu_on_host)
            for verb in ("status", "health"):
                doc = cli_answer(s, verb, setup, verb)
                decisions[verb] = str(doc.get("decision"))
                s.add(f"ratio {verb}", s.values[f"{verb}: total"][-1] / wall)
            if live and not live_error:
                try:
                    for where, args in live.items():
                        h: Host = getattr(rig, where)
                        wall_on_host, cpu_on_host = on_host_seconds(h, args.script, list(args.to_argv()))
                        s.add(f"probe on host: live-probe.sh ({where}, no ssh)", wall_on_host)
                        s.add(f"probe on host: live-probe.sh ({where}, no ssh): CPU seconds", cpu_on_host)
                    doc = cli_answer(s, "status --services", setup, "status", "--services")
                    decisions["status --services"] = f"ok={doc.get('ok')}"
                    s.add("ratio status --services", s.values["status --services: total"][-1] / wall)
                except (BenchError, subprocess.SubprocessError, OSError, AttributeError) as error:
                    live_error = describe(error)
        cpu.record(s, "round: ")
        if login is not None and login.current == "production":
            machine_login_pair(s, setup, true_argv, login)
        log(
            f"query round {i + 1}/{rounds}: ssh true {wall:.2f} s, "
            f"status {s.values['status: total'][-1]:.2f} s, health {s.values['health: total'][-1]:.2f} s"
        )
    return {
        "samples": s,
        "imports": imports,
        "bytecodeCache": bytecode_cache,
        "decisions": decisions,
        "liveViewError": live_error,
        "probedHosts": sorted(live),
    }


# --------------------------------------------------------------------------- figure 3: stack


def figure_stack(rig: Rig, rounds: int) -> dict[str, Any]:
    log(f"stack: publishing {4 + 6 * rounds} commits")
    current = {svc: publish(rig, svc, "warm") for svc in STACK}
    stack_commits = [{svc: publish(rig, svc, f"stack-{i}") for svc in STACK} for i in range(rounds)]
    alone_commits = [{w: publish(rig, svc, f"alone-{i}") for w, svc in ALONE.items()} for i in range(rounds)]
    for svc, commit in current.items():  # every container and the master's base layers exist
        run_plan(rig, plan_service(stack_cfg(rig, {svc: commit}), svc))
    s = Samples()
    timelines: list[dict[str, Any]] = []
    live = dict(current)  # the commit each service runs now (the live view's config, figure 2)

    def alone(commits: dict[str, str]) -> None:
        for where, svc in ALONE.items():
            plan = plan_service(stack_cfg(rig, {svc: commits[where]}), svc)
            with cpu_meter(rig) as cpu:
                run = run_plan(rig, plan)
            live[svc] = commits[where]
            s.add(f"alone {svc} ({where}): total", run.seconds)
            for st in run.steps:
                s.add(f"alone {svc}: step {st.id}", st.seconds)
                for name, secs in st.phases:
                    s.add(f"alone {svc}: {st.id} phase {name}", secs)
            cpu.record(s, f"alone {svc}: ")

    def stack(commits: dict[str, str]) -> None:
        cfg = stack_cfg(rig, commits)
        plans = [plan_service(cfg, svc) for svc in STACK]
        t_ref = time.monotonic()
        with cpu_meter(rig) as cpu, ThreadPoolExecutor(max_workers=len(plans)) as pool:
            runs = list(pool.map(lambda p: run_plan(rig, p, t_ref), plans))
        wall = time.monotonic() - t_ref
        live.update(commits)
        s.add("stack of 4: total", wall)
        cpu.record(s, "stack of 4: ")
        timeline = {}
        for run in runs:
            s.add(f"stack {run.service}: total", run.seconds)
            timeline[run.service] = [
                {"step": st.id, "start": round(st.start, 3), "seconds": round(st.seconds, 3)}
                for st in run.steps
            ]
            for st in run.steps:
                s.add(f"stack {run.service}: step {st.id}", st.seconds)
                if isinstance(st.doc.get("lockWaitSeconds"), int | float):
                    s.add(f"stack {run.service}: {st.id} lockWaitSeconds", float(st.doc["lockWaitSeconds"]))
                for name, secs in st.phases:
                    s.add(f"stack {run.service}: {st.id} phase {name}", secs)
        timelines.append(timeline)

    for i in range(rounds):
        before_round()
        for measure in alternating(i, (partial(alone, alone_commits[i]), partial(stack, stack_commits[i]))):
            measure()
        slowest = max(s.values[f"alone {svc} ({w}): total"][-1] for w, svc in ALONE.items())
        s.add("slowest alone", slowest)
        s.add("ratio", s.values["stack of 4: total"][-1] / slowest)
        cpus = os.cpu_count() or 1
        parts = {
            n[len("stack of 4: CPU seconds: ") :]: v[-1]
            for n, v in s.values.items()
            if n.startswith("stack of 4: CPU seconds: ")
        }
        s.add(
            f"floor: all on this machine's {cpus} CPUs (CPU / {cpus} / slowest alone)",
            sum(parts.values()) / cpus / slowest,
        )
        s.add(
            f"floor: each machine its own {cpus} CPUs (busiest machine's CPU / {cpus} / slowest alone)",
            max(parts.values()) / cpus / slowest,
        )
        for w, svc in ALONE.items():
            s.add(
                f"ratio vs {svc} alone",
                s.values["stack of 4: total"][-1] / s.values[f"alone {svc} ({w}): total"][-1],
            )
        log(
            f"stack round {i + 1}/{rounds}: stack {s.values['stack of 4: total'][-1]:.2f} s, "
            f"slowest alone {slowest:.2f} s"
        )
    return {"samples": s, "timelines": timelines, "commits": live}


# --------------------------------------------------------------------------- figure 4: bytes


def repository(service: str) -> str:
    entry = catalog.get(service)
    if entry is None:
        raise BenchError(f"{service} is not in the catalog")
    return entry.repository


def layers_of(rig: Rig, service: str, commit: str) -> tuple[dict[str, int], int, int]:
    """({layer digest: size}, config size, manifest bytes) from the registry (curl in D601's netns)."""
    raw = fetch_manifest(rig.d601, rig.registry, repository(service), commit)
    doc = json.loads(raw)
    if "layers" not in doc:
        raise BenchError(f"{service}:{commit} is not a single-platform image manifest")
    return (
        {str(layer["digest"]): int(layer["size"]) for layer in doc["layers"]},
        int(doc["config"]["size"]),
        len(raw),
    )


def figure_bytes(rig: Rig, rounds: int, pad: int) -> dict[str, Any]:
    log(f"bytes: publishing {rounds + 1} commits of {MOVED} sharing a {pad >> 20} MiB base layer")
    a = publish(rig, MOVED, "bytes-a", pad)
    commits = [publish(rig, MOVED, f"bytes-b{i}", pad) for i in range(rounds)]
    s = Samples()
    plan_a = plan_service(stack_cfg(rig, {MOVED: a}), MOVED)
    check = rig.d601.run_step(plan_a.steps[0], timeout=STEP_TIMEOUT)
    if check.json is None or check.returncode != 0:
        raise BenchError(f"manifest-check of A: {check.stdout[-500:]} {check.stderr[-500:]}")
    transfer = plan_a.step_by_id["transfer"]
    start = time.monotonic()
    cold = rig.master.run_step(
        transfer, digest=check.json["digest"], image_id=check.json["imageId"], timeout=STEP_TIMEOUT
    )
    cold_s = time.monotonic() - start
    if cold.json is None or not cold.json.get("ok"):
        raise BenchError(f"cold transfer of A: {cold.stdout[-500:]} {cold.stderr[-500:]}")
    layers_a, _, _ = layers_of(rig, MOVED, a)
    image_bytes = sum(layers_a.values())
    for i, b in enumerate(commits):
        before_round()
        with cpu_meter(rig) as cpu:
            layers_b, config_b, manifest_b = layers_of(rig, MOVED, b)
            missing = sum(size for digest, size in layers_b.items() if digest not in layers_a)
            s.add("missing layers (bytes)", missing)
            s.add("config + manifest of B (bytes)", config_b + manifest_b)
            s.add("missing layers + config + manifest (bytes)", missing + config_b + manifest_b)
            for mode in alternating(i, ("tunnel", "stream")):
                plan = plan_service(stack_cfg(rig, {MOVED: b}, mode), MOVED)
                facts = rig.d601.run_step(plan.steps[0], timeout=STEP_TIMEOUT).json or {}
                drop_image(rig.master, f"{rig.registry}/{repository(MOVED)}:{b}")
                t0 = time.monotonic()
                result = rig.master.run_step(
                    plan.step_by_id["transfer"],
                    digest=str(facts.get("digest", "")),
                    image_id=str(facts.get("imageId", "")),
                    timeout=STEP_TIMEOUT,
                )
                seconds = time.monotonic() - t0
                doc = result.json or {}
                if result.returncode != 0 or not doc.get("ok") or doc.get("alreadyPresent"):
                    raise BenchError(
                        f"{mode} transfer of B{i}: {result.stdout[-500:]} {result.stderr[-500:]}"
                    )
                s.add(f"{mode} (bytes)", float(doc["bytesMoved"]))
                s.add(f"{mode} (seconds)", seconds)
        cpu.record(s, "round: ")
        # as move-image's hop runs: the master's login user, with its own key for D601
        idle = rig.master.sh(
            'exec runuser -u "$1" -- bash -c "$2" bash "${@:3}"',
            rig.master.user, IDLE_TUNNEL, rig.registry, "22", rig.d601_from_master, timeout=60, check=False,
        )  # fmt: skip
        if idle.returncode == 0 and idle.stdout.strip().isdigit():
            s.add("idle tunnel (bytes)", float(idle.stdout.strip()))
        else:
            log(f"idle tunnel: exit {idle.returncode}: {idle.stdout[-300:]} {idle.stderr[-600:]}")
        tunnel, stream = s.values["tunnel (bytes)"][-1], s.values["stream (bytes)"][-1]
        s.add("ratio tunnel / missing layers", tunnel / missing if missing else float("inf"))
        s.add("ratio tunnel / (missing layers + 64 KiB)", tunnel / (missing + ALLOWANCE))
        s.add("ratio tunnel / (1.05 x missing layers + 64 KiB)", tunnel / (1.05 * missing + ALLOWANCE))
        s.add("ratio stream / tunnel", stream / tunnel if tunnel else float("inf"))
        log(
            f"bytes round {i + 1}/{rounds}: tunnel {tunnel:,.0f} B, missing {missing:,} B, "
            f"stream {stream:,.0f} B"
        )
    return {
        "samples": s,
        "cold": {
            "bytes": cold.json.get("bytesMoved"),
            "seconds": round(cold_s, 3),
            "imageLayerBytes": image_bytes,
        },
    }


# --------------------------------------------------------------------------- report


def value_text(s: Samples, name: str) -> str:
    if name.startswith(("floor:", "ratio")):
        return ratio_text(s.spread(name))
    if "busy CPUs" in name:
        return s.spread(name).text(unit="")
    if "CPU seconds" in name:
        return s.spread(name).text(unit=" CPU-s")
    if "connections" in name:
        return s.spread(name).text(unit="", digits=0)
    return s.spread(name).text()


def breakdown_lines(s: Samples, prefix: str, indent: str = "    ", skip: Sequence[str] = ()) -> list[str]:
    return [
        f"{indent}{name[len(prefix) :]:<58} {value_text(s, name)}"
        for name in s.values
        if name.startswith(prefix) and name[len(prefix) :] not in skip
    ]


def report_deploy(fig: dict[str, Any], out: list[str]) -> None:
    s: Samples = fig["samples"]
    out.append(
        f"1. verified D601-direct deploy vs hand-typed line:  {ratio_text(s.spread('ratio'))}"
        f"   (issue target <= {TARGETS['deploy']}x)"
    )
    out.append(
        f"   project steps {s.spread('project: total').text()}"
        f"  vs  hand-typed {s.spread('hand: total').text()}"
    )
    out.append(
        f"   one SSH connection (ssh d601 true): {s.spread('ssh d601 true').text()};"
        f" project opens {s.spread('project: ssh connections').median:.0f}, the hand line 1"
    )
    out.append("   project, per step (wall over ssh) and compose-deploy's logged phases:")
    out += breakdown_lines(s, "project: ", skip=("total", "ssh connections"))
    out.append("   hand-typed, phases on the host:")
    out += breakdown_lines(s, "hand: ", skip=("total",))


def report_query(fig: dict[str, Any], out: list[str]) -> None:
    s: Samples = fig["samples"]
    base = "ssh d601 true (the CLI's argv)"
    imports = "python: import artifact_cd.cli+remote"
    out.append(
        f"2. status vs ssh true: {ratio_text(s.spread('ratio status'))};  health vs ssh true: "
        f"{ratio_text(s.spread('ratio health'))}   (issue target <= {TARGETS['query']}x)"
    )
    if "ratio status --services" in s.values:
        ratio = ratio_text(s.spread("ratio status --services"))
        out.append(f"   status --services (the live view, both hosts) vs ssh d601 true: {ratio}")
    if fig.get("liveViewError"):
        out.append(f"   status --services not (fully) measured: {fig['liveViewError'][:300]}")
    alt = MACHINE_LOGIN
    if f"{alt}ssh d601 true" in s.values:
        ratio = ratio_text(s.spread("ratio status, " + alt.rstrip(": ")))
        out.append(
            f"   with this machine's root .bashrc on D601 (pyenv init per SSH command): status vs ssh true"
            f" {ratio} (ssh true {s.spread(alt + 'ssh d601 true').text()},"
            f" status {s.spread(alt + 'status: total').text()})"
        )
    out.append(f"   {base}: {s.spread(base).text()};  answers: {fig['decisions']}")
    out.append(
        "   the CLI ran with Python's bytecode cache, as an operator's ./run has it (--no-bytecode-cache: as"
        " inherited)"
        if fig.get("bytecodeCache")
        else "   the CLI ran as inherited (--no-bytecode-cache): no bytecode cache if PYTHONDONTWRITEBYTECODE"
    )
    med = {name: s.spread(name).median for name in s.values}
    for verb in ("status", "health", "status --services"):
        if f"{verb}: total" not in med:
            continue
        total, trip = med[f"{verb}: total"], med.get(f"{verb}: round trip", float("nan"))
        what = "its probes (hosts concurrently)" if verb.endswith("services") else "its SSH round trip"
        out.append(
            f"   {verb}: {s.spread(f'{verb}: total').text()} = python start-up + imports {med[imports]:.2f}"
            f" + {what} {trip:.2f} + the rest {total - trip - med[imports]:.2f} (medians)"
        )
    probe = "probe on host: registry-probe.sh (d601, no ssh)"
    out.append(
        f"   status/health round trip {med.get('status: round trip', float('nan')):.2f} s vs its parts:"
        f" ssh true {med[base]:.2f} + the probe on D601 without ssh {med[probe]:.2f}"
    )
    out += breakdown_lines(s, "python: ", "     python ")
    out += breakdown_lines(s, "probe on host: ", "     on the host: ")
    heavy = ", ".join(f"{name} {secs:.3f}" for name, secs in fig["imports"][:8])
    out.append(f"     import self time by package (-X importtime, beyond -c pass; s): {heavy}")
    out.append(others_line(s))


def report_stack(fig: dict[str, Any], out: list[str]) -> None:
    s: Samples = fig["samples"]
    out.append(
        f"3. 4 changing Compose services at once vs the slower single service alone: "
        f"{ratio_text(s.spread('ratio'))}   (issue target <= {TARGETS['stack']}x)"
    )
    for w, svc in ALONE.items():
        out.append(f"   vs {svc} alone ({w}): {ratio_text(s.spread(f'ratio vs {svc} alone'))}")
    out.append(
        f"   stack of 4 {s.spread('stack of 4: total').text()};"
        f" slowest alone {s.spread('slowest alone').text()}"
    )
    out += breakdown_lines(s, "stack of 4: ", "      ", skip=("total",))
    work = s.spread("stack of 4: CPU seconds (rig hosts + benchmark)").median
    out.append(
        f"      CPU floor on this machine: {work:.2f} CPU-s / {os.cpu_count()} CPUs ="
        f" {work / (os.cpu_count() or 1):.2f} s of wall even with perfect overlap"
    )
    out.append(
        "      the rig runs D601, the master and the operator's side on one machine; in production each has"
        " its own CPUs:"
    )
    out += breakdown_lines(s, "floor: ", "        ratio floor, ")
    for w, svc in ALONE.items():
        out.append(f"   {svc} alone ({w}): {s.spread(f'alone {svc} ({w}): total').text()}")
        out += breakdown_lines(s, f"alone {svc}: ", "      ")
    for svc in STACK:
        out.append(f"   {svc} inside the stack: {s.spread(f'stack {svc}: total').text()}")
        out += breakdown_lines(s, f"stack {svc}: ", "      ", skip=("total",))
    if fig["timelines"]:
        out.append("   timeline of the last stack round (step start + seconds, from the stack's start):")
        for svc, steps in fig["timelines"][-1].items():
            cells = ", ".join(f"{st['step']} {st['start']:.2f}+{st['seconds']:.2f}" for st in steps)
            out.append(f"      {svc:<16} {cells}")


def report_bytes(fig: dict[str, Any], out: list[str]) -> None:
    s: Samples = fig["samples"]

    def b(name: str) -> str:
        return s.spread(name).text(unit=" B", digits=0)

    def r(name: str) -> str:
        return ratio_text(s.spread(f"ratio {name}"))

    out.append(
        f"4. redeploy bytes A -> B: tunnel {b('tunnel (bytes)')}"
        f" vs missing layers {b('missing layers (bytes)')}"
        f" vs stream {b('stream (bytes)')}"
    )
    out.append(
        f"   tunnel / (1.05 x missing layers + 64 KiB) {r('tunnel / (1.05 x missing layers + 64 KiB)')}"
        " (issue target <= 1x);"
        f" tunnel / (missing + 64 KiB) {r('tunnel / (missing layers + 64 KiB)')};"
        f" tunnel / missing {r('tunnel / missing layers')}; stream / tunnel {r('stream / tunnel')}"
    )
    med = {name: s.spread(name).median for name in s.values}
    if "idle tunnel (bytes)" in med:
        out.append(
            f"   where the tunnel bytes go: an idle tunnel (ssh -N -L, one GET /v2/, nothing pulled)"
            f" {b('idle tunnel (bytes)')};"
            f" the pull adds {med['tunnel (bytes)'] - med['idle tunnel (bytes)']:,.0f} B"
            f" for manifest + config + missing layers of {b('missing layers + config + manifest (bytes)')}"
            " (the rest: HTTP and SSH framing)"
        )
    out.append(
        f"   seconds: tunnel {s.spread('tunnel (seconds)').text()},"
        f" stream {s.spread('stream (seconds)').text()};"
        f" cold transfer of A (tunnel): {fig['cold']['bytes']:,} B in {fig['cold']['seconds']:.2f} s"
        f" (its layers {fig['cold']['imageLayerBytes']:,} B)"
    )
    out.append(others_line(s))


REPORTS: dict[str, Callable[[dict[str, Any], list[str]], None]] = {
    "deploy": report_deploy,
    "query": report_query,
    "stack": report_stack,
    "bytes": report_bytes,
}


def to_json(fig: dict[str, Any]) -> dict[str, Any]:
    doc = {k: (v.json() if isinstance(v, Samples) else v) for k, v in fig.items()}
    s = fig.get("samples")
    if isinstance(s, Samples):
        doc["ratios"] = {name: s.spread(name).json() for name in s.values if name.startswith("ratio")}
    return doc


def others_line(s: Samples) -> str:
    name = "round: busy CPUs (others: machine - measured work)"
    return f"   other work on the machine during these rounds: {value_text(s, name)} busy CPUs"


def print_report(results: dict[str, dict[str, Any]], meta: dict[str, Any], stream: TextIO) -> None:
    out = [
        f"issue 14 figures: {meta['rounds']} rounds; median [min-max]; every ratio is per round, "
        f"numerator and denominator measured back to back; {meta['cpus']} CPUs, "
        f"load {meta['loadBefore']} before, {meta['loadAfter']} after; {meta['seconds']:.0f} s in all",
        f"other work on this machine during the run (busy CPUs not used by the rig or this benchmark):"
        f" {meta['othersBusyCpus']:.2f} on average;"
        f" waited {meta['quietWaitSeconds']:.0f} s for quiet (--quiet-wait); code {meta['code']}",
        f"Compose on the hosts: {meta['compose']} (--compose); "
        f"rig hosts' login environment: {meta['loginEnv']} (--login-env; production: a stock ~/.bashrc,"
        " nothing run per SSH command, python3 = /usr/bin/python3; machine: this machine's, pyenv)",
    ]
    for name in FIGURES:
        if name not in results:
            continue
        out.append("")
        fig = results[name]
        if "error" in fig:
            out.append(f"{name}: NOT MEASURED: {fig['error']}")
        else:
            REPORTS[name](fig, out)
    print("\n".join(out), file=stream, flush=True)


def code_state() -> str:
    """The commit the figures belong to, and whether the product code had uncommitted changes."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=False
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "artifact_cd", "components"],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + (
        " + uncommitted changes in artifact_cd/components" if dirty.stdout.strip() else ""
    )


def use_compose(rig: Rig, which: str) -> None:
    """v2: Docker's Compose plugin on both hosts (their own overlay; the rig goes with them)."""
    if which == "v2":
        for h in (rig.master, rig.d601):
            link_compose_v2(h)
        HAND_COMPOSE[0] = "docker compose"


def parse_args() -> tuple[argparse.Namespace, list[str]]:
    """The command line and the figures it asks for (argparse exits on an error)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per figure (default 5)")
    parser.add_argument(
        "--pad-mb", type=int, default=50, help="shared base layer of figure 4 (MiB, default 50)"
    )
    parser.add_argument(
        "--only", default=",".join(FIGURES), help=f"comma-separated subset of {','.join(FIGURES)}"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each round wait up to SECONDS for the machine to be idle (default 0: do not wait)",
    )
    parser.add_argument(
        "--login-env",
        choices=LOGIN_ENVS,
        default="production",
        help="the rig hosts' /root/.bashrc: a stock one (production, default) or this machine's (pyenv init"
        " on every SSH command, python3 through pyenv's shims)",
    )
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="figure 2: run the CLI as inherited (no bytecode cache when PYTHONDONTWRITEBYTECODE is set)"
        " instead of with Python's bytecode cache as an operator's ./run has it",
    )
    parser.add_argument(
        "--compose",
        choices=("v1", "v2"),
        default="v1",
        help="the hosts' Compose: v1 docker-compose (default, the rig tests') or v2 `docker compose`"
        f" (the plugin ./run tests unpacks to {COMPOSE_V2}, linked into both hosts)",
    )
    parser.add_argument(
        "--json", action="store_true", help="one JSON document on stdout (the table to stderr)"
    )
    args = parser.parse_args()
    only = [f.strip() for f in args.only.split(",") if f.strip()]
    if args.compose == "v2" and not COMPOSE_V2.is_file():
        parser.error(f"--compose v2: {COMPOSE_V2} is missing (./run tests installs it)")
    unknown = sorted(set(only) - set(FIGURES))
    if unknown or args.rounds < 1:
        parser.error(f"unknown figure(s) {unknown}" if unknown else "--rounds must be >= 1")
    return args, only


def main() -> int:
    args, only = parse_args()
    QUIET["max_wait"] = max(0.0, args.quiet_wait)
    start = time.monotonic()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results: dict[str, dict[str, Any]] = {}
    rig = Rig.up()
    log(f"rig up in {rig.boot_seconds:.1f} s ({rig.dir})")
    login = LoginEnv(rig)
    login.use(args.login_env)
    use_compose(rig, args.compose)
    work0, busy0, t0 = rig_cpu_seconds(rig) + own_cpu_seconds(), machine_busy_seconds(), time.monotonic()
    others = float("nan")
    try:
        write_compose_projects(rig)
        stack_commits: dict[str, str] = {}
        jobs: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("deploy", lambda: figure_deploy(rig, args.rounds)),
            ("stack", lambda: figure_stack(rig, args.rounds)),
            (
                "query",
                lambda: figure_query(rig, args.rounds, stack_commits, not args.no_bytecode_cache, login),
            ),
            ("bytes", lambda: figure_bytes(rig, args.rounds, args.pad_mb * 1024 * 1024)),
        ]
        for name, job in jobs:
            if name not in only:
                continue
            log(f"figure {name}")
            try:
                results[name] = job()
            except Exception as error:  # one figure's failure is reported; the others still run
                results[name] = {"error": describe(error)}
                log(f"figure {name} failed: {results[name]['error']}")
            if name == "stack" and "commits" in results[name]:
                stack_commits = dict(results[name]["commits"])
        wall = time.monotonic() - t0
        work = rig_cpu_seconds(rig) + own_cpu_seconds() - work0
        others = max(0.0, (machine_busy_seconds() - busy0 - work) / wall)
    finally:
        problems = rig.down()
        if problems:
            log(f"rig teardown left: {problems}")
    meta = {
        "rounds": args.rounds,
        "padMiB": args.pad_mb,
        "cpus": os.cpu_count(),
        "loadBefore": load_before,
        "loadAfter": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "seconds": round(time.monotonic() - start, 1),
        "othersBusyCpus": round(others, 2),
        "code": code_state(),
        "loginEnv": args.login_env,
        "compose": args.compose,
        "quietWaitSeconds": round(QUIET["waited"], 1),
    }
    print_report(results, meta, sys.stderr if args.json else sys.stdout)
    if args.json:
        doc = {
            "issue": 14,
            "meta": meta,
            "targets": TARGETS,
            "figures": {k: to_json(v) for k, v in results.items()},
        }
        print(json.dumps(doc, indent=2, default=str))
    return 1 if any("error" in fig for fig in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
