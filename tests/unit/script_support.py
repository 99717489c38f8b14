"""Helpers of the unit tests of the step scripts (artifact_cd/scripts/) and their Python helpers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from artifact_cd import contract

# The facts the scripts share with the typed contract: a script source takes each from the
# generated constants and never spells it by hand.
SHARED_FACTS = (
    contract.REVISION_LABEL,
    contract.SOURCE_LABEL,
    contract.SERVICE_LABEL,
    contract.SPEC_LABEL,
    *contract.MANIFEST_MEDIA_TYPES,
    contract.COMMIT_PATTERN,
    contract.DIGEST_PATTERN,
)


def code_of(text: str) -> str:
    """The text without its comment lines (what runs)."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def _oldest_python() -> str | None:
    """A working python3.8 (a pyenv install, else one on PATH; a pyenv shim may only refuse)."""
    pyenv = sorted(Path.home().glob(".pyenv/versions/3.8*/bin/python3.8"))
    for candidate in (*map(str, pyenv), shutil.which("python3.8")):
        if (
            candidate
            and subprocess.run([candidate, "-c", "pass"], capture_output=True, check=False).returncode == 0
        ):
            return candidate
    return None


PY38 = _oldest_python()  # the oldest python3 a target may have
needs_python38 = pytest.mark.skipif(
    PY38 is None, reason="no python3.8 on this machine (pyenv 3.8 or python3.8 on PATH)"
)
