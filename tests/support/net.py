"""Ports and readiness polling (a condition, never a fixed sleep).

Servers of ours bind port 0 and are asked which port they got. Two helpers remain for what
cannot do that:
- ``refusing_port``: a port where nothing listens, held (bound, never listening) until the
  test process ends, so connections to it are refused and no other process can take it;
- ``on_free_port``: an external program (Orthanc, fake-gcs-server, functions-framework) that
  must be told its port up front. A port the OS just gave out may be taken by someone else
  before the program binds it; the program then fails to start, and is started again on
  another port.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_refusing: list[socket.socket] = []  # held for the life of the test process


def free_port() -> int:
    """A port free at this instant; only for ``on_free_port`` (see the module's notes)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def refusing_port() -> int:
    """A port on 127.0.0.1 where every connection is refused, for as long as the tests run."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound and never listening: connections are refused
    _refusing.append(sock)
    return int(sock.getsockname()[1])


def on_free_port(
    start: Callable[[int], T],
    attempts: int = 3,
    errors: tuple[type[Exception], ...] = (RuntimeError, TimeoutError, OSError),
) -> T:
    """``start(port)`` on a free port; again on another when it fails (the port was taken)."""
    for attempt in range(1, attempts + 1):
        try:
            return start(free_port())
        except errors:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    delay = 0.005
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
