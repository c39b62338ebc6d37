"""Command sets and presentation-context choices, checked against pydicom and pynetdicom."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom.filereader import read_dataset
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dsutils import encode

from receiver import dimse
from receiver.acse_codec import AssociateRequest, ProposedContext
from receiver.negotiation import (
    ABSTRACT_SYNTAX_NOT_SUPPORTED,
    ACCEPTANCE,
    TRANSFER_SYNTAXES_NOT_SUPPORTED,
    choose_transfer_syntax,
    negotiate,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE = (
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.2",
)
J2K = "1.2.840.10008.1.2.4.90"


def pynetdicom_store_command(message_id: int, sop_class: str, sop_instance: str) -> bytes:
    request = C_STORE_RQ()
    request.command_set.MessageID = message_id
    request.command_set.AffectedSOPClassUID = sop_class
    request.command_set.AffectedSOPInstanceUID = sop_instance
    request.command_set.Priority = 0
    request.command_set.CommandDataSetType = 0x0001
    request.command_set.CommandField = 0x0001
    encoded = encode(request.command_set, True, True)
    assert encoded is not None
    return encoded


def test_a_pynetdicom_c_store_request_is_read() -> None:
    command = dimse.parse_command(pynetdicom_store_command(7, CT, "1.2.3.4"))
    assert command == dimse.Command(0x0001, 7, True, CT, "1.2.3.4")


def test_a_response_reads_back_with_pydicom() -> None:
    request = dimse.Command(0x0001, 513, True, CT, "1.2.3.45")
    raw = dimse.response(request, 0xA900, "SOP Instance UID differs\\from the request" + "x" * 80)
    ds = read_dataset(BytesIO(raw), is_implicit_VR=True, is_little_endian=True)
    assert ds.CommandGroupLength == len(raw) - 12
    assert (ds.CommandField, ds.MessageIDBeingRespondedTo, ds.Status) == (0x8001, 513, 0xA900)
    assert ds.CommandDataSetType == 0x0101
    assert (ds.AffectedSOPClassUID, ds.AffectedSOPInstanceUID) == (CT, "1.2.3.45")
    assert len(ds.ErrorComment) <= 64 and "\\" not in ds.ErrorComment


def test_success_carries_no_comment_and_echo_no_uids() -> None:
    raw = dimse.response(dimse.Command(0x0030, 1, False), 0x0000, "ignored")
    ds = read_dataset(BytesIO(raw), is_implicit_VR=True, is_little_endian=True)
    assert ds.CommandField == 0x8030 and ds.Status == 0
    assert "ErrorComment" not in ds and "AffectedSOPClassUID" not in ds


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x00\x01",  # cut inside an element header
        b"\x08\x00\x16\x00\x02\x00\x00\x00ab",  # group 0008 in a command set
        b"\x00\x00\x00\x01\x08\x00\x00\x00\x01\x00",  # element longer than the set
        b"\x00\x00\x10\x01\x02\x00\x00\x00\x01\x00",  # no Command Field
        b"\x00\x00\x00\x01\x01\x00\x00\x00\x01",  # Command Field of one byte
    ],
)
def test_unreadable_command_sets_raise_command_error(data: bytes) -> None:
    with pytest.raises(dimse.CommandError):
        dimse.parse_command(data)


@pytest.mark.parametrize(
    ("proposed", "chosen"),
    [
        ((EXPLICIT_BE, EXPLICIT_LE), EXPLICIT_LE),
        ((EXPLICIT_BE, IMPLICIT_LE), IMPLICIT_LE),
        ((EXPLICIT_BE,), EXPLICIT_BE),
        ((J2K, EXPLICIT_LE), J2K),
        (("1.2.3.4.5.6", IMPLICIT_LE), IMPLICIT_LE),
        (("1.2.3.4.5.6",), None),
    ],
    ids=["big-over-little", "big-over-implicit", "big-alone", "first-listed", "unknown", "none"],
)
def test_transfer_syntax_choice(proposed: tuple[str, ...], chosen: str | None) -> None:
    assert choose_transfer_syntax(proposed) == chosen


def test_negotiation_names_what_it_refuses() -> None:
    request = AssociateRequest(
        1,
        "IMPORTADAPTER",
        "PACS",
        "1.2.840.10008.3.1.1.1",
        (
            ProposedContext(1, CT, (EXPLICIT_LE,)),
            ProposedContext(3, "1.2.840.10008.5.1.4.1.2.1.1", (IMPLICIT_LE,)),
            ProposedContext(5, CT, ("1.2.3.4.5.6",)),
            ProposedContext(7, "1.2.840.10008.1.1", (IMPLICIT_LE,)),
        ),
        16384,
    )
    negotiated = negotiate(request, lambda uid: uid == CT)
    assert [(r.context_id, r.result) for r in negotiated.results] == [
        (1, ACCEPTANCE),
        (3, ABSTRACT_SYNTAX_NOT_SUPPORTED),
        (5, TRANSFER_SYNTAXES_NOT_SUPPORTED),
        (7, ACCEPTANCE),
    ]
    assert sorted(negotiated.accepted) == [1, 7]
    assert negotiated.rejected == ["1.2.840.10008.5.1.4.1.2.1.1", CT]
