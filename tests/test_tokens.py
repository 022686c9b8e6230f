"""特定利用者証明検証者証明符号 (Act §38-3), the builder's side: issued from a queued request, revoked
when the approval (認可, Act §38-2(1)) is revoked (Act §38-2(6)) or its period ends.

In process: a demo PKI made here, a `crlbuilder.build.Builder` with a registry and the
token directories, requests queued as the responder queues them (`crlbuilder.tokenrequest`).
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from crlbuilder.atomicfile import STALE_TMP_SECONDS, write_whole
from crlbuilder.build import Builder
from crlbuilder.config import TokensSection
from crlbuilder.demo.pki import init_pki
from crlbuilder.ingest import RecordError, check_record
from crlbuilder.keys.signer import SignerError
from crlbuilder.manifest import Manifest, load_manifest
from crlbuilder.model import (
    Category,
    Family,
    Issuance,
    Reason,
    Record,
    TokenIssued,
    TokenRevoked,
)
from crlbuilder.rules import JST
from crlbuilder.store import format as sf
from crlbuilder.tokenrequest import (
    TOKEN_POLICY_OID,
    TokenRequest,
    approval_window,
    issued_path,
    party_uri,
    read_request,
    request_id,
    request_path,
    token_holder,
    token_serial,
    write_request,
)
from crlbuilder.tokens import TokenIssuer, TokenReport
from crlbuilder.verifiers import TokenApproval, TokenEnd
from responder.config import load_config
from responder.registry.schema import toml_dumps
from responder.v1 import token as v1token
from tests.support.builder import builder_config

APPROVED = date(2024, 4, 1)
DAY = (datetime.now(JST) - timedelta(days=30)).date()
"""The tests' day (JST), 30 days before the one they run on: the PKI made as of it (its OCSP
signers valid two years, `crlbuilder.demo.pki.OCSP_SIGNER_LIFETIME`) is in force whenever the
suite runs (a fixed day would see the builder skip pre-signing two years on), and every instant
below (up to 29 days after it) is past for a follow loop running by the clock."""
T0 = datetime.combine(DAY, clock_time(10), tzinfo=JST).astimezone(UTC)


def jst(day: date, hour: int = 0, second: int = 0) -> datetime:
    """``hour``:00:``second`` JST on ``day``."""
    return datetime.combine(day, clock_time(hour, 0, second), tzinfo=JST)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    d = tmp_path_factory.mktemp("tokens") / "pki"
    return d, init_pki(d, now=T0)


def party(pid: str = "spec", **title: Any) -> dict[str, Any]:
    return {
        "id": pid,
        "name": f"party {pid}",
        "notification": {"address": "a", "office": "o", "start": date(2024, 1, 1)},
        "title": [
            {"kind": "user-verifier", "category": 4},
            {"kind": "specified-user-verifier", "approved": APPROVED, **title},
        ],
        "agreement": {
            "services": ["auth-revocation-info", "specified-verifier-token"],
            "families": ["auth-card"],
            "methods": ["json", "ocsp"],
            "liability": "as agreed",
        },
        "credential": [{"kind": "token", "token_sha256": "0" * 64}],
    }


class World:
    def __init__(self, tmp: Path, pki: tuple[Path, Manifest]) -> None:
        self.tmp = tmp
        self.manifest = pki[1]
        self.registry = tmp / "registry.toml"
        self.write_registry(party())
        cfg = builder_config(tmp, pki[0])
        self.requests, self.issued = tmp / "requests", tmp / "issued"
        self.requests.mkdir()
        cfg = msgspec.structs.replace(
            cfg,
            input=msgspec.structs.replace(cfg.input, registry=str(self.registry)),
            tokens=TokensSection(requests=str(self.requests), issued=str(self.issued)),
        )
        self.log = io.StringIO()
        self.builder = Builder(cfg, progress=False, log=self.log)

    def write_registry(self, *parties: dict[str, Any]) -> None:
        self.registry.write_text(toml_dumps({"version": 2, "party": list(parties)}))

    def queue(
        self,
        pid: str = "spec",
        until: date | None = None,
        at: datetime = T0,
        uri: str | None = None,
    ) -> tuple[str, ec.EllipticCurvePrivateKey]:
        """A request of ``pid`` queued, its CSR naming ``uri`` (default: `party_uri` of it)."""
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "ignored")]))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(uri or party_uri(pid))]
                ),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        rid = request_id(pid, spki, approval_window(APPROVED, until))
        req = TokenRequest(
            id=rid,
            party=pid,
            csr=csr.public_bytes(serialization.Encoding.DER),
            requested_at=at,
        )
        write_request(self.requests, req)
        return rid, key

    def publishing_issuer(self) -> tuple[TokenIssuer, list[Record]]:
        """The signer's `TokenIssuer` on the record stream (dated T0), as the builder makes
        it from the registry as it is now, and the records it publishes."""
        published: list[Record] = []
        verifiers = self.builder._verifiers()
        assert verifiers is not None
        issuer = TokenIssuer(
            self.builder.store, self.manifest, requests=self.requests, issued=self.issued,
            validity_days=365, verifiers=verifiers, clock=lambda: T0, publish=published.extend,
        )  # fmt: skip
        return issuer, published

    def build(self, at: datetime) -> dict[str, Any]:
        report = self.builder.build([], as_of=at)
        out: dict[str, Any] = report.as_dict()
        return out

    def status(self, rid: str) -> sf.StatusRecord | None:
        tok = self.manifest.token_issuer
        assert tok is not None
        with self.builder.store.read() as r:
            return r.status(sf.status_key(tok.index, token_serial(rid)))

    def token(self, rid: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate(issued_path(self.issued, rid).read_bytes())

    def ca(self) -> x509.Certificate:
        tok = self.manifest.token_issuer
        assert tok is not None
        return x509.load_pem_x509_certificate(self.manifest.path(tok.cert).read_bytes())


@pytest.fixture
def world(tmp_path: Path, pki: tuple[Path, Manifest]) -> Iterator[World]:
    w = World(tmp_path, pki)
    yield w
    w.builder.close()


def test_act_38_3_token_issued_from_a_queued_request(world: World) -> None:
    rid, key = world.queue()
    report = world.build(T0 + timedelta(minutes=1))
    assert report["tokens_issued"] == 1 and report["tokens_dropped"] == []
    assert not request_path(world.requests, rid).exists()
    cert = world.token(rid)
    cert.verify_directly_issued_by(world.ca())
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert cert.serial_number == token_serial(rid)
    policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert [p.policy_identifier for p in policies] == [TOKEN_POLICY_OID]
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == "spec"  # the registry's party, not the CSR's subject
    assert cert.not_valid_before_utc == T0
    assert cert.not_valid_after_utc == T0 + timedelta(days=365)
    st = world.status(rid)
    assert st is not None and not st.revoked
    assert st.family == Family.SPECIFIED_VERIFIER_TOKEN.code
    # a replay of the same request changes nothing: same certificate, no second issuance
    before = issued_path(world.issued, rid).read_bytes()
    world.queue()  # another key: another request, another token
    assert world.build(T0 + timedelta(minutes=2))["tokens_issued"] == 1
    assert issued_path(world.issued, rid).read_bytes() == before


def test_validity_within_the_approval_period(world: World) -> None:
    until = DAY + timedelta(days=120)
    world.write_registry(party(approved_until=until))
    rid, _ = world.queue(until=until)
    world.build(T0 + timedelta(minutes=1))
    end = jst(until + timedelta(days=1)).astimezone(UTC)
    assert world.token(rid).not_valid_after_utc == end - timedelta(seconds=1)


@pytest.mark.parametrize("how", ["revoked", "ended"])
def test_a_token_never_outlives_an_end_already_set(world: World, how: str) -> None:
    """An approval whose revocation (Act §38-2(6)) or whose party's provision end was set
    ahead is known to stop then: a token issued meanwhile ends by that instant too (its
    revocation at that build is then not all that stands between it and a "good" answer)."""
    ends = T0 + timedelta(days=3)
    if how == "revoked":
        world.write_registry(party(revoked=ends))
    else:
        world.write_registry(party() | {"ended": {"at": ends, "reason": "届出の廃止"}})
    rid, _ = world.queue()
    assert world.build(T0 + timedelta(minutes=1))["tokens_issued"] == 1
    assert world.token(rid).not_valid_after_utc == ends - timedelta(seconds=1)
    st = world.status(rid)
    assert st is not None and st.not_after == int(ends.timestamp()) - 1


@pytest.mark.parametrize("ends", [1000, 500], ids=["at-its-end", "within-it"])
def test_an_approval_ending_within_the_second_of_the_request_issues_nothing(
    world: World, ends: int
) -> None:
    """Revoked at the end of the request's (whole) second, or half-way through it: the token
    could be valid for that second only (notBefore == notAfter), and signed at a build after
    the request. The responder refuses such a request (403, `responder.v1.token`); one queued
    before the end was set is dropped here, naming the approval, not the token issuer: no
    token record has notAfter == notBefore (`crlbuilder.ingest.check_record` refuses one)."""
    world.write_registry(party(revoked=T0 + timedelta(milliseconds=ends)))
    rid, _ = world.queue()
    report = world.build(T0)
    [dropped] = report["tokens_dropped"]
    assert dropped["request"] == rid, dropped
    assert "approval (認可) ends before the token could start" in dropped["reason"]
    assert world.status(rid) is None and not issued_path(world.issued, rid).exists()


def test_a_lost_token_file_is_signed_again_as_it_was_issued(world: World) -> None:
    """The issued file gone (a restore, an operator) while its status is in the store: the
    party's repeated request has it signed again, and it is the certificate the party holds
    and the store describes (same bytes), not one with times read from the registry as it
    is now (here a provision end set ahead since, which a new token would end at)."""
    rid, _ = world.queue()
    queued = request_path(world.requests, rid).read_bytes()
    assert world.build(T0 + timedelta(minutes=1))["tokens_issued"] == 1
    first = issued_path(world.issued, rid).read_bytes()
    issued_path(world.issued, rid).unlink()
    ends = T0 + timedelta(days=30)
    world.write_registry(party() | {"ended": {"at": ends, "reason": "届出の廃止"}})
    request_path(world.requests, rid).write_bytes(queued)
    report = world.build(T0 + timedelta(minutes=2))
    assert report["tokens_issued"] == 0 and report["tokens_dropped"] == []
    assert issued_path(world.issued, rid).read_bytes() == first
    st = world.status(rid)
    assert st is not None and st.not_after == int(world.token(rid).not_valid_after_utc.timestamp())


def test_act_38_2_6_revoked_approval_revokes_the_token_at_the_next_build(world: World) -> None:
    rid, _ = world.queue()
    world.build(T0 + timedelta(minutes=1))
    revoked_at = T0 + timedelta(hours=1)
    world.write_registry(party(revoked=revoked_at))
    at = T0 + timedelta(hours=2)
    report = world.build(at)
    assert report["tokens_revoked"] == 1
    assert report["tokens_revoked_by"] == {"approval-revoked (Act §38-2(6))": 1}
    st = world.status(rid)
    assert st is not None and st.revoked
    assert st.category == Category.APPROVAL_WITHDRAWN.code
    assert st.reason == Reason.PRIVILEGE_WITHDRAWN
    assert st.revoked_at == int(at.timestamp())  # when written, never earlier
    # and its issuer's CRL lists it, signed by the token CA
    tok = world.manifest.token_issuer
    assert tok is not None
    crl = x509.load_der_x509_crl((world.tmp / "crl" / f"{tok.id}-delta.crl").read_bytes())
    assert crl.is_signature_valid(world.ca().public_key())  # type: ignore[arg-type]
    entry = crl.get_revoked_certificate_by_serial_number(token_serial(rid))
    assert entry is not None  # the delta CRL since the full one of the first build
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.privilege_withdrawn
    assert world.build(at + timedelta(minutes=1))["tokens_revoked"] == 0  # once


def test_approval_period_end_revokes_the_token(world: World) -> None:
    until = DAY + timedelta(days=28)
    world.write_registry(party(approved_until=until))
    rid, _ = world.queue(until=until)
    world.build(T0 + timedelta(minutes=1))
    assert world.build(jst(until, 23))["tokens_revoked"] == 0
    # the token itself ends with the period: it is expired, not revoked
    assert world.build(jst(until + timedelta(days=1), 1))["tokens_revoked"] == 0
    st = world.status(rid)
    assert st is not None and not st.revoked


def test_approval_period_shortened_revokes_the_token_once_it_ends(world: World) -> None:
    rid, _ = world.queue()  # issued under an approval with no end: valid 365 days
    world.build(T0 + timedelta(minutes=1))
    until = DAY + timedelta(days=28)
    world.write_registry(party(approved_until=until))
    assert world.build(jst(until, 23))["tokens_revoked"] == 0
    report = world.build(jst(until + timedelta(days=1), 0, 1))
    assert report["tokens_revoked"] == 1
    assert report["tokens_revoked_by"] == {"approval-not-in-force (Act §38-2(1))": 1}
    st = world.status(rid)
    assert st is not None and st.category == Category.APPROVAL_WITHDRAWN.code


def test_ended_party_and_party_gone_from_registry_lose_their_tokens(world: World) -> None:
    rid, _ = world.queue()
    other, _ = world.queue("other")
    world.write_registry(party(), party("other"))
    world.build(T0 + timedelta(minutes=1))
    assert world.status(rid) is not None and world.status(other) is not None
    ended = party() | {"ended": {"at": T0 + timedelta(hours=1), "reason": "届出の廃止"}}
    world.write_registry(ended)  # "other" left the registry
    report = world.build(T0 + timedelta(hours=2))
    assert report["tokens_revoked"] == 2
    assert report["tokens_revoked_by"] == {  # cited by cause, not as a 取消し (Act §38-2(6))
        "provision-ended (Act §36(2), §38-2(1))": 1,
        "not-approved (Act §38-2(4))": 1,
    }


def test_ending_the_token_agreement_does_not_revoke_the_tokens(world: World) -> None:
    """The agreement (取決め, Act §38-3(3)) is about the 機構's provision of the code
    (§38-3(2)); the code shows that its party is a 特定利用者証明検証者 (§38-3(1)), which the
    approval makes it (§38-2(4)), and no article makes it lose effect with the agreement
    (§38-2(6) lists the approval's revocations, none about it). An agreement that no longer
    names ``specified-verifier-token`` stops new tokens (the responder's 403 citing §38-3(3)),
    not the ones held: none is revoked while the approval and the provision run."""
    rid, _ = world.queue()
    world.build(T0 + timedelta(minutes=1))
    ended = party()
    ended["agreement"]["services"] = ["auth-revocation-info"]
    world.write_registry(ended)
    assert world.build(T0 + timedelta(hours=2))["tokens_revoked"] == 0
    st = world.status(rid)
    assert st is not None and not st.revoked


@pytest.mark.parametrize(
    ("revoked", "ended", "until", "cause"),
    [
        (1000, None, None, TokenEnd.APPROVAL_REVOKED),
        (None, 1000, None, TokenEnd.PROVISION_ENDED),
        (1000, 1000, None, TokenEnd.APPROVAL_REVOKED),  # at one instant: the revocation
        (2000, 1000, None, TokenEnd.PROVISION_ENDED),  # the first end reached
        (None, 1500, 1000, TokenEnd.APPROVAL_NOT_IN_FORCE),
        (None, None, 1000, TokenEnd.APPROVAL_NOT_IN_FORCE),
    ],
)
def test_an_approval_ended_says_why_with_its_article(
    revoked: float | None, ended: float | None, until: int | None, cause: TokenEnd
) -> None:
    approval = TokenApproval(window=(0, until), revoked=revoked, ended=ended)
    assert approval.ended_by(999) is None
    assert approval.ended_by(3000) is cause
    assert TokenApproval(window=(4000, None)).ended_by(3000) is TokenEnd.APPROVAL_NOT_IN_FORCE
    assert cause.article.startswith("Act §")


def test_request_refused_when_the_approval_is_not_in_force(world: World) -> None:
    world.write_registry(party(revoked=T0 - timedelta(days=1)))
    rid, _ = world.queue()
    report = world.build(T0 + timedelta(minutes=1))
    assert report["tokens_issued"] == 0
    [dropped] = report["tokens_dropped"]
    assert dropped["request"] == rid and "Act §38-2" in dropped["reason"]
    assert not issued_path(world.issued, rid).exists()
    assert not request_path(world.requests, rid).exists()
    assert world.status(rid) is None


def test_request_refused_when_the_approval_changed_since(world: World) -> None:
    rid, _ = world.queue()  # under an approval with no end
    world.write_registry(party(approved_until=DAY + timedelta(days=300)))
    [dropped] = world.build(T0 + timedelta(minutes=1))["tokens_dropped"]
    assert "ask again" in dropped["reason"]
    assert world.status(rid) is None


def test_records_cannot_revoke_a_token(world: World) -> None:
    """A record names the Act's certificates: one naming the token issuer is quarantined
    (a token is revoked from the registry only, Act §38-2(6))."""
    rid, _ = world.queue()
    world.build(T0 + timedelta(minutes=1))
    records = world.tmp / "r.jsonl"
    line = {
        "type": "revocation-request", "id": "r-token", "recorded_at": T0 + timedelta(minutes=2),
        "serial": token_serial(rid), "issuer": "verifier-token-g1", "reason": "application",
    }  # fmt: skip
    records.write_bytes(msgspec.json.encode(line) + b"\n")
    world.builder.build([records], as_of=T0 + timedelta(minutes=3))
    st = world.status(rid)
    assert st is not None and not st.revoked
    quarantined = (world.tmp / "quarantine.jsonl").read_text()
    assert "r-token" in quarantined and "Act §38-3" in quarantined


def test_a_token_record_in_a_record_file_is_refused(world: World) -> None:
    """Token records are the cluster signer's, on the record stream only: one in a record file
    (a feed's, an operator's) neither issues nor revokes a token, and is quarantined saying so."""
    rid, _ = world.queue()
    world.build(T0 + timedelta(minutes=1))
    tok = world.manifest.token_issuer
    assert tok is not None
    records = world.tmp / "r.jsonl"
    lines = [
        {"type": "token-revoked", "id": "t-revoked", "recorded_at": T0 + timedelta(minutes=2),
         "serial": token_serial(rid), "issuer": tok.id, "at": T0 + timedelta(minutes=2)},
        {"type": "token-issued", "id": "t-issued", "recorded_at": T0 + timedelta(minutes=2),
         "serial": 77, "issuer": tok.id, "not_before": T0, "not_after": T0 + timedelta(days=1),
         "holder": token_holder("spec").hex(), "certificate": "MAA="},
    ]  # fmt: skip
    records.write_bytes(b"".join(msgspec.json.encode(x) + b"\n" for x in lines))
    world.builder.build([records], as_of=T0 + timedelta(minutes=3))
    st = world.status(rid)
    assert st is not None and not st.revoked
    with world.builder.store.read() as r:
        assert r.status(sf.status_key(tok.index, 77)) is None
    quarantined = (world.tmp / "quarantine.jsonl").read_text().splitlines()
    for rec_id in ("t-revoked", "t-issued"):
        (line,) = [q for q in quarantined if rec_id in q]
        assert "record stream only" in line


def test_on_the_stream_a_request_asked_again_before_its_record_is_applied_is_signed_as_issued(
    world: World,
) -> None:
    """The signer publishes a token's record and applies it when the stream brings it back; the
    party asking again meanwhile (a later request time) gets the certificate already written
    and the same record, not one with a later notBefore than the status every node records."""
    issuer, published = world.publishing_issuer()
    rid, _ = world.queue()
    queued = read_request(request_path(world.requests, rid))
    issuer.issue(int((T0 + timedelta(minutes=1)).timestamp()), TokenReport())
    first = issued_path(world.issued, rid).read_bytes()
    assert world.status(rid) is None  # published, not committed here
    write_request(
        world.requests, msgspec.structs.replace(queued, requested_at=T0 + timedelta(minutes=5))
    )
    issuer.issue(int((T0 + timedelta(minutes=6)).timestamp()), TokenReport())
    assert issued_path(world.issued, rid).read_bytes() == first
    assert len(published) == 2 and all(isinstance(p, TokenIssued) for p in published)
    a, b = published
    assert isinstance(a, TokenIssued) and isinstance(b, TokenIssued)
    assert a == b, "one record id published with other content"
    assert a.not_before == T0 and a.recorded_at == a.not_before


def test_on_the_stream_a_revocation_published_again_before_it_is_applied_keeps_its_instant(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signer's refreshes that run before its `token-revoked` came back from the stream
    publish it again: the same record (its first instant), not one id with other content."""
    rid, _ = world.queue()
    world.build(T0 + timedelta(minutes=1))  # a token held in the store
    published: list[Record] = []

    class Stream:
        def publish_records(self, records: list[Record]) -> None:
            published.extend(records)

    monkeypatch.setattr(world.builder, "_stream", Stream())  # the signer, on the record stream
    world.write_registry(party(revoked=T0 + timedelta(minutes=2)))
    for minutes in (3, 4, 5):  # three refreshes; the record never applied here meanwhile
        world.builder.run_tokens(T0 + timedelta(minutes=minutes))
    revoked = [p for p in published if isinstance(p, TokenRevoked)]
    assert len(revoked) == 3 and revoked[0].serial == token_serial(rid)
    assert revoked[0] == revoked[1] == revoked[2], "one record id published with other content"
    assert revoked[0].at == T0 + timedelta(minutes=3)


def test_no_issuance_record_names_the_token_family() -> None:
    rec = Issuance(
        id="i-1",
        recorded_at=T0,
        serial=5,
        family=Family.SPECIFIED_VERIFIER_TOKEN,
        issuer="verifier-token-g1",
        not_before=T0,
        not_after=T0 + timedelta(days=1),
        holder="0" * 64,
    )
    with pytest.raises(RecordError) as e:
        check_record(rec)
    assert e.value.field == "$.family"


def test_a_provision_end_set_ahead_takes_effect_at_its_instant(world: World) -> None:
    """``responder registry end --at`` may name a later instant: the party is served until
    then (the responder's `Party.end`), so its token, issued before the end was set, stays
    good until then and is revoked at the first build after it, never before (one issued
    after it was set ends at that instant: `test_a_token_never_outlives_an_end_already_set`)."""
    ends = T0 + timedelta(days=10)
    rid, _ = world.queue()
    report = world.build(T0 + timedelta(minutes=1))
    assert report["tokens_issued"] == 1 and report["tokens_revoked"] == 0
    world.write_registry(party() | {"ended": {"at": ends, "reason": "届出の廃止"}})
    assert world.build(T0 + timedelta(minutes=2))["tokens_revoked"] == 0
    # the follow loop wakes at that instant (as at an approval's end), not at the next change
    assert world.builder.next_approval_end(T0 + timedelta(minutes=1)) == ends
    assert world.build(ends - timedelta(minutes=1))["tokens_revoked"] == 0
    st = world.status(rid)
    assert st is not None and not st.revoked
    assert world.build(ends + timedelta(minutes=1))["tokens_revoked"] == 1
    st = world.status(rid)
    assert st is not None and st.category == Category.APPROVAL_WITHDRAWN.code


def test_request_after_the_token_issuer_expired_is_dropped_and_the_build_goes_on(
    world: World,
) -> None:
    """Past the token issuer's own notAfter no token can be signed (its notAfter would come
    before its notBefore): the request is dropped with the reason, and the build (CRLs,
    pre-signed answers) is not stopped by it, at this build or the next."""
    expired = world.ca().not_valid_after_utc
    rid, _ = world.queue(at=expired - timedelta(minutes=1))
    report = world.build(expired + timedelta(days=1))
    assert report["tokens_issued"] == 0
    [dropped] = report["tokens_dropped"]
    assert dropped["request"] == rid and "expired" in dropped["reason"]
    assert "verifier-token-g1" in dropped["reason"]
    assert not issued_path(world.issued, rid).exists() and world.status(rid) is None
    assert not request_path(world.requests, rid).exists()


@pytest.mark.parametrize(("after", "issued"), [(0, 1), (1, 0)])
def test_the_token_issuer_signs_through_its_notafters_second(
    world: World, after: int, issued: int
) -> None:
    """RFC 5280 §4.1.2.5 (inclusive, `crlbuilder.validity`): a build in the token issuer's
    notAfter second still issues (the token ends with the issuer); the next second it drops
    the request. It was dropped from the notAfter's own second."""
    ends = world.ca().not_valid_after_utc
    rid, _ = world.queue(at=ends - timedelta(minutes=1))
    report = world.build(ends + timedelta(seconds=after))
    assert report["tokens_issued"] == issued, report["tokens_dropped"]
    if issued:
        assert world.token(rid).not_valid_after_utc == ends


@pytest.mark.parametrize(("after", "revoked"), [(0, 1), (1, 0)])
def test_an_ended_approval_revokes_a_token_through_its_notafters_second(
    world: World, after: int, revoked: int
) -> None:
    """A token is in effect through its notAfter's second (`crlbuilder.validity`): its party's
    approval revoked, a build in that very second revokes it (Act §38-2(6)); after it the token
    has expired and nothing is revoked. It was left unrevoked (``not_after > now``)."""
    rid, _ = world.queue()
    world.build(T0 + timedelta(minutes=1))
    st = world.status(rid)
    assert st is not None
    end = datetime.fromtimestamp(st.not_after, UTC)
    world.write_registry(party(revoked=end - timedelta(hours=1)))
    assert world.build(end + timedelta(seconds=after))["tokens_revoked"] == revoked


def test_a_request_whose_csr_key_cannot_be_read_is_dropped_and_the_build_goes_on(
    world: World,
) -> None:
    """A queued CSR whose key algorithm is none cryptography knows (raising UnsupportedAlgorithm,
    no ValueError; written by a responder that did not refuse it) is dropped with the reason:
    left in the queue it would stop every build after it."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    der = csr.public_bytes(serialization.Encoding.DER)
    unknown = der.replace(bytes.fromhex("06072a8648ce3d0201"), bytes.fromhex("06072a8648ce3d0209"))
    assert unknown != der
    rid = request_id("spec", b"whatever", approval_window(APPROVED, None))
    write_request(world.requests, TokenRequest(id=rid, party="spec", csr=unknown, requested_at=T0))
    report = world.build(T0 + timedelta(minutes=1))
    assert report["tokens_issued"] == 0 and report["crls"]
    [dropped] = report["tokens_dropped"]
    assert dropped["request"] == rid and "CSR" in dropped["reason"]
    assert not request_path(world.requests, rid).exists()


@pytest.mark.integration  # the follow loop's spool watch (inotify) looks its library up
@pytest.mark.real_clock  # the follow loop's timed waits
def test_a_token_key_that_cannot_sign_does_not_stop_the_crls(
    tmp_path: Path, pki: tuple[Path, Manifest]
) -> None:
    """The token issuer's key unusable (here its PEM file opened to the group; an HSM slot
    gone) with a request queued: the Act's CRLs and pre-signed answers are still made, and
    only then does the build fail on the token key (a follow loop retries it), the request
    kept queued. Tokens are one more issuer; they never hold the others' publication back."""
    copy = tmp_path / "pki"
    shutil.copytree(pki[0], copy)
    manifest = load_manifest(copy)
    (tmp_path / "w").mkdir()
    w = World(tmp_path / "w", (copy, manifest))
    try:
        tok = manifest.token_issuer
        assert tok is not None
        manifest.path(tok.key).chmod(0o644)
        rid, _ = w.queue()
        with pytest.raises(SignerError, match="0644"):
            w.build(T0 + timedelta(minutes=1))
        published = sorted(p.name for p in (w.tmp / "crl").glob("*.crl"))
        assert any(n.startswith("sign-card") for n in published), published
        with w.builder.store.read() as r:
            assert any(r.ocsp_state(i.index).produced_at for i in r.issuers())
        assert request_path(w.requests, rid).exists() and w.status(rid) is None
        # --follow: the queued request does not make every turn a refresh (CRLs, answers)
        # failing again: the outage is retried at its pace (`SigningRetry`)
        (w.tmp / "spool").mkdir()
        w.log.truncate(0)
        w.builder.follow(w.tmp / "spool", 0.05, max_idle=2.0)
        failed = [ln for ln in w.log.getvalue().splitlines() if "signing failed" in ln]
        assert len(failed) == 1, [ln[30:60] for ln in failed]
    finally:
        w.builder.close()


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        pytest.param({"approved": "2024-04-01"}, "approved", id="approved-quoted"),
        pytest.param({"approved_until": "2026-03-31"}, "approved_until", id="until-quoted"),
        pytest.param({"revoked": DAY + timedelta(days=1)}, "revoked", id="revoked-a-day-not-a-time"),
        pytest.param({"revoked": datetime.combine(DAY + timedelta(days=1), clock_time(9))}, "revoked",
                     id="revoked-no-offset"),
        # a hand-edited period ending the day before the approval: never in force
        pytest.param({"approved_until": date(2024, 3, 31)}, "approved_until",
                     id="until-before-approved"),
    ],
)  # fmt: skip
def test_a_registry_the_responder_refuses_revokes_nothing(
    world: World, fault: dict[str, Any], says: str
) -> None:
    """An approval the responder's checks refuse (a quoted date, a revocation without its
    time or offset) is not read as "no approval" (revoking the party's tokens for good) nor
    as "not revoked": the file is refused, the build warns and keeps the last good reading."""
    rid, _ = world.queue()
    world.build(T0 + timedelta(minutes=1))
    world.write_registry(party(**fault))
    report = world.build(T0 + timedelta(days=2))
    assert report["tokens_revoked"] == 0
    st = world.status(rid)
    assert st is not None and not st.revoked
    warning = world.log.getvalue()
    assert "registry as last read" in warning and says in warning and "spec" in warning


