"""The OCSP request flow in process (`responder.flow.OcspFlow.decide`), on an in-memory store.

No server, no LMDB, no files: two issuers made here (sign-card and auth-card, one RSA
key), a registry of parties built in memory, a quota twin, and the store as a
`crlbuilder.store.memory.MemoryReader`. Each test names the rule or the article it
checks: authentication before any lookup (Act §17(1), §36(1)), a revoked serial never
served from the good-answer cache, tryLater past the promised nextUpdate or a due
30-day lapse (Act §31(2), §34(1)(2)), and each refusal rule of the flow.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, date, datetime
from typing import Any

import msgspec
import pytest
from asn1crypto import ocsp as a_ocsp
from asn1crypto import x509 as a_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from crlbuilder import rules
from crlbuilder.der import der_length
from crlbuilder.keys.signer import PemSigner
from crlbuilder.model import Family
from crlbuilder.ocsp.request import parse_request
from crlbuilder.ocsp.response import (
    ResponseSigner,
    ResponseStatus,
    der_integer,
    issuer_hashes,
)
from crlbuilder.store import format as sf
from crlbuilder.store.memory import MemoryReader
from crlbuilder.store.reader import StoredAnswer, StoreReader
from responder.config import OcspConfig
from responder.flow import (
    Answer,
    OcspFlow,
    Refusal,
    Signing,
    Unavailable,
)
from responder.limits import Limit, Wait
from responder.ocsp import IssuerView, Ready
from responder.registry.lookup import Registry
from responder.registry.party import CredentialInfo, Grant, Party, SuspensionWindow
from responder.registry.vocabulary import AuthMethod, Method, Service, Title
from tests.test_ocspreq import a_request

NOW = 1_780_000_000
"""A fixed instant (2026-05-28): nothing here reads the clock."""
VALIDITY = 3600
CONFIG = OcspConfig(good_validity_seconds=VALIDITY, good_cache_entries=100)
SIGN, AUTH = 0, 1
"""Issuer indexes: sign-card G1 and auth-card G1."""
GOOD, REVOKED, ERASED = 0x1001, 0x1002, 0x1003
HOLDER = b"h" * 16
PLANNED = date(2026, 4, 20)
DUE = int(rules.move_out_lapse(PLANNED).timestamp())
"""The 30-day lapse of a move-out notice planned on PLANNED (00:00 JST, 31 days after)."""


# --- the issuers, the parties, the store ----------------------------------------------------


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def self_signed(key: rsa.RSAPrivateKey, cn: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2020, 1, 1))
        .not_valid_after(datetime(2040, 1, 1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def views(key: rsa.RSAPrivateKey) -> dict[int, IssuerView]:
    out = {}
    for index, family in ((SIGN, Family.SIGN_CARD), (AUTH, Family.AUTH_CARD)):
        cert = self_signed(key, f"test {family.value} CA")
        rs = ResponseSigner(PemSigner(key, cert))  # the CA answers itself (RFC 6960 §4.2.2.2)
        out[index] = IssuerView(index, f"{family.value}-g1", family, rs, cert, rs.certs_suffix)
    return out


def party(
    pid: str, *families: Family, credential: CredentialInfo | None = None, **kw: Any
) -> Party:
    """A party holding bearer token ``pid`` (or ``credential``), agreed to receive
    ``families`` by OCSP."""
    grants: dict[Service, Grant] = {}
    for f in families:
        service = Service.SIGN_REVOCATION_INFO if f.is_sign else Service.AUTH_REVOCATION_INFO
        grants[service] = Grant(frozenset({f}), frozenset({Method.OCSP}))
    return Party(
        id=pid,
        name=pid,
        titles=frozenset({Title.SIGNATURE_VERIFIER, Title.USER_VERIFIER}),
        families=frozenset(families),
        auth=frozenset({AuthMethod.TOKEN}),
        cert_public_keys=(),
        grants=grants,
        credentials=(
            credential
            or CredentialInfo(
                label="t", kind=AuthMethod.TOKEN, key=hashlib.sha256(pid.encode()).digest()
            ),
        ),
        **kw,
    )


REGISTRY = Registry(
    [
        party("both", Family.SIGN_CARD, Family.AUTH_CARD),
        party("sign-only", Family.SIGN_CARD),
        party(
            "suspended",
            Family.SIGN_CARD,
            suspensions=(
                SuspensionWindow(
                    frozenset({Service.SIGN_REVOCATION_INFO}), NOW - 60, NOW + 60, "Act §18(6)"
                ),
            ),
        ),
        party("limited", Family.SIGN_CARD),
        party("auth-mobile-only", Family.AUTH_MOBILE),
    ]
)


class Creds:
    """What the transport proves (`responder.access.Credentials`): a bearer token or nothing."""

    def __init__(self, token: str | None = None) -> None:
        self.client_cert_der: bytes | None = None
        self.headers = {b"authorization": b"Bearer " + token.encode()} if token else {}


class Quotas:
    """The quota port's in-memory twin: records each question, refuses who it is told to."""

    def __init__(self, used_up: frozenset[str] = frozenset({"limited"})) -> None:
        self.used_up = used_up
        self.asked: list[str] = []

    def admit(self, party: Party, now: float) -> Wait | None:
        self.asked.append(party.id)
        return Wait(Limit.DAY, 3600) if party.id in self.used_up else None

    def take_provisions(self, party: Party, n: int, now: float) -> Wait | float:
        return now

    def give_back_provisions(self, party: Party, n: int, now: float) -> None:
        pass


