"""POST /v1/verify: signature validation (電子署名の検証) in one call (Act §19(1), §21(1)).

A 署名検証者 that receives a signed document and a sign certificate must confirm that the
certificate has not lost effect and that the signature was made with its key (Act
§19(1)); a group's 署名確認者 must do the same, answered by its group (§20(1), §21(1)).
This route does both for a batch of up to `responder.validation.request.MAX_ITEMS`
signatures, in three formats (raw PKCS#1 v1.5 with the certificate and the data or its
digest; CMS SignedData, attached or detached; XMLDSig, enveloped or detached), against
the appliance's own store: each item is answered with one result code and one field per
check (`responder.validation.result`), in the request's order, with the store commit the
statuses came from. The answer is signed like every /v1 answer (a detached JWS in the
``JWS-Signature`` header, `responder.v1.jws`): the verifier's evidence of what was checked.

The appliance keeps neither the document nor the certificate: they live in the worker's
memory for the call and are gone with it; nothing of them reaches a log, a metric or the
ledger (Act §52: the information received serves the confirmation only;
docs/validation.md).

Policy: the service ``validation`` of the agreement (取決め), sign families, method
``json`` (`responder.registry.vocabulary.Service.VALIDATION`); a certificate of a sign
family the agreement does not cover is ``refused`` for its item, an auth certificate is
``not-a-sign-certificate`` and its status is never read. Counted in the ledger (帳簿, Act
§40): one provision per item whose status was read from the store and vouched for (not
``unavailable`` at both instants). That is known before any signature's RSA check
(`responder.validation.verdict.assess`): a call that would count more than the party's
provisions left today (`Context.provisions_left`) is refused 429 before that work. A call with an XML item or more than `LOOP_ITEMS`
items is answered in the worker's batch thread (`_heavy`): a small body may cost seconds.

Bad input: malformed JSON, an unknown field, no items or more than the maximum is 400
naming the field; one document (data, content, CMS, XML or a detached document) larger
than ``[v1] verify_max_document_bytes`` is 413 naming the item; a value that decodes but
does not parse (garbage DER, a digest of the wrong length) is that item's ``malformed``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import msgspec

from crlbuilder.model import Family
from responder import policy
from responder.config import ResponderConfig
from responder.limits import Limit, provisions_wait
from responder.registry.vocabulary import Service
from responder.v1 import problem
from responder.v1.route import Context, Reply, Route
from responder.v1.wire import Problem, StoreRef
from responder.validation.cms import BerBudget, is_der
from responder.validation.path import anchors
from responder.validation.request import CmsItem, Item, Pkcs1Item, VerifyRequest, XmlItem
from responder.validation.result import ItemResult, Refusal
from responder.validation.verdict import assess
from responder.validation.xmldsig import XmlBudget

TOO_LARGE: Final = "too_large"


class VerifyResponse(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The items' results in the request's order, and the store state the statuses reflect."""

    store: StoreRef
    checked_at: datetime
    """The instant of the call: the signing instant of items without a signingTime."""
    results: list[ItemResult]


@dataclass(frozen=True, slots=True)
class VerifyEnv:
    max_document_bytes: int
    unlisted_good: bool = True
    """On a group appliance, ``[group] unlisted``: a serial on no imported CRL is ``good``
    (else ``unknown``), as the group's OCSP and status answers say."""


def setup(config: ResponderConfig) -> VerifyEnv:
    return VerifyEnv(config.v1.verify_max_document_bytes, config.group.unlisted == "good")


def _documents(item: Item) -> list[tuple[str, bytes | None]]:
    if isinstance(item, Pkcs1Item):
        return [("data", item.data)]
    if isinstance(item, CmsItem):
        return [("cms", item.cms), ("content", item.content)]
    assert isinstance(item, XmlItem)
    return [("xml", item.xml), *((f"documents[{k!r}]", v) for k, v in item.documents.items())]


def _received(item: Item) -> dict[str, str]:
    """The SHA-256 of each octet string of ``item``, by field (`ItemResult.received`): the
    signed answer names the document and signature it judged, not only the certificate, so
    that one ``ok`` cannot be shown beside another document. Nothing of them is kept."""
    if isinstance(item, Pkcs1Item):
        fields = [("certificate", item.certificate), ("signature", item.signature),
                  ("data", item.data), ("digest", item.digest)]  # fmt: skip
    elif isinstance(item, CmsItem):
        fields = [("cms", item.cms), ("content", item.content)]
    else:
        assert isinstance(item, XmlItem)
        fields = [("xml", item.xml), *((f"documents/{k}", v) for k, v in item.documents.items())]
    return {name: hashlib.sha256(value).hexdigest() for name, value in fields if value is not None}


