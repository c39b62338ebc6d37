"""What bench_receive.py's scenarios share: workloads, processes, receivers and one run's record.

Kept apart from the scenarios so that each file reads on its own; nothing here measures.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MF_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word Secondary Capture
DICOM_INGEST = str(Path(sys.executable).parent / "dicom-ingest")
ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
# DCMTK (storescu, storescp, Orthanc's DICOM port) sets TCP_NODELAY only when asked to.
ENV = {**os.environ, "TCP_NODELAY": "1"}
ENV_DCMTK_DEFAULT = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
TARGETS = ("storescp", "orthanc", "dicom-ingest")
AETS = {"storescp": "STORESCP", "orthanc": "ORTHANC", "dicom-ingest": "IMPORTADAPTER"}
MIB = 1 << 20


@dataclass(frozen=True)
class Workload:
    name: str
    count: int
    rows: int
    cols: int
    frames: int
    sop_class: str

    @property
    def key(self) -> str:
        return f"{self.name}-{self.count}x{self.rows}x{self.cols}x{self.frames}-v1"


WORKLOADS = {
    w.name: w
    for w in (
        Workload("ct", 500, 512, 512, 1, CT_IMAGE),
        Workload("small", 2000, 140, 140, 1, CT_IMAGE),  # 39,200 pixel bytes: ~40 KB a file
        Workload("study", 300, 512, 512, 1, CT_IMAGE),  # one CT study through the pipeline
        Workload("large", 1, 512, 512, 2100, MF_WORD_SC),  # 1.10 GB of pixel data
    )
}


@dataclass
class Run:
    """One measurement: a target receiving a workload one way, in one repeat."""

    scenario: str
    variant: str
    target: str
    workload: str
    rep: int
    instances: int
    bytes: int
    seconds: float
    accepted: int
    ok: bool
    idle_rss_mib: float = 0.0
    peak_rss_mib: float = 0.0
    log: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.scenario, self.variant, self.target, self.workload)


# --- workloads -------------------------------------------------------------------------------


# More flags for every dicom-ingest run (bench_receive.py --receive-processes).
INGEST_ARGS: list[str] = []


def _header(w: Workload, study: str, series: str, number: int) -> Dataset:
    sop = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(w.sop_class)
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = w.sop_class, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID, ds.StudyID = "BENCH^RECEIVE", "BENCH0001", "1"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20240101", "120000", "BENCH"
    ds.Modality = "CT" if w.sop_class == CT_IMAGE else "OT"
    ds.SeriesNumber, ds.InstanceNumber = 1, number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = w.rows, w.cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if w.frames > 1:
        ds.NumberOfFrames = w.frames
    else:
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    return ds


def _write_instance(path: Path, ds: Dataset, w: Workload, rng: np.random.Generator) -> None:
    """Header with pydicom, then Pixel Data streamed in chunks: bounded memory at any size."""
    frame_bytes = w.rows * w.cols * 2
    with open(path, "wb") as fh:
        dcmwrite(fh, ds, enforce_file_format=True)
        fh.write(b"\xe0\x7f\x10\x00OW\x00\x00" + (frame_bytes * w.frames).to_bytes(4, "little"))
        for start in range(0, w.frames, 64):
            n = min(64, w.frames - start)
            fh.write(rng.integers(0, 4096, (n, w.rows, w.cols), dtype="<u2").tobytes())


def ensure_workload(w: Workload, root: Path) -> Path:
    """Generate once; a marker beside the directory makes later runs reuse it."""
    folder, marker = root / w.key, root / f"{w.key}.complete"
    if marker.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"generating {w.count} x {w.name} into {folder} ...", flush=True)
    rng = np.random.default_rng(12345)
    study, series = generate_uid(), generate_uid()
    for i in range(w.count):
        _write_instance(folder / f"{i:05d}.dcm", _header(w, study, series, i + 1), w, rng)
    marker.touch()
    return folder


# --- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after 60 s")
        time.sleep(0.05)


@contextmanager
def started(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=ENV)
        try:
            yield proc
        finally:
            proc.terminate()
            try:  # dicom-ingest's upload worker may wait on the silent store: do not wait long
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def echo_ok(aet: str, port: int) -> bool:
    argv = ["echoscu", "-to", "1", "-aec", aet, "127.0.0.1", str(port)]
    return subprocess.run(argv, check=False, capture_output=True, env=ENV).returncode == 0


def proc_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def smaps_kib(pid: int, field_name: str) -> int:
    """A field of /proc/PID/smaps_rollup (``Pss``: the process's share of each page it maps)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


class PssPeak:
    """The highest sum of PSS over a process tree, sampled in a thread while in ``with``.

    PSS counts each page once over all the processes that share it: what the tree holds of
    the machine's memory (a pod's limit counts the same way). Summing RSS instead counts a page
    once per process mapping it, and forked receive processes share most of theirs. The kernel
    keeps no peak of PSS, so this samples; a peak shorter than ``every`` can be missed."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        self._pid = pid
        self._every = every
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        kib = int(tree_figure(self._pid, lambda pid: smaps_kib(pid, "Pss")))
        self.peak_kib = max(self.peak_kib, kib)
        return kib

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.sample()

    def __enter__(self) -> PssPeak:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process has used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its living descendants (dicom-ingest's receive processes)."""
    tree, i = [pid], 0
    while i < len(tree):
        for task in Path(f"/proc/{tree[i]}/task").glob("*/children"):
            with suppress(OSError):  # the thread or the process ended meanwhile
                tree += [int(child) for child in task.read_text().split()]
        i += 1
    return tree


def tree_figure(pid: int, read: Callable[[int], float]) -> float:
    """The sum of ``read`` over a process tree, skipping processes that end meanwhile."""
    total = 0.0
    for member in process_tree(pid):
        with suppress(OSError, ValueError):
            total += read(member)
    return total


def http_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return dict(json.load(response))


def storescu(
    aet: str, port: int, files: list[Path], log: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start one DCMTK storescu: the files over one association, Explicit VR LE."""
    argv = ["storescu", "-aec", aet, "-xe", "-R", "-nh", "+sd", "127.0.0.1", str(port)]
    argv += [str(f) for f in files]
    with open(log, "wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)


def dataset_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


# --- receivers: start, wait for readiness, and count what they accepted --------------------

# Listening sockets kept open for the whole run: a DICOM store that accepts and never answers.
SILENT_STORES: list[socket.socket] = []


@dataclass
class Receiver:
    proc: subprocess.Popen[bytes]
    port: int
    count: Callable[[], int]
    http: int = 0  # Orthanc's REST port

    # With receive processes, memory and CPU are the sums over the process tree: what a pod or
    # a machine has to hold. The sum of each process's peak is an upper bound of the peak sum.
    def idle_rss_kib(self) -> int:
        return int(tree_figure(self.proc.pid, lambda pid: proc_kib(pid, "VmRSS")))

    def peak_rss_kib(self) -> int:
        return int(tree_figure(self.proc.pid, lambda pid: proc_kib(pid, "VmHWM")))

    def largest_peak_rss_kib(self) -> int:
        """The highest single process's peak (the one that received the most)."""
        return max(proc_kib(pid, "VmHWM") for pid in process_tree(self.proc.pid))

    def cpu_seconds(self) -> float:
        return tree_figure(self.proc.pid, cpu_seconds)

    def pss_peak(self) -> PssPeak:
        """``with rx.pss_peak() as p``: ``p.peak_kib``, the tree's highest PSS sum meanwhile."""
        return PssPeak(self.proc.pid)


def orthanc_config(
    run_dir: Path, port: int, http: int, max_pdu: int | None, web: bool, storage: Path | None
) -> list[str]:
    storage = storage or run_dir / "storage"
    config: dict[str, object] = {
        "Name": "bench",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": http,
        "DicomPort": port,
        "DicomAet": AETS["orthanc"],
        "DicomCheckCalledAet": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "StorageCompression": False,
        "HttpTimeout": 120,
        "Plugins": [DICOMWEB_PLUGIN] if web else [],
    }
    if web:
        config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/"}
    if max_pdu is not None:
        config["MaximumPduLength"] = max_pdu
    (run_dir / "orthanc.json").write_text(json.dumps(config))
    return [ORTHANC, str(run_dir / "orthanc.json")]


def orthanc_count(http: int) -> int:
    return int(str(http_json(f"http://127.0.0.1:{http}/statistics")["CountInstances"]))


def ingest_count(spool: Path) -> int:
    argv = [DICOM_INGEST, "status", "--spool_dir", str(spool), "--json"]
    status = json.loads(subprocess.run(argv, capture_output=True, check=True).stdout)
    queued = sum(int(status[k]) for k in ("pending", "in_flight", "retrying", "dead"))
    objects = sum(1 for _ in (spool / "objects").rglob("*@*.dcm"))  # versions, not links
    if queued != objects or status["dead"]:
        print(f"  ! dicom-ingest: {queued} queued, {objects} objects, {status['dead']} dead")
    return min(queued, objects)


@contextmanager
def start_receiver(
    target: str,
    run_dir: Path,
    log: Path,
    max_pdu: int | None = None,
    *,
    orthanc_web: bool = False,
    dicomweb: str | None = None,
    storage: Path | None = None,
) -> Iterator[Receiver]:
    """A fresh receiver on a free port, ready to answer C-ECHO.

    dicom-ingest uploads to ``dicomweb`` with its default workers when given; otherwise to a
    socket that accepts and never answers, so one upload waits all run long and only the
    receiver is measured.
    """
    port, http = free_port(), 0
    if target == "storescp":
        out = run_dir / "out"
        out.mkdir()
        argv = ["storescp", "--output-directory", str(out), str(port)]
        argv[1:1] = [] if max_pdu is None else ["--max-pdu", str(max_pdu)]

        def count() -> int:
            return sum(1 for p in out.rglob("*") if p.is_file())

    elif target == "orthanc":
        http = free_port()
        argv = orthanc_config(run_dir, port, http, max_pdu, orthanc_web, storage)

        def count() -> int:
            return orthanc_count(http)

    else:
        spool = run_dir / "spool"
        argv = [
            DICOM_INGEST, "local", "--spool_dir", str(spool), "--dimse_port", str(port),
            "--dimse_bind", "127.0.0.1", "--log_format", "json",
        ]  # fmt: skip
        if dicomweb is None:
            silent = socket.socket()
            silent.bind(("127.0.0.1", 0))
            silent.listen(1)
            SILENT_STORES.append(silent)
            dicomweb = f"http://127.0.0.1:{silent.getsockname()[1]}/dicom-web"
            argv += ["--upload_workers", "1", "--batch_max_instances", "1"]
            argv += ["--http_timeout", "3600"]
        argv += ["--dicomweb_address", dicomweb]
        argv += [] if max_pdu is None else ["--max_pdu", str(max_pdu)]
        argv += INGEST_ARGS

        def count() -> int:
            return ingest_count(spool)

    with started(argv, log) as proc:

        def ready() -> bool:
            if target == "dicom-ingest" and b"ready: accepting" not in log.read_bytes():
                return False
            if target == "orthanc":
                try:
                    http_json(f"http://127.0.0.1:{http}/system")
                except OSError:
                    return False
            return echo_ok(AETS[target], port)

        wait_until(ready, proc, target)
        yield Receiver(proc, port, count, http)


@contextmanager
def run_dir_for(scratch: Path, name: str) -> Iterator[Path]:
    """A fresh directory for one run. It is removed with the whole scratch directory when the
    benchmark ends, not when the run ends: removing thousands of files just before the next
    run would slow that run's file creations (ext4 without a journal searches past recently
    freed inodes), and so weigh on whichever receiver runs next."""
    run_dir = scratch / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    yield run_dir


def settle(count: Callable[[], int], expected: int, seconds: float = 10.0) -> int:
    """The accepted count, waiting a little for receivers that index after answering."""
    accepted = count()
    deadline = time.monotonic() + seconds
    while accepted < expected and time.monotonic() < deadline:
        time.sleep(0.2)
        accepted = count()
    return accepted
