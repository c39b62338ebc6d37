"""Large instances go to Cloud Storage while they are still arriving (``--ack_after=store``).

pynetdicom writes each incoming dataset to a file as its fragments arrive. Once such a file
passes ``threshold`` bytes, an uploader thread reads the dataset's first UIDs (which name
the object), opens a resumable upload and sends the Part-10 object (this receiver's file
meta, then the dataset bytes as they land) in chunks. When the C-STORE completes, the store
service takes the upload, which sends the last bytes: the PACS waits for one final chunk
and the publish, not for the whole instance to cross the network again.

It is only ever a shortcut. If anything goes wrong (the header cannot be read, a chunk
fails, the checksum differs) the upload is cancelled and the store service writes the
object the ordinary way from the complete local file. An upload is finished only after the
dataset passed every check, so a rejected or aborted transfer never creates an object.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import google_crc32c
from pydicom.filereader import read_file_meta_info

from dicom_ingest.gcs import CHUNK_SIZE, RESUMABLE_QUANTUM, GcsObjectStore, ResumableSession
from dicom_ingest.objectstore import ObjectStoreError, StoredObject

from .dataset_scan import part10_dataset_offset, scan_header
from .part10 import crc32c_b64, file_meta_bytes
from .store import object_key

log = logging.getLogger(__name__)

CHUNK = CHUNK_SIZE  # as ordinary resumable uploads: 16 MiB
HEADER_LIMIT = 64 << 20  # the naming UIDs must appear within this much of the dataset
ABANDON_AFTER = 120.0  # an upload whose transfer is gone (aborted) for this long is cancelled


class EarlyUploadFailed(Exception):
    """The shortcut did not work out; write the object the ordinary way."""


class _Upload:
    """One instance's upload, fed from the file pynetdicom is writing."""

    def __init__(self, store: GcsObjectStore, path: Path, calling_ae: str) -> None:
        self.path = path
        self._store = store
        self._calling_ae = calling_ae
        self._final_length: int | None = None
        self._done = threading.Event()
        self._complete = threading.Condition()
        self._error: str | None = None
        self._result: StoredObject | None = None
        self._cancelled = False
        self.last_seen = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="early-upload", daemon=True)
        self._thread.start()

    def finish(self, dataset_length: int, timeout: float) -> StoredObject:
        """The transfer is complete and checked: send the rest, return the stored object."""
        with self._complete:
            self._final_length = dataset_length
            self._complete.notify_all()
        if not self._done.wait(timeout):
            self.cancel()
            raise EarlyUploadFailed("the upload did not finish in time")
        if self._result is None:
            raise EarlyUploadFailed(self._error or "upload failed")
        return self._result

    def cancel(self) -> None:
        with self._complete:
            self._cancelled = True
            self._complete.notify_all()

    def _wait_for_growth(self, size: int) -> bool:
        """Until the file holds more than ``size`` bytes or the transfer ended; False if
        cancelled."""
        with self._complete:
            while not self._cancelled:
                if self._final_length is not None:
                    return True
                try:
                    if self.path.stat().st_size > size:
                        return True
                except FileNotFoundError:
                    return False
                self._complete.wait(0.02)
            return False

    def _run(self) -> None:
        try:
            self._upload()
        except Exception as exc:
            self._error = f"{type(exc).__name__}: {exc}"
            log.info("early upload abandoned; the instance is stored from the local file: %s",
                     self._error)  # fmt: skip
        finally:
            self._done.set()

    def _upload(self) -> None:
        meta = read_file_meta_info(self.path)
        sop_class = str(meta.MediaStorageSOPClassUID)
        sop = str(meta.MediaStorageSOPInstanceUID)
        syntax = str(meta.TransferSyntaxUID)
        with open(self.path, "rb") as source:
            offset = part10_dataset_offset(source)
            header = None
            while header is None:
                size = self.path.stat().st_size
                source.seek(offset)
                header = scan_header(source, syntax)
                if header is None and (size - offset > HEADER_LIMIT or self._final_length):
                    raise EarlyUploadFailed("the dataset's UIDs were not found in its start")
                if header is None and not self._wait_for_growth(size):
                    return
            if not (header.study_instance_uid and header.series_instance_uid):
                raise EarlyUploadFailed("the dataset lacks its study or series UID")
            key = object_key(header.study_instance_uid, header.series_instance_uid, sop)
            session = ResumableSession(self._store, key)
            try:
                self._result = self._stream(
                    session, file_meta_bytes(sop_class, sop, syntax, self._calling_ae), source,
                    offset,
                )  # fmt: skip
            finally:
                if self._result is None:  # cancelled or failed: the object never comes to be
                    session.cancel()

    def _stream(
        self, session: ResumableSession, meta: bytes, source: Any, offset: int
    ) -> StoredObject | None:
        checksum = google_crc32c.Checksum()
        pending = bytearray(meta)
        checksum.update(meta)
        source.seek(offset)
        read = 0
        while True:
            with self._complete:
                final = self._final_length
            wanted = (final - read) if final is not None else None
            chunk = source.read(CHUNK if wanted is None else min(CHUNK, wanted))
            if chunk:
                read += len(chunk)
                checksum.update(chunk)
                pending += chunk
                while len(pending) >= CHUNK + RESUMABLE_QUANTUM or (
                    final is None and len(pending) >= CHUNK
                ):
                    session.put(bytes(pending[:CHUNK]))
                    del pending[:CHUNK]
                continue
            if final is not None and read >= final:
                crc = crc32c_b64(int.from_bytes(checksum.digest(), "big"))
                return session.finish(bytes(pending), crc)
            if final is not None:
                raise EarlyUploadFailed("the received file is shorter than the dataset")
            if not self._wait_for_growth(offset + read):
                return None