def status(version: int, state: int, family: Family, **kw: int) -> sf.StatusRecord:
    fields: dict[str, int] = {"category": 0, "reason": 0, "revoked_at": 0}
    fields.update(kw)
    return sf.StatusRecord(
        version=version, state=state, family=family.code, not_before=NOW - 86400 * 300,
        not_after=NOW + 86400 * 700, holder=HOLDER, **fields,
    )  # fmt: skip


def store(views: dict[int, IssuerView], *, promised: int = NOW + 86400) -> MemoryReader:
    """A built store: a good, a revoked and an erased sign-card serial; a good auth-card one."""
    return MemoryReader(
        issuer_table=[
            sf.IssuerMeta(
                index=v.index,
                id=v.id,
                family=v.family,
                generation=1,
                cert_der=v.certificate.public_bytes(serialization.Encoding.DER),
            )
            for v in views.values()
        ],
        crl_states={i: sf.CrlState(next_update=promised) for i in views},
        status_records={
            sf.status_key(SIGN, GOOD): status(3, sf.STATE_GOOD, Family.SIGN_CARD),
            sf.status_key(SIGN, REVOKED): status(
                4, sf.STATE_REVOKED, Family.SIGN_CARD, revoked_at=NOW - 7200, reason=1
            ),
            sf.status_key(SIGN, ERASED): status(2, sf.STATE_ERASED, Family.SIGN_CARD),
            sf.status_key(AUTH, GOOD): status(3, sf.STATE_GOOD, Family.AUTH_CARD),
        },
        commit=4,
        build=1,
    )


def flow(views: dict[int, IssuerView], quotas: Quotas | None = None) -> OcspFlow:
    return OcspFlow(views.values(), quotas or Quotas(), CONFIG)


def request(
    view: IssuerView, *serials: int, alg: str = "sha1", nonce: bytes | None = None, **kw: Any
) -> bytes:
    name_hash, key_hash = issuer_hashes(view.certificate, alg)
    cids = [
        {"hash_algorithm": {"algorithm": alg}, "issuer_name_hash": name_hash,
         "issuer_key_hash": key_hash, "serial_number": s}
        for s in serials
    ]  # fmt: skip
    return a_request(cids, nonce=nonce, **kw)


def signed(got: Answer | Refusal | Signing, fl: OcspFlow) -> Ready:
    """The answer's bytes: signing (and caching) a fresh one as the shell would."""
    if isinstance(got, Signing):
        ready = got.job.run()
        fl.remember(got.job, ready)
        return ready
    assert isinstance(got, Answer), got
    return got.ready


def cert_status(ready: Ready) -> ocsp.OCSPCertStatus:
    resp = ocsp.load_der_ocsp_response(ready.der)
    assert resp.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    return resp.certificate_status


class Recorder:
    """A `ReadSource` over a `MemoryReader` that records every view opened and every read."""

    def __init__(self, inner: MemoryReader) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def read(self) -> AbstractContextManager[StoreReader]:
        return self._view()

    @contextmanager
    def _view(self) -> Iterator[StoreReader]:
        self.calls.append("read")
        yield _Recording(self.inner, self.calls)


class _Recording:
    def __init__(self, inner: MemoryReader, calls: list[str]) -> None:
        self._inner = inner
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        self._calls.append(name)
        return getattr(self._inner, name)


# --- authentication before any lookup (Act §17(1), §36(1)) ----------------------------------


