"""Each setting is declared once: flags, environment variables and config defaults agree."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dicom_ingest.cloud import FLAGS as CLOUD_RECEIVER_FLAGS
from dicom_ingest.cloud import CloudReceiverConfig
from ingest.contracts.settings import (
    ConfigError,
    Flag,
    ae_title,
    build,
    byte_size,
    count,
    declared,
    flags_of,
    number,
    optional,
    parse_bool,
    path,
    port,
    readable_file,
    resolve,
    seconds,
    select,
)
from receiver.config import FLAGS as RECEIVER_FLAGS
from receiver.config import ReceiverConfig
from uploader.config import FLAGS as UPLOADER_FLAGS
from uploader.config import PUBSUB_FLAGS, PubSubConfig, UploaderConfig

# Each config, the values of its required settings, and the fields that are not settings.
CONFIGS: list[tuple[type[Any], dict[str, Any], dict[str, Any]]] = [
    (ReceiverConfig, {}, {}),
    (UploaderConfig, {"dicomweb_address": "https://store.example/dicomWeb"}, {}),
    (PubSubConfig, {}, {}),
    (
        CloudReceiverConfig,
        {"bucket": "a-bucket", "topic": "projects/my-project/topics/dicom-instances"},
        {"spool_dir": Path("/nonexistent"), "receiver": ReceiverConfig()},
    ),
]


@pytest.mark.parametrize(
    ("config", "required", "others"), CONFIGS, ids=[c.__name__ for c, _, _ in CONFIGS]
)
def test_flag_defaults_are_the_config_defaults(
    config: type[Any], required: dict[str, Any], others: dict[str, Any]
) -> None:
    flags = flags_of(config)
    fields = {f.name: f for f in dataclasses.fields(config)}
    for field_name, flag_name, declaration in declared(config):
        (flag,) = select(flags, flag_name)
        if declaration.required:
            assert fields[field_name].default is dataclasses.MISSING
        else:
            assert flag.default == fields[field_name].default, field_name
    environ = {f"DICOM_INGEST_{name.upper()}": value for name, value in required.items()}
    from_flags = build(config, resolve(flags, argparse.Namespace(), environ), **others)
    assert from_flags == config(**required, **others)


@pytest.mark.parametrize(
    ("flags", "config"),
    [
        (RECEIVER_FLAGS, ReceiverConfig),
        (UPLOADER_FLAGS, UploaderConfig),
        (PUBSUB_FLAGS, PubSubConfig),
        (CLOUD_RECEIVER_FLAGS[:-1], CloudReceiverConfig),
    ],
)
def test_published_flags_are_the_declared_ones(flags: Any, config: type[Any]) -> None:
    assert tuple(flags) == flags_of(config)


def test_every_setting_has_help_and_an_environment_variable() -> None:
    for config, _, _ in CONFIGS:
        for flag in flags_of(config):
            assert flag.help, flag.name
            assert flag.env == "DICOM_INGEST_" + flag.name.upper()


def test_flags_are_selected_by_name_in_the_order_asked() -> None:
    chosen = select(UPLOADER_FLAGS, "auth", "dicomweb_address")
    assert [flag.name for flag in chosen] == ["auth", "dicomweb_address"]
    with pytest.raises(ValueError, match="no_such_flag"):
        select(UPLOADER_FLAGS, "no_such_flag")


def test_a_required_setting_left_out_names_its_flag() -> None:
    with pytest.raises(ConfigError, match=r"^--dicomweb_address is required$"):
        resolve(UPLOADER_FLAGS, argparse.Namespace(), {})
    values = resolve(optional(UPLOADER_FLAGS, "dicomweb_address"), argparse.Namespace(), {})
    with pytest.raises(ConfigError, match="--dicomweb_address is required"):
        build(UploaderConfig, values)


def test_a_field_may_carry_another_flag_name() -> None:
    names = {field: flag for field, flag, _ in declared(ReceiverConfig)}
    assert names["allowed_peers"] == "allowed_calling_aets"


# ---- one converter per kind of value ----

CONVERTED = [
    (port, "0", 0),
    (port, " 11112 ", 11112),
    (port, "65535", 65535),
    (count, "0", 0),
    (count, "16", 16),
    (number, "0.5", 0.5),
    (number, "50", 50.0),
    (seconds, "90", 90.0),
    (seconds, "1.5s", 1.5),
    (seconds, "500ms", 0.5),
    (seconds, "5m", 300.0),
    (seconds, "1h", 3600.0),
    (seconds, ".25", 0.25),
    (byte_size, "1048576", 1048576),
    (byte_size, "64MiB", 64 << 20),
    (byte_size, "1 GiB", 1 << 30),
    (byte_size, "2kB", 2000),
    (byte_size, "3MB", 3_000_000),
    (byte_size, "10b", 10),
    (ae_title, " IMPORTADAPTER ", "IMPORTADAPTER"),
    (ae_title, "A" * 16, "A" * 16),
    (parse_bool, "yes", True),
    (parse_bool, "off", False),
    (path, "/var/spool/dicom", "/var/spool/dicom"),
    (readable_file, "", ""),
]


@pytest.mark.parametrize(("convert", "text", "value"), CONVERTED)
def test_converters_read_what_operators_write(
    convert: Callable[[str], Any], text: str, value: Any
) -> None:
    assert convert(text) == value


REFUSED = [
    (port, "abc", "'abc' is not a port number (0-65535)"),
    (port, "65536", "'65536' is not a port number (0-65535)"),
    (port, "-1", "'-1' is not a port number (0-65535)"),
    (port, "", "'' is not a port number (0-65535)"),
    (port, "٣", "'٣' is not a port number (0-65535)"),  # a digit, but not an ASCII one
    (count, "1.5", "'1.5' is not a whole number"),
    (count, "-2", "'-2' is not a whole number"),
    (number, "fast", "'fast' is not a number"),
    (number, "nan", "'nan' is not a number"),
    (number, "inf", "'inf' is not a number"),
    (number, "-1", "'-1' is not a number"),
    (seconds, "soon", "'soon' is not a duration (seconds, or e.g. 500ms, 90s, 5m, 1h)"),
    (seconds, "-5", "'-5' is not a duration (seconds, or e.g. 500ms, 90s, 5m, 1h)"),
    (seconds, "5d", "'5d' is not a duration (seconds, or e.g. 500ms, 90s, 5m, 1h)"),
    (byte_size, "64 megs", "'64 megs' is not a byte size (e.g. 1048576, 64MiB, 1GiB)"),
    (byte_size, "1.5GiB", "'1.5GiB' is not a byte size (e.g. 1048576, 64MiB, 1GiB)"),
    (ae_title, "", "'' is not an AE title (1-16 printable characters, no backslash)"),
    (
        ae_title,
        "A" * 17,
        f"'{'A' * 17}' is not an AE title (1-16 printable characters, no backslash)",
    ),
    (ae_title, "A\\B", "'A\\\\B' is not an AE title (1-16 printable characters, no backslash)"),
    (parse_bool, "maybe", "'maybe' is not true or false"),
    (path, "a\0b", "'a\\x00b' is not a path"),
    (readable_file, "/nonexistent/key.pem", "'/nonexistent/key.pem' is not a file"),
]


@pytest.mark.parametrize(("convert", "text", "error"), REFUSED)
def test_converters_say_what_they_wanted(
    convert: Callable[[str], Any], text: str, error: str
) -> None:
    with pytest.raises(ValueError) as caught:
        convert(text)
    assert str(caught.value) == error


def test_a_refused_value_names_its_flag_or_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(RECEIVER_FLAGS, argparse.Namespace(dimse_port="abc"), {})
    assert str(caught.value) == "--dimse_port: 'abc' is not a port number (0-65535)"
    with pytest.raises(ConfigError) as caught:
        resolve(RECEIVER_FLAGS, argparse.Namespace(), {"DICOM_INGEST_MAX_PDU": "lots"})
    assert str(caught.value) == (
        "DICOM_INGEST_MAX_PDU: 'lots' is not a byte size (e.g. 1048576, 64MiB, 1GiB)"
    )


def test_missing_settings_are_named_together_after_bad_values() -> None:
    flags = (*UPLOADER_FLAGS, Flag("spool_dir", "spool", required=True))
    with pytest.raises(ConfigError) as caught:
        resolve(flags, argparse.Namespace(upload_workers="many"), {})
    assert str(caught.value) == "--upload_workers: 'many' is not a whole number"
    with pytest.raises(ConfigError) as caught:
        resolve(flags, argparse.Namespace(), {})
    assert str(caught.value) == "--dicomweb_address and --spool_dir are required"


def test_an_option_without_an_environment_variable_ignores_the_environment() -> None:
    limit = Flag("limit", "how many", 20, count, env_var=False)
    assert resolve((limit,), argparse.Namespace(), {"DICOM_INGEST_LIMIT": "3"}) == {"limit": 20}


def test_every_setting_is_declared_with_a_converter_of_its_kind() -> None:
    """No bare int or float: their errors ("invalid literal for int()") help nobody."""
    for config, _, _ in CONFIGS:
        for flag in flags_of(config):
            assert flag.type not in (int, float), flag.name
