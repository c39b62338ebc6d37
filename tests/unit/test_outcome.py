"""The STOW-RS response table: HTTP status, body and sent UIDs to one outcome per instance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from ingest.contracts.outcome import Action, Outcome
from uploader.stow_outcome import (
    WITHHELD,
    classify,
    failure_reason_outcome,
    redact,
    status_outcome,
    warning_reason_outcome,
)

UID_A = "1.2.3.4.1"
UID_B = "1.2.3.4.2"
UID_C = "1.2.3.4.3"


def referenced(*uids: str) -> dict[str, Any]:
    return {
        "vr": "SQ",
        "Value": [
            {
                "00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
                "00081155": {"vr": "UI", "Value": [uid]},
                "00081190": {"vr": "UR", "Value": [f"https://store/studies/1/instances/{uid}"]},
            }
            for uid in uids
        ],
    }


def failed(*pairs: tuple[str, int], comment: str | None = None) -> dict[str, Any]:
    items = []
    for uid, reason in pairs:
        item: dict[str, Any] = {
            "00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
            "00081155": {"vr": "UI", "Value": [uid]},
            "00081197": {"vr": "US", "Value": [reason]},
        }
        if comment is not None:
            item["00000902"] = {"vr": "LO", "Value": [comment]}
        items.append(item)
    return {"vr": "SQ", "Value": items}


def body(
    stored: tuple[str, ...] = (),
    failures: tuple[tuple[str, int], ...] = (),
    comment: str | None = None,
) -> dict[str, Any]:
    result: dict[str, Any] = {"00081190": {"vr": "UR", "Value": ["https://store/studies/1"]}}
    if stored:
        result["00081199"] = referenced(*stored)
    if failures:
        result["00081198"] = failed(*failures, comment=comment)
    return result


@dataclass(frozen=True)
class Case:
    status: int
    body: Any
    expected: dict[str, Action]
    text: str = ""
    reason_contains: dict[str, str] = field(default_factory=dict)

    @property
    def uids(self) -> list[str]:
        return list(self.expected)


CASES = {
    "200-referenced": Case(200, body(stored=(UID_A,)), {UID_A: Action.DONE}),
    "200-empty-body-unconfirmed": Case(200, None, {UID_A: Action.RETRY}),
    "200-empty-dict-unconfirmed": Case(200, {}, {UID_A: Action.RETRY}),
    "200-failed-A700-out-of-resources": Case(
        200,
        body(failures=((UID_A, 0xA700),)),
        {UID_A: Action.RETRY},
        reason_contains={UID_A: "0xA700"},
    ),
    "200-failed-A7FF-out-of-resources": Case(
        200, body(failures=((UID_A, 0xA7FF),)), {UID_A: Action.RETRY}
    ),
    "200-failed-C000-cannot-understand": Case(
        200,
        body(failures=((UID_A, 0xC000),)),
        {UID_A: Action.DEAD},
        reason_contains={UID_A: "0xC000"},
    ),
    "200-failed-A900-dataset-mismatch": Case(
        200,
        body(failures=((UID_A, 0xA900),)),
        {UID_A: Action.DEAD},
        reason_contains={UID_A: "0xA900"},
    ),
    "200-failed-0122-sop-class-unsupported": Case(
        200,
        body(failures=((UID_A, 0x0122),)),
        {UID_A: Action.DEAD},
        reason_contains={UID_A: "0x0122"},
    ),
    "200-failed-C122-transfer-syntax-unsupported": Case(
        200,
        body(failures=((UID_A, 0xC122),)),
        {UID_A: Action.DEAD},
        reason_contains={UID_A: "0xC122"},
    ),
    "200-failed-0110-processing-failure": Case(
        200,
        body(failures=((UID_A, 0x0110),)),
        {UID_A: Action.RETRY},
        reason_contains={UID_A: "0x0110"},
    ),
    "202-failed-0110-processing-failure": Case(
        202, body(failures=((UID_A, 0x0110),)), {UID_A: Action.RETRY}
    ),
    "202-referenced": Case(202, body(stored=(UID_A,)), {UID_A: Action.DONE}),
    "202-instance-in-neither-sequence": Case(
        202, body(stored=(UID_B,)), {UID_A: Action.RETRY}, reason_contains={UID_A: "HTTP 202"}
    ),
    "202-empty-body": Case(202, None, {UID_A: Action.RETRY}),
    "409-failed-0110-google-duplicate": Case(
        409,
        body(failures=((UID_A, 272),)),
        {UID_A: Action.CONFLICT},
        reason_contains={UID_A: "exists"},
    ),
    "409-no-body-single-instance": Case(
        409, None, {UID_A: Action.CONFLICT}, reason_contains={UID_A: "409"}
    ),
    "409-failed-0111-duplicate": Case(
        409, body(failures=((UID_A, 0x0111),)), {UID_A: Action.CONFLICT}
    ),
    "200-failed-45070-duplicate": Case(
        200, body(failures=((UID_A, 45070),)), {UID_A: Action.CONFLICT}
    ),
    "409-failed-45070-duplicate": Case(
        409, body(failures=((UID_A, 45070),)), {UID_A: Action.CONFLICT}
    ),
    "failed-without-reason-code": Case(
        409,
        {"00081198": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [UID_A]}}]}},
        {UID_A: Action.CONFLICT},
    ),
    "failed-unknown-reason": Case(200, body(failures=((UID_A, 0xD123),)), {UID_A: Action.DEAD}),
    "failed-comment-in-reason": Case(
        200,
        body(failures=((UID_A, 0xC000),), comment="Bad pixel data"),
        {UID_A: Action.DEAD},
        reason_contains={UID_A: "Bad pixel data"},
    ),
    "408": Case(
        408, None, {UID_A: Action.RETRY}, text="timeout", reason_contains={UID_A: "HTTP 408"}
    ),
    "429": Case(429, None, {UID_A: Action.RETRY}, reason_contains={UID_A: "HTTP 429"}),
    "500": Case(500, None, {UID_A: Action.RETRY}, text="boom", reason_contains={UID_A: "boom"}),
    "503": Case(503, None, {UID_A: Action.RETRY}, reason_contains={UID_A: "HTTP 503"}),
    "400": Case(
        400,
        None,
        {UID_A: Action.DEAD},
        text="Malformed request",
        reason_contains={UID_A: "Malformed request"},
    ),
    "401": Case(
        401,
        None,
        {UID_A: Action.DEAD},
        text="Unauthenticated",
        reason_contains={UID_A: "Unauthenticated"},
    ),
    "403": Case(
        403,
        None,
        {UID_A: Action.DEAD},
        text="Permission denied",
        reason_contains={UID_A: "Permission denied"},
    ),
    "404": Case(
        404,
        None,
        {UID_A: Action.DEAD},
        text="No such store",
        reason_contains={UID_A: "No such store"},
    ),
    "413": Case(
        413,
        None,
        {UID_A: Action.DEAD},
        text="Too large",
        reason_contains={UID_A: "HTTP 413: Too large"},
    ),
    "415": Case(
        415,
        None,
        {UID_A: Action.DEAD},
        text="Unsupported media",
        reason_contains={UID_A: "Unsupported media"},
    ),
    "batch-409-referenced-failed-missing": Case(
        409,
        body(stored=(UID_A,), failures=((UID_B, 0xC000),)),
        {UID_A: Action.DONE, UID_B: Action.DEAD, UID_C: Action.SPLIT},
        reason_contains={UID_B: "0xC000", UID_C: "HTTP 409"},
    ),
    "batch-409-duplicate-in-batch": Case(
        409,
        body(stored=(UID_A,), failures=((UID_B, 0x0110),)),
        {UID_A: Action.DONE, UID_B: Action.CONFLICT, UID_C: Action.SPLIT},
    ),
    "batch-400-no-body": Case(
        400, None, {UID_A: Action.SPLIT, UID_B: Action.SPLIT, UID_C: Action.SPLIT}
    ),
    "batch-503": Case(503, None, {UID_A: Action.RETRY, UID_B: Action.RETRY, UID_C: Action.RETRY}),
    "batch-503-with-body": Case(
        503,
        body(stored=(UID_A,)),
        {UID_A: Action.DONE, UID_B: Action.RETRY, UID_C: Action.RETRY},
    ),
    "batch-429": Case(429, None, {UID_A: Action.RETRY, UID_B: Action.RETRY, UID_C: Action.RETRY}),
    "batch-200-all-stored": Case(
        200,
        body(stored=(UID_A, UID_B, UID_C)),
        {UID_A: Action.DONE, UID_B: Action.DONE, UID_C: Action.DONE},
    ),
    "batch-202-partial": Case(
        202,
        body(stored=(UID_A,), failures=((UID_B, 0xA700),)),
        {UID_A: Action.DONE, UID_B: Action.RETRY, UID_C: Action.RETRY},
    ),
    "body-not-a-dict": Case(409, ["not", "a", "dataset"], {UID_A: Action.CONFLICT}),
    "sequence-value-not-a-list": Case(
        202, {"00081199": {"vr": "SQ", "Value": "nonsense"}}, {UID_A: Action.RETRY}
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_classify(case: Case) -> None:
    outcomes = classify(case.status, case.body, case.text, case.uids)
    assert set(outcomes) == set(case.uids)
    assert {uid: o.action for uid, o in outcomes.items()} == case.expected
    for uid, fragment in case.reason_contains.items():
        assert fragment in outcomes[uid].reason
    for uid, outcome in outcomes.items():
        if outcome.action is not Action.DONE:
            assert outcome.reason, f"{uid}: a non-DONE outcome needs a reason"


def test_long_server_text_is_clipped() -> None:
    text = "error " + "x" * 5000
    [outcome] = classify(400, None, text, [UID_A]).values()
    assert outcome.action is Action.DEAD
    assert outcome.reason.startswith("HTTP 400: error xxx")
    detail = outcome.reason.removeprefix("HTTP 400: ")
    assert len(detail) == 300
    assert detail.endswith("…")
    assert len(outcome.reason) < 320


def test_server_text_whitespace_is_collapsed() -> None:
    [outcome] = classify(403, None, "  line one\n\n\tline   two  ", [UID_A]).values()
    assert outcome.reason == "HTTP 403: line one line two"


def test_empty_server_text_gives_bare_status() -> None:
    assert status_outcome(404, "") == Outcome(Action.DEAD, "HTTP 404")
    assert status_outcome(503, "   ") == Outcome(Action.RETRY, "HTTP 503")


def test_long_failure_comment_is_clipped() -> None:
    outcome = classify(200, body(failures=((UID_A, 0xC000),), comment="y" * 1000), "", [UID_A])[
        UID_A
    ]
    assert outcome.action is Action.DEAD
    assert "y" * 299 + "…" in outcome.reason
    assert "y" * 300 not in outcome.reason


def test_google_private_failure_detail_is_reported() -> None:
    response = body(failures=((UID_A, 0xA900),))
    response["00081198"]["Value"][0]["00090097"] = {"vr": "LO", "Value": ["Study UID mismatch"]}
    outcome = classify(200, response, "", [UID_A])[UID_A]
    assert outcome.action is Action.DEAD
    assert "Study UID mismatch" in outcome.reason


@pytest.mark.parametrize(
    ("code", "http_status", "action"),
    [
        (0x0110, 409, Action.CONFLICT),
        (0x0110, 200, Action.RETRY),
        (0x0110, 202, Action.RETRY),
        (0x0111, 200, Action.CONFLICT),
        (0xB00E, 202, Action.CONFLICT),
        (0xA700, 409, Action.RETRY),
        (0xA7FF, 200, Action.RETRY),
        (0xA900, 409, Action.DEAD),
        (0xA9FF, 200, Action.DEAD),
        (0xC000, 200, Action.DEAD),
        (0xCFFF, 200, Action.DEAD),
        (0x0122, 200, Action.DEAD),
        (0xC122, 200, Action.DEAD),
        (0x0000, 200, Action.DEAD),
    ],
)
def test_failure_reason_table(code: int, http_status: int, action: Action) -> None:
    assert failure_reason_outcome(code, http_status).action is action


@pytest.mark.parametrize(
    ("http_status", "action"),
    [
        (200, Action.DONE),
        (204, Action.DONE),
        (408, Action.RETRY),
        (409, Action.CONFLICT),
        (429, Action.RETRY),
        (500, Action.RETRY),
        (502, Action.RETRY),
        (503, Action.RETRY),
        (504, Action.RETRY),
        (400, Action.DEAD),
        (401, Action.DEAD),
        (403, Action.DEAD),
        (404, Action.DEAD),
        (410, Action.DEAD),
        (413, Action.DEAD),
        (415, Action.DEAD),
    ],
)
def test_status_table(http_status: int, action: Action) -> None:
    assert status_outcome(http_status, "").action is action


@pytest.mark.parametrize(
    "text",
    [
        'invalid value for PatientName: "DOE^JANE"',
        "tag (0010,0020) has an invalid value: 12345",
        '{"00100030": {"vr": "DA", "Value": ["19700101"]}}',
        "patientid SYNTH-1 already used",
        "ReferringPhysicianName is too long",
    ],
)
def test_server_text_naming_patient_attributes_is_withheld(text: str) -> None:
    outcome = status_outcome(400, text)
    assert outcome.reason == f"HTTP 400: {WITHHELD}"
    for fragment in ("DOE", "12345", "19700101", "SYNTH-1"):
        assert fragment not in outcome.reason


def test_person_names_are_redacted_and_other_text_kept() -> None:
    reason = status_outcome(400, "instance from DOE^JANE^^DR rejected: bad VR at 0x10").reason
    assert reason == "HTTP 400: instance from [redacted] rejected: bad VR at 0x10"
    assert redact("study 1.2.3 is locked") == "study 1.2.3 is locked"


def test_failure_comments_are_redacted_too() -> None:
    response = {"00081198": failed(("1.2.3", 0xC000), comment='PatientBirthDate "19700101" bad')}
    outcome = classify(409, response, "", ["1.2.3"])["1.2.3"]
    assert "19700101" not in outcome.reason
    assert WITHHELD in outcome.reason


@pytest.mark.parametrize(
    ("code", "action", "text"),
    [
        (0xB000, Action.DONE, "coercion of data elements"),
        (0xB006, Action.DONE, "elements discarded"),
        (0xB007, Action.DONE, "data set does not match SOP class"),
        (0xB001, Action.DONE, "a warning of the store's own"),
        (0x0111, Action.CONFLICT, "the store kept the version it held"),
        (0xB00E, Action.CONFLICT, "the store kept the version it held"),
    ],
)
def test_warning_reason_table(code: int, action: Action, text: str) -> None:
    outcome = warning_reason_outcome(code)
    assert outcome.action is action
    assert f"0x{code:04X}" in outcome.reason and text in outcome.reason


def test_a_warning_applies_to_its_own_item_only() -> None:
    response = body(stored=(UID_A, UID_B))
    response["00081199"]["Value"][1]["00081196"] = {"vr": "US", "Value": [0xB000]}
    outcomes = classify(200, response, "", [UID_A, UID_B])
    assert outcomes[UID_A] == Outcome(Action.DONE)
    assert outcomes[UID_B].action is Action.DONE
    assert "0xB000" in outcomes[UID_B].reason
