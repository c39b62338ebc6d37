"""The local pipeline's status page: live figures, associations, retries and dead letters.

A standard-library HTTP server on 127.0.0.1 by default (``--ui_port``; 0, the default, serves
nothing). It reads; the one thing it changes is the queue, by requeueing dead letters, and only
for a request from the page itself:
- the Host header must name this server (a page on another site cannot reach it through DNS
  rebinding, for reading or for writing);
- a POST must carry the page's CSRF token, a random value made once per process;
- a POST's Origin, when present, must be this server, and its Sec-Fetch-Site, when present,
  same-origin (or none: typed in the address bar).
Anything else gets 403 and changes nothing.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast
from urllib.parse import parse_qs, urlsplit

from ingest.adapters.sqlite_queue import SqliteQueue
from ingest.contracts.settings import (
    ConfigError,
    PortInUse,
    build,
    flags_of,
    listening_on,
    port,
    setting,
)

from .recent_associations import RecentAssociations
from .status_view import Snapshot, render, render_error

log = logging.getLogger(__name__)

ROWS = 50  # retrying messages and dead letters shown
MAX_FORM_BYTES = 4096
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
_WILDCARD = ("0.0.0.0", "::", "")  # noqa: S104  (compared with, not bound to)
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: with it, Chromium sends "Origin: null" on the page's own form.
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
}


@dataclass(frozen=True, slots=True)
class StatusPageConfig:
    # The flag's 0 means no page (cli); a config built in code with 0 gets a port from the OS.
    ui_port: int = setting("port of the local status page in a browser (0: no page)", 0, port)
    ui_address: str = setting(
        "address the status page listens on (it has no login: keep it on loopback)", "127.0.0.1"
    )

    def __post_init__(self) -> None:
        if not 0 <= self.ui_port <= 65535:
            raise ConfigError(f"--ui_port: {self.ui_port} is not a port number")
        if not self.ui_address.strip():
            raise ConfigError("--ui_address must not be empty")

    @classmethod
    def from_values(cls, values: dict[str, object]) -> StatusPageConfig:
        return build(cls, values)


FLAGS = flags_of(StatusPageConfig)


class Refused(Exception):
    def __init__(self, status: HTTPStatus, text: str) -> None:
        super().__init__(text)
        self.status = status


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    page: StatusPage


class _Server6(_Server):
    address_family = socket.AF_INET6


class StatusPage:
    """Bound on construction (a taken port fails at start-up); ``start`` serves, ``stop`` ends."""

    def __init__(
        self,
        config: StatusPageConfig,
        queue: SqliteQueue,
        associations: RecentAssociations,
        ae_title: str,
        dimse_port: Callable[[], int],
    ) -> None:
        self._queue = queue
        self._associations = associations
        self._ae_title = ae_title
        self._dimse_port = dimse_port
        self.token = secrets.token_urlsafe(32)
        server_class = _Server6 if ":" in config.ui_address else _Server
        try:
            with listening_on("ui_port", config.ui_port):
                self._server = server_class((config.ui_address, config.ui_port), _Handler)
        except PortInUse:
            raise
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError(
                f"--ui_port {config.ui_port}: cannot listen on {config.ui_address}: {reason}"
            ) from exc
        self._server.page = self
        self.address = config.ui_address
        self.port = int(self._server.server_address[1])
        self.hosts = self._allowed_hosts()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = self.address if self.address not in _WILDCARD else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    def _allowed_hosts(self) -> frozenset[str]:
        names = set(_LOOPBACK)
        if self.address in _WILDCARD:
            names |= {socket.gethostname(), socket.getfqdn()}
        else:
            names.add(f"[{self.address}]" if ":" in self.address else self.address)
        return frozenset(f"{name.lower()}:{self.port}" for name in names)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="status-page", daemon=True
        )
        self._thread.start()
        if self.address not in ("127.0.0.1", "localhost", "::1"):
            log.warning(
                "the status page listens on %s: whoever reaches it sees UIDs and can requeue"
                " dead letters; it has no login",
                self.address,
            )
        log.info("status page: %s", self.url, extra={"ui_port": self.port})

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def snapshot(self) -> Snapshot:
        return Snapshot(
            now=time.time(),
            ae_title=self._ae_title,
            dimse_port=self._dimse_port(),
            stats=self._queue.stats(),
            retrying=self._queue.retrying(ROWS),
            dead_letters=self._queue.dead_letters(ROWS),
            associations=self._associations.latest(),
        )

    def requeue(self, form: dict[str, list[str]]) -> int:
        token = form.get("csrf", [""])[0]
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            raise Refused(HTTPStatus.FORBIDDEN, "the form's token is missing or out of date")
        ids, every = form.get("id", []), form.get("all")
        if every == ["1"] and not ids:
            moved = self._queue.requeue(None)
        elif every is None and len(ids) == 1 and ids[0].isascii() and ids[0].isdigit():
            moved = self._queue.requeue(ids)
        else:
            raise Refused(HTTPStatus.BAD_REQUEST, "requeue takes one message id, or all=1")
        log.info("status page: requeued %d dead letter(s)", moved, extra={"message_ids": ids})
        return moved


def _notice(query: str) -> str | None:
    requeued = parse_qs(query).get("requeued", [""])[0]
    if not (requeued.isascii() and requeued.isdigit()):
        return None
    if requeued == "0":
        return "Nothing was requeued: that dead letter is no longer there."
    return f"Requeued {int(requeued)} message(s); they are uploaded again."


class _Handler(BaseHTTPRequestHandler):
    server_version = "dicom-ingest"
    sys_version = ""
    timeout = 10  # a client that stops sending holds a thread no longer than this

    @property
    def _page(self) -> StatusPage:
        return cast(_Server, self.server).page

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def _get(self) -> tuple[HTTPStatus, str, str | None]:
        self._check_host()
        url = urlsplit(self.path)
        if url.path != "/":
            raise Refused(HTTPStatus.NOT_FOUND, "no such page")
        page = self._page
        return HTTPStatus.OK, render(page.snapshot(), page.token, _notice(url.query)), None

    def _post(self) -> tuple[HTTPStatus, str, str | None]:
        self._check_host()
        if urlsplit(self.path).path != "/requeue":
            raise Refused(HTTPStatus.NOT_FOUND, "no such action")
        self._check_same_origin()
        moved = self._page.requeue(self._form())
        return HTTPStatus.SEE_OTHER, "", f"/?requeued={moved}"

    def _check_host(self) -> None:
        host = (self.headers.get("Host") or "").strip().lower()
        if host not in self._page.hosts:
            raise Refused(HTTPStatus.FORBIDDEN, "this page answers only under its own address")

    def _check_same_origin(self) -> None:
        site = self.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            raise Refused(HTTPStatus.FORBIDDEN, "a request from another site is refused")
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower() not in {f"http://{h}" for h in self._page.hosts}:
            raise Refused(HTTPStatus.FORBIDDEN, "a request from another site is refused")

    def _form(self) -> dict[str, list[str]]:
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise Refused(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the page's form")
        length = self.headers.get("Content-Length") or ""
        if not (length.isascii() and length.isdigit()):
            raise Refused(HTTPStatus.LENGTH_REQUIRED, "a Content-Length is required")
        if int(length) > MAX_FORM_BYTES:
            raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "the form is too large")
        body = self.rfile.read(int(length))
        try:
            return parse_qs(body.decode("ascii"), max_num_fields=8)
        except (UnicodeDecodeError, ValueError) as exc:
            raise Refused(HTTPStatus.BAD_REQUEST, "the form cannot be read") from exc

    def _answer(self, action: Callable[[], tuple[HTTPStatus, str, str | None]]) -> None:
        try:
            status, html, location = action()
        except Refused as refused:
            if refused.status is HTTPStatus.FORBIDDEN:
                path = self.path[:200]
                log.warning("status page refused a request: %s", refused, extra={"path": path})
            status, html, location = (
                refused.status,
                render_error(refused.status, str(refused)),
                None,
            )
        except Exception:  # the page fails, the pipeline goes on; the log says why
            log.exception("status page request failed")
            status, location = HTTPStatus.INTERNAL_SERVER_ERROR, None
            html = render_error(status, "the status could not be read; see the log")
        body = html.encode()
        self.send_response(status)
        for name, value in _HEADERS.items():
            self.send_header(name, value)
        if location is not None:
            self.send_header("Location", location)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("status page: " + format, *args)  # the request line: method, path, status
