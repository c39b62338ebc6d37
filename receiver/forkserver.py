"""The fork server: the one process that starts receive processes, by forking.

A receive process needs the interpreter and the libraries the listening process has loaded
(pydicom, pynetdicom, the spool and queue code): about 60 MB when a fresh interpreter imports
them. Forked from a process that has them loaded, it shares those pages copy-on-write and
holds only a few MB of its own.

The listening process cannot safely fork once it runs: a fork copies the locks its other
threads hold, and nothing in the child ever releases them. So the fork server is forked from
it first, while it still has a single thread and has opened neither the spool nor a socket
(``ForkServer()`` before either). From then on the fork server does the forking, and it
has only one thread.

When the process that creates the fork server already runs threads (an embedding program, or
the test suite), it gets a fresh interpreter instead; the receive processes then share that
interpreter's pages with each other rather than with the listening process.

The fork server tells the listening process each receive process's pid and later its exit
status, and the listening process kills a receive process by pid. The fork server exits when
the listening process closes the channel or dies; the receive processes it started keep
running until their own channels close. If it dies, the next start begins a new one.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_CHANNEL_ENV = "DICOM_INGEST_FORK_SERVER"  # a fresh fork server's end of its socket pair
_MAX_MESSAGE = 4096
_START_TIMEOUT = 30.0  # a fresh interpreter imports the receiver before it forks


class ForkFailed(RuntimeError):
    """No receive process could be started."""


class Child:
    """A receive process the fork server started: its pid, and its exit status when told."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None  # as subprocess gives it: -N for signal N
        self._ended = threading.Event()

    def wait(self, timeout: float) -> int | None:
        """The exit status; None if it is not known within ``timeout`` seconds, or never will
        be (the fork server that would report it has gone)."""
        self._ended.wait(timeout)
        return self.returncode

    def kill(self) -> None:
        if self._ended.is_set() and self.returncode is not None:
            return  # reaped: its pid may be another process's by now
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)

    def _exited(self, code: int | None) -> None:
        self.returncode = code
        self._ended.set()


class ForkServer:
    """The listening process's handle on its fork server."""

    def __init__(self, target: Callable[[int], int]) -> None:
        """Create it before the process opens files or starts threads (see the module).
        ``target``: a receive process's life, given its channel's descriptor; its exit code."""
        self._target = target
        self._lock = threading.Lock()  # one start at a time
        self._request = 0  # each start's number, which its reply carries
        self._stopped = False
        self._begin(allow_fork=True)

    def _begin(self, allow_fork: bool) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._pid = 0
        self._popen: subprocess.Popen[bytes] | None = None
        try:
            if allow_fork and threading.active_count() == 1:
                self._pid = os.fork()
                if self._pid == 0:  # the fork server
                    ours.close()
                    os.setpgid(0, 0)  # a terminal's Ctrl-C is the listening process's
                    code = 1
                    try:
                        code = _serve(theirs, self._target)
                    finally:
                        os._exit(code)
            else:
                self._popen = subprocess.Popen(
                    [sys.executable, "-c", "from receiver.forkserver import main; exit(main())"],
                    pass_fds=[theirs.fileno()],
                    env={**os.environ, _CHANNEL_ENV: str(theirs.fileno())},
                    stdin=subprocess.DEVNULL,
                    process_group=0,
                )
                self._pid = self._popen.pid
        finally:
            theirs.close()
        self._sock = ours
        self._alive = True
        self._replies: queue.Queue[tuple[int, Child | str]] = queue.Queue()  # this server's
        reader = threading.Thread(
            target=self._read,
            args=(ours, self._replies, self._pid, self._popen),
            name="fork-server",
        )
        reader.daemon = True
        reader.start()

    @property
    def pid(self) -> int:
        """The current fork server's."""
        return self._pid

    def start(self, channel_fd: int) -> Child:
        """Fork a receive process that serves ``channel_fd`` (``processes.serve``)."""
        with self._lock:
            if self._stopped:
                raise ForkFailed("the receiver is stopping")
            if not self._alive:
                self._reap_server()
                self._begin(allow_fork=False)  # threads run now: a fresh interpreter
            self._request += 1
            try:
                message = pickle.dumps(("fork", self._request))
                socket.send_fds(self._sock, [message], [channel_fd])
            except OSError as exc:
                raise ForkFailed(f"the fork server is unreachable: {exc}") from exc
            deadline = time.monotonic() + _START_TIMEOUT
            while True:
                try:
                    number, reply = self._replies.get(timeout=deadline - time.monotonic())
                except (queue.Empty, ValueError):  # ValueError: the deadline has passed
                    # Stopped or stuck: killed, so that the next start begins another.
                    log.error("the fork server did not answer: killed", extra={"pid": self._pid})
                    with contextlib.suppress(OSError):
                        os.kill(self._pid, signal.SIGKILL)
                    raise ForkFailed("the fork server did not answer in time") from None
                if number in (self._request, 0):  # 0: the server ended
                    break  # an earlier start's late reply is skipped (that start gave up)
            if isinstance(reply, str):
                raise ForkFailed(reply)
            return reply

    def stop(self, timeout: float = 5.0) -> None:
        """End the fork server (receive processes are ended through their own channels)."""
        self._stopped = True
        with contextlib.suppress(OSError):  # also ends a start waiting for its answer
            self._sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._reap_server(timeout)

    def _reap_server(self, timeout: float = 5.0) -> None:
        _reap_process(self._pid, self._popen, timeout)

    def _read(
        self,
        sock: socket.socket,
        replies: queue.Queue[tuple[int, Child | str]],
        pid: int,
        popen: subprocess.Popen[bytes] | None,
    ) -> None:
        """What this fork server (one of a succession: ``pid``, ``popen``) tells."""
        children: dict[int, Child] = {}  # the receive processes it forked that still run
        try:
            while True:
                try:
                    data = sock.recv(_MAX_MESSAGE)
                except OSError:
                    break
                if not data:
                    break
                message = pickle.loads(data)  # noqa: S301 - our own process, over an unnamed pair
                if message[0] == "forked":
                    child = children[message[2]] = Child(message[2])  # before its exit is told
                    replies.put((message[1], child))
                elif message[0] == "exited":
                    ended = children.pop(message[1], None)
                    if ended is not None:
                        ended._exited(message[2])
                else:
                    replies.put((message[1], str(message[2])))
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            for child in children.values():  # nobody is left to tell their exit
                child._exited(None)
            replies.put((0, "the fork server ended"))
            self._alive = False  # the next start begins another
            if not self._stopped:
                log.error("the fork server ended; the next receive process starts another")
            _reap_process(pid, popen, 5.0)  # it closed its end: exiting, or dead; no zombie left


