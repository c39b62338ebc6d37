"""The receiver's configuration: one frozen, validated object built from flags and environment."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.contracts.message import is_valid_uid
from ingest.contracts.settings import (
    ConfigError,
    ae_title,
    build,
    byte_size,
    count,
    flags_of,
    number,
    parse_bool,
    parse_list,
    port,
    readable_file,
    seconds,
    setting,
)

from .scan_limits import ScanLimits
from .tls import TlsFiles

_SCAN_DEFAULTS = ScanLimits()
# The receive buffer of a connection is one P-DATA-TF: bounded, so memory is too.
MIN_PDU, MAX_PDU = 4096, 4 << 20
# The calling AE title of the receiver's C-ECHO to itself (readiness), allowed from loopback.
HEALTH_CHECK_AE = "DI-HEALTHCHECK"


def _check_ae(value: str, what: str) -> str:
    try:
        return ae_title(value)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class PeerRule:
    """A calling AE title, optionally bound to a source network."""

    ae_title: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None

    @classmethod
    def parse(cls, text: str) -> PeerRule:
        title, _, address = text.partition("@")
        network = None
        if address:
            try:
                network = ipaddress.ip_network(address, strict=False)
            except ValueError as exc:
                raise ConfigError(f"--allowed_calling_aets: {address!r}: {exc}") from exc
        return cls(_check_ae(title, "--allowed_calling_aets"), network)

    def matches(self, ae_title: str, address: str) -> bool:
        if ae_title.strip() != self.ae_title:
            return False
        if self.network is None:
            return True
        try:
            return ipaddress.ip_address(address) in self.network
        except ValueError:
            return False


def _peer_rules(text: str) -> tuple[PeerRule, ...]:
    return tuple(PeerRule.parse(item) for item in parse_list(text))


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    dimse_aet: str = setting("AE title this receiver answers to", "IMPORTADAPTER", ae_title)
    dimse_port: int = setting("TCP port for DIMSE associations", 2575, port)
    # A PACS-facing service listens on its load balancer's address.
    dimse_bind: str = setting("address to listen on", "0.0.0.0")  # noqa: S104
    allowed_peers: tuple[PeerRule, ...] = setting(
        "comma-separated calling AE titles allowed to associate, each optionally AET@ADDRESS or"
        " AET@CIDR; empty allows any",
        (),
        _peer_rules,
        flag="allowed_calling_aets",
    )
    max_associations: int = setting("concurrent associations before rejecting", 32, count)
    max_connections_per_host: int = setting(
        "concurrent connections from one source address, negotiating or associated", 16, count
    )
    max_pdu: int = setting(
        "maximum P-DATA-TF length we receive, in bytes (4096-4194304; each connection's buffer)",
        262144,
        byte_size,
    )
    acse_timeout: float = setting(
        "seconds from connect to A-ASSOCIATE-RQ, and for any PDU once begun", 10.0, seconds
    )
    dimse_timeout: float = setting(
        "seconds to wait between the PDUs of one DIMSE message", 60.0, seconds
    )
    network_timeout: float = setting("seconds an idle association is kept open", 60.0, seconds)
    extra_sop_classes: tuple[str, ...] = setting(
        "comma-separated private storage SOP class UIDs", (), parse_list
    )
    accept_storage_root: bool = setting(
        "accept any SOP class UID under 1.2.840.10008.5.1.4.1.1. as storage (classes newer"
        " than the receiver's list)",
        True,
        parse_bool,
    )
    max_instance_bytes: int = setting(
        "largest dataset accepted, in bytes (0: no limit); larger ones get 0xC000", 0, byte_size
    )
    max_nesting_depth: int = setting(
        "deepest sequence nesting accepted (defined and undefined length alike); deeper"
        " datasets get 0xC000",
        _SCAN_DEFAULTS.max_depth,
        count,
    )
    max_inflated_bytes: int = setting(
        "bytes a deflated dataset may inflate to (0: no limit)",
        _SCAN_DEFAULTS.max_inflated_bytes,
        byte_size,
    )
    max_inflate_ratio: int = setting(
        "inflated bytes per deflated byte, judged after 16 MiB (0: no limit)",
        _SCAN_DEFAULTS.max_inflate_ratio,
        count,
    )
    tls_cert: str = setting(
        "PEM certificate (chain) for DICOM TLS; enables the TLS port", "", readable_file
    )
    tls_key: str = setting("PEM private key of --tls_cert", "", readable_file)
    tls_ca: str = setting(
        "PEM CA certificates: require client certificates signed by them", "", readable_file
    )
    tls_port: int = setting(
        "TCP port for DICOM TLS associations (2762 is DICOM's TLS port)", 2762, port
    )
    tls_only: bool = setting("serve only the TLS port, not --dimse_port", False, parse_bool)
    shutdown_grace: float = setting("seconds to let associations finish on SIGTERM", 30.0, seconds)
    min_free_bytes: int = setting(
        "free bytes the spool's disk must keep: below, C-STORE gets 0xA700 (0: no limit)",
        1 << 30,
        byte_size,
    )
    min_free_percent: float = setting(
        "free share of the spool's disk, in percent, it must keep: below, C-STORE gets 0xA700"
        " (0: no limit)",
        5.0,
        number,
    )

    def __post_init__(self) -> None:
        _check_ae(self.dimse_aet, "--dimse_aet")
        if not 0 <= self.dimse_port <= 65535:
            raise ConfigError("--dimse_port must be between 0 and 65535")
        if self.max_associations < 1:
            raise ConfigError("--max_associations must be at least 1")
        if self.max_connections_per_host < 1:
            raise ConfigError("--max_connections_per_host must be at least 1")
        if not MIN_PDU <= self.max_pdu <= MAX_PDU:
            raise ConfigError(f"--max_pdu must be between {MIN_PDU} and {MAX_PDU}")
        for name in ("acse_timeout", "dimse_timeout", "network_timeout", "shutdown_grace"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name} must be positive")
        for uid in self.extra_sop_classes:
            if not is_valid_uid(uid):
                raise ConfigError(f"--extra_sop_classes: {uid!r} is not a valid UID")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("--tls_cert and --tls_key go together")
        if (self.tls_ca or self.tls_only) and not self.tls_cert:
            raise ConfigError("--tls_ca and --tls_only need --tls_cert and --tls_key")
        if not 0 <= self.tls_port <= 65535:
            raise ConfigError("--tls_port must be between 0 and 65535")
        if self.min_free_bytes < 0:
            raise ConfigError("--min_free_bytes must be 0 or more")
        if not 0 <= self.min_free_percent < 100:
            raise ConfigError("--min_free_percent must be at least 0 and below 100")
        try:
            self.scan_limits  # noqa: B018 - validates the content limits
        except ValueError as exc:
            raise ConfigError(f"content limits: {exc}") from exc

    @property
    def scan_limits(self) -> ScanLimits:
        """The content limits of the dataset check (``--max_nesting_depth`` and others)."""
        return ScanLimits(
            max_depth=self.max_nesting_depth,
            max_inflated_bytes=self.max_inflated_bytes,
            max_inflate_ratio=self.max_inflate_ratio,
            max_instance_bytes=self.max_instance_bytes,
        )

    @property
    def tls_files(self) -> TlsFiles | None:
        if not self.tls_cert:
            return None
        ca = Path(self.tls_ca) if self.tls_ca else None
        return TlsFiles(Path(self.tls_cert), Path(self.tls_key), ca)

    def allows(self, calling_ae: str, address: str) -> bool:
        """True when the calling AE (from that address) may associate."""
        if not self.allowed_peers:
            return True
        if calling_ae == HEALTH_CHECK_AE and address in ("127.0.0.1", "::1", self.dimse_bind):
            return True  # the receiver's own readiness check
        return any(rule.matches(calling_ae, address) for rule in self.allowed_peers)

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> ReceiverConfig:
        return build(cls, values)


FLAGS = flags_of(ReceiverConfig)
