"""``--receive_processes``: associations served by several processes, one door.

Real sockets, real receive processes (``receiver.processes``), DCMTK as one of the PACS.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.association import Association as ScuAssociation
from pynetdicom.sop_class import CTImageStorage
from support.datasets import ct_dataset
from support.fake_dicomweb import FakeDicomWeb
from support.net import wait_until
from support.process import IngestProcess
from support.receiving import queued, staged, stored_objects

from dicom_ingest.local import LocalPipeline
from ingest.contracts import metrics
from receiver import forkserver, processes

pytestmark = pytest.mark.slow  # processes start in about a second each


@pytest.fixture
def start(
    pipelines: Callable[..., LocalPipeline],
    held_store: FakeDicomWeb,
    caplog: pytest.LogCaptureFixture,
) -> Callable[..., LocalPipeline]:
    """A pipeline with two receive processes, its uploads held, its log captured."""
    caplog.set_level(logging.INFO, logger="receiver")

    def factory(**overrides: object) -> LocalPipeline:
        settings: dict[str, object] = {"receive_processes": 2, "upload_workers": 1}
        settings.update(overrides)
        return pipelines(held_store.url, min_backoff=60.0, max_backoff=60.0, **settings)

    return factory


def associate(pipeline: LocalPipeline, source: str = "127.0.0.1") -> ScuAssociation:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae.associate(
        "127.0.0.1", pipeline.receiver.port, ae_title="IMPORTADAPTER", bind_address=(source, 0)
    )


def store_one(pipeline: LocalPipeline, seed: int) -> None:
    """One association, one CT instance stored (0x0000), released."""
    scu = associate(pipeline)
    assert scu.is_established
    assert scu.send_c_store(ct_dataset(seed=seed)).Status == 0x0000
    scu.release()


def association_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in list(caplog.records)
        if r.name == "receiver.association" and hasattr(r, "outcome")
    ]


def received(status: str = "0x0000") -> float:
    value = metrics.REGISTRY.get_sample_value(
        "dicom_ingest_instances_received_total", {"status": status}
    )
    return value or 0.0


def test_associations_are_spread_over_the_processes_and_every_instance_arrives(
    start: Callable[..., LocalPipeline], caplog: pytest.LogCaptureFixture
) -> None:
    before = received()
    pipeline = start()
    pids = pipeline.receiver.receive_process_ids()
    assert len(pids) == 2 and os.getpid() not in pids
    held = [associate(pipeline) for _ in range(4)]  # all open at once: two per process
    assert all(a.is_established for a in held)
    assert pipeline.receiver.active_associations() == 4
    for number, association in enumerate(held):
        for seed in range(3):
            status = association.send_c_store(ct_dataset(seed=number * 10 + seed))
            assert status.Status == 0x0000
    for association in held:
        association.release()
    wait_until(lambda: len(association_lines(caplog)) == 4, 30, "four association lines")
    lines = association_lines(caplog)
    assert {line.outcome for line in lines} == {"released"}  # type: ignore[attr-defined]
    assert sorted(line.process for line in lines) == sorted(pids * 2)  # two lines each
    assert len(stored_objects(pipeline)) == 12
    assert queued(pipeline) == 12  # committed to the listener's queue by the processes
    assert received() - before == 12  # their figures, served by the listener
    wait_until(lambda: pipeline.receiver.active_associations() == 0, 10, "slots given back")
    assert staged(pipeline) == []


def test_dcmtk_storescu_stores_through_the_processes(
    start: Callable[..., LocalPipeline], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    pipeline = start()
    files = []
    for seed in range(6):
        path = tmp_path / f"{seed}.dcm"
        ct_dataset(seed=100 + seed).save_as(path, enforce_file_format=True)
        files.append(str(path))
    senders = [
        subprocess.Popen(
            ["storescu", "-aec", "IMPORTADAPTER", "127.0.0.1", str(pipeline.receiver.port), *part],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for part in (files[:3], files[3:])
    ]
    for sender in senders:
        output, _ = sender.communicate(timeout=60)
        assert sender.returncode == 0, output
    wait_until(lambda: len(association_lines(caplog)) == 2, 30, "two association lines")
    assert len(stored_objects(pipeline)) == 6
    assert queued(pipeline) == 6


def test_the_association_limit_spans_the_processes(
    start: Callable[..., LocalPipeline],
) -> None:
    pipeline = start(max_associations=2)
    first, second = associate(pipeline, "127.0.0.1"), associate(pipeline, "127.0.0.2")
    assert first.is_established and second.is_established
    third = associate(pipeline, "127.0.0.3")  # another host: only the total is over
    assert third.is_rejected
    first.release()
    wait_until(lambda: pipeline.receiver.active_associations() == 1, 10, "a slot given back")
    fourth = associate(pipeline, "127.0.0.3")
    assert fourth.is_established
    fourth.release()
    second.release()


def test_a_process_that_dies_is_replaced_and_its_association_logged(
    start: Callable[..., LocalPipeline], caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = start()
    before = pipeline.receiver.receive_process_ids()
    held = associate(pipeline)
    assert held.is_established
    assert held.send_c_store(ct_dataset(seed=4)).Status == 0x0000
    wait_until(lambda: pipeline.receiver.active_associations() == 1, 10, "the association")
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not held.is_alive(), 30, "the connection cut")

    def lost() -> list[logging.LogRecord]:
        return [r for r in association_lines(caplog) if getattr(r, "outcome", "") == "aborted"]

    wait_until(lost, 10, "the lost association's line")
    [line] = lost()
    assert "receive process ended (exit code -9)" in line.reason  # type: ignore[attr-defined]
    # what the listener knew of it: the AE titles, the instances committed, how long it ran
    assert (line.calling_ae, line.called_ae) == ("TESTSCU", "IMPORTADAPTER")  # type: ignore[attr-defined]
    assert (line.instances, line.transport) == (1, "tcp")  # type: ignore[attr-defined]
    assert line.seconds > 0  # type: ignore[attr-defined]
    assert pipeline.receiver.active_associations() == 0
    wait_until(
        lambda: len(set(pipeline.receiver.receive_process_ids()) - set(before)) == 2,
        30,
        "two new receive processes",
    )
    again = associate(pipeline)
    assert again.is_established
    assert again.send_c_store(ct_dataset(seed=5)).Status == 0x0000
    again.release()
    assert len(stored_objects(pipeline)) == 2


def test_while_no_receive_process_runs_the_listener_serves(
    start: Callable[..., LocalPipeline],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between a crash and the replacement, a PACS is served, not dropped."""
    monkeypatch.setattr(processes, "_RESTART_DELAYS", (60.0,))  # no replacement in this test
    pipeline = start()
    for pid in pipeline.receiver.receive_process_ids():
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pipeline.receiver.receive_process_ids(), 10, "both processes gone")
    scu = associate(pipeline)
    assert scu.is_established
    assert scu.send_c_store(ct_dataset(seed=6)).Status == 0x0000
    scu.release()
    wait_until(lambda: queued(pipeline) == 1, 10, "the instance queued")
    assert len(stored_objects(pipeline)) == 1
    served = [r for r in caplog.records if "no receive process running" in r.getMessage()]
    assert len(served) == 1 and served[0].levelno == logging.WARNING

    def released() -> list[logging.LogRecord]:  # written once the release is answered
        return [r for r in association_lines(caplog) if r.outcome == "released"]  # type: ignore[attr-defined]

    wait_until(released, 10, "the association's line")
    [line] = released()
    assert line.instances == 1 and line.calling_ae == "TESTSCU"  # type: ignore[attr-defined]
    assert line.process == os.getpid()  # written by the listening process itself


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in list(caplog.records) if text in r.getMessage()]


