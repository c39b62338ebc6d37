"""Upper-layer PDU framing (PS3.8 §9.3) with limits checked before any body is read.

The hot path (P-DATA-TF, release, abort) is encoded and decoded here with ``struct``; the
association PDUs, which arrive once per association, are handed to ``acse_codec``. A
``PduReader`` reads from a socket into one buffer of a fixed size, so a connection never
holds more than one PDU, and every read runs against a deadline: a peer that sends a PDU
header and stops, or drips one byte at a time, is cut off by the timer, not by patience.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

# PDU types (PS3.8 Table 9-1).
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, RELEASE_RQ, RELEASE_RP, ABORT = 0x04, 0x05, 0x06, 0x07
PDU_NAMES = {
    ASSOCIATE_RQ: "A-ASSOCIATE-RQ",
    ASSOCIATE_AC: "A-ASSOCIATE-AC",
    ASSOCIATE_RJ: "A-ASSOCIATE-RJ",
    P_DATA_TF: "P-DATA-TF",
    RELEASE_RQ: "A-RELEASE-RQ",
    RELEASE_RP: "A-RELEASE-RP",
    ABORT: "A-ABORT",
}

HEADER = 6
# Association PDUs carry AE titles, a few dozen presentation contexts and user items; 64 KiB
# is far above any real one (DCMTK and dcm4che bound them similarly).
MAX_ASSOCIATION_PDU = 64 * 1024
# The PDV header (length, context id, control header) a sender may count outside its PDU
# maximum; tolerated above the advertised maximum P-DATA-TF length.
PDV_SLACK = HEADER

# A-ABORT source and reason (PS3.8 Table 9-26).
ABORT_SOURCE_USER, ABORT_SOURCE_PROVIDER = 0x00, 0x02
REASON_NOT_SPECIFIED = 0x00
REASON_UNRECOGNIZED_PDU = 0x01
REASON_UNEXPECTED_PDU = 0x02
REASON_INVALID_PARAMETER = 0x06

_HEADER_STRUCT = struct.Struct(">BxL")
_PDV_STRUCT = struct.Struct(">LBB")


class FramingError(Exception):
    """The byte stream can no longer be framed: the connection must be aborted."""

    def __init__(self, reason: str, abort_reason: int = REASON_INVALID_PARAMETER) -> None:
        super().__init__(reason)
        self.abort_reason = abort_reason


class PeerTimeout(Exception):
    """The peer did not send what was due before its timer ran out."""


class PeerClosed(Exception):
    """The peer closed the connection (or it broke) outside a release or abort."""


# Before association only these may arrive (PS3.8 state Sta2); anything else is refused on
# its header, before a byte of its body is read or a buffer is sized for it.
_FIRST_PDUS = frozenset({ASSOCIATE_RQ, ABORT})
# Bytes per second a P-DATA-TF body must at least arrive at, once begun: its timer grows with
# what has arrived, so a slow link finishes and a peer dribbling bytes does not.
MIN_PDATA_RATE = 8 * 1024


def body_limit(pdu_type: int, max_pdata: int, first: bool = False) -> int:
    """The largest body length accepted for a PDU type; FramingError for unknown types,
    and for types that cannot come ``first`` (before association)."""
    if pdu_type not in PDU_NAMES:
        raise FramingError(f"unknown PDU type 0x{pdu_type:02X}", REASON_UNRECOGNIZED_PDU)
    if first and pdu_type not in _FIRST_PDUS:
        raise FramingError(f"{PDU_NAMES[pdu_type]} before A-ASSOCIATE-RQ", REASON_UNEXPECTED_PDU)
    if pdu_type == P_DATA_TF:
        return max_pdata + PDV_SLACK
    if pdu_type in (ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ):
        return MAX_ASSOCIATION_PDU
    return 4


class PduReader:
    """Whole PDUs from a socket, one buffer per connection, every read against a deadline."""

    def __init__(self, sock: socket.socket, max_pdata: int) -> None:
        self._sock = sock
        self._max_pdata = max_pdata
        # Grown to a P-DATA-TF's size only when one arrives: a connection that never
        # associates holds at most an association PDU.
        self._buffer = bytearray(HEADER + MAX_ASSOCIATION_PDU)
        self._view = memoryview(self._buffer)
        self._start = 0  # first unread byte
        self._end = 0  # end of the bytes received
        # Linux acknowledges at once when asked; otherwise a sender with Nagle on (DCMTK's
        # default) waits for our delayed ACK before each small PDU it sends after another.
        self._quickack = getattr(socket, "TCP_QUICKACK", None)
        self.received = 0  # bytes read from the socket

    def _fill(self, count: int, deadline: float, what: str, min_rate: int = 0) -> None:
        """Make at least count bytes available from _start, receiving before deadline
        (pushed back by one second per ``min_rate`` bytes received, when given)."""
        started = self.received
        if self._start + count > len(self._buffer):  # compact: move the partial PDU down
            pending = self._end - self._start
            if count > len(self._buffer):  # bounded by body_limit, checked by the caller
                grown = bytearray(max(count, HEADER + self._max_pdata + PDV_SLACK))
                grown[:pending] = self._view[self._start : self._end]
                self._buffer, self._view = grown, memoryview(grown)
            else:
                self._buffer[:pending] = self._view[self._start : self._end]
            self._start, self._end = 0, pending
        while self._end - self._start < count:
            earned = (self.received - started) / min_rate if min_rate else 0.0
            remaining = deadline + earned - time.monotonic()
            if remaining <= 0:
                raise PeerTimeout(what)
            self._sock.settimeout(remaining)
            try:
                received = self._sock.recv_into(self._view[self._end :])
            except TimeoutError as exc:
                raise PeerTimeout(what) from exc
            except OSError as exc:
                raise PeerClosed(f"connection error: {exc.strerror or exc}") from exc
            if not received:
                raise PeerClosed("connection closed by the peer")
            if self._quickack is not None:
                try:
                    self._sock.setsockopt(socket.IPPROTO_TCP, self._quickack, 1)
                except OSError:
                    self._quickack = None
            self._end += received
            self.received += received

    def read(
        self, idle_deadline: float, pdu_timeout: float, first_pdu: bool = False
    ) -> tuple[int, memoryview]:
        """The next PDU's type and body (a view valid until the next call).

        ``idle_deadline`` bounds the wait for the PDU's first byte; once it has begun, the
        rest must arrive within ``pdu_timeout`` seconds (an ARTIM-style timer), plus one
        second per ``MIN_PDATA_RATE`` bytes of a P-DATA-TF body that did arrive. With
        ``first_pdu`` the one deadline covers the whole PDU (accept to A-ASSOCIATE-RQ), and
        only an A-ASSOCIATE-RQ or an A-ABORT may come.
        """
        if self._start == self._end:
            self._start = self._end = 0
        self._fill(1, idle_deadline, "the next PDU")
        deadline = idle_deadline if first_pdu else time.monotonic() + pdu_timeout
        self._fill(HEADER, deadline, "PDU header")
        pdu_type, length = _HEADER_STRUCT.unpack_from(self._buffer, self._start)
        limit = body_limit(pdu_type, self._max_pdata, first_pdu)
        name = PDU_NAMES[pdu_type]
        if length > limit:
            raise FramingError(f"{name} of {length} bytes exceeds the limit of {limit}")
        if limit == 4 and length != 4:
            raise FramingError(f"{name} of {length} bytes, not 4")
        rate = MIN_PDATA_RATE if pdu_type == P_DATA_TF else 0
        self._fill(HEADER + length, deadline, name, rate)
        body = self._view[self._start + HEADER : self._start + HEADER + length]
        self._start += HEADER + length
        return pdu_type, body


@dataclass(frozen=True, slots=True)
class Pdv:
    context_id: int
    command: bool
    last: bool
    data: memoryview


def pdvs(body: memoryview) -> Iterator[Pdv]:
    """The presentation data values of a P-DATA-TF body; FramingError if they do not fit."""
    offset, end = 0, len(body)
    if end == 0:
        raise FramingError("P-DATA-TF without a presentation data value")
    while offset < end:
        if end - offset < 6:
            raise FramingError("P-DATA-TF ends inside a PDV header")
        length, context_id, control = _PDV_STRUCT.unpack_from(body, offset)
        if length < 2 or offset + 4 + length > end:
            raise FramingError("PDV length disagrees with its P-DATA-TF")
        if context_id % 2 == 0:
            raise FramingError(f"PDV names the even presentation context ID {context_id}")
        data = body[offset + 6 : offset + 4 + length]
        yield Pdv(context_id, bool(control & 1), bool(control & 2), data)
        offset += 4 + length


def p_data(context_id: int, command: bytes, max_pdu: int) -> bytes:
    """A command set as P-DATA-TF PDUs, split to fit the peer's maximum (0: no limit)."""
    room = len(command) if max_pdu == 0 else max(max_pdu - 6, 16)
    out = bytearray()
    for start in range(0, len(command), room):
        chunk = command[start : start + room]
        control = 0x03 if start + room >= len(command) else 0x01
        out += _HEADER_STRUCT.pack(P_DATA_TF, len(chunk) + 6)
        out += _PDV_STRUCT.pack(len(chunk) + 2, context_id, control) + chunk
    return bytes(out)


def abort(source: int = ABORT_SOURCE_PROVIDER, reason: int = REASON_NOT_SPECIFIED) -> bytes:
    return _HEADER_STRUCT.pack(ABORT, 4) + bytes((0, 0, source, reason))


def reject(result: int, source: int, reason: int) -> bytes:
    return _HEADER_STRUCT.pack(ASSOCIATE_RJ, 4) + bytes((0, result, source, reason))


RELEASE_RESPONSE = _HEADER_STRUCT.pack(RELEASE_RP, 4) + bytes(4)