class EarlyUploads:
    """Watches transfers in progress and starts an upload for each large one."""

    def __init__(
        self,
        store: GcsObjectStore,
        transfers: Callable[[], Iterable[tuple[Path, str]]],
        threshold: int,
        finish_timeout: float = 60.0,
    ) -> None:
        self._store = store
        self._transfers = transfers  # (file being written, calling AE) per transfer
        self._threshold = threshold
        self._finish_timeout = finish_timeout
        self._uploads: dict[Path, _Upload] = {}
        self.started = 0  # uploads begun while their instance arrived
        self.used = 0  # instances stored by such an upload
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="early-uploads", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        with self._lock:
            uploads, self._uploads = list(self._uploads.values()), {}
        for upload in uploads:
            upload.cancel()

    def finish(self, path: Path, dataset_length: int) -> StoredObject | None:
        """The stored object if an upload of this file was under way and completes."""
        with self._lock:
            upload = self._uploads.pop(path, None)
        if upload is None:
            return None
        try:
            stored = upload.finish(dataset_length, self._finish_timeout)
        except (EarlyUploadFailed, ObjectStoreError) as exc:
            log.info("early upload not used: %s", exc)
            return None
        self.used += 1
        return stored

    def cancel(self, path: Path) -> None:
        with self._lock:
            upload = self._uploads.pop(path, None)
        if upload is not None:
            upload.cancel()

    def _watch(self) -> None:
        while not self._stopping.wait(0.05):
            try:
                self._scan()
            except Exception:  # watching is best effort; never stop the receiver for it
                log.exception("early upload watcher failed; continuing")

    def _scan(self) -> None:
        now = time.monotonic()
        live: set[Path] = set()
        for path, calling_ae in self._transfers():
            live.add(path)
            with self._lock:
                known = self._uploads.get(path)
            if known is not None:
                known.last_seen = now
                continue
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_size > self._threshold:
                    with self._lock:
                        self._uploads[path] = _Upload(self._store, path, calling_ae)
                        self.started += 1
        with self._lock:
            gone = [
                p for p, u in self._uploads.items()
                if p not in live and now - u.last_seen > ABANDON_AFTER
            ]  # fmt: skip
            abandoned = [self._uploads.pop(p) for p in gone]
        for upload in abandoned:
            upload.cancel()


def pynetdicom_transfers(server: Any) -> Iterable[tuple[Path, str]]:
    """The files pynetdicom is writing incoming C-STORE datasets to, with the calling AE."""
    for assoc in list(getattr(server, "active_associations", [])):
        message = getattr(getattr(assoc, "dimse", None), "message", None)
        path = getattr(message, "_data_set_path", None)
        if isinstance(path, Path):
            yield path, str(assoc.requestor.ae_title).strip()