def test_act_17_1_nothing_is_read_before_a_party_is_proven(views: dict[int, IssuerView]) -> None:
    """Unproven, refused by policy or by quota: the store is never opened, and the quota is
    asked only about a proven party. A proven, allowed party's request is looked up."""
    rec = Recorder(store(views))
    quotas = Quotas()
    fl = flow(views, quotas)
    sign = views[SIGN]
    refused = [
        (b"\x30\x03garbage", Creds("both")),
        (request(sign, GOOD), Creds()),
        (request(sign, GOOD), Creds("nobody-registered-this")),
        (request(sign, GOOD, requestor=a_x509.GeneralName(name="dns_name", value="x.test")), Creds()),
        (request(views[AUTH], GOOD), Creds("sign-only")),
        (request(sign, GOOD), Creds("suspended")),
        (request(sign, GOOD), Creds("limited")),
    ]  # fmt: skip
    for der, creds in refused:
        assert isinstance(fl.decide(der, creds, NOW, rec, REGISTRY), Refusal)
    assert rec.calls == []
    assert quotas.asked == ["limited"]
    got = fl.decide(request(sign, GOOD), Creds("both"), NOW, rec, REGISTRY)
    assert isinstance(got, Signing) and got.party.id == "both"
    assert rec.calls[0] == "read" and "status" in rec.calls


# --- the refusal rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "status", "rule"),
    [
        ("malformed", ResponseStatus.MALFORMED_REQUEST, "malformed"),
        ("no credential", ResponseStatus.UNAUTHORIZED, "unauthenticated"),
        ("unknown token", ResponseStatus.UNAUTHORIZED, "unauthenticated"),
        ("requestor, unsigned", ResponseStatus.SIG_REQUIRED, "unauthenticated"),
        ("not our issuer", ResponseStatus.UNAUTHORIZED, "unknown_issuer"),
        ("two issuers", ResponseStatus.UNAUTHORIZED, "unknown_issuer"),
        ("service not agreed", ResponseStatus.UNAUTHORIZED, "unauthorized_service"),
        ("family not agreed", ResponseStatus.UNAUTHORIZED, "unauthorized_family"),
        ("suspended", ResponseStatus.UNAUTHORIZED, "suspended"),
        ("quota used up", ResponseStatus.TRY_LATER, "quota"),
    ],
)
def test_each_refusal_rule(
    views: dict[int, IssuerView], case: str, status: ResponseStatus, rule: str
) -> None:
    """RFC 6960 §2.3 statuses: malformedRequest, unauthorized (no registered party, Act
    §17(1), §36(1); an issuer we do not serve; a service or a family outside the agreement,
    Act §17(4), §36(2); a suspension, Act §18(6)), sigRequired (a requestor that proves nothing), and
    tryLater for a used-up quota (取決め, Ord §31). Never any status data."""
    sign, auth = views[SIGN], views[AUTH]
    other = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone else's CA")])
    foreign = IssuerView(9, "x", Family.SIGN_CARD, sign.signer, sign.certificate, b"")
    cases: dict[str, tuple[bytes, Creds]] = {
        "malformed": (b"\x30\x80\x00\x00", Creds("both")),
        "no credential": (request(sign, GOOD), Creds()),
        "unknown token": (request(sign, GOOD), Creds("guess")),
        "requestor, unsigned": (
            request(sign, GOOD, requestor=a_x509.GeneralName(name="dns_name", value="x.test")),
            Creds(),
        ),
        "not our issuer": (_foreign_request(foreign, other), Creds("both")),
        "two issuers": (
            a_request([*_cids(sign, GOOD), *_cids(auth, GOOD)]),
            Creds("both"),
        ),
        "service not agreed": (request(auth, GOOD), Creds("sign-only")),
        "family not agreed": (request(auth, GOOD), Creds("auth-mobile-only")),
        "suspended": (request(sign, GOOD), Creds("suspended")),
        "quota used up": (request(sign, GOOD), Creds("limited")),
    }
    der, creds = cases[case]
    got = flow(views).decide(der, creds, NOW, store(views), REGISTRY)
    assert isinstance(got, Refusal)
    assert (got.status, got.rule) == (status, rule)
    proven = case not in ("malformed", "no credential", "unknown token", "requestor, unsigned")
    assert (got.party is not None) is proven


def _cids(view: IssuerView, serial: int) -> list[dict[str, Any]]:
    name_hash, key_hash = issuer_hashes(view.certificate, "sha1")
    return [
        {"hash_algorithm": {"algorithm": "sha1"}, "issuer_name_hash": name_hash,
         "issuer_key_hash": key_hash, "serial_number": serial}
    ]  # fmt: skip


def _foreign_request(view: IssuerView, name: x509.Name) -> bytes:
    """A CertID whose issuerNameHash is of a CA we do not serve."""
    cid = _cids(view, GOOD)[0]
    cid["issuer_name_hash"] = hashlib.sha1(name.public_bytes()).digest()
    return a_request([cid])


# --- the good-answer cache never serves a revoked serial -------------------------------------


