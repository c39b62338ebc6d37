"""The DICOMweb client: one HTTP session, created at start-up and injected."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol
from urllib.parse import quote, urlsplit

import google.auth
import requests
from google.auth.exceptions import GoogleAuthError
from google.auth.transport.requests import AuthorizedSession
from requests.sessions import merge_setting
from requests.utils import get_environ_proxies

from ingest.contracts import metrics

from .http_deadline import mount_deadline
from .multipart import MultipartBody, content_type, new_boundary
from .store_watch import StoreState, state_of_error, state_of_status

CLOUD_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# Seconds one request to the DICOM store may take in all, bodies included (--request_deadline).
REQUEST_DEADLINE = 600.0
PROBE_TIMEOUT = (5.0, 10.0)  # (connect, read) seconds for the store probe


@dataclass(frozen=True, slots=True)
class StowResponse:
    status: int
    body: Any  # parsed application/dicom+json, or None
    text: str


class DicomWebClient(Protocol):
    def stow(self, study_uid: str, parts: list[tuple[BinaryIO, int]]) -> StowResponse: ...

    def delete_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> int: ...

    def has_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> bool: ...


class _Session(requests.Session):
    """A session that reads the environment's proxy and CA-bundle settings once per origin.

    ``requests`` reads them on every request (it walks all of ``os.environ`` twice for the
    proxy variables alone): about a millisecond of CPU per STOW-RS request. A running
    process's environment does not change, so the result for each scheme and host is kept;
    what a request is given explicitly still wins, as in ``requests``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._environ_proxies: dict[tuple[str, str, str | None], dict[str, str]] = {}
        self._ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")

    def merge_environment_settings(
        self,
        url: str | bytes | None,
        proxies: MutableMapping[str, str] | None,
        stream: bool | None,
        verify: Any,
        cert: Any,
    ) -> Any:
        if self.trust_env:
            text = url.decode() if isinstance(url, bytes) else str(url)
            no_proxy = proxies.get("no_proxy") if proxies is not None else None
            origin = (*urlsplit(text)[:2], no_proxy)
            found = self._environ_proxies.get(origin)
            if found is None:
                found = self._environ_proxies[origin] = get_environ_proxies(text, no_proxy)
            if proxies is not None:
                for key, value in found.items():
                    proxies.setdefault(key, value)
            if verify is True or verify is None:
                verify = self._ca_bundle or verify
        return {
            "proxies": merge_setting(proxies, self.proxies),
            "stream": merge_setting(stream, self.stream),
            "verify": merge_setting(verify, self.verify),
            "cert": merge_setting(cert, self.cert),
        }


class _AuthorizedSession(_Session, AuthorizedSession):
    pass


def make_session(
    auth: str, bearer_token: str | None = None, deadline: float = REQUEST_DEADLINE
) -> requests.Session:
    """A session for ``--auth``: ``none``, ``bearer`` (static token) or ``adc`` (google-auth).

    Every request it makes ends within ``deadline`` seconds, request and response bodies
    included, or raises ``DeadlineExceeded`` (a ``requests.Timeout``).
    """
    if auth == "adc":
        credentials, _ = google.auth.default(scopes=[CLOUD_SCOPE])
        # Tokens are refreshed before they expire. No refresh-and-resend on 401: the resend
        # would reuse the request body, which is a stream that has already been consumed.
        session: requests.Session = _AuthorizedSession(credentials, refresh_status_codes=())
        return mount_deadline(session, deadline)
    session = _Session()
    if auth == "bearer":
        if not bearer_token:
            raise ValueError("--auth bearer needs --bearer_token")
        session.headers["Authorization"] = f"Bearer {bearer_token}"
    return mount_deadline(session, deadline)


