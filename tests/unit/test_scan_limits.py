"""Content limits of the dataset scan: nesting depth, inflated size and ratio, instance size."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable

import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from receiver.dataset_scan import (
    DatasetSummary,
    LimitExceeded,
    MalformedDataset,
    ScanLimits,
    check_instance_bytes,
    scan_dataset,
    scan_header,
)

MIB = 1 << 20
SEQ_TAG = (0x0008, 0x1115)  # Referenced Series Sequence
PRIVATE_TAG = (0x0009, 0x1010)
UNDEFINED = 0xFFFFFFFF


def scan(data: bytes, syntax: str, limits: ScanLimits | None = None) -> DatasetSummary:
    return scan_dataset(io.BytesIO(data), syntax, limits)


class Encoder:
    """Element and item headers in one encoding; ``None`` lengths are undefined."""

    def __init__(self, syntax: str) -> None:
        self.explicit = syntax != ImplicitVRLittleEndian
        self.e = ">" if syntax == ExplicitVRBigEndian else "<"

    def marker(self, element: int, length: int) -> bytes:
        return struct.pack(self.e + "HHL", 0xFFFE, element, length)

    def sequence(self, content: bytes, defined: bool, tag: tuple[int, int] = SEQ_TAG) -> bytes:
        length = len(content) if defined else UNDEFINED
        if self.explicit:
            head = struct.pack(self.e + "HH2sHL", *tag, b"SQ", 0, length)
        else:
            head = struct.pack(self.e + "HHL", *tag, length)
        return head + content + (b"" if defined else self.marker(0xE0DD, 0))

    def item(self, content: bytes, defined: bool) -> bytes:
        if defined:
            return self.marker(0xE000, len(content)) + content
        return self.marker(0xE000, UNDEFINED) + content + self.marker(0xE00D, 0)

    def leaf(self) -> bytes:
        if self.explicit:
            return struct.pack(self.e + "HH2sH", 0x0008, 0x1150, b"UI", 4) + b"1.2\x00"
        return struct.pack(self.e + "HHL", 0x0008, 0x1150, 4) + b"1.2\x00"


def nested(levels: int, syntax: str, style: str, tag: tuple[int, int] = SEQ_TAG) -> bytes:
    """``levels`` sequences, each in the only item of the one above (built without recursion).

    style: "defined", "undefined", or "mixed" (alternating from the innermost level).
    """
    enc = Encoder(syntax)
    content = enc.leaf()
    for level in range(levels):
        defined = style == "defined" or (style == "mixed" and level % 2 == 0)
        content = enc.sequence(enc.item(content, defined), defined, tag)
    return content


SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
STYLES = ["defined", "undefined", "mixed"]


# --- nesting depth ---------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda ts: ts.name)
@pytest.mark.parametrize("style", STYLES)
def test_default_depth_limit_exactly_and_one_over(syntax: str, style: str) -> None:
    depth = ScanLimits().max_depth
    data = nested(depth, syntax, style)
    assert scan(data, syntax).length == len(data)
    with pytest.raises(LimitExceeded, match=f"nested deeper than {depth} levels"):
        scan(nested(depth + 1, syntax, style), syntax)


@pytest.mark.parametrize("style", STYLES)
def test_configured_depth_limit(style: str) -> None:
    limits = ScanLimits(max_depth=3)
    assert scan(nested(3, ExplicitVRLittleEndian, style), ExplicitVRLittleEndian, limits)
    with pytest.raises(LimitExceeded, match="deeper than 3 levels"):
        scan(nested(4, ExplicitVRLittleEndian, style), ExplicitVRLittleEndian, limits)


def test_private_sequences_in_implicit_vr_are_measured() -> None:
    """A private tag's sequence is told by its first item tag, defined length or not."""
    limits = ScanLimits(max_depth=4)
    for style in STYLES:
        assert scan(nested(4, ImplicitVRLittleEndian, style, PRIVATE_TAG), "1.2.840.10008.1.2")
        with pytest.raises(LimitExceeded):
            scan(nested(5, ImplicitVRLittleEndian, style, PRIVATE_TAG), "1.2.840.10008.1.2", limits)


@pytest.mark.parametrize("defined", [True, False])
def test_sequences_inside_a_un_element_are_measured(defined: bool) -> None:
    """A UN holds implicit VR little endian; its nested sequences count like any other."""
    inner = nested(3, ImplicitVRLittleEndian, "defined" if defined else "undefined")
    item = Encoder(ImplicitVRLittleEndian).item(inner, defined)
    tail = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    length = len(item) if defined else UNDEFINED
    data = (
        struct.pack("<HH2sHL", *PRIVATE_TAG, b"UN", 0, length) + item + (b"" if defined else tail)
    )
    assert scan(data, ExplicitVRLittleEndian, ScanLimits(max_depth=4)).length == len(data)
    with pytest.raises(LimitExceeded, match="deeper than 3 levels"):
        scan(data, ExplicitVRLittleEndian, ScanLimits(max_depth=3))


@pytest.mark.parametrize("style", ["defined", "undefined"])
def test_thousands_of_nested_sequences_are_refused_quickly(style: str) -> None:
    data = nested(5000, ExplicitVRLittleEndian, style)
    assert 90_000 < len(data) < 200_000  # 20 bytes a level, 36 with delimiters
    started = time.monotonic()
    with pytest.raises(LimitExceeded, match="nested deeper"):
        scan(data, ExplicitVRLittleEndian)
    assert time.monotonic() - started < 1.0


