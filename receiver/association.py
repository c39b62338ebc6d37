"""One connection, from accept to close: negotiate, receive C-STORE and C-ECHO, answer, end.

The front door's contract (DESIGN.md, "The front door") is kept here:

- every read runs against a timer (``PduReader``): the A-ASSOCIATE-RQ within the ACSE
  timeout of the accept, every PDU once begun within the ACSE timeout, the next PDU within
  the network (idle) or DIMSE (mid-message) timeout;
- a dataset streams to its staging file one PDV at a time, never held in memory;
- a request that is malformed or unsupported gets a failure status on its own Message ID
  and the association goes on; only a stream that can no longer be framed is aborted;
- whatever ends the association, it leaves one log line and no staging file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

import google_crc32c

from ingest.contracts import metrics
from ingest.contracts.message import is_valid_uid

from . import dimse, pdu
from .acse_codec import (
    APPLICATION_CONTEXT,
    AssociateDecodeError,
    AssociateRequest,
    decode_associate_rq,
    encode_associate_ac,
)
from .config import HEALTH_CHECK_AE, ReceiverConfig
from .free_space import CHECK_EVERY_BYTES, SpaceGuard, disk_full_comment, is_disk_full
from .negotiation import VERIFICATION, AcceptedContext, negotiate
from .part10 import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    crc32c_b64,
    file_meta_bytes,
)
from .scan_limits import LimitExceeded, check_instance_bytes
from .staging import WRITE_BACK_EVERY, StagingFile, StagingFiles, start_write_back
from .store import ReceivedFile, Status, StoreRequest, StoreService

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ (result, source, reason), PS3.8 §9.3.4.
REJECT_CALLED_AE = (0x01, 0x01, 0x07)
REJECT_CALLING_AE = (0x01, 0x01, 0x03)
REJECT_APPLICATION_CONTEXT = (0x01, 0x01, 0x02)
REJECT_PROTOCOL_VERSION = (0x01, 0x02, 0x02)
REJECT_BUSY = (0x02, 0x03, 0x02)  # transient, local limit exceeded

UNRECOGNIZED_OPERATION = 0x0211
SOP_CLASS_NOT_SUPPORTED = 0x0122


def _tls_reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc.__class__.__name__)
    return exc.strerror or type(exc).__name__ if isinstance(exc, OSError) else str(exc)


class ProtocolViolation(pdu.FramingError):
    """PDUs that frame correctly but break the DIMSE message sequence."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, abort_reason=0x05)  # unexpected PDU parameter


SINK_BUFFER = 64 * 1024  # bytes of a dataset written to its staging file at a time


class AssociationEnded(Exception):
    """The association is over (release or abort); the outcome is set."""


@dataclass(frozen=True, slots=True)
class Transfer:
    """A C-STORE dataset being received into a staging file (for early uploads)."""

    path: Path
    dataset_offset: int  # the file holds our file meta before the dataset
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    calling_ae: str


@dataclass
class AssociationStats:
    peer: str
    calling_ae: str = ""
    called_ae: str = ""
    started: float = field(default_factory=time.monotonic)
    instances: int = 0
    failed: int = 0
    bytes: int = 0
    rejected_contexts: list[str] = field(default_factory=list)
    transport: str = "tcp"
    outcome: str = "closed"
    reason: str = ""


class SlotGate(Protocol):
    """What the association needs from its server: a slot, and whether it is stopping."""

    def acquire(self, address: str) -> bool: ...

    def stopping(self) -> bool: ...


@dataclass
class _Message:
    """A DIMSE request being received: its command, and where its dataset goes."""

    context_id: int
    command: dimse.Command
    refusal: tuple[int, str] | None = None  # answer this instead of storing
    sink: BinaryIO | None = None
    staged: StagingFile | None = None
    received: int = 0  # dataset bytes
    checksum: google_crc32c.Checksum | None = None  # of the file: meta, then the dataset
    dataset_offset: int = 0
    started: float = field(default_factory=time.monotonic)  # the command set's arrival
    space_checked: int = 0  # dataset bytes received when free space was last checked
    written_back: int = 0  # dataset bytes received when write-back last started


