"""Untrusted bytes into the front door's decoders: only their documented exceptions escape."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.dimse_raw import associate_rq, command_set
from support.fuzzing import associate_rqs, mutated

from receiver import dimse, pdu
from receiver.acse_codec import AssociateDecodeError, decode_associate_rq, encode_associate_ac
from receiver.negotiation import negotiate

FUZZ = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

VALID_RQ_BODY = associate_rq(
    [
        (1, "1.2.840.10008.1.1", ["1.2.840.10008.1.2"]),
        (3, "1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2.1"]),
    ]
)[6:]
VALID_COMMAND = command_set(0x0001, 7, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4")


def _pdv(context_id: int, control: int, data: bytes, length_delta: int = 0) -> bytes:
    return struct.pack(">LBB", max(len(data) + 2 + length_delta, 0), context_id, control) + data


pdv_lists = st.lists(
    st.builds(
        _pdv,
        st.integers(0, 255),
        st.integers(0, 255),
        st.binary(max_size=40),
        st.integers(-4, 4),
    ),
    max_size=5,
).map(b"".join)


@FUZZ
@given(st.one_of(st.binary(max_size=200), pdv_lists))
def test_pdvs_raise_only_framing_errors(body: bytes) -> None:
    try:
        for value in pdu.pdvs(memoryview(body)):
            assert value.context_id % 2 == 1
            assert len(value.data) <= len(body) - 6
    except pdu.FramingError:
        pass


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(VALID_COMMAND)))
def test_parse_command_raises_only_command_errors(data: bytes) -> None:
    try:
        command = dimse.parse_command(data)
    except dimse.CommandError:
        return
    # Whatever was read can be answered.
    response = dimse.response(command, 0xC000, "a comment\\with a backslash")
    assert dimse.parse_command(response).command_field == command.command_field | 0x8000


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=300),
        mutated(VALID_RQ_BODY),
        associate_rqs(b"IMPORTADAPTER").map(lambda rq: rq[6:]),
    )
)
def test_decode_associate_rq_raises_only_decode_errors(body: bytes) -> None:
    try:
        request = decode_associate_rq(body)
    except AssociateDecodeError:
        return
    assert request.contexts
    assert len(request.called_ae) <= 16 and len(request.calling_ae) <= 16
    # Whatever was decoded can be answered (the AC echoes both AE titles).
    negotiated = negotiate(request, lambda uid: uid.startswith("1.2.840.10008.5.1.4.1.1."))
    assert encode_associate_ac(request, negotiated.results, 16384, "1.2.3", "TEST")[0] == 0x02


def test_ae_titles_outside_printable_ascii_are_logged_and_echoed_as_question_marks() -> None:
    body = bytearray(VALID_RQ_BODY)
    body[20:23] = b"\xe9\n\x00"
    request = decode_associate_rq(bytes(body))
    assert request.calling_ae == "???SCU"
    negotiated = negotiate(request, lambda uid: True)
    ac = encode_associate_ac(request, negotiated.results, 16384, "1.2.3", "TEST")
    assert ac[26:42] == b"???SCU".ljust(16)


def test_a_refused_context_never_echoes_its_proposed_text() -> None:
    """A refused context answers with a known syntax, not the requestor's own bytes."""
    odd = "                 !"
    body = associate_rq([(1, "1.2.3.4", [odd]), (3, "1.2.3.5", [odd, "1.2.840.10008.1.2.1"])])
    request = decode_associate_rq(body[6:])
    negotiated = negotiate(request, lambda uid: False)
    placeholders = [(r.result, r.transfer_syntax) for r in negotiated.results]
    assert placeholders == [(3, "1.2.840.10008.1.2"), (3, "1.2.840.10008.1.2.1")]
    encode_associate_ac(request, negotiated.results, 16384, "1.2.3", "TEST")  # no warning


def test_the_mutation_seeds_are_valid() -> None:
    assert len(decode_associate_rq(VALID_RQ_BODY).contexts) == 2
    assert dimse.parse_command(VALID_COMMAND).sop_instance_uid == "1.2.3.4"
