"""Which SOP classes are storage: the standard's list, kept as data, and the storage root rule.

``data/storage_sop_classes.json`` lists every storage SOP class of one DICOM edition (named in
the file), retired classes included; ``scripts/gen_sop_classes.py`` regenerates it. Classes
the standard adds later get UIDs under the storage root ``1.2.840.10008.5.1.4.1.1.``, so any
valid UID there counts as storage too, except the few the standard gives other services.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files

from ingest.contracts.message import is_valid_uid

STORAGE_ROOT = "1.2.840.10008.5.1.4.1.1."


@dataclass(frozen=True, slots=True)
class SopClass:
    uid: str
    name: str
    retired: bool


def _load() -> tuple[str, dict[str, SopClass], frozenset[str]]:
    text = files(__package__).joinpath("data/storage_sop_classes.json").read_text("utf-8")
    data = json.loads(text)
    classes = {
        entry["uid"]: SopClass(entry["uid"], entry["name"], bool(entry["retired"]))
        for entry in data["storage"]
    }
    return str(data["edition"]), classes, frozenset(data["not_storage_under_root"])


EDITION, _CLASSES, _OTHER_UNDER_ROOT = _load()
STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(_CLASSES)
"""Every listed storage SOP class UID, in UID order."""


def is_storage_sop_class(
    uid: str, *, storage_root: bool = True, extra: tuple[str, ...] = ()
) -> bool:
    """Whether a C-STORE of this SOP class is accepted.

    True for a listed class, for a valid UID under the storage root (when ``storage_root``;
    classes newer than the list's edition) that the standard has not given another service,
    and for the private classes in ``extra``.
    """
    if uid in _CLASSES or uid in extra:
        return True
    return (
        storage_root
        and uid.startswith(STORAGE_ROOT)
        and uid not in _OTHER_UNDER_ROOT
        and is_valid_uid(uid)
    )


def sop_class_name(uid: str) -> str:
    """A readable name for logs: the listed name (retired ones say so), else the UID itself."""
    known = _CLASSES.get(uid)
    if known is None:
        return uid
    return f"{known.name} (Retired)" if known.retired else known.name


def sop_class(uid: str) -> SopClass | None:
    """The listed entry for a UID, if any."""
    return _CLASSES.get(uid)