def _too_large(request: VerifyRequest, limit: int) -> Problem | None:
    for i, item in enumerate(request.items):
        for name, value in _documents(item):
            if value is not None and len(value) > limit:
                return problem.make(
                    413, TOO_LARGE,
                    f"a document is larger than this appliance accepts ({limit} octets)",
                    field=f"$.items[{i}].{name}",
                )  # fmt: skip
    return None


LOOP_ITEMS: Final = 4
"""The most items of a call without XML answered on the event loop (`_heavy`)."""


def _heavy(request: VerifyRequest) -> bool:
    """`Route.offload`: a call with an XML item, or with more than `LOOP_ITEMS` items, is
    answered in the batch thread, whatever its body's size. Its cost does not follow that
    size: one XML item of 36 KB within every bound of `responder.validation.xmldsig` took
    2.7 s of a core (a call's canonicalisation budget allows about 4 s), and 1,000 raw
    PKCS#1 items over a genuine JPKI certificate 0.37 s (a 1.5 MB body; under self-made
    8192-bit keys 0.95 s, before the path came first). On the event loop such a call
    held up every other connection of the worker, OCSP too; in the batch thread it waits
    its party's turn in the fair queue (`responder.signing.SigningPool`). A call of a few
    raw or CMS items (about 0.5 ms each, 2.3 ms at most) stays on the loop, so that
    single-signature calls in parallel are not refused ``fair_share``; unless one is a CMS
    in BER (indefinite lengths, segmented content), re-encoded first (up to
    `responder.validation.cms.BER_TLVS_PER_CALL` TLVs a call, about 0.3 s). The handler is safe
    in the thread: its env is frozen, the XML library's I/O callbacks read the thread's own
    context (`responder.validation.xmldsig`)."""
    items = request.items
    return len(items) > LOOP_ITEMS or any(
        isinstance(item, XmlItem) or (isinstance(item, CmsItem) and not is_der(item.cms))
        for item in items
    )


def handle(request: VerifyRequest, ctx: Context) -> Reply[VerifyResponse] | Problem:
    env = ctx.env
    assert isinstance(env, VerifyEnv)
    refused = _too_large(request, env.max_document_bytes)
    if refused is not None:
        return refused
    reader = ctx.reader
    now = datetime.fromtimestamp(ctx.now, UTC)
    known = anchors(reader.issuers())

    def permit(family: Family) -> Refusal | None:
        got = ctx.permit(Service.VALIDATION, family)
        return Refusal(rule=got.rule.value, article=got.article) if got is not None else None

    xml_budget = XmlBudget()  # the call's, shared by its XML items
    ber_budget = BerBudget()  # the call's, shared by its CMS items in BER
    assessed = [
        assess(
            i, item, known, reader, now, permit, unlisted_good=env.unlisted_good,
            xml_budget=xml_budget, ber_budget=ber_budget,
        )
        for i, item in enumerate(request.items)
    ]  # fmt: skip
    # 帳簿 (Act §40): what counts is known before any signature's RSA check is run, so a
    # call past the party's provisions of the day is refused before that work, not after
    counted = sum(1 for a in assessed if a.provides)
    left = ctx.provisions_left
    if left is not None and counted > left:
        refusal = policy.limit_refusal(ctx.party, Service.VALIDATION, Limit.PROVISIONS)
        return problem.quota(refusal, provisions_wait(ctx.now, left), ctx.now)
    results = [
        msgspec.structs.replace(a.result(), received=_received(item))
        for a, item in zip(assessed, request.items, strict=True)
    ]
    families = {r.certificate.family for r in results if r.certificate is not None}
    committed = reader.committed_at()
    body = VerifyResponse(
        store=StoreRef(
            commit=reader.generation().commit,
            committed_at=datetime.fromtimestamp(committed, UTC) if committed else None,
        ),
        checked_at=now,
        results=results,
    )
    only = next(iter(families)) if len(families) == 1 else None
    family = only or ""
    return Reply(body, ((Service.VALIDATION, counted),), family)


ROUTE: Final = Route(
    method="POST",
    path="/v1/verify",
    name="verify",
    summary="Signature validation (電子署名の検証): signature, path and status in one call, Act §19(1), §21(1)",
    description=__doc__ or "",
    request=VerifyRequest,
    response=VerifyResponse,
    services=(Service.VALIDATION,),
    handler=handle,
    setup=setup,
    problems=((413, "a document over [v1] verify_max_document_bytes (too_large)"),),
    offload=_heavy,
)
