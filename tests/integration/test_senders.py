"""Real senders, each its own process, into the local pipeline and on into Orthanc.

DCMTK ``storescu`` with several proposal options, small PDUs and DCMTK's default socket
options; ``dcmsend`` as Google's guide runs it; pynetdicom's ``storescu`` and ``echoscu``
apps; GDCM's ``gdcmscu``; DCMTK ``echoscu``; and a second Orthanc pushing a C-STORE job.
Every instance must reach the DICOM store element by element as it was sent: compressed
pixel data in its own transfer syntax, untouched; uncompressed data in the syntax the
sender put on the wire (DCMTK re-encodes big endian and implicit files itself, depending on
what it proposed). And the sender itself must report success.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pydicom
import pytest
import requests
from support.corpus import corpus_files
from support.fake_dicomweb import FakeDicomWeb
from support.net import wait_until
from support.orthanc import Orthanc, start_orthanc
from support.pipeline import settled
from support.stored import assert_same, retrieve

from dicom_ingest.local import LocalPipeline

pytestmark = pytest.mark.slow  # real processes and timers: tens of seconds in all

EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"

# pydicom test files (by stem) that make up the studies sent below.
CT = "CT_small"  # Explicit VR Little Endian
MR_IMPLICIT = "MR_small_implicit"
MR_BIG_ENDIAN = "MR_small_bigendian"
JPEG_LOSSLESS_SV1 = "SC_rgb_jpeg_gdcm"  # 1.2.840.10008.1.2.4.70
JPEG_BASELINE = "SC_rgb_jpeg_dcmtk"  # 1.2.840.10008.1.2.4.50, 8 bit
RLE = "MR_small_RLE"
JPEG_LS_LOSSLESS = "MR_small_jpeg_ls_lossless"
J2K_LOSSLESS = "MR_small_jp2klossless"
DEFLATED_SC = "image_dfl"
UNCOMPRESSED = (CT, MR_IMPLICIT, MR_BIG_ENDIAN)
COMPRESSED = (JPEG_LOSSLESS_SV1, JPEG_BASELINE, RLE, JPEG_LS_LOSSLESS, J2K_LOSSLESS)

SENDER_TIMEOUT = 120.0
AS_IS = ""  # expected syntax on the wire: the file's own


def run(command: Sequence[str], nodelay: bool = True) -> subprocess.CompletedProcess[str]:
    """A sender run to completion; stdout and stderr together, as its user reads them."""
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    if nodelay:
        env["TCP_NODELAY"] = "1"
    return subprocess.run(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=SENDER_TIMEOUT,
        check=False,
        env=env,
    )


def assert_landed(
    pipeline: LocalPipeline, orthanc: Orthanc, sent: Mapping[Path, str], where: str = ""
) -> None:
    """Each file is in the store, in the expected syntax (AS_IS: its own), unchanged."""
    wait_until(lambda: settled(pipeline), 60, "uploads settled")
    assert pipeline.queue.stats().dead == 0, pipeline.queue.dead_letters()
    for path, expected in sent.items():
        name = f"{where}{path.name}: "
        ds = pydicom.dcmread(path)
        own = str(ds.file_meta.TransferSyntaxUID)
        got = retrieve(orthanc, ds)
        assert str(got.file_meta.TransferSyntaxUID) == (expected or own), name
        # Re-encoded by the sender (never by the pipeline): values equal, pixels as numbers.
        assert_same(ds, got, name, native_pixels=bool(expected) and expected != own)


@pytest.fixture
def receiver_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="receiver.association")
    return caplog


def association_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The outcome of every association the receiver logged."""
    return [
        str(getattr(r, "outcome", ""))
        for r in caplog.records
        if r.name == "receiver.association" and r.getMessage().startswith("association ")
    ]


