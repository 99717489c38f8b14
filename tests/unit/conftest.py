"""The unit tests import their shared helpers as ``tests.unit.*`` (and ``tests.*``)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `pytest` without `python -m` does not put the repo on sys.path
    sys.path.insert(0, str(REPO_ROOT))
