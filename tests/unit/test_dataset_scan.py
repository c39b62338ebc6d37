"""The streaming structural scan of encoded datasets."""

from __future__ import annotations

import io
import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from receiver.dataset_scan import (
    DatasetSummary,
    MalformedDataset,
    part10_dataset_offset,
    scan_dataset,
    scan_header,
)

SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
SOP_INSTANCE = "1.2.826.0.1.3680043.8.498.1001"
STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.11"

UNCOMPRESSED = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
ALL_NATIVE = [*UNCOMPRESSED, DeflatedExplicitVRLittleEndian]


@dataclass(frozen=True)
class Encoded:
    """A dataset written to a Part-10 file, and where its dataset bytes start."""

    path: Path
    offset: int

    @property
    def dataset_bytes(self) -> bytes:
        return self.path.read_bytes()[self.offset :]


def leaf_item(value: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = SOP_CLASS
    item.ReferencedSOPInstanceUID = value
    return item


def set_undefined(ds: Dataset, keyword: str, undefined: bool) -> None:
    ds[keyword].is_undefined_length = undefined
    for item in ds[keyword].value:
        item.is_undefined_length_sequence_item = undefined


def make_dataset(
    *,
    study: str | None = STUDY,
    sequences: str = "mixed",
    pixels: int = 64,
) -> Dataset:
    """A small image with nested sequences.

    sequences: "defined" (all lengths explicit), "undefined" (all lengths undefined) or "mixed".
    Nested items carry decoy UIDs in the wanted tags; only top-level values may be reported.
    """
    ds = Dataset()
    ds.SOPClassUID = SOP_CLASS
    ds.SOPInstanceUID = SOP_INSTANCE
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN-0001"
    if study is not None:
        ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = SERIES

    inner = Dataset()
    inner.SOPInstanceUID = "9.9.9.1"  # decoy
    inner.StudyInstanceUID = "9.9.9.2"  # decoy
    inner.ReferencedImageSequence = Sequence([leaf_item("9.9.9.3"), leaf_item("9.9.9.4")])
    outer = Dataset()
    outer.SeriesInstanceUID = "9.9.9.5"  # decoy
    outer.ReferencedInstanceSequence = Sequence([inner, leaf_item("9.9.9.6")])
    ds.ReferencedSeriesSequence = Sequence([outer, leaf_item("9.9.9.7")])
    ds.SourceImageSequence = Sequence([])  # an empty sequence

    outer_undefined = sequences in ("undefined", "mixed")
    inner_undefined = sequences == "undefined"
    set_undefined(ds, "ReferencedSeriesSequence", outer_undefined)
    set_undefined(outer, "ReferencedInstanceSequence", inner_undefined)
    set_undefined(inner, "ReferencedImageSequence", outer_undefined)
    set_undefined(ds, "SourceImageSequence", inner_undefined)

    ds.Rows = 8
    ds.Columns = pixels // 8
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(range(256)) * (pixels // 256) + bytes(pixels % 256)
    ds["PixelData"].VR = "OB"
    return ds


def encode(ds: Dataset, transfer_syntax: UID) -> bytes:
    """The dataset alone, encoded in an uncompressed transfer syntax."""
    fp = DicomBytesIO()
    fp.is_little_endian = transfer_syntax.is_little_endian
    fp.is_implicit_VR = transfer_syntax.is_implicit_VR
    write_dataset(fp, ds)
    return fp.getvalue()


def save_part10(ds: Dataset, transfer_syntax: UID, path: Path) -> Encoded:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", SOP_CLASS)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", SOP_INSTANCE)
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.save_as(path, enforce_file_format=True)
    with open(path, "rb") as fp:
        offset = part10_dataset_offset(fp)
    return Encoded(path, offset)


def scan_bytes(data: bytes, transfer_syntax: str) -> DatasetSummary:
    return scan_dataset(io.BytesIO(data), transfer_syntax)


def scan_file(path: str | Path, transfer_syntax: str) -> tuple[DatasetSummary, int]:
    with open(path, "rb") as fp:
        offset = part10_dataset_offset(fp)
        fp.seek(offset)
        return scan_dataset(fp, transfer_syntax), offset


def assert_uids(summary: DatasetSummary, study: str | None = STUDY) -> None:
    assert summary.sop_class_uid == SOP_CLASS
    assert summary.sop_instance_uid == SOP_INSTANCE
    assert summary.study_instance_uid == study
    assert summary.series_instance_uid == SERIES


def pydicom_file(name: str) -> str:
    path = get_testdata_file(name)
    assert isinstance(path, str), f"pydicom test file {name} is not installed locally"
    return path


# --- well-formed datasets ------------------------------------------------------------------


@pytest.mark.parametrize("transfer_syntax", UNCOMPRESSED, ids=lambda ts: ts.name)
@pytest.mark.parametrize("sequences", ["defined", "undefined", "mixed"])
def test_scan_uncompressed_in_memory(transfer_syntax: UID, sequences: str) -> None:
    data = encode(make_dataset(sequences=sequences), transfer_syntax)
    summary = scan_bytes(data, transfer_syntax)
    assert_uids(summary)
    assert summary.length == len(data)


def test_undefined_lengths_are_really_written() -> None:
    """Guard the fixture: the "undefined" encoding does contain delimiters."""
    undefined = encode(make_dataset(sequences="undefined"), ExplicitVRLittleEndian)
    defined = encode(make_dataset(sequences="defined"), ExplicitVRLittleEndian)
    sequence_delimiter = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    item_delimiter = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
    assert undefined.count(sequence_delimiter) == 4
    assert undefined.count(item_delimiter) == 6
    assert sequence_delimiter not in defined
    assert item_delimiter not in defined


@pytest.mark.parametrize("transfer_syntax", ALL_NATIVE, ids=lambda ts: ts.name)
def test_scan_part10_file(tmp_path: Path, transfer_syntax: UID) -> None:
    encoded = save_part10(make_dataset(pixels=4096), transfer_syntax, tmp_path / "x.dcm")
    with open(encoded.path, "rb") as fp:
        fp.seek(encoded.offset)
        summary = scan_dataset(fp, transfer_syntax)
    assert_uids(summary)
    # length is how many bytes of the file make up the dataset: what a copier must take.
    assert summary.length == len(encoded.dataset_bytes)


@pytest.mark.parametrize("transfer_syntax", ALL_NATIVE, ids=lambda ts: ts.name)
def test_part10_dataset_offset_finds_the_dataset(tmp_path: Path, transfer_syntax: UID) -> None:
    ds = make_dataset()
    encoded = save_part10(ds, transfer_syntax, tmp_path / "x.dcm")
    on_disk = encoded.dataset_bytes
    if transfer_syntax.is_deflated:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        on_disk = inflater.decompress(on_disk)
        assert inflater.eof
        assert on_disk == encode(ds, ExplicitVRLittleEndian)
    else:
        assert on_disk == encode(ds, transfer_syntax)


def test_part10_dataset_offset_rejects_non_part10() -> None:
    with pytest.raises(MalformedDataset, match="Part-10"):
        part10_dataset_offset(io.BytesIO(b"\x00" * 200))
    with pytest.raises(MalformedDataset, match="Part-10"):
        part10_dataset_offset(io.BytesIO(b"\x00" * 128 + b"DIC"))


def test_scan_starts_at_the_current_position() -> None:
    data = encode(make_dataset(), ExplicitVRLittleEndian)
    fp = io.BytesIO(b"JUNK" * 10 + data)
    fp.seek(40)
    summary = scan_dataset(fp, ExplicitVRLittleEndian)
    assert_uids(summary)
    assert summary.length == len(data)


def test_scan_encapsulated_built_with_pydicom(tmp_path: Path) -> None:
    ds = make_dataset()
    frames = [
        b"\xff\xd8" + bytes(range(100)) + b"\xff\xd9",
        b"\xff\xd8" + b"\x01" * 333 + b"\xff\xd9",
    ]
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.NumberOfFrames = 2
    encoded = save_part10(ds, JPEGBaseline8Bit, tmp_path / "jpeg.dcm")
    summary, offset = scan_file(encoded.path, JPEGBaseline8Bit)
    assert offset == encoded.offset
    assert_uids(summary)
    assert summary.length == len(encoded.dataset_bytes)
    assert dcmread(encoded.path).SOPInstanceUID == SOP_INSTANCE


def test_scan_encapsulated_pydicom_jpeg_file() -> None:
    path = pydicom_file("SC_rgb_jpeg_dcmtk.dcm")
    reference = dcmread(path)
    assert reference.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    summary, offset = scan_file(path, JPEGBaseline8Bit)
    assert summary.sop_instance_uid == reference.get("SOPInstanceUID")
    assert summary.length == Path(path).stat().st_size - offset


def test_missing_study_uid_is_none() -> None:
    data = encode(make_dataset(study=None), ExplicitVRLittleEndian)
    summary = scan_bytes(data, ExplicitVRLittleEndian)
    # The nested decoy Study Instance UID must not be taken for the missing top-level one.
    assert_uids(summary, study=None)


def test_uid_values_are_stripped_of_padding() -> None:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3"  # odd length: written with a trailing NUL
    data = encode(ds, ExplicitVRLittleEndian)
    assert data.endswith(b"1.2.3\x00")
    assert scan_bytes(data, ExplicitVRLittleEndian).sop_instance_uid == "1.2.3"


def test_unknown_transfer_syntax_is_read_as_explicit_little_endian() -> None:
    data = encode(make_dataset(), ExplicitVRLittleEndian)
    assert_uids(scan_bytes(data, "1.2.826.0.1.3680043.8.498.999"))


def test_scan_keeps_no_other_values() -> None:
    data = encode(make_dataset(), ExplicitVRLittleEndian)
    summary = scan_bytes(data, ExplicitVRLittleEndian)
    assert "Doe" not in repr(summary)
    assert "MRN" not in repr(summary)


def test_undefined_length_un_sequence() -> None:
    """An undefined-length UN holds an implicit VR little endian sequence (PS3.5 6.2.2)."""
    item = struct.pack("<HHL", 0x0008, 0x1155, 6) + b"9.9.9\x00"
    body = (
        struct.pack("<HH2sHL", 0x0009, 0x1010, b"UN", 0, 0xFFFFFFFF)
        + struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
        + item
        + struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
        + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    )
    head = encode(make_dataset(), ExplicitVRLittleEndian)
    data = head + body
    summary = scan_bytes(data, ExplicitVRLittleEndian)
    assert_uids(summary)
    assert summary.length == len(data)


# --- pydicom's own test files ----------------------------------------------------------------

REAL_FILES = [
    "CT_small.dcm",  # explicit VR little endian, with sequences
    "MR_small_implicit.dcm",  # implicit VR little endian
    "rtplan.dcm",  # implicit VR little endian, deeply nested sequences
    "nested_priv_SQ.dcm",  # implicit VR, nested private sequences
    "MR_small_bigendian.dcm",  # explicit VR big endian
    "liver_expb_1frame.dcm",  # explicit VR big endian, with sequences
    "image_dfl.dcm",  # deflated explicit VR little endian
    "JPEG2000.dcm",  # encapsulated JPEG 2000
    "MR_small_RLE.dcm",  # encapsulated RLE
    "SC_rgb_jpeg_dcmtk.dcm",  # encapsulated JPEG baseline
    "JPEG-lossy.dcm",  # encapsulated JPEG extended
    "UN_sequence.dcm",  # an undefined-length UN sequence
]


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_file_uids_match_pydicom(name: str) -> None:
    path = pydicom_file(name)
    reference = dcmread(path)
    transfer_syntax = reference.file_meta.TransferSyntaxUID
    summary, _ = scan_file(path, transfer_syntax)
    assert summary.sop_class_uid == reference.get("SOPClassUID")
    assert summary.sop_instance_uid == reference.get("SOPInstanceUID")
    assert summary.study_instance_uid == reference.get("StudyInstanceUID")
    assert summary.series_instance_uid == reference.get("SeriesInstanceUID")


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_file_length_is_the_rest_of_the_file(name: str) -> None:
    path = pydicom_file(name)
    transfer_syntax = dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    summary, offset = scan_file(path, transfer_syntax)
    rest = Path(path).stat().st_size - offset
    if transfer_syntax.is_deflated:
        # The deflate stream may be followed by padding; length is where the stream ends.
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        inflater.decompress(Path(path).read_bytes()[offset:])
        assert inflater.eof
        assert summary.length == rest - len(inflater.unused_data)
    else:
        assert summary.length == rest


@pytest.mark.parametrize("name", ["MR_truncated.dcm", "rtplan_truncated.dcm"])
def test_real_truncated_files_are_malformed(name: str) -> None:
    path = pydicom_file(name)
    transfer_syntax = dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    with pytest.raises(MalformedDataset, match="truncated"):
        scan_file(path, transfer_syntax)


# --- malformed input -------------------------------------------------------------------------


@pytest.mark.parametrize("transfer_syntax", ALL_NATIVE, ids=lambda ts: ts.name)
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_random_bytes_are_malformed(transfer_syntax: UID, seed: int) -> None:
    rng = random.Random(seed)
    data = bytes(rng.randrange(256) for _ in range(4096))
    with pytest.raises(MalformedDataset):
        scan_bytes(data, transfer_syntax)


@pytest.mark.parametrize("transfer_syntax", ALL_NATIVE, ids=lambda ts: ts.name)
def test_empty_dataset_is_malformed(transfer_syntax: UID) -> None:
    with pytest.raises(MalformedDataset, match="empty"):
        scan_bytes(b"", transfer_syntax)


def test_empty_deflate_stream_is_malformed() -> None:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    empty = compressor.compress(b"") + compressor.flush()
    with pytest.raises(MalformedDataset, match="empty"):
        scan_bytes(empty, DeflatedExplicitVRLittleEndian)


@pytest.mark.parametrize("transfer_syntax", UNCOMPRESSED, ids=lambda ts: ts.name)
@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.99])
def test_truncated_in_native_pixel_data(transfer_syntax: UID, fraction: float) -> None:
    data = encode(make_dataset(pixels=4096), transfer_syntax)
    pixel_start = len(data) - 4096
    cut = pixel_start + int(4096 * fraction)
    with pytest.raises(MalformedDataset, match="truncated"):
        scan_bytes(data[:cut], transfer_syntax)


