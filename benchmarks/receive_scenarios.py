"""The measurements bench_receive.py schedules: each function is one run of one scenario.

- ``store_run``: DCMTK storescu (one or several concurrent associations, with or without
  ``TCP_NODELAY`` in its environment) sending a workload to a fresh receiver;
- ``study_run``: a CT study from the first C-STORE until every instance is in Orthanc, through
  ``dicom-ingest local`` uploading over DICOMweb, or sent straight to Orthanc's C-STORE SCP;
- ``abuse_run``: dicom-ingest's peak RSS while misbehaving peers hit it.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import struct
import subprocess
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import build_context
from receive_common import (
    AETS,
    CT_IMAGE,
    ENV,
    MIB,
    Receiver,
    Run,
    Workload,
    dataset_files,
    echo_ok,
    run_dir_for,
    settle,
    start_receiver,
    storescu,
)

from receiver.part10 import file_meta_bytes

POLL = 0.05  # seconds between counts of what the DICOM store holds


@dataclass(frozen=True)
class Context:
    """Where a run keeps its files and logs, and options that apply to every receiver."""

    workdir: Path
    logs: Path
    max_pdu: int | None
    # The study's Orthanc keeps its files here (its own filesystem) rather than in the run
    # directory, on the spool's disk: ``--store-dir``.
    store_dir: Path | None = None

    @property
    def scratch(self) -> Path:
        return self.workdir / "scratch"


def _name(*parts: object) -> str:
    return "-".join(str(p).replace(" ", "_").replace("/", "_") for p in parts)


# --- storescu into a receiver ----------------------------------------------------------------


def store_run(
    ctx: Context,
    variant: str,
    target: str,
    w: Workload,
    files_dir: Path,
    rep: int,
    *,
    env: dict[str, str] = ENV,
    associations: int = 1,
    scenario: str = "receive",
) -> Run:
    """storescu process(es) from start until the last exits; each sends a share of the files."""
    files = dataset_files(files_dir)
    size = sum(p.stat().st_size for p in files)
    name = _name(target, w.name, variant, rep)
    log = ctx.logs / f"{name}.log"
    with (
        run_dir_for(ctx.scratch, name) as run_dir,
        start_receiver(target, run_dir, log, ctx.max_pdu) as rx,
    ):
        idle = rx.idle_rss_kib()
        shares = [files[i::associations] for i in range(associations)]
        # Sampled only where memory is the figure: the sampler's reads cost some CPU.
        pss = rx.pss_peak() if scenario == "rss" else None
        idle_pss = pss.sample() if pss is not None else 0
        with pss if pss is not None else contextlib.nullcontext():
            start = time.perf_counter()
            procs = [
                storescu(AETS[target], rx.port, share, ctx.logs / f"storescu-{name}-{i}.log", env)
                for i, share in enumerate(shares)
            ]
            codes = [p.wait() for p in procs]
            seconds = time.perf_counter() - start
        peak, largest = rx.peak_rss_kib(), rx.largest_peak_rss_kib()
        accepted = settle(rx.count, len(files))
    ok = accepted == len(files) and not any(codes)
    run = Run(scenario, variant, target, w.name, rep, len(files), size, seconds, accepted, ok,
              idle / 1024, peak / 1024, str(log))  # fmt: skip
    run.extra["largest_process_peak_mib"] = largest / 1024
    if pss is not None:
        run.extra["idle_pss_mib"] = idle_pss / 1024
        run.extra["peak_pss_mib"] = pss.peak_kib / 1024
    return run


# --- a study until it is in the DICOM store --------------------------------------------------


def _until_stored(
    sender: subprocess.Popen[bytes], count: Callable[[], int], expected: int, start: float
) -> tuple[float, float, int]:
    """Seconds until the sender exited and until the store counts ``expected``; the count."""
    acked = stored = 0.0
    held = 0
    deadline = start + 900
    while time.perf_counter() < deadline:
        if not acked and sender.poll() is not None:
            acked = time.perf_counter() - start
        held = count()
        if held >= expected:
            stored = time.perf_counter() - start
            break
        time.sleep(POLL)
    if not acked:
        sender.wait()
        acked = time.perf_counter() - start
    return acked, stored, held


def study_run(ctx: Context, variant: str, w: Workload, files_dir: Path, rep: int) -> Run:
    """``pipeline``: storescu → dicom-ingest local → STOW-RS → Orthanc; ``direct``: → Orthanc."""
    files = dataset_files(files_dir)
    size = sum(p.stat().st_size for p in files)
    pipeline = variant == "pipeline"
    target = "dicom-ingest" if pipeline else "orthanc"
    name = _name("study", variant, rep)
    with run_dir_for(ctx.scratch, name) as run_dir, contextlib.ExitStack() as stack:

        def start(what: str, dicomweb: str | None = None) -> tuple[Receiver, Path]:
            (run_dir / what).mkdir()
            log = ctx.logs / f"{name}-{what}.log"
            options: dict[str, Any] = {"dicomweb": dicomweb}
            if what == "orthanc":
                storage = None if ctx.store_dir is None else ctx.store_dir / name
                options = {"orthanc_web": True, "storage": storage}
            rx = start_receiver(what, run_dir / what, log, ctx.max_pdu, **options)
            return stack.enter_context(rx), log

        store, log = start("orthanc")
        front = store
        if pipeline:
            front, log = start("dicom-ingest", f"http://127.0.0.1:{store.http}/dicom-web")
        idle = front.idle_rss_kib() if pipeline else 0
        before = (front.cpu_seconds(), store.cpu_seconds())
        acked, stored, held = _send_study(ctx, name, target, front, store, files)
        front_cpu = front.cpu_seconds() - before[0]
        store_cpu = store.cpu_seconds() - before[1]
        peak = front.peak_rss_kib() if pipeline else 0
    if ctx.store_dir is not None:
        shutil.rmtree(ctx.store_dir / name, ignore_errors=True)
    ok = held == len(files) and stored > 0
    run = Run("study", variant, target, w.name, rep, len(files), size, stored or acked, held,
              ok, idle / 1024, peak / 1024, str(log))  # fmt: skip
    run.extra = {"storescu_s": acked, "in_store_s": stored, "orthanc_cpu_s": store_cpu}
    if pipeline:
        run.extra["ingest_cpu_s"] = front_cpu
    return run


def _send_study(
    ctx: Context, name: str, target: str, front: Receiver, store: Receiver, files: list[Path]
) -> tuple[float, float, int]:
    start = time.perf_counter()
    sender = storescu(AETS[target], front.port, files, ctx.logs / f"storescu-{name}.log", ENV)
    return _until_stored(sender, store.count, len(files), start)


# --- abuse: peak RSS while misbehaving peers connect -----------------------------------------

HEADER_ONLY = b"\x01\x00\xff\xff\xff\xff"  # an A-ASSOCIATE-RQ header, and nothing after it
HEADER_PLAUSIBLE = b"\x01\x00\x00\x00\x01\x00"  # the same, announcing 256 bytes
HUGE_PDATA = b"\x04\x00\xff\xff\xff\xff"  # a P-DATA-TF announcing 4 GiB
ABUSE_SOURCE = "127.0.0.2"  # abusers come from another loopback address than the checks


def _connect(port: int, source: str = ABUSE_SOURCE) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(30)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _flood(sock: socket.socket, first: bytes, total: int) -> int:
    """Send ``first`` then junk until ``total`` bytes or the receiver cuts us off; bytes sent."""
    junk = memoryview(b"\xa5" * MIB)
    sent = 0
    try:
        sock.sendall(first)
        while sent < total:
            sent += sock.send(junk[: min(MIB, total - sent)])
    except OSError:
        pass
    finally:
        sock.close()
    return sent


def associate_rq(called: str, calling: str = "BENCHABUSE") -> bytes:
    """An A-ASSOCIATE-RQ proposing CT Image Storage, encoded by pynetdicom."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title, primitive.called_ae_title = calling, called
    max_length, implementation = MaximumLengthNotification(), ImplementationClassUIDNotification()
    max_length.maximum_length_received = 16384
    implementation.implementation_class_uid = generate_uid()
    primitive.user_information = [max_length, implementation]
    context = build_context(CT_IMAGE, ExplicitVRLittleEndian)
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def _recv_pdu(sock: socket.socket) -> int:
    """Read one PDU; its type (0 if the connection closed first)."""
    header = b""
    while len(header) < 6:
        chunk = sock.recv(6 - len(header))
        if not chunk:
            return 0
        header += chunk
    remaining = struct.unpack(">L", header[2:])[0]
    while remaining:
        chunk = sock.recv(min(remaining, 65536))
        if not chunk:
            return 0
        remaining -= len(chunk)
    return header[0]


