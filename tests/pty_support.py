"""Run a command with its stdout (and optionally stderr) on a pseudo-terminal, as a person sees it.

The verbs print tables and progress only on a terminal (JSON when piped); the tests that prove it
run them here. Shared by the unit CLI tests and the rig's publish test.
"""

from __future__ import annotations

import os
import pty
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


def run_on_terminal(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    stderr_too: bool = False,
    timeout: float = 120,
) -> tuple[int, bytes, bytes]:
    """(exit code, what the terminal showed, stderr when it was piped: else b"")."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower if stderr_too else subprocess.PIPE,
    )
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    err = b""
    if proc.stderr is not None:
        err = proc.stderr.read()
        proc.stderr.close()
    return proc.wait(timeout=timeout), b"".join(chunks), err
