"""Receive processes: the front door's associations served by several processes.

A Python process runs one thread's Python at a time, and receiving an instance is mostly
Python (framing, the dataset check, the bookkeeping): one process reaches about one core
however many associations it serves. With ``--receive_processes N``, the listening process
keeps the door (accepting, the per-address and negotiating limits, association slots, the
drain, the queue) and hands each accepted connection to one of N receive processes, the one
serving fewest connections, over a Unix socket pair (the descriptor itself, SCM_RIGHTS). The
receive processes are forked by the fork server (``receiver.forkserver``), so they share the
loaded code with the listening process instead of each loading it again.

A receive process runs the same ``Association`` the listening process would: it writes each
instance into the spool and commits its message to the queue itself (the spool's lock and
the queue's writer lock span processes), so the PACS is still answered only after both. It
asks the listening process for what must stay single, an association slot, and tells it of
each commit, so an idle upload worker wakes. Its log records and figures are written and
served by the listening process as its own.

If a receive process dies, the kernel closes its connections: the PACS sees them drop before
any answer for an instance not stored. The listening process logs one line for each, frees
their slots and starts another process in its place.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ingest.adapters.alarms import Alarm, AlarmClock
from ingest.adapters.spool import SpoolObjectStore
from ingest.adapters.sqlite_queue import QUEUE_FILE, SqliteQueue
from ingest.contracts import logs, metrics

from .association import Association, AssociationStats
from .config import ReceiverConfig
from .forkserver import ForkFailed, ForkServer
from .free_space import SpaceGuard
from .sop_classes import is_storage_sop_class
from .staging import StagingFiles
from .store import StoreService
from .tls import TlsContexts

log = logging.getLogger(__name__)
association_log = logging.getLogger("receiver.association")

_MAX_MESSAGE = 1 << 20
_BUFFER = 4 << 20  # socket buffers: a full one means the other side has stopped reading
_SEND_PATIENCE = 10.0  # seconds the listening process waits for room in a full buffer
_START_TIMEOUT = 60.0  # for a receive process to import and open the spool
_CALL_TIMEOUT = 120.0  # a slot or a commit; SQLite waits up to 30 s for its write lock
# After each quick death in a row of one process slot. Meanwhile the listening process serves
# what no receive process can take, so a slot's gap costs parallelism, never availability.
_RESTART_DELAYS = (0.0, 1.0, 2.0, 5.0, 10.0)
_QUICK_DEATH = 10.0  # a process that ran less than this died quickly
# Each receive process is asked every _PING_EVERY seconds to answer at once. One whose answer
# is _UNRESPONSIVE seconds late gets no new connections; at _HUNG seconds it is killed (and
# replaced): stopped (SIGSTOP), deadlocked, or stuck in the kernel, it serves nobody.
# A stopped process may hold the spool's lock, which stalls every other process's commits too:
# so _HUNG is short. Answering needs only this process's main thread and a moment of CPU.
_PING_EVERY = 1.0
_UNRESPONSIVE = 3.0
_HUNG = 15.0
_PUBLISHED_EVERY = 0.05  # a receive process tells its commits at most this often


class ReceiveProcessFailed(RuntimeError):
    """A receive process did not start."""


class ChannelClosed(Exception):
    """The other process has gone, or its channel broke."""


class _Channel:
    """One end of a SEQPACKET socket pair: whole messages, each maybe with a descriptor."""

    def __init__(self, sock: socket.socket, patient: bool = False) -> None:
        """``patient``: sends wait (a receive process, whose listener always reads);
        otherwise a send that finds the buffer full for ``_SEND_PATIENCE`` fails."""
        self._sock = sock
        self._patient = patient

    def send(self, message: tuple[Any, ...], fd: int | None = None) -> None:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        deadline = time.monotonic() + _SEND_PATIENCE
        while True:
            try:
                flags = 0 if self._patient else socket.MSG_DONTWAIT
                socket.send_fds(self._sock, [data], [] if fd is None else [fd], flags)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ChannelClosed("the receive process stopped reading") from None
                time.sleep(0.01)
            except OSError as exc:
                raise ChannelClosed(exc.strerror or str(exc)) from exc

    def receive(self, timeout: float | None = None) -> tuple[tuple[Any, ...], int | None]:
        if timeout is not None and not select.select([self._sock], [], [], timeout)[0]:
            raise ChannelClosed("no answer in time")
        try:
            data, fds, flags, _ = socket.recv_fds(self._sock, _MAX_MESSAGE, 1)
        except OSError as exc:
            raise ChannelClosed(exc.strerror or str(exc)) from exc
        if not data or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            for fd in fds:
                os.close(fd)
            raise ChannelClosed("closed" if not data else "a message was cut")
        message = pickle.loads(data)  # noqa: S301 - our own process, over an unnamed pair
        return message, (fds[0] if fds else None)

    def shutdown(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._sock.close()


def _socket_pair() -> tuple[socket.socket, socket.socket]:
    pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for end in pair:
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            with contextlib.suppress(OSError):
                end.setsockopt(socket.SOL_SOCKET, option, _BUFFER)
    return pair


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """What a receive process starts from (sent to it over its channel)."""

    config: ReceiverConfig
    spool_dir: Path
    anonymous_staging: bool
    log_levels: dict[str, int]


def log_levels() -> dict[str, int]:
    """This process's logger levels ("" is the root), for a receive process to filter alike."""
    levels = {"": logging.getLogger().level}
    for name, logger in logging.root.manager.loggerDict.items():
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
            levels[name] = logger.level
    return levels