def _held_headers(port: int, count: int, aet: str, header: bytes) -> dict[str, float]:
    """``count`` connections that send six bytes and wait; can a real peer still get in?"""
    socks = [_connect(port) for _ in range(count)]
    start = time.monotonic()
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.sendall(header)
    echo = echo_ok(aet, port)
    closed = 0
    for sock in socks:  # the receiver's timer (or its caps) must drop every one
        sock.settimeout(max(0.1, start + 30 - time.monotonic()))
        try:
            while sock.recv(65536):
                pass
            closed += 1
        except TimeoutError:
            pass
        except OSError:
            closed += 1
        finally:
            sock.close()
    return {
        "echo_while_held": float(echo),
        "held_dropped": float(closed),
        "held_dropped_after_s": time.monotonic() - start,
    }


def deflate_bomb(root: Path, chunks: int = 255) -> Path:
    """A Deflated Explicit VR LE instance of a few MB inflating to chunks x 16 MiB (cached).

    One 16 MiB block of zeros is deflated once with a full flush (byte-aligned, independent of
    what came before) and repeated; an empty final block ends the stream.
    """
    path = root / f"deflate-bomb-{chunks}x16MiB-v1.dcm"
    if path.exists():
        return path
    sop, block = generate_uid(), 16 * MIB

    def element(tag: int, value: str) -> bytes:
        raw = value.encode() + b"\x00" * (len(value) % 2)
        return (
            struct.pack("<HH", tag >> 16, tag & 0xFFFF) + b"UI" + struct.pack("<H", len(raw)) + raw
        )

    head = b"".join(
        element(tag, uid)
        for tag, uid in ((0x00080016, CT_IMAGE), (0x00080018, sop),
                         (0x0020000D, generate_uid()), (0x0020000E, generate_uid()))
    )  # fmt: skip
    head += b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<L", chunks * block)
    first = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    opening = first.compress(head) + first.flush(zlib.Z_FULL_FLUSH)
    zeros = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    repeated = zeros.compress(bytes(block)) + zeros.flush(zlib.Z_FULL_FLUSH)
    ending = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS).flush()  # final, empty block
    meta = file_meta_bytes(CT_IMAGE, sop, DeflatedExplicitVRLittleEndian, "BENCH")
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as out:
        out.write(meta + opening)
        for _ in range(chunks):
            out.write(repeated)
        out.write(ending)
    partial.rename(path)
    return path


