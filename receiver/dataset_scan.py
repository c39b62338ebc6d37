"""A streaming structural check of an encoded dataset, without decoding values.

The scan walks element headers, steps over values (pixel data included) and descends into
sequences (defined and undefined length alike) and encapsulated pixel data, so it reads any
size in bounded memory. It proves the dataset is complete (no truncated element, every item's
contents end exactly at its length), enforces the content limits of ``ScanLimits`` and returns
the few UIDs the pipeline needs. It never keeps any other value, so no patient data leaves
this module.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from pydicom._dicom_dict import DicomDictionary
from pydicom.uid import UID

from .scan_limits import (
    RATIO_AFTER,
    LimitExceeded,
    MalformedDataset,
    ScanLimits,
    check_instance_bytes,
    size_text,
)

__all__ = [
    "DatasetSummary",
    "LimitExceeded",
    "MalformedDataset",
    "ScanLimits",
    "check_instance_bytes",
    "part10_dataset_offset",
    "scan_dataset",
    "scan_header",
]

_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_VALID_VRS = _LONG_VRS | frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST TM UI UL US".split()
)
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQ_END = 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_STEP = 1 << 20
# Ends of a nested dataset besides a byte offset: the end of the input, or an item delimiter.
_TO_EOF = -1
_TO_DELIMITER = -2
_ITEM_LE = b"\xfe\xff\x00\xe0"
# Tags the standard defines as sequences; others it defines are never read as one.
_SQ_TAGS = frozenset(tag for tag, entry in DicomDictionary.items() if entry[0] == "SQ")
# JPIP Referenced Deflate and JPIP HTJ2K Referenced Deflate: deflated datasets that pydicom's
# UID.is_deflated does not flag.
_DEFLATED_JPIP = frozenset({"1.2.840.10008.1.2.4.95", "1.2.840.10008.1.2.4.205"})

# Element headers, by byte order: group, element and a 32-bit length (an item, a delimiter
# or an implicit VR element); an explicit VR element's 16-bit or 32-bit length.
_HEADER = {"<": struct.Struct("<HHL"), ">": struct.Struct(">HHL")}
_SHORT_LENGTH = {"<": struct.Struct("<H"), ">": struct.Struct(">H")}
_LENGTH = {"<": struct.Struct("<L"), ">": struct.Struct(">L")}

WANTED = {
    0x00080016: "sop_class_uid",
    0x00080018: "sop_instance_uid",
    0x0020000D: "study_instance_uid",
    0x0020000E: "series_instance_uid",
}


@dataclass(frozen=True, slots=True)
class DatasetSummary:
    """What the pipeline needs from a dataset; absent attributes are None."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    length: int  # bytes of the file the dataset occupies


