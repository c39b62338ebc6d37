#!/usr/bin/env python3
"""Regenerate receiver/data/storage_sop_classes.json from pydicom's UID dictionary.

The list is every storage SOP class of the DICOM edition pydicom's dictionary was built from
(retired ones included), plus any storage class pynetdicom proposes that the dictionary lacks
(classes from a later edition). UIDs under the storage root that the standard assigns to other
services (query/retrieve, inventory) are kept apart, so the root rule can refuse them.

Run from the repository root: ``.venv/bin/python scripts/gen_sop_classes.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pydicom
import pynetdicom
from pydicom._uid_dict import UID_dictionary
from pydicom._version import __dicom_version__
from pynetdicom import AllStoragePresentationContexts
from pynetdicom.sop_class import _STORAGE_CLASSES

STORAGE_ROOT = "1.2.840.10008.5.1.4.1.1."
# SOP classes whose names mention storage but that are not stored with C-STORE.
NOT_STORED = ("Commitment", "Media Storage Directory")
OUTPUT = Path(__file__).resolve().parent.parent / "receiver" / "data" / "storage_sop_classes.json"


def _is_storage(uid: str, name: str, kind: str) -> bool:
    if kind != "SOP Class" or any(word in name for word in NOT_STORED):
        return False
    return "Storage" in name or (uid.startswith(STORAGE_ROOT) and not name)


def _words(keyword: str) -> str:
    """'LabelMapSegmentationStorage' -> 'Label Map Segmentation Storage'."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", keyword)


def _uid_key(uid: str) -> tuple[int, ...]:
    return tuple(int(part) for part in uid.split("."))


def build() -> tuple[dict[str, object], list[dict[str, object]]]:
    """The file's header fields, and one entry per storage SOP class."""
    storage: dict[str, tuple[str, bool]] = {}
    other_under_root: list[str] = []
    for uid, (name, kind, _info, retired, _keyword) in UID_dictionary.items():
        if _is_storage(uid, name, kind):
            storage[uid] = (name or "(retired, unnamed)", retired == "Retired")
        elif uid.startswith(STORAGE_ROOT):
            other_under_root.append(uid)
    names = {uid: keyword for keyword, uid in _STORAGE_CLASSES.items()}
    later = []
    for context in AllStoragePresentationContexts:
        uid = str(context.abstract_syntax)
        if uid not in storage:
            storage[uid] = (_words(names.get(uid, uid)), False)
            later.append(uid)
    header: dict[str, object] = {
        "edition": __dicom_version__,
        "source": (
            f"pydicom {pydicom.__version__} UID dictionary (DICOM {__dicom_version__}); "
            f"{len(later)} later classes from pynetdicom {pynetdicom.__version__}"
        ),
        "not_storage_under_root": sorted(other_under_root, key=_uid_key),
    }
    entries: list[dict[str, object]] = [
        {"uid": uid, "name": storage[uid][0], "retired": storage[uid][1]}
        for uid in sorted(storage, key=_uid_key)
    ]
    return header, entries


def main() -> None:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    header, entries = build()
    # One class a line, so a regenerated file diffs line by line.
    head = json.dumps(header, indent=1)[:-2]
    body = ",\n  ".join(json.dumps(entry) for entry in entries)
    OUTPUT.write_text(f'{head},\n "storage": [\n  {body}\n ]\n}}\n', encoding="utf-8")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
