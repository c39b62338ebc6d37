"""A raw DICOM upper-layer client for misbehaving-peer tests: bytes built by hand, sent as is.

Everything here is written from PS3.8 (PDUs) and PS3.7 (command sets) directly, so a test
can send what no well-behaved SCU would: a PDU cut short, a length that lies, a command
with an empty UID, data on a context the receiver refused.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.dsutils import encode

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
CALLED_AE = "IMPORTADAPTER"

ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, RELEASE_RQ, RELEASE_RP, ABORT = 0x04, 0x05, 0x06, 0x07
# A-ABORT, source: service provider, reason: invalid PDU parameter value.
ABORT_INVALID_PARAMETER = bytes.fromhex("07000000000400000206")

C_STORE_RQ, C_ECHO_RQ = 0x0001, 0x0030


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BxH", item_type, len(value)) + value


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BxL", pdu_type, len(body)) + body


def associate_rq(
    contexts: list[tuple[int, str, list[str]]],
    called: str = CALLED_AE,
    calling: str = "RAWSCU",
    max_pdu: int = 65536,
) -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing (context ID, abstract syntax, transfer syntaxes)."""
    body = struct.pack(">H2x", 1) + called.ljust(16).encode() + calling.ljust(16).encode()
    body += bytes(32) + _item(0x10, APPLICATION_CONTEXT.encode())
    for context_id, abstract, syntaxes in contexts:
        sub = _item(0x30, abstract.encode()) + b"".join(_item(0x40, s.encode()) for s in syntaxes)
        body += _item(0x20, bytes((context_id, 0, 0, 0)) + sub)
    body += _item(0x50, _item(0x51, struct.pack(">L", max_pdu)))
    return _pdu(ASSOCIATE_RQ, body)


def pdu_header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BxL", pdu_type, length)


def p_data(context_id: int, data: bytes, *, command: bool, last: bool = True) -> bytes:
    """One P-DATA-TF PDU holding one PDV."""
    control = (1 if command else 0) | (2 if last else 0)
    return _pdu(P_DATA_TF, struct.pack(">LBB", len(data) + 2, context_id, control) + data)


RELEASE_RQ_PDU = _pdu(RELEASE_RQ, bytes(4))
ABORT_BY_USER = _pdu(ABORT, bytes(4))


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0x0000, element, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode()
    return raw + b"\x00" * (len(raw) % 2)


def command_set(
    command_field: int,
    message_id: int,
    sop_class: str | None = None,
    sop_instance: str | None = None,
    has_dataset: bool = True,
) -> bytes:
    """A request command set, Implicit VR Little Endian group 0000 (PS3.7 §E)."""
    body = b""
    if sop_class is not None:
        body += _element(0x0002, _uid(sop_class))
    body += _element(0x0100, struct.pack("<H", command_field))
    body += _element(0x0110, struct.pack("<H", message_id))
    if command_field == C_STORE_RQ:
        body += _element(0x0700, struct.pack("<H", 0))  # priority: medium
    body += _element(0x0800, struct.pack("<H", 0x0000 if has_dataset else 0x0101))
    if sop_instance is not None:
        body += _element(0x1000, _uid(sop_instance))
    return _element(0x0000, struct.pack("<L", len(body))) + body


