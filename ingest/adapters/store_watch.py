"""Whether the DICOM store answers: probed at start, again while it fails, and told by uploads.

The pipeline accepts instances whatever the store's state (the queue is durable), but the
operator must hear at once when its address is dead or its credentials are refused: one line
when the state changes, the ``dicom_ingest_store_reachable`` metric, a line in ``/readyz``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from google.auth.exceptions import GoogleAuthError

from ingest.contracts.outcome import error_text

log = logging.getLogger(__name__)

PROBE_INTERVAL = 30.0  # seconds between probes while the store fails


@dataclass(frozen=True, slots=True)
class StoreState:
    """One answer (or its absence) from the DICOM store."""

    reachable: bool
    detail: str  # "HTTP 200", "refuses the credentials (HTTP 401)", "ConnectionError (...)"
    refused_credentials: bool = False


def state_of_status(status: int) -> StoreState:
    """What an HTTP status from the store says about the store itself (not the instance)."""
    if status in (401, 403):
        return StoreState(False, f"refuses the credentials (HTTP {status})", True)
    if status in (404, 408, 429) or status >= 500:
        return StoreState(False, f"answered HTTP {status}")
    return StoreState(True, f"HTTP {status}")


def state_of_error(exc: Exception) -> StoreState:
    """A request that got no answer; credentials that could not be had count as refused."""
    if isinstance(exc, GoogleAuthError):
        return StoreState(False, f"refuses the credentials ({type(exc).__name__})", True)
    return StoreState(False, error_text(exc))


def public_url(address: str) -> str:
    """The address without credentials, query or fragment: safe for logs."""
    parts = urlsplit(address)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class StoreWatch:
    """The store's last known state; re-probes every ``interval`` seconds while it fails."""

    def __init__(self, address: str, interval: float = PROBE_INTERVAL) -> None:
        self.url = public_url(address)
        self._interval = interval
        self._lock = threading.Lock()
        self._state: StoreState | None = None
        self._check: Callable[[], StoreState] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-probe", daemon=True)

    def start(self, check: Callable[[], StoreState]) -> StoreState:
        """Probe now (the caller says the result in its ready line), then watch."""
        self._check = check
        state = self.probe()
        self._thread.start()
        return state

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def probe(self) -> StoreState:
        assert self._check is not None
        try:
            state = self._check()
        except Exception as exc:  # credentials that cannot be had (ADC), and the like
            state = state_of_error(exc)
        self.note(state)
        return state

    def reachable(self) -> bool | None:
        """None until the first answer."""
        with self._lock:
            return None if self._state is None else self._state.reachable

    def describe(self) -> str:
        """One line for the ready line and ``/readyz``."""
        with self._lock:
            state = self._state
        if state is None:
            return f"DICOM store not probed yet: {self.url}"
        return _sentence(self.url, state)

    def note(self, state: StoreState) -> None:
        """The store's latest answer (a probe's or an upload's); logged when it changes."""
        with self._lock:
            before, self._state = self._state, state
        if before is not None and (before.reachable, before.detail) == (
            state.reachable,
            state.detail,
        ):
            return
        if state.reachable:
            if before is None or before.reachable:
                log.info("%s", _sentence(self.url, state))
            else:
                log.info("DICOM store reachable again: %s", self.url)
            return
        level = logging.ERROR if state.refused_credentials else logging.WARNING
        log.log(
            level,
            "%s; instances are still accepted and queued until it answers",
            _sentence(self.url, state),
            extra={"dicomweb_url": self.url, "store_detail": state.detail},
        )

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            if self.reachable() is False:
                self.probe()


def _sentence(url: str, state: StoreState) -> str:
    if state.reachable:
        return f"DICOM store reachable: {url} ({state.detail})"
    if state.refused_credentials:
        return f"DICOM store {state.detail}: {url}"
    if state.detail.startswith("answered"):
        return f"DICOM store {state.detail}: {url}"
    return f"DICOM store unreachable: {url}: {state.detail}"
