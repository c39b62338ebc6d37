"""Flags, environment and the validated receiver and uploader configurations."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from ingest.contracts.settings import ConfigError, Flag, add_flags, parse_bool, parse_list, resolve
from receiver.config import FLAGS as RECEIVER_FLAGS
from receiver.config import PeerRule, ReceiverConfig
from uploader.config import FLAGS as UPLOADER_FLAGS
from uploader.config import UploaderConfig

TOKEN = "ya29.super-secret-token-value"


def resolve_args(
    flags: Sequence[Flag], argv: list[str], environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    add_flags(parser, flags)
    return resolve(flags, parser.parse_args(argv), environ or {})


def receiver_config(argv: list[str], environ: Mapping[str, str] | None = None) -> ReceiverConfig:
    return ReceiverConfig.from_values(resolve_args(RECEIVER_FLAGS, argv, environ))


# --- flags -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["--dimse_aet", "--dimse-aet"])
def test_both_flag_spellings(spelling: str) -> None:
    config = receiver_config([spelling, "MYAET"])
    assert config.dimse_aet == "MYAET"


def test_equals_form() -> None:
    assert receiver_config(["--dimse-port=11112"]).dimse_port == 11112


def test_environment_is_used_without_a_flag() -> None:
    config = receiver_config(
        [], {"DICOM_INGEST_DIMSE_AET": "ENVAET", "DICOM_INGEST_DIMSE_PORT": "104"}
    )
    assert (config.dimse_aet, config.dimse_port) == ("ENVAET", 104)


def test_flag_beats_environment() -> None:
    config = receiver_config(["--dimse_aet", "FLAGAET"], {"DICOM_INGEST_DIMSE_AET": "ENVAET"})
    assert config.dimse_aet == "FLAGAET"


def test_defaults() -> None:
    values = resolve_args(RECEIVER_FLAGS, [])
    assert values["dimse_aet"] == "IMPORTADAPTER"
    assert values["dimse_port"] == 2575
    assert values["allowed_calling_aets"] == ()
    config = ReceiverConfig.from_values(values)
    assert (config.dimse_aet, config.dimse_port, config.allowed_peers) == (
        "IMPORTADAPTER",
        2575,
        (),
    )


def test_unrelated_environment_is_ignored() -> None:
    config = receiver_config([], {"DIMSE_AET": "NOPE", "DICOM_INGEST_OTHER": "x"})
    assert config.dimse_aet == "IMPORTADAPTER"


def test_env_names() -> None:
    assert Flag("dimse_aet", "h").env == "DICOM_INGEST_DIMSE_AET"


def test_values_are_typed() -> None:
    values = resolve_args(
        RECEIVER_FLAGS,
        ["--acse_timeout", "2.5", "--allowed-calling-aets", "A, B@10.0.0.1 ,,", "--max_pdu", "0"],
    )
    assert values["acse_timeout"] == 2.5
    assert values["allowed_calling_aets"] == (PeerRule.parse("A"), PeerRule.parse("B@10.0.0.1"))
    assert values["max_pdu"] == 0


@pytest.mark.parametrize("spelling", ["--dimse_port", "--dimse-port"])
def test_invalid_int_flag_names_the_flag(spelling: str) -> None:
    with pytest.raises(ConfigError, match="--dimse_port"):
        resolve_args(RECEIVER_FLAGS, [spelling, "lots"])


def test_invalid_int_in_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="DICOM_INGEST_MAX_ASSOCIATIONS"):
        resolve_args(RECEIVER_FLAGS, [], {"DICOM_INGEST_MAX_ASSOCIATIONS": "many"})


def test_invalid_float_flag_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--dimse_timeout"):
        resolve_args(RECEIVER_FLAGS, ["--dimse_timeout", "soon"])


def test_choices_are_enforced() -> None:
    with pytest.raises(ConfigError, match="--auth"):
        resolve_args(UPLOADER_FLAGS, ["--auth", "basic"])
    with pytest.raises(ConfigError, match="DICOM_INGEST_CONFLICT"):
        resolve_args(UPLOADER_FLAGS, [], {"DICOM_INGEST_CONFLICT": "merge"})


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        (" on ", True),
        ("0", False),
        ("off", False),
        ("", False),
    ],
)
def test_parse_bool(text: str, value: bool) -> None:
    assert parse_bool(text) is value


def test_parse_bool_rejects_other_text() -> None:
    with pytest.raises(ValueError, match="boolean"):
        parse_bool("maybe")
    with pytest.raises(ConfigError, match="--keep_uploaded"):
        resolve_args(UPLOADER_FLAGS, ["--keep-uploaded", "maybe"])


def test_parse_list() -> None:
    assert parse_list("") == ()
    assert parse_list(" a ,b,, c ") == ("a", "b", "c")


# --- receiver --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"dimse_aet": "A" * 17}, id="aet-17-chars"),
        pytest.param({"dimse_aet": ""}, id="aet-empty"),
        pytest.param({"dimse_aet": "A\\B"}, id="aet-backslash"),
        pytest.param({"dimse_aet": "A\tB"}, id="aet-control"),
        pytest.param({"dimse_port": 70000}, id="port-70000"),
        pytest.param({"dimse_port": -1}, id="port-negative"),
        pytest.param({"max_associations": 0}, id="max-associations-0"),
        pytest.param({"max_pdu": 100}, id="max-pdu-small"),
        pytest.param({"max_pdu": 0}, id="max-pdu-unlimited"),
        pytest.param({"max_pdu": (4 << 20) + 1}, id="max-pdu-large"),
        pytest.param({"max_connections_per_host": 0}, id="no-connections-per-host"),
        pytest.param({"max_instance_bytes": -1}, id="negative-instance-bytes"),
        pytest.param({"acse_timeout": 0}, id="acse-timeout-0"),
        pytest.param({"shutdown_grace": -1.0}, id="grace-negative"),
        pytest.param({"extra_sop_classes": ("1.2.3", "1..2")}, id="extra-sop-class-invalid"),
        pytest.param({"extra_sop_classes": ("abc",)}, id="extra-sop-class-letters"),
    ],
)
def test_receiver_config_rejects(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ReceiverConfig(**overrides)


def test_receiver_config_error_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--dimse_port"):
        ReceiverConfig(dimse_port=70000)
    with pytest.raises(ConfigError, match="--extra_sop_classes"):
        ReceiverConfig(extra_sop_classes=("1..2",))
    with pytest.raises(ConfigError, match="--dimse_aet"):
        ReceiverConfig(dimse_aet="A" * 17)


def test_receiver_config_accepts_limits() -> None:
    config = ReceiverConfig(
        dimse_aet="A" * 16,
        dimse_port=65535,
        max_associations=1,
        max_pdu=4 << 20,
        extra_sop_classes=("1.2.840.10008.5.1.4.1.1.2", "1.3.6.1.4.1.99.1"),
    )
    assert config.dimse_aet == "A" * 16
    assert ReceiverConfig(max_pdu=4096).max_pdu == 4096


def test_receiver_from_values_rejects_long_aet_from_flags() -> None:
    with pytest.raises(ConfigError, match="--dimse_aet"):
        receiver_config(["--dimse_aet", "ABCDEFGHIJKLMNOPQ"])


def test_peer_rule_with_network() -> None:
    rule = PeerRule.parse("PACS@10.0.0.0/8")
    assert rule.matches("PACS", "10.1.2.3")
    assert rule.matches("PACS  ", "10.255.255.255")  # AE titles arrive space-padded
    assert not rule.matches("PACS", "192.168.1.1")
    assert not rule.matches("OTHER", "10.1.2.3")
    assert not rule.matches("PACS", "not-an-address")


def test_peer_rule_single_address_and_ipv6() -> None:
    assert PeerRule.parse("PACS@192.168.1.5").matches("PACS", "192.168.1.5")
    assert not PeerRule.parse("PACS@192.168.1.5").matches("PACS", "192.168.1.6")
    rule = PeerRule.parse("PACS@2001:db8::/32")
    assert rule.matches("PACS", "2001:db8::1")
    assert not rule.matches("PACS", "10.1.2.3")


def test_peer_rule_without_network_matches_any_address() -> None:
    rule = PeerRule.parse("PACS")
    assert rule.network is None
    assert rule.matches("PACS", "203.0.113.7")
    assert not rule.matches("pacs", "203.0.113.7")  # AE titles are case-sensitive


@pytest.mark.parametrize(
    "text", ["PACS@not-a-network", "PACS@10.0.0.0/33", "@10.0.0.0/8", "A" * 17]
)
def test_peer_rule_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="--allowed_calling_aets"):
        PeerRule.parse(text)


def test_allows_with_empty_list_allows_anyone() -> None:
    config = ReceiverConfig()
    assert config.allows("ANYONE", "198.51.100.1")
    assert config.allows("", "not-an-address")


def test_allows_with_rules() -> None:
    config = receiver_config(["--allowed_calling_aets", "PACS@10.0.0.0/8,MODALITY"])
    assert config.allows("PACS", "10.9.8.7")
    assert not config.allows("PACS", "192.168.1.1")
    assert config.allows("MODALITY", "192.168.1.1")
    assert not config.allows("OTHER", "10.9.8.7")


# --- uploader --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"dicomweb_address": "ftp://store.example/dicomWeb"}, id="ftp-address"),
        pytest.param({"dicomweb_address": "store.example/dicomWeb"}, id="no-scheme"),
        pytest.param({"dicomweb_address": "https://"}, id="no-host"),
        pytest.param({"dicomweb_address": ""}, id="empty-address"),
        pytest.param({"auth": "bearer"}, id="bearer-without-token"),
        pytest.param({"auth": "bearer", "bearer_token": ""}, id="bearer-empty-token"),
        pytest.param({"min_backoff": 10.0, "max_backoff": 5.0}, id="min-backoff-above-max"),
        pytest.param({"min_backoff": 0.0}, id="min-backoff-zero"),
        pytest.param({"upload_workers": 0}, id="no-workers"),
        pytest.param({"batch_max_instances": 0}, id="empty-batches"),
        pytest.param({"batch_max_bytes": 0}, id="zero-batch-bytes"),
        pytest.param({"max_attempts": 0}, id="zero-attempts"),
        pytest.param({"http_timeout": 0.0}, id="zero-timeout"),
        pytest.param({"request_deadline": 0.0}, id="zero-request-deadline"),
        pytest.param({"request_deadline": -1.0}, id="negative-request-deadline"),
    ],
)
def test_uploader_config_rejects(overrides: dict[str, Any]) -> None:
    values: dict[str, Any] = {"dicomweb_address": "https://healthcare.googleapis.com/v1/x/dicomWeb"}
    values.update(overrides)
    with pytest.raises(ConfigError):
        UploaderConfig(**values)


def test_uploader_config_error_messages_name_the_flag() -> None:
    with pytest.raises(ConfigError, match="--dicomweb_address"):
        UploaderConfig("ftp://x")
    with pytest.raises(ConfigError, match="--min_backoff"):
        UploaderConfig("http://x", min_backoff=2.0, max_backoff=1.0)
    with pytest.raises(ConfigError, match="--bearer_token"):
        UploaderConfig("http://x", auth="bearer")


def test_uploader_config_from_flags_and_env() -> None:
    values = resolve_args(
        UPLOADER_FLAGS,
        [
            "--dicomweb-address",
            "http://localhost:8042/dicom-web",
            "--auth",
            "bearer",
            "--keep_uploaded",
            "yes",
        ],
        {"DICOM_INGEST_BEARER_TOKEN": TOKEN, "DICOM_INGEST_UPLOAD_WORKERS": "2"},
    )
    config = UploaderConfig.from_values(values)
    assert config.bearer_token == TOKEN
    assert config.upload_workers == 2
    assert config.keep_uploaded is True
    assert config.min_backoff == 1.0


def test_uploader_address_is_required() -> None:
    with pytest.raises(ConfigError, match="--dicomweb_address is required"):
        UploaderConfig.from_values(resolve_args(UPLOADER_FLAGS, []))


def test_repr_never_shows_the_token() -> None:
    config = UploaderConfig("https://store.example/dicomWeb", auth="bearer", bearer_token=TOKEN)
    assert TOKEN not in repr(config)
    assert TOKEN not in str(config)
    assert TOKEN not in f"{config!r} {config}"
    assert "***" in repr(config)
    assert "https://store.example/dicomWeb" in repr(config)
    assert "bearer_token=None" in repr(UploaderConfig("https://store.example/dicomWeb"))


def test_orthanc_rest_address_is_an_http_url() -> None:
    base = {"dicomweb_address": "http://127.0.0.1:8042/dicom-web"}
    config = UploaderConfig(**base, orthanc_rest_address="http://127.0.0.1:8042")
    assert config.orthanc_rest_address == "http://127.0.0.1:8042"
    assert UploaderConfig(**base).orthanc_rest_address is None
    with pytest.raises(ConfigError, match="--orthanc_rest_address"):
        UploaderConfig(**base, orthanc_rest_address="127.0.0.1:8042")
