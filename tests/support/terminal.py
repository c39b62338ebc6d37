"""A command on a pseudo-terminal, as in an operator's terminal window.

The child is a session leader with the terminal as its controlling terminal, so Ctrl-C
(``interrupt``) reaches it through the terminal's line discipline as it would from a keyboard.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import struct
import termios
import time
from collections.abc import Callable, Sequence


class Terminal:
    def __init__(self, argv: Sequence[str], env: dict[str, str], columns: int = 120) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: become the command
            try:
                os.execve(argv[0], list(argv), env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        self.output = b""
        self._closed = False
        self._status: int | None = None

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: every process on the terminal has closed it
            chunk = b""
        if chunk:
            self.output += chunk
        else:
            self._closed = True

    def read_until(self, done: Callable[[str], bool], timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while not done(self.text()):
            if self._closed:
                raise AssertionError(f"the terminal closed first; it showed:\n{self.text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"timed out after {timeout}s; the terminal showed:\n{self.text()}"
                )
            self._read(0.2)
        return self.text()

    def interrupt(self) -> None:
        """Ctrl-C, typed."""
        os.write(self.fd, b"\x03")

    def wait(self, timeout: float = 30.0) -> int:
        """Read what is left, then the command's exit status."""
        deadline = time.monotonic() + timeout
        while self._status is None:
            if not self._closed:
                self._read(0.2)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._status = os.waitstatus_to_exitcode(status)
            elif time.monotonic() > deadline:
                raise TimeoutError(f"still running after {timeout}s:\n{self.text()}")
        while not self._closed:
            self._read(0.2)
        return self._status

    def close(self) -> None:
        if self._status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, 9)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
        os.close(self.fd)
