"""The cloud-shaped pipeline on one machine: fake-gcs-server, a Pub/Sub server, the uploader
function served by functions-framework (as its container runs it), and the cloud receiver.

Pub/Sub pushes to the uploader exactly as it would on Cloud Run: the push envelope, POSTed,
acknowledged on 2xx, redelivered with backoff otherwise, dead-lettered after the
subscription's maximum delivery attempts.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from google.cloud import pubsub_v1
from google.protobuf import duration_pb2

from dicom_ingest.cloud import CloudReceiver, CloudReceiverConfig
from receiver.config import ReceiverConfig

from .gcs import FakeGcs
from .net import on_free_port, port_open, wait_until

PROJECT = "test-project"
ROOT = Path(__file__).resolve().parents[2]


def topic_path(name: str) -> str:
    return f"projects/{PROJECT}/topics/{name}"


def subscription_path(name: str) -> str:
    return f"projects/{PROJECT}/subscriptions/{name}"


class UploaderFunction:
    """``functions-framework --target=upload`` as a process, configured by environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.port = on_free_port(lambda port: self._start(port, env))

    def _start(self, port: int, env: dict[str, str]) -> int:
        """Start on that port and wait until it listens; RuntimeError if it exits first."""
        self.lines.clear()
        executable = Path(sys.executable).parent / "functions-framework"
        self.process = subprocess.Popen(
            [
                str(executable),
                "--source", str(ROOT / "dicom_ingest" / "function.py"),
                "--target", "upload",
                "--signature-type", "cloudevent",
                "--host", "127.0.0.1",
                "--port", str(port),
            ],
            env={**os.environ, "DICOM_INGEST_LOG_FORMAT": "json", **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            wait_until(lambda: self._alive() and port_open(port), 30, "uploader function")
        except TimeoutError:
            self.process.kill()
            self.process.wait(10)
            raise
        return port

    def _alive(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"uploader exited:\n{self.output()}")
        return True

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(5)
        if self.process.stderr is not None:
            self.process.stderr.close()


@dataclasses.dataclass
class CloudStack:
    """Topics, subscriptions, a bucket, the uploader; receivers started on demand."""

    pubsub_host: str
    gcs: FakeGcs
    dicomweb: str
    workdir: Path
    uploader_env: dict[str, str] = dataclasses.field(default_factory=dict)
    max_delivery_attempts: int = 5
    push: bool = True
    push_oidc: dict[str, str] | None = None  # service_account_email, audience
    name: str = "instances"

    def __post_init__(self) -> None:
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()
        self.topic = topic_path(self.name)
        self.dead_topic = topic_path(f"{self.name}-dead-letter")
        self.oversize_topic = topic_path(f"{self.name}-oversize")
        self.push_subscription = subscription_path(f"{self.name}-push")
        self.dead_subscription = subscription_path(f"{self.name}-dead-letter")
        self.oversize_subscription = subscription_path(f"{self.name}-oversize")
        for topic in (self.topic, self.dead_topic, self.oversize_topic):
            self.publisher.create_topic(name=topic)
        self.bucket = self.gcs.new_bucket()
        self.receivers: list[CloudReceiver] = []
        self.uploader: UploaderFunction | None = None
        self.uploader_environment = {
            "DICOM_INGEST_DICOMWEB_ADDRESS": self.dicomweb,
            "DICOM_INGEST_DEAD_LETTER_TOPIC": self.dead_topic,
            "DICOM_INGEST_OVERSIZE_TOPIC": self.oversize_topic,
            "DICOM_INGEST_HTTP_TIMEOUT": "20",
            **self.uploader_env,
        }
        if self.push:
            host = self.pubsub_host.rsplit(":", 1)[0].strip("[]")
            if host not in ("127.0.0.1", "localhost", "::1"):
                raise RuntimeError(
                    "push tests need a Pub/Sub server on this host: the uploader listens on"
                    f" 127.0.0.1, which PUBSUB_EMULATOR_HOST={self.pubsub_host} cannot reach"
                )
            self.uploader = UploaderFunction(self.uploader_environment)
            self.create_push_subscription(self.push_subscription, self.uploader.url, self.push_oidc)
        for subscription, topic in (
            (self.dead_subscription, self.dead_topic),
            (self.oversize_subscription, self.oversize_topic),
        ):
            self.subscriber.create_subscription(request={"name": subscription, "topic": topic})

    def create_push_subscription(
        self, name: str, endpoint: str, oidc: dict[str, str] | None = None
    ) -> None:
        push_config: dict[str, Any] = {"push_endpoint": endpoint}
        if oidc:
            push_config["oidc_token"] = oidc
        self.subscriber.create_subscription(
            request={
                "name": name,
                "topic": self.topic,
                "ack_deadline_seconds": 60,
                "push_config": push_config,
                "dead_letter_policy": {
                    "dead_letter_topic": self.dead_topic,
                    "max_delivery_attempts": self.max_delivery_attempts,
                },
                "retry_policy": {
                    "minimum_backoff": duration_pb2.Duration(nanos=100_000_000),
                    "maximum_backoff": duration_pb2.Duration(seconds=1),
                },
            }
        )

    def start_receiver(self, **overrides: Any) -> CloudReceiver:
        receiver_fields = {f.name for f in dataclasses.fields(ReceiverConfig)}
        receiver = ReceiverConfig(
            **{
                "dimse_port": 0,
                "dimse_bind": "127.0.0.1",
                "shutdown_grace": 5.0,
                **{k: v for k, v in overrides.items() if k in receiver_fields},
            }
        )
        options = {k: v for k, v in overrides.items() if k not in receiver_fields}
        config = CloudReceiverConfig(
            spool_dir=options.pop("spool_dir", self.workdir / f"spool-{len(self.receivers)}"),
            receiver=receiver,
            bucket=self.bucket,
            topic=self.topic,
            **{"publish_timeout": 5.0, "storage_timeout": 10.0, **options},
        )
        started = CloudReceiver(config)
        started.start()
        self.receivers.append(started)
        return started

    def tap(self) -> str:
        """A pull subscription that sees every message published to the topic."""
        name = f"{self.topic}-tap".replace("/topics/", "/subscriptions/")
        self.subscriber.create_subscription(request={"name": name, "topic": self.topic})
        return name

    def pull(self, subscription: str, max_messages: int = 100) -> list[Any]:
        """Pull and acknowledge what is there (for assertions)."""
        response = self.subscriber.pull(
            request={"subscription": subscription, "max_messages": max_messages}, timeout=10
        )
        received = list(response.received_messages)
        if received:
            self.subscriber.acknowledge(
                request={"subscription": subscription, "ack_ids": [m.ack_id for m in received]}
            )
        return received

    def close(self) -> None:
        for receiver in self.receivers:
            receiver.stop()
        if self.uploader is not None:
            self.uploader.stop()
        self.subscriber.close()
        self.publisher.stop()
        self.publisher.transport.close()
