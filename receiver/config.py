"""The receiver's configuration: one frozen, validated object built from flags and environment."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicom_ingest.flags import ConfigError, Flag, parse_bool, parse_list
from dicom_ingest.message import is_valid_uid

from .scan_limits import ScanLimits
from .tls import TlsFiles

_SCAN_DEFAULTS = ScanLimits()

FLAGS = (
    Flag("dimse_aet", "AE title this receiver answers to", "IMPORTADAPTER"),
    Flag("dimse_port", "TCP port for DIMSE associations", 2575, int),
    Flag("dimse_bind", "address to listen on", "0.0.0.0"),  # noqa: S104
    Flag(
        "allowed_calling_aets",
        "comma-separated calling AE titles allowed to associate, each optionally AET@ADDRESS or"
        " AET@CIDR; empty allows any",
        (),
        parse_list,
    ),
    Flag("max_associations", "concurrent associations before rejecting", 32, int),
    Flag(
        "max_connections_per_host",
        "concurrent connections from one source address, negotiating or associated",
        16,
        int,
    ),
    Flag(
        "max_pdu",
        "maximum P-DATA-TF length we receive, in bytes (4096-4194304; each connection's buffer)",
        262144,
        int,
    ),
    Flag(
        "acse_timeout",
        "seconds from connect to A-ASSOCIATE-RQ, and for any PDU once begun",
        10.0,
        float,
    ),
    Flag("dimse_timeout", "seconds to wait for DIMSE messages", 60.0, float),
    Flag("network_timeout", "seconds an idle association is kept open", 60.0, float),
    Flag("extra_sop_classes", "comma-separated private storage SOP class UIDs", (), parse_list),
    Flag(
        "accept_storage_root",
        "accept any SOP class UID under 1.2.840.10008.5.1.4.1.1. as storage (classes newer"
        " than the receiver's list)",
        True,
        parse_bool,
    ),
    Flag(
        "max_instance_bytes",
        "largest dataset accepted, in bytes (0: no limit); larger ones get 0xC000",
        0,
        int,
    ),
    Flag(
        "max_nesting_depth",
        "deepest sequence nesting accepted (defined and undefined length alike); deeper"
        " datasets get 0xC000",
        _SCAN_DEFAULTS.max_depth,
        int,
    ),
    Flag(
        "max_inflated_bytes",
        "bytes a deflated dataset may inflate to (0: no limit)",
        _SCAN_DEFAULTS.max_inflated_bytes,
        int,
    ),
    Flag(
        "max_inflate_ratio",
        "inflated bytes per deflated byte, judged after 16 MiB (0: no limit)",
        _SCAN_DEFAULTS.max_inflate_ratio,
        int,
    ),
    Flag("tls_cert", "PEM certificate (chain) for DICOM TLS; enables the TLS port", ""),
    Flag("tls_key", "PEM private key of --tls_cert", ""),
    Flag("tls_ca", "PEM CA certificates: require client certificates signed by them", ""),
    Flag("tls_port", "TCP port for DICOM TLS associations (2762 is DICOM's TLS port)", 2762, int),
    Flag("tls_only", "serve only the TLS port, not --dimse_port", False, parse_bool),
    Flag("shutdown_grace", "seconds to let associations finish on SIGTERM", 30.0, float),
)

AE_TITLE_MAX = 16
# The receive buffer of a connection is one P-DATA-TF: bounded, so memory is too.
MIN_PDU, MAX_PDU = 4096, 4 << 20
# The calling AE title of the receiver's C-ECHO to itself (readiness), allowed from loopback.
HEALTH_CHECK_AE = "DI-HEALTHCHECK"


def _check_ae(value: str, what: str) -> str:
    value = value.strip()
    if not value or len(value) > AE_TITLE_MAX or "\\" in value or not value.isprintable():
        raise ConfigError(f"{what}: {value!r} is not a valid AE title (1-16 printable characters)")
    return value


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


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    dimse_aet: str = "IMPORTADAPTER"
    dimse_port: int = 2575
    dimse_bind: str = "0.0.0.0"  # noqa: S104 - a PACS-facing service listens on its LB address
    allowed_peers: tuple[PeerRule, ...] = ()
    max_associations: int = 32
    max_connections_per_host: int = 16
    max_pdu: int = 262144
    acse_timeout: float = 10.0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0
    extra_sop_classes: tuple[str, ...] = ()
    accept_storage_root: bool = True
    max_instance_bytes: int = 0
    max_nesting_depth: int = _SCAN_DEFAULTS.max_depth
    max_inflated_bytes: int = _SCAN_DEFAULTS.max_inflated_bytes
    max_inflate_ratio: int = _SCAN_DEFAULTS.max_inflate_ratio
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    tls_port: int = 2762
    tls_only: bool = False
    shutdown_grace: float = 30.0

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
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("--tls_cert and --tls_key go together")
        if (self.tls_ca or self.tls_only) and not self.tls_cert:
            raise ConfigError("--tls_ca and --tls_only need --tls_cert and --tls_key")
        if not 0 <= self.tls_port <= 65535:
            raise ConfigError("--tls_port must be between 0 and 65535")
        try:
            self.scan_limits  # noqa: B018 - validates the content limits
        except ValueError as exc:
            raise ConfigError(f"content limits: {exc}") from exc
        for name in ("acse_timeout", "dimse_timeout", "network_timeout", "shutdown_grace"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name} must be positive")
        for uid in self.extra_sop_classes:
            if not is_valid_uid(uid):
                raise ConfigError(f"--extra_sop_classes: {uid!r} is not a valid UID")

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
        return TlsFiles(
            Path(self.tls_cert), Path(self.tls_key), Path(self.tls_ca) if self.tls_ca else None
        )

    def allows(self, calling_ae: str, address: str) -> bool:
        """True when the calling AE (from that address) may associate."""
        if not self.allowed_peers:
            return True
        if calling_ae == HEALTH_CHECK_AE and address in ("127.0.0.1", "::1", self.dimse_bind):
            return True  # the receiver's own readiness check
        return any(rule.matches(calling_ae, address) for rule in self.allowed_peers)

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> ReceiverConfig:
        return cls(
            dimse_aet=str(values["dimse_aet"]).strip(),
            dimse_port=values["dimse_port"],
            dimse_bind=values["dimse_bind"],
            allowed_peers=tuple(PeerRule.parse(t) for t in values["allowed_calling_aets"]),
            max_associations=values["max_associations"],
            max_connections_per_host=values["max_connections_per_host"],
            max_pdu=values["max_pdu"],
            acse_timeout=values["acse_timeout"],
            dimse_timeout=values["dimse_timeout"],
            network_timeout=values["network_timeout"],
            extra_sop_classes=tuple(values["extra_sop_classes"]),
            accept_storage_root=values["accept_storage_root"],
            max_instance_bytes=values["max_instance_bytes"],
            max_nesting_depth=values["max_nesting_depth"],
            max_inflated_bytes=values["max_inflated_bytes"],
            max_inflate_ratio=values["max_inflate_ratio"],
            tls_cert=values["tls_cert"],
            tls_key=values["tls_key"],
            tls_ca=values["tls_ca"],
            tls_port=values["tls_port"],
            tls_only=values["tls_only"],
            shutdown_grace=values["shutdown_grace"],
        )
