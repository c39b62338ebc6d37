"""The storage SCP: presentation contexts, association policy, server start and drain."""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import socketserver
import threading
import time
from typing import Any

from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.acse import ACSE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import register_uid
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from .config import ReceiverConfig
from .handlers import (
    AssociationLog,
    handle_conn_close,
    handle_echo,
    handle_established,
    handle_rejected,
    handle_store,
)
from .part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from .store import StoreService

log = logging.getLogger(__name__)

# Result, source, reason of A-ASSOCIATE-RJ (PS3.8 9.3.4): rejected-permanent, service-user,
# calling-AE-title-not-recognized.
REJECT_CALLING_AE = (0x01, 0x01, 0x03)
VERIFICATION = "1.2.840.10008.1.1"


def storage_sop_classes(extra: tuple[str, ...] = ()) -> list[str]:
    """Every standard storage SOP class, then the configured private ones.

    Private ones are registered with pynetdicom's Storage Service Class (a process-wide
    registry; registering the same UID again is harmless), else it would not route their
    C-STORE requests to our handler.
    """
    uids = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]
    private = [uid for uid in extra if uid not in uids]
    for uid in private:
        register_uid(uid, "DicomIngestStorage_" + uid.replace(".", "_"), StorageServiceClass)
    return uids + private


class _PolicyACSE(ACSE):
    """ACSE that refuses calling AE titles (and source addresses) outside the allow-list."""

    def __init__(self, assoc: Any, config: ReceiverConfig) -> None:
        super().__init__(assoc)
        self._config = config

    def _negotiate_as_acceptor(self) -> None:
        primitive = self.requestor.primitive
        if primitive is None:
            super()._negotiate_as_acceptor()
            return
        calling = str(primitive.calling_ae_title).strip()
        address = str(self.requestor.address)
        if not self._config.allows(calling, address):
            log.warning(
                "association rejected: calling AE not allowed",
                extra={"calling_ae": calling, "peer": address},
            )
            self.send_reject(*REJECT_CALLING_AE)
            evt.trigger(self.assoc, evt.EVT_REJECTED, {})
            self.assoc.kill()
            return
        super()._negotiate_as_acceptor()

    def send_accept(self) -> None:
        """Accept, per presentation context, the transfer syntax the PACS lists first.

        pynetdicom picks by the acceptor's order and keeps one order per SOP class, so two
        contexts for CT (one offered [Explicit, Implicit], one [Implicit]) would both get the
        same pick. We support every syntax for every context, so each context instead gets
        the requestor's first choice: the instance arrives as the PACS holds it and we never
        ask for a conversion.
        """
        primitive = self.requestor.primitive
        assert primitive is not None  # set before negotiation starts
        requested = {
            rq.context_id: [str(t) for t in rq.transfer_syntax]
            for rq in primitive.presentation_context_definition_list
        }
        supported = {
            str(cx.abstract_syntax): {str(t) for t in cx.transfer_syntax}
            for cx in self.acceptor.supported_contexts
        }
        for cx in self.assoc.accepted_contexts:
            ours = supported.get(str(cx.abstract_syntax), set())
            choice = next((t for t in requested.get(cx.context_id, []) if t in ours), None)
            if choice is not None and choice != str(cx.transfer_syntax[0]):
                cx.transfer_syntax = [choice]
        super().send_accept()


# The DUL thread polls its socket and its send queue, sleeping between polls when there is
# nothing to do. pynetdicom sleeps 1 ms; while a PACS is sending, that tick is paid on every
# request and every response. Busy associations poll every 0.2 ms, idle ones every 2 ms.
_BUSY_DELAY, _IDLE_DELAY, _BUSY_WINDOW = 0.0002, 0.002, 0.5


class _AdaptiveDUL(DULServiceProvider):
    """pynetdicom's DUL with a poll interval that follows the association's activity."""

    @property
    def _run_loop_delay(self) -> float:
        # The idle timer restarts whenever a PDU arrives.
        last = getattr(self._idle_timer, "_start_time", None)
        if last is not None and time.time() - last < _BUSY_WINDOW:
            return _BUSY_DELAY
        return _IDLE_DELAY

    @_run_loop_delay.setter
    def _run_loop_delay(self, value: float) -> None:
        """pynetdicom's constructor sets a fixed delay; the property above replaces it."""


