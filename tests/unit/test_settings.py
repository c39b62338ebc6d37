"""Each setting is declared once: flags, environment variables and config defaults agree."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from dicom_ingest.cloud import FLAGS as CLOUD_RECEIVER_FLAGS
from dicom_ingest.cloud import CloudReceiverConfig
from ingest.contracts.settings import (
    ConfigError,
    build,
    declared,
    flags_of,
    optional,
    resolve,
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