Register = Callable[["RemoteAssociation", bool], None]


class Door(Protocol):
    """What the listening side keeps: the slots, and whether it is stopping."""

    def acquire(self, address: str) -> bool: ...

    def release(self, connection: Any) -> None: ...


# -- the listening process's side -------------------------------------------------------------


class RemoteAssociation:
    """The listening process's view of a connection a receive process serves."""

    transfer = None  # early uploads read staging files by name: not with receive processes

    def __init__(
        self, process: _ReceiveProcess, ident: int, peer: tuple[str, int], tls: bool = False
    ) -> None:
        self._process = process
        self.ident = ident
        self.address = peer[0]
        self.peer = f"{peer[0]}:{peer[1]}"
        self.transport = "tls" if tls else "tcp"
        self.accepted_at = time.monotonic()
        self.holds_slot = False
        self._closing = False
        # What the receive process has told of it, for the line written if that process dies.
        self.calling_ae = self.called_ae = ""
        self.instances = 0

    @property
    def closing(self) -> bool:
        return self._closing

    def close(
        self, outcome: str = "aborted at shutdown", reason: str = "the receiver stopped"
    ) -> None:
        """Have the receive process cut the connection (it logs the association's line)."""
        self._closing = True
        with contextlib.suppress(ChannelClosed):
            self._process.send(("close", self.ident, outcome, reason))


