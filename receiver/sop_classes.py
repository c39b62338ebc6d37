"""Storage SOP classes accepted by the receiver."""

from __future__ import annotations

from pynetdicom import AllStoragePresentationContexts

from dicom_ingest.message import is_valid_uid

STORAGE_ROOT = "1.2.840.10008.5.1.4.1.1."
STORAGE_SOP_CLASSES = frozenset(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts)


def is_storage_sop_class(
    uid: str, *, storage_root: bool = True, extra: tuple[str, ...] = ()
) -> bool:
    if uid in STORAGE_SOP_CLASSES or uid in extra:
        return True
    return storage_root and uid.startswith(STORAGE_ROOT) and is_valid_uid(uid)