def _reap_process(pid: int, popen: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Wait for a fork server to exit (killed after ``timeout``); it may be reaped already."""
    if popen is not None:
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:  # reaped by the other caller
            return
        if time.monotonic() > deadline:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            deadline += 5.0
        time.sleep(0.05)


# -- the fork server's side ---------------------------------------------------------------


def _send(sock: socket.socket, message: tuple[Any, ...]) -> None:
    sock.send(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


def _serve(sock: socket.socket, target: Callable[[int], int]) -> int:
    """Fork a receive process for each channel sent; report exits; end with the channel."""
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)  # a byte on SIGCHLD: a receive process ended
    signal.signal(signal.SIGCHLD, lambda *_: None)
    try:
        while True:
            readable = select.select([sock.fileno(), wake_read], [], [])[0]
            if wake_read in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 512)
            if not _reap(sock):
                return 0
            if sock.fileno() not in readable:
                continue
            try:
                data, fds, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, 1)
            except OSError:
                return 0
            if not data:
                return 0  # the listening process has closed its end, or ended
            if not fds:
                continue
            number = pickle.loads(data)[1]  # noqa: S301 - from the listening process
            try:
                pid = _fork(target, fds[0], sock, (wake_read, wake_write))
            except OSError as exc:
                reply: tuple[Any, ...] = ("failed", number, f"cannot fork: {exc.strerror or exc}")
            else:
                reply = ("forked", number, pid)
            finally:
                os.close(fds[0])
            try:
                _send(sock, reply)
            except OSError:
                return 0
    finally:
        signal.set_wakeup_fd(-1)


def _reap(sock: socket.socket) -> bool:
    """Tell each ended receive process's status; False once the listening process is gone."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if not pid:
            return True
        try:
            _send(sock, ("exited", pid, os.waitstatus_to_exitcode(status)))
        except OSError:
            return False


def _fork(
    target: Callable[[int], int], channel_fd: int, sock: socket.socket, wake: tuple[int, int]
) -> int:
    gc.freeze()  # what is loaded now stays shared: the children's collector skips it
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:  # the receive process
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        sock.close()
        for fd in wake:
            os.close(fd)
        code = target(channel_fd)
    except BaseException:  # its own handler has forwarded what it could; this is the rest
        with contextlib.suppress(Exception):
            sys.excepthook(*sys.exc_info())
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    return 0  # never reached


def main() -> int:
    """A fresh fork server's life (``ForkServer`` when threads already run)."""
    sock = socket.socket(fileno=int(os.environ.pop(_CHANNEL_ENV)))
    # Loaded once here, shared by every fork (imported here: it imports this module).
    from .processes import serve  # noqa: PLC0415

    return _serve(sock, serve)
