"""A STOW-RS request body, streamed from open objects with a known total length."""

from __future__ import annotations

import secrets
from typing import BinaryIO

CONTENT_TYPE = "application/dicom"


def new_boundary() -> str:
    return f"dicom-ingest-{secrets.token_hex(16)}"


def content_type(boundary: str) -> str:
    return f'multipart/related; type="{CONTENT_TYPE}"; boundary={boundary}'


class MultipartBody:
    """A read-only file-like object yielding ``multipart/related`` with one part per object.

    ``len()`` gives the exact byte count, so HTTP clients send a Content-Length and stream
    the parts with bounded memory.
    """

    def __init__(self, parts: list[tuple[BinaryIO, int]], boundary: str) -> None:
        head = f"--{boundary}\r\nContent-Type: {CONTENT_TYPE}\r\n\r\n".encode()
        self._segments: list[bytes | tuple[BinaryIO, int]] = []
        for handle, size in parts:
            self._segments += [(b"\r\n" if self._segments else b"") + head, (handle, size)]
        self._segments.append(f"\r\n--{boundary}--\r\n".encode())
        self._length = sum(s if isinstance(s, int) else _seg_len(s) for s in self._segments)
        self._index = 0
        self._offset = 0

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        out: list[bytes] = []
        want = self._length if size is None or size < 0 else size
        while want > 0 and self._index < len(self._segments):
            segment = self._segments[self._index]
            if isinstance(segment, bytes):
                chunk = segment[self._offset : self._offset + want]
            else:
                handle, seg_size = segment
                chunk = handle.read(min(want, seg_size - self._offset))
                if not chunk and self._offset < seg_size:
                    raise OSError("object ended before its recorded size")
            self._offset += len(chunk)
            want -= len(chunk)
            out.append(chunk)
            if self._offset >= _seg_len(segment):
                self._index += 1
                self._offset = 0
        return b"".join(out)


def _seg_len(segment: bytes | tuple[BinaryIO, int]) -> int:
    return len(segment) if isinstance(segment, bytes) else segment[1]
