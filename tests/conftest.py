"""Fixtures shared by the test tiers: real Orthanc, a fake DICOMweb, in-process pipelines."""

from __future__ import annotations

import itertools
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cloud import CloudStack
from support.fake_dicomweb import FakeDicomWeb, Reply
from support.gcs import FakeGcs, running_fake_gcs
from support.logstate import preserved_hooks
from support.orthanc import Orthanc, start_orthanc
from support.pipeline import start_pipeline
from support.pubsub_server import pubsub_host
from support.scu_reactor import close_the_race

from dicom_ingest.local import LocalPipeline

close_the_race()  # pynetdicom's SCU can lose a response to its own reactor (the module says how)

# Tests press Ctrl-C (SIGINT) on the commands they start, as an operator at a terminal would.
# Started in the background by a shell without job control, the suite inherits SIGINT
# ignored, and so would every command it starts: they would never hear it. Handled here, it
# is back to its default in each command.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _logging_put_back() -> Iterator[None]:
    """A test that runs the CLI in-process leaves pytest's hooks as they were for the next."""
    with preserved_hooks():
        yield


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


@pytest.fixture
def fake_dicomweb() -> Iterator[FakeDicomWeb]:
    server = FakeDicomWeb().start()
    yield server
    server.stop()


@pytest.fixture
def held_store(fake_dicomweb: FakeDicomWeb) -> FakeDicomWeb:
    """A DICOM store that refuses everything for now, so messages stay in the queue."""
    fake_dicomweb.responder = lambda request: Reply(503, "down for the test")
    return fake_dicomweb


@pytest.fixture
def pipelines(tmp_path: Path) -> Iterator[Callable[..., LocalPipeline]]:
    """Start local pipelines; each is stopped at teardown."""
    started: list[LocalPipeline] = []

    def factory(dicomweb: str, spool: Path | None = None, **overrides: Any) -> LocalPipeline:
        pipeline = start_pipeline(spool or tmp_path / "spool", dicomweb, **overrides)
        started.append(pipeline)
        return pipeline

    yield factory
    for pipeline in started:
        pipeline.stop()


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcs]:
    with running_fake_gcs(tmp_path_factory.mktemp("gcs")) as server:
        yield server


@pytest.fixture
def pubsub(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A Pub/Sub server for the real client ($PUBSUB_EMULATOR_HOST if one is set)."""
    with pubsub_host() as host:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", host)
        yield host


_stack_names = itertools.count(1)


@pytest.fixture
def cloud_stacks(
    pubsub: str, fake_gcs: FakeGcs, tmp_path: Path
) -> Iterator[Callable[..., CloudStack]]:
    """Cloud-shaped pipelines (receiver → Cloud Storage + Pub/Sub → push → uploader)."""
    stacks: list[CloudStack] = []

    def factory(dicomweb: str, **options: Any) -> CloudStack:
        stack = CloudStack(
            pubsub, fake_gcs, dicomweb, tmp_path, name=f"instances-{next(_stack_names)}", **options
        )
        stacks.append(stack)
        return stack

    yield factory
    for stack in stacks:
        stack.close()
