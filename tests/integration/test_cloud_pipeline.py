"""The cloud-shaped pipeline end to end, with real parts.

dcmsend (or a pynetdicom SCU) → the cloud receiver → fake-gcs-server + a gRPC Pub/Sub server
→ push → the uploader under functions-framework → Orthanc (or a scripted DICOMweb server for
outcomes Orthanc cannot produce). Replay runs through the ``dicom-ingest`` command.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
import requests
from google.cloud import pubsub_v1
from pydicom.dataset import Dataset
from pynetdicom import AE
from support.cloud import CloudStack
from support.corpus import build_corpus
from support.datasets import ct_dataset, write
from support.dimse_raw import C_STORE_RQ, RawAssociation, command_set, dataset_bytes, p_data
from support.fake_dicomweb import FakeDicomWeb, Recorded, Reply, failed, referenced
from support.metrics import scrape
from support.net import free_port, on_free_port, port_open, wait_until
from support.orthanc import Orthanc
from support.receiving import staging_files
from support.stored import assert_same, dcmsend, retrieve

from dicom_ingest import cli
from dicom_ingest.cloud import CloudReceiver
from dicom_ingest.wiring import build_pubsub_handler
from ingest.contracts.message import InstanceMessage, decode
from ingest.contracts.outcome import Outcome
from receiver.shipper import RepublishService
from uploader.config import PubSubConfig, UploaderConfig
from uploader.pull import PullWorker

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"

# Real processes and servers, seconds each: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

Stacks = Callable[..., CloudStack]


def send(receiver: CloudReceiver, *datasets: Dataset, tmp_path: Path) -> list[int]:
    """C-STORE each dataset on one association; the statuses."""
    ae = AE(ae_title="TESTSCU")
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", receiver.receiver.port, ae_title="IMPORTADAPTER")
    assert assoc.is_established
    statuses = []
    for ds in datasets:
        path = write(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm")
        status = assoc.send_c_store(path)
        statuses.append(int(status.Status))
    assoc.release()
    return statuses


def stored_uids(server: FakeDicomWeb) -> set[str]:
    """SOP instances the scripted store answered with success."""
    return {uid for r in server.posts() if r.reply_status == 200 for uid in r.sop_uids}


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on odd values in its test files
def test_corpus_arrives_unchanged(
    orthanc: Orthanc, cloud_stacks: Stacks, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = build_corpus(tmp_path / "corpus")
    sent = {f: pydicom.dcmread(f) for f in files}
    orthanc.clear()
    stack = cloud_stacks(orthanc.dicomweb)
    receiver = stack.start_receiver()

    result = dcmsend(receiver.receiver.port, files)
    assert result.returncode == 0, result.stderr[-2000:]

    wait_until(lambda: orthanc.instance_count() == len(files), 120, "all instances stored")
    objects = stack.gcs.objects(stack.bucket)
    assert len(objects) == len(files)
    for path, ds in sent.items():
        name = f"{path.name}: "
        key = f"dicom/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
        received = pydicom.dcmread(pydicom.filebase.DicomBytesIO(objects[key]))
        got = retrieve(orthanc, ds)
        assert got.file_meta.TransferSyntaxUID == received.file_meta.TransferSyntaxUID, name
        assert_same(received, got, name)
    assert stack.pull(stack.dead_subscription) == []
    # No patient identifiers in the receiver's or the uploader's logs.
    assert stack.uploader is not None
    logs = caplog.text + stack.uploader.output()
    names = {str(ds.get("PatientName", "")) for ds in sent.values()}
    ids = {str(ds.get("PatientID", "")) for ds in sent.values()}
    for value in sorted(v for v in names | ids if len(v) >= 4):
        assert value not in logs, value


def test_messages_carry_pointers_and_no_patient_data(
    fake_dicomweb: FakeDicomWeb, cloud_stacks: Stacks, tmp_path: Path, pubsub: str
) -> None:
    stack = cloud_stacks(fake_dicomweb.url, push=False)
    tap = stack.tap()
    receiver = stack.start_receiver()
    ds = ct_dataset()
    assert send(receiver, ds, tmp_path=tmp_path) == [0]

    [received] = stack.pull(tap)
    message = decode(received.message.data)
    attributes = dict(received.message.attributes)
    assert message.uri.startswith(f"gs://{stack.bucket}/dicom/{ds.StudyInstanceUID}/")
    assert attributes["object_generation"] == message.generation
    blob = stack.gcs.client.bucket(stack.bucket).get_blob(message.uri.split("/", 3)[3])
    assert blob is not None and str(blob.generation) == message.generation
    assert blob.crc32c == message.crc32c and blob.size == message.size
    wire = received.message.data + repr(attributes).encode()
    for value in (str(ds.PatientName), ds.PatientID, "Synthetic", "SYNTH"):
        assert value.encode() not in wire


def test_the_store_down_for_a_while(cloud_stacks: Stacks, tmp_path: Path) -> None:
    outage = {"left": 6}
    lock = threading.Lock()

    def responder(request: Recorded) -> Reply:
        with lock:
            if outage["left"] > 0:
                outage["left"] -= 1
                return Reply(503, "down for maintenance")
        return Reply(200, referenced(request.sop_uids))

    server = FakeDicomWeb(responder).start()
    try:
        # Every attempt by push: no hand-over to the pull worker after a few failures.
        stack = cloud_stacks(
            server.url,
            max_delivery_attempts=10,
            uploader_env={"DICOM_INGEST_PUSH_MAX_ATTEMPTS": "0"},
        )
        receiver = stack.start_receiver()
        datasets = [ct_dataset(seed=n) for n in range(3)]
        assert send(receiver, *datasets, tmp_path=tmp_path) == [0, 0, 0]
        wanted = {str(ds.SOPInstanceUID) for ds in datasets}
        wait_until(lambda: stored_uids(server) == wanted, 60, "uploads after the outage")
        assert outage["left"] == 0
        assert stack.pull(stack.dead_subscription) == []
    finally:
        server.stop()


def test_a_poison_message_is_dead_lettered_then_replayed(
    cloud_stacks: Stacks, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fixed = threading.Event()

    def responder(request: Recorded) -> Reply:
        if not fixed.is_set():
            return Reply(400, failed(request.sop_uids, 0xA900))
        return Reply(200, referenced(request.sop_uids))

    server = FakeDicomWeb(responder).start()
    try:
        stack = cloud_stacks(server.url)
        receiver = stack.start_receiver()
        ds = ct_dataset()
        assert send(receiver, ds, tmp_path=tmp_path) == [0]
        publisher = pubsub_v1.PublisherClient()

        # Dead-lettered at once (a permanent failure), with its reason.
        wait_until(lambda: _backlog(stack, stack.dead_subscription) == 1, 30, "a dead letter")
        assert cli.main(["replay", "drain", "--subscription", stack.dead_subscription,
                         "--dry_run"]) == 0  # fmt: skip
        listing = capsys.readouterr().out
        assert str(ds.SOPInstanceUID) in listing
        assert "does not match SOP class (0xA900)" in listing
        assert "dry run: 1 messages: 0 done, 0 failed, 1 skipped" in listing
        assert stored_uids(server) == set()

        fixed.set()
        code = cli.main(
            ["replay", "drain", "--subscription", stack.dead_subscription,
             "--to_topic", stack.topic]
        )  # fmt: skip
        assert code == 0
        assert "1 messages: 1 done, 0 failed, 0 skipped" in capsys.readouterr().out
        wait_until(lambda: stored_uids(server) == {str(ds.SOPInstanceUID)}, 30, "replayed")
        assert _backlog(stack, stack.dead_subscription) == 0
        publisher.stop()
    finally:
        server.stop()


def _backlog(stack: CloudStack, subscription: str) -> int:
    """Messages waiting in a pull subscription, counted without consuming them."""
    response = stack.subscriber.pull(
        request={"subscription": subscription, "max_messages": 100}, timeout=10
    )
    ids = [m.ack_id for m in response.received_messages]
    if ids:
        stack.subscriber.modify_ack_deadline(
            request={"subscription": subscription, "ack_ids": ids, "ack_deadline_seconds": 0}
        )
    return len(ids)


def test_a_publish_failure_fails_the_store_and_reconcile_finds_the_object(
    orthanc: Orthanc, cloud_stacks: Stacks, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = cloud_stacks(orthanc.dicomweb)
    receiver = stack.start_receiver()
    delivered = ct_dataset(seed=1)
    assert send(receiver, delivered, tmp_path=tmp_path) == [0]
    wait_until(lambda: _in_orthanc(orthanc, delivered), 30, "first instance stored")

    stack.publisher.delete_topic(topic=stack.topic)
    orphan = ct_dataset(seed=2)
    assert send(receiver, orphan, tmp_path=tmp_path) == [0xA701]
    key = f"dicom/{orphan.StudyInstanceUID}/{orphan.SeriesInstanceUID}/{orphan.SOPInstanceUID}.dcm"
    assert key in stack.gcs.objects(stack.bucket)  # written, never announced
    assert not _in_orthanc(orthanc, orphan)

    stack.publisher.create_topic(name=stack.topic)
    assert stack.uploader is not None
    stack.create_push_subscription(f"{stack.push_subscription}-2", stack.uploader.url)
    common = ["--bucket", stack.bucket, "--topic", stack.topic,
              "--dicomweb_address", orthanc.dicomweb]  # fmt: skip
    assert cli.main(["replay", "reconcile", *common, "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert f"missing  sop={orphan.SOPInstanceUID}" in out
    assert str(delivered.SOPInstanceUID) not in out
    assert "2 object(s); 1 in the DICOM store; 1 missing (dry run)" in out

    assert cli.main(["replay", "reconcile", *common]) == 0
    assert "1 published" in capsys.readouterr().out
    wait_until(lambda: _in_orthanc(orthanc, orphan), 30, "the orphan, uploaded")
    assert_same(
        pydicom.dcmread(tmp_path / f"{orphan.SOPInstanceUID}.dcm"), retrieve(orthanc, orphan)
    )


def _in_orthanc(orthanc: Orthanc, ds: Dataset) -> bool:
    response = requests.get(
        f"{orthanc.dicomweb}/studies/{ds.StudyInstanceUID}/instances",
        headers={"Accept": "application/dicom+json"},
        timeout=10,
    )
    return response.status_code == 200 and str(ds.SOPInstanceUID) in response.text


def test_ack_after_spool_ships_after_a_restart(
    orthanc: Orthanc, cloud_stacks: Stacks, tmp_path: Path
) -> None:
    stack = cloud_stacks(orthanc.dicomweb)
    spool = tmp_path / "persistent-volume"
    stack.publisher.delete_topic(topic=stack.topic)  # Pub/Sub unreachable for now
    receiver = stack.start_receiver(ack_after="spool", spool_dir=spool)
    datasets = [ct_dataset(seed=10 + n) for n in range(2)]
    # Answered once on the volume, whatever the cloud is doing.
    assert send(receiver, *datasets, tmp_path=tmp_path) == [0, 0]
    receiver.stop()
    assert not any(_in_orthanc(orthanc, ds) for ds in datasets)

    stack.publisher.create_topic(name=stack.topic)
    assert stack.uploader is not None
    stack.create_push_subscription(f"{stack.push_subscription}-2", stack.uploader.url)
    restarted = stack.start_receiver(ack_after="spool", spool_dir=spool)
    wait_until(lambda: all(_in_orthanc(orthanc, ds) for ds in datasets), 60, "shipped")
    assert restarted.queue is not None
    wait_until(lambda: restarted.queue.stats().pending == 0, 10, "spool queue drained")
    assert not list((spool / "objects").rglob("*@*.dcm"))  # shipped files removed


def test_oversize_instances_go_to_the_pull_worker(
    orthanc: Orthanc, cloud_stacks: Stacks, tmp_path: Path
) -> None:
    stack = cloud_stacks(orthanc.dicomweb, uploader_env={"DICOM_INGEST_PUSH_MAX_BYTES": "20000"})
    receiver = stack.start_receiver()
    small, large = ct_dataset(rows=8, columns=8, seed=3), ct_dataset(rows=256, seed=4)
    assert send(receiver, small, large, tmp_path=tmp_path) == [0, 0]
    wait_until(lambda: _in_orthanc(orthanc, small), 30, "the small one, pushed")
    wait_until(lambda: _backlog(stack, stack.oversize_subscription) == 1, 30, "deferred")
    assert not _in_orthanc(orthanc, large)

    handler = build_pubsub_handler(
        UploaderConfig(orthanc.dicomweb, keep_uploaded=True), PubSubConfig()
    )
    worker = PullWorker(pubsub_v1.SubscriberClient(), stack.oversize_subscription, handler)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        wait_until(lambda: _in_orthanc(orthanc, large), 30, "the large one, pulled")
    finally:
        stop.set()
        thread.join(30)
    assert worker.counts == {"done": 1}
    assert_same(pydicom.dcmread(tmp_path / f"{large.SOPInstanceUID}.dcm"), retrieve(orthanc, large))


def test_health_endpoints(fake_dicomweb: FakeDicomWeb, cloud_stacks: Stacks) -> None:
    stack = cloud_stacks(fake_dicomweb.url, push=False)
    # The health port is named up front (0 turns the endpoints off): a free one, again if taken.
    receiver = on_free_port(lambda port: stack.start_receiver(health_port=port), errors=(OSError,))
    assert receiver.health is not None
    base = f"http://127.0.0.1:{receiver.health.port}"
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
    ready = requests.get(f"{base}/readyz", timeout=10)
    assert (ready.status_code, ready.text.strip()) == (200, "ok")
    figures = scrape(receiver.health.port)
    assert figures[("dicom_ingest_shipper_backlog", ())] == 0
    assert figures[("dicom_ingest_spool_free_bytes", ())] > 0
    assert ("dicom_ingest_associations_total", (("outcome", "released"),)) in figures
    # The receiver talks to no DICOM store: no store figure, and no local queue.
    assert not {name for name, _ in figures} & {
        "dicom_ingest_store_reachable",
        "dicom_ingest_queue_messages",
    }
    receiver.receiver.stop(grace=0)
    receiver.health._cached = None  # no waiting out the cache
    not_ready = requests.get(f"{base}/readyz", timeout=10)
    assert not_ready.status_code == 503
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 503


def test_the_work_command_drains_a_backlog(
    fake_dicomweb: FakeDicomWeb, cloud_stacks: Stacks, tmp_path: Path
) -> None:
    stack = cloud_stacks(fake_dicomweb.url, push=False)
    backlog = stack.tap()
    receiver = stack.start_receiver()
    datasets = [ct_dataset(seed=20 + n) for n in range(5)]
    assert send(receiver, *datasets, tmp_path=tmp_path) == [0] * 5

    def start(port: int) -> tuple[subprocess.Popen[str], int]:
        process = subprocess.Popen(
            [sys.executable, "-m", "dicom_ingest.cli", "work", "--subscription", backlog,
             "--dicomweb_address", fake_dicomweb.url, "--upload_workers", "2",
             "--health_port", str(port)],
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip

        def serving() -> bool:
            if process.poll() is not None:  # the port was taken meanwhile: another one
                raise RuntimeError(process.communicate()[1][-2000:])
            return port_open(port)

        wait_until(serving, 60, "the worker's health port")
        return process, port

    worker, health_port = on_free_port(start)
    try:
        wanted = {str(ds.SOPInstanceUID) for ds in datasets}
        wait_until(lambda: stored_uids(fake_dicomweb) == wanted, 60, "the backlog uploaded")
        wait_until(
            lambda: (
                scrape(health_port)[("dicom_ingest_uploads_total", (("outcome", "done"),))] == 5
            ),
            30,
            "five uploads counted",
        )
        figures = scrape(health_port)
        assert figures[("dicom_ingest_store_reachable", ())] == 1
        assert figures[("dicom_ingest_stow_seconds_count", ())] >= 1
        assert figures[("dicom_ingest_dead_letters_total", ())] == 0
        ready = requests.get(f"http://127.0.0.1:{health_port}/readyz", timeout=10)
        assert ready.status_code == 200
        assert f"DICOM store reachable: {fake_dicomweb.url}" in ready.text
    finally:
        worker.send_signal(signal.SIGTERM)
        _, errors = worker.communicate(timeout=60)
    assert worker.returncode == 0, errors[-2000:]
    assert "stopped pulling" in errors
    assert _backlog(stack, backlog) == 0


def test_a_resend_whose_publish_fails_still_gets_its_message(
    fake_dicomweb: FakeDicomWeb,
    cloud_stacks: Stacks,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The resend replaced the first generation, whose message now reads "superseded": the
    newest generation's message must still come, once Pub/Sub takes messages again."""
    # The kept message is re-published only once the test subscribes to the new topic: a
    # message published to a topic with no subscription yet is gone for the test.
    subscribed = threading.Event()
    republish = RepublishService.process

    def once_subscribed(self: RepublishService, messages: list[InstanceMessage]) -> list[Outcome]:
        subscribed.wait(30)
        return republish(self, messages)

    monkeypatch.setattr(RepublishService, "process", once_subscribed)
    stack = cloud_stacks(fake_dicomweb.url, push=False)
    receiver = stack.start_receiver()
    ds = ct_dataset(seed=30)
    first_tap = stack.tap()
    assert send(receiver, ds, tmp_path=tmp_path) == [0]
    [first] = stack.pull(first_tap)

    stack.publisher.delete_topic(topic=stack.topic)
    assert send(receiver, ds, tmp_path=tmp_path) == [0xA701]
    name = f"dicom/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
    live = stack.gcs.client.bucket(stack.bucket).get_blob(name)
    assert live is not None
    assert str(live.generation) != decode(first.message.data).generation

    stack.publisher.create_topic(name=stack.topic)
    tap = f"{first_tap}-again"
    stack.subscriber.create_subscription(request={"name": tap, "topic": stack.topic})
    subscribed.set()
    received: list[object] = []
    wait_until(lambda: received.extend(stack.pull(tap)) or received, 30, "the kept message")
    [again] = received
    assert decode(again.message.data).generation == str(live.generation)  # type: ignore[attr-defined]


