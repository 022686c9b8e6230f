"""POST /v1/token: 特定利用者証明検証者証明符号, the code showing a party is a 特定利用者証明検証者 (Act §38-3).

A 特定利用者証明検証者 (a 利用者証明検証者 approved by the ministers to confirm a holder by
the photo on the card, 認可, Act §38-2(1),(4)) may ask the 機構 for this code (§38-3(1)); the
機構 provides it (§38-3(2)) under an agreement naming the service ``specified-verifier-token``
and the ``json`` method (取決め, §38-3(3)). The code is an X.509 certificate of the party's key,
issued from its PKCS#10 request by the token issuer (`crlbuilder.tokens`): certificate policy
`crlbuilder.tokenrequest.TOKEN_POLICY_OID`, valid within the approval period, revoked by the
builder once the party is no longer a 特定利用者証明検証者 (its approval revoked, Act §38-2(6),
or its period ended, §38-2(1); its provision ended, §36(2)), its status answered by OCSP and
``POST /v1/status`` like any certificate's.

The exchange, asynchronous because workers hold no CA key (the builder signs):

1. the party POSTs ``{"csr": ...}`` (PEM, or DER in base64);
2. the dispatcher (`responder.v1.routes`) authenticates it and checks the agreement (no title
   or no agreement: 403 citing Act §38-3(2) or §38-3(3));
3. `handle` checks the approval is in force now (403 citing Act §38-2(1) or, revoked, §38-2(6)),
   then the CSR (400 naming ``$.csr``: not a CSR, a signature that does not verify, a key
   weaker than RSA-2048 or other than EC P-256);
4. the request's id (`crlbuilder.tokenrequest.request_id`: party, public key, approval) names
   it: when the builder has issued it (``<id>.pem`` in ``[token] issued_dir`` and its status
   in the store), 200 with the certificate and its issuer's, counted in the ledger
   (帳簿, Act §40: ``specified-verifier-token``, ``json``) once per token, the first time it
   is handed out, as that answer is written (`TokenDesk.count_once`; one never written, its
   connection gone before its turn, is neither counted nor marked and gives its provision
   back): the provision is of the code (符号の提供, Act
   §38-3(2)); the same certificate handed out again (a party polling after it got it, or the
   builder's copy of a lost file) is no new provision and is not counted again;
   409 when that token was revoked or has expired (a token lives ``tokens.validity_days``
   within the approval: the party renews it with a new key); else, a request not yet issued
   must be bound to the party that asks: its CSR names it, and no other, as a subjectAltName
   URI ``urn:jpki-va:party:<id>`` (`crlbuilder.tokenrequest.binding_refusal`; 400 naming
   ``$.csr`` otherwise, nothing queued): a CSR is no secret, and a party holding another's
   got a token naming itself with the other's key. A token issued before this check (from a
   CSR naming no party) is still handed out for that CSR. An approval that stops being in
   force at the end of the request's second (or within it) is refused 403 ``ended``
   (`last_second_refusal`: the token would be valid for that second only); then 202 ``pending`` with
   ``retryAfterSeconds``, the request queued for the builder
   (``<id>.json`` in ``[token] request_dir``, the `Reply.effect`; nothing counted), unless the
   party would then hold more than ``[token] max_per_party`` tokens in force or queued: 409
   ``token_limit`` (`limit_refusal`; workers racing may each queue one past it). The party
   repeats the same POST until it gets the token: asking again for the same key under the
   same approval is the same request.

Nothing personal is involved (a verifier's key and registry id); the CSR's subject is not
copied (the token names the party as the registry knows it).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Final, Literal, Protocol, runtime_checkable

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from crlbuilder.manifest import Manifest, ManifestError, load_manifest
from crlbuilder.model import Category, Family
from crlbuilder.store import format as sf
from crlbuilder.tokenrequest import (
    MAX_CSR_CHARS,
    TOKEN_POLICY_OID,
    CsrError,
    TokenRequest,
    binding_refusal,
    check_csr,
    issued_path,
    read_request,
    request_id,
    request_path,
    sweep_tmp,
    token_holder,
    token_serial,
    write_request,
)
from crlbuilder.validity import expired_at
from responder import policy
from responder.config import ResponderConfig
from responder.registry.vocabulary import Service
from responder.v1 import problem
from responder.v1.route import Context, Count, Counts, Delivery, Link, Provide, Reply, Route
from responder.v1.wire import Problem

_log = logging.getLogger(__name__)

COUNTED_SUBDIR: Final = "counted"
"""The subdirectory of ``[token] request_dir`` holding the marks of the tokens counted."""
TOKEN_COUNTS: Final[Counts] = ((Service.SPECIFIED_VERIFIER_TOKEN, 1),)
"""One token handed out: one provision (件数) of the code (Act §38-3(2))."""

RETRY_AFTER_SECONDS: Final = 2
"""What a pending answer suggests: the builder's follow loop takes a queued request at its
next scan (``input.follow_interval``)."""


class TokenBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The party's certificate request."""

    csr: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=MAX_CSR_CHARS,
            description="PKCS#10 certificate request (RFC 2986): PEM, or DER in base64; "
            "key RSA 2048 bits or more, or EC P-256; naming the party that asks, and no other, "
            "as a subjectAltName URI urn:jpki-va:party:<id> in its requested extensions (a "
            "request not yet issued without it is 400)",
        ),
    ]


