"""The test engine: ``__main__.py`` run as ``pulumi up`` would, under mocks, Commands replayed.

It extends the product's preview run (``components/preview.py``) through its seam,
:class:`components.preview.ProgramMocks`:

- ``preview=True``: exactly the product's preview (outputs of Commands are unknown).
- ``preview=False`` with an ``executor``: every ``command:remote:Command`` is handed to
  ``executor(CommandCall(...))`` when the engine would create it — after everything it depends
  on — and the executor's ``stdout``/``stderr`` become its outputs. A non-zero ``returncode``
  (or ``exitCode``) fails the Command like the real provider does (:class:`CommandFailed`; its
  stdout/stderr redacted when the Command's stdout is a secret output). Registrations arrive on
  the SDK's worker threads: independent Commands may run concurrently; dependent ones never do.

Executors: ``tests/program/program_support.py`` ``FakeHosts`` (each script's contract result, no
SSH) and ``tests.rig`` ``Rig.execute`` (real SSH to the rig's hosts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.preview import (
    COMMAND_TYPE,
    UNKNOWN,
    ProgramMocks,
    ProgramRun,
    RegisteredResource,
    script_of,
)
from components.preview import run_program as run_preview

__all__ = [
    "COMMAND_TYPE",
    "UNKNOWN",
    "CommandCall",
    "CommandFailed",
    "Executor",
    "ExecutorMocks",
    "ProgramRun",
    "run_program",
]


@dataclass(frozen=True)
class CommandCall:
    """What the real provider would run: ``create`` over SSH to ``user@host:port``, ``stdin`` fed in."""

    name: str
    host: str
    port: int
    user: str
    create: str
    stdin: str
    script: str | None = None  # the step script the stdin carries (lib.sh + script), when recognised

    @classmethod
    def of(cls, command: RegisteredResource) -> CommandCall:
        conn = command.inputs.get("connection") or {}
        stdin = str(command.inputs.get("stdin") or "")
        return cls(
            name=command.name,
            host=str(conn.get("host", "")),
            port=int(conn.get("port", 22)),
            user=str(conn.get("user", "root")),
            create=str(command.inputs.get("create", "")),
            stdin=stdin,
            script=script_of(stdin),
        )


Executor = Callable[[CommandCall], Mapping[str, Any]]


class CommandFailed(RuntimeError):
    """A Command's executor reported a non-zero exit: the run fails like the real provider's."""

    def __init__(self, call: CommandCall, returncode: int, stdout: str, stderr: str, *, secret: bool) -> None:
        self.call = call
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        result = "[secret]" if secret else (stdout.strip().splitlines() or [""])[-1]
        tail = "[secret]" if secret else "\n".join(stderr.strip().splitlines()[-5:])
        super().__init__(
            f"Command {call.name} on {call.user}@{call.host}:{call.port} exited with status {returncode}: "
            f"result {result} stderr {tail}"
        )


class ExecutorMocks(ProgramMocks):
    """``pulumi up``: each Command's outputs are what ``executor`` returns for it."""

    preview = False

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    def created_outputs(self, resource: RegisteredResource) -> dict[str, Any]:
        if resource.type != COMMAND_TYPE:
            return {}
        call = CommandCall.of(resource)
        result = self.executor(call)
        stdout, stderr = str(result.get("stdout", "")), str(result.get("stderr", ""))
        code = int(result.get("returncode", result.get("exitCode", 0)) or 0)
        if code != 0:
            if "stdout" in resource.options["additionalSecretOutputs"]:
                raise CommandFailed(call, code, "", "", secret=True)
            raise CommandFailed(call, code, stdout, stderr, secret=False)
        return {"stdout": stdout, "stderr": stderr}


def run_program(
    stack: str,
    *,
    config: Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
    preview: bool = True,
    environ: Mapping[str, str] | None = None,
    executor: Executor | None = None,
    project_dir: Path | None = None,
) -> ProgramRun:
    """``components.preview.run_program`` (see there for the arguments), or with ``preview=False``
    a ``pulumi up`` whose Commands run through ``executor`` (required then, ignored in a preview)."""
    mocks: ProgramMocks | None = None
    if not preview:
        if executor is None:
            raise TypeError("run_program(preview=False) needs an executor (tests/program: FakeHosts)")
        mocks = ExecutorMocks(executor)
    return run_preview(
        stack, config=config, secrets=secrets, environ=environ, project_dir=project_dir, mocks=mocks
    )
