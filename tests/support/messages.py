"""A valid instance message for tests, with any field overridden."""

from __future__ import annotations

from typing import Any

from ingest.contracts.message import InstanceMessage


def make_message(**overrides: Any) -> InstanceMessage:
    values: dict[str, Any] = {
        "uri": "file:///spool/objects/1.2.3/1.2.3.4/1.2.3.4.5.dcm",
        "generation": "1718000000000000000",
        "size": 1234,
        "crc32c": "AAAAAA==",
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
        "sop_instance_uid": "1.2.3.4.5",
        "study_instance_uid": "1.2.3",
        "series_instance_uid": "1.2.3.4",
        "transfer_syntax_uid": "1.2.840.10008.1.2.1",
        "calling_ae": "PACS",
        "called_ae": "IMPORTADAPTER",
        "received_at": "2024-06-10T12:00:00.000+00:00",
    }
    values.update(overrides)
    return InstanceMessage(**values)
