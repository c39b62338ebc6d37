"""The front door's promises (DESIGN.md, "The front door") against real sockets.

Misbehaving peers are raw sockets sending hand-built bytes (``support.dimse_raw``);
well-behaved ones are pynetdicom SCUs. All traffic is loopback: a second source address
(127.0.0.2, also loopback on Linux) stands for another host where the per-host cap matters.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, Verification
from support.datasets import ct_dataset
from support.dimse_raw import (
    ABORT_BY_USER,
    ABORT_INVALID_PARAMETER,
    C_ECHO_RQ,
    C_STORE_RQ,
    RawAssociation,
    associate_rq,
    command_set,
    dataset_bytes,
    p_data,
    pdu_header,
)
from support.fake_dicomweb import FakeDicomWeb, accept_all
from support.fuzzing import associate_rqs, mutated
from support.net import wait_until
from support.receiving import queued, staged, stored_objects

from dicom_ingest.local import LocalPipeline
from receiver import association
from receiver.staging import WRITE_BACK_EVERY, StagingFile, StagingFiles

pytestmark = pytest.mark.slow  # real processes and timers: tens of seconds in all

CT = str(CTImageStorage)
MR = str(MRImageStorage)
US_RETIRED = "1.2.840.10008.5.1.4.1.1.6"
NEWER_STORAGE = "1.2.840.10008.5.1.4.1.1.999.42"
NOT_STORAGE = "1.2.826.0.1.3680043.9.9999.77"
ELE, ILE = str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)
EBE = "1.2.840.10008.1.2.2"
JPEG_2000 = "1.2.840.10008.1.2.4.91"
OTHER_HOST = "127.0.0.2"
# A-ABORT, source: service provider, reason: not specified (what a timer ends with).
ABORT_NOT_SPECIFIED = bytes.fromhex("07000000000400000200")
CT_CONTEXT = [(1, CT, [ELE])]
ECHO = command_set(C_ECHO_RQ, 1, has_dataset=False)


@pytest.fixture
def start(
    pipelines: Callable[..., LocalPipeline],
    held_store: FakeDicomWeb,
    caplog: pytest.LogCaptureFixture,
) -> Callable[..., LocalPipeline]:
    """A receiver whose uploads wait, with its log captured from INFO up."""
    caplog.set_level(logging.INFO, logger="receiver")

    def factory(**overrides: object) -> LocalPipeline:
        return pipelines(
            held_store.url, upload_workers=1, min_backoff=60.0, max_backoff=60.0, **overrides
        )

    return factory


@pytest.fixture
def raw() -> Iterator[Callable[..., RawAssociation]]:
    """Raw connections, each closed at teardown."""
    opened: list[RawAssociation] = []

    def connect(port: int, **options: object) -> RawAssociation:
        connection = RawAssociation(port, **options)  # type: ignore[arg-type]
        opened.append(connection)
        return connection

    yield connect
    for connection in opened:
        connection.close()


def scu(*contexts: tuple[str, list[str]]) -> AE:
    ae = AE(ae_title="TESTSCU")
    for abstract, syntaxes in contexts or ((Verification, [ILE]), (CT, [ELE, ILE])):
        ae.add_requested_context(abstract, syntaxes)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae


def store_with_scu(pipeline: LocalPipeline, ds: Dataset, source: str = "127.0.0.1") -> int:
    assoc = scu().associate(
        "127.0.0.1", pipeline.receiver.port, ae_title="IMPORTADAPTER", bind_address=(source, 0)
    )
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def association_lines(
    caplog: pytest.LogCaptureFixture, local_port: int | None = None
) -> list[logging.LogRecord]:
    """The closing line of each association (of the one from local_port, if given)."""
    return [
        r
        for r in list(caplog.records)
        if r.name == "receiver.association"
        and hasattr(r, "outcome")
        and (local_port is None or getattr(r, "peer", "") == f"127.0.0.1:{local_port}")
    ]


def refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Lines for connections closed at accept (over a connection cap): at most one per
    address per interval, with how many were refused since the last."""
    return [r for r in list(caplog.records) if r.getMessage().startswith("connection refused")]


def the_line(caplog: pytest.LogCaptureFixture, local_port: int) -> logging.LogRecord:
    """The one closing line of a connection, once it is logged (and checked to stay one)."""
    wait_until(lambda: association_lines(caplog, local_port), 30, "the association line")
    [line] = association_lines(caplog, local_port)
    return line


