"""The queue message contract: encoding, decoding and validation."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from support.messages import make_message

from ingest.contracts.message import SCHEMA_VERSION, MessageError, decode, encode, is_valid_uid

CONTRACT_KEYS = {
    "uri",
    "generation",
    "size",
    "crc32c",
    "sop_class_uid",
    "sop_instance_uid",
    "study_instance_uid",
    "series_instance_uid",
    "transfer_syntax_uid",
    "calling_ae",
    "called_ae",
    "received_at",
    "schema_version",
}


def raw_message(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(encode(make_message()))
    raw.update(overrides)
    return raw


def as_bytes(raw: Any) -> bytes:
    return json.dumps(raw).encode()


def test_round_trip() -> None:
    message = make_message()
    assert decode(encode(message)) == message


def test_encoding_is_compact_sorted_json() -> None:
    data = encode(make_message())
    raw = json.loads(data)
    assert list(raw) == sorted(raw)
    assert b" " not in data
    assert raw["schema_version"] == SCHEMA_VERSION


def test_encoded_keys_are_exactly_the_contract() -> None:
    raw = json.loads(encode(make_message()))
    assert set(raw) == CONTRACT_KEYS
    lowered = " ".join(raw).lower()
    for word in ("patient", "name", "birth"):
        assert word not in lowered


def test_attributes_carry_only_routing_fields() -> None:
    message = make_message()
    assert message.attributes == {
        "schema_version": str(SCHEMA_VERSION),
        "study_instance_uid": "1.2.3",
        "sop_instance_uid": "1.2.3.4.5",
        "object_uri": message.uri,
        "object_generation": message.generation,
        "size": str(message.size),
    }


def test_unknown_extra_keys_are_ignored() -> None:
    raw = raw_message(future_field="x", another={"nested": [1, 2]})
    assert decode(as_bytes(raw)) == make_message()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"not json", "not JSON", id="not-json"),
        pytest.param(b"\xff\xfe\x00garbage", "not JSON", id="not-utf8"),
        pytest.param(b"[1, 2, 3]", "not a JSON object", id="json-array"),
        pytest.param(b'"a string"', "not a JSON object", id="json-string"),
        pytest.param(b"null", "not a JSON object", id="json-null"),
    ],
)
def test_decode_rejects_non_objects(data: bytes, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        decode(data)


@pytest.mark.parametrize("version", [0, 2, "1", None], ids=["zero", "two", "string", "null"])
def test_decode_rejects_wrong_schema_version(version: object) -> None:
    with pytest.raises(MessageError, match="schema_version"):
        decode(as_bytes(raw_message(schema_version=version)))


def test_decode_rejects_missing_schema_version() -> None:
    raw = raw_message()
    del raw["schema_version"]
    with pytest.raises(MessageError, match="schema_version"):
        decode(as_bytes(raw))


@pytest.mark.parametrize("field", sorted(CONTRACT_KEYS - {"schema_version"}))
def test_decode_reports_missing_field_by_name(field: str) -> None:
    raw = raw_message()
    del raw[field]
    with pytest.raises(MessageError) as info:
        decode(as_bytes(raw))
    assert field in str(info.value)
    assert "lacks" in str(info.value)


def test_decode_reports_all_missing_fields() -> None:
    raw = raw_message()
    del raw["uri"]
    del raw["crc32c"]
    with pytest.raises(MessageError, match=r"lacks crc32c, uri"):
        decode(as_bytes(raw))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("sop_instance_uid", "1..2", id="empty-component"),
        pytest.param("study_instance_uid", "abc", id="letters"),
        pytest.param("series_instance_uid", "1." + "2" * 63, id="65-chars"),
        pytest.param("sop_class_uid", "", id="empty"),
        pytest.param("transfer_syntax_uid", "1.2.", id="trailing-dot"),
        pytest.param("sop_instance_uid", 123, id="not-a-string"),
    ],
)
def test_decode_rejects_invalid_uid(field: str, value: object) -> None:
    with pytest.raises(MessageError, match=field):
        decode(as_bytes(raw_message(**{field: value})))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("calling_ae", "PA\\CS", id="backslash"),
        pytest.param("called_ae", "A" * 17, id="17-chars"),
        pytest.param("calling_ae", "PACS\n", id="control-char"),
        pytest.param("called_ae", "PACSé", id="non-ascii"),
        pytest.param("calling_ae", None, id="null"),
    ],
)
def test_decode_rejects_invalid_ae(field: str, value: object) -> None:
    with pytest.raises(MessageError, match=field):
        decode(as_bytes(raw_message(**{field: value})))


def test_sixteen_char_ae_is_accepted() -> None:
    message = decode(as_bytes(raw_message(calling_ae="A" * 16)))
    assert message.calling_ae == "A" * 16


@pytest.mark.parametrize(
    "size",
    [-1, True, False, 1.5, "12", None],
    ids=["negative", "bool-true", "bool-false", "float", "string", "null"],
)
def test_decode_rejects_invalid_size(size: object) -> None:
    with pytest.raises(MessageError, match="size"):
        decode(as_bytes(raw_message(size=size)))


def test_zero_size_is_accepted() -> None:
    assert decode(as_bytes(raw_message(size=0))).size == 0


@pytest.mark.parametrize(
    "generation",
    ["12a", "", "-1", "1.5", " 12", 12, "\u00b2", "\u0661\u0662"],
    ids=[
        "letter",
        "empty",
        "negative",
        "decimal-point",
        "space",
        "integer",
        "superscript-two",
        "arabic-indic-digits",
    ],
)
def test_decode_rejects_non_decimal_generation(generation: object) -> None:
    with pytest.raises(MessageError, match="generation"):
        decode(as_bytes(raw_message(generation=generation)))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("uri", "relative/path.dcm", id="relative-uri"),
        pytest.param("crc32c", "", id="empty-crc"),
    ],
)
def test_decode_rejects_other_invalid_fields(field: str, value: object) -> None:
    with pytest.raises(MessageError, match=field):
        decode(as_bytes(raw_message(**{field: value})))


def test_constructor_validates_too() -> None:
    with pytest.raises(MessageError):
        replace(make_message(), sop_instance_uid="1..2")


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("1", True),
        ("1.2.3", True),
        ("1.2.840.10008.5.1.4.1.1.2", True),
        ("1.02.3", True),  # leading zeros are tolerated on purpose
        ("0.0", True),
        ("1." + "2" * 62, True),  # 64 characters
        ("1." + "2" * 63, False),  # 65 characters
        ("", False),
        ("1..2", False),
        (".1.2", False),
        ("1.2.", False),
        ("abc", False),
        ("1.2a", False),
        ("1,2", False),
        (" 1.2", False),
        ("1.2 ", False),
        ("1.2\n", False),
        ("1.2\x00", False),
        ("\uff11.\uff12", False),  # full-width digits
        ("\u0661.\u0662", False),  # Arabic-Indic digits
    ],
)
def test_is_valid_uid(value: str, valid: bool) -> None:
    assert is_valid_uid(value) is valid
