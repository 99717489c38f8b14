"""``python -m tests.rig up|down|reap --dir DIR``: the rig for humans (and its reaper)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from .rig import Rig, reap, teardown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.rig", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for cmd, text in (
        ("up", "start a rig in DIR and keep it running until Ctrl-C / SIGTERM"),
        ("down", "tear down the rig in DIR (idempotent; also cleans a stale dir of a killed run)"),
        ("reap", "internal: wait for --owner to exit, then tear down DIR"),
    ):
        p = sub.add_parser(cmd, help=text)
        p.add_argument("--dir", required=True, type=Path)
        if cmd == "reap":
            p.add_argument("--owner", required=True, type=int)
    args = parser.parse_args(argv)
    rigdir: Path = args.dir.resolve()
    if args.cmd == "down":
        problems = teardown(rigdir)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    if args.cmd == "reap":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return reap(rigdir, args.owner)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    rig = Rig.up(rigdir)
    print(f"rig {rig.id} up in {rig.boot_seconds:.1f} s; state in {rig.dir}")
    for h in rig.hosts.values():
        print(f"  {h.name:7} systemd PID {h.pid}: ssh -F {rig.dir}/ssh_config {h.address}")
        print(f"  {'':7} shell in all its namespaces: nsenter -t {h.pid} -a bash")
    print(f"  master -> d601: ssh -F {rig.dir}/ssh_config master.rig ssh {rig.d601_from_master} hostname")
    print(f"  registry: {rig.registry} on d601's loopback; docker: DOCKER_HOST={rig.d601.docker_host}")
    print(f"stop with Ctrl-C, or: python -m tests.rig down --dir {rig.dir}", flush=True)
    try:
        while not stop.wait(1.0):
            if not rig.dir.exists():  # taken down from elsewhere (`down --dir`)
                print("rig was taken down", flush=True)
                return 0
    finally:
        problems = rig.down()
        for problem in problems:
            print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
