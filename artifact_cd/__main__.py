"""``python -m artifact_cd``: ``status``/``health`` start their SSH connections first (artifact_cd.early,
which imports next to nothing: the handshake overlaps the imports and the config validation), then
the CLI runs as always."""

import os
import sys

from artifact_cd.early import spawn

_spawned = spawn(sys.argv[1:], os.environ, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from artifact_cd.cli import main  # noqa: E402 - after the early start on purpose
from artifact_cd.sshlink import Preconnected  # noqa: E402

_early = Preconnected.adopt(_spawned)
_code = main(preconnected=_early)
if _early is not None:
    # status/health: the answer is printed and every connection, thread and temporary file was
    # closed by main(); skip the interpreter's teardown of ~300 modules (~15 ms of a query)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_code)
raise SystemExit(_code)
