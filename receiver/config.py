"""The receiver's configuration: one frozen, validated object built from flags and environment."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ingest.contracts.message import is_valid_uid
from ingest.contracts.settings import ConfigError, build, flags_of, parse_list, setting

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


def _ae_title(text: str) -> str:
    return text.strip()


def _peer_rules(text: str) -> tuple[PeerRule, ...]:
    return tuple(PeerRule.parse(item) for item in parse_list(text))


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    dimse_aet: str = setting("AE title this receiver answers to", "IMPORTADAPTER", _ae_title)
    dimse_port: int = setting("TCP port for DIMSE associations", 2575, int)
    # A PACS-facing service listens on its load balancer's address.
    dimse_bind: str = setting("address to listen on", "0.0.0.0")  # noqa: S104
    allowed_peers: tuple[PeerRule, ...] = setting(
        "comma-separated calling AE titles allowed to associate, each optionally AET@ADDRESS or"
        " AET@CIDR; empty allows any",
        (),
        _peer_rules,
        flag="allowed_calling_aets",
    )
    max_associations: int = setting("concurrent associations before rejecting", 32, int)
    max_pdu: int = setting("maximum PDU length we receive, in bytes", 262144, int)
    acse_timeout: float = setting("seconds to wait for association messages", 30.0, float)
    dimse_timeout: float = setting("seconds to wait for DIMSE messages", 60.0, float)
    network_timeout: float = setting("seconds an idle association is kept open", 60.0, float)
    extra_sop_classes: tuple[str, ...] = setting(
        "comma-separated private storage SOP class UIDs", (), parse_list
    )
    shutdown_grace: float = setting("seconds to let associations finish on SIGTERM", 30.0, float)

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
        return build(cls, values)


FLAGS = flags_of(ReceiverConfig)