class HttpDicomWebClient:
    """STOW-RS and instance DELETE against ``<address>/studies``.

    ``observer`` hears what each STOW-RS request says about the store (``StoreWatch.note``).
    """

    def __init__(
        self,
        address: str,
        session: requests.Session,
        timeout: tuple[float, float],
        orthanc_rest: str | None = None,
        observer: Callable[[StoreState], None] | None = None,
    ) -> None:
        self._base = address.rstrip("/")
        self._session = session
        self._timeout = timeout
        self._orthanc_rest = orthanc_rest.rstrip("/") if orthanc_rest else None
        self._observer = observer

    def probe(self) -> StoreState:
        """A QIDO-RS request for one study: does the store answer, and take our credentials?"""
        try:
            response = self._session.get(
                f"{self._base}/studies",
                params={"limit": "1"},
                headers={"Accept": "application/dicom+json"},
                timeout=PROBE_TIMEOUT,
            )
        except requests.RequestException as exc:
            return state_of_error(exc)
        response.close()
        if 200 <= response.status_code < 300:
            return StoreState(True, f"HTTP {response.status_code}")
        state = state_of_status(response.status_code)
        return (
            state
            if not state.reachable
            else StoreState(False, f"answered HTTP {response.status_code}")
        )

    def stow(self, study_uid: str, parts: list[tuple[BinaryIO, int]]) -> StowResponse:
        boundary = new_boundary()
        body = MultipartBody(parts, boundary)
        started = time.monotonic()
        try:
            response = self._session.post(
                f"{self._base}/studies",
                data=body,
                headers={
                    "Content-Type": content_type(boundary),
                    "Accept": "application/dicom+json",
                    "Content-Length": str(len(body)),
                },
                timeout=self._timeout,
            )
        except (requests.RequestException, GoogleAuthError) as exc:
            self._observe(state_of_error(exc))
            raise
        finally:
            metrics.STOW_SECONDS.observe(time.monotonic() - started)
        self._observe(state_of_status(response.status_code))
        # DICOM JSON is UTF-8 (PS3.18 F.2); ``response.text`` would guess the encoding of
        # every answer without a charset, at a cost larger than the rest of reading it.
        text = response.content.decode("utf-8", "replace")
        try:
            parsed = json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            parsed = None
        return StowResponse(response.status_code, parsed, text)

    def _observe(self, state: StoreState) -> None:
        if self._observer is not None:
            self._observer(state)

    def delete_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> int:
        """Delete the instance; the HTTP status (404: the store does not hold it).

        DICOMweb's instance DELETE, or, with ``orthanc_rest``, Orthanc's own REST API (its
        DICOMweb plugin answers DELETE 405).
        """
        if self._orthanc_rest is not None:
            return self._orthanc_delete(study_uid, series_uid, sop_uid)
        response = self._session.delete(
            f"{self._base}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}",
            timeout=self._timeout,
        )
        return response.status_code

    def _orthanc_delete(self, study_uid: str, series_uid: str, sop_uid: str) -> int:
        """Find the instance by its three UIDs (``/tools/find``), DELETE ``/instances/{id}``."""
        found = self._session.post(
            f"{self._orthanc_rest}/tools/find",
            json={
                "Level": "Instance",
                "Query": {
                    "StudyInstanceUID": study_uid,
                    "SeriesInstanceUID": series_uid,
                    "SOPInstanceUID": sop_uid,
                },
            },
            timeout=self._timeout,
        )
        if found.status_code != 200:
            return found.status_code
        ids = found.json() if found.text.strip() else []
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise DicomWebError("Orthanc's /tools/find answered something other than ids")
        if not ids:
            return 404
        for orthanc_id in ids:
            response = self._session.delete(
                f"{self._orthanc_rest}/instances/{quote(orthanc_id, safe='')}",
                timeout=self._timeout,
            )
            if response.status_code != 404 and not 200 <= response.status_code < 300:
                return response.status_code
        return 200

    def has_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> bool:
        """Whether the store holds the instance (QIDO-RS); raises when it cannot say."""
        response = self._session.get(
            f"{self._base}/studies/{study_uid}/series/{series_uid}/instances",
            params={"SOPInstanceUID": sop_uid, "includefield": "00080018"},
            headers={"Accept": "application/dicom+json"},
            timeout=self._timeout,
        )
        if response.status_code in (204, 404):
            return False
        if response.status_code != 200:
            raise DicomWebError(f"QIDO-RS answered HTTP {response.status_code}")
        items = response.json() if response.text.strip() else []
        return isinstance(items, list) and any(
            isinstance(item, dict) and sop_uid in (item.get("00080018", {}).get("Value") or [])
            for item in items
        )


class DicomWebError(Exception):
    """A DICOMweb request answered with an unexpected status."""


def instance_uids(
    session: requests.Session,
    address: str,
    study_uid: str,
    timeout: tuple[float, float] = (10.0, 120.0),
    page: int = 1000,
) -> set[str]:
    """The SOP Instance UIDs the store holds in a study (QIDO-RS, paged)."""
    found: set[str] = set()
    offset = 0
    while True:
        response = session.get(
            f"{address.rstrip('/')}/studies/{study_uid}/instances",
            params={"includefield": "00080018", "limit": str(page), "offset": str(offset)},
            headers={"Accept": "application/dicom+json"},
            timeout=timeout,
        )
        if response.status_code in (204, 404):
            return found
        if response.status_code != 200:
            raise DicomWebError(f"QIDO-RS answered HTTP {response.status_code}")
        items = response.json() if response.text.strip() else []
        for item in items:
            value = item.get("00080018", {}).get("Value") or []
            if value:
                found.add(str(value[0]))
        if not items:  # some servers cap the page below ``page``: stop only when empty
            return found
        offset += len(items)
