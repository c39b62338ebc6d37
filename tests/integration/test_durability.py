"""What the PACS was told is true: kill -9 at any point loses no acknowledged instance.

These tests run ``dicom-ingest local`` as a real process and stop it the hard way.
"""

from __future__ import annotations

import gc
import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from support.datasets import ct_dataset
from support.fake_dicomweb import FakeDicomWeb, Reply, referenced
from support.net import port_open, refusing_port, wait_until
from support.orthanc import Orthanc
from support.process import IngestProcess
from support.stored import store_noting_success, study_instances

# Real processes and servers, seconds each: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow


@pytest.fixture
def processes() -> Iterator[list[IngestProcess]]:
    started: list[IngestProcess] = []
    yield started
    for process in started:
        process.stop()


def start(processes: list[IngestProcess], spool: Path, dicomweb: str, *extra: str) -> IngestProcess:
    process = IngestProcess(spool, dicomweb, *extra)
    processes.append(process)
    return process.wait_ready()


def scu() -> AE:
    ae = AE(ae_title="PACS")
    ae.add_requested_context(CTImageStorage)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae


def unreachable() -> str:
    return f"http://127.0.0.1:{refusing_port()}/dicom-web"


# pynetdicom's SCU leaves its socket to the garbage collector when the peer vanishes.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_kill_9_mid_association_loses_no_acknowledged_instance(
    orthanc: Orthanc, tmp_path: Path, processes: list[IngestProcess]
) -> None:
    spool = tmp_path / "spool"
    # The first process cannot reach the DICOM store, so everything it accepts is queued.
    first = start(processes, spool, unreachable(), "--min_backoff", "30", "--max_backoff", "30")
    study = generate_uid()
    acknowledged: list[str] = []
    assoc = scu().associate("127.0.0.1", first.port, ae_title="IMPORTADAPTER")
    assert assoc.is_established
    killer = threading.Timer(0.0, first.kill)
    for n in range(400):
        ds = ct_dataset(study=study, seed=n, rows=128, columns=128)
        if n == 25:
            killer.start()  # kill -9 while the PACS is still sending
        if not store_noting_success(assoc, ds, acknowledged):
            break
    killer.join()
    assoc.abort()
    sock = assoc.dul.socket.socket if assoc.dul.socket else None
    if sock is not None:
        sock.close()
    gc.collect()  # any socket pynetdicom dropped is reported here, under this test's filter
    assert first.process.returncode == -9
    assert 25 <= len(acknowledged) < 400, len(acknowledged)

    second = start(processes, spool, orthanc.dicomweb)
    try:
        wait_until(
            lambda: set(acknowledged) <= study_instances(orthanc, study), 60, "acknowledged uploads"
        )
    except TimeoutError:
        missing = set(acknowledged) - study_instances(orthanc, study)
        raise AssertionError(
            f"{len(missing)} of {len(acknowledged)} missing:\n{second.output()[-3000:]}"
        ) from None
    assert second.terminate() == 0


def test_sigterm_finishes_the_association_in_flight_then_exits_0(
    tmp_path: Path, processes: list[IngestProcess], fake_dicomweb: FakeDicomWeb
) -> None:
    process = start(processes, tmp_path / "spool", fake_dicomweb.url)
    assoc = scu().associate("127.0.0.1", process.port, ae_title="IMPORTADAPTER")
    assert assoc.is_established
    assert assoc.send_c_store(ct_dataset(seed=1)).Status == 0x0000

    process.process.send_signal(15)
    wait_until(lambda: not port_open(process.port), 10, "listener closed")
    # The association already open is allowed to finish its work.
    for seed in range(2, 6):
        assert assoc.send_c_store(ct_dataset(seed=seed)).Status == 0x0000
    assoc.release()
    assert process.process.wait(30) == 0
    [line] = [
        json.loads(line)
        for line in process.output().splitlines()
        if '"message": "association released"' in line
    ]
    assert (line["instances"], line["failed"]) == (5, 0)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicom_ingest.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_dead_letters_are_shown_and_can_be_requeued(
    tmp_path: Path, processes: list[IngestProcess], fake_dicomweb: FakeDicomWeb
) -> None:
    fake_dicomweb.responder = lambda request: Reply(400, "Invalid multipart body")
    spool = tmp_path / "spool"
    process = start(processes, spool, fake_dicomweb.url)
    assoc = scu().associate("127.0.0.1", process.port, ae_title="IMPORTADAPTER")
    datasets = [ct_dataset(seed=n) for n in range(3)]
    for ds in datasets:
        assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()

    def dead_count() -> int:
        result = run_cli("status", "--spool_dir", str(spool), "--json")
        assert result.returncode == 0, result.stderr
        return int(json.loads(result.stdout)["dead"])

    wait_until(lambda: dead_count() == 3, 30, "three dead letters")
    report = json.loads(run_cli("status", "--spool_dir", str(spool), "--json").stdout)
    assert {d["sop_instance_uid"] for d in report["dead_letters"]} == {
        str(ds.SOPInstanceUID) for ds in datasets
    }
    assert all("HTTP 400: Invalid multipart body" in d["reason"] for d in report["dead_letters"])
    text = run_cli("status", "--spool_dir", str(spool)).stdout
    assert "dead        3" in text and "Invalid multipart body" in text
    assert "Synthetic" not in text and "SYNTH-0001" not in text  # no patient name or id
    # Neither in the logs.
    assert "Synthetic" not in process.output() and "SYNTH-0001" not in process.output()

    fake_dicomweb.responder = lambda request: Reply(200, referenced(request.sop_uids))
    result = run_cli("requeue", "--spool_dir", str(spool), "--all")
    assert result.returncode == 0 and "requeued 3" in result.stdout
    assert dead_count() == 0

    def settled() -> bool:
        report = json.loads(run_cli("status", "--spool_dir", str(spool), "--json").stdout)
        return report["pending"] + report["in_flight"] + report["retrying"] + report["dead"] == 0

    wait_until(settled, 30, "requeued messages uploaded")
    uploaded = {uid for post in fake_dicomweb.posts() for uid in post.sop_uids}
    assert uploaded == {str(ds.SOPInstanceUID) for ds in datasets}
    assert process.terminate() == 0


