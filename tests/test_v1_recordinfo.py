"""POST /v1/record-info in process: 特定署名用電子証明書記録情報 (Act §18(3), §19(5), §21(4)) over a
`MemoryReader` driven through the real dispatcher (`responder.v1.routes.V1Api`); nothing here
starts a process. `population` is shared with tests/test_v1_corresponding.py."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization

from crlbuilder.model import Category, Family, FourFacts, Reason, Sex
from crlbuilder.seal import FactsCipher
from crlbuilder.store import format as sf
from crlbuilder.store.memory import MemoryReader
from responder.config import ConfigError, ResponderConfig, StoreConfig
from responder.http import Request, Response
from responder.registry.lookup import Registry
from responder.registry.vocabulary import Method, Service
from responder.v1 import corresponding, recordinfo
from responder.v1.routes import V1Api
from tests.support.pki import Ca, make_ca, rsa_key
from tests.support.written import written
from tests.test_policy import GRP, MEM, NOW, SIG, USR, build, party_table
from tests.test_v1_status import Ledger, Quotas

DAY = 86400
T = int(NOW)
KEY = bytes(range(32))
SC, SM, AC, AM = 1, 2, 3, 4
FAMILY_OF = {
    SC: Family.SIGN_CARD,
    SM: Family.SIGN_MOBILE,
    AC: Family.AUTH_CARD,
    AM: Family.AUTH_MOBILE,
}

OLD_FACTS = FourFacts(
    name="山田 太郎", sex=Sex.MALE, birth_date="319800102", address="東京都千代田区一丁目1番"
)
NEW_FACTS = FourFacts(
    name="山田 太郎",
    name_alt="山田 太郎",
    sex=Sex.MALE,
    birth_date="319800102",
    address="大阪府大阪市北区二丁目2番",
    address_alt="大阪府大阪市北区二丁目2番",
)


def holder(c: str) -> bytes:
    return c.encode() * 32


# holder -> [(issuer index, serial, state, not_before offset, not_after offset, category)]
# offsets in days from NOW
A, B, C, D, E, F, G = (holder(x) for x in "ABCDEFG")
CERTS: dict[bytes, list[tuple[int, int, int, int, int, Category | None]]] = {
    # moved (異動, Act §12): the old sign-card revoked, the mobile with it (§16-13), new ones issued
    A: [
        (SC, 0xA1, sf.STATE_REVOKED, -400, 900, Category.RESIDENT_CHANGE),
        (SC, 0xA2, sf.STATE_GOOD, -9, 1500, None),
        (SM, 0xA3, sf.STATE_REVOKED, -300, 900, Category.CARD_CASCADE),
        (SM, 0xA4, sf.STATE_GOOD, -8, 1500, None),
        (AC, 0xA5, sf.STATE_GOOD, -400, 1500, None),
        (AM, 0xA6, sf.STATE_GOOD, -300, 1500, None),
    ],
    # moved, no consent to anyone
    B: [
        (SC, 0xB1, sf.STATE_REVOKED, -400, 900, Category.RESIDENT_CHANGE),
        (SC, 0xB2, sf.STATE_GOOD, -9, 1500, None),
    ],
    # consented, lost the card certificate, holds none now
    C: [(SC, 0xC1, sf.STATE_REVOKED, -400, 900, Category.REQUEST)],
    # consented, the old card certificate expired (Act §15(1)(5)), a new one issued
    D: [
        (SC, 0xD1, sf.STATE_GOOD, -1800, -1, None),
        (SC, 0xD2, sf.STATE_GOOD, -60, 1500, None),
        (AC, 0xD5, sf.STATE_GOOD, -60, 1500, None),
    ],
    # consented, its certificate still in effect
    E: [(SC, 0xE1, sf.STATE_GOOD, -100, 1500, None)],
    # consented, lost its phone: the mobile revoked, the card certificate still good, no new mobile
    F: [
        (SM, 0xF1, sf.STATE_REVOKED, -200, 900, Category.REQUEST),
        (SC, 0xF2, sf.STATE_GOOD, -300, 1500, None),
    ],
    # no consent, holds nothing now
    G: [(SC, 0x61, sf.STATE_REVOKED, -400, 900, Category.REQUEST)],
}
CONSENTS = {A: ("sig", "g"), C: ("sig",), D: ("sig",), E: ("sig",), F: ("sig",)}


@pytest.fixture(scope="module")
def cas() -> dict[int, Ca]:
    key = rsa_key()
    return {i: make_ca(f"{FAMILY_OF[i].value}-g1 CA", key) for i in FAMILY_OF}


def population(cas: dict[int, Ca], *, cipher: FactsCipher | None = None) -> MemoryReader:
    """The holders of `CERTS`, their links, consents and sealed facts (sign certificates)."""
    seal = cipher or FactsCipher(KEY)
    r = MemoryReader(
        issuer_table=[
            sf.IssuerMeta(
                index=i, id=f"{FAMILY_OF[i].value}-g1", family=FAMILY_OF[i], generation=1,
                cert_der=cas[i].cert.public_bytes(serialization.Encoding.DER),
            )
            for i in FAMILY_OF
        ],
        commit=42,
        last_committed_at=T - 60,
    )  # fmt: skip
    for h, certs in CERTS.items():
        for index, serial, state, nb, na, category in certs:
            family = FAMILY_OF[index]
            key = sf.status_key(index, serial)
            revoked = state == sf.STATE_REVOKED
            r.status_records[key] = sf.StatusRecord(
                version=1, state=state, category=category.code if category else 0,
                reason=int(Reason.AFFILIATION_CHANGED) if revoked else 0, family=family.code,
                not_before=T + nb * DAY, not_after=T + na * DAY,
                revoked_at=T - 10 * DAY if revoked else 0, holder=h,
            )  # fmt: skip
            r.links.setdefault((h, family), []).append(key)
            if family.is_sign:
                facts = NEW_FACTS if state == sf.STATE_GOOD and nb > -100 else OLD_FACTS
                r.facts[key] = seal.seal(key, facts)
    for h, parties in CONSENTS.items():
        for p in parties:
            r.consents[(h, p)] = T - 30 * DAY
    return r


def registry() -> Registry:
    ocsp_only = party_table("ocsp-only", {SIG}, services=["sign-revocation-info"])
    ocsp_only["agreement"]["methods"] = ["ocsp"]  # 取決め: revocation information by OCSP only
    return build(
        party_table("sig", {SIG}),
        party_table("usr", {USR}),
        party_table("both", {SIG, USR}),
        party_table("g", {GRP}),
        party_table("m-1", {MEM}),
        ocsp_only,
    )


def key_file(tmp: Path, key: bytes = KEY) -> Path:
    p = tmp / "facts.key"
    p.write_text(key.hex() + "\n")
    p.chmod(0o600)
    return p


class Api:
    """The real dispatcher with the two routes of this helper over a `MemoryReader`."""

    def __init__(self, reader: MemoryReader, facts_key: Path | None) -> None:
        self.ledger = Ledger()
        self.reader = reader
        config = ResponderConfig(store=StoreConfig(facts_key_file=facts_key))
        self.api = V1Api(
            (recordinfo.ROUTE, corresponding.ROUTE), config, store=reader, quota=Quotas(),
            ledger=self.ledger, signer=None,
        )  # fmt: skip
        self.registry = registry()
        self.last: Request | None = None

    def call(self, path: bytes, body: object, party: str = "sig") -> tuple[Response, Any]:
        raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
        headers = {
            b"content-type": b"application/json",
            b"authorization": b"Bearer " + party.encode(),
        }
        req = Request(b"POST", path, headers, raw, ("127.0.0.1", 1), None, b"1.1", True, 1)
        self.last = req
        resp = written(self.api.handle(req, self.registry, NOW))
        return resp, msgspec.json.decode(bytes(resp.body))

    def record_info(self, ref: dict[str, str] | bytes, party: str = "sig") -> tuple[Response, Any]:
        body = ref if isinstance(ref, bytes) else {"certificate": ref}
        return self.call(b"/v1/record-info", body, party)


def ref(index: int, serial: int) -> dict[str, str]:
    return {"issuer": f"{FAMILY_OF[index].value}-g1", "serial": f"{serial:x}"}


@pytest.fixture
def api(cas: dict[int, Ca], tmp_path: Path) -> Api:
    return Api(population(cas), key_file(tmp_path))


def test_act_18_3_after_an_address_change_with_consent_the_new_serial_and_facts(api: Api) -> None:
    resp, got = api.record_info(ref(SC, 0xA1))
    assert resp.status == 200, got
    assert got["result"] == "provided" and got["article"] == "Act §18(3)"
    assert got["store"] == {"commit": 42, "committedAt": got["store"]["committedAt"]}
    record = got["record"]
    assert (record["family"], record["issuer"], record["serial"]) == (
        "sign-card",
        "sign-card-g1",
        "A2",
    )
    assert record["facts"] == {
        "name": "山田 太郎", "nameAlt": "山田 太郎", "sex": "1", "birthDate": "319800102",
        "address": "大阪府大阪市北区二丁目2番", "addressAlt": "大阪府大阪市北区二丁目2番",
    }  # fmt: skip
    assert api.ledger.counted == [("sig", Service.SIGN_RECORD_INFO, Method.JSON, 1)]


def test_act_18_3_consent_is_checked_first_and_says_nothing_of_existence(api: Api) -> None:
    # B has a current certificate, G has none: neither consented, both answers are the same
    resp_b, got_b = api.record_info(ref(SC, 0xB1))
    resp_g, got_g = api.record_info(ref(SC, 0x61))
    assert resp_b.status == resp_g.status == 200
    assert got_b == got_g
    assert got_b["result"] == "not-provided" and got_b.get("record") is None
    assert bytes(resp_b.body) == bytes(resp_g.body)
    # a consent names one party: A consented to "sig" and "g", not to "both"
    _, got = api.record_info(ref(SC, 0xA1), party="both")
    assert got["result"] == "not-provided"
    assert api.ledger.counted == []


def test_act_18_3_none_exists_when_the_holder_holds_no_certificate_in_effect(api: Api) -> None:
    resp, got = api.record_info(ref(SC, 0xC1))
    assert resp.status == 200 and got["result"] == "none-exists" and got.get("record") is None
    assert api.ledger.counted == []  # nothing provided


def test_act_19_5_same_kind_only_card_for_card_mobile_for_mobile(api: Api) -> None:
    _, card = api.record_info(ref(SC, 0xA1))
    _, mobile = api.record_info(ref(SM, 0xA3))
    assert (card["record"]["family"], card["record"]["serial"]) == ("sign-card", "A2")
    assert (mobile["record"]["family"], mobile["record"]["serial"]) == ("sign-mobile", "A4")
    assert mobile["record"]["issuer"] == "sign-mobile-g1"
    # F lost its phone: its card certificate is in effect, but a mobile asks for mobile only
    _, got = api.record_info(ref(SM, 0xF1))
    assert got["result"] == "none-exists"


def test_act_15_1_5_an_expired_certificate_has_lost_effect_too(api: Api) -> None:
    resp, got = api.record_info(ref(SC, 0xD1))
    assert resp.status == 200 and got["result"] == "provided"
    assert got["record"]["serial"] == "D2"


def test_act_19_5_a_certificate_still_in_effect_is_refused(api: Api) -> None:
    resp, got = api.record_info(ref(SC, 0xE1))
    assert resp.status == 409
    assert got["rule"] == "in_effect" and got["article"] == "Act §19(5), §21(4)"
    assert got["field"] == "$.certificate"
    assert api.ledger.counted == []
    assert api.last is not None and api.last.note.rule == "in_effect"


def test_act_18_3_auth_certificates_carry_no_record_information(api: Api) -> None:
    resp, got = api.record_info(ref(AC, 0xA5))
    assert resp.status == 403
    assert got["rule"] == "unauthorized_family" and got["article"] == "Act §18(3)"
    assert api.ledger.counted == []


@pytest.mark.parametrize(
    ("party", "status", "rule", "article"),
    [
        (
            "g",
            200,
            "",
            "",
        ),  # a 団体署名検証者 asks on a member's behalf (§20(4)); A consented to it
        ("usr", 403, "unauthorized_service", "Act §18(3)"),  # no sign title
        (
            "m-1",
            403,
            "unauthorized_service",
            "Act §20(1)",
        ),  # a member asks through its group (§21(4))
        ("ocsp-only", 403, "unauthorized_service", "Act §17(4)"),  # not in its agreement
    ],
)
def test_who_may_ask_for_record_information(
    api: Api, party: str, status: int, rule: str, article: str
) -> None:
    resp, got = api.record_info(ref(SC, 0xA1), party=party)
    assert resp.status == status, got
    if status == 200:
        assert got["result"] == "provided"
        assert api.ledger.counted == [(party, Service.SIGN_RECORD_INFO, Method.JSON, 1)]
    else:
        assert (got["rule"], got["article"]) == (rule, article)
        assert api.ledger.counted == []


def test_a_certificate_given_itself_is_found_by_its_issuer(api: Api, cas: dict[int, Ca]) -> None:
    cert = cas[SC].issue("holder A", rsa_key(), serial=0xA1)
    b64 = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    resp, got = api.record_info({"certificate": b64})
    assert resp.status == 200 and got["record"]["serial"] == "A2"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{", 400, "$"),
        (b'{"certificate": {"issuer": "sign-card-g1", "serial": "a1"}, "x": 1}', 400, "$"),
        ({"certificate": {"issuer": "sign-card-g1"}}, 400, "$.certificate"),
        (
            {"certificate": {"issuer": "sign-card-g1", "serial": "a1", "certificate": "AA=="}},
            400,
            "$.certificate",
        ),
        (
            {"certificate": {"issuer": "sign-card-g1", "serial": "1" * 41}},
            400,
            "$.certificate.serial",
        ),
        ({"certificate": {"issuer": "sign-card-g1", "serial": "0"}}, 400, "$.certificate.issuer"),
        ({"certificate": {"issuer": "sign-card-g1", "serial": "zz"}}, 400, "$.certificate.serial"),
        (
            {"certificate": {"issuer": "sign-card-g1", "serial": "0xa1"}},
            400,
            "$.certificate.serial",
        ),
        ({"certificate": {"issuer": "sign-card-g1", "serial": " a1"}}, 400, "$.certificate.serial"),
        # SERIAL_HEX's `$` matched before a final line feed: the serial a1 was answered
        (
            {"certificate": {"issuer": "sign-card-g1", "serial": "a1\n"}},
            400,
            "$.certificate.serial",
        ),
        ({"certificate": {"issuer": "sign-card-g9", "serial": "a1"}}, 400, "$.certificate.issuer"),
        ({"certificate": {"certificate": "not base64!"}}, 400, "$.certificate.certificate"),
        ({"certificate": {"issuer": "sign-card-g1", "serial": "a9"}}, 404, "$.certificate"),
    ],
)
def test_bad_input_names_the_field_and_counts_nothing(
    api: Api, body: object, status: int, field: str
) -> None:
    raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
    resp, got = api.record_info(raw)
    assert resp.status == status, got
    assert got["field"].startswith(field), got
    assert resp.content_type == b"application/problem+json"
    assert api.ledger.counted == []


def test_no_facts_key_or_another_key_is_503_and_shows_no_facts(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    keyless = Api(population(cas), None)
    resp, got = keyless.record_info(ref(SC, 0xA1))
    assert resp.status == 503 and got["rule"] == "unavailable"
    # what needs no facts is still answered without the key: consent first, then existence
    assert keyless.record_info(ref(SC, 0xB1))[1]["result"] == "not-provided"
    assert keyless.record_info(ref(SC, 0xC1))[1]["result"] == "none-exists"
    other = Api(population(cas), key_file(tmp_path, bytes(32)))
    resp, got = other.record_info(ref(SC, 0xA1))
    assert resp.status == 503 and got["rule"] == "unavailable"
    assert "大阪" not in bytes(resp.body).decode() and other.ledger.counted == []


def test_a_group_appliance_store_holds_no_issuance_records(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    reader = population(cas)
    reader.imported = True
    resp, got = Api(reader, key_file(tmp_path)).record_info(ref(SC, 0xA1))
    assert resp.status == 503 and got["rule"] == "unavailable"


def test_the_facts_are_sealed_in_the_store_and_open_only_under_their_own_key(
    cas: dict[int, Ca],
) -> None:
    reader = population(cas)
    a2, b2 = sf.status_key(SC, 0xA2), sf.status_key(SC, 0xB2)
    assert "大阪".encode() not in reader.facts[a2]
    assert recordinfo.open_facts(FactsCipher(KEY), reader, a2) == NEW_FACTS
    reader.facts[a2] = reader.facts[b2]  # sealed facts moved under another certificate
    assert recordinfo.open_facts(FactsCipher(KEY), reader, a2) is None


def test_the_facts_key_is_read_once_per_worker_and_a_bad_one_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`responder serve` runs this setup in the master before forking: a key file others can
    read, or not 64 hex digits, stops the start naming the file, never showing the key."""
    monkeypatch.delenv("JPKI_VA_FACTS_KEY", raising=False)
    assert recordinfo.setup(ResponderConfig()).cipher is None
    path = key_file(tmp_path)
    path.chmod(0o644)
    config = ResponderConfig(store=StoreConfig(facts_key_file=path))
    with pytest.raises(ConfigError, match="chmod 600") as e:
        recordinfo.setup(config)
    assert KEY.hex() not in str(e.value)
    path.chmod(0o600)
    path.write_text("not hex\n")
    with pytest.raises(ConfigError, match="64 hex digits"):
        recordinfo.setup(config)
    monkeypatch.setenv("JPKI_VA_FACTS_KEY", KEY.hex())  # the environment wins over the file
    env = recordinfo.setup(config)
    assert (
        env.cipher is not None and "key" in repr(env.cipher) and KEY.hex() not in repr(env.cipher)
    )