def test_truncated_in_encapsulated_pixel_data() -> None:
    data = dataset_bytes_of("SC_rgb_jpeg_dcmtk.dcm")
    for cut in (len(data) - 9, len(data) - 8, len(data) - 4, len(data) - 1, len(data) - 200):
        with pytest.raises(MalformedDataset):
            scan_bytes(data[:cut], JPEGBaseline8Bit)


def dataset_bytes_of(name: str) -> bytes:
    path = pydicom_file(name)
    with open(path, "rb") as fp:
        offset = part10_dataset_offset(fp)
        fp.seek(offset)
        return fp.read()


@pytest.mark.parametrize("transfer_syntax", UNCOMPRESSED, ids=lambda ts: ts.name)
@pytest.mark.parametrize("into_header", [1, 3, 4, 6, 7])
def test_truncated_in_element_header(transfer_syntax: UID, into_header: int) -> None:
    ds = make_dataset()
    data = encode(ds, transfer_syntax)
    # Add Patient Comments (0010,4000) and cut the stream inside its 8-byte header.
    ds.PatientComments = "x" * 10
    longer = encode(ds, transfer_syntax)
    start = longer.find(
        b"\x10\x00\x00\x40" if transfer_syntax.is_little_endian else b"\x00\x10\x40\x00"
    )
    assert start > 0
    with pytest.raises(MalformedDataset, match="truncated"):
        scan_bytes(longer[: start + into_header], transfer_syntax)
    assert scan_bytes(data, transfer_syntax).length == len(data)


