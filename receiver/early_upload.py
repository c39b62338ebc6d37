"""Large instances go to Cloud Storage while they are still arriving (``--ack_after=store``).

The front door writes each incoming dataset to a staging file as its fragments arrive. Once
such a file passes ``threshold`` bytes, an uploader thread reads the dataset's first UIDs
(which name the object), opens a resumable upload and sends the Part-10 object (this receiver's file
meta, then the dataset bytes as they land) in chunks. When the C-STORE completes, the store
service hands over the checked dataset's length and object key, and the thread sends the
last bytes: the PACS waits for one final chunk and the publish, not for the whole instance
to cross the network again.

It is only ever a shortcut, and never races the ordinary path. The last chunk (the one that
creates the object) is sent only for the key the store service expects and only if the
upload was not cancelled. If the upload fails, the store service writes the object the
ordinary way from the complete local file; if it stalls, it is cancelled and the store
service falls back only once the thread has stopped, or answers the PACS with a failure
status if it does not stop. A rejected or cut-off transfer cancels its upload, so it never
becomes an object.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import google_crc32c

from ingest.adapters.gcs import CHUNK_SIZE, GcsObjectStore, ResumableSession
from ingest.contracts import metrics
from ingest.contracts.ports import ObjectStoreError, StoredObject

from .association import Transfer
from .dataset_scan import scan_header
from .part10 import crc32c_b64, file_meta_bytes
from .store import object_key

log = logging.getLogger(__name__)

CHUNK = CHUNK_SIZE  # as ordinary resumable uploads: 16 MiB
HEADER_LIMIT = 64 << 20  # the naming UIDs must appear within this much of the dataset
ABANDON_AFTER = 120.0  # an upload whose transfer is gone (aborted) for this long is cancelled
MAX_CONCURRENT = 4  # early uploads at once (about 32 MiB of memory each); others go the usual way


class EarlyUploadFailed(Exception):
    """The shortcut did not work out; write the object the ordinary way."""


class _Upload:
    """One instance's upload, fed from the file pynetdicom is writing."""

    def __init__(self, store: GcsObjectStore, transfer: Transfer, done: Callable[[], None]) -> None:
        self.path = transfer.path
        self._transfer = transfer
        self._store = store
        self._state = threading.Condition()
        self._final: tuple[int, str] | None = None  # (dataset length, object key)
        self._cancelled = False
        self._session: ResumableSession | None = None
        self._result: StoredObject | None = None
        self._error: str | None = None
        self._done = threading.Event()
        self._on_done = done
        self.progress = time.monotonic()  # when a chunk last went up
        self.last_seen = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="early-upload", daemon=True)
        self._thread.start()

    # called by other threads

    def finish(self, dataset_length: int, key: str, stall: float) -> StoredObject | None:
        """The dataset is complete and checked: send the rest under ``key``.

        Returns the stored object, or None when the caller should write the object itself
        (the upload failed and has stopped). Raises ``ObjectStoreError`` when it stalled and
        could not be stopped: writing the object again could then race it.
        """
        with self._state:
            self._final = (dataset_length, key)
            self._state.notify_all()
        while not self._done.wait(1.0):
            if time.monotonic() - self.progress > stall:
                log.warning("early upload stalled; cancelling it")
                self.cancel()
                if not self._done.wait(stall + 10.0):
                    raise ObjectStoreError("a stalled upload could not be stopped")
                break
        if self._result is not None:
            return self._result
        log.info("early upload not used: %s", self._error or "cancelled")
        return None

    def cancel(self) -> None:
        """Stop sending; the session is ended so that no late last chunk creates the object."""
        with self._state:
            if self._cancelled:
                return
            self._cancelled = True
            session = self._session
            self._state.notify_all()
        if session is not None:
            session.cancel()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    # the upload thread

    def _is_cancelled(self) -> bool:
        with self._state:
            return self._cancelled

    def _wait_for_data(self, size: int) -> bool:
        """Until the file holds more than ``size`` bytes or the dataset is complete; False if
        cancelled or the file is gone."""
        with self._state:
            while not self._cancelled:
                if self._final is not None:
                    return True
                try:
                    if self.path.stat().st_size > size:
                        return True
                except FileNotFoundError:
                    return False
                self._state.wait(0.02)
            return False

    def _run(self) -> None:
        try:
            self._upload()
        except Exception as exc:
            self._error = f"{type(exc).__name__}: {exc}"
        finally:
            with self._state:
                session = self._session if self._result is None else None
            if session is not None:
                session.cancel()
            self._done.set()
            self._on_done()

    def _upload(self) -> None:
        transfer = self._transfer
        sop_class, sop = transfer.sop_class_uid, transfer.sop_instance_uid
        syntax = transfer.transfer_syntax_uid
        with open(self.path, "rb") as source:
            offset = transfer.dataset_offset
            header = None
            while header is None:
                size = self.path.stat().st_size
                source.seek(offset)
                header = scan_header(source, syntax)
                if header is None and (size - offset > HEADER_LIMIT or self._final is not None):
                    raise EarlyUploadFailed("the dataset's UIDs were not found in its start")
                if header is None and not self._wait_for_data(size):
                    return
            if not (header.study_instance_uid and header.series_instance_uid):
                raise EarlyUploadFailed("the dataset lacks its study or series UID")
            key = object_key(header.study_instance_uid, header.series_instance_uid, sop)
            session = ResumableSession(self._store, key)
            with self._state:
                if self._cancelled:
                    session.cancel()
                    return
                self._session = session
            meta_bytes = file_meta_bytes(sop_class, sop, syntax, transfer.calling_ae)
            self._stream(session, key, meta_bytes, source, offset)

    def _stream(
        self, session: ResumableSession, key: str, meta: bytes, source: Any, offset: int
    ) -> None:
        checksum = google_crc32c.Checksum()
        checksum.update(meta)
        pending = bytearray(meta)
        source.seek(offset)
        read = 0
        while not self._is_cancelled():
            final = self._final
            room = CHUNK - len(pending)
            if final is not None:
                room = min(room, final[0] - read)
            data = source.read(room) if room > 0 else b""
            read += len(data)
            checksum.update(data)
            pending += data
            last = final is not None and read >= final[0]
            if last:
                assert final is not None
                if final[1] != key:  # the checked dataset names another object
                    raise EarlyUploadFailed("the dataset names another object than its start")
                crc = crc32c_b64(int.from_bytes(checksum.digest(), "big"))
                with self._state:  # the last chunk creates the object: never once cancelled
                    if self._cancelled:
                        return
                stored = session.finish(bytes(pending), crc)
                self._result = stored
                return
            if len(pending) == CHUNK:
                session.put(bytes(pending))
                pending.clear()
                self.progress = time.monotonic()
                continue
            if not data:
                if final is not None:
                    raise EarlyUploadFailed("the received file is shorter than the dataset")
                if not self._wait_for_data(offset + read):
                    return


