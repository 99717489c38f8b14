"""``python -m lab up|down|status|serve|demo`` (``./run lab ...``, ``./run demo``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="./run lab", description="the local D601 + master hosts (root; Linux namespaces, loopback only)"
    )
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="{up,down,status,demo}")
    for cmd, text in (
        ("up", "start the hosts in the background and print how to reach them"),
        ("down", "stop them and check that nothing is left (also cleans after a killed lab)"),
        ("status", "whether the lab is up: each host's systemd state, the registry, how to reach them"),
        ("serve", None),
    ):
        p = sub.add_parser(cmd, help=text) if text else sub.add_parser(cmd)
        p.add_argument("--dir", type=Path, default=None, help="state directory (default /tmp/unidesk-lab)")
    demo = sub.add_parser("demo", help="publish two commits of a sample service, deploy them, tear down")
    demo.add_argument("--setup-started", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cmd == "demo":
        from .demo import run_demo

        return run_demo(setup_started=args.setup_started)

    from . import control

    paths = control.LabPaths((args.dir or control.DEFAULT_DIR).resolve())
    handlers = {"up": control.up, "down": control.down, "status": control.status, "serve": control.serve}
    return handlers[args.cmd](paths)


if __name__ == "__main__":
    sys.exit(main())