@pytest.mark.parametrize("committed", [True, False], ids=["new-commit", "same-snapshot"])
def test_revoked_serial_never_answered_from_the_good_cache(
    views: dict[int, IssuerView], committed: bool
) -> None:
    """A good answer is cached, keyed by the status version read before the cache. Once the
    serial is revoked the next request gets revoked, not the cached good: when the builder's
    commit is seen (a new store generation empties the cache), and even when the view still
    looks unchanged (same snapshot: the status version alone keeps the cached good out)."""
    mem = store(views)
    fl = flow(views)
    sign = views[SIGN]
    first = signed(fl.decide(request(sign, GOOD), Creds("both"), NOW, mem, REGISTRY), fl)
    assert cert_status(first) is ocsp.OCSPCertStatus.GOOD
    hit = fl.decide(request(sign, GOOD), Creds("both"), NOW + 1, mem, REGISTRY)
    assert isinstance(hit, Answer) and hit.ready is first  # served from the cache
    mem.status_records[sf.status_key(SIGN, GOOD)] = status(
        5, sf.STATE_REVOKED, Family.SIGN_CARD, revoked_at=NOW + 2, reason=1
    )
    if committed:
        mem.commit = 5
        mem.changed()
    after = fl.decide(request(sign, GOOD), Creds("both"), NOW + 3, mem, REGISTRY)
    assert isinstance(after, Signing)
    assert cert_status(signed(after, fl)) is ocsp.OCSPCertStatus.REVOKED


def test_stored_presigned_answer_served_only_for_its_status_version(
    views: dict[int, IssuerView],
) -> None:
    """A revoked serial's pre-signed answer is sent as stored (with the signer's certs);
    one of an older status version, or past its nextUpdate, is not: signed afresh."""
    mem = store(views)
    sign = views[SIGN]
    key = sf.status_key(SIGN, REVOKED)
    (asked,) = parse_request(request(sign, REVOKED), max_certids=1).cert_ids
    stem = b"\x30\x82stem" + asked.der  # an answer echoes the CertID asked
    mem.answers[key] = StoredAnswer(4, NOW - 60, NOW + 600, sign.signer.signer_id, stem)
    got = flow(views).decide(request(sign, REVOKED), Creds("both"), NOW, mem, REGISTRY)
    assert isinstance(got, Answer) and got.ready.presigned
    assert got.ready.der == stem + sign.certs_suffix
    assert (got.ready.this_update, got.ready.next_update) == (NOW - 60, NOW + 600)
    for old in (
        StoredAnswer(3, NOW - 60, NOW + 600, sign.signer.signer_id, stem),
        StoredAnswer(4, NOW - 600, NOW, sign.signer.signer_id, stem),
    ):
        mem.answers[key] = old
        got = flow(views).decide(request(sign, REVOKED), Creds("both"), NOW, mem, REGISTRY)
        assert isinstance(got, Signing), old
        assert cert_status(signed(got, flow(views))) is ocsp.OCSPCertStatus.REVOKED


def test_a_presigned_answer_dated_after_now_is_signed_afresh(
    views: dict[int, IssuerView],
) -> None:
    """A stored answer whose thisUpdate is still ahead (the builder's clock ahead of this
    node's, stepped back since, or a build ``--as-of`` a later instant) is not sent: a client
    rejects it (RFC 6960 §3.2 item 5 and §4.2.2.1; openssl: "status not yet valid"), and a
    client that fails open then takes the revoked certificate. It is signed afresh, dated
    now; the one dated now is sent as stored."""
    mem = store(views)
    sign = views[SIGN]
    key = sf.status_key(SIGN, REVOKED)
    (asked,) = parse_request(request(sign, REVOKED), max_certids=1).cert_ids
    stem = b"\x30\x82stem" + asked.der  # an answer echoes the CertID asked
    mem.answers[key] = StoredAnswer(4, NOW + 3_600, NOW + 90_000, sign.signer.signer_id, stem)
    fl = flow(views)
    got = fl.decide(request(sign, REVOKED), Creds("both"), NOW, mem, REGISTRY)
    assert isinstance(got, Signing)
    ready = signed(got, fl)
    assert cert_status(ready) is ocsp.OCSPCertStatus.REVOKED
    assert ready.this_update == NOW
    mem.answers[key] = StoredAnswer(4, NOW, NOW + 90_000, sign.signer.signer_id, stem)
    got = flow(views).decide(request(sign, REVOKED), Creds("both"), NOW, mem, REGISTRY)
    assert isinstance(got, Answer) and got.ready.presigned


def _absent_parameters_request(view: IssuerView, serial: int) -> tuple[bytes, bytes]:
    """A one-CertID request whose sha1 hashAlgorithm has no parameters (RFC 5754 §2: absent
    is the preferred form; some clients send it), and its CertID's DER."""

    def tlv(tag: int, content: bytes) -> bytes:
        return bytes((tag,)) + der_length(len(content)) + content

    name_hash, key_hash = issuer_hashes(view.certificate, "sha1")
    alg = bytes.fromhex("300706052b0e03021a")
    cert_id = tlv(0x30, alg + tlv(0x04, name_hash) + tlv(0x04, key_hash) + der_integer(serial))
    return tlv(0x30, tlv(0x30, tlv(0x30, tlv(0x30, cert_id)))), cert_id


