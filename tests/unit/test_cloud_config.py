"""Cloud configuration: Pub/Sub paths, the uploader's Pub/Sub settings, the cloud receiver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dicom_ingest.cloud import FLAGS as CLOUD_FLAGS
from dicom_ingest.cloud import CloudReceiverConfig
from ingest.adapters.pubsub import check_subscription, check_topic
from ingest.contracts.settings import ConfigError, Flag, with_defaults
from receiver.config import ReceiverConfig
from uploader.config import PUBSUB_FLAGS, PubSubConfig

TOPIC = "projects/my-project/topics/dicom-instances"
SUBSCRIPTION = "projects/my-project/subscriptions/dicom-uploads"


@pytest.mark.parametrize(
    "value",
    [
        TOPIC,
        "projects/my-project-123/topics/abc",
        "projects/example.com:my-project/topics/dicom.instances_v2",
        "projects/my-project/topics/T~+%-x",
    ],
)
def test_check_topic_accepts(value: str) -> None:
    assert check_topic(value) == value


BAD_PATHS = [
    "",
    "dicom-instances",
    "projects/my-project/topics/",
    "projects/My-Project/topics/dicom",  # project ids are lower case
    "projects/abc/topics/dicom",  # project id too short
    "projects/my-project/topics/ab",  # name too short
    "projects/my-project/topics/1dicom",  # name must start with a letter
    "projects/my-project/topics/dicom/extra",
    "projects/my-project/topics/dicom instances",
    " projects/my-project/topics/dicom",
    "projects/my-project/topics/dicom\n",
    "//pubsub.googleapis.com/projects/my-project/topics/dicom",
]


@pytest.mark.parametrize("value", [*BAD_PATHS, SUBSCRIPTION], ids=repr)
def test_check_topic_rejects_naming_the_flag(value: str) -> None:
    with pytest.raises(ConfigError, match="--dead_letter_topic") as caught:
        check_topic(value, "dead_letter_topic")
    assert "projects/PROJECT/topics/TOPIC" in str(caught.value)
    assert repr(value) in str(caught.value)


def test_check_topic_default_flag_name() -> None:
    with pytest.raises(ConfigError, match=r"^--topic "):
        check_topic("nope")


@pytest.mark.parametrize("value", [SUBSCRIPTION, "projects/example.com:proj-1/subscriptions/a.b"])
def test_check_subscription_accepts(value: str) -> None:
    assert check_subscription(value) == value


@pytest.mark.parametrize(
    "value", [*(p.replace("topics", "subscriptions") for p in BAD_PATHS), TOPIC], ids=repr
)
def test_check_subscription_rejects_naming_the_flag(value: str) -> None:
    with pytest.raises(ConfigError, match="--dead_letter_subscription") as caught:
        check_subscription(value, "dead_letter_subscription")
    assert "projects/PROJECT/subscriptions/NAME" in str(caught.value)


def test_check_subscription_default_flag_name() -> None:
    with pytest.raises(ConfigError, match=r"^--subscription "):
        check_subscription("nope")


# ---- PubSubConfig ----


def test_pubsub_config_defaults() -> None:
    config = PubSubConfig()
    assert config.dead_letter_topic is None
    assert config.oversize_topic is None
    assert config.push_max_bytes == 1 << 30
    assert config.publish_timeout == 30.0


def test_pubsub_config_accepts_a_full_setting() -> None:
    config = PubSubConfig(
        dead_letter_topic=TOPIC + "-dead",
        oversize_topic=TOPIC + "-oversize",
        push_max_bytes=100 << 20,
        push_audience="https://uploader.example.com/",
        push_service_account="push@my-project.iam.gserviceaccount.com",
    )
    assert config.push_audience == "https://uploader.example.com/"


PUBSUB_REJECTS: dict[str, tuple[dict[str, Any], str]] = {
    "audience-without-account": (
        {"push_audience": "https://uploader.example.com/"},
        "--push_audience and --push_service_account",
    ),
    "account-without-audience": (
        {"push_service_account": "push@my-project.iam.gserviceaccount.com"},
        "--push_audience and --push_service_account",
    ),
    "bad-dead-letter-topic": ({"dead_letter_topic": "dead-letters"}, "--dead_letter_topic"),
    "dead-letter-subscription": ({"dead_letter_topic": SUBSCRIPTION}, "--dead_letter_topic"),
    "bad-oversize-topic": ({"oversize_topic": "projects/p/topics/x"}, "--oversize_topic"),
    "zero-push-max-bytes": ({"push_max_bytes": 0}, "--push_max_bytes"),
    "zero-publish-timeout": ({"publish_timeout": 0.0}, "--publish_timeout"),
    "negative-publish-timeout": ({"publish_timeout": -1.0}, "--publish_timeout"),
}


@pytest.mark.parametrize(("overrides", "flag"), PUBSUB_REJECTS.values(), ids=PUBSUB_REJECTS.keys())
def test_pubsub_config_rejects(overrides: dict[str, Any], flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        PubSubConfig(**overrides)


def test_pubsub_config_from_flag_defaults() -> None:
    values = {flag.name: flag.default for flag in PUBSUB_FLAGS}
    assert PubSubConfig.from_values(values) == PubSubConfig()


# ---- CloudReceiverConfig ----


def cloud_config(**overrides: Any) -> CloudReceiverConfig:
    values: dict[str, Any] = {
        "spool_dir": Path("/nonexistent/spool"),
        "receiver": ReceiverConfig(),
        "bucket": "my-dicom-bucket",
        "topic": TOPIC,
    }
    values.update(overrides)
    return CloudReceiverConfig(**values)


def test_cloud_receiver_defaults() -> None:
    config = cloud_config()
    assert config.object_prefix == "dicom"
    assert config.ack_after == "store"
    assert config.health_port == 0
    assert config.storage_timeout == 60.0
    assert config.publish_timeout == 30.0
    assert config.ship_workers == 4
    assert not config.spool_dir.exists()  # validation touches no file


def test_cloud_receiver_defaults_match_the_flags() -> None:
    defaults = {flag.name: flag.default for flag in CLOUD_FLAGS}
    config = cloud_config()
    for name in ("object_prefix", "ack_after", "health_port", "storage_timeout"):
        assert getattr(config, name) == defaults[name], name
    assert config.publish_timeout == defaults["publish_timeout"]
    assert config.ship_workers == defaults["ship_workers"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"bucket": "b.example.com"},
        {"bucket": "abc"},
        {"object_prefix": ""},
        {"object_prefix": "/"},
        {"object_prefix": "site-a/dicom"},
        {"object_prefix": "/dicom/"},
        {"health_port": 8080},
        {"health_port": 65535},
        {"ack_after": "spool", "ship_workers": 1},
        {"storage_timeout": 0.5, "publish_timeout": 0.5},
    ],
    ids=repr,
)
def test_cloud_receiver_accepts(overrides: dict[str, Any]) -> None:
    config = cloud_config(**overrides)
    for name, value in overrides.items():
        assert getattr(config, name) == value


CLOUD_REJECTS: dict[str, tuple[dict[str, Any], str]] = {
    "bucket-upper-case": ({"bucket": "My-Bucket"}, "--bucket"),
    "bucket-too-short": ({"bucket": "ab"}, "--bucket"),
    "bucket-empty": ({"bucket": ""}, "--bucket"),
    "bucket-leading-dash": ({"bucket": "-bucket"}, "--bucket"),
    "bucket-trailing-dot": ({"bucket": "bucket."}, "--bucket"),
    "bucket-with-scheme": ({"bucket": "gs://bucket"}, "--bucket"),
    "bucket-with-slash": ({"bucket": "bucket/dicom"}, "--bucket"),
    "bucket-trailing-newline": ({"bucket": "my-dicom-bucket\n"}, "--bucket"),
    "topic-bare-name": ({"topic": "dicom-instances"}, "--topic"),
    "topic-is-a-subscription": ({"topic": SUBSCRIPTION}, "--topic"),
    "prefix-dot-dot": ({"object_prefix": ".."}, "--object_prefix"),
    "prefix-inner-dot-dot": ({"object_prefix": "a/../b"}, "--object_prefix"),
    "prefix-dot": ({"object_prefix": "a/./b"}, "--object_prefix"),
    "prefix-double-slash": ({"object_prefix": "a//b"}, "--object_prefix"),
    "health-port-negative": ({"health_port": -1}, "--health_port"),
    "health-port-too-large": ({"health_port": 65536}, "--health_port"),
    "storage-timeout-zero": ({"storage_timeout": 0.0}, "--storage_timeout"),
    "storage-timeout-negative": ({"storage_timeout": -5.0}, "--storage_timeout"),
    "publish-timeout-zero": ({"publish_timeout": 0.0}, "--publish_timeout"),
    "publish-timeout-negative": ({"publish_timeout": -1.0}, "--publish_timeout"),
    "no-ship-workers": ({"ship_workers": 0}, "--ship_workers"),
}


@pytest.mark.parametrize(("overrides", "flag"), CLOUD_REJECTS.values(), ids=CLOUD_REJECTS.keys())
def test_cloud_receiver_rejects(overrides: dict[str, Any], flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        cloud_config(**overrides)


@pytest.mark.parametrize("missing", ["bucket", "topic"])
def test_cloud_receiver_from_values_requires_bucket_and_topic(missing: str) -> None:
    values = {flag.name: flag.default for flag in CLOUD_FLAGS}
    values.update(bucket="my-dicom-bucket", topic=TOPIC)
    values[missing] = None
    with pytest.raises(ConfigError, match="--bucket and --topic are required"):
        CloudReceiverConfig.from_values(Path("/nonexistent"), ReceiverConfig(), values)


def test_cloud_receiver_from_values() -> None:
    values = {flag.name: flag.default for flag in CLOUD_FLAGS}
    values.update(bucket="my-dicom-bucket", topic=TOPIC, dicomweb_address="https://ignored")
    config = CloudReceiverConfig.from_values(Path("/nonexistent"), ReceiverConfig(), values)
    assert config == cloud_config(spool_dir=Path("/nonexistent"))


# ---- with_defaults ----

FLAGS = (
    Flag("alpha", "first", 1, int),
    Flag("beta", "second", "b", choices=("a", "b")),
    Flag("gamma", "third"),
)


def test_with_defaults_changes_only_the_named_default() -> None:
    changed = with_defaults(FLAGS, beta="a")
    assert [flag.name for flag in changed] == ["alpha", "beta", "gamma"]
    assert changed[0] is FLAGS[0]
    assert changed[2] is FLAGS[2]
    assert changed[1].default == "a"
    assert changed[1].help == FLAGS[1].help
    assert changed[1].type is FLAGS[1].type
    assert changed[1].choices == FLAGS[1].choices
    assert FLAGS[1].default == "b"  # the original is untouched


def test_with_defaults_can_set_a_default_to_none() -> None:
    assert with_defaults(FLAGS, alpha=None)[0].default is None


def test_with_no_defaults_is_the_same_flags() -> None:
    assert with_defaults(FLAGS) == FLAGS


def test_with_defaults_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="no such flags") as caught:
        with_defaults(FLAGS, beta="a", delta=4, epsilon=5)
    assert "delta" in str(caught.value)
    assert "epsilon" in str(caught.value)
    assert "beta" not in str(caught.value)


def test_with_defaults_on_the_real_flags() -> None:
    changed = with_defaults(CLOUD_FLAGS, ack_after="spool")
    by_name = {flag.name: flag for flag in changed}
    assert by_name["ack_after"].default == "spool"
    assert by_name["object_prefix"].default == "dicom"
    assert len(changed) == len(CLOUD_FLAGS)