def test_truncated_in_long_header_length_field() -> None:
    """An explicit VR OB header is 12 bytes; stop after the first 8."""
    data = encode(make_dataset(), ExplicitVRLittleEndian)
    pixel_header = data.rfind(b"\xe0\x7f\x10\x00OB\x00\x00")
    assert pixel_header > 0
    for extra in (8, 10):
        with pytest.raises(MalformedDataset, match="truncated"):
            scan_bytes(data[: pixel_header + extra], ExplicitVRLittleEndian)


@pytest.mark.parametrize("transfer_syntax", UNCOMPRESSED, ids=lambda ts: ts.name)
def test_truncated_in_undefined_length_sequence(transfer_syntax: UID) -> None:
    data = encode(make_dataset(sequences="undefined", pixels=0), transfer_syntax)
    delimiter = b"\xfe\xff\xdd\xe0" if transfer_syntax.is_little_endian else b"\xff\xfe\xe0\xdd"
    last = data.rfind(delimiter)
    assert last > 0
    with pytest.raises(MalformedDataset):
        scan_bytes(data[:last], transfer_syntax)


@pytest.mark.parametrize("bad_vr", [b"ZZ", b"\x00\x00", b"ob", b"  "])
def test_invalid_vr_in_explicit_syntax(bad_vr: bytes) -> None:
    data = bytearray(encode(make_dataset(), ExplicitVRLittleEndian))
    position = data.find(b"\x10\x00\x10\x00PN")  # Patient's Name
    assert position > 0
    data[position + 4 : position + 6] = bad_vr
    with pytest.raises(MalformedDataset, match=r"invalid VR at element \(0010,0010\)"):
        scan_bytes(bytes(data), ExplicitVRLittleEndian)


