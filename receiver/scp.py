"""The storage SCP's listener: connections, slots, drain.

One thread per connection (``Association``). A connection holds no association slot until
its A-ASSOCIATE-RQ has been accepted, so connections that never negotiate (a port scan, a
peer that sends six bytes and waits) cannot lock a PACS out: they are bounded in number
(``PENDING_LIMIT``), per source address (``--max_connections_per_host``) and in time
(``--acse_timeout``). Threads rather than asyncio: each C-STORE ends in blocking work
(write, fsync, queue commit) that would go to a thread pool anyway, and the per-instance
path stays one straight function (benchmarks/bench_receive.py measures the concurrency).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ingest.adapters.private_files import make_private_dir
from ingest.contracts.settings import listening_on

from .acse_codec import check_pynetdicom
from .association import Association, Transfer
from .config import ReceiverConfig
from .free_space import SpaceGuard
from .processes import ReceiveProcesses, RemoteAssociation
from .sop_classes import is_storage_sop_class
from .staging import StagingFiles
from .store import StoreService
from .tls import TlsContexts

log = logging.getLogger(__name__)

# Connections that have not finished negotiating, from every address together.
PENDING_LIMIT = 64
_ACCEPT_POLL = 0.25  # how often the listener looks at its stop flag


def _listen(host: str, port: int, flag: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with listening_on(flag, port):
        listener = socket.create_server((host, port), family=family, backlog=128)
    listener.setblocking(False)
    return listener


class _RefusalLog:
    """Connections refused at the door, logged at most once per address per interval with
    how many there were, so a flood of connections is not a flood of log lines."""

    INTERVAL = 10.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._counts: collections.Counter[str] = collections.Counter()

    def note(self, host: str, reason: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._counts[host] += 1
            if now - self._last.get(host, -self.INTERVAL) < self.INTERVAL:
                return
            count = self._counts.pop(host)
            self._last[host] = now
            if len(self._last) > 4096:  # forget quiet addresses
                self._last = {h: t for h, t in self._last.items() if now - t < self.INTERVAL}
        log.warning("connection refused: %s", reason, extra={"peer": host, "refused": count})


class Receiver:
    """A running storage SCP; ``stop`` drains associations within the grace period."""

    def __init__(
        self,
        config: ReceiverConfig,
        service: StoreService,
        staging: Path,
        *,
        anonymous_staging: bool = False,
        processes: ReceiveProcesses | None = None,
    ) -> None:
        """``anonymous_staging``: staging files with no name of their own, for an object
        store that links them into place and no reader of staging files by name (see
        ``receiver.staging``). ``processes``: serve associations in these receive processes
        (``receiver.processes``) instead of this one's threads."""
        check_pynetdicom()
        self._processes = processes
        self.config = config
        self._service = service
        self._staging = StagingFiles(staging, anonymous=anonymous_staging)
        make_private_dir(staging, parents=True)
        self._space = SpaceGuard(staging, config.min_free_bytes, config.min_free_percent)
        self._tls = TlsContexts(config.tls_files) if config.tls_files else None
        # (listening socket, TLS contexts or None for plain TCP)
        self._listeners: list[tuple[socket.socket, TlsContexts | None]] = []
        if not config.tls_only:
            listener = _listen(config.dimse_bind, config.dimse_port, "dimse_port")
            self._listeners.append((listener, None))
        if self._tls is not None:
            listener = _listen(config.dimse_bind, config.tls_port, "tls_port")
            self._listeners.append((listener, self._tls))
        self._lock = threading.Lock()
        # A connection served here has its thread; one a receive process serves, None.
        self._connections: dict[Association | RemoteAssociation, threading.Thread | None] = {}
        self._per_host: collections.Counter[str] = collections.Counter()
        self._per_host_associations: collections.Counter[str] = collections.Counter()
        self._refusals = _RefusalLog()
        self._pending = 0
        self._associations = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="dimse-listener")
        self._thread.daemon = True

    @property
    def port(self) -> int:
        """The plain DIMSE port (the TLS port with --tls_only)."""
        return int(self._listeners[0][0].getsockname()[1])

    @property
    def tls_port(self) -> int | None:
        for listener, tls in self._listeners:
            if tls is not None:
                return int(listener.getsockname()[1])
        return None

    def start(self) -> None:
        if self._processes is not None:
            self._processes.start(self)
        self._thread.start()
        log.debug("listening", extra={"ae_title": self.config.dimse_aet, "port": self.port})

    def serving(self) -> bool:
        """True while the listener thread runs."""
        return self._thread.is_alive()

    def receive_process_ids(self) -> list[int]:
        """The receive processes serving the associations (none: this process serves them)."""
        return [] if self._processes is None else self._processes.pids()

    def active_associations(self) -> int:
        with self._lock:
            return self._associations

    def open_connections(self) -> int:
        """Connections being served, negotiating or associated."""
        with self._lock:
            return len(self._connections)

    def transfers(self) -> Iterator[Transfer]:
        """The C-STORE datasets being received right now."""
        with self._lock:
            associations = list(self._connections)
        for association in associations:
            transfer = association.transfer  # None for a receive process's: not visible here
            if transfer is not None:
                yield transfer

    def _is_storage(self, uid: str) -> bool:
        return is_storage_sop_class(
            uid,
            storage_root=self.config.accept_storage_root,
            extra=self.config.extra_sop_classes,
        )

    # -- the gate the associations use --------------------------------------------------------

    def acquire(self, address: str) -> bool:
        """Turn a negotiating connection into an association, if a slot is free and the
        address does not hold its share already (never every slot, when there are two)."""
        config = self.config
        share = min(config.max_connections_per_host, max(1, config.max_associations - 1))
        with self._lock:
            if self._associations >= config.max_associations:
                return False
            if self._per_host_associations[address] >= share:
                return False
            self._associations += 1
            self._per_host_associations[address] += 1
            self._pending -= 1
            return True

    def stopping(self) -> bool:
        return self._stopping.is_set()

    # -- connections --------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            for listening, tls in self._listeners:
                selector.register(listening, selectors.EVENT_READ, tls)
            while not self._stopping.is_set():
                for key, _ in selector.select(_ACCEPT_POLL):
                    ready = key.fileobj
                    assert isinstance(ready, socket.socket)
                    try:
                        sock, peer = ready.accept()
                    except BlockingIOError:
                        continue  # another event took it
                    except OSError:
                        if self._stopping.is_set():
                            return
                        time.sleep(_ACCEPT_POLL)  # e.g. out of file descriptors: back off
                        continue
                    tls = key.data.current() if key.data is not None else None
                    self._admit(sock, (str(peer[0]), int(peer[1])), tls)

    def _admit(
        self, sock: socket.socket, peer: tuple[str, int], tls: ssl.SSLContext | None
    ) -> None:
        accepted_at = time.monotonic()
        host = peer[0]
        evicted = None
        with self._lock:
            refusal = None
            if self._per_host[host] >= self.config.max_connections_per_host:
                refusal = "too many connections from this address"
            else:
                if self._pending >= PENDING_LIMIT:
                    # The pool is full of connections that have not associated: the oldest
                    # goes, so a few addresses holding it cannot lock every PACS out.
                    evicted = min(
                        (a for a in self._connections if not a.holds_slot and not a.closing),
                        key=lambda a: a.accepted_at,
                        default=None,
                    )
                self._per_host[host] += 1
                self._pending += 1
        if evicted is not None:
            evicted.close("evicted", "too many connections negotiating; the oldest goes")
        if refusal is not None:
            self._refusals.note(host, refusal)
            with contextlib.suppress(OSError):
                sock.close()
            return
        with contextlib.suppress(OSError):
            # Many PACS leave Nagle on; the receiver answers each request in one segment.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._processes is not None and self._hand_over(sock, peer, tls, accepted_at):
            return
        association = Association(
            sock,
            peer,
            self.config,
            self._service,
            self._staging,
            self,
            self._is_storage,
            tls,
            space=self._space,
        )
        association.accepted_at = accepted_at
        thread = threading.Thread(
            target=self._serve, args=(association, accepted_at), name=f"dimse-{host}:{peer[1]}"
        )
        thread.daemon = True
        with self._lock:
            self._connections[association] = thread
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: this connection is dropped, not leaked
            self._release(association)
            with contextlib.suppress(OSError):
                sock.close()
            log.warning("connection dropped: no thread to serve it", extra={"peer": host})

    def _hand_over(
        self,
        sock: socket.socket,
        peer: tuple[str, int],
        tls: ssl.SSLContext | None,
        accepted_at: float,
    ) -> bool:
        """Give the connection to a receive process; False when none is running (while one
        is replaced after a crash), and this process serves it."""
        assert self._processes is not None

        def register(remote: RemoteAssociation, served: bool) -> None:
            with self._lock:  # before the process can answer for it, or not at all
                if served:
                    self._connections[remote] = None
                else:
                    self._connections.pop(remote, None)

        remote = self._processes.dispatch(sock, peer, tls is not None, accepted_at, register)
        if remote is None:
            log.warning(
                "no receive process running or answering: the listening process serves"
                " this connection",
                extra={"peer": peer[0]},
            )
        return remote is not None

    def release(self, connection: RemoteAssociation) -> None:
        """A receive process's connection has ended (``processes.Door``)."""
        self._release(connection)

    def _serve(self, association: Association, accepted_at: float) -> None:
        try:
            association.run(accepted_at)
        finally:
            self._release(association)
            association.finish()  # its line (written already if it was released)

    def _release(self, association: Association | RemoteAssociation) -> None:
        """Give back what a connection held: its place, its address's count, its slot."""
        with self._lock:
            self._connections.pop(association, None)
            self._uncount(association.address, association.holds_slot)

    def _uncount(self, address: str, holds_slot: bool) -> None:
        """(Caller holds the lock.)"""
        self._per_host[address] -= 1
        if self._per_host[address] <= 0:
            del self._per_host[address]
        if holds_slot:
            self._associations -= 1
            self._per_host_associations[address] -= 1
            if self._per_host_associations[address] <= 0:
                del self._per_host_associations[address]
        else:
            self._pending -= 1

    # -- stop ---------------------------------------------------------------------------------

    def stop(self, grace: float | None = None, hurry: threading.Event | None = None) -> bool:
        """Stop accepting, let associations finish, abort what is left; True if all finished.

        ``hurry``, once set (a second signal), ends the grace period at once.
        """
        grace = self.config.shutdown_grace if grace is None else grace
        hurry = hurry or threading.Event()
        self._stopping.set()
        if self._processes is not None:
            self._processes.stopping()
        if self._thread.ident is not None:  # stopped before it was started: nothing to join
            self._thread.join(timeout=5)
        for listener, _ in self._listeners:
            with contextlib.suppress(OSError):
                listener.close()
        with self._lock:
            negotiating = [a for a in self._connections if not a.holds_slot]
        for association in negotiating:  # they hold nothing yet: no reason to wait for them
            association.close()
        deadline = time.monotonic() + grace
        while self.active_associations() and time.monotonic() < deadline:
            if hurry.wait(0.05):
                break
        with self._lock:
            remaining = dict(self._connections)
        for association in remaining:  # each logs its own line: "aborted at shutdown"
            association.close()
        joined_by = time.monotonic() + 5
        for thread in remaining.values():
            if thread is not None:
                thread.join(timeout=max(0.0, joined_by - time.monotonic()))
        while time.monotonic() < joined_by:  # a receive process's: ended when it says so
            with self._lock:
                if not any(a in self._connections for a in remaining):
                    break
            time.sleep(0.02)
        if self._processes is not None:
            self._processes.stop()
        return not any(a.holds_slot for a in remaining)
