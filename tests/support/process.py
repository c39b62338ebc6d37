"""``dicom-ingest local`` as a real process: started, awaited, signalled, killed.

It listens on a port the OS picks (``--dimse-port 0``) and says which in its "ready" line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from .net import wait_until


class IngestProcess:
    def __init__(self, spool: Path, dicomweb: str, *extra: str, with_stdout: bool = False) -> None:
        """``with_stdout`` reads stdout into the same lines as stderr; otherwise it is dropped."""
        self.port = 0  # known once the process is ready
        self.lines: list[str] = []
        self._lock = threading.Lock()
        command = [
            sys.executable,
            "-m",
            "dicom_ingest",  # as the dicom-ingest command runs
            "local",
            "--spool_dir",
            str(spool),
            "--dimse-port",  # the kebab-case spelling works too
            "0",
            "--dimse_bind",
            "127.0.0.1",
            "--dicomweb_address",
            dicomweb,
            *extra,
        ]
        env = {
            **os.environ,
            "DICOM_INGEST_MIN_BACKOFF": "0.05",
            "DICOM_INGEST_MAX_BACKOFF": "0.2",
            "DICOM_INGEST_LOG_FORMAT": "json",
        }
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE if with_stdout else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if with_stdout else subprocess.PIPE,
            text=True,
            env=env,
        )
        self._stream = self.process.stdout if with_stdout else self.process.stderr
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._stream is not None
        for line in self._stream:
            with self._lock:
                self.lines.append(line)

    def output(self) -> str:
        with self._lock:
            return "".join(self.lines)

    def wait_ready(self, timeout: float = 30.0) -> IngestProcess:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"dicom-ingest exited early:\n{self.output()}")
            return "ready: accepting associations" in self.output()

        wait_until(ready, timeout, "dicom-ingest ready")
        self.port = self._listening_port()
        return self

    def _listening_port(self) -> int:
        for line in self.output().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if "ready: accepting associations" in str(entry.get("message", "")):
                return int(entry["port"])
        raise RuntimeError(f"no port in the ready line:\n{self.output()}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._reader.join(5)
        if self._stream is not None:
            self._stream.close()
