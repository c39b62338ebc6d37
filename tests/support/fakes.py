"""Fakes of the ports, shared by the test tiers: a recording publisher, failing object stores."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ingest.adapters.spool import SpoolObjectStore
from ingest.contracts.ports import ObjectStoreError, StoredObject


@dataclass
class RecordingPublisher:
    """A ``Publisher`` that keeps what it is given, or raises ``error`` when one is set."""

    error: Exception | None = None
    published: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)

    def publish(self, body: bytes, attributes: dict[str, str] | None = None) -> str:
        if self.error is not None:
            raise self.error
        self.published.append((body, dict(attributes or {})))
        return f"published-{len(self.published)}"

    @property
    def bodies(self) -> list[bytes]:
        return [body for body, _ in self.published]


class UnwritableObjectStore(SpoolObjectStore):
    """A spool whose writes fail as a full or read-only disk does (``put`` raises)."""

    def put(self, key: str, staged: Path, size: int, crc32c: str) -> StoredObject:
        raise ObjectStoreError("no space left on device")


class BrokenObjectStore(SpoolObjectStore):
    """A spool with a defect: ``put`` raises what no store should (an unexpected fault)."""

    def put(self, key: str, staged: Path, size: int, crc32c: str) -> StoredObject:
        raise RuntimeError("a defect in the object store")
