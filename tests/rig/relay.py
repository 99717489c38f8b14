"""stdio <-> TCP relay: the ssh ProxyCommand that reaches a rig host's loopback sshd.

Run inside the host's network namespace (``nsenter -t PID -n -- python3 -I -S relay.py HOST PORT``);
the machine itself has no route into a host. Standard library only, no site packages.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys

CHUNK = 1 << 16


def relay(host: str, port: int) -> int:
    try:
        sock = socket.create_connection((host, port), timeout=10)
    except OSError as error:
        sys.stderr.write(f"relay: cannot connect to {host}:{port}: {error}\n")
        return 1
    sock.settimeout(None)
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(stdin, selectors.EVENT_READ, "in")
    sel.register(sock, selectors.EVENT_READ, "sock")
    open_ends = 2
    while open_ends:
        for key, _ in sel.select():
            if key.data == "in":
                data = os.read(stdin, CHUNK)
                if data:
                    sock.sendall(data)
                else:
                    sel.unregister(stdin)
                    sock.shutdown(socket.SHUT_WR)
                    open_ends -= 1
            else:
                try:
                    data = sock.recv(CHUNK)
                except ConnectionResetError:
                    data = b""
                if not data:
                    return 0
                view = memoryview(data)
                while view:
                    written = os.write(stdout, view)
                    view = view[written:]
    return 0


if __name__ == "__main__":
    sys.exit(relay(sys.argv[1], int(sys.argv[2])))
