"""Instances per second on one association, cloud receiver, by acknowledgement mode.

The receiver writes to fake-gcs-server and publishes to the test Pub/Sub server, each behind
a TCP proxy that delays every request by a configurable latency (default 40 ms storage,
20 ms publish), the way a real region's round trips would. DCMTK ``storescu`` sends the
workload over one association; its wall time is the figure.

- ``store``: reply after the object is in Cloud Storage and Pub/Sub accepted the message.
- ``spool``: reply after the instance is fsynced on the receiver's volume; shipping runs
  behind (its completion time is reported too).

The reference, measured in the same run, is ``store`` with no added latency.

    .venv/bin/python benchmarks/bench_cloud_ack.py [--count 300] [--storage-ms 40] \
        [--publish-ms 20] [--workdir /tmp/dicom-ingest-bench-cloud]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from google.cloud import pubsub_v1  # noqa: E402
from support.datasets import ct_dataset, write  # noqa: E402
from support.gcs import running_fake_gcs  # noqa: E402
from support.net import wait_until  # noqa: E402
from support.pubsub_server import PubSubServer  # noqa: E402

from dicom_ingest.cloud import CloudReceiver, CloudReceiverConfig  # noqa: E402
from receiver.config import ReceiverConfig  # noqa: E402

PROJECT = "bench-project"


class LatencyProxy:
    """Forwards TCP to ``target``; each request (a burst after idleness) waits ``delay``."""

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self._target = target
        self._delay = delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, dest: socket.socket, delayed: bool) -> None:
        last = 0.0
        try:
            while data := source.recv(1 << 16):
                now = time.monotonic()
                if delayed and self._delay and now - last > 0.002:
                    time.sleep(self._delay)  # the first bytes of a new request
                dest.sendall(data)
                last = time.monotonic()
        except OSError:
            pass
        finally:
            for sock in (source, dest):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()


class ProxyProcess:
    """A ``LatencyProxy`` in a process of its own, so its copying does not compete with the
    receiver for this process's interpreter lock."""

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        parent, child = multiprocessing.Pipe()
        self._process = multiprocessing.Process(
            target=_serve_proxy, args=(target, delay, child), daemon=True
        )
        self._process.start()
        self.port = int(parent.recv())

    def close(self) -> None:
        self._process.terminate()
        self._process.join(10)


def _serve_proxy(target: tuple[str, int], delay: float, pipe: Any) -> None:
    proxy = LatencyProxy(target, delay)
    pipe.send(proxy.port)
    threading.Event().wait()


def make_workload(directory: Path, count: int, frames: int = 0) -> list[Path]:
    """``count`` small CT instances, or with ``frames`` one multi-frame of 8 MiB a frame."""
    directory.mkdir(parents=True, exist_ok=True)
    files = sorted(directory.glob("*.dcm"))
    if len(files) == count:
        return files
    for old in files:
        old.unlink()
    study, series = ct_dataset().StudyInstanceUID, ct_dataset().SeriesInstanceUID
    if frames:
        ds = ct_dataset(study, series, rows=2048, columns=2048, frames=frames)
        return [write(ds, directory / "large.dcm")]
    return [
        write(ct_dataset(study, series, rows=140, columns=140, seed=n), directory / f"{n:05}.dcm")
        for n in range(count)
    ]