class _Source:
    """Exact reads and skips over a file, or over an inflating stream of one.

    Inflation is bounded: at most ``_STEP`` bytes of output are produced per call, and the
    buffer is compacted as it is consumed, so a highly compressed dataset (a mostly empty
    multi-frame image) costs time linear in its size and memory of a few MiB.
    """

    def __init__(self, fp: BinaryIO, deflated: bool, limits: ScanLimits) -> None:
        self._fp = fp
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS) if deflated else None
        self._limits = limits
        self._buffer = bytearray()
        self._pos = 0
        self._eof = False
        self._raw = 0
        self._inflated = 0
        self.consumed = 0
        start = fp.tell()
        fp.seek(0, io.SEEK_END)
        self._remaining = fp.tell() - start
        fp.seek(start)
        check_instance_bytes(self._remaining, limits)

    def _available(self) -> int:
        return len(self._buffer) - self._pos

    def _fill(self, n: int) -> None:
        inflater = self._inflater
        assert inflater is not None
        while self._available() < n and not self._eof:
            if self._pos >= _STEP:
                del self._buffer[: self._pos]
                self._pos = 0
            if inflater.eof:
                self._eof = True
                break
            data = inflater.unconsumed_tail
            if not data:
                data = self._fp.read(_STEP)
                if not data:
                    self._inflate(inflater.flush())
                    self._eof = True
                    if self._raw and not inflater.eof:
                        raise MalformedDataset("deflated dataset is truncated")
                    break
                self._raw += len(data)
            try:
                output = inflater.decompress(data, _STEP)
            except zlib.error as exc:
                raise MalformedDataset(f"deflated dataset is corrupt: {exc}") from exc
            self._inflate(output)

    def _inflate(self, output: bytes) -> None:
        """Take inflated output, refusing it beyond the inflate limits."""
        self._buffer += output
        self._inflated += len(output)
        limits = self._limits
        if limits.max_inflated_bytes and self._inflated > limits.max_inflated_bytes:
            size = size_text(limits.max_inflated_bytes)
            raise LimitExceeded(f"deflated dataset inflates beyond {size}")
        if limits.max_inflate_ratio and self._inflated > RATIO_AFTER:
            assert self._inflater is not None
            deflated = self._raw - len(self._inflater.unconsumed_tail)
            if self._inflated > limits.max_inflate_ratio * deflated:
                raise LimitExceeded(f"deflate ratio above {limits.max_inflate_ratio}:1")

    @property
    def file_bytes(self) -> int:
        """Bytes of the file the dataset occupies (compressed bytes, when deflated)."""
        if self._inflater is None:
            return self.consumed
        return self._raw - len(self._inflater.unused_data)

    def at_end(self) -> bool:
        if self._inflater is None:
            return self._remaining == 0
        self._fill(1)
        return self._available() == 0

    def _take(self, n: int) -> memoryview:
        self._fill(n)
        if self._available() < n:
            raise MalformedDataset("dataset is truncated")
        view = memoryview(self._buffer)[self._pos : self._pos + n]
        self._pos += n
        self.consumed += n
        return view

    def peek(self, n: int) -> bytes:
        """Up to n of the next bytes, without consuming them."""
        if self._inflater is not None:
            self._fill(n)
            return bytes(self._buffer[self._pos : self._pos + n])
        data = self._fp.read(min(n, self._remaining))
        self._fp.seek(-len(data), io.SEEK_CUR)
        return data

    def read(self, n: int) -> bytes:
        if self._inflater is not None:
            with self._take(n) as view:
                return bytes(view)
        if n > self._remaining:
            raise MalformedDataset("dataset is truncated")
        data = self._fp.read(n)
        if len(data) != n:
            raise MalformedDataset("dataset is truncated")
        self._remaining -= n
        self.consumed += n
        return data

    def skip(self, n: int) -> None:
        if self._inflater is None:
            if n > self._remaining:
                raise MalformedDataset("dataset is truncated")
            self._fp.seek(n, io.SEEK_CUR)
            self._remaining -= n
            self.consumed += n
            return
        while n:
            step = min(n, _STEP)
            self._take(step).release()
            n -= step


