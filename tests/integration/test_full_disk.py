"""A full spool, end to end: DCMTK storescu as the PACS, ``dicom-ingest local`` as a real
process with its spool on a small tmpfs, Orthanc behind a TCP gate as the DICOM store.

What the PACS must see on a full disk is 0xA700 per instance, with a reason, on an
association that is released normally; what it must see afterwards, without anyone
restarting anything, is success again, once the upload workers have freed space. Nothing it
was told is stored may be missing from the store.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from support import receiving
from support.datasets import ct_dataset, write
from support.gate import TcpGate
from support.net import wait_until
from support.orthanc import Orthanc
from support.process import IngestProcess
from support.small_disk import fill, free_bytes, small_filesystem
from support.stored import study_instances as stored

pytestmark = pytest.mark.slow

MiB = 1 << 20
WATERMARK = 12 * MiB  # above the queue's 8 MiB reserve, as the README advises
SUCCESS = "0x0000"
REFUSED = "0xA700"  # Refused: out of resources
STATUS = re.compile(r"DIMSE Status\s*: (0x[0-9A-F]{4})", re.IGNORECASE)
COMMENT = re.compile(r"\(0000,0902\) LO \[([^\]]*)\]")


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_filesystem(tmp_path / "disk", 64) as mount:
        yield mount


@pytest.fixture
def gate(orthanc: Orthanc) -> Iterator[TcpGate]:
    server = TcpGate(orthanc.http_port)
    yield server
    server.stop()


@pytest.fixture
def pipeline(disk: Path, gate: TcpGate) -> Iterator[IngestProcess]:
    process = IngestProcess(
        disk / "spool",
        gate.url("/dicom-web"),
        "--min_free_bytes",
        str(WATERMARK),
        "--min_free_percent",
        "0",
        "--max_attempts",
        "100000",  # the outage outlasts the default's few seconds at these backoffs
        "--min_backoff",
        "0.2",
        "--max_backoff",
        "1",
    )
    try:
        yield process.wait_ready()
        assert process.terminate() == 0
    finally:
        process.stop()


class Pacs:
    """storescu sending numbered instances of one study; remembers what it was told."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.study = generate_uid()
        self.acknowledged: list[str] = []
        self.refused: list[str] = []
        self.comments: list[str] = []
        self._sent = 0

    def send(self, count: int) -> list[str]:
        """Send ``count`` new 2 MiB instances on one association (going on after a failure,
        as a PACS with a queue does); the status of each."""
        files, uids = [], []
        for _ in range(count):
            self._sent += 1
            ds = ct_dataset(study=self.study, rows=1024, columns=1024, seed=self._sent)
            files.append(write(ds, self.workdir / f"{self._sent}.dcm"))
            uids.append(str(ds.SOPInstanceUID))
        options = ["-d", "-nh", "-aec", "IMPORTADAPTER", "-to", "60", "-td", "120"]
        result = subprocess.run(
            ["storescu", *options, "127.0.0.1", str(self.port), *map(str, files)],
            capture_output=True,
            text=True,
            timeout=300,
            env={"TCP_NODELAY": "1"},
            check=False,
        )
        output = result.stdout + result.stderr
        statuses = [status.upper().replace("0X", "0x") for status in STATUS.findall(output)]
        assert len(statuses) == count, output[-3000:]
        assert "Abort" not in output and "Releasing Association" in output, output[-3000:]
        for uid, status in zip(uids, statuses, strict=True):
            (self.acknowledged if status == SUCCESS else self.refused).append(uid)
        self.comments += [comment.strip() for comment in COMMENT.findall(output)]
        for path in files:
            path.unlink()
        return statuses


def recover(pacs: Pacs, timeout: float = 120.0) -> float:
    """Send one instance at a time until one is stored; seconds it took."""
    started = time.monotonic()
    wait_until(lambda: pacs.send(1) == [SUCCESS], timeout, "a send accepted again")
    return time.monotonic() - started