def _crashed_writer(directory: Path, name: str, age: float) -> Path:
    """A temporary file as `write_whole` leaves it when its process dies before the rename."""
    p = directory / f".{name}.{os.getpid() + 1}.tmp"
    p.write_bytes(b"request material")
    os.utime(p, (time.time() - age, time.time() - age))
    return p


def test_a_crashed_writers_temporary_files_do_not_linger(world: World) -> None:
    """A request half written (the party's CSR) and a token half written: swept by the next
    build once stale; a write in progress (a fresh one) is left to its writer."""
    world.issued.mkdir()
    stale = [
        _crashed_writer(world.requests, "0" * 32 + ".json", STALE_TMP_SECONDS + 60),
        _crashed_writer(world.issued, "1" * 32 + ".pem", STALE_TMP_SECONDS + 60),
    ]
    fresh = _crashed_writer(world.requests, "2" * 32 + ".json", 1)
    other = world.requests / ".keep.tmp"  # not a name `write_whole` gives: not ours
    other.write_bytes(b"")
    os.utime(other, (0, 0))
    world.queue()
    assert world.build(T0 + timedelta(minutes=1))["tokens_issued"] == 1
    assert [p.exists() for p in stale] == [False, False]
    assert fresh.exists() and other.exists()


def test_responder_worker_sweeps_stale_requests_at_start(
    world: World, pki: tuple[Path, Manifest]
) -> None:
    stale = _crashed_writer(world.requests, "0" * 32 + ".json", STALE_TMP_SECONDS + 60)
    cfg = load_config(
        None,
        {"store.pki": str(pki[0]), "token.request_dir": str(world.requests),
         "token.issued_dir": str(world.issued)},
    )  # fmt: skip
    assert v1token.setup(cfg) is not None
    assert not stale.exists()


