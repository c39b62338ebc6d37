"""A whole-request deadline for ``requests``: connect, request body, headers and response body.

A read timeout bounds each read, so a server that sends one byte every few seconds holds a
request for as long as it likes. Here a timer per request (an alarm on one thread shared by
all requests) shuts down the connection's socket when the deadline passes (below the TLS
layer, so a TLS reader sees the end, not raw records); whatever the request was doing then
fails, and the request raises ``DeadlineExceeded``, a ``requests.Timeout``. Whatever came
back before the cut is discarded: a cut in the middle of the headers can look like a short,
complete answer.

The connections a request uses are found through its pool (``_get_conn``): the adapter marks
the current request in a context variable, and the pool hands each connection it gives out
to that request's timer.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .alarms import Alarm, AlarmClock

if TYPE_CHECKING:
    from urllib3._base_connection import BaseHTTPConnection


class DeadlineExceeded(requests.Timeout):
    """The whole request took longer than its deadline and was cut."""


_DEADLINES = AlarmClock("http-deadlines")

# Bytes a request body is read and sent in: urllib3's 16 KiB made a STOW-RS of 16 CT images
# some 500 reads and sends, each a trip through the interpreter.
BODY_BLOCK_BYTES = 256 << 10


class _Watch:
    """One request's timer and the connections it has used."""

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._connections: list[BaseHTTPConnection] = []
        self._fired = False
        self._finished = False
        self._seconds = seconds
        self._alarm: Alarm | None = None

    def start(self) -> None:
        self._alarm = _DEADLINES.after(self._seconds, self._fire)

    def watch(self, connection: BaseHTTPConnection) -> None:
        with self._lock:
            self._connections.append(connection)
            fired = self._fired
        if fired:
            _cut(connection)

    def finish(self) -> bool:
        """Stop the timer; whether it had already cut the request."""
        if self._alarm is not None:
            self._alarm.cancel()
        with self._lock:
            self._finished = True
            self._connections.clear()
            return self._fired

    def _fire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self._fired = True
            connections = list(self._connections)
        for connection in connections:
            _cut(connection)


def _cut(connection: BaseHTTPConnection) -> None:
    """Wake whatever the request is doing (shutdown); closing the socket then resets the
    connection (linger 0) instead of leaving unsent body bytes queued behind a stalled peer."""
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            linger = struct.pack("ii", 1, 0)
            socket.socket.setsockopt(sock, socket.SOL_SOCKET, socket.SO_LINGER, linger)
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


_CURRENT: ContextVar[_Watch | None] = ContextVar("http_request_deadline", default=None)


def _watched(connection: BaseHTTPConnection) -> BaseHTTPConnection:
    watch = _CURRENT.get()
    if watch is not None:
        watch.watch(connection)
    return connection


class _WatchedPool(HTTPConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> BaseHTTPConnection:
        return _watched(super()._get_conn(timeout))


class _WatchedHttpsPool(HTTPSConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> BaseHTTPConnection:
        return _watched(super()._get_conn(timeout))


_POOLS = {"http": _WatchedPool, "https": _WatchedHttpsPool}


class DeadlineAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose every request ends within ``deadline`` seconds.

    The response body is read inside the deadline unless the caller asked to stream it
    (``stream=True``), in which case the deadline covers the request up to the headers.
    """

    def __init__(self, deadline: float, **kwargs: Any) -> None:
        if deadline <= 0:
            raise ValueError("the request deadline must be positive")
        self.deadline = deadline
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("blocksize", BODY_BLOCK_BYTES)
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        proxy_kwargs.setdefault("blocksize", BODY_BLOCK_BYTES)
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = dict(_POOLS)
        return manager

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        watch = _Watch(self.deadline)
        token = _CURRENT.set(watch)
        watch.start()
        try:
            response = super().send(request, stream, timeout, verify, cert, proxies)
            if not stream:
                _ = response.content  # the body too, within the deadline
        except Exception as exc:
            if watch.finish():
                raise self._exceeded(request) from exc
            raise
        finally:
            _CURRENT.reset(token)
        if watch.finish():
            response.close()
            raise self._exceeded(request)
        return response

    def _exceeded(self, request: requests.PreparedRequest) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"no complete answer within the {self.deadline:g} s request deadline; cut",
            request=request,
        )


def mount_deadline(session: requests.Session, deadline: float) -> requests.Session:
    """Give every http(s) request of ``session`` a whole-request deadline."""
    adapter = DeadlineAdapter(deadline)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
