"""For every test session: the CLI's early-probe cache (artifact_cd.sshlink.EarlyCache) lives in a
directory of the session's own, removed at the end, never in the user's ~/.cache. Every
``python -m artifact_cd`` a test starts inherits it (unless the test passes its own environment)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

if "ARTIFACT_CD_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="unidesk-cd-test-cache.")
    os.environ["ARTIFACT_CD_CACHE_DIR"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