class EarlyUploads:
    """Watches transfers in progress and starts an upload for each large one."""

    def __init__(
        self,
        store: GcsObjectStore,
        transfers: Callable[[], Iterable[Transfer]],
        threshold: int,
        stall_timeout: float = 60.0,
        max_concurrent: int = MAX_CONCURRENT,
    ) -> None:
        self._store = store
        self._transfers = transfers  # the datasets being received
        self._threshold = threshold
        self._stall = stall_timeout
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._uploads: dict[Path, _Upload] = {}
        self._closed: collections.deque[Path] = collections.deque(maxlen=4096)
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
        for upload in uploads:
            upload.join(5)

    def finish(self, path: Path, dataset_length: int, key: str) -> StoredObject | None:
        """The stored object if an upload of this file was under way and completed; None to
        write it the ordinary way. ``ObjectStoreError`` if neither is safe."""
        with self._lock:
            self._closed.append(path)
            upload = self._uploads.pop(path, None)
        if upload is None:
            return None
        stored = upload.finish(dataset_length, key, self._stall)
        if stored is not None:
            self.used += 1
        metrics.EARLY_UPLOADS.labels("used" if stored is not None else "not_used").inc()
        return stored

    def cancel(self, path: Path) -> None:
        with self._lock:
            self._closed.append(path)
            upload = self._uploads.pop(path, None)
        if upload is not None:
            metrics.EARLY_UPLOADS.labels("cancelled").inc()
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
        for transfer in self._transfers():
            path = transfer.path
            live.add(path)
            with self._lock:
                known = self._uploads.get(path)
                closed = path in self._closed
            if known is not None:
                known.last_seen = now
                continue
            if closed:
                continue
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_size > self._threshold and self._slots.acquire(blocking=False):
                    self._begin(transfer)
        with self._lock:
            gone = [
                p for p, u in self._uploads.items()
                if p not in live and now - u.last_seen > ABANDON_AFTER
            ]  # fmt: skip
            abandoned = [self._uploads.pop(p) for p in gone]
        for upload in abandoned:
            metrics.EARLY_UPLOADS.labels("abandoned").inc()
            upload.cancel()

    def _begin(self, transfer: Transfer) -> None:
        path = transfer.path
        with self._lock:
            if path in self._closed or path in self._uploads:  # completed meanwhile
                self._slots.release()
                return
            self._uploads[path] = _Upload(self._store, transfer, self._slots.release)
            self.started += 1
