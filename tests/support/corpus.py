"""A varied corpus from pydicom's bundled test files, each given fresh UIDs.

pydicom's files share SOP Instance UIDs between transfer-syntax variants of the same image,
so each copy gets new Study/Series/SOP Instance UIDs (values only; pixel data and transfer
syntax are left as they are).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.uid import generate_uid

_MAX_SIZE = 20_000_000


def build_corpus(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sources = sorted(set(get_testdata_files("*")))
        for index, source in enumerate(sources):
            # Deliberately broken files are bad input, tested elsewhere.
            if Path(source).stat().st_size > _MAX_SIZE or "truncated" in Path(source).name:
                continue
            target = directory / f"{index:03d}-{Path(source).stem}.dcm"
            if _copy(source, target):
                written.append(target)
    return written


def corpus_files(directory: Path, names: Iterable[str]) -> dict[str, Path]:
    """Copies of the named files bundled with pydicom (stems), by name; never downloads."""
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            source = get_testdata_file(f"{name}.dcm", download=False)
            if not isinstance(source, str) or not _copy(source, directory / f"{name}.dcm"):
                raise ValueError(f"{name}: not a usable pydicom test file")
            written[name] = directory / f"{name}.dcm"
    return written


def _copy(source: str, target: Path) -> bool:
    """Write source to target with fresh UIDs; False if it is not a usable storage instance."""
    try:
        ds = pydicom.dcmread(source)
    except Exception:
        return False
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        return False
    if not all(
        k in ds for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
    ):
        return False
    if not str(ds.SOPClassUID).startswith("1.2.840.10008.5.1.4."):
        return False
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    try:
        ds.save_as(target, enforce_file_format=True)
        pydicom.dcmread(target)
    except Exception:
        target.unlink(missing_ok=True)
        return False
    return True