def assert_nothing_lost(scene: Scene) -> None:
    """Every acknowledged instance in the store, none refused, and the spool empty again."""
    pacs, orthanc = scene.pacs, scene.orthanc
    wait_until(
        lambda: set(pacs.acknowledged) <= stored(orthanc, pacs.study), 120, "uploads drained"
    )
    assert not set(pacs.refused) & stored(orthanc, pacs.study)
    objects = scene.disk / "spool" / "objects"
    wait_until(lambda: not any(objects.rglob("*@*.dcm")), 30, "uploaded objects removed")


def staging_files(scene: Scene) -> list[Path]:
    """Named or anonymous: the receiver's staging files."""
    return receiving.staging_files(scene.disk / "spool" / "incoming", scene.pipeline.process.pid)


@dataclass
class Scene:
    disk: Path
    gate: TcpGate
    orthanc: Orthanc
    pipeline: IngestProcess
    pacs: Pacs


@pytest.fixture
def scene(
    disk: Path, gate: TcpGate, orthanc: Orthanc, pipeline: IngestProcess, tmp_path: Path
) -> Scene:
    return Scene(disk, gate, orthanc, pipeline, Pacs(tmp_path, pipeline.port))


def test_a_disk_filled_by_another_writer_refuses_with_a700_then_recovers_as_uploads_free_it(
    scene: Scene,
) -> None:
    assert scene.pacs.send(12) == [SUCCESS] * 12  # 24 MiB spooled: the store is unreachable
    wait_until(lambda: scene.gate.turned_away > 0, 30, "uploads tried")
    fill(scene.disk / "filler")  # someone else fills the disk to the last byte
    assert free_bytes(scene.disk) < WATERMARK  # (a retry may have given up the reserve)

    assert scene.pacs.send(4) == [REFUSED] * 4
    assert len(scene.pacs.comments) == 4
    comments = scene.pacs.comments
    assert all(c.startswith("Out of resources: ") for c in comments), comments
    assert staging_files(scene) == []

    scene.gate.open()  # the store is back: uploads remove spooled objects, the receiver recovers
    seconds = recover(scene.pacs)
    print(f"recovered in {seconds:.2f} s after the store came back")
    assert_nothing_lost(scene)  # the backlog drained: 24 MiB free again
    assert scene.pacs.send(4) == [SUCCESS] * 4
    assert_nothing_lost(scene)
    assert "database or disk is full" not in scene.pipeline.output()
    assert staging_files(scene) == []


def test_a_spool_full_while_the_store_is_down_keeps_retrying_then_drains_when_it_returns(
    scene: Scene,
) -> None:
    statuses = scene.pacs.send(32)  # 64 MiB offered to a 64 MiB disk keeping 12 MiB
    accepted = statuses.count(SUCCESS)
    assert 10 <= accepted < 32, statuses
    assert statuses == [SUCCESS] * accepted + [REFUSED] * (32 - accepted), statuses
    assert all("below --min_free_bytes" in c for c in scene.pacs.comments), scene.pacs.comments
    fill(scene.disk / "filler")  # and the rest of it
    assert free_bytes(scene.disk) < WATERMARK  # (a retry may have given up the reserve)

    # Retries still commit with no byte free: each failed upload is settled and tried again.
    tried = scene.gate.turned_away
    # (a retry that could not be committed would keep its lease, and no upload would follow)
    wait_until(lambda: scene.gate.turned_away >= tried + 6, 60, "uploads retried")
    assert scene.pacs.send(2) == [REFUSED] * 2
    assert "upload worker failed" not in scene.pipeline.output()

    scene.gate.open()
    seconds = recover(scene.pacs)
    print(f"acknowledged before the disk filled: {accepted}; recovered in {seconds:.2f} s")
    assert_nothing_lost(scene)
    assert "database or disk is full" not in scene.pipeline.output()
    assert staging_files(scene) == []
