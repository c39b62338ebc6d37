"""A varied corpus through the whole local pipeline into Orthanc, checked element by element.

DCMTK's dcmsend is the PACS; Orthanc with its DICOMweb plugin is the DICOM store; each
instance is fetched back with ``transfer-syntax=*`` so the stored bytes come back as sent.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid
from pynetdicom import AE
from support.corpus import build_corpus
from support.datasets import write
from support.net import wait_until
from support.orthanc import Orthanc
from support.stored import assert_same, dcmsend, retrieve

from dicom_ingest.local import LocalPipeline

# Real processes and servers, seconds each: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on odd values in its test files
def test_corpus_arrives_unchanged(
    orthanc: Orthanc, pipelines: Callable[..., LocalPipeline], tmp_path: Path
) -> None:
    files = build_corpus(tmp_path / "corpus")
    sent = {f: pydicom.dcmread(f) for f in files}
    syntaxes = {str(ds.file_meta.TransferSyntaxUID) for ds in sent.values()}
    assert len(files) >= 50 and len(syntaxes) >= 10, (len(files), syntaxes)

    pipeline = pipelines(orthanc.dicomweb, keep_uploaded=True)
    before = orthanc.instance_count()
    result = dcmsend(pipeline.receiver.port, files)
    assert result.returncode == 0, result.stderr[-2000:]

    wait_until(lambda: orthanc.instance_count() == before + len(files), 120, "all instances")

    def drained() -> bool:
        stats = pipeline.queue.stats()
        return stats.pending + stats.in_flight + stats.retrying == 0

    wait_until(drained, 30, "queue drained")
    assert pipeline.queue.stats().dead == 0
    for path, ds in sent.items():
        name = f"{path.name}: "
        [object_path] = (pipeline.objects.root / ds.StudyInstanceUID / ds.SeriesInstanceUID).glob(
            f"{ds.SOPInstanceUID}@*.dcm"
        )
        received = pydicom.dcmread(object_path)
        got = retrieve(orthanc, ds)
        # What reached the DICOM store is what the receiver got off the wire ...
        assert got.file_meta.TransferSyntaxUID == received.file_meta.TransferSyntaxUID, name
        assert_same(received, got, name)
        # ... which is the file as the PACS holds it. DCMTK offers native images as Explicit VR
        # Little Endian first (re-encoding big endian and implicit files itself); compressed
        # pixel data is sent as it is.
        sent_syntax = ds.file_meta.TransferSyntaxUID
        if sent_syntax.is_compressed:
            assert received.file_meta.TransferSyntaxUID == sent_syntax, name
        if received.file_meta.TransferSyntaxUID == sent_syntax:
            assert_same(ds, received, name)
        elif ds.get("BitsAllocated", 16) <= 16:
            # DCMTK 3.6.7 swaps 32-bit big endian pixel data as 16-bit words when it
            # re-encodes (rtdose_expb.dcm); that is the sender's conversion, checked above to
            # reach the store unchanged, so only 8/16-bit pixels are compared to the source.
            assert_same(ds, received, name, native_pixels=True)


VIDEO_AND_NEWER_SYNTAXES = {
    "mpeg2": "1.2.840.10008.1.2.4.100",
    "mpeg4-avc": "1.2.840.10008.1.2.4.102",
    "hevc": "1.2.840.10008.1.2.4.107",
    "htj2k-lossless": "1.2.840.10008.1.2.4.201",
    "jpeg-ls-near-lossless": "1.2.840.10008.1.2.4.81",
    "jpeg-lossless-14": "1.2.840.10008.1.2.4.57",
}
VIDEO_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4.1"


@pytest.mark.parametrize("syntax", sorted(VIDEO_AND_NEWER_SYNTAXES))
def test_encapsulated_syntaxes_are_stored_as_received(
    syntax: str, pipelines: Callable[..., LocalPipeline], orthanc: Orthanc, tmp_path: Path
) -> None:
    """Syntaxes DCMTK 3.6.7 cannot send: a pynetdicom SCU proposes them; bytes pass untouched."""
    uid = VIDEO_AND_NEWER_SYNTAXES[syntax]
    ds = Dataset()
    ds.SOPClassUID = VIDEO_PHOTOGRAPHIC
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "XC"
    ds.Rows, ds.Columns, ds.NumberOfFrames = 16, 16, 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "YBR_PARTIAL_420"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    rng = np.random.default_rng(7)
    frames = [rng.bytes(1000), rng.bytes(1200)]
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    path = write(ds, tmp_path / f"{syntax}.dcm", uid)

    pipeline = pipelines(orthanc.dicomweb)
    ae = AE(ae_title="VIDEOSCU")
    ae.add_requested_context(VIDEO_PHOTOGRAPHIC, [uid])
    assoc = ae.associate("127.0.0.1", pipeline.receiver.port, ae_title="IMPORTADAPTER")
    assert assoc.is_established
    status = assoc.send_c_store(path)
    assoc.release()
    assert status.Status == 0x0000

    def settled() -> bool:
        stats = pipeline.queue.stats()
        return stats.pending + stats.in_flight + stats.retrying == 0 or stats.dead > 0

    wait_until(settled, 30, "upload settled")
    assert pipeline.queue.stats().dead == 0, pipeline.queue.dead_letters()
    got = retrieve(orthanc, ds)
    assert str(got.file_meta.TransferSyntaxUID) == uid
    assert_same(pydicom.dcmread(path), got)