class _Walker:
    def __init__(self, source: _Source, explicit: bool, little: bool, limits: ScanLimits) -> None:
        self.src = source
        self.explicit = explicit
        self.endian = "<" if little else ">"
        self.max_depth = limits.max_depth
        self.found: dict[str, str] = {}
        self.stop_when_found = False

    def summary(self, length: int) -> DatasetSummary:
        found = self.found
        return DatasetSummary(
            found.get("sop_class_uid"),
            found.get("sop_instance_uid"),
            found.get("study_instance_uid"),
            found.get("series_instance_uid"),
            length,
        )

    def header(self, explicit: bool, endian: str) -> tuple[int, bytes | None, int]:
        raw = self.src.read(8)
        group, element, length = _HEADER[endian].unpack(raw)
        tag = (group << 16) | element
        if group == 0xFFFE or not explicit:  # an item or delimiter, or an implicit VR element
            return tag, None, length
        vr = raw[4:6]
        if vr not in _VALID_VRS:
            raise MalformedDataset(f"invalid VR at element ({group:04X},{element:04X})")
        if vr in _LONG_VRS:
            (length,) = _LENGTH[endian].unpack(self.src.read(4))
        else:
            (length,) = _SHORT_LENGTH[endian].unpack_from(raw, 6)
        return tag, vr, length

    def dataset(self, depth: int, explicit: bool, endian: str, end: int) -> None:
        """Walk elements until ``end``: a byte offset, ``_TO_EOF`` or ``_TO_DELIMITER``."""
        src = self.src
        while True:
            if end == _TO_EOF:
                if src.at_end():
                    return
            elif end >= 0 and src.consumed >= end:
                if src.consumed != end:
                    raise MalformedDataset("item length disagrees with its contents")
                return
            tag, vr, length = self.header(explicit, endian)
            if tag == _ITEM_END:
                if end != _TO_DELIMITER:
                    raise MalformedDataset("unexpected item delimiter")
                return
            if tag in (_ITEM, _SEQ_END):
                raise MalformedDataset("unexpected item tag in a dataset")
            if length == _UNDEFINED:
                self.undefined(tag, vr, depth, explicit, endian)
                continue
            if end >= 0 and length > end - src.consumed:
                raise MalformedDataset("item length disagrees with its contents")
            if depth == 0 and tag in WANTED:
                if length > 128:
                    raise MalformedDataset("a UID element is too long")
                if WANTED[tag] in self.found:
                    # Readers differ on which copy counts (DCMTK, and so Orthanc, keep the
                    # first): the instance could be stored under another UID than checked.
                    name = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
                    raise MalformedDataset(f"element {name} appears twice")
                value = src.read(length).decode("ascii", "replace")
                self.found[WANTED[tag]] = value.rstrip("\x00 ").strip()
                if self.stop_when_found and len(self.found) == len(WANTED):
                    raise _Found
            elif vr == b"SQ":
                self.defined_sequence(length, depth, explicit, endian)
            elif vr in (b"UN", None) and self.holds_items(tag, length):
                # Implicit VR, or a UN: a sequence is told by the dictionary or by its first item
                # tag; either way it is implicit VR little endian (PS3.5 6.2.2).
                self.defined_sequence(length, depth, False, "<")
            else:
                src.skip(length)

    def holds_items(self, tag: int, length: int) -> bool:
        """Whether an element of unknown VR is a sequence (checked with its first bytes)."""
        if length < 8:
            return False
        if tag in _SQ_TAGS:
            return True
        if tag in DicomDictionary:  # the standard says what it is, and it is not a sequence
            return False
        return self.src.peek(4) == _ITEM_LE

    def enter_sequence(self, depth: int) -> None:
        if depth >= self.max_depth:
            raise LimitExceeded(f"sequences nested deeper than {self.max_depth} levels")

    def item(self, length: int, depth: int, explicit: bool, endian: str, limit: int) -> None:
        """Walk one item of a sequence whose own contents end at ``limit`` (or -1: unknown)."""
        src = self.src
        if length == _UNDEFINED:
            self.dataset(depth + 1, explicit, endian, _TO_DELIMITER)
            return
        if limit >= 0 and length > limit - src.consumed:
            raise MalformedDataset("item longer than its sequence")
        self.dataset(depth + 1, explicit, endian, src.consumed + length)

    def defined_sequence(self, length: int, depth: int, explicit: bool, endian: str) -> None:
        self.enter_sequence(depth)
        end = self.src.consumed + length
        while self.src.consumed < end:
            tag, _, item_length = self.header(False, endian)
            if tag != _ITEM:
                raise MalformedDataset("sequence holds something other than items")
            self.item(item_length, depth, explicit, endian, end)
        if self.src.consumed != end:
            raise MalformedDataset("sequence length disagrees with its items")

    def undefined(
        self, tag: int, vr: bytes | None, depth: int, explicit: bool, endian: str
    ) -> None:
        if tag == _PIXEL_DATA and vr in (b"OB", b"OW", None):
            # Encapsulated pixel data: fragments until the sequence delimiter.
            while True:
                item_tag, _, length = self.header(False, endian)
                if item_tag == _SEQ_END:
                    return
                if item_tag != _ITEM or length == _UNDEFINED:
                    raise MalformedDataset("malformed encapsulated pixel data")
                self.src.skip(length)
        if vr not in (b"SQ", b"UN", None):
            raise MalformedDataset("undefined length on an element that cannot have one")
        self.enter_sequence(depth)
        # A UN of undefined length holds an implicit VR little endian sequence (PS3.5 6.2.2).
        inner_explicit, inner_endian = (False, "<") if vr == b"UN" else (explicit, endian)
        while True:
            item_tag, _, length = self.header(False, inner_endian)
            if item_tag == _SEQ_END:
                return
            if item_tag != _ITEM:
                raise MalformedDataset("sequence holds something other than items")
            self.item(length, depth, inner_explicit, inner_endian, -1)


