"""free_port.py: a TCP port on 127.0.0.1 that nothing listens on right now (move-image.sh's tunnel).

python3 -c "$FREE_PORT_PY" -> "<port>"
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main(argv: Sequence[str]) -> int:
    print(free_port())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