class Association:
    """Serves one accepted connection; ``run`` returns when it is closed."""

    def __init__(
        self,
        sock: socket.socket,
        peer: tuple[str, int],
        config: ReceiverConfig,
        service: StoreService,
        staging: StagingFiles,
        gate: SlotGate,
        is_storage: Callable[[str], bool],
        tls: ssl.SSLContext | None = None,
        space: SpaceGuard | None = None,
    ) -> None:
        self._sock: socket.socket = sock
        self._space = space
        self._tls = tls
        self._config = config
        self._service = service
        self._staging = staging
        self._gate = gate
        self._is_storage = is_storage
        self._reader: pdu.PduReader | None = None
        self._limits = config.scan_limits
        self.stats = AssociationStats(peer=f"{peer[0]}:{peer[1]}")
        self.address = peer[0]
        self.established = False
        self.holds_slot = False
        self.accepted_at = time.monotonic()
        self.transfer: Transfer | None = None
        self._accepted: dict[int, AcceptedContext] = {}
        self._peer_max_pdu = 0
        self._command = bytearray()
        self._command_context = 0
        self._message: _Message | None = None
        self._closing = threading.Event()
        self._cut = ("aborted at shutdown", "the receiver stopped")
        # Called once the association is over, after its line (``finish``).
        self.ended: Callable[[], None] | None = None
        self._finished = False

    # -- life cycle -------------------------------------------------------------------------

    def run(self, accepted_at: float) -> None:
        try:
            self._handshake(accepted_at)
            self._negotiate(accepted_at)
            while True:
                self._next_pdu()
        except AssociationEnded:
            pass
        except pdu.FramingError as exc:
            self._abort(exc.abort_reason, "aborted", str(exc))
        except pdu.PeerTimeout as exc:
            self._abort(pdu.REASON_NOT_SPECIFIED, "timed out", f"waited too long for {exc}")
        except pdu.PeerClosed as exc:
            self._end("closed", str(exc))
        except Exception as exc:  # a fault of ours: the association must still end cleanly
            log.exception("association failed", extra={"peer": self.stats.peer})
            self._abort(
                pdu.REASON_NOT_SPECIFIED, "aborted", f"internal error: {type(exc).__name__}"
            )
        finally:
            if self._closing.is_set():  # cut from outside, whatever the reader saw after that
                self._end(*self._cut)
            self._discard_message()
            with contextlib.suppress(OSError):
                self._sock.close()

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def close(
        self, outcome: str = "aborted at shutdown", reason: str = "the receiver stopped"
    ) -> None:
        """Cut the connection from another thread (shutdown after the grace period).

        Never blocks: the A-ABORT goes only if the socket takes it at once (a peer that has
        stopped reading gets none), and a TLS session is not written to from this thread;
        the shutdown goes to the descriptor itself, so a TLS reader sees the end, not the
        raw records behind it.
        """
        self._cut = (outcome, reason)
        self._closing.set()
        if self.established and self._tls is None:
            with contextlib.suppress(OSError):
                self._sock.send(pdu.abort(), socket.MSG_DONTWAIT)
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def _handshake(self, accepted_at: float) -> None:
        """TLS first, on the TLS port, under the same timer as the A-ASSOCIATE-RQ."""
        if self._tls is not None:
            self.stats.transport = "tls"
            sock = self._tls.wrap_socket(
                self._sock, server_side=True, do_handshake_on_connect=False
            )
            self._sock = sock
            remaining = accepted_at + self._config.acse_timeout - time.monotonic()
            try:
                sock.settimeout(max(remaining, 0.001))
                sock.do_handshake()
            except TimeoutError as exc:  # nothing can be sent on a half-made TLS session
                self._end("timed out", "waited too long for the TLS handshake")
                raise AssociationEnded from exc
            except (ssl.SSLError, OSError) as exc:
                self._end("refused", f"TLS handshake failed: {_tls_reason(exc)}")
                raise AssociationEnded from exc
        self._reader = pdu.PduReader(self._sock, self._config.max_pdu)

    def _end(self, outcome: str, reason: str = "") -> None:
        self.stats.outcome = outcome
        self.stats.reason = reason

    def _abort(self, reason_code: int, outcome: str, reason: str) -> None:
        self._end(outcome, reason)
        with contextlib.suppress(pdu.PeerClosed):  # the peer may be gone already
            self._send(pdu.abort(pdu.ABORT_SOURCE_PROVIDER, reason_code))

    def _send(self, data: bytes) -> None:
        self._sock.settimeout(self._config.network_timeout)
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise pdu.PeerClosed(f"send failed: {exc.strerror or exc}") from exc

    # -- association establishment ------------------------------------------------------------

    def _negotiate(self, accepted_at: float) -> None:
        deadline = accepted_at + self._config.acse_timeout
        assert self._reader is not None
        pdu_type, body = self._reader.read(deadline, self._config.acse_timeout, first_pdu=True)
        if pdu_type == pdu.ABORT:  # PS3.8 Sta2: close, answer nothing
            self._end("aborted by peer")
            raise AssociationEnded
        try:
            request = decode_associate_rq(bytes(body))
        except AssociateDecodeError as exc:
            raise pdu.FramingError(f"undecodable A-ASSOCIATE-RQ: {exc}") from exc
        self.stats.calling_ae, self.stats.called_ae = request.calling_ae, request.called_ae
        refusal = self._refusal(request)
        if refusal is not None:
            (result, source, reason), why = refusal
            self._send(pdu.reject(result, source, reason))
            self._end("rejected", why)
            raise AssociationEnded
        negotiated = negotiate(request, self._is_storage)
        self._accepted = negotiated.accepted
        self.stats.rejected_contexts = negotiated.rejected
        self._peer_max_pdu = request.max_pdu
        self._send(
            encode_associate_ac(
                request,
                negotiated.results,
                self._config.max_pdu,
                IMPLEMENTATION_CLASS_UID,
                IMPLEMENTATION_VERSION_NAME,
            )
        )
        self.established = True

    def _refusal(self, request: AssociateRequest) -> tuple[tuple[int, int, int], str] | None:
        if not request.protocol_version & 1:
            return REJECT_PROTOCOL_VERSION, "protocol version not supported"
        if request.application_context != APPLICATION_CONTEXT:
            return REJECT_APPLICATION_CONTEXT, "application context not supported"
        if request.called_ae != self._config.dimse_aet:
            return REJECT_CALLED_AE, "called AE title not recognised"
        if not self._config.allows(request.calling_ae, self.address):
            return REJECT_CALLING_AE, "calling AE title not allowed"
        if self._gate.stopping():
            return REJECT_BUSY, "the receiver is stopping"
        if not self._gate.acquire(self.address):
            return REJECT_BUSY, "association limit reached"
        self.holds_slot = True
        return None

    # -- data transfer ------------------------------------------------------------------------

    def _next_pdu(self) -> None:
        config = self._config
        idle = config.dimse_timeout if self._message is not None else config.network_timeout
        assert self._reader is not None
        pdu_type, body = self._reader.read(time.monotonic() + idle, config.acse_timeout)
        if pdu_type == pdu.P_DATA_TF:
            for pdv in pdu.pdvs(body):
                self._pdv(pdv)
        elif pdu_type == pdu.RELEASE_RQ:
            if self._message is not None:
                self._end("released", "a request was cut short by the release")
            else:
                self._end("released")
            self._discard_message()
            # Said before the PACS hears the release is done: a process that ends just after
            # (a receive process killed) has written the line already.
            self.finish()
            self._send(pdu.RELEASE_RESPONSE)
            raise AssociationEnded
        elif pdu_type == pdu.ABORT:
            self._end("aborted by peer")
            raise AssociationEnded
        else:
            raise pdu.FramingError(
                f"unexpected {pdu.PDU_NAMES[pdu_type]}", pdu.REASON_UNEXPECTED_PDU
            )

    def _pdv(self, pdv: pdu.Pdv) -> None:
        if pdv.context_id not in self._accepted:
            raise pdu.FramingError(
                f"P-DATA on presentation context {pdv.context_id}, which was not accepted"
            )
        message = self._message
        if pdv.command:
            if message is not None:
                raise ProtocolViolation("a command began before the last request's data set")
            if self._command_context and pdv.context_id != self._command_context:
                raise ProtocolViolation("a command changed presentation context mid-way")
            self._command_context = pdv.context_id
            self._command += pdv.data
            if len(self._command) > dimse.MAX_COMMAND_BYTES:
                raise ProtocolViolation("a command set exceeds 64 KiB")
            if pdv.last:
                self._begin_message()
            return
        if message is None or not message.command.has_dataset:
            raise ProtocolViolation("a data set arrived without its command")
        if pdv.context_id != message.context_id:
            raise ProtocolViolation("a data set changed presentation context mid-way")
        message.received += len(pdv.data)
        if message.sink is not None:
            try:
                check_instance_bytes(message.received, self._limits)
                data = bytes(pdv.data)  # the CRC32C extension reads only bytes
                message.sink.write(data)
                assert message.checksum is not None
                message.checksum.update(data)
                if (
                    self._staging.write_back
                    and not pdv.last
                    and message.received - message.written_back >= WRITE_BACK_EVERY
                ):
                    message.sink.flush()
                    start_write_back(message.sink.fileno())
                    message.written_back = message.received
            except LimitExceeded as exc:
                self._discard_message(keep_command=True)
                message.refusal = (Status.CANNOT_UNDERSTAND, f"Refused: {exc}")
            except OSError as exc:  # the staging disk: this instance fails, not the push
                self._staging_failed(message, exc)
            else:
                if message.received - message.space_checked >= CHECK_EVERY_BYTES:
                    message.space_checked = message.received
                    self._check_space(message)
        if pdv.last:
            self._complete(message)

    def _begin_message(self) -> None:
        data, self._command = bytes(self._command), bytearray()
        context, self._command_context = self._command_context, 0
        try:
            command = dimse.parse_command(data)
        except dimse.CommandError as exc:
            # Whether a data set follows is unknown: the stream can no longer be followed.
            raise ProtocolViolation(f"unreadable command set: {exc}") from exc
        message = _Message(context, command)
        if command.command_field == dimse.C_STORE_RQ:
            message.refusal = self._store_refusal(command, context)
            if message.refusal is None and self._space is not None:
                shortage = self._space.shortage()  # before the first byte is written
                if shortage is not None:
                    message.refusal = (Status.STORAGE_UNAVAILABLE, shortage.comment())
            if message.refusal is None:
                try:
                    self._open_sink(message)
                except OSError as exc:
                    self._staging_failed(message, exc)
        elif command.command_field == dimse.C_ECHO_RQ:
            if self._accepted[context].abstract_syntax != VERIFICATION:
                message.refusal = (SOP_CLASS_NOT_SUPPORTED, "C-ECHO outside Verification")
            elif command.has_dataset:
                message.refusal = (Status.CANNOT_UNDERSTAND, "C-ECHO with a data set")
        else:
            message.refusal = (UNRECOGNIZED_OPERATION, "Operation not supported here")
        if command.has_dataset:
            self._message = message
        else:
            self._complete(message)

    def _store_refusal(self, command: dimse.Command, context_id: int) -> tuple[int, str] | None:
        context = self._accepted[context_id]
        if not command.has_dataset:
            return Status.CANNOT_UNDERSTAND, "C-STORE request without a data set"
        if command.message_id is None:
            return Status.CANNOT_UNDERSTAND, "C-STORE request lacks a Message ID"
        if not is_valid_uid(command.sop_instance_uid):
            return Status.DATASET_MISMATCH, "Request lacks a valid Affected SOP Instance UID"
        sop_class = command.sop_class_uid
        if context.abstract_syntax == VERIFICATION or not self._is_storage(sop_class):
            return SOP_CLASS_NOT_SUPPORTED, "SOP class not supported for storage"
        if sop_class != context.abstract_syntax:
            return SOP_CLASS_NOT_SUPPORTED, "SOP class differs from its presentation context"
        return None

    def _check_space(self, message: _Message) -> None:
        """Below the free-space watermark mid-way: the instance is refused like a full disk."""
        assert self._space is not None
        shortage = self._space.shortage()
        if shortage is not None:
            self._drop_dataset(message, shortage.comment())

    def _staging_failed(self, message: _Message, exc: OSError) -> None:
        """A staging file that cannot be written: 0xA700 for this instance, the rest of its
        data set read and dropped, the association going on."""
        log.warning(
            "staging write failed: %s",
            exc.strerror or type(exc).__name__,
            extra={"sop_instance_uid": message.command.sop_instance_uid},
        )
        full = is_disk_full(exc)
        self._drop_dataset(
            message, disk_full_comment(exc) if full else "Storage unavailable; retry later"
        )

    def _drop_dataset(self, message: _Message, comment: str) -> None:
        """0xA700 for this instance: its staging file removed, the rest of its data set read
        and dropped, the association going on."""
        self._message = message  # kept while its data set is read and dropped
        self._discard_message(keep_command=True)
        message.refusal = (Status.STORAGE_UNAVAILABLE, comment)

    def _open_sink(self, message: _Message) -> None:
        """Write the instance's Part-10 file as it arrives: our file meta, then each PDV."""
        command = message.command
        syntax = self._accepted[message.context_id].transfer_syntax
        meta = file_meta_bytes(
            command.sop_class_uid, command.sop_instance_uid, syntax, self.stats.calling_ae
        )
        staged = self._staging.create()
        # Closed in _complete or _discard. The buffer holds a small instance whole, so it is
        # written in one go (and its size spares the check for a terminal).
        message.sink = os.fdopen(staged.fd, "wb", buffering=SINK_BUFFER)
        message.staged = staged
        message.sink.write(meta)
        message.checksum = google_crc32c.Checksum(meta)
        message.dataset_offset = len(meta)
        self.transfer = Transfer(
            staged.path,
            len(meta),
            command.sop_class_uid,
            command.sop_instance_uid,
            syntax,
            self.stats.calling_ae,
        )

    def _complete(self, message: _Message) -> None:
        self._message = None
        command = message.command
        status, comment = message.refusal or (Status.SUCCESS, "")
        if message.sink is not None and message.staged is not None:
            try:
                # The last buffered bytes reach the file here. It stays open until stored:
                # an anonymous file's name lasts only as long as its descriptor.
                message.sink.flush()
            except OSError as exc:
                self._staging_failed(message, exc)
                self._message = None
                status, comment = message.refusal or (Status.STORAGE_UNAVAILABLE, "")
        if message.sink is not None and message.staged is not None:
            try:
                status, comment = self._store(message, message.staged.path)
            finally:
                self.transfer = None
                with contextlib.suppress(OSError):  # stored or not, its data is dealt with
                    message.sink.close()
                self._staging.remove(message.staged)  # a file the store did not take
        elif command.command_field == dimse.C_STORE_RQ:
            self._refused(command.sop_instance_uid, command.sop_class_uid, int(status), comment)
        if command.command_field == dimse.C_CANCEL_RQ or command.command_field & dimse.RESPONSE_BIT:
            return  # nothing answers a cancel (or a response sent to us)
        response = dimse.response(command, int(status), comment)
        try:
            self._send(pdu.p_data(message.context_id, response, self._peer_max_pdu))
        finally:
            if command.command_field == dimse.C_STORE_RQ:
                elapsed = time.monotonic() - message.started
                metrics.record_instance(int(status), message.received, elapsed)

    def _store(self, message: _Message, path: Path) -> tuple[int, str]:
        command = message.command
        assert message.checksum is not None
        received = ReceivedFile(
            path,
            message.dataset_offset,
            message.dataset_offset + message.received,
            crc32c_b64(int.from_bytes(message.checksum.digest(), "big")),
        )
        request = StoreRequest(
            sop_class_uid=command.sop_class_uid,
            sop_instance_uid=command.sop_instance_uid,
            transfer_syntax_uid=self._accepted[message.context_id].transfer_syntax,
            calling_ae=self.stats.calling_ae,
            called_ae=self.stats.called_ae,
        )
        result = self._service.store(request, received)
        if result.ok:
            self.stats.instances += 1
            self.stats.bytes += result.size
            log.debug(
                "stored instance",
                extra={
                    "sop_instance_uid": request.sop_instance_uid,
                    "message_id": result.message_id,
                },
            )
        else:
            self._refused(
                request.sop_instance_uid, request.sop_class_uid, result.status, result.comment
            )
        return result.status, result.comment

    def _refused(self, sop_instance: str, sop_class: str, status: int, reason: str) -> None:
        """Count and log one C-STORE answered with a failure status (UIDs only)."""
        self.stats.failed += 1
        log.warning(
            "instance refused",
            extra={
                "sop_instance_uid": sop_instance,
                "sop_class_uid": sop_class,
                "status": f"0x{status:04X}",
                "reason": reason,
                "calling_ae": self.stats.calling_ae,
            },
        )

    def _discard_message(self, keep_command: bool = False) -> None:
        """Close and remove a dataset being received; forget the request unless kept."""
        message = self._message
        if message is not None and message.sink is not None:
            with contextlib.suppress(OSError):
                message.sink.close()
            if message.staged is not None:
                self._service.cancel(message.staged.path)
                with contextlib.suppress(OSError):
                    self._staging.remove(message.staged)
            message.sink = message.staged = None
            self.transfer = None
        if not keep_command:
            self._message = None

    # -- the closing line ---------------------------------------------------------------------

    def finish(self) -> None:
        """Once, when the association is over: its line, then ``ended``."""
        if self._finished:
            return
        self._finished = True
        self.log_line()
        if self.ended is not None:
            self.ended()

    def log_line(self) -> None:
        """The association's one line, each figure once; also counted by its outcome."""
        stats = self.stats
        outcome = stats.outcome
        quiet = outcome == "released" and not stats.failed and not stats.reason
        level = logging.INFO if quiet else logging.WARNING
        if stats.calling_ae == HEALTH_CHECK_AE and outcome == "released":
            level = logging.DEBUG  # the readiness probe, every few seconds: not counted
        else:
            metrics.record_association(outcome)
        extra: dict[str, object] = {
            "peer": stats.peer,
            "calling_ae": stats.calling_ae,
            "called_ae": stats.called_ae,
            "instances": stats.instances,
            "failed": stats.failed,
            "bytes": stats.bytes,
            "outcome": outcome,
            "transport": stats.transport,
            "seconds": round(time.monotonic() - stats.started, 3),
        }
        if stats.reason:
            extra["reason"] = stats.reason
        if stats.rejected_contexts:
            extra["rejected_contexts"] = ",".join(stats.rejected_contexts)
        log.log(level, "association %s", outcome, extra=extra)