def test_rfc6960_4_2_1_the_answer_echoes_the_requests_certid_parameters_and_all(
    views: dict[int, IssuerView],
) -> None:
    """A CertID whose hashAlgorithm has no parameters is answered with that same CertID:
    neither the pre-signed answer (its CertID has NULL parameters) nor a cached answer of the
    other form is sent for it, and its own answer is never sent for the other form. A client
    that compares CertIDs whole (BouncyCastle's CertificateID.equals) finds no answer for its
    certificate otherwise, a revoked one included."""
    mem = store(views)
    sign = views[SIGN]
    key = sf.status_key(SIGN, REVOKED)
    mem.answers[key] = StoredAnswer(4, NOW - 60, NOW + 600, sign.signer.signer_id, b"\x30stem")
    fl = flow(views)
    for serial in (REVOKED, GOOD, GOOD):  # the second good one: from the cache
        der, cert_id = _absent_parameters_request(sign, serial)
        ready = signed(fl.decide(der, Creds("both"), NOW, mem, REGISTRY), fl)
        assert cert_id in ready.der, serial
    nulls = request(sign, GOOD)  # the usual form: not the other form's cached answer
    ready = signed(fl.decide(nulls, Creds("both"), NOW, mem, REGISTRY), fl)
    assert parse_request(nulls, max_certids=1).cert_ids[0].der in ready.der
    assert cert_id not in ready.der


def test_ord_70_erased_serial_is_never_good(views: dict[int, IssuerView]) -> None:
    """Ord §70(1)(iii): an erased revocation with no kept time answers unknown."""
    got = flow(views).decide(
        request(views[SIGN], ERASED), Creds("both"), NOW, store(views), REGISTRY
    )
    assert isinstance(got, Signing)
    assert cert_status(got.job.run()) is ocsp.OCSPCertStatus.UNKNOWN


# --- tryLater: past the promised nextUpdate, a due 30-day lapse -------------------------------


def good_until_then_try_later(
    fl: OcspFlow, mem: MemoryReader, view: IssuerView, asked: int, bound: int, why: Unavailable
) -> None:
    """A good answer asked at ``asked`` has nextUpdate ``bound``; from ``bound`` on (the
    cached answer expired with it) the flow says tryLater, for ``why``."""
    ok = fl.decide(request(view, GOOD), Creds("both"), asked, mem, REGISTRY)
    assert isinstance(ok, Signing) and ok.job.next_update == bound
    signed(ok, fl)
    late = fl.decide(request(view, GOOD), Creds("both"), bound, mem, REGISTRY)
    assert isinstance(late, Refusal)
    assert (late.status, late.rule) == (ResponseStatus.TRY_LATER, "stale")
    req = parse_request(request(view, GOOD), max_certids=4)
    assert fl.lookup(req, view, bound, mem) is why


def test_past_the_promised_next_update_try_later(views: dict[int, IssuerView]) -> None:
    """Never an expired answer: before the builder's promised nextUpdate a good answer's
    nextUpdate stops at it; from it on, tryLater (and the cache is not consulted)."""
    good_until_then_try_later(
        flow(views),
        store(views, promised=NOW + 600),
        views[SIGN],
        NOW,
        NOW + 600,
        Unavailable.STALE,
    )


def no_crl_store(
    views: dict[int, IssuerView], *, build: int, vouch: tuple[int, int]
) -> MemoryReader:
    """`store` with no CRL (``[crl] enabled = false``) and no stored answer: only the build
    run's own promise (`store.format.META_VOUCHED`, ``vouch``) can vouch for its issuers."""
    return dataclasses.replace(store(views), crl_states={}, build=build, vouch=vouch)


def test_an_issuer_nothing_else_promises_for_is_stale_past_the_build_runs_promise(
    views: dict[int, IssuerView],
) -> None:
    """No CRL, no stored answer: the last build run's promise bounds the good answers, and a
    builder stopped past it leaves tryLater, never a good the builder no longer vouches for;
    its next run renews it."""
    mem = no_crl_store(views, build=1, vouch=(1, NOW + 600))
    fl = flow(views)
    good_until_then_try_later(fl, mem, views[SIGN], NOW, NOW + 600, Unavailable.STALE)
    auth = fl.decide(request(views[AUTH], GOOD), Creds("both"), NOW + 600, mem, REGISTRY)
    assert isinstance(auth, Refusal) and auth.rule == "stale"  # every issuer, not one
    assert fl.fresh_until(SIGN) == fl.fresh_until(AUTH) == NOW + 600
    mem.build, mem.vouch = 2, (2, NOW + 1800)  # the builder's next run: a new build number
    mem.changed()
    again = fl.decide(request(views[SIGN], GOOD), Creds("both"), NOW + 600, mem, REGISTRY)
    assert isinstance(again, Signing) and again.job.next_update == NOW + 1800  # its bound