def test_invalid_vr_in_big_endian() -> None:
    data = bytearray(encode(make_dataset(), ExplicitVRBigEndian))
    position = data.find(b"\x00\x10\x00\x10PN")
    assert position > 0
    data[position + 4 : position + 6] = b"XX"
    with pytest.raises(MalformedDataset, match="invalid VR"):
        scan_bytes(bytes(data), ExplicitVRBigEndian)


def test_defined_sequence_length_disagreeing_with_items() -> None:
    data = bytearray(encode(make_dataset(sequences="defined"), ExplicitVRLittleEndian))
    position = data.find(b"\x08\x00\x15\x11SQ\x00\x00")  # Referenced Series Sequence
    assert position > 0
    (length,) = struct.unpack("<L", data[position + 8 : position + 12])
    data[position + 8 : position + 12] = struct.pack("<L", length - 2)
    with pytest.raises(MalformedDataset):
        scan_bytes(bytes(data), ExplicitVRLittleEndian)


def test_item_tag_at_top_level_is_malformed() -> None:
    data = encode(make_dataset(), ExplicitVRLittleEndian) + struct.pack("<HHL", 0xFFFE, 0xE000, 0)
    with pytest.raises(MalformedDataset, match="unexpected item"):
        scan_bytes(data, ExplicitVRLittleEndian)


