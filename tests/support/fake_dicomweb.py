"""A scripted DICOMweb server for outcomes Orthanc cannot produce (409, 429, 5xx, partials).

It parses each STOW-RS body (multipart/related of Part-10 instances) so a test can check what
was sent, and answers with whatever the test's responder returns.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from typing import Any

import pydicom


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    instances: list[pydicom.Dataset] = field(default_factory=list)
    reply_status: int = 0

    @property
    def sop_uids(self) -> list[str]:
        return [str(ds.SOPInstanceUID) for ds in self.instances]


@dataclass
class Reply:
    status: int
    body: Any = None  # dict → JSON, str → text, None → empty
    delay: float = 0.0


Responder = Callable[[Recorded], Reply]


def referenced(uids: list[str]) -> dict[str, Any]:
    return {
        "00081199": {
            "vr": "SQ",
            "Value": [{"00081155": {"vr": "UI", "Value": [uid]}} for uid in uids],
        }
    }


def failed(uids: list[str], reason: int, stored: list[str] | None = None) -> dict[str, Any]:
    body = referenced(stored or []) if stored else {}
    body["00081198"] = {
        "vr": "SQ",
        "Value": [
            {
                "00081155": {"vr": "UI", "Value": [uid]},
                "00081197": {"vr": "US", "Value": [reason]},
            }
            for uid in uids
        ],
    }
    return body


def accept_all(request: Recorded) -> Reply:
    return Reply(200, referenced(request.sop_uids))


def parse_multipart(content_type: str, body: bytes) -> list[pydicom.Dataset]:
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    datasets = []
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        datasets.append(pydicom.dcmread(BytesIO(payload), force=True))
    return datasets


class FakeDicomWeb:
    def __init__(self, responder: Responder = accept_all) -> None:
        self.responder = responder
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorded = Recorded(self.command, self.path, dict(self.headers), body)
                content_type = self.headers.get("Content-Type", "")
                if self.command == "POST" and content_type.startswith("multipart/related"):
                    recorded.instances = parse_multipart(content_type, body)
                with outer._lock:
                    outer.requests.append(recorded)
                reply = outer.responder(recorded)
                recorded.reply_status = reply.status
                if reply.delay:
                    time.sleep(reply.delay)
                if isinstance(reply.body, dict):
                    data, kind = json.dumps(reply.body).encode(), "application/dicom+json"
                elif isinstance(reply.body, str):
                    data, kind = reply.body.encode(), "text/plain"
                else:
                    data, kind = b"", "text/plain"
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_POST = _handle
            do_DELETE = _handle
            do_GET = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/dicomWeb"

    def start(self) -> FakeDicomWeb:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def posts(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST"]
