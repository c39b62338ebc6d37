"""The health port: ``/healthz`` (alive), ``/readyz`` (serving) and ``/metrics`` (Prometheus).

Readiness is a list of checks, each ``None`` when healthy or the reason it is not; results
are cached for a moment so probes cost little. Details are lines the ``/readyz`` body adds
whatever the verdict (the DICOM store's state, say: the pipeline stays ready to accept while
its store is down, the queue being durable). ``/metrics`` is the Prometheus text format.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ingest.contracts.metrics import Exposition
from ingest.contracts.settings import listening_on

log = logging.getLogger(__name__)

Check = Callable[[], str | None]  # None when healthy, else the reason
Detail = Callable[[], str]  # a line for the /readyz body


class HealthServer:
    """``GET /healthz`` → 200 while the process serves; ``GET /readyz`` → 200 or 503;
    ``GET /metrics`` → the metrics."""

    def __init__(
        self,
        port: int,
        alive: Check,
        ready: list[Check],
        bind: str = "0.0.0.0",  # noqa: S104 — kubelet probes come from the node
        cache_seconds: float = 2.0,
        metrics: Exposition | None = None,
        details: Sequence[Detail] = (),
        flag: str = "health_port",
    ) -> None:
        self._alive = alive
        self._ready = ready
        self._details = tuple(details)
        self._metrics = metrics or Exposition()
        self._cache_seconds = cache_seconds
        self._cached: tuple[float, str | None] | None = None
        self._lock = threading.Lock()
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._answer(200, health._metrics.render(), health._metrics.content_type)
                    return
                if path == "/healthz":
                    problem = health._alive()
                elif path == "/readyz":
                    problem = health.readiness()
                else:
                    self.send_error(404)
                    return
                lines = [problem or "ok"]
                if path == "/readyz":
                    lines += [detail() for detail in health._details]
                body = "\n".join(lines).encode() + b"\n"
                self._answer(503 if problem else 200, body, "text/plain; charset=utf-8")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds would drown the log

        with listening_on(flag, port):  # a port in use is named, with its flag
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
        """Stop serving; also for a server never started (a stop before the ready line),
        where ``shutdown`` would wait forever for a loop that never ran."""
        if self._thread.ident is not None:
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()