def assert_no_faults(caplog: pytest.LogCaptureFixture, since: int = 0) -> None:
    """No ERROR record, no traceback and no patient name or ID logged (after ``since``)."""
    records = list(caplog.records)[since:]
    faults = [r for r in records if r.levelno >= logging.ERROR or r.exc_info]
    assert faults == [], [r.getMessage() for r in faults]
    text = " ".join(f"{r.getMessage()} {r.__dict__}" for r in records)
    assert "Synthetic" not in text and "SYNTH-0001" not in text  # support.datasets' patient


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def pour(sock: socket.socket, total: int) -> int:
    """Send up to total bytes of junk until the peer stops taking them; how many went."""
    chunk = b"\xa5" * (1 << 20)
    sent = 0
    try:
        while sent < total:
            sent += sock.send(chunk)
    except OSError:
        pass
    return sent


def is_open(connection: RawAssociation) -> bool:
    """True while the receiver has neither closed nor answered the connection."""
    connection.sock.setblocking(False)
    try:
        connection.sock.recv(1)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        connection.sock.setblocking(True)
    return False


# -- 1. connections that never negotiate -------------------------------------------------------


@pytest.mark.parametrize("cap", [3, 16], ids=["small-cap", "default-cap"])
def test_header_only_connections_do_not_block_real_senders(
    cap: int,
    start: Callable[..., LocalPipeline],
    raw: Callable[..., RawAssociation],
    caplog: pytest.LogCaptureFixture,
) -> None:
    acse_timeout = 5.0
    pipeline = start(acse_timeout=acse_timeout, max_connections_per_host=cap)
    port = pipeline.receiver.port
    held = []
    for index in range(40):
        connection = raw(port)
        connection.send(b"\x01\x00\x00\x00\x10\x00")  # an A-ASSOCIATE-RQ of 4096 bytes, never sent
        if index < cap:
            wait_until(lambda n=index + 1: pipeline.receiver.open_connections() == n, 10)
            held.append(connection)
        else:  # over the cap for this address: closed unanswered, not held
            data, _ = connection.wait_closed(10)
            assert data == b""
    assert pipeline.receiver.open_connections() == cap
    assert all(is_open(connection) for connection in held)
    # One line, not one per refusal: the rest, in the same interval, go into the next line.
    lines = refusals(caplog)
    assert len(lines) == 1 and getattr(lines[0], "refused", None) == 1

    # Another host is not held up by them.
    assert store_with_scu(pipeline, ct_dataset(), source=OTHER_HOST) == 0x0000

    # The held ones are dropped by the ACSE timer, each with an A-ABORT.
    for connection in held:
        data, _ = connection.wait_closed(acse_timeout + 30)
        assert data == ABORT_NOT_SPECIFIED
    wait_until(lambda: pipeline.receiver.open_connections() == 0, 30, "all connections ended")
    wait_until(lambda: len(association_lines(caplog)) == cap + 1, 30, "every line")
    timed_out = [r for r in association_lines(caplog) if getattr(r, "outcome", "") == "timed out"]
    assert len(timed_out) == cap
    # And the address itself is served again.
    assert store_with_scu(pipeline, ct_dataset()) == 0x0000
    assert len(stored_objects(pipeline)) == 2
    assert_no_faults(caplog)


