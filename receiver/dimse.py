"""DIMSE command sets (PS3.7 §9, §E): the few fields a storage SCP reads, and its responses.

A command set is always Implicit VR Little Endian group 0000 elements, whatever the
presentation context, so it is read and written here with ``struct``: a C-STORE costs one
command to read and one response to write, and a pydicom dataset for each would be most of
the receiver's time per small instance.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

C_STORE_RQ, C_ECHO_RQ, C_CANCEL_RQ = 0x0001, 0x0030, 0x0FFF
RESPONSE_BIT = 0x8000
NO_DATASET = 0x0101
# Commands larger than this are not DIMSE requests a storage SCP could answer.
MAX_COMMAND_BYTES = 64 * 1024
_COMMENT_MAX = 64  # Error Comment is LO

_ELEMENT = struct.Struct("<HHL")
_AFFECTED_SOP_CLASS = 0x0002
_COMMAND_FIELD = 0x0100
_MESSAGE_ID = 0x0110
_DATASET_TYPE = 0x0800
_AFFECTED_SOP_INSTANCE = 0x1000


class CommandError(ValueError):
    """A command set that cannot be read at all."""


@dataclass(frozen=True, slots=True)
class Command:
    command_field: int
    message_id: int | None
    has_dataset: bool
    sop_class_uid: str = ""
    sop_instance_uid: str = ""


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace").rstrip("\x00 ").strip()


def _us(value: bytes, name: str) -> int:
    if len(value) != 2:
        raise CommandError(f"{name} is not a 2-byte US")
    return int.from_bytes(value, "little")


def parse_command(data: bytes) -> Command:
    """The fields of a command set; CommandError if it is not one."""
    offset, end = 0, len(data)
    fields: dict[int, bytes] = {}
    while offset < end:
        if end - offset < 8:
            raise CommandError("command set ends inside an element header")
        group, element, length = _ELEMENT.unpack_from(data, offset)
        offset += 8
        if group != 0x0000:
            raise CommandError("command set holds an element outside group 0000")
        if length > end - offset:
            raise CommandError("command element runs past the command set")
        fields[element] = data[offset : offset + length]
        offset += length
    if _COMMAND_FIELD not in fields:
        raise CommandError("command set lacks its Command Field")
    command_field = _us(fields[_COMMAND_FIELD], "Command Field")
    message_id = _us(fields[_MESSAGE_ID], "Message ID") if _MESSAGE_ID in fields else None
    dataset_type = fields.get(_DATASET_TYPE)
    has_dataset = dataset_type is not None and _us(dataset_type, "Data Set Type") != NO_DATASET
    return Command(
        command_field,
        message_id,
        has_dataset,
        _text(fields.get(_AFFECTED_SOP_CLASS, b"")),
        _text(fields.get(_AFFECTED_SOP_INSTANCE, b"")),
    )


def _element(element: int, value: bytes) -> bytes:
    return _ELEMENT.pack(0x0000, element, len(value)) + value


def _padded(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii", "replace")
    return raw + pad if len(raw) % 2 else raw


def response(request: Command, status: int, comment: str = "") -> bytes:
    """The response command set to a request (C-STORE-RSP, C-ECHO-RSP, or any other's)."""
    body = b""
    if request.sop_class_uid:
        body += _element(_AFFECTED_SOP_CLASS, _padded(request.sop_class_uid, b"\x00"))
    body += _element(_COMMAND_FIELD, struct.pack("<H", request.command_field | RESPONSE_BIT))
    body += _element(0x0120, struct.pack("<H", request.message_id or 0))
    body += _element(_DATASET_TYPE, struct.pack("<H", NO_DATASET))
    body += _element(0x0900, struct.pack("<H", status))
    if comment and status != 0:
        clean = "".join(c if c.isprintable() and c != "\\" else " " for c in comment)
        body += _element(0x0902, _padded(clean[:_COMMENT_MAX].strip(), b" "))
    if request.sop_instance_uid:
        body += _element(_AFFECTED_SOP_INSTANCE, _padded(request.sop_instance_uid, b"\x00"))
    return _element(0x0000, struct.pack("<L", len(body))) + body
