"""The health server stops whether or not it was started (a stop before the ready line)."""

from __future__ import annotations

import socket
import threading

import requests

from ingest.adapters.health import HealthServer


def _stops_within(server: HealthServer, seconds: float = 10.0) -> bool:
    done = threading.Event()

    def stop() -> None:
        server.stop()
        done.set()

    threading.Thread(target=stop, daemon=True).start()
    return done.wait(seconds)


def test_a_server_never_started_stops_and_frees_its_port() -> None:
    server = HealthServer(0, alive=lambda: None, ready=[], bind="127.0.0.1")
    port = server.port
    assert _stops_within(server)
    with socket.socket() as again:  # the port is free again
        again.bind(("127.0.0.1", port))


def test_a_started_server_answers_then_stops() -> None:
    server = HealthServer(0, alive=lambda: None, ready=[], bind="127.0.0.1")
    server.start()
    answer = requests.get(f"http://127.0.0.1:{server.port}/healthz", timeout=10)
    assert answer.status_code == 200
    assert _stops_within(server)