def test_cli_reports_bad_configuration_readably(tmp_path: Path) -> None:
    result = run_cli("local", "--spool_dir", str(tmp_path), "--dicomweb_address", "ftp://x")
    assert result.returncode == 2
    assert "--dicomweb_address must be an http(s) URL" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli("status", "--spool_dir", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "no queue at" in result.stderr


def queued_while_the_store_is_down(
    processes: list[IngestProcess], spool: Path, count: int
) -> tuple[str, list[str]]:
    """``count`` instances of a new study acknowledged and queued, the store unreachable, and
    the pipeline stopped: the study's UID and the SOP Instance UIDs."""
    first = start(processes, spool, unreachable(), "--min_backoff", "30", "--max_backoff", "30")
    study = generate_uid()
    assoc = scu().associate("127.0.0.1", first.port, ae_title="IMPORTADAPTER")
    sent = []
    for n in range(count):
        ds = ct_dataset(study=study, seed=n)
        assert assoc.send_c_store(ds).Status == 0x0000
        sent.append(str(ds.SOPInstanceUID))
    assoc.release()
    assert first.terminate() == 0
    return study, sent


def test_lost_queue_database_is_rebuilt_from_the_spool(
    orthanc: Orthanc, tmp_path: Path, processes: list[IngestProcess]
) -> None:
    """Objects are the source of truth: with the queue gone, a restart re-enqueues them all."""
    spool = tmp_path / "spool"
    study, sent = queued_while_the_store_is_down(processes, spool, 10)
    for path in spool.glob("queue.sqlite3*"):
        path.unlink()

    second = start(processes, spool, orthanc.dicomweb)
    wait_until(lambda: set(sent) <= study_instances(orthanc, study), 60, "uploads")
    assert "spool reconciled: 10 objects had no message" in second.output()
    assert second.terminate() == 0
    result = run_cli("reconcile", "--spool_dir", str(spool))
    assert result.returncode == 0 and "0 had no message" in result.stdout


def test_a_spool_moved_elsewhere_uploads_what_its_queue_held(
    orthanc: Orthanc, tmp_path: Path, processes: list[IngestProcess]
) -> None:
    """Messages name objects by absolute URI: a spool moved to another disk (and its queue
    with it) is re-pointed at start-up, so its messages upload and none is retried in vain,
    dead-lettered, or doubled by reconciliation."""
    spool = tmp_path / "old" / "spool"
    study, sent = queued_while_the_store_is_down(processes, spool, 5)
    moved = tmp_path / "new" / "spool"
    moved.parent.mkdir()
    spool.rename(moved)

    second = start(processes, moved, orthanc.dicomweb)
    wait_until(lambda: set(sent) <= study_instances(orthanc, study), 60, "uploads")
    wait_until(lambda: not list((moved / "objects").rglob("*.dcm")), 30, "objects removed")
    output = second.output()
    assert (
        "spool moved: 5 messages (queued or dead-lettered) and 0 records of settled uploads"
        f" re-pointed at its objects in {moved.resolve() / 'objects'}"
    ) in output
    assert "spool reconciled" not in output
    assert "outside the spool" not in output
    assert second.terminate() == 0
    status = json.loads(run_cli("status", "--spool_dir", str(moved), "--json").stdout)
    assert (status["pending"], status["retrying"], status["dead"]) == (0, 0, 0), status

    third = start(processes, moved, orthanc.dicomweb)  # nothing left to re-point
    assert "spool moved" not in third.output()
    assert third.terminate() == 0


def test_reconcile_on_a_moved_spool_re_points_first(
    tmp_path: Path, processes: list[IngestProcess]
) -> None:
    """`dicom-ingest reconcile` before the pipeline's first start in the new place: the
    messages are re-pointed, so no object gets a second message."""
    spool = tmp_path / "old" / "spool"
    queued_while_the_store_is_down(processes, spool, 3)
    moved = tmp_path / "new" / "spool"
    moved.parent.mkdir()
    spool.rename(moved)
    hour_ago = time.time() - 3600  # old enough for reconcile to look at (it skips new ones)
    for path in (moved / "objects").rglob("*.dcm"):
        os.utime(path, (hour_ago, hour_ago), follow_symlinks=False)
    result = run_cli("reconcile", "--spool_dir", str(moved))
    assert result.returncode == 0, result.stderr
    assert "spool moved: 3 messages (queued or dead-lettered)" in result.stdout
    assert "3 object(s) in the spool; 0 had no message" in result.stdout
    status = json.loads(run_cli("status", "--spool_dir", str(moved), "--json").stdout)
    assert status["pending"] + status["retrying"] == 3, status


def scribble(path: Path) -> None:
    """Garbage over the middle half of the file, as a bad disk or a stray write leaves it."""
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.seek(size // 4)
        handle.write(bytes((n * 37 + 11) % 256 for n in range(size // 2)))


def truncate(path: Path) -> None:
    """The file cut to half its size, as a full disk or an interrupted copy leaves it."""
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


@pytest.mark.parametrize("damage", [scribble, truncate], ids=["scribbled", "truncated"])
def test_damaged_queue_database_is_kept_aside_and_rebuilt_from_the_spool(
    damage: Callable[[Path], None],
    tmp_path: Path,
    processes: list[IngestProcess],
    held_store: FakeDicomWeb,
) -> None:
    """A damaged queue costs a re-upload, never an instance, and never stops the service."""
    spool = tmp_path / "spool"
    first = start(processes, spool, held_store.url, "--min_backoff", "30", "--max_backoff", "30")
    assoc = scu().associate("127.0.0.1", first.port, ae_title="IMPORTADAPTER")
    sent = []
    for n in range(12):
        ds = ct_dataset(seed=n)
        assert assoc.send_c_store(ds).Status == 0x0000
        sent.append(str(ds.SOPInstanceUID))
    assoc.release()
    assert first.terminate() == 0
    queue_file = spool / "queue.sqlite3"
    assert not (spool / "queue.sqlite3-wal").exists()  # every message is in the file itself
    damage(queue_file)

    # The store is still down: the restart must start anyway, with every instance queued.
    second = start(processes, spool, held_store.url, "--min_backoff", "1", "--max_backoff", "1")
    [kept] = [p for p in spool.iterdir() if p.name.startswith("queue.sqlite3.damaged-")]
    assert re.fullmatch(r"queue\.sqlite3\.damaged-\d{8}T\d{6}Z", kept.name)
    assert stat.S_IMODE(kept.stat().st_mode) == stat.S_IMODE(queue_file.stat().st_mode) == 0o600
    entries = [json.loads(line) for line in second.output().splitlines() if line.startswith("{")]
    [error] = [e for e in entries if e["severity"] == "ERROR"]
    assert "queue database damaged" in error["message"] and kept.name in error["message"]
    assert "spool reconciled: 12 objects had no message" in second.output()
    report = json.loads(run_cli("status", "--spool_dir", str(spool), "--json").stdout)
    assert report["pending"] + report["in_flight"] + report["retrying"] == 12
    assert [r["damaged_file"] for r in report["rebuilds"]] == [kept.name]
    text = run_cli("status", "--spool_dir", str(spool)).stdout
    assert "queue rebuilt from the spool at " in text
    assert f"(damaged file kept as {kept.name})" in text

    held_store.responder = lambda request: Reply(200, referenced(request.sop_uids))

    def uploaded() -> set[str]:
        return {
            uid for post in held_store.posts() if post.reply_status == 200 for uid in post.sop_uids
        }

    wait_until(lambda: uploaded() == set(sent), 60, "every instance uploaded")
    assert second.terminate() == 0
    for output in (first.output(), second.output(), text):
        assert "Synthetic" not in output and "SYNTH-0001" not in output  # no patient data
