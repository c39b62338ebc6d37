"""Orthanc with its DICOMweb plugin, started in the foreground on ports from the OS."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import requests

from .net import free_port, on_free_port, wait_until

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


@dataclass
class Orthanc:
    process: subprocess.Popen[bytes]
    http_port: int
    dicom_port: int
    aet: str
    log: BinaryIO

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def instance_count(self) -> int:
        stats = requests.get(f"{self.url}/statistics", timeout=10).json()
        return int(stats["CountInstances"])

    def clear(self) -> None:
        for patient in requests.get(f"{self.url}/patients", timeout=10).json():
            requests.delete(f"{self.url}/patients/{patient}", timeout=30).raise_for_status()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def start_orthanc(workdir: Path, aet: str = "ORTHANC") -> Orthanc:
    if not Path(ORTHANC).exists() or not Path(DICOMWEB_PLUGIN).exists():
        raise RuntimeError("Orthanc with its DICOMweb plugin is required (apt orthanc-dicomweb)")
    workdir.mkdir(parents=True, exist_ok=True)
    # Orthanc takes its ports from its configuration: free ones, again if one was taken.
    return on_free_port(lambda http_port: _start(workdir, aet, http_port, free_port()))


def start_orthanc_on(workdir: Path, http_port: int, aet: str = "ORTHANC") -> Orthanc:
    """Orthanc on a given HTTP port: where a pipeline was pointed before the store existed."""
    workdir.mkdir(parents=True, exist_ok=True)
    return on_free_port(lambda dicom_port: _start(workdir, aet, http_port, dicom_port))


def _start(workdir: Path, aet: str, http_port: int, dicom_port: int) -> Orthanc:
    config = {
        "Name": "dicom-ingest-tests",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "storage"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": aet,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "HttpTimeout": 120,
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "DicomModalities": {},
    }
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(config))
    log = open(workdir / "orthanc.log", "wb")  # noqa: SIM115 - lives as long as the process
    env = {**os.environ, "TCP_NODELAY": "1"}
    process = subprocess.Popen([ORTHANC, str(config_path)], stdout=log, stderr=log, env=env)
    orthanc = Orthanc(process, http_port, dicom_port, aet, log)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited: see {workdir / 'orthanc.log'}")
        try:
            return requests.get(f"{orthanc.url}/system", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_until(ready, 30, "Orthanc HTTP")
    except Exception:
        orthanc.stop()
        raise
    return orthanc
