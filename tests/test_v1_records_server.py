"""/v1/record-info (Act §18(3), §19(5)) and /v1/corresponding (§18(4), §18(5), §37(3)) against the
real server on the demo population (`built`).

The expectations come from the population's own records (issuance records with their four
facts, consents granted and withdrawn, address changes), read here independently of the
store's links and sealed facts; the store is read only for what lost effect (the same
statuses OCSP answers). Certificates ending within two minutes of now are left out, so a
notAfter passing mid-test cannot make the answer differ from the expectation.
"""

from __future__ import annotations

import base64
import json
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import msgspec
import pytest
from cryptography import x509

from crlbuilder.model import (
    JPKI_FAMILIES,
    Category,
    ChangeKind,
    Consent,
    Fact,
    Family,
    FourFacts,
    Issuance,
    Record,
    ResidentChange,
)
from crlbuilder.rules import JST
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from responder.ledger import Ledger
from responder.registry.vocabulary import Method
from responder.v1 import jws
from tests.conftest import Built
from tests.support.harness import Server, start_server
from tests.test_v1_server import v1, v1_raw

SIGNERS = ("sig-verifier", "both-verifier", "group-verifier")
"""The demo parties a consent may name (署名検証者等, Act §18(3))."""
MARGIN = 120


@dataclass
class Cert:
    serial: int
    family: Family
    issuer: str
    not_before: int
    not_after: int
    facts: FourFacts | None
    status: sf.StatusRecord


@dataclass
class Holder:
    certs: dict[Family, list[Cert]] = field(default_factory=lambda: defaultdict(list))
    consents: set[str] = field(default_factory=set)
    moved: bool = False
    """An address change (異動, Act §12(1)) was recorded."""


