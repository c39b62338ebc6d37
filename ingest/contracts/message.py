"""The queue message: a pointer to one stored instance, never its pixels.

Encoding and decoding are pure functions. The message carries UIDs, the object's
location and version, its size and checksum, AE titles and the receive time. It never
carries a patient name, id or birth date.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from typing import Any

SCHEMA_VERSION = 1

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DIGITS_RE = re.compile(r"^[0-9]+$")
_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{0,16}$")  # printable ASCII without backslash


class MessageError(ValueError):
    """A queue message could not be decoded or fails validation."""


def is_valid_uid(value: str) -> bool:
    """True for a DICOM UID: digits and dots, no empty component, at most 64 characters.

    Leading zeros in a component are tolerated: real devices emit them and the DICOM store
    accepts them; rejecting them would refuse studies a PACS already holds.
    """
    return 0 < len(value) <= 64 and _UID_RE.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class InstanceMessage:
    """One received instance, as stored in the object store."""

    uri: str
    generation: str
    size: int
    crc32c: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    calling_ae: str
    called_ae: str
    received_at: str
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        for name in (
            "sop_class_uid",
            "sop_instance_uid",
            "study_instance_uid",
            "series_instance_uid",
            "transfer_syntax_uid",
        ):
            value = getattr(self, name)
            if not isinstance(value, str) or not is_valid_uid(value):
                raise MessageError(f"{name} is not a valid UID: {value!r}")
        for name in ("calling_ae", "called_ae"):
            value = getattr(self, name)
            if not isinstance(value, str) or _AE_RE.fullmatch(value) is None:
                raise MessageError(f"{name} is not a valid AE title")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise MessageError("size must be a non-negative integer")
        if not isinstance(self.uri, str) or "://" not in self.uri:
            raise MessageError("uri must be an absolute URI")
        if not isinstance(self.generation, str) or not _DIGITS_RE.fullmatch(self.generation):
            raise MessageError("generation must be a decimal string")
        if not isinstance(self.crc32c, str) or not self.crc32c:
            raise MessageError("crc32c is required")

    @property
    def log_ids(self) -> dict[str, str]:
        """The UIDs a log line about this instance carries (no patient data)."""
        return {
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "sop_instance_uid": self.sop_instance_uid,
        }

    @property
    def attributes(self) -> dict[str, str]:
        """Small string attributes for routing and filtering (Pub/Sub attributes)."""
        return {
            "schema_version": str(self.schema_version),
            "study_instance_uid": self.study_instance_uid,
            "sop_instance_uid": self.sop_instance_uid,
            "object_uri": self.uri,
            "object_generation": self.generation,
            "size": str(self.size),
        }


_FIELDS = {f.name for f in fields(InstanceMessage)}
_FIELD_ORDER = tuple(sorted(_FIELDS))  # encode's key order: sorted, as before


def encode(message: InstanceMessage) -> bytes:
    """Serialise a message to compact UTF-8 JSON with sorted keys."""
    # A dict of the fields, not ``asdict``: its deep copy was most of the cost of a message.
    fields_ = {name: getattr(message, name) for name in _FIELD_ORDER}
    return json.dumps(fields_, separators=(",", ":")).encode()


def decode(data: bytes) -> InstanceMessage:
    """Parse and validate a message; raise MessageError with a reason on any defect."""
    try:
        raw: Any = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MessageError("message is not JSON") from exc
    if not isinstance(raw, dict):
        raise MessageError("message is not a JSON object")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise MessageError(f"unsupported schema_version {version!r}")
    missing = sorted(_FIELDS - raw.keys())
    if missing:
        raise MessageError(f"message lacks {', '.join(missing)}")
    # Unknown keys are ignored so that a newer minor producer does not poison older consumers.
    try:
        return InstanceMessage(**{k: raw[k] for k in _FIELDS})
    except TypeError as exc:  # pragma: no cover - guarded by the field check above
        raise MessageError(str(exc)) from exc
