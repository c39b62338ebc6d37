"""Content limits of the dataset scan, and the errors it raises.

Each limit is a field of ``ScanLimits`` with a documented default; the receiver refuses an
instance beyond one with a failure status whose comment is the error's message, which names
the limit and never a value from the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

_MIB = 1 << 20
_GIB = 1 << 30
# The inflate ratio is judged once this much has been inflated: a small dataset's deflate
# header and tables would otherwise count against it.
RATIO_AFTER = 16 * _MIB
# Each nesting level costs the scan two Python frames; this keeps any configured depth far
# below the interpreter's recursion limit.
_DEPTH_CEILING = 128


class MalformedDataset(ValueError):
    """The bytes are not a complete, well-formed DICOM dataset."""


class LimitExceeded(MalformedDataset):
    """The dataset is beyond a limit of ``ScanLimits``; the message names the limit only."""


@dataclass(frozen=True, slots=True)
class ScanLimits:
    """What the scan refuses, whatever the dataset's structure; 0 turns a size limit off."""

    max_depth: int = 16
    """Sequence nesting depth: a sequence in the top-level dataset is level 1. Defined- and
    undefined-length sequences and items count alike, as do sequences inside a UN element.
    Real datasets rarely nest beyond 6-8 levels (structured report content trees, enhanced
    multi-frame functional groups); Orthanc 1.10's DICOMweb upload crashes at about 48 and
    each DICOM store parses nesting recursively, so 16 leaves room on both sides."""

    max_inflated_bytes: int = 4 * _GIB
    """Bytes a deflated dataset may inflate to. An element's length field holds at most
    4 GiB - 2, so no dataset with native pixel data legitimately needs more; deflated
    transfer syntaxes carry reports, waveforms and modest images far below it."""

    max_inflate_ratio: int = 200
    """Inflated bytes per deflated byte, judged after the first 16 MiB of output. Image and
    report content deflates 2-20:1; hundreds to one means a run of one repeated byte (deflate
    tops out near 1032:1), so this stops a decompression bomb within milliseconds rather than
    after minutes of CPU spent inflating it to ``max_inflated_bytes``."""

    max_instance_bytes: int = 0
    """Bytes of the dataset as received (deflated bytes, when deflated). Off by default: the
    receiver streams to disk in bounded memory, so the right cap is the DICOM store's own
    upload limit, which the operator knows. ``check_instance_bytes`` lets the network layer
    refuse while the dataset is still arriving."""

    def __post_init__(self) -> None:
        if not 1 <= self.max_depth <= _DEPTH_CEILING:
            raise ValueError(f"max_depth must be between 1 and {_DEPTH_CEILING}")
        if min(self.max_inflated_bytes, self.max_inflate_ratio, self.max_instance_bytes) < 0:
            raise ValueError("size limits must be 0 (off) or positive")


def size_text(n: int) -> str:
    """4294967296 -> '4 GiB'; sizes that are not whole MiB or GiB in bytes."""
    for unit, name in ((_GIB, "GiB"), (_MIB, "MiB")):
        if n >= unit and n % unit == 0:
            return f"{n // unit} {name}"
    return f"{n} bytes"


def check_instance_bytes(size: int, limits: ScanLimits) -> None:
    """Raise LimitExceeded if a dataset of ``size`` bytes (so far) is over the instance limit."""
    if limits.max_instance_bytes and size > limits.max_instance_bytes:
        raise LimitExceeded(f"instance larger than {size_text(limits.max_instance_bytes)}")
