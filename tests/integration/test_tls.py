"""DICOM TLS on its own port, tried with DCMTK's echoscu and storescu built with OpenSSL."""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from support.datasets import ct_dataset, write
from support.fake_dicomweb import FakeDicomWeb, Reply
from support.net import wait_until
from support.tls import Authority, Issued, dcmtk

from dicom_ingest.local import LocalPipeline

pytestmark = pytest.mark.slow  # real processes and timers: tens of seconds in all


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    directory = tmp_path / "pki"
    directory.mkdir()
    return Authority(directory)


@pytest.fixture
def held_store(fake_dicomweb: FakeDicomWeb) -> FakeDicomWeb:
    fake_dicomweb.responder = lambda request: Reply(503, "down for the test")
    return fake_dicomweb


def tls_pipeline(
    pipelines: Callable[..., LocalPipeline],
    store: FakeDicomWeb,
    server: Issued,
    ca: Path | None,
    **overrides: object,
) -> LocalPipeline:
    return pipelines(
        store.url,
        tls_cert=str(server.cert),
        tls_key=str(server.key),
        tls_ca=str(ca) if ca else "",
        tls_port=0,
        min_backoff=60.0,
        max_backoff=60.0,
        **overrides,
    )


def test_echo_and_store_over_tls_with_a_verified_client(
    pipelines: Callable[..., LocalPipeline],
    held_store: FakeDicomWeb,
    authority: Authority,
    tmp_path: Path,
) -> None:
    server = authority.issue("server", "localhost", server=True)
    client = authority.issue("client", "modality")
    pipeline = tls_pipeline(pipelines, held_store, server, authority.cert)
    port = pipeline.receiver.tls_port
    assert port is not None and port != pipeline.receiver.port

    echo = dcmtk("echoscu", port, client, authority.cert)
    assert echo.returncode == 0, echo.stderr

    ds = ct_dataset(seed=1)
    path = write(ds, tmp_path / "ct.dcm", ExplicitVRLittleEndian)
    store = dcmtk("storescu", port, client, authority.cert, path)
    assert store.returncode == 0, store.stderr
    stats = pipeline.queue.stats()
    assert stats.pending + stats.in_flight + stats.retrying == 1


def test_a_client_certificate_from_another_authority_is_refused(
    pipelines: Callable[..., LocalPipeline],
    held_store: FakeDicomWeb,
    authority: Authority,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = authority.issue("server", "localhost", server=True)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    stranger = Authority(other_dir, "another CA").issue("stranger", "stranger")
    pipeline = tls_pipeline(pipelines, held_store, server, authority.cert)
    port = pipeline.receiver.tls_port
    assert port is not None
    echo = dcmtk("echoscu", port, stranger, authority.cert)
    assert echo.returncode != 0

    def refused() -> list[logging.LogRecord]:
        return [
            r for r in caplog.records
            if getattr(r, "outcome", "") == "refused"
            and "TLS handshake failed" in getattr(r, "reason", "")
        ]  # fmt: skip

    wait_until(refused, 10, "the refusal's log line")
    assert len(refused()) == 1
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_plain_dimse_on_the_tls_port_is_refused(
    pipelines: Callable[..., LocalPipeline],
    held_store: FakeDicomWeb,
    authority: Authority,
) -> None:
    server = authority.issue("server", "localhost", server=True)
    pipeline = tls_pipeline(pipelines, held_store, server, None)
    port = pipeline.receiver.tls_port
    assert port is not None
    # The start of an A-ASSOCIATE-RQ where a TLS ClientHello belongs: the connection closes.
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"\x01\x00\x00\x00\x00\x44\x00\x01" + b"\x00" * 66)
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1024) == b""
    ae = AE(ae_title="PLAIN")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    # and the plain port still serves plain DIMSE
    assoc = ae.associate("127.0.0.1", pipeline.receiver.port, ae_title="IMPORTADAPTER")
    assert assoc.is_established
    assoc.release()


def test_a_stalled_handshake_is_dropped_by_the_acse_timer(
    pipelines: Callable[..., LocalPipeline],
    held_store: FakeDicomWeb,
    authority: Authority,
) -> None:
    server = authority.issue("server", "localhost", server=True)
    pipeline = tls_pipeline(pipelines, held_store, server, None, acse_timeout=1.0)
    port = pipeline.receiver.tls_port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        started = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the receiver, nothing sent
        assert time.monotonic() - started < 15


def _served_certificate(port: int, ca: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw) as sock,
    ):
        cert = sock.getpeercert(binary_form=True)
        assert cert is not None
        return cert


def test_a_renewed_certificate_is_served_without_a_restart(
    pipelines: Callable[..., LocalPipeline],
    held_store: FakeDicomWeb,
    authority: Authority,
) -> None:
    server = authority.issue("server", "localhost", server=True)
    pipeline = tls_pipeline(pipelines, held_store, server, None)
    port = pipeline.receiver.tls_port
    assert port is not None
    first = _served_certificate(port, authority.cert)
    renewed = authority.issue("renewed", "localhost", server=True)
    server.cert.write_bytes(renewed.cert.read_bytes())
    server.key.write_bytes(renewed.key.read_bytes())
    wait_until(lambda: _served_certificate(port, authority.cert) != first, 15, "the new cert")