def test_the_receive_command_as_its_container_runs_it(
    fake_dicomweb: FakeDicomWeb, cloud_stacks: Stacks, tmp_path: Path
) -> None:
    """``dicom-ingest receive`` with the guide's flags plus bucket and topic; SIGTERM drains."""
    stack = cloud_stacks(fake_dicomweb.url, push=False)
    tap = stack.tap()
    port, health = free_port(), free_port()  # a command's ports, named up front
    process = subprocess.Popen(
        [sys.executable, "-m", "dicom_ingest.cli", "receive",
         "--dimse_aet=IMPORTADAPTER", f"--dimse_port={port}", "--dimse_bind=127.0.0.1",
         f"--dicomweb_address={fake_dicomweb.url}", "--verbose",
         f"--bucket={stack.bucket}", f"--topic={stack.topic}",
         f"--spool_dir={tmp_path / 'spool'}", f"--health_port={health}", "--log_format=json"],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: _ready(health), 30, "/readyz")
        ds = ct_dataset(seed=40)
        result = dcmsend(port, [write(ds, tmp_path / "one.dcm")])
        assert result.returncode == 0, result.stderr[-1000:]
        [message] = stack.pull(tap)
        assert decode(message.message.data).sop_instance_uid == ds.SOPInstanceUID
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=60)
    assert process.returncode == 0, errors[-2000:]
    assert '"severity": "INFO"' in errors and "stopped" in errors
    assert "ignores it" in errors  # --dicomweb_address is the uploader's


