"""A stop asked for at any moment: ``dicom-ingest local`` as a real process, a PACS sending to
it, and SIGTERM or SIGINT (once, or twice) at a random instant of the run: while it imports,
starts, idles, or receives.

Whatever the moment, the process exits within the pod's grace period with status 0 (or
``EXIT_HURRIED`` when a second signal cut the drain short), and every instance the PACS was
told is stored reaches the DICOM store, uploaded by this run or by the next one on the same
spool. Run it in a loop: ``SIGNAL_TEST_SEED`` replays one run.
"""

from __future__ import annotations

import gc
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from support.datasets import ct_dataset
from support.net import free_port, wait_until
from support.orthanc import Orthanc
from support.process import IngestProcess
from support.stored import store_noting_success, study_instances

from dicom_ingest.signals import EXIT_HURRIED

pytestmark = pytest.mark.slow

GRACE = 5.0  # --shutdown_grace
BOUND = GRACE + 15.0  # as the pod's grace period: the drain, plus 15 s


class Pacs(threading.Thread):
    """Sends associations of a few instances, one after another, while the receiver listens."""

    def __init__(self, process: IngestProcess, study: str, rng: random.Random) -> None:
        super().__init__(name="pacs", daemon=True)
        self.process = process
        self.study = study
        self.pauses = [rng.uniform(0.0, 0.5) for _ in range(1000)]  # idle between associations
        self.acknowledged: list[str] = []
        self.associations = 0
        self._seed = 0

    def run(self) -> None:
        try:
            self.process.wait_ready(120)
        except (RuntimeError, TimeoutError):
            return  # stopped before it was ready: nothing to send to
        ae = AE(ae_title="PACS")
        ae.add_requested_context(CTImageStorage)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        while self.process.process.poll() is None:
            assoc = ae.associate("127.0.0.1", self.process.port, ae_title="IMPORTADAPTER")
            if not assoc.is_established:
                return  # the listener is closed: the receiver is stopping
            self.associations += 1
            for _ in range(4):
                self._seed += 1
                ds = ct_dataset(study=self.study, seed=self._seed)
                if not store_noting_success(assoc, ds, self.acknowledged):
                    break
            if assoc.is_established:
                assoc.release()
            time.sleep(self.pauses[self.associations % len(self.pauses)])  # a PACS at rest


def catches_sigterm(pid: int) -> bool:
    """Whether the process has its own SIGTERM handler yet (Python has none by default)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_signal_at_any_moment_stops_the_pipeline_cleanly_and_loses_nothing(
    orthanc: Orthanc, tmp_path: Path
) -> None:
    seed = int(os.environ.get("SIGNAL_TEST_SEED") or random.randrange(1 << 32))
    rng = random.Random(seed)
    signum = rng.choice([signal.SIGTERM, signal.SIGINT])
    # From the spawn (importing, opening the spool, starting) or from the ready line (idle,
    # or receiving: the PACS sends associations of four instances with pauses between them).
    anchor = rng.choice(["spawn", "ready"])
    delay = rng.uniform(0.0, 4.0)
    second = rng.uniform(0.0, GRACE) if rng.random() < 0.3 else None
    run = f"seed {seed}: {signum.name} {delay:.2f} s after {anchor}, second after {second}"

    spool = tmp_path / "spool"
    # With the metrics endpoint and the status page, so their servers are stopped too,
    # started or not.
    process = IngestProcess(
        spool,
        orthanc.dicomweb,
        *("--shutdown_grace", str(GRACE)),
        *("--metrics_port", str(free_port()), "--ui_port", str(free_port())),
    )
    pacs = Pacs(process, generate_uid(), rng)
    try:
        pacs.start()
        if anchor == "ready":
            process.wait_ready(120)
        time.sleep(delay)  # the random moment itself, not a wait for something to happen
        ready = "ready: accepting associations" in process.output()
        # In the interpreter's first moments, before the entry point has run, the signal
        # still has Python's default action: the process ends at once, having opened nothing
        # (SIGTERM kills it; SIGINT while Python imports its site module is a fatal error, 1).
        early = not catches_sigterm(process.process.pid)
        process.process.send_signal(signum)
        signalled = time.monotonic()
        if second is not None:
            time.sleep(second)
            if process.process.poll() is None:
                process.process.send_signal(signum)
        try:
            code = process.process.wait(BOUND)
        except Exception:
            raise AssertionError(f"{run}: still running after {BOUND} s") from None
        took = time.monotonic() - signalled
        expected = {0, EXIT_HURRIED} if second is not None else {0}
        if early:
            expected |= {-signum, 1}
        assert code in expected, f"{run}: exit {code}:\n{process.output()[-3000:]}"
        assert took < BOUND, run
        pacs.join(60)
        assert not pacs.is_alive(), run
        gc.collect()  # sockets pynetdicom left to the collector are reported under the filter
        print(
            f"{run}: {'ready' if ready else 'early' if early else 'not ready'} when signalled,"
            f" exit {code} after"
            f" {took:.2f} s, {pacs.associations} associations, {len(pacs.acknowledged)} stored"
        )
    finally:
        process.stop()

    # Nothing the PACS was told is stored is lost: the next run on the spool uploads the rest.
    after = IngestProcess(spool, orthanc.dicomweb).wait_ready()
    try:
        wait_until(
            lambda: set(pacs.acknowledged) <= study_instances(orthanc, pacs.study),
            120,
            f"{run}: {len(pacs.acknowledged)} acknowledged instances in the store",
        )
        assert after.terminate() == 0
    finally:
        after.stop()
