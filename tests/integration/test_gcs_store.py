"""The Cloud Storage object store against fake-gcs-server, through the real client."""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import google_crc32c
import pytest
import requests
from google.cloud import storage
from support.gcs import FakeGcs
from support.net import refusing_port

from ingest.adapters.gcs import MULTIPART_LIMIT, GcsObjectStore, make_storage_client
from ingest.contracts.ports import ObjectMissing, ObjectStoreError, ObjectSuperseded
from receiver.part10 import crc32c_b64 as _crc_b64

KEY = "1.2.3/1.2.3.4/1.2.3.4.5.dcm"


def crc32c_b64(data: bytes) -> str:
    return _crc_b64(google_crc32c.value(data))


@pytest.fixture
def store(fake_gcs: FakeGcs, tmp_path: Path) -> GcsObjectStore:
    bucket = fake_gcs.new_bucket()
    return GcsObjectStore(make_storage_client(4), bucket, "site-a/dicom", tmp_path / "staging")


def _stage(store: GcsObjectStore, data: bytes) -> Path:
    path = store.reserve(KEY)
    path.write_bytes(data)
    return path


def _put(store: GcsObjectStore, data: bytes) -> tuple[str, str]:
    stored = store.put(KEY, _stage(store, data), len(data), crc32c_b64(data))
    return stored.uri, stored.generation


def test_put_writes_the_object_under_the_prefix_and_consumes_the_staged_file(
    store: GcsObjectStore, fake_gcs: FakeGcs
) -> None:
    data = b"DICM" + os.urandom(5000)
    staged = _stage(store, data)
    stored = store.put(KEY, staged, len(data), crc32c_b64(data))
    assert stored.uri == f"gs://{store.bucket}/site-a/dicom/{KEY}"
    assert not staged.exists()
    blob = fake_gcs.client.bucket(store.bucket).get_blob(f"site-a/dicom/{KEY}")
    assert blob is not None
    assert str(blob.generation) == stored.generation
    assert blob.download_as_bytes() == data
    assert blob.crc32c == crc32c_b64(data)
    assert blob.content_type == "application/dicom"


def test_open_streams_exactly_that_generation(store: GcsObjectStore) -> None:
    data = os.urandom(3 << 20)
    uri, generation = _put(store, data)
    with store.open(uri, generation) as reader:
        assert reader.size == len(data)
        assert reader.crc32c == crc32c_b64(data)
        chunks = []
        while chunk := reader.read(100_000):
            chunks.append(chunk)
    assert b"".join(chunks) == data


def test_large_instances_are_uploaded_in_resumable_chunks(store: GcsObjectStore) -> None:
    data = os.urandom(MULTIPART_LIMIT * 2 + 12345)
    uri, generation = _put(store, data)
    with store.open(uri, generation) as reader:
        assert reader.read() == data


def test_a_newer_receipt_supersedes_the_older_generation(store: GcsObjectStore) -> None:
    old_uri, old_generation = _put(store, b"old bytes")
    new_uri, new_generation = _put(store, b"new bytes")
    assert old_uri == new_uri
    assert int(new_generation) > int(old_generation)
    with pytest.raises(ObjectSuperseded):
        store.open(old_uri, old_generation)
    with store.open(new_uri, new_generation) as reader:
        assert reader.read() == b"new bytes"


def test_a_deleted_object_is_missing_not_superseded(store: GcsObjectStore) -> None:
    uri, generation = _put(store, b"bytes")
    assert store.delete(uri, generation)
    assert not store.delete(uri, generation)
    with pytest.raises(ObjectMissing):
        store.open(uri, generation)


def test_delete_leaves_a_newer_generation_alone(store: GcsObjectStore) -> None:
    uri, old = _put(store, b"old")
    _, new = _put(store, b"new")
    assert not store.delete(uri, old)
    with store.open(uri, new) as reader:
        assert reader.read() == b"new"


def test_a_checksum_the_server_does_not_confirm_is_a_failed_write(
    store: GcsObjectStore, fake_gcs: FakeGcs
) -> None:
    data = b"payload"
    with pytest.raises(ObjectStoreError, match="different bytes"):
        store.put(KEY, _stage(store, data), len(data), crc32c_b64(b"something else"))
    assert fake_gcs.objects(store.bucket) == {}


def test_an_unreachable_storage_fails_within_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{refusing_port()}")
    store = GcsObjectStore(storage.Client(project="p"), "bucket", "", tmp_path, timeout=1.0)
    with pytest.raises(ObjectStoreError, match="upload failed"):
        store.put(KEY, _stage(store, b"x"), 1, crc32c_b64(b"x"))


def test_bad_uris_and_generations_are_missing(store: GcsObjectStore) -> None:
    with pytest.raises(ObjectMissing):
        store.open("file:///spool/x.dcm", "1")
    with pytest.raises(ObjectMissing):
        store.open(f"gs://{store.bucket}/{KEY}", "not-a-number")


def test_a_read_stays_on_its_generation_while_the_object_is_overwritten(
    store: GcsObjectStore,
) -> None:
    first = b"A" * (20 << 20)
    uri, generation = _put(store, first)
    with store.open(uri, generation) as reader:
        head = reader.read(1 << 20)  # the rest comes in later range requests
        _put(store, b"B" * len(first))
        # Without object versioning generation A is gone: the read fails, never B's bytes.
        with pytest.raises(OSError):
            reader.read()
    assert len(head) == 1 << 20


class _FlakyProxy:
    """Forwards to the storage server, answering the first ``failures`` uploads with 503."""

    def __init__(self, upstream: str, failures: int) -> None:
        self.failures = failures
        self.uploads = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if self.command == "POST" and "/upload/" in self.path:
                    outer.uploads += 1
                    if outer.failures > 0:
                        outer.failures -= 1
                        self.send_response(503)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                reply = requests.request(
                    self.command, upstream + self.path, data=body, headers=headers, timeout=30
                )
                payload = reply.content
                self.send_response(reply.status_code)
                for key, value in reply.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_transient_storage_failure_is_retried_within_the_timeout(
    fake_gcs: FakeGcs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = fake_gcs.new_bucket()
    proxy = _FlakyProxy(fake_gcs.url, failures=2)
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        store = GcsObjectStore(storage.Client(project="p"), bucket, "", tmp_path, timeout=20.0)
        stored = store.put(KEY, _stage(store, b"payload"), 7, crc32c_b64(b"payload"))
    finally:
        proxy.stop()
    assert proxy.uploads == 3
    assert fake_gcs.objects(bucket) == {KEY: b"payload"}
    assert stored.generation