def test_scan_header_reads_past_nested_defined_sequences() -> None:
    enc = Encoder(ExplicitVRLittleEndian)

    def ui(element: int, value: bytes) -> bytes:
        return (
            struct.pack("<HH2sH", 0x0008 if element < 0x20 else 0x0020, element & 0xFF, b"UI", 4)
            + value
        )

    uids = ui(0x16, b"1.2\x00") + ui(0x18, b"1.3\x00")
    data = uids + nested(5, ExplicitVRLittleEndian, "defined") + ui(0x10D, b"1.4\x00")
    data += ui(0x10E, b"1.5\x00") + enc.leaf()
    summary = scan_header(io.BytesIO(data), ExplicitVRLittleEndian)
    assert summary is not None and summary.series_instance_uid == "1.5"


def test_defined_item_contents_must_end_at_its_length() -> None:
    enc = Encoder(ExplicitVRLittleEndian)
    leaf = enc.leaf()
    too_long = enc.marker(0xE000, len(leaf) - 2) + leaf  # the element runs past the item
    with pytest.raises(MalformedDataset, match="item length"):
        scan(enc.sequence(too_long, defined=True), ExplicitVRLittleEndian)
    past_sequence = enc.marker(0xE000, len(leaf) + 8) + leaf  # the item runs past its sequence
    with pytest.raises(MalformedDataset, match="item longer than its sequence"):
        scan(enc.sequence(past_sequence, defined=True), ExplicitVRLittleEndian)


@pytest.mark.parametrize("depth", [0, 129])
def test_depth_limit_is_bounded(depth: int) -> None:
    with pytest.raises(ValueError, match="max_depth"):
        ScanLimits(max_depth=depth)


def test_negative_size_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="size limits"):
        ScanLimits(max_inflated_bytes=-1)


# --- deflate ---------------------------------------------------------------------------------


def deflated_zeros(size: int) -> bytes:
    """A dataset of one OB element of ``size`` zero bytes, deflated in 1 MiB pieces."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [compressor.compress(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, size))]
    zeros = bytes(MIB)
    for _ in range(size // MIB):
        out.append(compressor.compress(zeros))
    out.append(compressor.compress(bytes(size % MIB)))
    out.append(compressor.flush())
    return b"".join(out)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return deflated_zeros(200 * MIB)  # about 200 KB


def bounded(call: Callable[[], object]) -> tuple[str, float, int]:
    """The reason, seconds and peak traced bytes of a call that must raise LimitExceeded."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(LimitExceeded) as raised:
            call()
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return str(raised.value), elapsed, peak


def test_deflate_bomb_stops_at_the_inflated_size_limit(bomb: bytes) -> None:
    assert len(bomb) < 400_000
    limits = ScanLimits(max_inflated_bytes=8 * MIB, max_inflate_ratio=0)
    reason, elapsed, peak = bounded(lambda: scan(bomb, DeflatedExplicitVRLittleEndian, limits))
    assert reason == "deflated dataset inflates beyond 8 MiB"
    assert elapsed < 2.0
    assert peak < 32 * MIB


def test_deflate_bomb_stops_at_the_ratio_limit_by_default(bomb: bytes) -> None:
    reason, elapsed, peak = bounded(lambda: scan(bomb, DeflatedExplicitVRLittleEndian))
    assert reason == "deflate ratio above 200:1"
    assert elapsed < 2.0
    assert peak < 48 * MIB


def test_ratio_is_judged_only_after_the_first_mebibytes() -> None:
    small = deflated_zeros(8 * MIB)  # about 1000:1, but small
    assert scan(small, DeflatedExplicitVRLittleEndian).length == len(small)


def test_ratio_and_size_limits_can_be_turned_off() -> None:
    data = deflated_zeros(40 * MIB)
    with pytest.raises(LimitExceeded, match="ratio"):
        scan(data, DeflatedExplicitVRLittleEndian)
    limits = ScanLimits(max_inflated_bytes=0, max_inflate_ratio=0)
    assert scan(data, DeflatedExplicitVRLittleEndian, limits).length == len(data)


def test_scan_header_gives_none_for_a_bomb(bomb: bytes) -> None:
    limits = ScanLimits(max_inflated_bytes=4 * MIB)
    assert scan_header(io.BytesIO(bomb), DeflatedExplicitVRLittleEndian, limits) is None


# --- instance size ---------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
def test_instance_size_limit(syntax: str) -> None:
    data = nested(2, ExplicitVRLittleEndian, "defined")
    if syntax == DeflatedExplicitVRLittleEndian:
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        data = compressor.compress(data) + compressor.flush()
    assert scan(data, syntax, ScanLimits(max_instance_bytes=len(data))).length == len(data)
    with pytest.raises(LimitExceeded, match=f"instance larger than {len(data) - 1} bytes"):
        scan(data, syntax, ScanLimits(max_instance_bytes=len(data) - 1))


def test_instance_size_check_for_the_network_layer() -> None:
    limits = ScanLimits(max_instance_bytes=2 << 30)
    check_instance_bytes(2 << 30, limits)
    with pytest.raises(LimitExceeded, match="instance larger than 2 GiB"):
        check_instance_bytes((2 << 30) + 1, limits)
    check_instance_bytes(1 << 40, ScanLimits())  # off by default