def dataset_bytes(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    implicit = transfer_syntax == "1.2.840.10008.1.2"
    encoded = encode(ds, implicit, True)
    assert encoded is not None
    return encoded


@dataclass(frozen=True)
class Response:
    command_field: int
    message_id_responded: int
    status: int
    comment: str


def parse_response(data: bytes) -> Response:
    fields: dict[int, bytes] = {}
    offset = 0
    while offset < len(data):
        _, element, length = struct.unpack_from("<HHL", data, offset)
        fields[element] = data[offset + 8 : offset + 8 + length]
        offset += 8 + length
    return Response(
        int.from_bytes(fields[0x0100], "little"),
        int.from_bytes(fields[0x0120], "little"),
        int.from_bytes(fields[0x0900], "little"),
        fields.get(0x0902, b"").decode().strip(),
    )


class Closed(Exception):
    """The receiver closed the connection (FIN or RST) before a whole PDU arrived."""


class RawAssociation:
    """A socket to the receiver and the PDUs that go over it, nothing more."""

    def __init__(self, port: int, timeout: float = 30.0, source: str = "") -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0) if source else None
        )
        self.sock.settimeout(timeout)
        self.local_port = int(self.sock.getsockname()[1])  # names the receiver's log line
        self.results: dict[int, tuple[int, str]] = {}

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _exactly(self, count: int) -> bytes:
        out = bytearray()
        while len(out) < count:
            try:
                chunk = self.sock.recv(count - len(out))
            except ConnectionResetError as exc:
                raise Closed("reset") from exc
            if not chunk:
                raise Closed(f"closed after {len(out)} of {count} bytes")
            out += chunk
        return bytes(out)

    def read_pdu(self) -> tuple[int, bytes]:
        """The next whole PDU (type, body), header included in neither."""
        pdu_type, length = struct.unpack(">BxL", self._exactly(6))
        return pdu_type, self._exactly(length)

    def read_raw_pdu(self) -> bytes:
        """The next whole PDU as sent, header and all."""
        pdu_type, body = self.read_pdu()
        return _pdu(pdu_type, body)

    def wait_closed(self, timeout: float) -> tuple[bytes, float]:
        """Everything the receiver sends until it closes, and how long it took (Closed-safe)."""
        start = time.monotonic()
        self.sock.settimeout(timeout)
        out = bytearray()
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return bytes(out), time.monotonic() - start

    def associate(self, contexts: list[tuple[int, str, list[str]]], **options: object) -> None:
        """Send an A-ASSOCIATE-RQ and expect an A-ASSOCIATE-AC; records each context's result."""
        self.send(associate_rq(contexts, **options))  # type: ignore[arg-type]
        pdu_type, body = self.read_pdu()
        assert pdu_type == ASSOCIATE_AC, f"expected A-ASSOCIATE-AC, got {pdu_type:#04x} {body!r}"
        self.results = accepted_contexts(body)

    def send_message(
        self, context_id: int, command: bytes, dataset: bytes | None, fragment: int = 16000
    ) -> None:
        """A command and its data set, each as PDVs of at most ``fragment`` bytes."""
        self.send(p_data(context_id, command, command=True))
        if dataset is None:
            return
        for start in range(0, max(len(dataset), 1), fragment):
            last = start + fragment >= len(dataset)
            chunk = dataset[start : start + fragment]
            self.send(p_data(context_id, chunk, command=False, last=last))

    def read_response(self) -> Response:
        """The next DIMSE response (a command set, possibly over several PDVs)."""
        data = bytearray()
        while True:
            pdu_type, body = self.read_pdu()
            assert pdu_type == P_DATA_TF, f"expected P-DATA-TF, got {pdu_type:#04x} {body!r}"
            offset = 0
            while offset < len(body):
                length, _, control = struct.unpack_from(">LBB", body, offset)
                data += body[offset + 6 : offset + 4 + length]
                offset += 4 + length
                if control & 0x02:
                    return parse_response(bytes(data))

    def store(self, context_id: int, message_id: int, ds: Dataset, **command: str) -> Response:
        sop_class = command.get("sop_class", str(ds.SOPClassUID))
        sop_instance = command.get("sop_instance", str(ds.SOPInstanceUID))
        syntax = self.results[context_id][1]
        self.send_message(
            context_id,
            command_set(C_STORE_RQ, message_id, sop_class, sop_instance),
            dataset_bytes(ds, syntax),
        )
        return self.read_response()

    def release(self) -> None:
        self.send(RELEASE_RQ_PDU)
        pdu_type, _ = self.read_pdu()
        assert pdu_type == RELEASE_RP
        self.close()


def accepted_contexts(ac_body: bytes) -> dict[int, tuple[int, str]]:
    """context ID → (result, transfer syntax) from an A-ASSOCIATE-AC body."""
    results: dict[int, tuple[int, str]] = {}
    offset = 68
    while offset < len(ac_body):
        item_type, length = struct.unpack_from(">BxH", ac_body, offset)
        value = ac_body[offset + 4 : offset + 4 + length]
        if item_type == 0x21:
            syntax = ""
            if len(value) > 8 and value[4] == 0x40:
                (sub_length,) = struct.unpack_from(">H", value, 6)
                syntax = value[8 : 8 + sub_length].rstrip(b"\x00 ").decode()
            results[value[0]] = (value[2], syntax)
        offset += 4 + length
    return results