def _ends_at(api: Api, key: bytes, not_after: int) -> None:
    api.reader.status_records[key] = api.reader.status_records[key]._replace(not_after=not_after)


def test_a_certificate_is_in_effect_through_its_notafters_second(api: Api) -> None:
    """RFC 5280 §4.1.2.5 (inclusive; `crlbuilder.validity`): in notAfter's own second E1 is
    still in effect (409 in_effect), as OCSP and the rules count it; the next second it has lost
    effect (§15(1)(5)). It was taken as lost in that second (`not_after <= now`)."""
    e1 = sf.status_key(SC, 0xE1)
    _ends_at(api, e1, T)  # NOW is T: the boundary second
    resp, got = api.record_info(ref(SC, 0xE1))
    assert resp.status == 409 and got["rule"] == "in_effect", got
    assert recordinfo.in_effect(api.reader.status_records[e1], T + 0.999)
    _ends_at(api, e1, T - 1)
    resp, got = api.record_info(ref(SC, 0xE1))
    assert resp.status == 200 and got["result"] == "none-exists", got


def test_act_18_3_an_expired_certificates_facts_are_never_given_even_while_still_stored(
    api: Api,
) -> None:
    """The builder erases an expired certificate's facts at its first erasure past notAfter
    (`crlbuilder.factskept`), a tick later at most; until then they are still in the store.
    Record-info gives the facts of the holder's certificate **in effect** only (§18(3): one that
    has not lost effect, §15(1)(5) by its validity too), so those facts are never given: D's
    current certificate D2 ends one second before now, its facts still sealed beside it, and
    the answer is none-exists, nothing opened, nothing counted."""
    d2 = sf.status_key(SC, 0xD2)
    assert api.reader.sealed_facts(d2) is not None
    _ends_at(api, d2, T - 1)
    resp, got = api.record_info(ref(SC, 0xD1))
    assert resp.status == 200 and got["result"] == "none-exists" and got.get("record") is None
    assert api.ledger.counted == []
    # and the expired certificate asked about directly: none other is in effect either
    resp, got = api.record_info(ref(SC, 0xD2))
    assert resp.status == 200 and got["result"] == "none-exists", got