class _ReceiveProcess:
    """One receive process, as the listening process holds it."""

    def __init__(
        self,
        index: int,
        spec: ProcessSpec,
        forks: ForkServer,
        door: Door,
        wake: Callable[[], None],
        on_exit: Callable[[_ReceiveProcess], None],
    ) -> None:
        self.index = index
        self._door = door
        self._wake = wake
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self.connections: dict[int, RemoteAssociation] = {}
        self.started = time.monotonic()
        self.unanswered_since: float | None = None  # the oldest ping not answered yet
        self.held_back = False  # unresponsive: given no new connections
        self.killed = False  # by the watch, for not answering
        ours, theirs = _socket_pair()
        try:
            self.process = forks.start(theirs.fileno())
        except ForkFailed as exc:
            ours.close()
            raise ReceiveProcessFailed(f"receive process {index} did not start: {exc}") from exc
        finally:
            theirs.close()
        self._channel = _Channel(ours)
        try:
            self._channel.send(("spec", spec))
            deadline = time.monotonic() + _START_TIMEOUT
            while True:  # what it logs on the way (why it could not start, say) is written
                message, _ = self._channel.receive(max(0.0, deadline - time.monotonic()))
                if message == ("ready",):
                    break
                if message[0] != "log":
                    raise ChannelClosed(f"unexpected message {message[0]!r}")
                self._handle(message)
        except ChannelClosed as exc:
            self._kill()
            raise ReceiveProcessFailed(f"receive process {index} did not start: {exc}") from exc
        self._reader = threading.Thread(target=self._read, name=f"receive-process-{index}")
        self._reader.daemon = True
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def load(self) -> int:
        with self._lock:
            return len(self.connections)

    def ping(self) -> None:
        with self._lock:
            if self.unanswered_since is None:
                self.unanswered_since = time.monotonic()
        self.send(("ping",))

    def late(self) -> float:
        """Seconds its oldest unanswered ping has waited (0: none waits)."""
        with self._lock:
            since = self.unanswered_since
        return 0.0 if since is None else time.monotonic() - since

    def send(self, message: tuple[Any, ...], fd: int | None = None) -> None:
        self._channel.send(message, fd)

    def hand_over(
        self,
        sock: socket.socket,
        peer: tuple[str, int],
        tls: bool,
        ident: int,
        accepted_at: float,
        register: Register,
    ) -> RemoteAssociation:
        """Give the process this connection (the caller closes its own descriptor)."""
        connection = RemoteAssociation(self, ident, peer, tls)
        connection.accepted_at = accepted_at
        with self._lock:
            self.connections[ident] = connection  # before the process can ask for its slot
        register(connection, True)
        try:
            self.send(("connection", ident, peer, accepted_at, tls), sock.fileno())
        except ChannelClosed:
            with self._lock:
                self.connections.pop(ident, None)
            register(connection, False)
            raise
        return connection

    def stop(self) -> None:
        """End the channel: the process closes what it serves and exits."""
        self._channel.shutdown()

    def wait(self, timeout: float) -> None:
        self._reader.join(timeout)
        if self.process.wait(max(0.1, timeout)) is None:
            self._kill()

    def _kill(self) -> None:
        self.process.kill()
        self.process.wait(5)

    def kill(self) -> None:
        """Kill it now: its channel closes, and ``_ended`` follows as for any death."""
        self.killed = True
        self.process.kill()

    def _read(self) -> None:
        try:
            while True:
                message, fd = self._channel.receive()
                if fd is not None:  # never sent this way: not ours to keep
                    os.close(fd)
                self._handle(message)
        except ChannelClosed:
            pass
        finally:
            self._ended()

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        for figure in message[1]:  # figures recorded since the process's last message
            metrics.record(*figure)
        if kind == "published":  # messages committed: an upload worker may take them
            with self._lock:
                for ident, count in message[2].items():
                    connection = self.connections.get(ident)
                    if connection is not None:
                        connection.instances += count
            self._wake()
        elif kind == "acquire":
            _, _, call, ident, calling_ae, called_ae = message
            with self._lock:
                connection = self.connections.get(ident)
            granted = connection is not None and self._door.acquire(connection.address)
            if connection is not None:
                connection.calling_ae, connection.called_ae = calling_ae, called_ae
                connection.holds_slot = granted
            self.send(("reply", call, True, granted))
        elif kind == "done":
            with self._lock:
                ended = self.connections.pop(message[2], None)
            if ended is not None:
                self._door.release(ended)
        elif kind == "pong":
            with self._lock:
                self.unanswered_since = None
        elif kind == "log":
            record = logging.makeLogRecord(message[2])
            logger = logging.getLogger(record.name)
            if logger.isEnabledFor(record.levelno):
                logger.handle(record)

    def _ended(self) -> None:
        self._channel.close()
        if self.process.wait(5) is None:
            self._kill()
        with self._lock:
            lost = list(self.connections.values())
            self.connections.clear()
        for connection in lost:
            self._door.release(connection)
            if not connection.closing:
                metrics.record_association("aborted")
            # closing: cut at shutdown, and its process ended before it could say so
            outcome = "aborted at shutdown" if connection.closing else "aborted"
            association_log.warning(  # the line its receive process could not write
                "association %s",
                outcome,
                extra={
                    "peer": connection.peer,
                    "calling_ae": connection.calling_ae,
                    "called_ae": connection.called_ae,
                    # committed to the queue; failures and bytes were counted by the process
                    "instances": connection.instances,
                    "outcome": outcome,
                    "transport": connection.transport,
                    "seconds": round(time.monotonic() - connection.accepted_at, 3),
                    "reason": f"its receive process ended (exit code {self.process.returncode})",
                },
            )
        self._on_exit(self)