def run_mode(
    mode: str, files: list[Path], workdir: Path, bucket: str, topic: str, early: int
) -> tuple[float, float | None]:
    """(seconds storescu took, seconds until everything was shipped in spool mode)."""
    spool = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=workdir))
    config = CloudReceiverConfig(
        spool_dir=spool,
        receiver=ReceiverConfig(dimse_port=0, dimse_bind="127.0.0.1"),
        bucket=bucket,
        topic=topic,
        ack_after=mode,
        early_upload_bytes=early,
    )
    receiver = CloudReceiver(config)
    receiver.start()
    try:
        started = time.monotonic()
        result = subprocess.run(
            ["storescu", "-xe", "-R", "-nh", "-aec", "IMPORTADAPTER", "127.0.0.1",
             str(receiver.receiver.port), *map(str, files)],
            capture_output=True, text=True, check=False, env={**os.environ, "TCP_NODELAY": "1"},
        )  # fmt: skip
        sent = time.monotonic() - started
        if result.returncode != 0:
            raise RuntimeError(f"storescu failed: {result.stderr[-1000:]}")
        shipped = None
        if mode == "spool":

            def drained() -> bool:
                stats = receiver.queue.stats()
                return stats.pending + stats.in_flight + stats.retrying == 0

            wait_until(drained, 600, "shipping")
            shipped = time.monotonic() - started
            if receiver.queue.stats().dead:
                raise RuntimeError("some instances could not be shipped")
        return sent, shipped
    finally:
        receiver.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--storage-ms", type=float, default=40.0)
    parser.add_argument("--publish-ms", type=float, default=20.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dicom-ingest-bench-cloud"))
    parser.add_argument(
        "--large-frames",
        type=int,
        default=0,
        help="instead: one instance of this many 8 MiB frames; compares store mode with and"
        " without uploading while the instance arrives",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.large_frames:
        files = make_workload(args.workdir / "large", 1, args.large_frames)
    else:
        files = make_workload(args.workdir / "workload", args.count)
    size = sum(f.stat().st_size for f in files)
    print(f"{len(files)} instances, {size / len(files) / 1024:.0f} KiB each, one association")

    rows = []
    with running_fake_gcs(args.workdir) as gcs, PubSubServer() as pubsub:
        gcs_port = int(gcs.url.rsplit(":", 1)[1])
        pubsub_port = int(pubsub.host.rsplit(":", 1)[1])
        latency = (args.storage_ms, args.publish_ms)
        settings = [("store", 0.0, 0.0, 0), ("store", *latency, 0), ("spool", *latency, 0)]
        if args.large_frames:  # the reference: no early upload, no added latency
            settings = [("store", 0.0, 0.0, 0), ("store", *latency, 0),
                        ("store", *latency, 32 << 20)]  # fmt: skip
        for n, (mode, storage_ms, publish_ms, early) in enumerate(settings):
            gcs_proxy = ProxyProcess(("127.0.0.1", gcs_port), storage_ms / 1000)
            pubsub_proxy = ProxyProcess(("127.0.0.1", pubsub_port), publish_ms / 1000)
            os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{gcs_proxy.port}"
            os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{pubsub_proxy.port}"
            topic = f"projects/{PROJECT}/topics/bench-{n}"
            publisher = pubsub_v1.PublisherClient()
            publisher.create_topic(name=topic)
            bucket = gcs.new_bucket("bench")
            sent, shipped = run_mode(mode, files, args.workdir, bucket, topic, early)
            stored = len(list(gcs.client.list_blobs(bucket)))
            if stored != len(files):
                raise RuntimeError(f"{mode}: {stored} objects in the bucket, expected {len(files)}")
            if len(pubsub.published(topic)) < len(files):
                raise RuntimeError(f"{mode}: fewer messages than instances")
            label = f"{mode}+early" if early else mode
            rows.append((label, storage_ms, publish_ms, len(files) / sent, shipped, sent))
            gcs_proxy.close()
            pubsub_proxy.close()

    reference = rows[0][3]
    header = f"{'mode':11} {'storage':>8} {'publish':>8} {'inst/s':>8} {'ratio':>6} {'wall':>7}"
    print(f"\n{header}  shipped")
    for mode, storage_ms, publish_ms, rate, shipped, sent in rows:
        done = f"{shipped:.1f} s" if shipped is not None else "-"
        print(
            f"{mode:11} {storage_ms:6.0f}ms {publish_ms:6.0f}ms {rate:8.2f} "
            f"{rate / reference:6.2f} {sent:6.2f}s  {done}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
