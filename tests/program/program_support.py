"""Helpers of the program tests: the stack configs, recognisable fake secrets, and a fake executor
that plays the hosts' script results (no SSH, no daemon: the rig tests do that for real)."""

from __future__ import annotations

import copy
import hashlib
import json
import shlex
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from artifact_cd import config as core_config

ROOT = Path(__file__).resolve().parents[2]

FAKE_SECRETS: dict[str, str] = {
    "d601PrivateKey": "FAKE-D601-PRIVATE-KEY-7f3a9c",
    "masterPrivateKey": "FAKE-MASTER-PRIVATE-KEY-51b2e0",
    "kubeconfig": "FAKE-KUBECONFIG-TOKEN-c0ffee",
}
FAKE_AUTH_SECRET = "FAKE-AUTH-CLIENT-SECRET-93ac11"


def stack_config(stack: str) -> dict[str, Any]:
    """The project's own ``Pulumi.<stack>.yaml`` (namespace stripped), as a fresh copy."""
    return copy.deepcopy(core_config.read_stack_file(ROOT / f"Pulumi.{stack}.yaml"))


def fake_digest(kind: str, repository: str, tag: str) -> str:
    return "sha256:" + hashlib.sha256(f"test-{kind}:{repository}:{tag}".encode()).hexdigest()


def _arg(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


@dataclass
class FakeHosts:
    """An executor: answers each Command with the result line its script's contract promises."""

    probe_facts: dict[str, Any] = field(default_factory=lambda: {"ok": True, "probe": "registry-probe"})
    fail: Mapping[str, tuple[int, str]] = field(default_factory=dict)  # Command name -> (exit, stdout)
    calls: list[Any] = field(default_factory=list)
    threads: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, call: Any) -> dict[str, Any]:
        with self._lock:
            self.calls.append(call)
            self.threads.add(threading.current_thread().name)
        if call.name in self.fail:
            code, stdout = self.fail[call.name]
            return {"stdout": stdout, "stderr": "failed on purpose\n", "returncode": code}
        argv = shlex.split(call.create)
        result: dict[str, Any] = {"ok": True}
        if call.script == "manifest-check.sh":
            repo, tag = _arg(argv, "--repository"), _arg(argv, "--tag")
            result.update(digest=fake_digest("manifest", repo, tag), imageId=fake_digest("config", repo, tag))
        elif call.script == "read-auth.sh":
            result.update(auth={"clientId": "frontend", "clientSecret": FAKE_AUTH_SECRET})
        elif call.script == "registry-probe.sh":
            result = dict(self.probe_facts)
        elif call.script == "compose-deploy.sh":
            result.update(service=_arg(argv, "--service-id"), commit=_arg(argv, "--commit"))
        elif call.script == "k3s-verify.sh":
            commit = _arg(argv, "--commit")
            result.update(health={"deployCommit": commit, "requestedCommit": commit})
        return {
            "stdout": "diagnostics go to stderr\n" + json.dumps(result) + "\n",
            "stderr": "",
            "returncode": 0,
        }

    def names(self) -> list[str]:
        return [c.name for c in self.calls]