def _say(level: int, text: str, process: _ReceiveProcess, late: float) -> None:
    fields = {"index": process.index, "pid": process.pid, "associations": process.load()}
    log.log(level, text, extra={**fields, "seconds": round(late, 1)})


class ReceiveProcesses:
    """The receive processes of one listener: started, given connections, replaced, stopped."""

    def __init__(self, count: int, spec: ProcessSpec, wake: Callable[[], None]) -> None:
        """``wake``: called when a receive process has committed a message to the queue.

        Create it before the process opens the spool or starts a thread: it starts the fork
        server (``receiver.forkserver``), forked from this process while that is safe."""
        if count < 1:
            raise ValueError("at least one receive process")
        self._forks = ForkServer(serve)
        self._count = count
        self._spec = spec
        self._wake = wake
        self._lock = threading.Lock()
        self._processes: list[_ReceiveProcess] = []
        self._next_ident = 0
        self._quick_deaths: dict[int, int] = {}  # by process slot
        self._stopped = threading.Event()
        self._door: Door | None = None

    def start(self, door: Door) -> None:
        """Start every process; raises if one does not start (its reason is logged)."""
        self._door = door
        try:
            for index in range(self._count):
                self._add(index)
        except BaseException:
            self.stop()
            raise
        watch = threading.Thread(target=self._watch, name="receive-process-watch", daemon=True)
        watch.start()

    def _watch(self) -> None:
        """Ping every process; hold back the late ones, kill the hung ones."""
        while not self._stopped.wait(_PING_EVERY):
            with self._lock:
                processes = [p for p in self._processes if not p.killed]
            for process in processes:
                late = process.late()
                if late >= _HUNG:
                    _say(logging.ERROR, "receive process did not answer: killed", process, late)
                    process.kill()  # its end is logged and it is replaced as any death
                    continue
                if late >= _UNRESPONSIVE and not process.held_back:
                    process.held_back = True
                    text = "receive process not answering: it gets no new connections"
                    _say(logging.WARNING, text, process, late)
                elif late < _UNRESPONSIVE and process.held_back:
                    process.held_back = False
                    _say(logging.INFO, "receive process answering again", process, late)
                with contextlib.suppress(ChannelClosed):
                    process.ping()

    def _add(self, index: int) -> None:
        assert self._door is not None
        process = _ReceiveProcess(
            index, self._spec, self._forks, self._door, self._wake, self._exited
        )
        with self._lock:
            self._processes.append(process)
        if self._stopped.is_set():  # stopped while it started
            process.stop()
            process.wait(5)
            return
        log.debug("receive process started", extra={"index": index, "pid": process.pid})

    def fork_server_pid(self) -> int:
        return self._forks.pid

    def pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self._processes]

    def dispatch(
        self,
        sock: socket.socket,
        peer: tuple[str, int],
        tls: bool,
        accepted_at: float,
        register: Register,
    ) -> RemoteAssociation | None:
        """Hand the connection to the process serving fewest and close this process's
        descriptor of it; None, with the socket left open, when no process can take it (none
        is running: the caller serves it). ``register(connection, True)`` is called before
        the process has it, ``register(connection, False)`` if it could not be given."""
        with self._lock:
            running = [p for p in self._processes if not p.held_back]
            candidates = sorted(running, key=lambda p: p.load())
            self._next_ident += 1
            ident = self._next_ident
        for process in candidates:
            with contextlib.suppress(ChannelClosed):
                remote = process.hand_over(sock, peer, tls, ident, accepted_at, register)
                with contextlib.suppress(OSError):
                    sock.close()  # the receive process has its own descriptor now
                return remote
        return None

    def stopping(self) -> None:
        """Tell every process that the receiver is stopping (new associations are refused)."""
        with self._lock:
            processes = list(self._processes)
        for process in processes:
            with contextlib.suppress(ChannelClosed):
                process.send(("stopping",))

    def stop(self, timeout: float = 10.0) -> None:
        """End every process (what they still serve is aborted and logged), then the fork
        server."""
        self._stopped.set()
        with self._lock:
            processes = list(self._processes)
        for process in processes:
            process.stop()
            if process.late() >= _UNRESPONSIVE:  # it would not end by itself in time
                process.kill()
        deadline = time.monotonic() + timeout
        for process in processes:
            process.wait(max(0.0, deadline - time.monotonic()))
        self._forks.stop()

    def _exited(self, process: _ReceiveProcess) -> None:
        with self._lock:
            if process in self._processes:
                self._processes.remove(process)
        self._restart(process.index, process.started, process.process.returncode)

    def _restart(
        self, index: int, started: float, exit_code: int | None, what: str = "exited"
    ) -> None:
        if self._stopped.is_set():
            return
        quick = time.monotonic() - started < _QUICK_DEATH
        deaths = self._quick_deaths[index] = self._quick_deaths.get(index, 0) + 1 if quick else 0
        delay = _RESTART_DELAYS[min(deaths, len(_RESTART_DELAYS) - 1)]
        fields: dict[str, object] = {"index": index, "restart_in_seconds": delay}
        if what == "exited":
            fields["exit_code"] = exit_code
        log.error("receive process %s; starting another", what, extra=fields)
        threading.Thread(
            target=self._replace,
            args=(index, delay),
            name="receive-process-restart",
            daemon=True,
        ).start()

    def _replace(self, index: int, delay: float) -> None:
        if self._stopped.wait(delay):
            return
        started = time.monotonic()
        try:
            self._add(index)
        except ReceiveProcessFailed as exc:
            log.error("%s", exc)
            self._restart(index, started, None, "did not start")