def _ready(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.parametrize("ack_after", ["spool", "store"])
def test_staging_files_are_anonymous_only_where_the_spool_takes_them(
    fake_dicomweb: FakeDicomWeb, cloud_stacks: Stacks, tmp_path: Path, ack_after: str
) -> None:
    """With ``--ack_after=spool`` the spool links each staged file into place; otherwise
    early uploads may read staging files by name, so they have one."""
    stack = cloud_stacks(fake_dicomweb.url)
    spool = tmp_path / "volume"
    receiver = stack.start_receiver(ack_after=ack_after, spool_dir=spool)
    connection = RawAssociation(receiver.receiver.port, timeout=30)
    try:
        connection.associate([(1, CT_IMAGE_STORAGE, [EXPLICIT_VR_LE])])
        ds = ct_dataset(seed=31)
        data = dataset_bytes(ds, EXPLICIT_VR_LE)
        command = command_set(C_STORE_RQ, 1, CT_IMAGE_STORAGE, str(ds.SOPInstanceUID))
        connection.send(p_data(1, command, command=True))
        connection.send(p_data(1, data[:4000], command=False, last=False))
        staging = spool / "incoming"
        wait_until(lambda: staging_files(staging), 30, "a partly received dataset")
        named = list(staging.iterdir())
        assert (named == []) is (ack_after == "spool"), named
        connection.send(p_data(1, data[4000:], command=False, last=True))
        assert connection.read_response().status == 0x0000
        connection.release()
    finally:
        connection.close()
    wait_until(lambda: staging_files(staging) == [], 10, "staging emptied")
