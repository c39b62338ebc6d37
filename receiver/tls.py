"""DICOM TLS (PS3.15 Annex B.9, the BCP 195 profile) for the receiver's TLS port.

TLS 1.2 or later with the forward-secret AEAD suites BCP 195 recommends. With a CA file the
receiver requires a client certificate and verifies it against that CA; without one, any
peer may connect (the server is authenticated, the peer is not). The certificate, key and
CA files are read again when they change (a renewed certificate, a rotated Kubernetes
secret), so renewal needs no restart; a half-written file keeps the previous context.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# BCP 195 (RFC 9325 §4.2) suites for TLS 1.2; TLS 1.3 suites are all AEAD and always on.
BCP195_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"
RELOAD_CHECK_SECONDS = 1.0


class TlsConfigError(ValueError):
    """The certificate, key or CA cannot be loaded."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path | None = None

    def signature(self) -> tuple[tuple[int, int], ...]:
        """What changes when any of the files is replaced."""
        paths = [self.cert, self.key] + ([self.ca] if self.ca else [])
        out = []
        for path in paths:
            try:
                stat = os.stat(path)
            except OSError:
                out.append((-1, -1))
            else:
                out.append((stat.st_mtime_ns, stat.st_size))
        return tuple(out)


def build_context(files: TlsFiles) -> ssl.SSLContext:
    """A server context for the BCP 195 profile; TlsConfigError if the files do not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    try:
        context.load_cert_chain(files.cert, files.key)
        if files.ca is not None:
            context.load_verify_locations(cafile=files.ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"cannot load the TLS certificate, key or CA: {exc}") from exc
    return context


class TlsContexts:
    """The current server context, rebuilt when its files change."""

    def __init__(self, files: TlsFiles) -> None:
        self._files = files
        self._lock = threading.Lock()
        self._signature = files.signature()
        self._context = build_context(files)  # fails start-up loudly if unusable
        self._checked = time.monotonic()

    def current(self) -> ssl.SSLContext:
        now = time.monotonic()
        with self._lock:
            if now - self._checked < RELOAD_CHECK_SECONDS:
                return self._context
            self._checked = now
            signature = self._files.signature()
            if signature == self._signature:
                return self._context
            try:
                context = build_context(self._files)
            except TlsConfigError as exc:
                log.warning("TLS files changed but do not load; keeping the previous: %s", exc)
                return self._context
            self._context, self._signature = context, signature
            log.info("TLS certificate reloaded")
            return context