def test_negotiating_connections_hold_no_association_slot(
    start: Callable[..., LocalPipeline],
    raw: Callable[..., RawAssociation],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = start(max_associations=1)
    port = pipeline.receiver.port
    pending = [raw(port) for _ in range(10)]
    for connection in pending:
        connection.send(b"\x01\x00\x00\x00\x10\x00")
    wait_until(lambda: pipeline.receiver.open_connections() == 10, 10, "10 connections")
    assert pipeline.receiver.active_associations() == 0
    assert store_with_scu(pipeline, ct_dataset()) == 0x0000
    assert all(is_open(connection) for connection in pending)
    assert_no_faults(caplog)


# -- 2. PDUs larger than their limit -----------------------------------------------------------


def test_oversize_associate_rq_is_aborted_unread(
    start: Callable[..., LocalPipeline],
    raw: Callable[..., RawAssociation],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = start()
    connection = raw(pipeline.receiver.port)
    before = rss_bytes()
    connection.send(b"\x01\x00\xff\xff\xff\xff")
    assert connection.read_raw_pdu() == ABORT_INVALID_PARAMETER
    sent = pour(connection.sock, 50 << 20)
    assert sent < 50 << 20  # the receiver stopped reading and closed
    assert rss_bytes() - before < 32 << 20
    line = the_line(caplog, connection.local_port)
    assert line.outcome == "aborted"  # type: ignore[attr-defined]
    assert "exceeds the limit" in line.reason  # type: ignore[attr-defined]
    assert_no_faults(caplog)


def test_oversize_p_data_is_aborted_unread(
    start: Callable[..., LocalPipeline],
    raw: Callable[..., RawAssociation],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = start(max_pdu=16384)
    connection = raw(pipeline.receiver.port)
    connection.associate(CT_CONTEXT)
    before = rss_bytes()
    connection.send(pdu_header(0x04, 1 << 30))
    assert connection.read_raw_pdu() == ABORT_INVALID_PARAMETER
    sent = pour(connection.sock, 50 << 20)
    assert sent < 50 << 20
    assert rss_bytes() - before < 32 << 20
    line = the_line(caplog, connection.local_port)
    assert line.outcome == "aborted"  # type: ignore[attr-defined]
    assert "P-DATA-TF of 1073741824 bytes" in line.reason  # type: ignore[attr-defined]
    assert_no_faults(caplog)


def test_p_data_just_over_the_maximum_is_aborted(
    start: Callable[..., LocalPipeline], raw: Callable[..., RawAssociation]
) -> None:
    pipeline = start(max_pdu=16384)
    connection = raw(pipeline.receiver.port)
    connection.associate(CT_CONTEXT)
    # The largest tolerated: the maximum plus a PDV header; one byte more is refused.
    connection.send(pdu_header(0x04, 16384 + 6 + 1))
    assert connection.read_raw_pdu() == ABORT_INVALID_PARAMETER
    data, _ = connection.wait_closed(30)
    assert data == b""


# -- 3. timers ---------------------------------------------------------------------------------


def test_idle_association_is_aborted_after_the_network_timeout(
    start: Callable[..., LocalPipeline],
    raw: Callable[..., RawAssociation],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = start(network_timeout=1.0)
    connection = raw(pipeline.receiver.port)
    connection.associate(CT_CONTEXT)
    data, waited = connection.wait_closed(30)
    assert data == ABORT_NOT_SPECIFIED
    assert 0.5 <= waited < 30
    line = the_line(caplog, connection.local_port)
    assert line.outcome == "timed out"  # type: ignore[attr-defined]


def drip(connection: RawAssociation, data: bytes, interval: float) -> tuple[int, bytes, float]:
    """Send data a byte at a time until the receiver answers or closes.

    Returns how many bytes went, what came back, and the seconds from the first byte.
    """
    started = time.monotonic()
    for index in range(len(data)):
        try:
            connection.send(data[index : index + 1])
        except OSError:
            return index, b"", time.monotonic() - started
        connection.sock.settimeout(interval)
        try:
            first = connection.sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            first = b""
        rest, _ = connection.wait_closed(30)
        return index + 1, first + rest, time.monotonic() - started
    raise AssertionError("the whole PDU was accepted a byte at a time")


@pytest.mark.parametrize("phase", ["associate-rq", "p-data"])
def test_slowly_dripped_pdu_is_cut_by_the_acse_timer(
    phase: str,
    start: Callable[..., LocalPipeline],
    raw: Callable[..., RawAssociation],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = start(acse_timeout=1.0, network_timeout=60.0, dimse_timeout=60.0)
    connection = raw(pipeline.receiver.port)
    if phase == "associate-rq":
        payload = associate_rq(CT_CONTEXT)
    else:
        connection.associate(CT_CONTEXT)
        payload = p_data(1, ECHO, command=True)
    sent, answer, seconds = drip(connection, payload, 0.3)
    assert answer == ABORT_NOT_SPECIFIED
    assert sent < len(payload)
    assert 0.5 <= seconds < 30
    line = the_line(caplog, connection.local_port)
    assert line.outcome == "timed out"  # type: ignore[attr-defined]


# -- 4. one bad request fails alone ------------------------------------------------------------


def test_malformed_requests_fail_alone_and_the_push_goes_on(
    start: Callable[..., LocalPipeline],
    raw: Callable[..., RawAssociation],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = start()
    connection = raw(pipeline.receiver.port)
    connection.associate(CT_CONTEXT)
    first, second = ct_dataset(), ct_dataset()
    answers = [
        connection.store(1, 1, first),
        connection.store(1, 2, ct_dataset(), sop_class="31"),
        connection.store(1, 3, ct_dataset(), sop_instance=""),
        connection.store(1, 4, second),
    ]
    assert [(a.message_id_responded, a.status) for a in answers] == [
        (1, 0x0000),
        (2, 0x0122),
        (3, 0xA900),
        (4, 0x0000),
    ]
    assert answers[1].comment and answers[2].comment
    connection.release()
    line = the_line(caplog, connection.local_port)
    assert line.outcome == "released"  # type: ignore[attr-defined]
    assert (line.instances, line.failed) == (2, 2)  # type: ignore[attr-defined]
    stored = {path.name.split("@")[0] for path in stored_objects(pipeline)}
    assert stored == {first.SOPInstanceUID, second.SOPInstanceUID}
    assert queued(pipeline) == 2
    assert staged(pipeline) == []
    assert_no_faults(caplog)


def test_a_uid_given_twice_fails_alone_and_nothing_is_stored(
    start: Callable[..., LocalPipeline],
    raw: Callable[..., RawAssociation],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A dataset with a second SOP Instance UID (another instance's): readers differ on which
    copy counts, so it is refused, where answering Success would let it be stored under a UID
    the receiver never checked."""
    pipeline = start()
    connection = raw(pipeline.receiver.port)
    connection.associate(CT_CONTEXT)
    ds, other, after = ct_dataset(), ct_dataset(), ct_dataset()
    second = Dataset()
    second.SOPInstanceUID = other.SOPInstanceUID
    data = dataset_bytes(second) + dataset_bytes(ds)  # the other's UID first, as DCMTK keeps
    connection.send_message(1, command_set(C_STORE_RQ, 1, CT, ds.SOPInstanceUID), data)
    refused = connection.read_response()
    assert (refused.message_id_responded, refused.status) == (1, 0xC000)
    assert refused.comment == "Cannot parse dataset: element (0008,0018) appears twice"
    assert connection.store(1, 2, after).status == 0x0000
    connection.release()
    stored = {path.name.split("@")[0] for path in stored_objects(pipeline)}
    assert stored == {after.SOPInstanceUID}
    assert queued(pipeline) == 1
    assert staged(pipeline) == []
    assert_no_faults(caplog)


# -- 5. data on a context the receiver refused -------------------------------------------------


def test_p_data_on_a_rejected_context_is_aborted_and_cleaned_up(
    start: Callable[..., LocalPipeline],
    raw: Callable[..., RawAssociation],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = start()
    connection = raw(pipeline.receiver.port)
    connection.associate([(1, CT, [ELE]), (3, NOT_STORAGE, [ELE])])
    assert connection.results[3][0] == 3  # abstract syntax not supported
    ds = ct_dataset()
    data = dataset_bytes(ds)
    command = command_set(C_STORE_RQ, 1, CT, ds.SOPInstanceUID)
    connection.send(p_data(1, command, command=True))
    connection.send(p_data(1, data[:4000], command=False, last=False))
    wait_until(lambda: staged(pipeline), 30, "a partly received dataset")
    connection.send(p_data(3, data[4000:], command=False))
    assert connection.read_raw_pdu() == ABORT_INVALID_PARAMETER
    assert connection.wait_closed(30)[0] == b""
    line = the_line(caplog, connection.local_port)
    assert line.outcome == "aborted"  # type: ignore[attr-defined]
    assert line.rejected_contexts == NOT_STORAGE  # type: ignore[attr-defined]
    assert "not accepted" in line.reason  # type: ignore[attr-defined]
    assert staged(pipeline) == []
    assert stored_objects(pipeline) == []
    assert queued(pipeline) == 0
    assert_no_faults(caplog)


# -- 6. retired and post-release storage classes -----------------------------------------------


def _instance_of(sop_class: str) -> Dataset:
    ds = ct_dataset()
    ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    return ds


def test_retired_and_newer_storage_classes_are_stored(
    start: Callable[..., LocalPipeline], caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = start()
    ae = scu((US_RETIRED, [ELE]), (NEWER_STORAGE, [ELE]))
    assoc = ae.associate("127.0.0.1", pipeline.receiver.port, ae_title="IMPORTADAPTER")
    assert assoc.is_established
    assert {str(c.abstract_syntax) for c in assoc.accepted_contexts} == {US_RETIRED, NEWER_STORAGE}
    statuses = [assoc.send_c_store(_instance_of(uid)).Status for uid in (US_RETIRED, NEWER_STORAGE)]
    assoc.release()
    assert statuses == [0x0000, 0x0000]
    assert len(stored_objects(pipeline)) == 2
    assert queued(pipeline) == 2


def test_newer_storage_class_is_refused_without_the_storage_root_rule(
    start: Callable[..., LocalPipeline], caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = start(accept_storage_root=False)
    ae = scu((US_RETIRED, [ELE]), (NEWER_STORAGE, [ELE]))
    assoc = ae.associate("127.0.0.1", pipeline.receiver.port, ae_title="IMPORTADAPTER")
    assert assoc.is_established
    [rejected] = assoc.rejected_contexts
    assert (str(rejected.abstract_syntax), rejected.result) == (NEWER_STORAGE, 3)
    assert assoc.send_c_store(_instance_of(US_RETIRED)).Status == 0x0000
    local_port = assoc.dul.socket.socket.getsockname()[1]
    assoc.release()
    line = the_line(caplog, local_port)
    assert line.rejected_contexts == NEWER_STORAGE  # type: ignore[attr-defined]
    assert line.outcome == "released"  # type: ignore[attr-defined]


# -- 7. transfer syntax choice -----------------------------------------------------------------


def test_transfer_syntax_is_the_first_listed_never_big_over_little_endian(
    start: Callable[..., LocalPipeline],
) -> None:
    pipeline = start()
    ae = scu((CT, [EBE, ELE]), (MR, [JPEG_2000, ELE]), (US_RETIRED, [EBE]))
    assoc = ae.associate("127.0.0.1", pipeline.receiver.port, ae_title="IMPORTADAPTER")
    assert assoc.is_established
    chosen = {str(c.abstract_syntax): str(c.transfer_syntax[0]) for c in assoc.accepted_contexts}
    assert chosen == {CT: ELE, MR: JPEG_2000, US_RETIRED: EBE}
    assert assoc.send_c_store(ct_dataset()).Status == 0x0000  # over the CT context, in ELE
    assoc.release()
    assert len(stored_objects(pipeline)) == 1


# -- 8. one line per association, whatever ended it --------------------------------------------


def _release(connection: RawAssociation, pipeline: LocalPipeline) -> None:
    connection.associate(CT_CONTEXT)
    connection.release()


def _peer_abort(connection: RawAssociation, pipeline: LocalPipeline) -> None:
    connection.associate(CT_CONTEXT)
    _begin_store(connection, pipeline)
    connection.send(ABORT_BY_USER)
    assert connection.wait_closed(30)[0] == b""


def _our_abort(connection: RawAssociation, pipeline: LocalPipeline) -> None:
    connection.associate(CT_CONTEXT)
    _begin_store(connection, pipeline)
    connection.send(pdu_header(0x09, 4) + bytes(4))  # no such PDU type
    assert connection.wait_closed(30)[0] == bytes.fromhex("07000000000400000201")


def _timeout(connection: RawAssociation, pipeline: LocalPipeline) -> None:
    connection.associate(CT_CONTEXT)
    _begin_store(connection, pipeline)  # then nothing: the DIMSE timer ends it
    assert connection.wait_closed(30)[0] == ABORT_NOT_SPECIFIED


def _never_negotiates(connection: RawAssociation, pipeline: LocalPipeline) -> None:
    assert connection.wait_closed(30)[0] == ABORT_NOT_SPECIFIED  # the ACSE timer


def _reset(connection: RawAssociation, pipeline: LocalPipeline) -> None:
    connection.associate(CT_CONTEXT)
    _begin_store(connection, pipeline)
    connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()  # RST


def _begin_store(connection: RawAssociation, pipeline: LocalPipeline) -> None:
    """Half a C-STORE, so that a staging file exists when the association ends."""
    ds = ct_dataset()
    connection.send(p_data(1, command_set(C_STORE_RQ, 1, CT, ds.SOPInstanceUID), command=True))
    connection.send(p_data(1, dataset_bytes(ds)[:4000], command=False, last=False))
    wait_until(lambda: staged(pipeline), 30, "a partly received dataset")


ENDINGS: dict[str, tuple[Callable[[RawAssociation, LocalPipeline], None], str]] = {
    "release": (_release, "released"),
    "peer-abort": (_peer_abort, "aborted by peer"),
    "our-abort": (_our_abort, "aborted"),
    "timeout": (_timeout, "timed out"),
    "never-negotiates": (_never_negotiates, "timed out"),
    "reset": (_reset, "closed"),
}


def test_every_association_leaves_one_line_and_no_staging_file(
    start: Callable[..., LocalPipeline],
    raw: Callable[..., RawAssociation],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = start(acse_timeout=1.0, dimse_timeout=1.0, network_timeout=1.0)
    for name, (end, outcome) in ENDINGS.items():
        connection = raw(pipeline.receiver.port)
        local_port = connection.local_port
        end(connection, pipeline)
        line = the_line(caplog, local_port)
        assert line.outcome == outcome, name  # type: ignore[attr-defined]
        wait_until(lambda: staged(pipeline) == [], 30, f"no staging file after {name}")
    wait_until(lambda: pipeline.receiver.open_connections() == 0, 30, "all connections ended")
    assert len(association_lines(caplog)) == len(ENDINGS)
    assert stored_objects(pipeline) == []
    assert_no_faults(caplog)


def test_an_association_cut_at_shutdown_leaves_no_staging_file(
    start: Callable[..., LocalPipeline],
    raw: Callable[..., RawAssociation],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The one ending the table above cannot hold: the grace period runs out mid-dataset."""
    pipeline = start(shutdown_grace=0.5)
    connection = raw(pipeline.receiver.port)
    connection.associate(CT_CONTEXT)
    _begin_store(connection, pipeline)
    assert pipeline.stop() is False  # the association did not finish within the grace
    line = the_line(caplog, connection.local_port)
    assert line.outcome == "aborted at shutdown"  # type: ignore[attr-defined]
    assert staged(pipeline) == []
    assert stored_objects(pipeline) == []


# -- 9. instance size limit --------------------------------------------------------------------


def test_instance_over_the_size_limit_fails_alone(
    start: Callable[..., LocalPipeline], caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = start(max_instance_bytes=20000)
    assoc = scu().associate("127.0.0.1", pipeline.receiver.port, ae_title="IMPORTADAPTER")
    assert assoc.is_established
    big = assoc.send_c_store(ct_dataset(rows=128, columns=128))
    small = assoc.send_c_store(ct_dataset())
    assoc.release()
    assert big.Status == 0xC000
    assert str(big.ErrorComment) == "Refused: instance larger than 20000 bytes"
    assert small.Status == 0x0000
    assert len(stored_objects(pipeline)) == 1
    assert queued(pipeline) == 1
    assert staged(pipeline) == []
    assert_no_faults(caplog)


def test_a_large_associate_rq_is_read_whatever_the_maximum_pdu(
    start: Callable[..., LocalPipeline],
) -> None:
    """A-ASSOCIATE-RQs are bounded by 64 KiB, not by the P-DATA-TF maximum."""
    pipeline = start(max_pdu=4096)
    syntaxes = [ELE, ILE, JPEG_2000, EBE]
    classes = [CT] + [f"1.2.840.10008.5.1.4.1.1.{n}.1" for n in range(119)]
    ae = scu(*((uid, syntaxes) for uid in classes))
    assoc = ae.associate("127.0.0.1", pipeline.receiver.port, ae_title="IMPORTADAPTER")
    assert assoc.is_established
    assert len(assoc.accepted_contexts) == 120
    assert assoc.send_c_store(ct_dataset(rows=128, columns=128)).Status == 0x0000
    assoc.release()
    assert len(stored_objects(pipeline)) == 1


def test_ae_title_bytes_outside_ascii_are_answered(
    start: Callable[..., LocalPipeline],
    raw: Callable[..., RawAssociation],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = start()
    connection = raw(pipeline.receiver.port)
    request = bytearray(associate_rq(CT_CONTEXT, calling="XSCU"))
    request[6 + 20] = 0xE9  # the first byte of the calling AE title
    connection.send(bytes(request))
    assert connection.read_pdu()[0] == 0x02  # A-ASSOCIATE-AC
    connection.release()
    line = the_line(caplog, connection.local_port)
    assert line.calling_ae == "?SCU"  # type: ignore[attr-defined]
    assert_no_faults(caplog)


# -- 10. fuzz ----------------------------------------------------------------------------------

PDU_TYPES = {0x02, 0x03, 0x04, 0x06, 0x07}


def _answer_frames(data: bytes) -> None:
    """What the receiver sent is whole PDUs of types an acceptor sends (a cut tail aside)."""
    offset = 0
    while len(data) - offset >= 6:
        pdu_type, length = struct.unpack_from(">BxL", data, offset)
        assert pdu_type in PDU_TYPES, data[offset : offset + 16]
        if pdu_type == 0x07:
            assert data[offset + 6 : offset + 10] in (b"\x00\x00\x02\x00", *_ABORT_BODIES)
        offset += 6 + length
    assert offset == len(data), "the answer ends inside a PDU"


_ABORT_BODIES = tuple(bytes((0, 0, 2, reason)) for reason in (0, 1, 2, 5, 6))


def receiver_threads() -> list[str]:
    """The receiver's threads: its listener and one per connection."""
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("dimse-"))


def _exchange(port: int, data: bytes, associate_first: bool) -> bytes:
    """Send data (after a real association if asked), end our side, read to the close.

    A fault is logged before the receiver closes, so it shows in the records by the time
    this returns: the example that caused it is the one that fails (and is shrunk).
    """
    connection = RawAssociation(port, timeout=30)
    try:
        if associate_first:
            connection.associate(CT_CONTEXT, max_pdu=16384)
        try:
            connection.send(data)
            connection.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the receiver may have closed already: what it sent is still readable
        answer, seconds = connection.wait_closed(30)
        assert seconds < 30, "the receiver neither answered nor closed"
        return answer
    finally:
        connection.close()


def _seed_push() -> bytes:
    ds = ct_dataset(rows=8, columns=8)
    command = command_set(C_STORE_RQ, 1, CT, ds.SOPInstanceUID)
    data = dataset_bytes(ds)
    return (
        p_data(1, ECHO, command=True)
        + p_data(1, command, command=True)
        + p_data(1, data[:200], command=False, last=False)
        + p_data(1, data[200:], command=False)
        + pdu_header(0x05, 4)
        + bytes(4)
    )


def test_fuzzed_bytes_are_answered_aborted_or_closed_never_raised(
    start: Callable[..., LocalPipeline],
    fake_dicomweb: FakeDicomWeb,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Instances the fuzz gets stored upload at once: a retry would draw its backoff from
    # the random module while Hypothesis draws examples, which it reports as flaky. The
    # mutations resend one SOP Instance UID with other bytes, each a correction: skipped
    # (a WARNING), since --conflict fail would dead-letter them, which is not what this
    # test is about.
    fake_dicomweb.responder = accept_all
    pipeline = start(
        acse_timeout=2.0, dimse_timeout=2.0, network_timeout=2.0, max_pdu=16384, conflict="skip"
    )
    port = pipeline.receiver.port
    baseline_threads = receiver_threads()
    baseline_rss = rss_bytes()
    headers = st.builds(
        lambda kind, length, rest: struct.pack(">BxL", kind, length) + rest,
        st.integers(0, 9),
        st.one_of(st.integers(0, 300), st.integers(0, 0xFFFFFFFF)),
        st.binary(max_size=300),
    )
    fuzz = settings(
        max_examples=400,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )

    connections = 0

    @fuzz
    @given(
        st.one_of(
            st.binary(max_size=400),
            headers,
            mutated(associate_rq(CT_CONTEXT)),
            associate_rqs(b"IMPORTADAPTER"),
        )
    )
    def before_association(data: bytes) -> None:
        nonlocal connections
        connections += 1
        since = len(caplog.records)
        _answer_frames(_exchange(port, data, associate_first=False))
        assert_no_faults(caplog, since)

    @fuzz
    @given(mutated(_seed_push()))
    def after_association(data: bytes) -> None:
        nonlocal connections
        connections += 1
        since = len(caplog.records)
        _answer_frames(_exchange(port, data, associate_first=True))
        assert_no_faults(caplog, since)

    before_association()
    after_association()

    wait_until(lambda: pipeline.receiver.open_connections() == 0, 30, "every connection ended")
    assert connections > 400
    # One line for each connection (or a refusal, had one address outrun its cap).
    wait_until(
        lambda: (
            len(association_lines(caplog)) + sum(getattr(r, "refused", 1) for r in refusals(caplog))
            == connections
        ),
        30,
        f"one line for each of {connections} connections",
    )
    wait_until(lambda: receiver_threads() == baseline_threads, 30, "connection threads ended")
    assert staged(pipeline) == []
    assert rss_bytes() - baseline_rss < 64 << 20
    assert_no_faults(caplog)
    # The listener still serves a real sender.
    assoc = scu().associate("127.0.0.1", port, ae_title="IMPORTADAPTER")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()


# -- what a review of the front door found, each kept fixed ---------------------------------


def test_a_p_data_header_before_association_is_refused_on_its_header(
    start: Callable[..., LocalPipeline], raw: Callable[..., RawAssociation]
) -> None:
    """Only an A-ASSOCIATE-RQ (or A-ABORT) may open a connection: no buffer is sized for
    anything else, so six bytes cannot make the receiver hold a P-DATA-TF's worth."""
    pipeline = start(max_pdu=4 << 20)
    connection = raw(pipeline.receiver.port)
    connection.send(pdu_header(0x04, 4 << 20))  # a P-DATA-TF of 4 MiB, never sent
    data, took = connection.wait_closed(10)
    assert data == bytes.fromhex("07000000000400000202")  # provider, unexpected PDU
    assert took < 5


def test_an_a_abort_first_is_not_answered(
    start: Callable[..., LocalPipeline],
    raw: Callable[..., RawAssociation],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = start()
    connection = raw(pipeline.receiver.port)
    connection.send(ABORT_BY_USER)
    data, _ = connection.wait_closed(10)
    assert data == b""
    line = the_line(caplog, connection.local_port)
    assert line.outcome == "aborted by peer"


def test_aborting_a_peer_that_reset_leaves_one_line_and_no_fault(
    start: Callable[..., LocalPipeline],
    raw: Callable[..., RawAssociation],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = start()
    connection = raw(pipeline.receiver.port)
    connection.associate(CT_CONTEXT)
    connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.send(pdu_header(0x09, 4) + bytes(4))  # an unknown PDU type, then a reset
    connection.close()
    line = the_line(caplog, connection.local_port)
    assert line.outcome == "aborted"
    assert_no_faults(caplog)


def test_a_staging_write_that_fails_answers_0xa700_and_the_push_goes_on(
    start: Callable[..., LocalPipeline],
    raw: Callable[..., RawAssociation],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = StagingFiles.create
    calls = {"n": 0}

    def full_disk(self: StagingFiles) -> StagingFile:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self)

    monkeypatch.setattr(StagingFiles, "create", full_disk)
    pipeline = start(receive_processes=1)  # the patch is in this process only
    connection = raw(pipeline.receiver.port)
    connection.associate(CT_CONTEXT)
    first, second = ct_dataset(seed=1), ct_dataset(seed=2)
    assert connection.store(1, 1, first).status == 0xA700
    assert connection.store(1, 2, second).status == 0x0000
    connection.release()
    wait_until(lambda: queued(pipeline) == 1, 10, "the second instance queued")
    assert staged(pipeline) == []


def test_a_slow_but_steady_p_data_is_not_cut_by_the_pdu_timer(
    start: Callable[..., LocalPipeline], raw: Callable[..., RawAssociation]
) -> None:
    """The timer of a P-DATA-TF body grows with what arrives (8 KiB/s at least)."""
    pipeline = start(acse_timeout=1.0)
    connection = raw(pipeline.receiver.port)
    connection.associate(CT_CONTEXT)
    ds = ct_dataset(seed=3)
    data = dataset_bytes(ds, ELE)
    connection.send(p_data(1, command_set(C_STORE_RQ, 1, CT, str(ds.SOPInstanceUID)), command=True))
    pdu = p_data(1, data, command=False, last=True)
    for start_at in range(0, len(pdu), 4096):  # 16 KiB/s: twice the floor, > 1 s in all
        connection.send(pdu[start_at : start_at + 4096])
        time.sleep(0.25)
    assert connection.read_response().status == 0x0000
    connection.release()


def test_c_echo_outside_verification_is_refused_on_its_message(
    start: Callable[..., LocalPipeline], raw: Callable[..., RawAssociation]
) -> None:
    pipeline = start()
    connection = raw(pipeline.receiver.port)
    connection.associate(CT_CONTEXT)
    connection.send_message(1, command_set(C_ECHO_RQ, 5, has_dataset=False), None)
    response = connection.read_response()
    assert (response.message_id_responded, response.status) == (5, 0x0122)
    connection.release()


def test_a_dataset_arrives_in_an_anonymous_private_file_that_the_spool_links(
    start: Callable[..., LocalPipeline], raw: Callable[..., RawAssociation]
) -> None:
    """Local mode stages each dataset in a file with no name (mode 0600): nothing appears in
    the staging directory while it arrives, and the stored version holds its bytes."""
    pipeline = start()
    connection = raw(pipeline.receiver.port)
    connection.associate(CT_CONTEXT)
    ds = ct_dataset(seed=11)
    data = dataset_bytes(ds, ELE)
    connection.send(p_data(1, command_set(C_STORE_RQ, 1, CT, str(ds.SOPInstanceUID)), command=True))
    connection.send(p_data(1, data[:4000], command=False, last=False))
    wait_until(lambda: staged(pipeline), 30, "a partly received dataset")
    assert list(pipeline.objects.staging_dir().iterdir()) == []
    (anonymous,) = staged(pipeline)
    assert stat.S_IMODE(anonymous.stat().st_mode) == 0o600
    connection.send(p_data(1, data[4000:], command=False, last=True))
    assert connection.read_response().status == 0x0000
    connection.release()
    assert staged(pipeline) == []
    (stored,) = stored_objects(pipeline)
    assert stored.read_bytes().endswith(data)


def test_a_dataset_the_spool_takes_is_written_back_to_disk_while_it_arrives(
    start: Callable[..., LocalPipeline],
    raw: Callable[..., RawAssociation],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Write-back of a staged file starts every 128 KiB of its dataset, on the bytes received
    so far (flushed to the file first), so the fsync before the answer waits for the end of
    the instance only; an instance in one PDU needs none."""
    started: list[tuple[str, int]] = []  # (the file, its size then)

    def write_back(fd: int) -> None:
        started.append((os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_size))
        real_write_back(fd)

    real_write_back = association.start_write_back
    monkeypatch.setattr(association, "start_write_back", write_back)
    pipeline = start(receive_processes=1)  # the associations in this process, patched
    connection = raw(pipeline.receiver.port)
    connection.associate(CT_CONTEXT)
    ds = ct_dataset(seed=12, rows=512, columns=512)
    data = dataset_bytes(ds, ELE)
    assert len(data) > 3 * WRITE_BACK_EVERY
    command = command_set(C_STORE_RQ, 1, CT, str(ds.SOPInstanceUID))
    connection.send_message(1, command, data, fragment=16384)  # pynetdicom-sized PDVs
    assert connection.read_response().status == 0x0000
    assert len(started) == (len(data) - 1) // WRITE_BACK_EVERY
    staging = str(pipeline.objects.staging_dir())
    for n, (name, size) in enumerate(started, start=1):
        assert name.startswith(f"{staging}/#"), name
        assert size > n * WRITE_BACK_EVERY  # file meta + n times 128 KiB of dataset, flushed
    started.clear()
    small = ct_dataset(seed=13)  # 8 KB, in one PDU
    command = command_set(C_STORE_RQ, 2, CT, str(small.SOPInstanceUID))
    connection.send_message(1, command, dataset_bytes(small, ELE), fragment=16384)
    assert connection.read_response().status == 0x0000
    connection.release()
    assert started == []
    assert len(stored_objects(pipeline)) == 2
