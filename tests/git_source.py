"""A service's source as ``publish`` reads it (R25), for tests/unit/test_publish.py and
tests/integration/test_publish_rig.py: a git checkout whose ``origin`` is a bare "remote", git run
without the machine's or the user's git config, and the keys of the producer summary (R26)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "ci",
    "GIT_AUTHOR_EMAIL": "ci@example.invalid",
    "GIT_COMMITTER_NAME": "ci",
    "GIT_COMMITTER_EMAIL": "ci@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
}
# R26: what every publish summary holds
SUMMARY_KEYS = (
    "serviceId",
    "sourceCommit",
    "sourceRepo",
    "dockerfile",
    "imageRef",
    "tag",
    "digest",
    "digestRef",
)


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
        check=True,
    )
    return proc.stdout.strip()


@dataclass(frozen=True)
class Checkout:
    path: Path
    remote: Path

    @classmethod
    def init(cls, base: Path) -> Checkout:
        """An empty checkout ``base/work`` on branch main; ``origin`` is the bare ``base/remote.git``."""
        remote, path = base / "remote.git", base / "work"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
        subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
        git(path, "remote", "add", "origin", str(remote))
        return cls(path, remote)

    def commit(self, name: str, content: str, message: str = "change") -> str:
        """Write ``name`` and commit it alone; returns the new HEAD."""
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
        git(self.path, "add", name)
        git(self.path, "commit", "-q", "-m", message)
        return git(self.path, "rev-parse", "HEAD")

    def push(self) -> None:
        git(self.path, "push", "-q", "origin", "HEAD:main")