# How long the association's reactor waits for the next DIMSE message before it goes round its
# loop again (to check for release, abort and timeouts).
_MESSAGE_WAIT = 0.02


def _wake_on_message(dimse: Any) -> None:
    """Let the association reactor wake as soon as a DIMSE message is complete.

    pynetdicom's acceptor reactor sleeps 1 ms, then polls its message queue without blocking,
    so every C-STORE waits for the next tick. Its only non-blocking poll is that one; making
    it a short blocking wait on the queue removes the tick from each instance's latency.
    """
    original = dimse.get_msg

    def get_msg(block: bool = False) -> Any:
        if block:
            return original(block=True)
        try:
            return dimse.msg_queue.get(block=True, timeout=_MESSAGE_WAIT)
        except queue.Empty:
            return None, None

    dimse.get_msg = get_msg


def _request_handler(config: ReceiverConfig) -> type[RequestHandler]:
    class PolicyRequestHandler(RequestHandler):
        def _create_association(self) -> Any:
            # Debian's DCMTK and many PACS leave Nagle on; each small response would wait
            # for a delayed ACK. The receiver sets TCP_NODELAY on every accepted socket.
            with contextlib.suppress(OSError):
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            assoc = super()._create_association()
            assoc.acse = _PolicyACSE(assoc, config)
            assoc.dul.__class__ = _AdaptiveDUL
            _wake_on_message(assoc.dimse)
            return assoc

    return PolicyRequestHandler


class _Server(ThreadedAssociationServer):
    def __init__(self, *args: Any, config: ReceiverConfig, **kwargs: Any) -> None:
        kwargs["request_handler"] = _request_handler(config)
        super().__init__(*args, **kwargs)


class Receiver:
    """A running storage SCP; ``stop`` drains associations within the grace period."""

    def __init__(self, config: ReceiverConfig, service: StoreService) -> None:
        self.config = config
        self._associations = AssociationLog()
        ae = AE(ae_title=config.dimse_aet)
        ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
        ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
        ae.maximum_associations = config.max_associations
        ae.maximum_pdu_size = config.max_pdu
        ae.acse_timeout = config.acse_timeout
        ae.dimse_timeout = config.dimse_timeout
        ae.network_timeout = config.network_timeout
        ae.require_called_aet = True
        for uid in storage_sop_classes(config.extra_sop_classes):
            ae.add_supported_context(uid, list(AllTransferSyntaxes))
        ae.add_supported_context(VERIFICATION, list(AllTransferSyntaxes))
        self._ae = ae
        handlers: list[Any] = [
            (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_C_STORE, handle_store, [service, self._associations]),
            (evt.EVT_ESTABLISHED, handle_established, [self._associations]),
            (evt.EVT_REJECTED, handle_rejected, [self._associations]),
            (evt.EVT_CONN_CLOSE, handle_conn_close, [self._associations]),
        ]
        self._server: Any = ae.make_server(
            (config.dimse_bind, config.dimse_port),
            evt_handlers=handlers,
            server_class=_Server,
            config=config,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="dimse-server",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.debug(
            "listening",
            extra={"ae_title": self.config.dimse_aet, "port": self.port},
        )

    @property
    def server(self) -> Any:
        """The pynetdicom association server (its active associations, for watchers)."""
        return self._server

    def serving(self) -> bool:
        """True while the listener thread runs."""
        return self._thread.is_alive()

    def active_associations(self) -> int:
        return len(self._server.active_associations)

    def stop(self, grace: float | None = None) -> bool:
        """Stop accepting, let associations finish, abort what is left; True if all finished."""
        grace = self.config.shutdown_grace if grace is None else grace
        socketserver.BaseServer.shutdown(self._server)
        self._server.server_close()
        deadline = time.monotonic() + grace
        while self._server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        remaining = list(self._server.active_associations)
        for assoc in remaining:
            log.warning("aborting association at shutdown", extra={"peer": assoc.requestor.address})
            assoc.abort()
        self._thread.join(timeout=5)
        return not remaining
