"""The object store port on Cloud Storage: one object per instance, addressed by generation.

An instance is written to ``gs://<bucket>/<prefix>/<study>/<series>/<sop>.dcm`` from the
receiver's staged file, with a CRC32C the client checks against the one the server computed.
The message names the generation that write created; a reader asks for exactly that
generation and is told "superseded" when a newer receipt of the same instance replaced it.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import google_crc32c
import requests
from google.api_core import exceptions as api_exceptions
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY
from requests.adapters import HTTPAdapter

from ingest.contracts.ports import ObjectMissing, ObjectStoreError, ObjectSuperseded, StoredObject

from .private_files import is_anonymous, make_private_dir

log = logging.getLogger(__name__)

# Uploads at or below this size go in one request; larger ones are resumable, in chunks.
MULTIPART_LIMIT = 8 << 20
CHUNK_SIZE = 16 << 20  # a multiple of 256 KiB, as resumable uploads require
READ_CHUNK_SIZE = 8 << 20


def make_storage_client(pool_size: int = 32, project: str | None = None) -> storage.Client:
    """One client per process. ``STORAGE_EMULATOR_HOST`` points it at an emulator."""
    client = storage.Client(project=project)
    # Concurrent associations share the client: give its connection pool room for all of them,
    # so connections stay warm instead of being opened and discarded.
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    session: Any = client._http
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return client


def parse_gs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/name`` → (bucket, name)."""
    if not uri.startswith("gs://"):
        raise ObjectMissing(f"not a Cloud Storage URI: {uri}")
    bucket, _, name = uri[len("gs://") :].partition("/")
    if not bucket or not name:
        raise ObjectMissing(f"not a Cloud Storage object URI: {uri}")
    return bucket, name


class _BlobRaw(io.RawIOBase):
    """Raw reads of one object generation, checked against its CRC32C at the end.

    The download is pinned to the generation by its URL, and the bytes are checksummed as
    they stream: a mismatch raises ``OSError`` before the last byte is handed over, so an
    upload built from this reader fails instead of sending other bytes.
    """

    def __init__(self, blob: storage.Blob, size: int, crc32c: str, chunk_size: int) -> None:
        super().__init__()
        self._reader = blob.open("rb", chunk_size=chunk_size)
        self._remaining = size
        self._expected = crc32c
        self._checksum = google_crc32c.Checksum()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._reader.read(min(len(view), max(self._remaining, 1)))
        except api_exceptions.NotFound as exc:
            raise OSError(f"object generation disappeared while being read: {exc}") from exc
        except api_exceptions.GoogleAPIError as exc:
            raise OSError(f"Cloud Storage read failed: {exc}") from exc
        self._remaining -= len(data)
        self._checksum.update(data)
        if self._remaining < 0:
            raise OSError("object generation is longer than its metadata says")
        if self._remaining == 0 and self._expected:
            got = base64.b64encode(self._checksum.digest()).decode("ascii")
            if got != self._expected:
                raise OSError("bytes read do not match the object generation's CRC32C")
            self._expected = ""  # checked once
        if not data and self._remaining > 0:
            raise OSError("object generation ended early")
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()


class GcsReader(io.BufferedReader):
    """A streamed read of one object generation, with the size and CRC32C the server holds."""

    def __init__(self, blob: storage.Blob, size: int, crc32c: str) -> None:
        super().__init__(_BlobRaw(blob, size, crc32c, READ_CHUNK_SIZE), buffer_size=1 << 20)
        self.size = size
        self.crc32c = crc32c


