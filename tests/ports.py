"""Free loopback ports, for a process a test or benchmark starts that needs its ports known in
advance (an in-process server binds port 0 instead)."""

from __future__ import annotations

import contextlib
import socket


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free right now (held open together while picked, so
    they differ), for a process a test starts that needs its ports known in advance."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def free_port() -> int:
    return free_ports(1)[0]