@functools.lru_cache(maxsize=64)
def _encoding(transfer_syntax: str) -> tuple[bool, bool, bool]:
    """(deflated, explicit VR, little endian); an unknown syntax is read as explicit LE."""
    uid = UID(transfer_syntax)
    known = uid.is_transfer_syntax
    deflated = (uid.is_deflated if known else False) or uid in _DEFLATED_JPIP
    explicit = not uid.is_implicit_VR if known else True
    little = uid.is_little_endian if known else True
    return deflated, explicit, little


def scan_dataset(
    fp: BinaryIO, transfer_syntax: str, limits: ScanLimits | None = None
) -> DatasetSummary:
    """Walk the dataset that starts at fp's position, encoded in transfer_syntax.

    Raises MalformedDataset if it is incomplete or malformed, LimitExceeded (a kind of it) if
    it is beyond ``limits`` (``ScanLimits()`` when not given).
    """
    deflated, explicit, little = _encoding(transfer_syntax)
    limits = limits or ScanLimits()
    source = _Source(fp, deflated, limits)
    if source.at_end():
        raise MalformedDataset("dataset is empty")
    walker = _Walker(source, explicit, little, limits)
    try:
        walker.dataset(0, explicit, walker.endian, _TO_EOF)
    except struct.error as exc:  # pragma: no cover - reads are exact, kept as a guard
        raise MalformedDataset(f"dataset is malformed: {exc}") from exc
    return walker.summary(source.file_bytes)


class _Found(Exception):
    """Every wanted UID has been read; the rest of the dataset is not needed."""


def scan_header(
    fp: BinaryIO, transfer_syntax: str, limits: ScanLimits | None = None
) -> DatasetSummary | None:
    """The UIDs from the start of a dataset that may still be arriving; None if not all there.

    Reads only as far as the last wanted UID (they precede the pixel data), so a prefix of a
    large instance is enough. A prefix that ends earlier, or that is malformed, gives None.
    """
    deflated, explicit, little = _encoding(transfer_syntax)
    limits = limits or ScanLimits()
    try:
        walker = _Walker(_Source(fp, deflated, limits), explicit, little, limits)
        walker.stop_when_found = True
        walker.dataset(0, explicit, walker.endian, _TO_EOF)
    except _Found:
        return walker.summary(0)
    except (MalformedDataset, struct.error, zlib.error):
        return None
    return None


def part10_dataset_offset(fp: BinaryIO) -> int:
    """Return the offset of the dataset in a Part-10 file (after preamble and file meta)."""
    fp.seek(0)
    head = fp.read(132)
    if len(head) != 132 or head[128:] != b"DICM":
        raise MalformedDataset("not a Part-10 file")
    # The group length, when present, ends the meta: a dataset may itself start with group
    # 0002 elements (a sender's mistake) and those belong to the dataset as received.
    first = fp.read(12)
    if len(first) == 12 and first[:6] == b"\x02\x00\x00\x00UL" and first[6:8] == b"\x04\x00":
        (group_length,) = struct.unpack("<L", first[8:])
        return 132 + 12 + int(group_length)
    fp.seek(132)
    while True:
        raw = fp.read(8)
        if len(raw) < 8:
            return fp.tell() - len(raw)
        group = struct.unpack("<H", raw[:2])[0]
        if group != 0x0002:
            fp.seek(-8, io.SEEK_CUR)
            return fp.tell()
        vr = raw[4:6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack("<L", fp.read(4))
        else:
            (length,) = struct.unpack("<H", raw[6:])
        fp.seek(length, io.SEEK_CUR)