def test_write_whole_temporary_file_is_the_owners_only_until_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the umask and the final mode, the file being written is 0600; a failure
    removes it."""
    seen: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    old = os.umask(0)
    try:
        write_whole(tmp_path / "a.pem", b"cert", mode=0o644)
    finally:
        os.umask(old)
    assert seen == [0o600]
    assert stat.S_IMODE((tmp_path / "a.pem").stat().st_mode) == 0o644

    def failing(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError):
        write_whole(tmp_path / "b.json", b"request", mode=0o600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pem"]


@pytest.mark.parametrize("names", [(), ("spec2",), ("spec", "spec2")], ids=["none", "other", "two"])
def test_a_request_whose_csr_does_not_name_its_party_alone_is_dropped(
    world: World, names: tuple[str, ...]
) -> None:
    """A request is bound to its party (`crlbuilder.tokenrequest.binding_refusal`): one queued
    whose CSR names no party (an older responder's), another party, or several is dropped
    with the reason, no token signed; its party's next POST is told what to add."""
    key = ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if names:
        uris = [x509.UniformResourceIdentifier(party_uri(n)) for n in names]
        b = b.add_extension(x509.SubjectAlternativeName(uris), critical=False)
    csr = b.sign(key, hashes.SHA256())
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    rid = request_id("spec", spki, approval_window(APPROVED, None))
    der = csr.public_bytes(serialization.Encoding.DER)
    write_request(world.requests, TokenRequest(id=rid, party="spec", csr=der, requested_at=T0))
    report = world.build(T0 + timedelta(minutes=1))
    assert report["tokens_issued"] == 0
    [dropped] = report["tokens_dropped"]
    assert dropped["request"] == rid and party_uri("spec") in dropped["reason"]
    assert not issued_path(world.issued, rid).exists()
    assert not request_path(world.requests, rid).exists()
    ok, _ = world.queue("spec")  # the same party's bound request: issued
    assert world.build(T0 + timedelta(minutes=2))["tokens_issued"] == 1
    assert issued_path(world.issued, ok).exists()


@pytest.mark.parametrize("text", ["", "\n  \n"], ids=["empty", "blank"])
def test_an_empty_registry_file_revokes_no_token(world: World, text: str) -> None:
    """A revocation is for ever (a token revoked is never good again): the builder revoked
    every token at its next build when the registry file read empty (a file truncated, or
    created and not yet written: a failed copy on a full disk, ``: > registry.toml``, a
    mount that came up empty), as if every 特定利用者証明検証者 had left it (Act §38-2(4)).
    No tool writes such a file (they write ``version = 2`` at least, whole): it is refused,
    the last good reading kept, a warning emitted; a registry that no longer names the party
    still revokes its token."""
    rid, _ = world.queue()
    assert world.build(T0 + timedelta(minutes=1))["tokens_issued"] == 1
    world.registry.write_text(text)
    report = world.build(T0 + timedelta(minutes=2))
    assert report["tokens_revoked"] == 0, report
    st = world.status(rid)
    assert st is not None and not st.revoked
    assert "empty" in world.log.getvalue()
    world.write_registry()  # the party gone: its token revoked (Act §38-2(4))
    assert world.build(T0 + timedelta(minutes=3))["tokens_revoked"] == 1


def test_a_request_naming_its_party_urn_in_upper_case_is_issued_in_the_canonical_form(
    world: World,
) -> None:
    """RFC 8141 §3.1: ``URN:JPKI-VA:party:spec`` names the party ``spec`` (scheme and NID in
    any case): the builder issues it (it dropped it as naming no party), and the token names
    the party as every token does, ``urn:jpki-va:party:spec``. ``party:SPEC`` is another id."""
    rid, _ = world.queue(uri="URN:JPKI-VA:party:spec")
    other, _ = world.queue(uri="urn:jpki-va:party:SPEC")
    report = world.build(T0 + timedelta(minutes=1))
    assert report["tokens_issued"] == 1, report
    assert [d["request"] for d in report["tokens_dropped"]] == [other]
    san = world.token(rid).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [party_uri("spec")]
