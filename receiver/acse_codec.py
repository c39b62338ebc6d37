"""Association PDUs: the A-ASSOCIATE-RQ decoded, the A-ASSOCIATE-AC encoded.

This is the one module that reaches into pynetdicom's internals: its PDU and item classes
encode the A-ASSOCIATE-AC, once per association; the rest of the front door is this
project's own. The version
is pinned exactly in pyproject.toml, and ``check_pynetdicom`` runs at start-up so that an
upgrade that moves any of these names fails loudly, before a PACS connects.
"""

from __future__ import annotations

import importlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pynetdicom
from pynetdicom import pdu as pdu_module
from pynetdicom import pdu_items

PYNETDICOM_VERSION = "3.0.4"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

# (module, names) this module uses; checked by check_pynetdicom.
_EXPECTED = {
    "pynetdicom.pdu": ("A_ASSOCIATE_AC",),
    "pynetdicom.pdu_items": (
        "ApplicationContextItem",
        "PresentationContextItemAC",
        "TransferSyntaxSubItem",
        "UserInformationItem",
        "MaximumLengthSubItem",
        "ImplementationClassUIDSubItem",
        "ImplementationVersionNameSubItem",
    ),
}


class PynetdicomMismatch(RuntimeError):
    """The installed pynetdicom lacks something this receiver relies on."""


def check_pynetdicom() -> None:
    """Fail loudly if the installed pynetdicom is not the one this module was written for."""
    if pynetdicom.__version__ != PYNETDICOM_VERSION:
        raise PynetdicomMismatch(
            f"pynetdicom {pynetdicom.__version__} is installed; the receiver needs "
            f"{PYNETDICOM_VERSION} exactly (receiver/acse_codec.py)"
        )
    for module_name, names in _EXPECTED.items():
        module = importlib.import_module(module_name)
        missing = [name for name in names if not hasattr(module, name)]
        if missing:
            raise PynetdicomMismatch(f"{module_name} lacks {', '.join(missing)}")


@dataclass(frozen=True, slots=True)
class ProposedContext:
    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AssociateRequest:
    """What an A-ASSOCIATE-RQ asks for, in plain values."""

    protocol_version: int
    called_ae: str
    calling_ae: str
    application_context: str
    contexts: tuple[ProposedContext, ...]
    max_pdu: int  # the requestor's Maximum Length Received (0: no limit)


class AssociateDecodeError(ValueError):
    """The A-ASSOCIATE-RQ body could not be decoded."""


_ITEM = struct.Struct(">BxH")


def _items(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, value start, value end) of each item in data[start:end]."""
    offset = start
    while offset < end:
        if end - offset < 4:
            raise AssociateDecodeError("an item header is cut short")
        item_type, length = _ITEM.unpack_from(data, offset)
        offset += 4
        if offset + length > end:
            raise AssociateDecodeError(f"item 0x{item_type:02X} runs past its parent")
        yield item_type, offset, offset + length
        offset += length


def _name(data: bytes, start: int, end: int) -> str:
    """A UID-valued field: ASCII, trailing NUL or space padding removed."""
    raw = data[start:end]
    if len(raw) > 64 or any(b < 0x20 or b > 0x7E for b in raw.rstrip(b"\x00")):
        raise AssociateDecodeError("a UID field is not a UID")
    return raw.rstrip(b"\x00 ").decode("ascii")


def _title(raw: bytes) -> str:
    """An AE title as printable ASCII: any other byte becomes "?".

    The title is logged and echoed in the A-ASSOCIATE-AC, which pynetdicom encodes as
    strict ASCII; a byte outside it must not end the association in a traceback.
    """
    return "".join(chr(b) if 0x20 <= b < 0x7F else "?" for b in raw.strip(b" \x00"))


def decode_associate_rq(pdu: bytes) -> AssociateRequest:
    """Decode an A-ASSOCIATE-RQ PDU's body (what follows its 6-byte header), untrusted.

    Written here rather than taken from pynetdicom: its decoder validates UIDs with
    warnings (noise in the logs for every odd peer) and raises whatever its parts raise;
    this one bounds every item by its parent and raises AssociateDecodeError only.
    """
    if len(pdu) < 68:
        raise AssociateDecodeError("A-ASSOCIATE-RQ is shorter than its fixed fields")
    (version,) = struct.unpack_from(">H", pdu, 0)
    application = ""
    contexts: list[ProposedContext] = []
    max_pdu = 0
    for item_type, start, end in _items(pdu, 68, len(pdu)):
        if item_type == 0x10:
            application = _name(pdu, start, end)
        elif item_type == 0x20:
            if end - start < 4:
                raise AssociateDecodeError("a presentation context item is cut short")
            abstract, syntaxes = "", []
            for sub_type, sub_start, sub_end in _items(pdu, start + 4, end):
                if sub_type == 0x30:
                    abstract = _name(pdu, sub_start, sub_end)
                elif sub_type == 0x40:
                    syntaxes.append(_name(pdu, sub_start, sub_end))
            contexts.append(ProposedContext(pdu[start], abstract, tuple(syntaxes)))
        elif item_type == 0x50:
            for sub_type, sub_start, sub_end in _items(pdu, start, end):
                if sub_type == 0x51 and sub_end - sub_start == 4:
                    (max_pdu,) = struct.unpack_from(">L", pdu, sub_start)
    if not contexts:
        raise AssociateDecodeError("A-ASSOCIATE-RQ proposes no presentation context")
    return AssociateRequest(
        protocol_version=version,
        called_ae=_title(pdu[4:20]),
        calling_ae=_title(pdu[20:36]),
        application_context=application,
        contexts=tuple(contexts),
        max_pdu=max_pdu,
    )


@dataclass(frozen=True, slots=True)
class ContextResult:
    context_id: int
    result: int  # 0 acceptance, 3 abstract syntax not supported, 4 transfer syntaxes not
    transfer_syntax: str


def encode_associate_ac(
    request: AssociateRequest,
    results: list[ContextResult],
    max_pdu: int,
    implementation_class_uid: str,
    implementation_version_name: str,
) -> bytes:
    """The A-ASSOCIATE-AC PDU for a request and the per-context results."""
    ac = pdu_module.A_ASSOCIATE_AC()
    # The called and calling AE fields echo the request (PS3.8 §9.3.3).
    ac.reserved_aet = request.called_ae
    ac.reserved_aec = request.calling_ae
    application = pdu_items.ApplicationContextItem()
    application.application_context_name = APPLICATION_CONTEXT
    items: list[Any] = [application]
    for result in results:
        item = pdu_items.PresentationContextItemAC()
        item.presentation_context_id = result.context_id
        item.result_reason = result.result
        syntax = pdu_items.TransferSyntaxSubItem()
        syntax.transfer_syntax_name = result.transfer_syntax
        item.transfer_syntax_sub_item = [syntax]
        items.append(item)
    maximum = pdu_items.MaximumLengthSubItem()
    maximum.maximum_length_received = max_pdu
    implementation = pdu_items.ImplementationClassUIDSubItem()
    implementation.implementation_class_uid = implementation_class_uid
    version = pdu_items.ImplementationVersionNameSubItem()
    version.implementation_version_name = implementation_version_name.encode("ascii")
    user = pdu_items.UserInformationItem()
    user.user_data = [maximum, implementation, version]
    items.append(user)
    ac.variable_items = items
    return bytes(ac.encode())
