"""``python -m artifact_cd``: ``status``/``health`` open their SSH connections first (sshlink: the
handshake overlaps the imports and the config validation), then the CLI runs as always."""

import os
import sys
from pathlib import Path

from artifact_cd.sshlink import preconnect

_early = preconnect(sys.argv[1:], os.environ, Path(__file__).resolve().parent.parent)

from artifact_cd.cli import main  # noqa: E402 - after the early connection on purpose

_code = main(preconnected=_early)
if _early is not None:
    # status/health: the answer is printed and every connection, thread and temporary file was
    # closed by main(); skip the interpreter's teardown of ~300 modules (~15 ms of a query)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_code)
raise SystemExit(_code)