def test_no_build_runs_promise_yet_or_an_earlier_releases_run_since_is_no_promise(
    views: dict[int, IssuerView],
) -> None:
    """Upgrade and rollback: a store no build run of this release wrote (no promise) and one
    whose build number an earlier release's run moved past the promise (which it does not
    renew) are answered as before the promise existed: good, never stale."""
    for mem in (
        no_crl_store(views, build=1, vouch=(0, 0)),
        no_crl_store(views, build=2, vouch=(1, NOW - 600)),
    ):
        got = flow(views).decide(request(views[SIGN], GOOD), Creds("both"), NOW, mem, REGISTRY)
        assert isinstance(got, Signing) and got.job.next_update == NOW + VALIDITY


def test_act_31_2_due_lapse_try_later_and_good_answers_stop_at_it(
    views: dict[int, IssuerView],
) -> None:
    """A pending move-out notice (転出届) with no move-in: the auth-card certificate loses
    effect 30 days after the planned date (Act §31(2)), when the builder writes it
    (§34(1)(2)). Before the due instant the good answer's nextUpdate stops at it; between
    the due instant and the builder's write, tryLater, never good."""
    mem = store(views, promised=DUE + 86400)
    mem.pendings[HOLDER] = sf.PendingMoveOut(
        record_id="n1", notified_at=DUE - 86400 * 40, planned_date=PLANNED.isoformat(), abroad=False
    )
    mem.changed()
    fl = flow(views)
    good_until_then_try_later(fl, mem, views[AUTH], DUE - 600, DUE, Unavailable.LAPSE_DUE)
    assert fl.lapse_refusals == 2
    # a sign certificate has no 30-day rule (Act §31(2) is about user certificates)
    sign = fl.decide(request(views[SIGN], GOOD), Creds("both"), DUE, mem, REGISTRY)
    assert isinstance(sign, Signing)


def test_after_a_ca_key_compromise_without_successor_try_later(
    views: dict[int, IssuerView],
) -> None:
    """Act §14: once the store records the compromise of the issuer's CA key its delegate
    signs nothing; with no successor signer configured, tryLater."""
    mem = store(views)
    mem.issuer_table = [
        sf.IssuerMeta(index=m.index, id=m.id, family=m.family, generation=1, cert_der=m.cert_der,
                      compromised_at=NOW - 10 if m.index == SIGN else 0)
        for m in mem.issuer_table
    ]  # fmt: skip
    fl = flow(views)
    req = parse_request(request(views[SIGN], GOOD), max_certids=4)
    assert fl.lookup(req, views[SIGN], NOW, mem) is Unavailable.NO_SIGNER
    assert isinstance(
        fl.decide(request(views[AUTH], GOOD), Creds("both"), NOW, mem, REGISTRY), Signing
    )


@pytest.mark.parametrize("seen_first", [True, False], ids=["refresh-first", "signed-first"])
def test_act_14_an_answer_signed_before_a_compromise_is_not_cached_after_it(
    key: rsa.RSAPrivateKey, views: dict[int, IssuerView], seen_first: bool
) -> None:
    """Act §14: after the compromise of the issuer's CA key its delegate signs nothing, and
    nothing it signed is served. A fresh answer (an unknown serial: no status record, so
    no status version moves) decided before the builder's compromise record and signed
    after it must not enter the good-answer cache, whether another request saw the new
    store generation first or not: the next request is signed by the successor."""
    successor = ResponseSigner(PemSigner(key, self_signed(key, "test sign-card CA successor")))
    sign = dataclasses.replace(views[SIGN], successor=successor)
    fl = OcspFlow([sign, views[AUTH]], Quotas(), CONFIG)
    mem = store(views)
    unknown = 0x1004
    before = fl.decide(request(sign, unknown), Creds("both"), NOW, mem, REGISTRY)
    assert isinstance(before, Signing) and before.job.signer is sign.signer
    mem.issuer_table = [
        msgspec.structs.replace(m, compromised_at=NOW + 1) if m.index == SIGN else m
        for m in mem.issuer_table
    ]
    mem.commit += 1
    mem.changed()
    if seen_first:  # another request sees the compromise while the first one is signed
        other = fl.decide(request(sign, GOOD), Creds("both"), NOW + 2, mem, REGISTRY)
        assert isinstance(other, Signing) and other.job.signer is successor
    fl.remember(before.job, before.job.run())
    after = fl.decide(request(sign, unknown), Creds("both"), NOW + 3, mem, REGISTRY)
    assert isinstance(after, Signing) and after.job.signer is successor


