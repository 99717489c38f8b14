"""The shell scripts the remote Commands run, kept as files.

A remote step runs ``bash -s -- <quoted args>`` with the script text on stdin. The text sent is
``lib.sh`` followed by the step's script, so helpers are shared without a copy on the target.
The very same text and argv are what the real-rig tests run: nothing is rebuilt from strings.

Conventions every script follows (so a script on stdin can never eat its own tail):
``set -euo pipefail``; all work inside ``main``; the last line is ``main "$@"``; ``main`` starts
with ``exec </dev/null``; every argument is validated before use; results are one JSON line on
stdout; human diagnostics go to stderr.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Sequence
from functools import cache
from pathlib import Path

SCRIPT_DIR = Path(__file__).resolve().parent
LIB = "lib.sh"


@cache
def script_text(name: str) -> str:
    """The exact stdin of a step that runs ``name``: ``lib.sh`` then the script itself."""
    if "/" in name or not name.endswith(".sh") or name == LIB:
        raise ValueError(f"not a step script: {name!r}")
    body = (SCRIPT_DIR / name).read_text(encoding="utf-8")
    lib_path = SCRIPT_DIR / LIB
    lib = lib_path.read_text(encoding="utf-8") if lib_path.exists() else ""
    return lib + ("\n" if lib and not lib.endswith("\n") else "") + body


def script_sha256(name: str) -> str:
    return hashlib.sha256(script_text(name).encode("utf-8")).hexdigest()


def command_line(args: Sequence[str]) -> str:
    """The ``create`` string of a remote Command: ``bash -s --`` and each argument quoted."""
    return " ".join(["bash", "-s", "--", *(shlex.quote(a) for a in args)])
