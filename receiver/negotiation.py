"""Presentation-context negotiation: which contexts the receiver accepts, and in which syntax.

Pure: an ``AssociateRequest`` and the policy in, one result per proposed context out.
Each accepted context takes the transfer syntax the requestor lists first, so an instance
arrives as the PACS holds it and the receiver never asks for a conversion; the one
exception is Explicit VR Big Endian (retired), never chosen over a little-endian syntax
offered in the same context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydicom.uid import AllTransferSyntaxes

from .acse_codec import AssociateRequest, ContextResult

VERIFICATION = "1.2.840.10008.1.1"
EXPLICIT_BIG_ENDIAN = "1.2.840.10008.1.2.2"
IMPLICIT_LITTLE_ENDIAN = "1.2.840.10008.1.2"
_KNOWN_SYNTAXES = frozenset(str(uid) for uid in AllTransferSyntaxes)

# Presentation context results (PS3.8 Table 9-18).
ACCEPTANCE = 0
PROVIDER_REJECTION = 2
ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
TRANSFER_SYNTAXES_NOT_SUPPORTED = 4


@dataclass(frozen=True, slots=True)
class AcceptedContext:
    abstract_syntax: str
    transfer_syntax: str


@dataclass(frozen=True, slots=True)
class Negotiated:
    results: list[ContextResult]
    accepted: dict[int, AcceptedContext]
    rejected: list[str]  # abstract syntaxes of the contexts refused, in request order


def choose_transfer_syntax(proposed: tuple[str, ...]) -> str | None:
    """The first known syntax the requestor lists, Big Endian only when nothing else is."""
    known = [uid for uid in proposed if uid in _KNOWN_SYNTAXES]
    little = [uid for uid in known if uid != EXPLICIT_BIG_ENDIAN]
    if little:
        return little[0]
    return known[0] if known else None


def negotiate(request: AssociateRequest, is_storage: Callable[[str], bool]) -> Negotiated:
    results: list[ContextResult] = []
    accepted: dict[int, AcceptedContext] = {}
    rejected: list[str] = []
    seen: set[int] = set()
    for context in request.contexts:
        # A refused context's syntax is ignored by the requestor (PS3.8 §9.3.3.2): a known
        # one it proposed, never its own text echoed back into our A-ASSOCIATE-AC.
        known = (uid for uid in context.transfer_syntaxes if uid in _KNOWN_SYNTAXES)
        placeholder = next(known, IMPLICIT_LITTLE_ENDIAN)
        abstract = context.abstract_syntax
        if context.context_id in seen or context.context_id % 2 == 0:
            result, choice = PROVIDER_REJECTION, None
        elif abstract != VERIFICATION and not is_storage(abstract):
            result, choice = ABSTRACT_SYNTAX_NOT_SUPPORTED, None
        else:
            choice = choose_transfer_syntax(context.transfer_syntaxes)
            result = ACCEPTANCE if choice else TRANSFER_SYNTAXES_NOT_SUPPORTED
        seen.add(context.context_id)
        if choice is None:
            rejected.append(abstract or "(none)")
            results.append(ContextResult(context.context_id, result, placeholder))
            continue
        accepted[context.context_id] = AcceptedContext(abstract, choice)
        results.append(ContextResult(context.context_id, ACCEPTANCE, choice))
    return Negotiated(results, accepted, rejected)