# -- the receive process's side ---------------------------------------------------------------


class _Calls:
    """Requests to the listening process, each answered by a ``reply`` with its number."""

    def __init__(self, tell: _Tell) -> None:
        self._tell = tell
        self._lock = threading.Lock()
        self._next = 0
        self._waiting: dict[int, tuple[threading.Event, list[Any]]] = {}
        self._gone = False

    def call(self, kind: str, *args: Any) -> Any:
        """The answer; raises ``ChannelClosed`` when it cannot come, ``RuntimeError`` with
        the listening process's reason when it is a refusal."""
        event = threading.Event()
        answer: list[Any] = []
        with self._lock:
            if self._gone:
                raise ChannelClosed("the listening process has gone")
            self._next += 1
            number = self._next
            self._waiting[number] = (event, answer)
        try:
            self._tell.send(kind, number, *args)
            if not event.wait(_CALL_TIMEOUT) or not answer:
                raise ChannelClosed("no answer from the listening process")
        finally:
            with self._lock:
                self._waiting.pop(number, None)
        ok, value = answer
        if not ok:
            raise RuntimeError(value)
        return value

    def answer(self, number: int, ok: bool, value: Any) -> None:
        with self._lock:
            waiting = self._waiting.get(number)
        if waiting is not None:
            waiting[1].extend((ok, value))
            waiting[0].set()

    def fail_all(self) -> None:
        with self._lock:
            self._gone = True
            waiting = list(self._waiting.values())
        for event, _ in waiting:
            event.set()


