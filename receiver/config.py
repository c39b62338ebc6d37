"""The receiver's configuration: one frozen, validated object built from flags and environment."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ingest.contracts.message import is_valid_uid
from ingest.contracts.settings import ConfigError, Flag, parse_list

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
    Flag("max_pdu", "maximum PDU length we receive, in bytes", 262144, int),
    Flag("acse_timeout", "seconds to wait for association messages", 30.0, float),
    Flag("dimse_timeout", "seconds to wait for DIMSE messages", 60.0, float),
    Flag("network_timeout", "seconds an idle association is kept open", 60.0, float),
    Flag("extra_sop_classes", "comma-separated private storage SOP class UIDs", (), parse_list),
    Flag("shutdown_grace", "seconds to let associations finish on SIGTERM", 30.0, float),
)

AE_TITLE_MAX = 16
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
    max_pdu: int = 262144
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0
    extra_sop_classes: tuple[str, ...] = ()
    shutdown_grace: float = 30.0

    def __post_init__(self) -> None:
        _check_ae(self.dimse_aet, "--dimse_aet")
        if not 0 <= self.dimse_port <= 65535:
            raise ConfigError("--dimse_port must be between 0 and 65535")
        if self.max_associations < 1:
            raise ConfigError("--max_associations must be at least 1")
        if self.max_pdu != 0 and self.max_pdu < 4096:
            raise ConfigError("--max_pdu must be 0 (unlimited) or at least 4096")
        for name in ("acse_timeout", "dimse_timeout", "network_timeout", "shutdown_grace"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name} must be positive")
        for uid in self.extra_sop_classes:
            if not is_valid_uid(uid):
                raise ConfigError(f"--extra_sop_classes: {uid!r} is not a valid UID")

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
            max_pdu=values["max_pdu"],
            acse_timeout=values["acse_timeout"],
            dimse_timeout=values["dimse_timeout"],
            network_timeout=values["network_timeout"],
            extra_sop_classes=tuple(values["extra_sop_classes"]),
            shutdown_grace=values["shutdown_grace"],
        )