def _send_bomb(port: int, aet: str, path: Path) -> dict[str, float]:
    """C-STORE the bomb as its raw (deflated) bytes with pynetdicom; status and seconds."""
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes as they are
    ae = AE(ae_title="BENCHBOMB")
    ae.add_requested_context(CT_IMAGE, DeflatedExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 300
    start = time.monotonic()
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    status = -1.0
    if assoc.is_established:
        try:
            answer = assoc.send_c_store(path)
            status = float(answer.Status) if "Status" in answer else -1.0
        finally:
            assoc.release()
    return {"bomb_status": status, "bomb_s": time.monotonic() - start}


def abuse_run(ctx: Context, rep: int, pdata_bytes: int = 600 * MIB) -> Run:
    """One dicom-ingest process, then every abuse case in turn; VmHWM after each."""
    bomb = deflate_bomb(ctx.workdir / "workloads")
    name = _name("dicom-ingest", "abuse", rep)
    log = ctx.logs / f"{name}.log"
    aet = AETS["dicom-ingest"]
    with (
        run_dir_for(ctx.scratch, name) as run_dir,
        start_receiver("dicom-ingest", run_dir, log) as rx,
    ):
        extra: dict[str, float] = {"idle_mib": rx.idle_rss_kib() / 1024}
        pss = rx.pss_peak()
        extra["idle_pss_mib"] = pss.sample() / 1024
        start = time.perf_counter()
        with pss:
            for name, header in (("huge", HEADER_ONLY), ("plausible", HEADER_PLAUSIBLE)):
                held = _held_headers(rx.port, 40, aet, header)
                extra.update({f"{name}_{k}": v for k, v in held.items()})
                extra[f"peak_after_{name}_headers_mib"] = rx.peak_rss_kib() / 1024

            sent = _flood(_connect(rx.port), HEADER_ONLY, pdata_bytes)
            extra["assoc_flood_sent_mb"] = sent / 1e6
            extra["peak_after_assoc_flood_mib"] = rx.peak_rss_kib() / 1024

            sock = _connect(rx.port)
            sock.sendall(associate_rq(aet))
            extra["associated"] = float(_recv_pdu(sock) == 0x02)  # A-ASSOCIATE-AC
            sent = _flood(sock, HUGE_PDATA, pdata_bytes)
            extra["pdata_flood_sent_mb"] = sent / 1e6
            extra["peak_after_pdata_flood_mib"] = rx.peak_rss_kib() / 1024

            extra.update(_send_bomb(rx.port, aet, bomb))
            extra["peak_after_bomb_mib"] = rx.peak_rss_kib() / 1024
        extra["peak_pss_mib"] = pss.peak_kib / 1024
        extra["echo_after"] = float(echo_ok(aet, rx.port))
        seconds = time.perf_counter() - start
        peak, largest = rx.peak_rss_kib(), rx.largest_peak_rss_kib()
        extra["largest_process_peak_mib"] = largest / 1024
        stored = settle(rx.count, 0, 0)
    ok = bool(extra["echo_after"]) and stored == 0 and extra["bomb_status"] not in (-1.0, 0.0)
    run = Run("rss", "abuse", "dicom-ingest", "abuse", rep, 0, 0, seconds, stored, ok,
              extra["idle_mib"], peak / 1024, str(log))  # fmt: skip
    run.extra = extra
    return run