class _Tell:
    """What a receive process sends its listener unasked, each message carrying the figures
    recorded since the last one (``metrics.forward_receiver_figures``).

    Commits are told at most every ``_PUBLISHED_EVERY`` seconds, counted per connection: a
    message per instance kept the listener busy on the cores the receive needs (about 15%
    fewer small instances a second), and an upload worker needs waking once per burst. A
    lone instance is told at once.
    """

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel
        self._lock = threading.Lock()
        self._figures: list[tuple[str, tuple[object, ...]]] = []
        self._published: dict[int, int] = {}  # commits not yet told, per connection
        self._told_at = -_PUBLISHED_EVERY
        self._later: Alarm | None = None
        self._clock = AlarmClock("tell")

    def figure(self, kind: str, args: tuple[object, ...]) -> None:
        with self._lock:
            self._figures.append((kind, args))

    def send(self, kind: str, *args: Any) -> None:
        with self._lock:
            figures, self._figures = self._figures, []
        self._channel.send((kind, figures, *args))

    def published(self, ident: int) -> None:
        """A message committed for connection ``ident``."""
        with self._lock:
            self._published[ident] = self._published.get(ident, 0) + 1
            if self._later is not None:
                return  # told with the others when it runs
            wait = self._told_at + _PUBLISHED_EVERY - time.monotonic()
            if wait > 0:
                self._later = self._clock.after(wait, self.tell_published)
                return
        self.tell_published()

    def tell_published(self) -> None:
        """Tell the commits not yet told (before a connection's ``done``, and when due)."""
        with self._lock:
            counts, self._published = self._published, {}
            self._told_at = time.monotonic()
            if self._later is not None:
                self._later.cancel()
                self._later = None
        if counts:
            with contextlib.suppress(ChannelClosed):
                self.send("published", counts)


class _QueueAndTell:
    """The spool's queue, committed to by this process; the listener hears of the commits
    (``_Tell.published``), so that an idle upload worker wakes."""

    def __init__(self, queue: SqliteQueue, tell: _Tell) -> None:
        self._queue = queue
        self._tell = tell

    def publish(self, body: bytes, attributes: dict[str, str]) -> str:
        message_id = self._queue.publish(body, attributes)
        self._tell.published(getattr(_serving, "ident", 0))
        return message_id


_serving = threading.local()  # in an association's thread: ``ident``, its connection's number


class _Gate:
    """One association's slot gate (``association.SlotGate``), through the listener."""

    def __init__(self, server: _Server, ident: int) -> None:
        self._server = server
        self._ident = ident
        self.stats: AssociationStats | None = None  # the association's, once it exists

    def acquire(self, address: str) -> bool:
        titles = ("", "") if self.stats is None else (self.stats.calling_ae, self.stats.called_ae)
        try:
            return bool(self._server.calls.call("acquire", self._ident, *titles))
        except (ChannelClosed, RuntimeError):
            return False

    def stopping(self) -> bool:
        return self._server.stopping