# (storescu options, expected syntax per file). DCMTK's default proposal puts one Explicit
# VR Little Endian context and one [Big Endian, Implicit] context per SOP class; the
# receiver takes the first little-endian syntax of each, so a big endian file is re-encoded
# by storescu as Explicit VR Little Endian. A compression option (-xs, -xr, ...) adds a
# context for its syntax and puts the uncompressed ones together in another, Explicit VR
# Little Endian first, so an implicit file then goes as explicit. With -xb the Big Endian
# context (the only syntax in it) is accepted too, and storescu prefers it for an implicit
# file. A compressed file needs the option that proposes its syntax: storescu does not
# decompress. (+C with a compression option lists that syntax first for every class, and
# storescu cannot compress: a class holding compressed and uncompressed files cannot all
# be sent whatever syntax an SCP picks; DCMTK storescp fails the other half.)
STORESCU_CASES: dict[str, tuple[list[str], dict[str, str]]] = {
    "default": ([], {CT: AS_IS, MR_IMPLICIT: AS_IS, MR_BIG_ENDIAN: EXPLICIT}),
    "little-endian-first": (["-xe"], {CT: AS_IS, MR_IMPLICIT: AS_IS, MR_BIG_ENDIAN: EXPLICIT}),
    "big-endian-first": (["-xb"], {CT: AS_IS, MR_IMPLICIT: BIG_ENDIAN, MR_BIG_ENDIAN: AS_IS}),
    "implicit-only": (["-xi"], {CT: IMPLICIT, MR_IMPLICIT: AS_IS, MR_BIG_ENDIAN: IMPLICIT}),
    "jpeg-lossless": (["-xs"], {JPEG_LOSSLESS_SV1: AS_IS, CT: AS_IS}),
    "jpeg-8-bit": (["-xy"], {JPEG_BASELINE: AS_IS, CT: AS_IS}),
    "rle": (["-xr"], {RLE: AS_IS, MR_IMPLICIT: EXPLICIT}),
    "jpeg-ls-lossless": (["-xt"], {JPEG_LS_LOSSLESS: AS_IS}),
    "j2k-lossless": (["-xv"], {J2K_LOSSLESS: AS_IS}),
    "deflated": (["-xd"], {DEFLATED_SC: AS_IS, CT: DEFLATED}),
    # Only the contexts the files need, found by a recursive directory scan.
    "required-scan": (["-R", "+sd", "+r", "-xs"], {JPEG_LOSSLESS_SV1: AS_IS, CT: AS_IS}),
    # One context per SOP class with every syntax in it: the receiver takes the first.
    "combined": (["-R", "+C", "+sd"], {CT: AS_IS, MR_IMPLICIT: EXPLICIT}),
}


@pytest.mark.parametrize("case", sorted(STORESCU_CASES))
def test_dcmtk_storescu_proposals(
    case: str,
    orthanc: Orthanc,
    pipelines: Callable[..., LocalPipeline],
    tmp_path: Path,
    receiver_log: pytest.LogCaptureFixture,
) -> None:
    options, expected = STORESCU_CASES[case]
    files = corpus_files(tmp_path / "study" / "series", list(expected))
    pipeline = pipelines(orthanc.dicomweb)
    if "+sd" in options:  # the folder, or the one above it when the scan recurses
        paths = [str(tmp_path / "study" if "+r" in options else tmp_path / "study" / "series")]
    else:
        paths = [str(p) for p in files.values()]
    port = str(pipeline.receiver.port)
    result = run(["storescu", "-v", "-aec", "IMPORTADAPTER", *options, "127.0.0.1", port, *paths])
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.stdout.count("Received Store Response (Success)") == len(files), result.stdout
    assert "E:" not in result.stdout, result.stdout
    assert_landed(pipeline, orthanc, {files[n]: s for n, s in expected.items()}, f"{case} ")
    wait_until(lambda: association_lines(receiver_log) == ["released"], 10, "association line")


