"""C-STORE receive throughput: DCMTK storescp, Orthanc and ``dicom-ingest local``.

Each workload is sent by DCMTK ``storescu`` over one association (Explicit VR Little Endian)
to a freshly started receiver; the wall time of ``storescu`` is the figure. dicom-ingest's
uploader points at a DICOM store that never answers, so one upload waits all run long and the
receiver alone is measured: durable write (fsync) plus queue commit. See benchmarks/README.md.

    /work/venv/bin/python benchmarks/bench_receive.py [--workdir DIR] [--skip-large]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MF_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word Secondary Capture
DICOM_INGEST = str(Path(sys.executable).parent / "dicom-ingest")
ORTHANC = "/usr/sbin/Orthanc"
ENV = {**os.environ, "TCP_NODELAY": "1"}
TARGETS = ("storescp", "orthanc", "dicom-ingest")
AETS = {"storescp": "STORESCP", "orthanc": "ORTHANC", "dicom-ingest": "IMPORTADAPTER"}


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


WORKLOADS = (
    Workload("ct", 500, 512, 512, 1, CT_IMAGE),
    Workload("small", 2000, 140, 140, 1, CT_IMAGE),  # 39,200 pixel bytes: ~40 KB a file
    Workload("large", 1, 512, 512, 2100, MF_WORD_SC),  # 1.10 GB of pixel data
)


@dataclass
class Run:
    target: str
    workload: str
    instances: int
    bytes: int
    seconds: float
    accepted: int
    storescu_rc: int
    idle_rss_mib: float
    peak_rss_mib: float
    log: str


# --- workloads -------------------------------------------------------------------------------


# Listening sockets kept open for the whole run (see run_target).
SILENT_STORES: list[socket.socket] = []


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
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def echo_ok(aet: str, port: int) -> bool:
    argv = ["echoscu", "-to", "1", "-aec", aet, "127.0.0.1", str(port)]
    return subprocess.run(argv, check=False, capture_output=True, env=ENV).returncode == 0


def proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def http_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return dict(json.load(response))


# --- receivers: start, wait for readiness, and count what they accepted --------------------


@contextmanager
def receiver(
    target: str, port: int, run_dir: Path, log: Path, max_pdu: int | None
) -> Iterator[tuple[subprocess.Popen[bytes], Callable[[], int]]]:
    if target == "storescp":
        out = run_dir / "out"
        out.mkdir()
        argv = ["storescp", "--output-directory", str(out), str(port)]
        argv[1:1] = [] if max_pdu is None else ["--max-pdu", str(max_pdu)]

        def count() -> int:
            return sum(1 for p in out.rglob("*") if p.is_file())

    elif target == "orthanc":
        http = free_port()
        config = {
            "Name": "bench",
            "StorageDirectory": str(run_dir / "storage"),
            "IndexDirectory": str(run_dir / "storage"),
            "HttpPort": http,
            "DicomPort": port,
            "DicomAet": AETS[target],
            "DicomCheckCalledAet": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "StorageCompression": False,
            "Plugins": [],
        }
        if max_pdu is not None:
            config["MaximumPduLength"] = max_pdu
        (run_dir / "orthanc.json").write_text(json.dumps(config))
        argv = [ORTHANC, str(run_dir / "orthanc.json")]

        def count() -> int:
            return int(str(http_json(f"http://127.0.0.1:{http}/statistics")["CountInstances"]))

    else:
        spool = run_dir / "spool"
        # A DICOM store that accepts the connection and never answers: the one upload worker
        # waits on its first request for the whole run, so only the receiver is measured.
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        SILENT_STORES.append(silent)
        argv = [
            DICOM_INGEST, "local", "--spool_dir", str(spool), "--dimse_port", str(port),
            "--dimse_bind", "127.0.0.1", "--log_format", "json", "--upload_workers", "1",
            "--batch_max_instances", "1", "--http_timeout", "3600",
            "--dicomweb_address", f"http://127.0.0.1:{silent.getsockname()[1]}/dicom-web",
        ]  # fmt: skip
        argv += [] if max_pdu is None else ["--max_pdu", str(max_pdu)]

        def count() -> int:
            argv = [DICOM_INGEST, "status", "--spool_dir", str(spool), "--json"]
            status = json.loads(subprocess.run(argv, capture_output=True, check=True).stdout)
            queued = sum(int(status[k]) for k in ("pending", "in_flight", "retrying", "dead"))
            objects = sum(1 for _ in (spool / "objects").rglob("*@*.dcm"))  # versions, not links
            if queued != objects or status["dead"]:
                print(
                    f"  ! dicom-ingest: {queued} queued, {objects} objects, {status['dead']} dead"
                )
            return min(queued, objects)

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
        yield proc, count


def run_one(
    target: str, w: Workload, files: Path, scratch: Path, logs: Path, rep: int, pdu: int | None
) -> Run:
    run_dir = scratch / f"{target}-{w.name}-{rep}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    log = logs / f"{target}-{w.name}-{rep}.log"
    sizes = [p.stat().st_size for p in files.glob("*.dcm")]
    port = free_port()
    try:
        with receiver(target, port, run_dir, log, pdu) as (proc, count):
            idle = proc_kib(proc.pid, "VmRSS")
            argv = ["storescu", "-aec", AETS[target], "-xe", "-R", "-nh", "+sd"]
            argv += ["127.0.0.1", str(port), str(files)]
            with open(logs / f"storescu-{target}-{w.name}-{rep}.log", "wb") as out:
                start = time.perf_counter()
                done = subprocess.run(
                    argv, check=False, stdout=out, stderr=subprocess.STDOUT, env=ENV
                )
                rc = done.returncode
                seconds = time.perf_counter() - start
            peak = proc_kib(proc.pid, "VmHWM")
            accepted = count()
            deadline = time.monotonic() + 10  # a receiver may index after answering
            while accepted < len(sizes) and time.monotonic() < deadline:
                time.sleep(0.2)
                accepted = count()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return Run(target, w.name, len(sizes), sum(sizes), seconds, accepted, rc,
               idle / 1024, peak / 1024, str(log))  # fmt: skip


# --- report ----------------------------------------------------------------------------------


def summarize(runs: list[Run]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for key in dict.fromkeys((r.workload, r.target) for r in runs):
        group = [r for r in runs if (r.workload, r.target) == key]
        seconds = statistics.median(r.seconds for r in group)
        rows.append({
            "workload": key[0], "target": key[1], "instances": group[0].instances,
            "megabytes": group[0].bytes / 1e6, "seconds": seconds, "repeats": len(group),
            "instances_per_s": group[0].instances / seconds,
            "mb_per_s": group[0].bytes / 1e6 / seconds,
            "all_accepted": all(r.accepted == r.instances and r.storescu_rc == 0 for r in group),
            "accepted": min(r.accepted for r in group),
            "idle_rss_mib": max(r.idle_rss_mib for r in group),
            "peak_rss_mib": max(r.peak_rss_mib for r in group),
        })  # fmt: skip
    by_key = {(str(r["workload"]), str(r["target"])): float(str(r["seconds"])) for r in rows}
    for row in rows:
        mine = by_key.get((str(row["workload"]), "dicom-ingest"))
        for ref, name in (("storescp", "c/a"), ("orthanc", "c/b")):
            other = by_key.get((str(row["workload"]), ref))
            row[name] = None if mine is None or other is None else other / mine
    return rows


def print_table(rows: list[dict[str, object]]) -> None:
    head = f"{'workload':8} {'target':13} {'inst':>5} {'MB':>8} {'s':>8} {'inst/s':>8}"
    head += f" {'MB/s':>7} {'ok':>9} {'idleRSS':>8} {'peakRSS':>8} {'c/a':>5} {'c/b':>5}"
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        ratios = ["-" if r[k] is None else f"{r[k]:.2f}" for k in ("c/a", "c/b")]
        ok = f"{r['accepted']}/{r['instances']}" + ("" if r["all_accepted"] else "!")
        print(
            f"{r['workload']:8} {r['target']:13} {r['instances']:>5} {r['megabytes']:>8.1f}"
            f" {r['seconds']:>8.2f} {r['instances_per_s']:>8.1f} {r['mb_per_s']:>7.1f} {ok:>9}"
            f" {r['idle_rss_mib']:>8.0f} {r['peak_rss_mib']:>8.0f} {ratios[0]:>5} {ratios[1]:>5}"
        )
    print("RSS in MiB (VmRSS before sending, VmHWM after); c/a, c/b: dicom-ingest throughput")
    print("divided by storescp's, Orthanc's (above 1 means dicom-ingest is faster).")


def ingest_log_problems(runs: list[Run]) -> Counter[str]:
    """WARNING and worse in dicom-ingest's JSON log, by severity and message."""
    found: Counter[str] = Counter()
    for run in runs:
        if run.target != "dicom-ingest":
            continue
        for line in Path(run.log).read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                found[f"(not JSON) {line[:100]}"] += 1
                continue
            if entry.get("severity") in ("WARNING", "ERROR", "CRITICAL"):
                text = re.sub(r"\d+", "N", str(entry.get("message")))
                found[f"{entry['severity']} {text[:110]}"] += 1
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dicom-ingest-bench"))
    parser.add_argument("--skip-large", action="store_true", help="skip the >= 1 GB instance")
    parser.add_argument("--workloads", default="ct,small,large", help="comma-separated")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated")
    parser.add_argument("--repeat", type=int, default=1, help="runs per pair; median time")
    parser.add_argument("--json", type=Path, help="write results here")
    parser.add_argument(
        "--max-pdu", type=int, help="max receive PDU for all three receivers (default: their own)"
    )
    args = parser.parse_args()
    names = [n for n in args.workloads.split(",") if not (args.skip_large and n == "large")]
    workloads = [w for w in WORKLOADS if w.name in names]
    targets = [t for t in args.targets.split(",") if t in TARGETS]
    logs = args.workdir / "logs" / time.strftime("%Y%m%d-%H%M%S")
    logs.mkdir(parents=True)
    runs: list[Run] = []
    for w in workloads:
        files = ensure_workload(w, args.workdir / "workloads")
        for rep in range(args.repeat):
            for target in targets:
                run = run_one(target, w, files, args.workdir / "scratch", logs, rep, args.max_pdu)
                print(
                    f"{w.name:6} {target:13} {run.seconds:8.2f} s  accepted"
                    f" {run.accepted}/{run.instances}  storescu rc={run.storescu_rc}"
                    f"  peak RSS {run.peak_rss_mib:.0f} MiB",
                    flush=True,
                )
                runs.append(run)
    rows = summarize(runs)
    print_table(rows)
    problems = ingest_log_problems(runs)
    print(f"\ndicom-ingest log, WARNING and worse ({logs}):")
    for text, n in problems.most_common(20) or [("none", 0)]:
        print(f"  {n:6} x {text}")
    if args.json:
        result = {"rows": rows, "runs": [asdict(r) for r in runs], "log_problems": problems}
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if all(r["all_accepted"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