def test_nonce_and_several_certids_are_signed_fresh_and_not_cached(
    views: dict[int, IssuerView],
) -> None:
    """RFC 9654: a nonce is echoed, so its answer is signed for this request only; several
    CertIDs too. Neither is cached, and the ledger counts one per CertID (Act §40)."""
    fl = flow(views)
    mem = store(views)
    sign = views[SIGN]
    got = fl.decide(request(sign, GOOD, nonce=b"n" * 16), Creds("both"), NOW, mem, REGISTRY)
    assert isinstance(got, Signing) and got.job.cache_key is None
    two = fl.decide(request(sign, GOOD, REVOKED), Creds("both"), NOW, mem, REGISTRY)
    assert isinstance(two, Signing) and two.job.cache_key is None
    assert two.job.statuses == ("good", "revoked") and len(two.job.answers) == 2


def _echoed_cert_id(ready: Ready) -> bytes:
    """The DER of the answer's (one) SingleResponse CertID."""
    basic = a_ocsp.OCSPResponse.load(ready.der)["response_bytes"]["response"].parsed
    (single,) = basic["tbs_response_data"]["responses"]
    return bytes(single["cert_id"].dump(force=True))


def _absent_params(view: IssuerView, serial: int) -> bytes:
    """A SHA-1 request whose hashAlgorithm has no parameters (RFC 5754 §2: SHOULD be
    absent), not the NULL the responder's pre-signed answers carry."""
    (c,) = _cids(view, serial)
    c["hash_algorithm"]["parameters"] = None
    return a_request([c])


@pytest.mark.parametrize("serial", [GOOD, REVOKED], ids=["cached-good", "presigned-revoked"])
def test_rfc6960_4_2_1_the_answer_echoes_the_request_certid_byte_for_byte(
    views: dict[int, IssuerView], serial: int
) -> None:
    """SHA-1 CertIDs come with hashAlgorithm parameters NULL or absent, both well-formed. An
    answer echoes the CertID it was asked (clients that compare CertIDs whole, such as
    Bouncy Castle's, find no answer otherwise): a good answer cached for one form, or the
    builder's pre-signed answer (NULL form), is never served for the other."""
    mem = store(views)
    sign = views[SIGN]
    key = sf.status_key(SIGN, REVOKED)
    stem_der = signed(
        flow(views).decide(request(sign, REVOKED), Creds("both"), NOW, mem, REGISTRY), flow(views)
    ).der
    stem = stem_der[: len(stem_der) - len(sign.certs_suffix)]
    mem.answers[key] = StoredAnswer(4, NOW - 60, NOW + 600, sign.signer.signer_id, stem)
    fl = flow(views)
    null_form = request(sign, serial)
    absent = _absent_params(sign, serial)
    assert absent != null_form
    for first, second in ((null_form, absent), (absent, null_form)):
        for req_der in (first, second):
            ready = signed(fl.decide(req_der, Creds("both"), NOW, mem, REGISTRY), fl)
            (asked,) = parse_request(req_der, max_certids=1).cert_ids
            assert _echoed_cert_id(ready) == asked.der


# --- a signed request proves its party (RFC 6960 §4.1.2) ------------------------------------


def test_rfc6960_4_1_2_a_signed_request_proves_its_party(
    key: rsa.RSAPrivateKey, views: dict[int, IssuerView]
) -> None:
    """Without a transport credential, a request signed with a party's registered
    signed-request certificate is that party's; the same request with a broken signature
    proves nobody (unauthorized), and nothing is read for it."""
    cert = self_signed(key, "signing party")
    cert_der = cert.public_bytes(serialization.Encoding.DER)
    signer = party(
        "signer",
        Family.SIGN_CARD,
        credential=CredentialInfo(
            label="s",
            kind=AuthMethod.SIGNED_REQUEST,
            key=hashlib.sha256(cert_der).digest(),
            spki=cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            subject=cert.subject.public_bytes(),
        ),
    )
    registry = Registry([*REGISTRY.parties.values(), signer])
    tbs = a_ocsp.TBSRequest(
        {
            "requestor_name": a_x509.GeneralName(
                name="directory_name", value=a_x509.Name.load(cert.subject.public_bytes())
            ),
            "request_list": [{"req_cert": c} for c in _cids(views[SIGN], GOOD)],
        }
    )

    def signed_request(signature: bytes) -> bytes:
        return bytes(
            a_ocsp.OCSPRequest(
                {
                    "tbs_request": tbs,
                    "optional_signature": {
                        "signature_algorithm": {"algorithm": "sha256_rsa"},
                        "signature": signature,
                        "certs": [a_x509.Certificate.load(cert_der)],
                    },
                }
            ).dump()
        )

    good = key.sign(tbs.dump(), padding.PKCS1v15(), hashes.SHA256())
    rec = Recorder(store(views))
    fl = flow(views)
    broken = fl.decide(signed_request(bytes(256)), Creds(), NOW, rec, registry)
    assert isinstance(broken, Refusal) and broken.rule == "unauthenticated"
    assert rec.calls == []
    got = fl.decide(signed_request(good), Creds(), NOW, rec, registry)
    assert isinstance(got, Signing) and got.party.id == "signer"


