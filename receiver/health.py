"""Health endpoints for Kubernetes probes: ``/healthz`` (alive) and ``/readyz`` (serving DICOM).

Readiness is a real C-ECHO from this process to its own DIMSE port, so "ready" means an
association can be made and answered; extra checks (the spool shipper's state, say) can be
added. Results are cached for a moment so probes cost little.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pynetdicom import AE

from ingest.contracts.settings import listening_on

from .config import HEALTH_CHECK_AE

VERIFICATION = "1.2.840.10008.1.1"

log = logging.getLogger(__name__)

Check = Callable[[], str | None]  # None when healthy, else the reason


def echo_check(
    port: int,
    called_ae: str,
    listening: Callable[[], bool] = lambda: True,
    saturated: Callable[[], bool] = lambda: False,
    timeout: float = 1.5,
    host: str = "127.0.0.1",
    probe: bool = True,
) -> Check:
    """A check that opens an association to ``127.0.0.1:port`` and sends C-ECHO.

    A receiver at its association limit would refuse the check's own association; it is
    serving, so the check then only asks that the port accepts connections. Each step waits
    at most ``timeout``, so the whole check stays within a 5 s probe. Without ``probe`` (a
    receiver that serves only DICOM TLS, where the check would need a client certificate)
    only the listener is checked.
    """

    def check() -> str | None:
        # No bare TCP probe: the receiver would hold such a connection open for an
        # association request until its ACSE timeout.
        if not listening():
            return "the DIMSE listener has stopped"
        if saturated() or not probe:
            return None
        ae = AE(ae_title=HEALTH_CHECK_AE)
        ae.add_requested_context(VERIFICATION)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        assoc = ae.associate(host, port, ae_title=called_ae)
        if not assoc.is_established:
            return "C-ECHO association to the receiver was not accepted"
        try:
            status = assoc.send_c_echo()
        finally:
            assoc.release()
        if not status or getattr(status, "Status", None) != 0:
            return "C-ECHO to the receiver did not succeed"
        return None

    return check


class HealthServer:
    """``GET /healthz`` → 200 while the process serves; ``GET /readyz`` → 200 or 503."""

    def __init__(
        self,
        port: int,
        alive: Check,
        ready: list[Check],
        bind: str = "0.0.0.0",  # noqa: S104 — kubelet probes come from the node
        cache_seconds: float = 2.0,
        flag: str = "health_port",
    ) -> None:
        self._alive = alive
        self._ready = ready
        self._cache_seconds = cache_seconds
        self._cached: tuple[float, str | None] | None = None
        self._lock = threading.Lock()
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/healthz":
                    problem = health._alive()
                elif self.path == "/readyz":
                    problem = health.readiness()
                else:
                    self.send_error(404)
                    return
                body = (problem or "ok").encode() + b"\n"
                self.send_response(503 if problem else 200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds would drown the log

        with listening_on(flag, port):
            self._server = ThreadingHTTPServer((bind, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def readiness(self) -> str | None:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self._cache_seconds:
                return self._cached[1]
            problem = None
            for check in self._ready:
                try:
                    problem = check()
                except Exception as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                if problem:
                    break
            if problem:
                log.warning("not ready: %s", problem)
            self._cached = (time.monotonic(), problem)
            return problem

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
