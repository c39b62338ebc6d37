"""Hypothesis strategies for untrusted bytes: mutations of a valid message."""

from __future__ import annotations

import struct

from hypothesis import strategies as st


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """valid with some bytes replaced, removed or inserted, and possibly cut short."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(0, 8))):
        where = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["replace", "delete", "insert"]))
        if action == "replace" and where < len(data):
            data[where] = draw(st.integers(0, 255))
        elif action == "delete" and where < len(data):
            del data[where]
        else:
            data[where:where] = draw(st.binary(min_size=1, max_size=8))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


_KNOWN_UIDS = (
    "1.2.840.10008.1.1",
    "1.2.840.10008.5.1.4.1.1.2",
    "1.2.840.10008.5.1.4.1.1.6",
    "1.2.840.10008.5.1.4.1.1.999",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.4.91",
)
uid_fields = st.one_of(st.sampled_from([u.encode() for u in _KNOWN_UIDS]), st.binary(max_size=70))


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BxH", item_type, len(value)) + value


@st.composite
def associate_rqs(draw: st.DrawFn, called: bytes) -> bytes:
    """A-ASSOCIATE-RQs built field by field: any calling AE bytes, any UID text, any IDs."""
    body = struct.pack(">H2x", draw(st.sampled_from([1, 0, 3, 0xFFFF])))
    body += called.ljust(16) + draw(st.binary(min_size=16, max_size=16)) + bytes(32)
    body += _item(0x10, draw(st.sampled_from([b"1.2.840.10008.3.1.1.1", b"", b"1.2.3"])))
    for _ in range(draw(st.integers(0, 4))):
        context_id = draw(st.integers(0, 255))
        sub = _item(0x30, draw(uid_fields))
        sub += b"".join(_item(0x40, uid) for uid in draw(st.lists(uid_fields, max_size=3)))
        body += _item(0x20, bytes((context_id, 0, 0, 0)) + sub)
    maximum = draw(st.integers(0, 0xFFFFFFFF))
    body += _item(0x50, _item(0x51, struct.pack(">L", maximum)))
    return struct.pack(">BxL", 0x01, len(body)) + body