def test_dcmtk_storescu_small_pdus_default_socket_options(
    orthanc: Orthanc,
    pipelines: Callable[..., LocalPipeline],
    tmp_path: Path,
    receiver_log: pytest.LogCaptureFixture,
) -> None:
    """4 KiB PDUs both ways, and TCP_NODELAY unset, as DCMTK runs by default at a PACS."""
    files = corpus_files(tmp_path / "study", [*UNCOMPRESSED, RLE])
    pipeline = pipelines(orthanc.dicomweb)
    small = ["-pdu", "4096", "--max-send-pdu", "4096"]
    port, paths = str(pipeline.receiver.port), [str(p) for p in files.values()]
    result = run(
        ["storescu", "-v", "-aec", "IMPORTADAPTER", "-xr", *small, "127.0.0.1", port, *paths],
        nodelay=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.stdout.count("Received Store Response (Success)") == len(files), result.stdout
    expected = {CT: AS_IS, MR_IMPLICIT: EXPLICIT, MR_BIG_ENDIAN: EXPLICIT, RLE: AS_IS}
    assert_landed(pipeline, orthanc, {files[n]: s for n, s in expected.items()})
    wait_until(lambda: association_lines(receiver_log) == ["released"], 10, "association line")


@pytest.mark.parametrize("decompress", ["default", "never"])
def test_dcmsend_as_in_the_guide(
    decompress: str, orthanc: Orthanc, pipelines: Callable[..., LocalPipeline], tmp_path: Path
) -> None:
    """``dcmsend HOST PORT -aec IMPORTADAPTER +sd +r DIR``: a study in nested series folders."""
    root = tmp_path / "study"
    files = corpus_files(root / "series1", [*UNCOMPRESSED, JPEG_LOSSLESS_SV1])
    files |= corpus_files(root / "series2" / "more", [RLE, JPEG_LS_LOSSLESS, J2K_LOSSLESS])
    pipeline = pipelines(orthanc.dicomweb)
    options = ["-dn"] if decompress == "never" else []
    port = str(pipeline.receiver.port)
    result = run(
        [
            "dcmsend",
            "-v",
            "127.0.0.1",
            port,
            "-aec",
            "IMPORTADAPTER",
            *options,
            "+sd",
            "+r",
            str(root),
        ]
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"* with status SUCCESS  : {len(files)}" in result.stdout, result.stdout
    # dcmsend proposes a file's own syntax first (with Explicit VR Little Endian after it,
    # for lossless ones, unless -dn); big endian and implicit files it re-encodes itself.
    expected = {name: AS_IS for name in files}
    expected |= {MR_IMPLICIT: EXPLICIT, MR_BIG_ENDIAN: EXPLICIT}
    assert_landed(pipeline, orthanc, {files[n]: s for n, s in expected.items()})


def pynetdicom_app(app: str, port: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "pynetdicom", app, "-v", "127.0.0.1", str(port), *args]


# (app options, files, expected syntax per file). By default the app proposes Explicit VR
# Little Endian, Implicit, Deflated and Big Endian in one context per storage class: the
# receiver takes Explicit VR Little Endian, and the app re-encodes implicit datasets for
# it (not big endian ones: storescp or any SCP taking little endian refuses those alike).
PYNETDICOM_CASES: dict[str, tuple[list[str], dict[str, str]]] = {
    "default": ([], {CT: AS_IS, MR_IMPLICIT: EXPLICIT}),
    "big-endian": (["-xb"], {MR_BIG_ENDIAN: AS_IS}),
    "implicit": (["-xi"], {MR_IMPLICIT: AS_IS}),
    # Each file's own syntax, compressed ones included.
    "required": (["-cx"], dict.fromkeys((*UNCOMPRESSED, *COMPRESSED), AS_IS)),
}


@pytest.mark.parametrize("case", sorted(PYNETDICOM_CASES))
def test_pynetdicom_storescu_app(
    case: str, orthanc: Orthanc, pipelines: Callable[..., LocalPipeline], tmp_path: Path
) -> None:
    options, expected = PYNETDICOM_CASES[case]
    files = corpus_files(tmp_path / "study", list(expected))
    pipeline = pipelines(orthanc.dicomweb)
    paths = [str(p) for p in files.values()]
    port = pipeline.receiver.port
    result = run(pynetdicom_app("storescu", port, *paths, "-aec", "IMPORTADAPTER", *options))
    # The app exits 0 whatever the statuses are: its log says what each C-STORE got.
    assert result.returncode == 0, result.stdout[-3000:]
    success = "Received Store Response (Status: 0x0000 - Success)"
    assert result.stdout.count(success) == len(files), result.stdout
    assert "E:" not in result.stdout, result.stdout
    assert_landed(pipeline, orthanc, {files[n]: s for n, s in expected.items()}, f"{case} ")


# gdcmscu 3.0.21 (Debian's libgdcm-tools) aborts itself on the A-RELEASE-RP of every peer:
# the same against DCMTK storescp and Orthanc. Its exit status says nothing about the
# transfer then; its per-file lines (printed in debug mode) and the receiver's association
# line do.
GDCM_RELEASE_ABORT = "ProtocolStream as nullptr is invalid"


def test_gdcmscu_store(
    orthanc: Orthanc,
    pipelines: Callable[..., LocalPipeline],
    tmp_path: Path,
    receiver_log: pytest.LogCaptureFixture,
) -> None:
    files = corpus_files(tmp_path / "study", [CT, MR_IMPLICIT, RLE, JPEG_BASELINE, J2K_LOSSLESS])
    pipeline = pipelines(orthanc.dicomweb)
    port, paths = str(pipeline.receiver.port), [str(p) for p in files.values()]
    result = run(
        ["gdcmscu", "--debug", "--store", "--call", "IMPORTADAPTER", "127.0.0.1", port, *paths]
    )
    for path in files.values():
        assert f"C-Store of file {path} was successful." in result.stdout, result.stdout
    released_abort = result.returncode == -signal.SIGABRT and GDCM_RELEASE_ABORT in result.stdout
    assert result.returncode == 0 or released_abort, (result.returncode, result.stdout[-3000:])
    assert_landed(pipeline, orthanc, {path: AS_IS for path in files.values()})
    wait_until(lambda: association_lines(receiver_log) == ["released"], 10, "association line")


@pytest.mark.parametrize("nodelay", [True, False], ids=["nodelay", "dcmtk-default-socket"])
def test_dcmtk_echoscu(
    nodelay: bool,
    fake_dicomweb: FakeDicomWeb,
    pipelines: Callable[..., LocalPipeline],
    receiver_log: pytest.LogCaptureFixture,
) -> None:
    pipeline = pipelines(fake_dicomweb.url)
    port = str(pipeline.receiver.port)
    result = run(["echoscu", "-v", "-aec", "IMPORTADAPTER", "127.0.0.1", port], nodelay=nodelay)
    assert result.returncode == 0, result.stdout
    assert "Received Echo Response (Success)" in result.stdout, result.stdout
    wait_until(lambda: association_lines(receiver_log) == ["released"], 10, "association line")


def test_pynetdicom_echoscu_app(
    fake_dicomweb: FakeDicomWeb,
    pipelines: Callable[..., LocalPipeline],
    receiver_log: pytest.LogCaptureFixture,
) -> None:
    pipeline = pipelines(fake_dicomweb.url)
    result = run(pynetdicom_app("echoscu", pipeline.receiver.port, "-aec", "IMPORTADAPTER"))
    assert result.returncode == 0, result.stdout
    assert "Received Echo Response (Status: 0x0000 - Success)" in result.stdout, result.stdout
    wait_until(lambda: association_lines(receiver_log) == ["released"], 10, "association line")


@pytest.mark.slow
def test_orthanc_as_the_pacs_pushes_compressed_instances(
    orthanc: Orthanc, pipelines: Callable[..., LocalPipeline], tmp_path: Path
) -> None:
    """A second Orthanc holds the study (compressed as stored) and pushes it as a C-STORE job."""
    files = corpus_files(tmp_path / "study", [CT, *COMPRESSED])
    pacs = start_orthanc(tmp_path / "pacs", aet="PACS")
    try:
        ids = []
        for path in files.values():
            response = requests.post(f"{pacs.url}/instances", data=path.read_bytes(), timeout=30)
            response.raise_for_status()
            ids.append(response.json()["ID"])
        pipeline = pipelines(orthanc.dicomweb)
        modality = {"AET": "IMPORTADAPTER", "Host": "127.0.0.1", "Port": pipeline.receiver.port}
        requests.put(f"{pacs.url}/modalities/ingest", json=modality, timeout=10).raise_for_status()
        push = requests.post(
            f"{pacs.url}/modalities/ingest/store",
            json={"Resources": ids, "Synchronous": True},
            timeout=SENDER_TIMEOUT,
        )
        assert push.status_code == 200, push.text
        assert push.json().get("FailedInstancesCount", 0) == 0, push.text
    finally:
        pacs.stop()
    assert_landed(pipeline, orthanc, {path: AS_IS for path in files.values()})
