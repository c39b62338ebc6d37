"""The storage SOP class list and the storage root rule."""

from __future__ import annotations

import json
import re
from importlib.resources import files

import pytest
from pynetdicom import AllStoragePresentationContexts

from receiver.sop_classes import (
    EDITION,
    STORAGE_SOP_CLASSES,
    is_storage_sop_class,
    sop_class,
    sop_class_name,
)

RETIRED = [
    "1.2.840.10008.5.1.4.1.1.6",  # US Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.3",  # US Multi-frame Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.5",  # NM Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.129",  # Standalone PET Curve Storage (Retired)
]
NOT_STORAGE = [
    "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root Q/R - FIND
    "1.2.840.10008.5.1.4.1.2.2.2",  # Study Root Q/R - MOVE
    "1.2.840.10008.5.1.4.31",  # Modality Worklist - FIND
    "1.2.840.10008.1.1",  # Verification
    "1.2.840.10008.1.20.1",  # Storage Commitment Push Model
    "1.2.840.10008.1.3.10",  # Media Storage Directory Storage (DICOMDIR)
    "1.2.840.10008.5.1.4.1.1.200.4",  # Protocol Approval - FIND, under the storage root
    "1.2.840.10008.5.1.4.1.1.201.2",  # Inventory - FIND, under the storage root
]
MADE_UP = "1.2.840.10008.5.1.4.1.1.2.3"  # e.g. a CT "For Processing" class, newer than the list


@pytest.mark.parametrize("uid", RETIRED)
def test_retired_storage_classes_are_listed(uid: str) -> None:
    assert uid in STORAGE_SOP_CLASSES
    entry = sop_class(uid)
    assert entry is not None and entry.retired
    assert is_storage_sop_class(uid, storage_root=False)


def test_us_image_storage_retired_is_named() -> None:
    assert sop_class_name("1.2.840.10008.5.1.4.1.1.6") == "Ultrasound Image Storage (Retired)"
    assert sop_class_name("1.2.3.4") == "1.2.3.4"


@pytest.mark.parametrize("uid", NOT_STORAGE)
def test_other_services_are_not_storage(uid: str) -> None:
    assert uid not in STORAGE_SOP_CLASSES
    assert not is_storage_sop_class(uid)


def test_unknown_uid_under_the_storage_root_is_storage_unless_turned_off() -> None:
    assert MADE_UP not in STORAGE_SOP_CLASSES
    assert is_storage_sop_class(MADE_UP)
    assert not is_storage_sop_class(MADE_UP, storage_root=False)


@pytest.mark.parametrize(
    "uid",
    [
        "1.2.840.10008.5.1.4.1.1.",  # the root itself, with its dot
        "1.2.840.10008.5.1.4.1.1.2..1",  # an empty component
        "1.2.840.10008.5.1.4.1.1.2.x",
        "1.2.840.10008.5.1.4.1.1." + "1" * 60,  # longer than 64 characters
    ],
)
def test_invalid_uids_under_the_root_are_not_storage(uid: str) -> None:
    assert not is_storage_sop_class(uid)


def test_private_classes_come_from_extra() -> None:
    private = "1.3.6.1.4.1.9590.100.1.2.999"
    assert not is_storage_sop_class(private)
    assert is_storage_sop_class(private, extra=(private,))
    assert is_storage_sop_class(private, storage_root=False, extra=(private,))


def test_every_pynetdicom_storage_class_is_listed() -> None:
    missing = {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts}
    missing -= set(STORAGE_SOP_CLASSES)
    assert missing == set()


def test_list_covers_storage_classes_outside_the_root() -> None:
    for uid in (
        "1.2.840.10008.5.1.4.34.7",  # RT Beams Delivery Instruction Storage
        "1.2.840.10008.5.1.4.38.1",  # Hanging Protocol Storage
        "1.2.840.10008.5.1.4.43.1",  # Generic Implant Template Storage
        "1.2.840.10008.5.1.4.45.1",  # Implant Template Group Storage
    ):
        assert uid in STORAGE_SOP_CLASSES


def test_file_names_its_edition() -> None:
    data = json.loads(
        files("receiver").joinpath("data/storage_sop_classes.json").read_text("utf-8")
    )
    assert data["edition"] == EDITION
    assert re.fullmatch(r"20\d\d[a-e]", EDITION)  # e.g. 2024c
    assert "pydicom" in data["source"]
    assert len(STORAGE_SOP_CLASSES) == len(set(STORAGE_SOP_CLASSES)) > 200
