"""The shell scripts the remote Commands run, kept as files.

A remote step runs ``bash -s -- <quoted args>`` with the script text on stdin. The text sent
(:func:`script_text`) is, in this order:

1. ``# shellcheck shell=bash``, then ``eval "$(cat)"``: ``bash -s`` reads a pipe one byte per
   read(), so the rest of the text is read in one go and run from memory (about 30 ms less for a
   100 KB script on the rig; the arguments stay ``bash -s``'s), then ``set -euo pipefail``;
2. the contract's generated constants (:func:`artifact_cd.contract.shell_constants`: label names,
   media types, verify kinds, commit and digest patterns, ``EXIT_*`` codes), so no script spells
   them by hand;
3. the Python helpers that ``lib.sh`` or the script runs: for each ``$<NAME>_PY`` they reference,
   the text of ``py/<name>.py`` assigned to ``<NAME>_PY`` as one single-quoted word (the scripts run
   ``python3 -c "$<NAME>_PY" ...``); the helpers are real modules, linted, type-checked and tested;
4. ``lib.sh`` (shared shell functions);
5. the shared function files the script names with a ``# include: <name>.sh`` line (files in
   ``include/``, e.g. ``registry-facts.sh``: the registry facts both ``registry-probe.sh`` and
   ``live-probe.sh`` collect), each once, in the order named;
6. the step's script itself.

So helpers and constants are shared without a copy on the target, and the very same text and argv
are what the real-rig tests run: nothing is rebuilt from strings.

Conventions every script follows (so a script on stdin can never eat its own tail):
``set -euo pipefail``; all work inside ``main``; the last line is ``main "$@"``; ``main`` starts
with ``exec </dev/null``; every argument is validated before use; results are one JSON line on
stdout; human diagnostics go to stderr.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from artifact_cd.contract import shell_constants
from artifact_cd.early import STDIN_READER

SCRIPT_DIR = Path(__file__).resolve().parent
PY_DIR = SCRIPT_DIR / "py"  # fixed at import: a test may point SCRIPT_DIR elsewhere, not the helpers
INCLUDE_DIR = SCRIPT_DIR / "include"  # shared function files (fixed at import, like the helpers)
LIB = "lib.sh"
SHELL_DIRECTIVE = "# shellcheck shell=bash"

# `$MANIFEST_PY` / `${MANIFEST_PY}` -> the helper py/manifest.py
_HELPER_REFERENCE = re.compile(r"\$\{?([A-Z][A-Z0-9_]*)_PY\b")
# `# include: registry-facts.sh` (a whole line of the script) -> include/registry-facts.sh
_INCLUDE_DIRECTIVE = re.compile(r"^# include: ([a-z0-9][a-z0-9-]*\.sh)$", re.M)


def helper_variable(path: Path) -> str:
    """The bash variable a helper file is read into: ``py/free_port.py`` -> ``FREE_PORT_PY``."""
    return path.stem.upper() + "_PY"


def helper_paths(*texts: str) -> tuple[Path, ...]:
    """The helper files ``texts`` reference (sorted); a reference without a file is an error."""
    paths = []
    for stem in sorted({m.group(1) for text in texts for m in _HELPER_REFERENCE.finditer(text)}):
        path = PY_DIR / f"{stem.lower()}.py"
        if not path.is_file():
            raise ValueError(f"${stem}_PY is referenced but {path} does not exist")
        paths.append(path)
    return tuple(paths)


def helper_block(path: Path) -> str:
    """``<NAME>_PY='<the file, each ' written '\\''>'``: the text, verbatim, as one single-quoted
    assignment. (A here-document read with ``read -d ''`` costs bash one read() per byte from its
    pipe, ~6 ms per 16 KB of helpers on every step; a quoted word is parsed in memory.)"""
    text = path.read_text(encoding="utf-8")
    if "\0" in text:
        raise ValueError(f"{path} holds a NUL byte, which no bash variable can")
    variable = helper_variable(path)
    quoted = text.replace("'", "'\\''")
    return (
        f"# {variable}: artifact_cd/scripts/py/{path.name} (run as python3 -c \"${variable}\" ...)\n"
        f"# shellcheck disable=SC2016 # Python source: nothing in it is expanded\n"
        f"{variable}='{quoted}'\n"
    )


def include_paths(text: str) -> tuple[Path, ...]:
    """The shared function files a script names (``# include: <name>.sh`` lines), in order, once each."""
    paths = []
    for name in dict.fromkeys(m.group(1) for m in _INCLUDE_DIRECTIVE.finditer(text)):
        path = INCLUDE_DIR / name
        if not path.is_file():
            raise ValueError(f"# include: {name} is named but {path} does not exist")
        paths.append(path)
    return tuple(paths)


def _without_directive(text: str) -> str:
    first, _, rest = text.partition("\n")
    return rest if first.strip() == SHELL_DIRECTIVE else text


@cache
def script_text(name: str) -> str:
    """The exact stdin of a step that runs ``name``: constants, helpers, ``lib.sh``, includes, script."""
    if "/" in name or not name.endswith(".sh") or name == LIB:
        raise ValueError(f"not a step script: {name!r}")
    body = (SCRIPT_DIR / name).read_text(encoding="utf-8")
    lib_path = SCRIPT_DIR / LIB
    lib = lib_path.read_text(encoding="utf-8") if lib_path.exists() else ""
    lib, body = _without_directive(lib), _without_directive(body)
    included = {p.name: _without_directive(p.read_text(encoding="utf-8")) for p in include_paths(body)}
    includes = list(included.values())
    parts = [
        f"{SHELL_DIRECTIVE}\n{STDIN_READER} # the rest in one read: bash -s reads a pipe byte by byte\n",
        f"# {name} as sent: generated constants, Python helpers, lib.sh, {name}\n",
        # a command first: a shellcheck directive before a script's first command covers it all
        "set -euo pipefail\n",
        shell_constants(),
        *(helper_block(path) for path in helper_paths(lib, *includes, body)),
        lib + ("\n" if lib and not lib.endswith("\n") else ""),
        *(
            f"# ---- include/{file} ----\n{text}{'' if text.endswith(chr(10)) else chr(10)}"
            for file, text in included.items()
        ),
        body,
    ]
    return "".join(parts)


def command_line(args: Sequence[str]) -> str:
    """The ``create`` string of a remote Command: ``bash -s --`` and each argument quoted."""
    return " ".join(["bash", "-s", "--", *(shlex.quote(a) for a in args)])
