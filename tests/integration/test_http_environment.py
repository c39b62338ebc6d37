"""The DICOMweb session reads proxy settings from the environment once per origin, and
still honours them as ``requests`` does: a proxy for the store's host, NO_PROXY to bypass."""

from __future__ import annotations

import io
import socket

import pytest
from support.datasets import ct_dataset, write
from support.fake_dicomweb import FakeDicomWeb

from ingest.adapters.dicomweb import HttpDicomWebClient, make_session


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write(ct_dataset(), tmp_path_factory.mktemp("ds") / "ct.dcm").read_bytes()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stow(client: HttpDicomWebClient, instance: bytes) -> int:
    return client.stow("1.2.3", [(io.BytesIO(instance), len(instance))]).status


def test_requests_go_through_the_environment_proxy(
    fake_dicomweb: FakeDicomWeb, monkeypatch: pytest.MonkeyPatch, instance: bytes
) -> None:
    """The fake store plays the proxy: a proxied request names the whole URL."""
    proxy = fake_dicomweb.url.rsplit("/", 1)[0]
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = HttpDicomWebClient(
        "http://store.invalid/dicomWeb", make_session("none"), timeout=(2.0, 5.0)
    )
    assert [_stow(client, instance), _stow(client, instance)] == [
        200,
        200,
    ]  # the second from the kept settings
    assert [r.path for r in fake_dicomweb.posts()] == ["http://store.invalid/dicomWeb/studies"] * 2


def test_no_proxy_bypasses_the_proxy(
    fake_dicomweb: FakeDicomWeb, monkeypatch: pytest.MonkeyPatch, instance: bytes
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = HttpDicomWebClient(fake_dicomweb.url, make_session("none"), timeout=(2.0, 5.0))
    assert [_stow(client, instance), _stow(client, instance)] == [200, 200]
    assert [r.path for r in fake_dicomweb.posts()] == ["/dicomWeb/studies"] * 2