def test_item_delimiter_at_top_level_is_malformed() -> None:
    data = encode(make_dataset(), ExplicitVRLittleEndian) + struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
    with pytest.raises(MalformedDataset, match="unexpected item delimiter"):
        scan_bytes(data, ExplicitVRLittleEndian)


def test_undefined_length_on_a_plain_element_is_malformed() -> None:
    data = struct.pack("<HH2sHL", 0x0010, 0x4000, b"UT", 0, 0xFFFFFFFF) + b"x" * 8
    with pytest.raises(MalformedDataset, match="undefined length"):
        scan_bytes(data, ExplicitVRLittleEndian)


def test_oversized_uid_element_is_malformed() -> None:
    data = struct.pack("<HH2sH", 0x0008, 0x0018, b"UI", 200) + b"1" * 200
    with pytest.raises(MalformedDataset, match="too long"):
        scan_bytes(data, ExplicitVRLittleEndian)


# --- deflate ---------------------------------------------------------------------------------


def deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def test_deflated_in_memory() -> None:
    plain = encode(make_dataset(), ExplicitVRLittleEndian)
    summary = scan_bytes(deflate(plain), DeflatedExplicitVRLittleEndian)
    assert_uids(summary)


def test_deflate_stream_with_reserved_block_type_is_malformed() -> None:
    stream = bytearray(deflate(encode(make_dataset(), ExplicitVRLittleEndian)))
    stream[0] = 0x07  # BFINAL=1, BTYPE=11 (reserved): an invalid block
    with pytest.raises(MalformedDataset, match="corrupt"):
        scan_bytes(bytes(stream), DeflatedExplicitVRLittleEndian)


