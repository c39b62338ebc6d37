"""The PDU reader over a socket pair: limits before bodies, deadlines, one buffer."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from support.dimse_raw import associate_rq, p_data

from receiver import pdu
from receiver.acse_codec import decode_associate_rq
from receiver.config import MIN_PDU

FAR = 30.0  # a deadline no test reaches


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    yield ours, theirs
    ours.close()
    theirs.close()


def deadline(seconds: float = FAR) -> float:
    return time.monotonic() + seconds


def test_pdus_are_read_whole_and_in_order(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    reader = pdu.PduReader(ours, MIN_PDU)
    stream = b"".join(p_data(1, bytes([n]) * (MIN_PDU - 6), command=False) for n in range(5))
    theirs.sendall(stream + pdu.RELEASE_RESPONSE)
    for n in range(5):
        pdu_type, body = reader.read(deadline(), FAR)
        assert pdu_type == pdu.P_DATA_TF
        [pdv] = pdu.pdvs(body)
        assert bytes(pdv.data) == bytes([n]) * (MIN_PDU - 6)
    assert reader.read(deadline(), FAR)[0] == pdu.RELEASE_RP
    assert reader.received == len(stream) + len(pdu.RELEASE_RESPONSE)


def test_a_length_over_the_limit_is_refused_before_its_body(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    reader = pdu.PduReader(ours, MIN_PDU)
    theirs.sendall(struct.pack(">BxL", pdu.P_DATA_TF, MIN_PDU + pdu.PDV_SLACK + 1) + b"x" * 100)
    with pytest.raises(pdu.FramingError, match="exceeds the limit") as caught:
        reader.read(deadline(), FAR)
    assert caught.value.abort_reason == pdu.REASON_INVALID_PARAMETER
    assert reader.received <= 6 + 100  # what had arrived; nothing more was waited for


def test_unknown_pdu_type_is_unrecognized(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    theirs.sendall(b"\x09\x00\x00\x00\x00\x04" + bytes(4))
    with pytest.raises(pdu.FramingError) as caught:
        pdu.PduReader(ours, MIN_PDU).read(deadline(), FAR)
    assert caught.value.abort_reason == pdu.REASON_UNRECOGNIZED_PDU


def test_a_large_associate_rq_fits_whatever_the_maximum_pdu(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """An A-ASSOCIATE-RQ may be up to 64 KiB even when P-DATA-TF is held to 4 KiB."""
    ours, theirs = pair
    syntaxes = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.91"]
    contexts = [(2 * n + 1, f"1.2.840.10008.5.1.4.1.1.{n}", syntaxes) for n in range(120)]
    request = associate_rq(contexts)
    assert MIN_PDU < len(request) < pdu.MAX_ASSOCIATION_PDU
    sender = threading.Thread(target=theirs.sendall, args=(request,))
    sender.start()
    pdu_type, body = pdu.PduReader(ours, MIN_PDU).read(deadline(), FAR, first_pdu=True)
    sender.join()
    assert pdu_type == pdu.ASSOCIATE_RQ
    assert len(decode_associate_rq(bytes(body)).contexts) == 120


def test_a_header_alone_runs_into_the_pdu_timer(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    theirs.sendall(b"\x04\x00\x00\x00\x01\x00")
    started = time.monotonic()
    with pytest.raises(pdu.PeerTimeout, match="P-DATA-TF"):
        pdu.PduReader(ours, MIN_PDU).read(deadline(), 0.3)
    assert time.monotonic() - started >= 0.29


def test_nothing_at_all_runs_into_the_idle_deadline(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, _ = pair
    with pytest.raises(pdu.PeerTimeout, match="the next PDU"):
        pdu.PduReader(ours, MIN_PDU).read(deadline(0.2), FAR)


def test_first_pdu_deadline_covers_the_whole_pdu(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Accept to A-ASSOCIATE-RQ is one timer: beginning the PDU does not restart it."""
    ours, theirs = pair
    theirs.sendall(b"\x01\x00\x00\x00\x00\x50")
    started = time.monotonic()
    with pytest.raises(pdu.PeerTimeout):
        pdu.PduReader(ours, MIN_PDU).read(deadline(0.3), FAR, first_pdu=True)
    assert time.monotonic() - started < FAR / 2


def test_a_closed_peer_is_peer_closed(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    theirs.sendall(b"\x04\x00\x00\x00")
    theirs.shutdown(socket.SHUT_WR)
    with pytest.raises(pdu.PeerClosed):
        pdu.PduReader(ours, MIN_PDU).read(deadline(), FAR)