@pytest.fixture
def quick_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pings every 0.1 s; late after 0.5 s; hung after 3 s."""
    monkeypatch.setattr(processes, "_PING_EVERY", 0.1)
    monkeypatch.setattr(processes, "_UNRESPONSIVE", 0.5)
    monkeypatch.setattr(processes, "_HUNG", 3.0)


def test_a_process_that_stops_answering_gets_no_new_connections_until_it_answers(
    start: Callable[..., LocalPipeline],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    quick_watch: None,
) -> None:
    monkeypatch.setattr(processes, "_HUNG", 600.0)  # not killed in this test
    pipeline = start()
    stopped, running = pipeline.receiver.receive_process_ids()
    os.kill(stopped, signal.SIGSTOP)
    try:
        wait_until(lambda: messages(caplog, "not answering"), 10, "the process held back")
        [held_back] = messages(caplog, "not answering")
        assert held_back.levelno == logging.WARNING and held_back.pid == stopped  # type: ignore[attr-defined]
        for seed in (20, 21):  # otherwise the first of two idle processes: the stopped one
            scu = associate(pipeline)
            assert scu.is_established
            assert scu.send_c_store(ct_dataset(seed=seed)).Status == 0x0000
            scu.release()
        wait_until(lambda: len(association_lines(caplog)) == 2, 10, "two association lines")
        assert {line.process for line in association_lines(caplog)} == {running}  # type: ignore[attr-defined]
    finally:
        os.kill(stopped, signal.SIGCONT)
    wait_until(lambda: messages(caplog, "answering again"), 10, "the process back")
    assert pipeline.receiver.receive_process_ids() == [stopped, running]  # not replaced
    assert queued(pipeline) == 2


def test_a_process_that_stays_stopped_is_killed_and_replaced(
    start: Callable[..., LocalPipeline], caplog: pytest.LogCaptureFixture, quick_watch: None
) -> None:
    pipeline = start()
    before = pipeline.receiver.receive_process_ids()
    held = associate(pipeline)  # to the first process: both serve none yet
    assert held.is_established
    assert held.send_c_store(ct_dataset(seed=30)).Status == 0x0000
    os.kill(before[0], signal.SIGSTOP)
    wait_until(lambda: messages(caplog, "did not answer: killed"), 15, "the process killed")
    [killed] = messages(caplog, "did not answer: killed")
    assert killed.levelno == logging.ERROR and killed.pid == before[0]  # type: ignore[attr-defined]
    assert killed.associations == 1  # type: ignore[attr-defined]
    wait_until(lambda: not held.is_alive(), 30, "the connection cut")
    wait_until(lambda: association_lines(caplog), 10, "the lost association's line")
    [line] = association_lines(caplog)
    assert line.outcome == "aborted" and "exit code -9" in line.reason  # type: ignore[attr-defined]
    wait_until(
        lambda: len(pipeline.receiver.receive_process_ids()) == 2, 30, "a replacement process"
    )
    assert before[0] not in pipeline.receiver.receive_process_ids()
    store_one(pipeline, seed=31)
    assert queued(pipeline) == 2


def test_a_stopped_fork_server_is_killed_and_replaced(
    start: Callable[..., LocalPipeline],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(forkserver, "_START_TIMEOUT", 2.0)
    pipeline = start()
    assert pipeline.receiver._processes is not None
    forks = pipeline.receiver._processes
    server = forks.fork_server_pid()
    before = pipeline.receiver.receive_process_ids()
    os.kill(server, signal.SIGSTOP)
    os.kill(before[0], signal.SIGKILL)  # its replacement is asked of the stopped server
    wait_until(lambda: messages(caplog, "fork server did not answer: killed"), 20, "the kill")
    wait_until(lambda: gone(server), 10, "the stopped server gone")
    wait_until(
        lambda: len(pipeline.receiver.receive_process_ids()) == 2, 30, "a replacement process"
    )
    assert forks.fork_server_pid() != server
    assert messages(caplog, "receive process did not start; starting another")
    store_one(pipeline, seed=40)
    assert queued(pipeline) == 1


def test_stopping_ends_the_processes_and_what_they_serve(
    start: Callable[..., LocalPipeline], caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = start(shutdown_grace=0.5)
    pids = pipeline.receiver.receive_process_ids()
    held = associate(pipeline)
    assert held.is_established
    assert held.send_c_store(ct_dataset(seed=9)).Status == 0x0000
    assert not pipeline.stop()  # the association outlived the grace period
    wait_until(lambda: not held.is_alive(), 10, "the connection cut")
    [line] = association_lines(caplog)
    assert line.outcome == "aborted at shutdown"  # type: ignore[attr-defined]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(child) for child in task.read_text().split()]
    return found


def command_line(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie has ended (an orphan waits for init to reap it)


def storescu(port: int, files: list[str]) -> None:
    done = subprocess.run(
        ["storescu", "-aec", "IMPORTADAPTER", "127.0.0.1", str(port), *files],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_command_forks_its_receive_processes_and_outlives_its_fork_server(
    held_store: FakeDicomWeb, tmp_path: Path
) -> None:
    """``dicom-ingest local`` forks its fork server before it opens anything, and the receive
    processes from that: they share its loaded code (the same command line shows it: no new
    interpreter ran). If the fork server dies, the next receive process comes from a new one."""
    files = []
    for seed in range(4):
        path = tmp_path / f"{seed}.dcm"
        ct_dataset(seed=200 + seed).save_as(path, enforce_file_format=True)
        files.append(str(path))
    ingest = IngestProcess(tmp_path / "spool", held_store.url, "--receive_processes", "2")
    ingest.wait_ready()
    try:
        listener = ingest.process.pid
        [server] = children(listener)
        first = children(server)
        assert len(first) == 2
        for pid in (server, *first):
            assert command_line(pid) == command_line(listener)
        storescu(ingest.port, files[:2])

        os.kill(server, signal.SIGKILL)
        wait_until(lambda: gone(server), 10, "the fork server gone")
        storescu(ingest.port, files[2:3])  # its receive processes still serve
        os.kill(first[0], signal.SIGKILL)

        def replaced() -> bool:
            servers = children(listener)
            return len(servers) == 1 and servers[0] != server and len(children(servers[0])) == 1

        wait_until(replaced, 30, "a new fork server and receive process")
        assert "the fork server ended; the next receive process starts another" in ingest.output()
        [new_server] = children(listener)
        assert b"receiver.forkserver" in command_line(new_server)  # threads run: a fresh one
        os.kill(first[1], signal.SIGKILL)  # the new server's process serves from now on
        orphans_ended = lambda: ingest.output().count('"exit_code": null') == 2  # noqa: E731
        wait_until(orphans_ended, 10, "both orphans' ends noted (their exit codes unknown)")
        storescu(ingest.port, files[3:])
        released = lambda: ingest.output().count('"outcome": "released"') == 3  # noqa: E731
        wait_until(released, 10, "an association line for each storescu")
    finally:
        ingest.terminate()
        ingest.stop()
    for pid in (server, *first, new_server):
        wait_until(lambda pid=pid: gone(pid), 10, f"process {pid} ended")