def population(built: Built) -> dict[str, Holder]:
    """Every holder of the records, with each certificate's stored status."""
    holders: dict[str, Holder] = defaultdict(Holder)
    decoder = msgspec.json.Decoder(Record)
    issuances: list[Issuance] = []
    for path in sorted((built.population / "records").glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            rec = decoder.decode(line)
            if isinstance(rec, Issuance):
                issuances.append(rec)
            elif isinstance(rec, Consent):
                (
                    holders[rec.holder].consents.add
                    if rec.granted
                    else holders[rec.holder].consents.discard
                )(rec.verifier)
            elif (
                isinstance(rec, ResidentChange)
                and rec.holder is not None
                and rec.change is ChangeKind.FACT_CHANGE
                and rec.fact is Fact.ADDRESS
            ):
                holders[rec.holder].moved = True
    store = Store.open(built.store, readonly=True)
    try:
        with store.read() as r:
            index = {m.id: m.index for m in r.issuers()}
            for rec in issuances:
                st = r.status(sf.status_key(index[rec.issuer], rec.serial))
                assert st is not None, rec.id
                holders[rec.holder].certs[rec.family].append(
                    Cert(rec.serial, rec.family, rec.issuer, int(rec.not_before.timestamp()),
                         int(rec.not_after.timestamp()), rec.facts, st)
                )  # fmt: skip
    finally:
        store.close()
    return holders


def near(c: Cert, now: float) -> bool:
    return abs(c.not_after - now) < MARGIN


def lost(c: Cert, now: float) -> bool:
    return c.status.revoked or c.not_after <= now


def in_effect(c: Cert, now: float) -> Cert | None:
    return c if not c.status.revoked and c.not_before <= now < c.not_after else None


def current(h: Holder, family: Family, now: float) -> Cert | None:
    live = [c for c in h.certs[family] if in_effect(c, now)]
    return max(live, key=lambda c: c.not_before) if live else None


def ref(c: Cert) -> dict[str, object]:
    return {"certificate": {"issuer": c.issuer, "serial": f"{c.serial:x}"}}


def facts_json(f: FourFacts) -> dict[str, str]:
    out = {"name": f.name, "sex": f.sex.value, "birthDate": f.birth_date, "address": f.address}
    if f.name_alt is not None:
        out["nameAlt"] = f.name_alt
    if f.address_alt is not None:
        out["addressAlt"] = f.address_alt
    return out


@dataclass
class Case:
    holder: Holder
    asked: Cert
    expected: Cert | None


def cases(holders: dict[str, Holder], family: Family, now: float, *, moved: bool | None = None,
          expired: bool | None = None) -> list[Case]:  # fmt: skip
    """Consented holders' certificates of ``family`` that lost effect (by a resident change
    after a move when ``moved``; by expiry alone when ``expired``), and what must be given."""
    out: list[Case] = []
    for h in holders.values():
        if not h.consents or (moved is not None and h.moved != moved):
            continue
        expected = current(h, family, now)
        if expected is not None and near(expected, now):
            continue
        for c in h.certs[family]:
            if not lost(c, now) or near(c, now):
                continue
            if expired is not None and expired != (not c.status.revoked):
                continue
            if moved and c.status.category != Category.RESIDENT_CHANGE.code:
                continue
            out.append(Case(h, c, expected))
    return out


@pytest.fixture(scope="module")
def server(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("v1-records")
    with start_server(built, d, extra=("--facts-key-file", str(built.facts_key))) as s:
        yield s


def check(s: Server, case: Case) -> None:
    party = sorted(case.holder.consents)[0]
    code, headers, raw = v1_raw(s, "/v1/record-info", ref(case.asked), party)
    assert code == 200, raw
    # signed (issue 12 item 7): the party can keep the answer as evidence of what it was told
    _, _, jwks = v1(s, "/v1/keys")
    cert = x509.load_der_x509_certificate(base64.b64decode(jwks["keys"][0]["x5c"][0]))
    jws.verify(headers["jws-signature"], raw, cert)
    got = json.loads(raw)
    if case.expected is None:
        assert got["result"] == "none-exists" and got.get("record") is None, got
        return
    assert got["result"] == "provided", got
    record = got["record"]
    e = case.expected
    assert (record["family"], record["issuer"], int(record["serial"], 16)) == (
        e.family.value,
        e.issuer,
        e.serial,
    )
    assert e.facts is not None and record["facts"] == facts_json(e.facts)


def test_act_18_3_record_after_an_address_change_with_and_without_consent(
    built: Built, server: Server
) -> None:
    now = time.time()
    holders = population(built)
    moved = [
        c for c in cases(holders, Family.SIGN_CARD, now, moved=True)
        if c.expected and c.expected.facts and c.asked.facts
        and c.asked.facts.address != c.expected.facts.address
    ]  # fmt: skip
    assert moved, "the demo population has a consented holder who moved and holds a new card"
    for case in moved[:5]:
        check(server, case)  # the new serial, with the new address
        others = [p for p in SIGNERS if p not in case.holder.consents]
        if others:  # a verifier the holder did not consent to learns nothing
            code, _, got = v1(server, "/v1/record-info", ref(case.asked), others[0])
            assert code == 200 and (got["result"], got["record"]) == ("not-provided", None)
    # consent first: with no consent, a holder with a new certificate and one without look alike
    no_consent = [
        (h, c) for h in holders.values() if not h.consents
        for c in h.certs[Family.SIGN_CARD] if lost(c, now) and not near(c, now)
    ]  # fmt: skip
    with_new = next(c for h, c in no_consent if current(h, Family.SIGN_CARD, now))
    without = next(c for h, c in no_consent if current(h, Family.SIGN_CARD, now) is None)
    answers = [v1(server, "/v1/record-info", ref(c), "sig-verifier") for c in (with_new, without)]
    for _, headers, _ in answers:
        headers.pop("date")  # the second may be the next second's
    assert answers[0] == answers[1] and answers[0][2]["result"] == "not-provided"
    text = server.log.read_text()
    for case in moved[:5]:
        assert case.expected is not None and case.expected.facts is not None
        assert case.expected.facts.address not in text and case.expected.facts.name not in text


def test_act_19_5_a_mobile_certificate_gives_mobile_information_only(
    built: Built, server: Server
) -> None:
    now = time.time()
    holders = population(built)
    mobile = cases(holders, Family.SIGN_MOBILE, now)
    assert any(c.expected for c in mobile), "a consented holder replaced a mobile certificate"
    # a holder whose card certificate is in effect but who holds no mobile one now is told
    # "none-exists" for a lost mobile certificate, never given the card's record
    card_only = [
        c for c in mobile if c.expected is None and current(c.holder, Family.SIGN_CARD, now)
    ]
    for case in mobile[:8] + card_only:
        check(server, case)  # the mobile's successor, or none: never the card certificate


def test_act_15_1_5_record_after_expiry(built: Built, server: Server) -> None:
    now = time.time()
    expired = cases(population(built), Family.SIGN_CARD, now, expired=True)
    assert expired, "a consented holder's card certificate expired"
    for case in expired[:8]:
        check(server, case)


def test_act_19_5_a_certificate_in_effect_is_refused(built: Built, server: Server) -> None:
    now = time.time()
    h = next(
        h for h in population(built).values() if h.consents and current(h, Family.SIGN_CARD, now)
    )
    c = current(h, Family.SIGN_CARD, now)
    assert c is not None
    code, _, got = v1(server, "/v1/record-info", ref(c), sorted(h.consents)[0])
    assert code == 409 and got["rule"] == "in_effect"


def validity_not_elapsed(h: Holder, family: Family, now: float) -> list[str]:
    live = sorted(
        (c for c in h.certs[family] if c.not_before <= now < c.not_after),
        key=lambda c: (c.not_before, c.serial), reverse=True,
    )  # fmt: skip
    return [f"{c.serial:X}" for c in live]


def test_correspondences_with_one_title_and_with_both(built: Built, server: Server) -> None:
    """§18(4) to a 署名検証者, §18(5) only to a party holding both titles, §37(3) to a
    利用者証明検証者: the serials whose validity has not elapsed, revoked or not."""
    now = time.time()
    holders = population(built)

    def full(h: Holder) -> bool:
        return all(
            current(h, f, now) and not any(near(c, now) for c in h.certs[f]) for f in JPKI_FAMILIES
        )

    h = next(h for h in holders.values() if full(h))
    cur = {f: current(h, f, now) for f in JPKI_FAMILIES}
    pairs = [
        (Family.SIGN_CARD, Family.SIGN_MOBILE, {"sig-verifier", "both-verifier"}, "Act §18(4)(1)"),
        (Family.SIGN_MOBILE, Family.SIGN_CARD, {"sig-verifier", "both-verifier"}, "Act §18(4)(2)"),
        (Family.AUTH_CARD, Family.SIGN_CARD, {"both-verifier"}, "Act §18(5)(1)"),
        (Family.SIGN_CARD, Family.AUTH_CARD, {"both-verifier"}, "Act §18(5)(2)"),
        (Family.AUTH_CARD, Family.AUTH_MOBILE, {"auth-verifier", "both-verifier"}, "Act §37(3)(1)"),
        (Family.AUTH_MOBILE, Family.AUTH_CARD, {"auth-verifier", "both-verifier"}, "Act §37(3)(2)"),
    ]
    for asked, want, allowed, article in pairs:
        c = cur[asked]
        assert c is not None
        body = {**ref(c), "counterpart": want.value}
        for party in ("sig-verifier", "auth-verifier", "both-verifier", "group-verifier"):
            code, _, got = v1(server, "/v1/corresponding", body, party)
            if party not in allowed:
                assert code == 403, (asked, want, party, got)
                continue
            assert code == 200, (asked, want, party, got)
            assert got["article"] == article
            assert [s["serial"] for s in got["serials"]] == validity_not_elapsed(h, want, now)
    # a certificate that lost effect still names its holder's counterparts (revoked or not)
    revoked = next(
        (h, c) for h in holders.values() for c in h.certs[Family.SIGN_CARD]
        if c.status.revoked and c.not_after > now + MARGIN and h.certs[Family.SIGN_MOBILE]
        and not any(near(m, now) for m in h.certs[Family.SIGN_MOBILE])
    )  # fmt: skip
    code, _, got = v1(server, "/v1/corresponding", {**ref(revoked[1]), "counterpart": "sign-mobile"},
                      "sig-verifier")  # fmt: skip
    assert code == 200
    assert [s["serial"] for s in got["serials"]] == validity_not_elapsed(
        revoked[0], Family.SIGN_MOBILE, now
    )


def test_bad_input_per_route(server: Server) -> None:
    for path in ("/v1/record-info", "/v1/corresponding"):
        for body, status, field_ in [
            ({"certificate": {"issuer": "sign-card-g1"}}, 400, "$"),
            ({"certificate": {"issuer": "nope-g1", "serial": "1"}, "counterpart": "sign-mobile"}, 400,
             "$.certificate.issuer"),
            ({"certificate": {"issuer": "sign-card-g1", "serial": "1" * 41}, "counterpart": "sign-mobile"},
             400, "$.certificate.serial"),
            ({"certificate": {"certificate": "bm90IGEgY2VydA=="}, "counterpart": "sign-mobile"}, 400,
             "$.certificate.certificate"),
        ]:  # fmt: skip
            sent = {
                k: v for k, v in body.items() if k != "counterpart" or path == "/v1/corresponding"
            }
            code, headers, got = v1(server, path, sent, "both-verifier")
            assert code == status, (path, sent, got)
            assert (
                got["field"].startswith(field_)
                and headers["content-type"] == "application/problem+json"
            )
        code, _, got = v1(server, path, {"certificate": {"issuer": "sign-card-g1", "serial": "1"}})
        assert code == 401


def ledger_counts(s: Server) -> dict[tuple[str, str], int]:
    """(party, service) -> provisions by the json method the ledger holds (帳簿, Act §40)."""
    ledger = Ledger.open(s.d / "ledger")
    try:
        ledger.collect()
        today = datetime.now(JST).date()  # the ledger's days are JST days
        out: dict[tuple[str, str], int] = defaultdict(int)
        for r in ledger.rows(today - timedelta(days=1), today):
            if r.method is Method.JSON:
                out[(r.party, r.service.value)] += r.count
        return out
    finally:
        ledger.close()


def test_act_40_the_ledger_counts_what_was_provided(built: Built, server: Server) -> None:
    """A record given counts one 特定署名用電子証明書記録情報; not-provided, none-exists and a
    refusal count nothing; a correspondence counts one when it names a serial."""
    now = time.time()
    holders = population(built)
    given = next(c for c in cases(holders, Family.SIGN_CARD, now) if c.expected)
    party = sorted(given.holder.consents)[0]
    others = [p for p in SIGNERS if p not in given.holder.consents]
    card = given.expected
    assert card is not None
    before = ledger_counts(server)
    assert v1(server, "/v1/record-info", ref(given.asked), party)[2]["result"] == "provided"
    for other in others:
        assert v1(server, "/v1/record-info", ref(given.asked), other)[2]["result"] == "not-provided"
    assert v1(server, "/v1/record-info", ref(card), party)[0] == 409
    code, _, got = v1(server, "/v1/corresponding", {**ref(card), "counterpart": "auth-card"},
                      "both-verifier")  # fmt: skip
    assert code == 200
    after = ledger_counts(server)
    diff = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    expected = {(party, "sign-record-info"): 1}
    if got["serials"]:
        expected[("both-verifier", "corresponding-serial")] = 1
    assert diff == expected