def test_facts_erased_by_a_builder_whose_clock_runs_ahead_give_none_exists_not_503(
    api: Api,
) -> None:
    """The builder erases a certificate's facts the second after its notAfter by its own clock
    (`crlbuilder.factskept`); a responder whose clock lags still deems it in effect. Within
    `EXPIRY_SKEW` of its notAfter, facts absent mean the builder saw it expire: none-exists,
    nothing counted (it answered 503 "could not be opened" for the skew's seconds). Absent
    facts of a certificate ending later are still a 503; facts present within the skew are
    still given."""
    d2 = sf.status_key(SC, 0xD2)
    _ends_at(api, d2, T + 2)
    resp, got = api.record_info(ref(SC, 0xD1))
    assert resp.status == 200 and got["result"] == "provided", got  # facts still there
    sealed = api.reader.facts.pop(d2)
    api.ledger.counted.clear()
    resp, got = api.record_info(ref(SC, 0xD1))
    assert resp.status == 200 and got["result"] == "none-exists" and got.get("record") is None
    assert api.ledger.counted == []
    _ends_at(api, d2, T + recordinfo.EXPIRY_SKEW)
    assert api.record_info(ref(SC, 0xD1))[1]["result"] == "none-exists"
    _ends_at(api, d2, T + recordinfo.EXPIRY_SKEW + 1)  # beyond the skew: the store is damaged
    resp, got = api.record_info(ref(SC, 0xD1))
    assert resp.status == 503 and got["rule"] == "unavailable", got
    api.reader.facts[d2] = sealed
