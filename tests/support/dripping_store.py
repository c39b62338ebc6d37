"""An HTTP server that answers a byte at a time, forever, or reads a request that way.

Modes, chosen per request by ``drips(head_and_body) -> mode | None``:

- ``"body"``: reads the request, sends status and headers promising a long body, then one byte
  of it every ``interval`` seconds;
- ``"headers"``: reads the request, sends the status line, then one byte of a header line every
  ``interval`` seconds, never ending the headers;
- ``"intake"``: reads the request body one byte every ``interval`` seconds, never answering;
- ``None``: answers STOW-RS with every instance referenced, anything else with 204.

Each connection records when the peer went away (its end was closed or reset), so a test can
check the request was cut rather than abandoned with its connection open.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from support.fake_dicomweb import parse_multipart, referenced

Mode = str | None


@dataclass
class Connection:
    mode: Mode = None
    closed_at: float | None = None
    requests: int = 0


@dataclass
class DrippingStore:
    drips: Callable[[bytes], Mode] = lambda raw: "body"
    interval: float = 0.5
    tls: ssl.SSLContext | None = None  # serve HTTPS with this server context
    connections: list[Connection] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._listener.getsockname()[1]}/dicomWeb"

    def start(self) -> DrippingStore:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()

    def dripping(self) -> list[Connection]:
        with self._lock:
            return [c for c in self.connections if c.mode is not None]

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            record = Connection()
            with self._lock:
                self.connections.append(record)
            threading.Thread(target=self._serve, args=(sock, record), daemon=True).start()

    def _serve(self, sock: socket.socket, record: Connection) -> None:
        if self.tls is not None:
            try:
                sock = self.tls.wrap_socket(sock, server_side=True)
            except OSError:
                sock.close()
                return
        reader: BinaryIO = sock.makefile("rb")
        try:
            while not self._stop.is_set():
                head = self._read_head(reader)
                if head is None:
                    break
                record.requests += 1
                length = _content_length(head)
                mode = self.drips(head) if length else None
                if mode == "intake":
                    record.mode = mode
                    self._drip_intake(sock, length)
                    break
                body = reader.read(length) if length else b""
                mode = self.drips(head + body)
                record.mode = mode
                if mode is None:
                    sock.sendall(_answer(head, body))
                    continue
                if mode == "body":
                    sock.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n"
                        b"Content-Length: 1000000\r\n\r\n"
                    )
                else:
                    sock.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
                self._drip_out(sock)
                break
        except OSError:
            pass
        finally:
            if record.closed_at is None:
                record.closed_at = time.monotonic()
            reader.close()
            with contextlib.suppress(OSError):
                sock.close()

    def _read_head(self, reader: BinaryIO) -> bytes | None:
        lines = []
        while True:
            line = reader.readline()
            if not line:
                return None
            lines.append(line)
            if line in (b"\r\n", b"\n"):
                return b"".join(lines)

    def _drip_out(self, sock: socket.socket) -> None:
        """One byte every interval until the peer goes away (or the server stops)."""
        while not self._stop.is_set() and not _hung_up(sock, self.interval):
            sock.sendall(b"a")

    def _drip_intake(self, sock: socket.socket, length: int) -> None:
        for _ in range(length):
            if self._stop.is_set() or _hung_up(sock, self.interval) or sock.recv(1) == b"":
                return


def _hung_up(sock: socket.socket, wait: float) -> bool:
    """Whether the peer has closed or shut down its end within ``wait`` seconds (data it sent
    before that, still unread, does not hide it)."""
    poller = select.poll()
    poller.register(sock, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(wait * 1000))


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def _answer(head: bytes, body: bytes) -> bytes:
    fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
    kind = {k.strip().lower(): v.strip() for k, v in fields.items()}.get(b"content-type", b"")
    if head.startswith(b"POST") and kind.startswith(b"multipart/related"):
        uids = [str(ds.SOPInstanceUID) for ds in parse_multipart(kind.decode(), body)]
        data = json.dumps(referenced(uids)).encode()
        return (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n"
            + f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
    return b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