class GcsObjectStore:
    """Instances as Cloud Storage objects; staging files on local disk before upload."""

    def __init__(
        self,
        client: storage.Client,
        bucket: str | None,  # where ``put`` writes; None for a store that only reads
        prefix: str,
        staging: Path,  # local files written before upload (the receiver's side only)
        timeout: float = 60.0,
    ) -> None:
        self._client = client
        self._bucket_name = bucket or ""
        self._writable = client.bucket(bucket) if bucket else None
        self._prefix = prefix.strip("/")
        self._staging = staging
        make_private_dir(self._staging, parents=True)  # mkstemp files are 0600
        self._timeout = timeout
        # The library's own predicate: 408, 429, 5xx, connection resets and timeouts; the
        # whole operation, retries included, within ``timeout``.
        self._retry = DEFAULT_RETRY.with_timeout(timeout).with_delay(initial=0.1, maximum=5.0)

    @property
    def bucket(self) -> str:
        return self._bucket_name

    @property
    def prefix(self) -> str:
        return self._prefix

    def name_for(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    def uri_for(self, key: str) -> str:
        return f"gs://{self._bucket_name}/{self.name_for(key)}"

    def reserve(self, key: str) -> Path:
        fd, path = tempfile.mkstemp(prefix="part10-", suffix=".dcm", dir=self._staging)
        os.close(fd)
        return Path(path)

    def put(self, key: str, staged: Path, size: int, crc32c: str) -> StoredObject:
        with open(staged, "rb") as source:
            stored = self.upload(key, source, size, crc32c)
        if not is_anonymous(staged):  # an anonymous file goes when its descriptor closes
            staged.unlink(missing_ok=True)
        return stored

    def upload(self, key: str, source: BinaryIO, size: int, crc32c: str) -> StoredObject:
        """Upload ``size`` bytes from a seekable file as a new generation of the object."""
        if self._writable is None:
            raise ObjectStoreError("this store has no bucket to write to")
        name = self.name_for(key)
        blob = self._writable.blob(name, chunk_size=CHUNK_SIZE if size > MULTIPART_LIMIT else None)
        try:
            # Each attempt creates a new generation at most; the message names the one this
            # call reports, so a retried upload is harmless. The server checks the object
            # against the CRC32C the receiver computed while writing it (no second pass over
            # the file here), and the one it reports back is compared below.
            blob.upload_from_file(
                source,
                size=size,
                rewind=True,
                content_type="application/dicom",
                checksum=None,
                crc32c_checksum_value=crc32c,
                retry=self._retry,
                timeout=self._timeout,
            )
        except Exception as exc:  # transport, API and checksum errors alike: not stored
            raise ObjectStoreError(f"Cloud Storage upload failed: {type(exc).__name__}") from exc
        if blob.crc32c != crc32c or (blob.size is not None and int(blob.size) != size):
            try:
                self._discard(name, blob.generation, self._writable)
            except api_exceptions.GoogleAPIError:
                log.warning("could not remove a damaged upload of %s", name)
            raise ObjectStoreError("Cloud Storage stored different bytes than were sent")
        return StoredObject(self.uri_for(key), str(blob.generation), size, crc32c)

    def commit(self, stored: StoredObject) -> None:
        """Nothing to do: Cloud Storage replaced the previous generation on upload."""

    def rollback(self, stored: StoredObject) -> None:
        """The message was not published. The object stays: it is the newest receipt.

        The receiver keeps the message in its outbox and publishes it later; should that be
        lost, bucket reconciliation (``dicom-ingest replay reconcile``) finds the object the
        DICOM store lacks and publishes its message.
        """
        log.warning("object kept without a message: %s#%s", stored.uri, stored.generation)

    def open(self, uri: str, generation: str) -> GcsReader:
        bucket_name, name = parse_gs_uri(uri)
        bucket = self._client.bucket(bucket_name)
        try:
            number = int(generation)
            found = bucket.get_blob(
                name, generation=number, timeout=self._timeout, retry=self._retry
            )
            if found is not None and found.time_deleted is None:
                # Read through a blob that names the generation itself, not through the
                # media link the server returned, so every range request is pinned to it.
                pinned = bucket.blob(name, generation=number)
                return GcsReader(pinned, int(found.size or 0), str(found.crc32c or ""))
            live = bucket.get_blob(name, timeout=self._timeout, retry=self._retry)
        except ValueError as exc:
            raise ObjectMissing(f"bad generation {generation!r}") from exc
        except api_exceptions.GoogleAPIError as exc:
            raise ObjectStoreError(f"Cloud Storage: {type(exc).__name__}: {exc}") from exc
        if live is not None and str(live.generation) != generation:
            raise ObjectSuperseded(f"{uri}#{generation} was replaced by #{live.generation}")
        raise ObjectMissing(f"{uri}#{generation} does not exist")

    def delete(self, uri: str, generation: str) -> bool:
        bucket_name, name = parse_gs_uri(uri)
        try:
            return self._delete_generation(name, int(generation), self._client.bucket(bucket_name))
        except (api_exceptions.GoogleAPIError, requests.RequestException, ValueError) as exc:
            raise ObjectStoreError(f"Cloud Storage delete failed: {type(exc).__name__}") from exc

    def _delete_generation(self, name: str, generation: int | None, target: Any) -> bool:
        """Delete exactly that generation if it is still the live one."""
        try:
            # The precondition makes this atomic on Cloud Storage; the check first also holds
            # on servers that ignore preconditions on delete.
            live = target.get_blob(name, timeout=self._timeout, retry=self._retry)
        except api_exceptions.NotFound:
            return False
        if live is None or (generation is not None and live.generation != generation):
            return False
        return self._discard(name, generation, target)

    def _discard(self, name: str, generation: int | None, target: Any) -> bool:
        """Delete a generation without reading its metadata (the receiver may not)."""
        try:
            target.blob(name, generation=generation).delete(
                if_generation_match=generation, timeout=self._timeout, retry=self._retry
            )
        except (api_exceptions.NotFound, api_exceptions.PreconditionFailed):
            return False
        return True


RESUMABLE_QUANTUM = 256 << 10  # every chunk but the last is a multiple of this


class ResumableSession:
    """A resumable upload of an object whose size is known only at the end.

    Chunks go up as the bytes arrive; the object (a new generation) exists only once
    ``finish`` sends the last bytes with the total size. A session never finished creates
    nothing, and ``cancel`` ends it at once.
    """

    def __init__(self, store: GcsObjectStore, key: str) -> None:
        if store._writable is None:
            raise ObjectStoreError("this store has no bucket to write to")
        self._store = store
        self._key = key
        self._name = store.name_for(key)
        self._http: Any = store._client._http
        self._timeout = store._timeout
        base = store._client._connection.API_BASE_URL
        try:
            response = self._http.post(
                f"{base}/upload/storage/v1/b/{store.bucket}/o",
                params={"uploadType": "resumable", "name": self._name},
                json={"name": self._name, "contentType": "application/dicom"},
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            raise ObjectStoreError(f"resumable upload not started: {type(exc).__name__}") from exc
        if response.status_code != 200 or "Location" not in response.headers:
            raise ObjectStoreError(f"resumable upload not started: HTTP {response.status_code}")
        self._url = response.headers["Location"]
        self.sent = 0

    def put(self, chunk: bytes) -> None:
        """Send a chunk (a multiple of ``RESUMABLE_QUANTUM``) of an object of unknown size."""
        if not chunk or len(chunk) % RESUMABLE_QUANTUM:
            raise ValueError("intermediate chunks are whole multiples of 256 KiB")
        end = self.sent + len(chunk) - 1
        response = self._send(chunk, f"bytes {self.sent}-{end}/*")
        if response.status_code != 308:
            raise ObjectStoreError(f"resumable upload chunk: HTTP {response.status_code}")
        if response.headers.get("Range") != f"bytes=0-{end}":
            raise ObjectStoreError("resumable upload: the server kept fewer bytes than were sent")
        self.sent = end + 1

    def finish(self, last: bytes, crc32c: str) -> StoredObject:
        """Send the last bytes; the server checks the CRC32C of the whole object."""
        total = self.sent + len(last)
        span = f"bytes {self.sent}-{total - 1}/{total}" if last else f"bytes */{total}"
        response = self._send(last, span, {"X-Goog-Hash": f"crc32c={crc32c}"})
        if response.status_code not in (200, 201):
            raise ObjectStoreError(f"resumable upload final chunk: HTTP {response.status_code}")
        resource = response.json()
        generation = str(resource.get("generation", ""))
        if resource.get("crc32c") != crc32c or int(resource.get("size", -1)) != total:
            if generation.isdigit():
                self._store._discard(self._name, int(generation), self._store._writable)
            raise ObjectStoreError("Cloud Storage stored different bytes than were sent")
        return StoredObject(self._store.uri_for(self._key), generation, total, crc32c)

    def cancel(self) -> None:
        try:
            self._http.delete(self._url, timeout=self._timeout)
        except requests.RequestException:
            log.debug("could not cancel a resumable upload; it expires by itself")

    def _send(self, data: bytes, content_range: str, extra: dict[str, str] | None = None) -> Any:
        try:
            return self._http.put(
                self._url,
                data=data,
                headers={"Content-Range": content_range, **(extra or {})},
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            raise ObjectStoreError(f"resumable upload: {type(exc).__name__}") from exc
