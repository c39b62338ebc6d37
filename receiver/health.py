"""The receiver's readiness check: a real C-ECHO from this process to its own DIMSE port.

"Ready" means an association can be made and answered. The HTTP server that answers the
probes (and serves ``/metrics``) is ``ingest.adapters.health.HealthServer``.
"""

from __future__ import annotations

from collections.abc import Callable

from pynetdicom import AE

from ingest.adapters.health import Check, HealthServer

from .config import HEALTH_CHECK_AE

__all__ = ["Check", "HealthServer", "echo_check"]

VERIFICATION = "1.2.840.10008.1.1"


def echo_check(
    port: int,
    called_ae: str,
    listening: Callable[[], bool] = lambda: True,
    saturated: Callable[[], bool] = lambda: False,
    timeout: float = 1.5,
    host: str = "127.0.0.1",
    probe: bool = True,
) -> Check:
    """A check that opens an association to ``127.0.0.1:port`` and sends C-ECHO.

    A receiver at its association limit would refuse the check's own association; it is
    serving, so the check then only asks that the port accepts connections. Each step waits
    at most ``timeout``, so the whole check stays within a 5 s probe. Without ``probe`` (a
    receiver that serves only DICOM TLS, where the check would need a client certificate)
    only the listener is checked.
    """

    def check() -> str | None:
        # No bare TCP probe: the receiver would hold such a connection open for an
        # association request until its ACSE timeout.
        if not listening():
            return "the DIMSE listener has stopped"
        if saturated() or not probe:
            return None
        ae = AE(ae_title=HEALTH_CHECK_AE)
        ae.add_requested_context(VERIFICATION)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        assoc = ae.associate(host, port, ae_title=called_ae)
        if not assoc.is_established:
            return "C-ECHO association to the receiver was not accepted"
        try:
            status = assoc.send_c_echo()
        finally:
            assoc.release()
        if not status or getattr(status, "Status", None) != 0:
            return "C-ECHO to the receiver did not succeed"
        return None

    return check