def test_rfc6960_4_2_2_2_nothing_is_answered_past_the_signers_notafter(
    key: rsa.RSAPrivateKey, views: dict[int, IssuerView]
) -> None:
    """A worker loads its signer when it starts, valid then; a client rejects every answer
    once the signer's certificate has expired (RFC 6960 §4.2.2.2, checked when it validates).
    So a fresh answer's nextUpdate (good, revoked, with a nonce) stops at the notAfter, and
    past the notAfter the issuer is ``tryLater`` with rule ``signer_expired``: no fresh
    answer, no cached one, no stored one (one an older builder signed past the notAfter),
    from the second after the notAfter (its own second is inside the validity).
    The other issuer is unaffected. Before its notBefore (only a clock set back gets a
    running worker there) answers are given: clients check the signer at their own time."""
    ends = NOW + 600  # within the good answers' validity (VALIDITY) and the promise
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test sign-card CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.fromtimestamp(NOW - 86_400, UTC))
        .not_valid_after(datetime.fromtimestamp(ends, UTC))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    rs = ResponseSigner(PemSigner(key, cert))
    sign = IssuerView(SIGN, "sign-card-g1", Family.SIGN_CARD, rs, cert, rs.certs_suffix)
    fl = OcspFlow([sign, views[AUTH]], Quotas(), CONFIG)
    mem = store(views)
    key_revoked = sf.status_key(SIGN, REVOKED)
    (asked,) = parse_request(request(sign, REVOKED), max_certids=1).cert_ids
    mem.answers[key_revoked] = StoredAnswer(4, NOW - 60, NOW + 90_000, rs.signer_id,
                                            b"\x30\x82stem" + asked.der)  # fmt: skip

    good = fl.decide(request(sign, GOOD), Creds("both"), NOW, mem, REGISTRY)
    assert isinstance(good, Signing) and good.job.next_update == ends
    ready = signed(good, fl)
    resp = ocsp.load_der_ocsp_response(ready.der)
    assert resp.next_update_utc == datetime.fromtimestamp(ends, UTC)  # in the signed bytes
    for req in (request(sign, GOOD, nonce=b"n" * 16), request(sign, REVOKED, alg="sha256")):
        got = fl.decide(req, Creds("both"), NOW + 1, mem, REGISTRY)
        assert isinstance(got, Signing) and got.job.next_update == ends
    assert isinstance(fl.decide(request(sign, GOOD), Creds("both"), ends - 1, mem, REGISTRY),
                      Answer)  # fmt: skip  # the cached answer, until its nextUpdate
    for req in (
        request(sign, GOOD),  # its cached answer ended at the notAfter
        request(sign, GOOD, nonce=b"n" * 16),  # fresh
        request(sign, REVOKED),  # the stored answer, whose nextUpdate is later
        request(sign, REVOKED, alg="sha256"),
    ):
        for at in (ends + 1, ends + 3600):
            late = fl.decide(req, Creds("both"), at, mem, REGISTRY)
            assert isinstance(late, Refusal), at
            assert (late.status, late.rule) == (ResponseStatus.TRY_LATER, "signer_expired")
    assert fl.lookup(parse_request(request(sign, GOOD), max_certids=1), sign, ends + 1, mem) is (
        Unavailable.SIGNER_EXPIRED
    )
    # notAfter's own second is inside the signer's validity (RFC 5280 §4.1.2.5: inclusive,
    # `crlbuilder.validity`): answered, ending there; it was tryLater from that second
    last = fl.decide(request(sign, GOOD, nonce=b"l" * 16), Creds("both"), ends, mem, REGISTRY)
    assert isinstance(last, Signing) and last.job.next_update == ends
    early = fl.decide(request(sign, GOOD, nonce=b"e" * 16), Creds("both"), NOW - 86_401, mem,
                      REGISTRY)  # fmt: skip
    assert isinstance(early, Signing)
    other = fl.decide(request(views[AUTH], GOOD), Creds("both"), ends, mem, REGISTRY)
    assert isinstance(other, Signing) and other.job.next_update == ends + VALIDITY