class TokenAnswer(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """The token, or that it is being issued."""

    request: str
    """The request's id: the same for the same party, key and approval."""
    status: Literal["pending", "issued"]
    retry_after_seconds: int | None = None
    """``pending``: ask again (the same POST) after this many seconds."""
    certificate: str | None = None
    """``issued``: the token, PEM."""
    issuer_certificate: str | None = None
    """``issued``: the token issuer's CA certificate, PEM (the chain to verify it with)."""
    issuer: str | None = None
    """``issued``: the token issuer's id (``verifier-token-g1``): with ``serial``, what
    ``POST /v1/status`` asks the token's status by (the answer's ``status`` link)."""
    serial: str | None = None
    """``issued``: the token's serial number, hexadecimal."""
    not_before: datetime | None = None
    not_after: datetime | None = None
    policy: str | None = None
    """``issued``: the certificate policy naming the title (特定利用者証明検証者)."""


@runtime_checkable
class TokenDesk(Protocol):
    """Where requests are queued and issued tokens found (the handler's I/O port)."""

    def issuer_pem(self) -> str | None:
        """The token issuer's certificate (PEM); None when this PKI has no token issuer."""
        ...

    def issuer_index(self) -> int:
        """The token issuer's index in the store."""
        ...

    def issuer_id(self) -> str:
        """The token issuer's id, as the PKI manifest and ``POST /v1/status`` name it."""
        ...

    def issued(self, rid: str) -> bytes | None:
        """The issued token ``<id>.pem``, or None."""
        ...

    def queue(self, req: TokenRequest) -> None:
        """Queue a request for the builder (once: a request already queued is kept)."""
        ...

    def max_per_party(self) -> int:
        """The most tokens one party may hold at once, in force or queued (``[token]``)."""
        ...

    def queued_by(self, party: str) -> frozenset[str]:
        """The ids of the requests queued for ``party`` (not yet taken by the builder)."""
        ...

    def counted_before(self, rid: str) -> bool | None:
        """Whether the token ``rid`` was counted when handed out before (read only, when its
        answer is made); None when the record cannot be read (nothing given: 503)."""
        ...

    def count_once(self, rid: str, give: Callable[[], bool]) -> bool | None:
        """Count the token ``rid`` handed out, once (when its answer is written): run ``give``
        (which counts it in the ledger, or refuses) unless ``rid`` was counted before, and
        record it counted only once ``give`` said yes. Returns ``give``'s answer, True when
        it was counted before (nothing given), None when the record cannot be read (nothing
        given)."""
        ...


class FileDesk:
    """The `TokenDesk` of a worker: ``[token]`` directories and the PKI's token issuer."""

    def __init__(
        self, request_dir: Path, issued_dir: Path, issuer_cert: str, index: int,
        max_per_party: int = 16, issuer_id: str = "",
    ) -> None:  # fmt: skip
        self.request_dir = request_dir
        self.issued_dir = issued_dir
        self._issuer_pem = issuer_cert
        self._index = index
        self._id = issuer_id
        self._max = max_per_party

    def max_per_party(self) -> int:
        return self._max

    def queued_by(self, party: str) -> frozenset[str]:
        """Reads every queued request (a few: the builder takes them at its next scan); one
        that cannot be read (taken meanwhile, half-written) is left out."""
        out: set[str] = set()
        for path in self.request_dir.glob("*.json"):
            try:
                req = read_request(path)
            except (OSError, msgspec.DecodeError):
                continue
            if req.party == party:
                out.add(req.id)
        return frozenset(out)

    def issuer_pem(self) -> str | None:
        return self._issuer_pem

    def issuer_index(self) -> int:
        return self._index

    def issuer_id(self) -> str:
        return self._id

    def issued(self, rid: str) -> bytes | None:
        try:
            return issued_path(self.issued_dir, rid).read_bytes()
        except FileNotFoundError:
            return None

    def queue(self, req: TokenRequest) -> None:
        if not request_path(self.request_dir, req.id).exists():
            self.request_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_request(self.request_dir, req)

    @property
    def counted_dir(self) -> Path:
        """``<request_dir>/counted``: one empty-or-marked file per token handed out (the
        builder reads only ``<request_dir>/*.json``)."""
        return self.request_dir / COUNTED_SUBDIR

    def counted_before(self, rid: str) -> bool | None:
        """`TokenDesk.counted_before`: ``counted/<id>`` marked (not locked: `count_once`
        decides again under the lock)."""
        try:
            return (self.counted_dir / rid).stat().st_size > 0
        except FileNotFoundError:
            return False
        except OSError as e:
            _log.error("the token's counted mark cannot be read: %s", e.strerror)
            return None

    def count_once(self, rid: str, give: Callable[[], bool]) -> bool | None:
        """`TokenDesk.count_once` with ``counted/<id>``: the file locked (``flock``, every
        worker of the node) while it is read, ``give`` run and the mark written, so two
        workers handing out the same token at once count it once. The mark is written after
        the count: a worker killed between them has counted it, and counts it again at the
        next delivery (at worst again, never not at all)."""
        try:
            self.counted_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.counted_dir / rid, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            _log.error("the token's counted mark cannot be opened: %s", e.strerror)
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_size > 0:
                    return True  # counted when it was first handed out
            except OSError as e:
                _log.error("the token's counted mark cannot be read: %s", e.strerror)
                return None
            if not give():
                return False
            try:
                os.write(fd, b"1\n")
            except OSError as e:  # counted, not marked: counted again at the next delivery
                _log.error("the token's counted mark not kept: %s", e.strerror)
            return True
        finally:
            os.close(fd)  # releases the lock


def setup(config: ResponderConfig) -> TokenDesk | None:
    """Once per worker: the desk, or None when no token can be issued (503)."""
    t = config.token
    if t.request_dir is None or t.issued_dir is None:
        return None
    try:
        manifest = load_manifest(config.store.pki)
    except ManifestError:
        return None
    tok = manifest.token_issuer
    if tok is None:
        return None
    pem = manifest.path(tok.cert).read_text(encoding="ascii")
    with contextlib.suppress(OSError):  # a directory not there yet or unreadable: queue says so
        sweep_tmp(t.request_dir, now=time.time())  # a crashed worker's half-written requests
    return FileDesk(t.request_dir, t.issued_dir, pem, tok.index, t.max_per_party, tok.id)


def issuer_not_after(config: ResponderConfig, manifest: Manifest) -> tuple[str, datetime] | None:
    """The token issuer's id and its certificate's notAfter where this responder takes token
    requests (``[token]`` set, the manifest naming a token issuer: `setup`'s condition), for
    ``jpkiva_token_issuer_not_after_timestamp_seconds`` (`responder.signergauges`); else None.
    No token outlives that certificate, and past it none is issued (`_issuer_expired`)."""
    t = config.token
    tok = manifest.token_issuer
    if t.request_dir is None or t.issued_dir is None or tok is None:
        return None
    cert = x509.load_pem_x509_certificate(manifest.path(tok.cert).read_bytes())
    return tok.id, cert.not_valid_after_utc


_REVOKED_ARTICLE: Final = Category.APPROVAL_WITHDRAWN.articles[Family.SPECIFIED_VERIFIER_TOKEN]
"""A revoked token's citation (`Category.APPROVAL_WITHDRAWN`: its cause is not kept)."""

_UNAVAILABLE: Final = problem.make(
    503,
    problem.UNAVAILABLE,
    "this responder issues no 特定利用者証明検証者証明符号 (not configured)",
)


def _issuer_expired(issuer_pem: str, now: float) -> Problem | None:
    """503 when the token issuer's own certificate has expired: the builder can sign no token
    under it (it drops such a request with the reason, `crlbuilder.tokens`), so a request
    queued now would be answered ``pending`` for ever. Nothing is queued or counted."""
    not_after = x509.load_pem_x509_certificate(issuer_pem.encode("ascii")).not_valid_after_utc
    if not expired_at(not_after, now):
        return None
    return problem.make(
        503, problem.UNAVAILABLE,
        f"the token issuer's certificate expired at {not_after:%Y-%m-%dT%H:%M:%SZ}: no "
        "特定利用者証明検証者証明符号 can be issued until the 機構 rolls the token issuer over",
    )  # fmt: skip


def approval_refusal(ctx: Context) -> Problem | None:
    """403 when the party's approval (認可) is not in force now, citing why."""
    approval = ctx.party.approval
    if approval is None:
        return problem.make(
            403, policy.Rule.UNAUTHORIZED_SERVICE.value,
            "only a 特定利用者証明検証者 (approved under Act §38-2(1)) receives this code",
            article="Act §38-3(1)",
        )  # fmt: skip
    now = ctx.now
    if now < approval.start:
        return problem.make(
            403, policy.Rule.NOT_STARTED.value, "the approval (認可) is not in force yet",
            article="Act §38-2(1)",
        )  # fmt: skip
    if now >= approval.revoked:
        return problem.make(
            403, policy.Rule.ENDED.value, "the approval (認可) was revoked (取消し)",
            article="Act §38-2(6)",
        )  # fmt: skip
    if now >= approval.until:
        return problem.make(
            403, policy.Rule.ENDED.value, "the approval period (認可) has ended",
            article="Act §38-2(1)",
        )  # fmt: skip
    return None


def last_second_refusal(ctx: Context) -> Problem | None:
    """403 ``ended`` when the approval (認可) stops being in force within the request's own
    second or at its end: revoked then (Act §38-2(6)), its period's end (§38-2(1): a request
    at 23:59:59 JST of its last day), or the party's provision end (§36(2)). The token would
    start and end in that second (notBefore == notAfter, `crlbuilder.tokens.token_validity`):
    valid for it alone under the inclusive convention (`crlbuilder.validity`), but signed at
    a build after it, and a token record with notAfter == notBefore is refused on the stream
    (`crlbuilder.ingest.check_record`). Refused here, saying why, rather than queued and
    dropped by the builder without a word to the party."""
    approval = ctx.party.approval
    assert approval is not None  # `approval_refusal` first
    ends = min(approval.end, ctx.party.end)
    if ends > math.floor(ctx.now) + 1:
        return None
    if ends == approval.revoked:
        article = "Act §38-2(6)"
    elif ends == approval.until:
        article = "Act §38-2(1)"
    else:
        article = ctx.party.end_article or "Act §36(2)"
    return problem.make(
        403, policy.Rule.ENDED.value,
        "the approval (認可) stops being in force at the end of this second: no token can be "
        "issued under it",
        article=article,
    )  # fmt: skip


def limit_refusal(ctx: Context, desk: TokenDesk, rid: str) -> Problem | None:
    """409 ``token_limit`` when a new request ``rid`` would give its party more tokens than
    ``[token] max_per_party``: those in force (good, unexpired: the store's links of the
    party's holder digest) and those queued. A request already queued, or one whose token
    the store holds (its file being signed again), is no new token: never refused."""
    queued = desk.queued_by(ctx.party.id)
    if rid in queued:
        return None
    reader, now = ctx.reader, ctx.now
    mine = sf.status_key(desk.issuer_index(), token_serial(rid))
    held = 0
    for key in reader.holder_certs(token_holder(ctx.party.id), Family.SPECIFIED_VERIFIER_TOKEN):
        if key == mine:
            return None
        st = reader.status(key)
        if st is not None and not st.revoked and not expired_at(st.not_after, now):
            held += 1
    bound = desk.max_per_party()
    if held + len(queued) < bound:
        return None
    return problem.make(
        409, "token_limit",
        f"this party holds {held} 特定利用者証明検証者証明符号 in force and {len(queued)} being "
        f"issued, the most allowed ({bound}): ask again once one has expired or been revoked",
        field="$.csr",
    )  # fmt: skip


def _count_nothing(count: Count) -> None:
    """The `Delivery.record` of a token counted when it was first handed out."""
    count(())


def _counted_once(desk: TokenDesk, rid: str) -> Provide:
    """The `Reply.provide` of a token handed out: one provision, the first time only. When
    the answer is made, one provision unless the token was counted before (taken from the
    day's provisions); as it is written, counted and marked unless another answer written
    since counted it (`TokenDesk.count_once`: then none, and the provision is given back).
    A mark that cannot be read or kept then: counted (at worst again, never not at all)."""

    def provide() -> Delivery | None:
        before = desk.counted_before(rid)
        if before is None:
            return None  # nothing counted nor given: 503
        if before:
            return Delivery((), _count_nothing)

        def record(count: Count) -> None:
            counted: list[bool] = []

            def give() -> bool:
                count(TOKEN_COUNTS)
                counted.append(True)
                return True

            got = desk.count_once(rid, give)
            if not counted:  # True: another hand-out written since counted it; None: the
                # mark unreadable now, counted (at worst again, never not at all)
                count(TOKEN_COUNTS if got is None else ())

        return Delivery(TOKEN_COUNTS, record)

    return provide


def handle(body: TokenBody, ctx: Context) -> Reply[TokenAnswer] | Problem:
    """The token, or a pending answer queuing the request (the module docstring)."""
    desk = ctx.env
    if desk is None:
        return _UNAVAILABLE
    assert isinstance(desk, TokenDesk)  # the route's setup
    issuer_pem = desk.issuer_pem()
    if issuer_pem is None:
        return _UNAVAILABLE
    refused = approval_refusal(ctx)
    if refused is not None:
        return refused
    try:
        csr = check_csr(body.csr, field="$.csr")
    except CsrError as e:
        return problem.bad_input(e.field, str(e))
    approval = ctx.party.approval
    assert approval is not None
    rid = request_id(ctx.party.id, csr.spki, approval.window)
    family = Family.SPECIFIED_VERIFIER_TOKEN.value
    pem = desk.issued(rid)
    if pem is not None:
        cert = x509.load_pem_x509_certificate(pem)
        st = ctx.reader.status(sf.status_key(desk.issuer_index(), token_serial(rid)))
        if st is not None and st.revoked:
            return problem.make(
                409, "token_revoked",
                "the token issued for this key under this approval was revoked; ask with a new key",
                article=_REVOKED_ARTICLE, field="$.csr",
            )  # fmt: skip
        if st is not None and expired_at(st.not_after, ctx.now):
            return problem.make(
                409, "token_expired",
                "the token issued for this key under this approval has expired; ask with a new key",
                field="$.csr",
            )  # fmt: skip
        if st is not None:
            answer = TokenAnswer(
                request=rid,
                status="issued",
                certificate=cert.public_bytes(Encoding.PEM).decode("ascii"),
                issuer_certificate=issuer_pem,
                issuer=desk.issuer_id(),
                serial=f"{cert.serial_number:x}",
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                policy=TOKEN_POLICY_OID.dotted_string,
            )
            return Reply(answer, (), family, provide=_counted_once(desk, rid))
    unbound = binding_refusal(csr.parties, ctx.party.id)
    if unbound is not None:  # after the hand-out: a token issued before the binding still is
        return problem.bad_input("$.csr", unbound)
    last_second = last_second_refusal(ctx)
    if last_second is not None:
        return last_second
    expired = _issuer_expired(issuer_pem, ctx.now)
    if expired is not None:
        return expired
    over = limit_refusal(ctx, desk, rid)
    if over is not None:
        return over
    req = TokenRequest(
        id=rid,
        party=ctx.party.id,
        csr=csr.der,
        requested_at=datetime.fromtimestamp(math.floor(ctx.now), UTC),
    )
    pending = TokenAnswer(request=rid, status="pending", retry_after_seconds=RETRY_AFTER_SECONDS)
    return Reply(
        pending, (), family, effect=lambda: desk.queue(req), status=202,
        retry_after=RETRY_AFTER_SECONDS,
    )  # fmt: skip


def _off_the_loop(_body: TokenBody) -> bool:
    """`Route.offload`: every call is answered in the batch thread, in its party's turn
    (429 ``fair_share`` past its share), its handler and effect both: a call's cost does not
    follow its body's size. Measured in process on the loop (``python -m
    bench.bench_v1_token_loop``, a shared 2-core machine): a new request writes its file
    whole with an fsync (1.5 to 172 ms over two runs), every call reads back each queued request of the
    queue (`FileDesk.queued_by`) and the issued token's file, and the CSR's self-signature
    with the largest public exponent accepted costs 2 to 5.5 ms (median) under RSA-8192; a call
    that merely finds its request queued, about 0.4 ms (median) for EC P-256. On the event
    loop that held every other connection of the worker, OCSP too. The count and the counted
    mark stay on the loop, as the answer is written (`Delivery`). The desk is safe in the
    thread: its state is its directories (each request written whole, renamed in)."""
    return True


ROUTE: Final = Route(
    method="POST",
    path="/v1/token",
    name="token",
    summary="特定利用者証明検証者証明符号 (Act §38-3): a token certificate from the party's CSR",
    description=__doc__ or "",
    request=TokenBody,
    response=TokenAnswer,
    services=(Service.SPECIFIED_VERIFIER_TOKEN,),
    handler=handle,
    setup=setup,
    offload=_off_the_loop,
    writes=True,  # a pipelined request after one that queued reads the queue it wrote
    accepted=((202, "Pending: the request is queued for the builder; ask again (the same POST)."),),
    links=(
        Link(
            name="status",
            operation="status",
            description="The token's status (good, or revoked with its approval, Act §38-2(6)): "
            "asked by its issuer and serial, as OCSP answers it, not counted.",
            body={
                "entries": [
                    {"issuer": "$response.body#/issuer", "serial": "$response.body#/serial"}
                ]
            },
        ),
    ),
    problems=(
        (
            409,
            "The token issued for this key under this approval was revoked "
            "(``token_revoked``) or has expired (``token_expired``): use a new key. Or the "
            "party holds ``[token] max_per_party`` tokens in force or being issued "
            "(``token_limit``): ask again once one has expired or been revoked.",
        ),
    ),
)