class _Server:
    """A receive process's work: serve the connections it is given until its channel ends."""

    def __init__(self, channel: _Channel, tell: _Tell, spec: ProcessSpec) -> None:
        self._channel = channel
        self.tell = tell
        self.calls = _Calls(tell)
        self.stopping = False
        config = self._config = spec.config
        objects = SpoolObjectStore(spec.spool_dir)
        self._queue = SqliteQueue(spec.spool_dir / QUEUE_FILE, durable_commits=False)
        self._service = StoreService(
            objects, _QueueAndTell(self._queue, self.tell), limits=config.scan_limits
        )
        staging = objects.staging_dir()
        self._staging = StagingFiles(staging, anonymous=spec.anonymous_staging)
        self._space = SpaceGuard(staging, config.min_free_bytes, config.min_free_percent)
        self._tls = TlsContexts(config.tls_files) if config.tls_files else None
        self._is_storage = functools.partial(
            is_storage_sop_class,
            storage_root=config.accept_storage_root,
            extra=config.extra_sop_classes,
        )
        self._lock = threading.Lock()
        self._associations: dict[int, tuple[Association, threading.Thread]] = {}

    def run(self) -> None:
        try:
            while True:
                message, fd = self._channel.receive()
                self._handle(message, fd)
        except ChannelClosed:
            pass
        # The listening process is stopping (or gone): end what is left, each logged.
        self.calls.fail_all()
        with self._lock:
            left = list(self._associations.values())
        for association, _ in left:
            association.close()
        for _, thread in left:
            thread.join(5)
        self._queue.close()

    def _handle(self, message: tuple[Any, ...], fd: int | None) -> None:
        kind = message[0]
        if kind == "connection":
            _, ident, peer, accepted_at, tls = message
            if fd is None:
                return
            self._serve(ident, socket.socket(fileno=fd), peer, accepted_at, tls)
            return
        if fd is not None:
            os.close(fd)
        if kind == "reply":
            self.calls.answer(message[1], message[2], message[3])
        elif kind == "close":
            with self._lock:
                entry = self._associations.get(message[1])
            if entry is not None:
                entry[0].close(message[2], message[3])
        elif kind == "stopping":
            self.stopping = True
        elif kind == "ping":  # answered by this thread: it also takes new connections
            self.tell.send("pong")

    def _serve(
        self,
        ident: int,
        sock: socket.socket,
        peer: tuple[str, int],
        accepted_at: float,
        tls: bool,
    ) -> None:
        gate = _Gate(self, ident)
        association = Association(
            sock,
            peer,
            self._config,
            self._service,
            self._staging,
            gate,
            self._is_storage,
            self._tls.current() if tls and self._tls is not None else None,
            space=self._space,
        )
        gate.stats = association.stats
        association.accepted_at = accepted_at
        thread = threading.Thread(
            target=self._run,
            args=(ident, association, accepted_at),
            name=f"dimse-{peer[0]}:{peer[1]}",
        )
        thread.daemon = True
        with self._lock:
            self._associations[ident] = (association, thread)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: the connection is dropped, not leaked
            with self._lock:
                self._associations.pop(ident, None)
            with contextlib.suppress(OSError):
                sock.close()
            self._done(ident)
            log.warning("connection dropped: no thread to serve it", extra={"peer": peer[0]})

    def _run(self, ident: int, association: Association, accepted_at: float) -> None:
        _serving.ident = ident
        association.ended = functools.partial(self._done, ident)
        try:
            association.run(accepted_at)
        finally:
            with self._lock:
                self._associations.pop(ident, None)
            association.finish()  # its line, then "done" (both sent already if released)

    def _done(self, ident: int) -> None:
        self.tell.tell_published()  # the connection's last commits, before its end
        with contextlib.suppress(ChannelClosed):
            self.tell.send("done", ident)


_PLAIN = (str, int, float, bool, type(None))


class _ForwardHandler(logging.Handler):
    """Every record to the listening process, which writes it as its own."""

    def __init__(self, tell: _Tell) -> None:
        super().__init__()
        self._tell = tell

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {k: v if isinstance(v, _PLAIN) else str(v) for k, v in vars(record).items()}
            fields["msg"] = record.getMessage()
            fields["args"] = None
            fields["exc_info"] = None
            if record.exc_info:
                fields["exc_text"] = logging.Formatter().formatException(record.exc_info)
            self._tell.send("log", fields)
        except ChannelClosed:
            pass
        except Exception:
            self.handleError(record)


def serve(channel_fd: int) -> int:
    """A receive process's life (forked by the fork server for ``ReceiveProcesses``)."""
    for number in (signal.SIGINT, signal.SIGTERM):  # the listening process decides the end
        signal.signal(number, signal.SIG_IGN)
    channel = _Channel(socket.socket(fileno=channel_fd), patient=True)
    try:
        message, _ = channel.receive()
    except ChannelClosed:  # forked late: the start that asked for it has given up
        return 0
    spec = message[1]
    assert message[0] == "spec" and isinstance(spec, ProcessSpec)
    logs.configure()  # the hooks for uncaught exceptions; the output is the listener's
    root = logging.getLogger()
    tell = _Tell(channel)
    root.handlers[:] = [_ForwardHandler(tell)]
    for name, level in spec.log_levels.items():
        logging.getLogger(name or None).setLevel(level)
    metrics.forward_receiver_figures(tell.figure)
    try:
        server = _Server(channel, tell, spec)
    except Exception:
        log.exception("receive process could not start")
        return 1
    channel.send(("ready",))
    server.run()
    return 0
