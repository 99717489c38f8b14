"""``python -m artifact_cd``: ``status``/``health`` open D601's SSH connection first (sshlink: the
handshake overlaps the imports and the config validation), then the CLI runs as always."""

import os
import sys
from pathlib import Path

from artifact_cd.sshlink import preconnect

_early = preconnect(sys.argv[1:], os.environ, Path(__file__).resolve().parent.parent)

from artifact_cd.cli import main  # noqa: E402 - after the early connection on purpose

raise SystemExit(main(preconnected=_early))