@pytest.mark.parametrize("seed", range(5))
def test_corrupted_deflate_stream_is_malformed(seed: int) -> None:
    stream = bytearray(deflate(encode(make_dataset(pixels=4096), ExplicitVRLittleEndian)))
    rng = random.Random(seed)
    for _ in range(8):
        stream[rng.randrange(len(stream) // 2)] ^= rng.randrange(1, 256)
    with pytest.raises(MalformedDataset):
        scan_bytes(bytes(stream), DeflatedExplicitVRLittleEndian)


def test_deflated_truncated_in_pixel_data(tmp_path: Path) -> None:
    encoded = save_part10(
        make_dataset(pixels=8192), DeflatedExplicitVRLittleEndian, tmp_path / "d.dcm"
    )
    data = encoded.dataset_bytes
    with pytest.raises(MalformedDataset, match="truncated"):
        scan_bytes(data[: len(data) // 2], DeflatedExplicitVRLittleEndian)


def test_deflate_stream_cut_at_an_element_boundary_is_malformed() -> None:
    """A deflate stream that never reaches its final block is incomplete, whatever it inflates to.

    The stream is flushed (Z_SYNC_FLUSH) right after the Series Instance UID element and cut
    there: it inflates to a run of whole elements, but the deflate end-of-stream was never seen.
    """
    plain = encode(make_dataset(), ExplicitVRLittleEndian)
    marker = b"\x20\x00\x0e\x00UI"
    boundary = plain.rindex(marker)  # the top-level one, after the nested decoy
    boundary += 8 + struct.unpack("<H", plain[boundary + 6 : boundary + 8])[0]
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    prefix = compressor.compress(plain[:boundary]) + compressor.flush(zlib.Z_SYNC_FLUSH)
    whole = prefix + compressor.compress(plain[boundary:]) + compressor.flush()
    assert_uids(scan_bytes(whole, DeflatedExplicitVRLittleEndian))  # the full stream is fine
    with pytest.raises(MalformedDataset):
        scan_bytes(prefix, DeflatedExplicitVRLittleEndian)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_scan_header_reads_the_uids_from_a_prefix(syntax: UID) -> None:
    full = encode(make_dataset(pixels=200_000), syntax)
    pixels_at = full.index(struct.pack("<HH", 0x7FE0, 0x0010))
    summary = scan_header(io.BytesIO(full[: pixels_at + 100]), syntax)  # still arriving
    assert summary is not None
    assert (summary.study_instance_uid, summary.series_instance_uid) == (STUDY, SERIES)
    assert summary.sop_instance_uid == SOP_INSTANCE


def test_scan_header_needs_every_uid_before_the_prefix_ends() -> None:
    full = encode(make_dataset(pixels=1000), ExplicitVRLittleEndian)
    series_at = full.index(struct.pack("<HH", 0x0020, 0x000E))
    assert scan_header(io.BytesIO(full[:series_at]), ExplicitVRLittleEndian) is None
    assert scan_header(io.BytesIO(b"\xff" * 64), ExplicitVRLittleEndian) is None


@pytest.mark.parametrize("tag", [0x00080016, 0x00080018, 0x0020000D, 0x0020000E])
@pytest.mark.parametrize("transfer_syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
def test_a_uid_element_given_twice_is_malformed(tag: int, transfer_syntax: UID) -> None:
    """Readers differ on which copy counts (DCMTK keeps the first): neither is trusted."""
    ds = make_dataset()
    copy = Dataset()
    copy[tag] = ds[tag]
    copy[tag].value = "1.2.3.4.5.6"  # another UID, as a second copy would hold
    for data in (encode(ds, transfer_syntax) + encode(copy, transfer_syntax),
                 encode(copy, transfer_syntax) + encode(ds, transfer_syntax)):  # fmt: skip
        with pytest.raises(MalformedDataset, match=rf"\({tag >> 16:04X},{tag & 0xFFFF:04X}\) ap"):
            scan_bytes(data, transfer_syntax)


def test_another_element_given_twice_is_left_to_the_store() -> None:
    """It changes nothing the receiver checks and stores by (nested UIDs are decoys too)."""
    ds = make_dataset()
    name = Dataset()
    name.PatientName = "Roe^Richard"
    data = encode(ds, ExplicitVRLittleEndian) + encode(name, ExplicitVRLittleEndian)
    assert_uids(scan_bytes(data, ExplicitVRLittleEndian))
