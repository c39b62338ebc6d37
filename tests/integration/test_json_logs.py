"""With ``--log_format json`` every line the process writes is one JSON record.

A real ``dicom-ingest local`` process takes good instances, malformed ones and a connection
that speaks no DICOM at all, is stopped with SIGTERM, and each line of its output is parsed.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from support.datasets import ct_dataset
from support.dimse_raw import C_STORE_RQ, Closed, RawAssociation, command_set, dataset_bytes
from support.fake_dicomweb import FakeDicomWeb
from support.net import wait_until
from support.process import IngestProcess

from ingest.adapters.sqlite_queue import QUEUE_FILE

pytestmark = pytest.mark.slow

CT = str(CTImageStorage)
ELE = "1.2.840.10008.1.2.1"


@pytest.fixture
def process(tmp_path: Path, fake_dicomweb: FakeDicomWeb) -> Iterator[IngestProcess]:
    started = IngestProcess(
        tmp_path / "spool", fake_dicomweb.url, "--log_format", "json", with_stdout=True
    )
    yield started
    started.stop()


def send_good(port: int, count: int) -> list[str]:
    ae = AE(ae_title="PACS")
    ae.add_requested_context(CTImageStorage)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="IMPORTADAPTER")
    assert assoc.is_established
    sent = []
    for n in range(count):
        ds = ct_dataset(seed=n)
        assert assoc.send_c_store(ds).Status == 0x0000
        sent.append(str(ds.SOPInstanceUID))
    assoc.release()
    return sent


def send_malformed(port: int) -> None:
    """A bad SOP class, a data set that is not DICOM, and one cut short mid-element."""
    connection = RawAssociation(port, timeout=30)
    try:
        connection.associate([(1, CT, [ELE])])
        assert connection.store(1, 1, ct_dataset(), sop_class="31").status != 0x0000
        ds = ct_dataset()
        junk = b"\x08\x00\x18\x00UI\xff\x7f" + bytes(range(256)) * 4
        connection.send_message(1, command_set(C_STORE_RQ, 2, CT, ds.SOPInstanceUID), junk)
        connection.read_response()
        cut = ct_dataset()
        whole = dataset_bytes(cut)
        command = command_set(C_STORE_RQ, 3, CT, cut.SOPInstanceUID)
        connection.send_message(1, command, whole[: len(whole) // 2] + b"\xe0\x7f\x10\x00OW")
        connection.read_response()
        connection.release()
    except Closed:
        pass  # refusing the association outright is an answer too
    finally:
        connection.close()


def send_junk(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: pacs\r\n\r\n" + bytes(range(256)))
        sock.settimeout(30)
        while True:
            try:
                if not sock.recv(65536):
                    break
            except ConnectionResetError:
                break


def test_every_output_line_is_json_with_a_severity(
    process: IngestProcess, fake_dicomweb: FakeDicomWeb
) -> None:
    process.wait_ready()
    sent = send_good(process.port, 3)
    send_malformed(process.port)
    send_junk(process.port)
    sent += send_good(process.port, 1)
    wait_until(
        lambda: set(sent) <= {uid for post in fake_dicomweb.posts() for uid in post.sop_uids},
        60,
        "uploads",
    )
    assert process.terminate() == 0
    process.stop()  # the reader has every line once the process has ended

    entries = json_records(process.output())
    assert any("ready: accepting associations" in e["message"] for e in entries)
    assert any(e["message"] == "stopped" for e in entries)


def test_a_start_that_fails_says_so_in_json(tmp_path: Path, fake_dicomweb: FakeDicomWeb) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / QUEUE_FILE).write_bytes(b"not a database, scribbled over " * 512)
    process = IngestProcess(spool, fake_dicomweb.url, "--log_format", "json", with_stdout=True)
    try:
        wait_until(
            lambda: process.process.poll() is not None or "ready:" in process.output(),
            30,
            "an exit or a ready line",
        )
        if process.process.poll() is None:  # a queue that heals itself starts instead
            assert process.terminate() == 0
    finally:
        process.stop()
    entries = json_records(process.output())
    assert any(e["severity"] in ("ERROR", "CRITICAL") for e in entries)


def json_records(output: str) -> list[dict[str, Any]]:
    """Each line of output as a JSON record with a severity; no patient data in any."""
    lines = output.splitlines()
    assert lines, "no output at all"
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"not JSON: {line!r}\n{output}") from None
        assert isinstance(entry, dict) and entry.get("severity"), line
        entries.append(entry)
    for identifier in ("Synthetic", "SYNTH-0001"):  # support.datasets' patient
        assert identifier not in output
    return entries
