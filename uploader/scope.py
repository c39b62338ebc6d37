"""Which objects this uploader serves: one bucket, optionally one prefix within it.

A message names its object as ``gs://BUCKET/NAME``. With ``--bucket`` (and
``--object_prefix``) set, a message naming any other object is refused as a permanent
failure: the uploader reads and deletes only what its own receiver wrote. A name is inside
the prefix only if it starts with ``PREFIX/`` (so ``dicom-evil/…`` is not inside ``dicom``)
and none of its path segments is empty, ``.`` or ``..``. Without ``--bucket`` every object is
served, as before this check existed.

Refusal reasons name the object's bucket and the served scope, never the object name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ingest.adapters.gcs import parse_gs_uri
from ingest.contracts.ports import ObjectMissing
from ingest.contracts.settings import ConfigError

_SERVED = "which this uploader serves (--bucket, --object_prefix)"
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


@dataclass(frozen=True, slots=True)
class ObjectScope:
    bucket: str
    prefix: str = ""

    def __post_init__(self) -> None:
        if not BUCKET_NAME.fullmatch(self.bucket):
            raise ConfigError("--bucket must be a Cloud Storage bucket name")
        if self.prefix and not _plain(self.prefix):
            raise ConfigError("--object_prefix must be a plain path such as dicom or site-a/dicom")

    @classmethod
    def of(cls, bucket: str | None, prefix: str | None) -> ObjectScope | None:
        """The scope for the settings, or ``None`` (every object) without a bucket."""
        prefix = (prefix or "").strip("/")
        if not bucket:
            if prefix:
                raise ConfigError("--object_prefix needs --bucket")
            return None
        return cls(bucket, prefix)

    @property
    def served(self) -> str:
        return f"gs://{self.bucket}/{self.prefix + '/' if self.prefix else ''}"

    def refusal(self, uri: str) -> str | None:
        """Why the object is not this uploader's to upload, or ``None`` if it is."""
        try:
            bucket, name = parse_gs_uri(uri)
        except ObjectMissing:
            return f"object is not a Cloud Storage object, outside {self.served} {_SERVED}"
        if bucket != self.bucket:
            return f"object is in bucket {bucket!r}, outside {self.served} {_SERVED}"
        inside = not self.prefix or name.startswith(self.prefix + "/")
        if not inside or not _plain(name):
            return f"object name is outside {self.served} {_SERVED}"
        return None


def _plain(path: str) -> bool:
    return all(part not in ("", ".", "..") for part in path.split("/"))
