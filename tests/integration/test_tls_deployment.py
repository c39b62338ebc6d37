"""DICOM TLS as the Kubernetes manifests deploy it: `dicom-ingest receive` run with the exact
args and env of the rendered receiver Deployment, its TLS Secret volume laid out as the kubelet
projects one, and DCMTK's storescu sending over TLS.

Only what cannot be the same on a test machine is swapped: the ports (free ones), the bucket and
topic (the emulators'), the spool directory and the mount path (temporary directories), and the
receiver binds 127.0.0.1 only.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from infra import k8s_render
from pydicom.uid import ExplicitVRLittleEndian
from support.cloud import CloudStack
from support.datasets import ct_dataset, write
from support.fake_dicomweb import FakeDicomWeb
from support.net import free_port, on_free_port, port_open, wait_until
from support.tls import Authority, Issued, dcmtk

from ingest.contracts.message import decode

pytestmark = pytest.mark.slow  # a receiver process per test, DCMTK, the emulators

Stacks = Callable[..., CloudStack]
TEMPLATE = k8s_render.K8S_DIR / "receiver-deployment.yaml.tftpl"


def project_secret_volume(mount: Path, files: dict[str, bytes]) -> None:
    """Write files as the kubelet's atomic writer does for a Secret (or projected) volume: a
    new timestamped directory, the ``..data`` link switched to it in one rename, and each file
    a link through ``..data``. A second call is a rotation: every file changes at once."""
    mount.mkdir(exist_ok=True)
    old = os.readlink(mount / "..data") if (mount / "..data").is_symlink() else None
    stamp = mount / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    stamp.mkdir()
    for name, content in files.items():
        (stamp / name).write_bytes(content)
        (stamp / name).chmod(0o440)
    (mount / "..data_tmp").symlink_to(stamp.name)
    os.replace(mount / "..data_tmp", mount / "..data")
    for name in files:
        if not (mount / name).is_symlink():
            (mount / name).symlink_to(f"..data/{name}")
    if old is not None:
        for stale in (mount / old).iterdir():
            stale.unlink()
        (mount / old).rmdir()


@dataclass
class Deployed:
    """The rendered pod's receiver as a process, and where its ports ended up."""

    process: subprocess.Popen[str]
    ports: dict[str, int]  # by container port name: dimse, dicom-tls, health
    lines: list[str]
    reader: threading.Thread

    def output(self) -> str:
        return "".join(self.lines)

    def close(self) -> None:
        """Kill the process if it still runs; collect its output."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)
        self.reader.join(10)
        if self.process.stderr is not None:
            self.process.stderr.close()


def _pod(values: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = yaml.safe_load(k8s_render.render(TEMPLATE, values))
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def _secret_files(pod: dict[str, Any], secrets: dict[str, dict[str, bytes]]) -> dict[str, bytes]:
    """The files the pod's TLS volume projects, from the Secrets' data."""
    (volume,) = [v for v in pod["volumes"] if v["name"] == "tls"]
    return {
        item["path"]: secrets[source["secret"]["name"]][item["key"]]
        for source in volume["projected"]["sources"]
        for item in source["secret"]["items"]
    }


def _ready(port: int, path: str) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}{path}", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def run_as_deployed(
    container: dict[str, Any], stack: CloudStack, mount: Path, spool: Path
) -> Deployed:
    """Start ``dicom-ingest receive`` with the container's args and env, swapping only ports,
    bucket, topic, spool and mount path; wait until its readiness probe answers 200."""
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    flag_of_port = {2575: "dimse_port", 2762: "tls_port", 8080: "health_port"}
    probe = container["readinessProbe"]["httpGet"]

    def start(first: int) -> Deployed:
        ports = {name: first if name == "health" else free_port() for name in named}
        by_flag = {flag_of_port[named[name]]: port for name, port in ports.items()}
        swapped = {"bucket": stack.bucket, "topic": stack.topic, "spool_dir": str(spool)}
        swapped |= {flag: str(port) for flag, port in by_flag.items()}
        args = []
        for arg in container["args"]:
            flag, value = arg[2:].split("=", 1)
            value = swapped.get(flag, value).replace(k8s_render.TLS_MOUNT, str(mount))
            args.append(f"--{flag}={value}")
        env = {e["name"]: e["value"] for e in container["env"]} | {"TMPDIR": str(spool)}
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "dicom-ingest"), "receive", *args,
             "--dimse_bind=127.0.0.1"],
            env={**os.environ, **env}, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        lines: list[str] = []
        assert process.stderr is not None
        stderr = process.stderr
        reader = threading.Thread(target=lambda: lines.extend(stderr), daemon=True)
        reader.start()
        deployed = Deployed(process, ports, lines, reader)

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"the receiver exited:\n{deployed.output()[-3000:]}")
            return _ready(ports[probe["port"]], probe["path"])

        try:
            wait_until(ready, 60, "the readiness probe")
        except (RuntimeError, TimeoutError):
            deployed.close()
            raise
        return deployed

    return on_free_port(start)


def stop(deployed: Deployed) -> None:
    """SIGTERM, as the kubelet stops the pod: the receiver drains and exits 0."""
    if deployed.process.poll() is None:
        deployed.process.send_signal(signal.SIGTERM)
    code = deployed.process.wait(60)
    deployed.close()
    assert code == 0, deployed.output()[-3000:]


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Authority, Issued, Issued]:
    """The site's CA, the receiver's certificate (localhost, 127.0.0.1) and a PACS's."""
    directory = tmp_path / "pki"
    directory.mkdir()
    authority = Authority(directory)
    server = authority.issue("server", "localhost", server=True)
    return authority, server, authority.issue("pacs", "PACS1")


