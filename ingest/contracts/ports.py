"""The ports: what the receiver and the uploader need from an object store and a queue.

Each has a local adapter (``ingest.adapters.spool``, ``ingest.adapters.sqlite_queue``) and a
cloud one (``ingest.adapters.gcs``, ``ingest.adapters.pubsub``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol


class ObjectStoreError(Exception):
    """Base class of object store failures."""


class ObjectMissing(ObjectStoreError):
    """No version of the object exists any more."""


class ObjectSuperseded(ObjectStoreError):
    """The requested generation has been replaced by a newer one."""


class ObjectBusy(ObjectStoreError):
    """A newer generation is being stored; ask again later."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    """A durably stored object version."""

    uri: str
    generation: str
    size: int
    crc32c: str
    previous: str | None = None  # the generation this one replaced, kept until commit


class ObjectStore(Protocol):
    """Where the receiver puts instances and the uploader reads them."""

    def put(self, key: str, staged: Path, size: int, crc32c: str) -> StoredObject:
        """Store the staged file under key as a new, current generation; durable on return.

        The staged file is consumed on success. It may be an anonymous file, named by its
        descriptor (``private_files.create_anonymous_file``), which the caller keeps open
        until put returns. The generation it replaces stays readable
        until ``commit`` (its message may still need it) or comes back on ``rollback``.
        """
        ...

    def commit(self, stored: StoredObject) -> None:
        """The new generation's message is committed: drop the generation it replaced."""
        ...

    def rollback(self, stored: StoredObject) -> None:
        """The new generation's message was not committed: undo ``put``."""
        ...

    def reserve(self, key: str) -> Path:
        """A local path where the caller writes a new version of key before ``put``."""
        ...

    def open(self, uri: str, generation: str) -> BinaryIO:
        """Open exactly that generation for streaming reads."""
        ...

    def delete(self, uri: str, generation: str) -> bool:
        """Delete that generation if it is still current; True if deleted."""
        ...


class Publisher(Protocol):
    """What the receiver needs: a durable publish."""

    def publish(self, body: bytes, attributes: dict[str, str]) -> str:
        """Return the message id once the queue has durably accepted the message."""
        ...


@dataclass(frozen=True, slots=True)
class HeldVersion:
    """The version of an instance this pipeline last delivered to the DICOM store."""

    crc32c: str
    recorded_at: float  # seconds since the epoch


class StoreLedger(Protocol):
    """What the DICOM store holds of this pipeline's deliveries: SOP Instance UID → CRC32C.

    Recorded once the store has answered that it stored the instance, so a version replaced
    in the object store before it was ever uploaded is no correction: the store never held it.
    """

    def held_version(self, sop_instance_uid: str) -> HeldVersion | None:
        """The version last delivered, or None if this pipeline never delivered the instance."""
        ...

    def record_held(self, sop_instance_uid: str, crc32c: str) -> None:
        """The store now holds this version of the instance; durable on return."""
        ...