def _secrets(authority: Authority, server: Issued, values: dict[str, str]) -> dict[str, Any]:
    """The Secrets the manifest names, as cert-manager (or kubectl create secret tls) makes
    them: the server's kubernetes.io/tls Secret and a Secret with the client CA bundle."""
    return {
        values["tls_secret"]: {
            "tls.crt": server.cert.read_bytes(),
            "tls.key": server.key.read_bytes(),
        },
        values["tls_client_ca_secret"]: {"ca.crt": authority.cert.read_bytes()},
    }


@dataclass
class Site:
    """One rendered variant running: the receiver, its emulators, its Secret volume."""

    deployed: Deployed
    stack: CloudStack
    container: dict[str, Any]
    renew: Callable[[Issued], None]  # the Secret gets a new server certificate


@pytest.fixture
def deploy(
    fake_dicomweb: FakeDicomWeb,
    cloud_stacks: Stacks,
    pki: tuple[Authority, Issued, Issued],
    tmp_path: Path,
) -> Iterator[Callable[[str], Site]]:
    """Render a variant of the Deployment and run its receiver with the test PKI's Secrets."""
    authority, server, _ = pki
    started: list[Deployed] = []

    def start(variant: str) -> Site:
        values = k8s_render.variants(TEMPLATE)[variant]
        pod, container = _pod(values)
        mount = tmp_path / "tls"

        def renew(certificate: Issued) -> None:
            secrets = _secrets(authority, certificate, values)
            project_secret_volume(mount, _secret_files(pod, secrets))

        renew(server)
        stack = cloud_stacks(fake_dicomweb.url, push=False)
        deployed = run_as_deployed(container, stack, mount, tmp_path / "spool")
        started.append(deployed)
        return Site(deployed, stack, container, renew)

    yield start
    for deployed in started:
        deployed.close()


@pytest.mark.parametrize("variant", ["mtls", "mtls-only"])
def test_a_pacs_stores_over_tls_to_the_receiver_as_deployed(
    variant: str,
    deploy: Callable[[str], Site],
    pki: tuple[Authority, Issued, Issued],
    tmp_path: Path,
) -> None:
    authority, _, pacs = pki
    site = deploy(variant)
    stack, deployed, container = site.stack, site.deployed, site.container
    tap = stack.tap()

    ds = ct_dataset(seed=61)
    sent = dcmtk("storescu", deployed.ports["dicom-tls"], pacs, authority.cert,
                 write(ds, tmp_path / "ct.dcm", ExplicitVRLittleEndian))  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    [message] = stack.pull(tap)
    assert decode(message.message.data).sop_instance_uid == ds.SOPInstanceUID
    assert any(key.endswith(f"/{ds.SOPInstanceUID}.dcm") for key in stack.gcs.objects(stack.bucket))

    # mutual TLS: a sender without a client certificate is refused
    anonymous = dcmtk("echoscu", deployed.ports["dicom-tls"], None, authority.cert)
    assert anonymous.returncode != 0
    if variant == "mtls-only":
        assert "dimse" not in deployed.ports
        assert "--tls_only=true" in container["args"]
    else:
        # the plain port serves beside it (the readiness C-ECHO goes there)
        assert port_open(deployed.ports["dimse"])
    stop(deployed)
    assert "TLS handshake failed" in deployed.output()


def _served_certificate(port: int, authority: Authority, client: Issued) -> bytes:
    context = ssl.create_default_context(cafile=str(authority.cert))
    context.load_cert_chain(client.cert, client.key)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        cert = sock.getpeercert(binary_form=True)
        assert cert is not None
        return cert


def test_a_rotated_secret_is_served_without_a_restart(
    deploy: Callable[[str], Site],
    pki: tuple[Authority, Issued, Issued],
    tmp_path: Path,
) -> None:
    """cert-manager renews the Secret; the kubelet switches the volume's files at once; the
    receiver serves the new certificate to the next connection, and a PACS still stores."""
    authority, _, pacs = pki
    site = deploy("mtls")
    deployed = site.deployed
    port = deployed.ports["dicom-tls"]
    first = _served_certificate(port, authority, pacs)

    renewed = authority.issue("renewed", "localhost", server=True)
    site.renew(renewed)
    wanted = ssl.PEM_cert_to_DER_cert(renewed.cert.read_text())
    assert wanted != first
    switched = time.monotonic()
    wait_until(lambda: _served_certificate(port, authority, pacs) == wanted, 30, "the new cert")
    took = time.monotonic() - switched
    assert took < 10, f"the renewed certificate took {took:.1f}s"  # 1 s, on a busy machine

    path = write(ct_dataset(seed=62), tmp_path / "ct.dcm", ExplicitVRLittleEndian)
    sent = dcmtk("storescu", port, pacs, authority.cert, path)
    assert sent.returncode == 0, sent.stderr
    stop(deployed)
    assert "TLS certificate reloaded" in deployed.output()
