"""Rules 8, on the record stream from its first message of release 1.8
(`crlbuilder.release.RULES_8`): a cascade (Act §16-13, §35-13) is never dated before the mobile
certificate's notBefore, and takes no mobile certificate issued against a later card certificate;
an auth-mobile issuance needs a sign-card certificate of the holder in effect (Act §35-2(1),
(3)). Builds from record files apply them from the upgrade; a stream node before that message
decides as rules 7 did, live or replaying."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from crlbuilder import release, rules
from crlbuilder.ingest import Located
from crlbuilder.manifest import Manifest
from crlbuilder.model import (
    Category,
    Family,
    FourFacts,
    Issuance,
    Record,
    RequestReason,
    RevocationRequest,
    Sex,
)
from crlbuilder.store import format as sf
from crlbuilder.stream import Delivered, rules8_from
from tests.support.store import dump_store, node_state
from tests.test_apply import H1, H2, World, issuance, rid, ts
from tests.test_apply import T0 as T0A
from tests.test_tokenrevocation import _feed, _quarantined
from tests.test_tokens import T0, pki  # noqa: F401  (its fixture)
from tests.test_tokens import World as Node


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


def _request(serial: int, issuer: str, day: float) -> dict[str, object]:
    return {"type": "revocation-request", "id": rid(), "recorded_at": ts(day), "serial": serial,
            "issuer": issuer, "reason": "loss"}  # fmt: skip


# --- (a) the cascade, Act §16-13, §35-13 --------------------------------------------------------


@pytest.mark.parametrize(
    ("card", "mobile"), [("sign-card-g1", "sign-mobile-g1"), ("auth-card-g1", "auth-mobile-g1")]
)
def test_a_cascade_is_not_dated_before_the_mobile_certificate_began(
    world: World, card: str, mobile: str
) -> None:
    """A card certificate revoked at day 3 by a request whose record arrives after the issuance
    record of a mobile certificate that began at day 5: the cascade (Act §16-13, §35-13) takes
    the mobile one from its notBefore, never before it exists (rules 7 dated it at day 3). In
    the other arrival order its issuance is refused (Act §16-2(3), §35-2(1): `_check_card`)."""
    signer = [issuance(100, "sign-card-g1", H1, not_after=ts(1000))] if "auth" in card else []
    world.apply([
        *signer,  # the auth-mobile's application is signed with it (Act §35-2(3))
        issuance(101, card, H1, not_after=ts(1000)),
        issuance(103, mobile, H1, day=5, not_after=ts(900), card_serial=101),
    ])  # fmt: skip
    world.apply([_request(101, card, 3)])
    assert world.quarantined() == []
    st = world.status(mobile, 103)
    assert st.revoked and st.category_enum is Category.CARD_CASCADE
    assert st.revoked_at == st.not_before


def test_a_compromise_cascades_from_the_mobile_certificates_notbefore(world: World) -> None:
    """The card issuer's key compromise (Act §14) recorded at day 3, read after a sign-mobile
    certificate that began at day 5 against a card certificate it signed: the card certificate
    is revoked at day 3, the mobile one (Act §16-13) at day 5."""
    world.apply([
        issuance(101, "sign-card-g1", H1, not_after=ts(1000)),
        issuance(103, "sign-mobile-g1", H1, day=5, not_after=ts(900), card_serial=101),
        {"type": "ca-compromise", "id": rid(), "recorded_at": ts(3), "issuer": "sign-card-g1"},
    ])  # fmt: skip
    card, mobile = world.status("sign-card-g1", 101), world.status("sign-mobile-g1", 103)
    assert card.revoked and card.revoked_at == int((T0A + timedelta(days=3)).timestamp())
    assert mobile.category_enum is Category.CARD_CASCADE and mobile.revoked_at == mobile.not_before


def test_a_cascade_leaves_a_mobile_certificate_of_a_later_card_certificate(world: World) -> None:
    """Card certificate 101 expired at day 20; the holder's next one, 102, began at day 30 and a
    sign-mobile certificate against it at day 40, ending after 101 did. A request recorded at
    day 10 revoking 101, read last, cascades to no mobile certificate: the one of day 40 lies
    within 102's validity, not 101's (Act §16-4), and in the order made it was issued after 101
    lost effect, against 102, and stayed good (rules 7 revoked it at day 10)."""
    world.apply([
        issuance(101, "sign-card-g1", H1, not_after=ts(20)),
        issuance(102, "sign-card-g2", H1, day=30, not_after=ts(1000)),
        issuance(103, "sign-mobile-g1", H1, day=40, not_after=ts(900), card_serial=102),
        _request(101, "sign-card-g1", 10),
    ])  # fmt: skip
    assert world.quarantined() == []
    assert world.status("sign-card-g1", 101).revoked
    assert not world.status("sign-mobile-g1", 103).revoked


# --- (b) Act §35-2(1), (3): the sign-card certificate that signs the application ----------------


def test_act_35_2_auth_mobile_needs_a_sign_card_certificate_in_effect(world: World) -> None:
    """Act §35-2(1) lets only a 署名利用者 apply for an auth-mobile certificate, and §35-2(3) has
    the 機構 confirm that the sign-card certificate signing the application has not lost effect
    (§15(1)). An auth-mobile issuance after the holder's only sign-card certificate was revoked is
    refused, as the sign-mobile one in the same place is (Act §16-2(3))."""
    world.apply([
        issuance(101, "sign-card-g1", H1, not_after=ts(1000)),
        issuance(102, "auth-card-g1", H1, not_after=ts(1000)),
        _request(101, "sign-card-g1", 3),
        issuance(104, "auth-mobile-g1", H1, day=5, not_after=ts(900), card_serial=102),
    ])  # fmt: skip
    [q] = world.quarantined()
    assert str(q["reason"]).endswith("(Act §35-2(1), (3))"), q["reason"]


@pytest.mark.parametrize(
    ("sign", "applied"),
    [
        ({"not_after": ts(1000)}, True),  # in effect: applied
        ({"not_after": ts(1000), "day": 5}, True),  # begun in the same second
        ({"not_after": ts(4)}, False),  # expired before (Act §15(1)(5))
        ({"not_after": ts(1000), "day": 6}, False),  # not begun yet: nothing signed with it
        (None, False),  # an auth-card holder who is no 署名利用者 (Act §35-2(1))
    ],
)
def test_act_35_2_the_sign_card_certificate_in_effect_at_the_auth_mobile_issuance(
    world: World, sign: dict[str, object] | None, applied: bool
) -> None:
    world.apply([issuance(102, "auth-card-g1", H2, not_after=ts(1000))])
    if sign is not None:
        world.apply([issuance(101, "sign-card-g1", H2, **sign)])
    world.apply([issuance(104, "auth-mobile-g1", H2, day=5, not_after=ts(900), card_serial=102)])
    assert (world.quarantined() == []) is applied, world.quarantined()
    if applied:
        assert not world.status("auth-mobile-g1", 104).revoked


# --- on the record stream --------------------------------------------------------------------

FACTS = FourFacts(name="試験 花子", sex=Sex.FEMALE, birth_date="319800915", address="東京都1-1")
OLD, NEW = str(release.RULES_7), str(release.RULES_8)


def _both(cascade: str, signer: str, base: int) -> list[Record]:
    """(a) holder ``cascade``: a sign-mobile certificate begun 20 days before T0, then the
    request revoking its card certificate 30 days before T0; (b) holder ``signer``: a request
    revoking the only sign-card certificate 30 days before T0, then an auth-mobile issuance 20
    days before T0."""
    end = rules.end_of_day_utc(date(T0.year + 2, 9, 15))  # before the 5th birthday after
    began, revoked, mobile = (T0 - timedelta(days=n) for n in (60, 30, 20))

    def issued(n: int, holder: str, family: Family, issuer: str, at: datetime,
               card: int | None = None) -> Issuance:  # fmt: skip
        return Issuance(id=f"i-{n}", recorded_at=at, serial=n, family=family, issuer=issuer,
                        not_before=at, not_after=end, holder=holder,
                        facts=FACTS if family.is_sign else None, card_serial=card)  # fmt: skip

    def request(n: int) -> RevocationRequest:
        return RevocationRequest(id=f"r-{n}", recorded_at=revoked, serial=n,
                                 issuer="sign-card-g1", reason=RequestReason.LOSS)  # fmt: skip

    return [
        issued(base, cascade, Family.SIGN_CARD, "sign-card-g1", began),
        issued(base + 1, cascade, Family.SIGN_MOBILE, "sign-mobile-g1", mobile, base),
        request(base),
        issued(base + 2, signer, Family.AUTH_CARD, "auth-card-g1", began),
        issued(base + 3, signer, Family.SIGN_CARD, "sign-card-g1", began),
        request(base + 3),
        issued(base + 4, signer, Family.AUTH_MOBILE, "auth-mobile-g1", mobile, base + 2),
    ]


def test_rules8_from_finds_the_first_message_of_1_8() -> None:
    def d(seq: int, rel: str | None) -> Delivered:
        return Delivered(seq=seq, item=None, at=T0, end=True, pending=0, release=rel)

    assert rules8_from([d(1, "1.7"), d(2, "1.8"), d(3, "1.7")]) == release.FirstOf(0, 2)
    assert rules8_from([d(1, None), d(2, "1.7")]) == release.FirstOf(0, None)


def test_rules8_from_the_streams_first_1_8_message(
    pki: tuple[Path, Manifest],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The same records of two pairs of holders on the record stream, one before its first 1.8
    message (the upgraded signer's tick) and one after it (still under the feed's 1.7 header:
    the stream's order decides). Before it, as the nodes of 1.7 decided: the cascade dated at
    the card's instant, before the mobile certificate began, and the auth-mobile issuance
    applied; after it, the cascade at the mobile certificate's notBefore and the issuance
    refused (Act §35-2(1), (3)). A node that applied the stream live (restarted between
    batches) and one replaying it from its start hold the same bytes, the flag at the same
    message."""
    at = T0 + timedelta(hours=1)

    def d(seq: int, rec: Record | None, rel: str | None) -> Delivered:
        item = None if rec is None else Located("feed.jsonl", seq, rec)
        return Delivered(seq=seq, item=item, at=at + timedelta(seconds=seq), end=True,
                         pending=0, release=rel)  # fmt: skip

    stream = [d(n + 1, r, OLD) for n, r in enumerate(_both("a1" * 32, "b1" * 32, 700))]
    stream.append(d(8, None, NEW))  # the upgraded signer's first tick: the flag
    stream += [d(n + 9, r, OLD) for n, r in enumerate(_both("a2" * 32, "b2" * 32, 800))]
    (tmp_path / "live").mkdir()
    (tmp_path / "replay").mkdir()
    live, replay = Node(tmp_path / "live", pki), Node(tmp_path / "replay", pki)
    replay.builder.key = live.builder.key  # the nodes of one stream share the facts key
    flag = [sf.META_RULES8_FROM]
    try:
        for n in range(1, len(stream) + 1):  # live: the stream as it grew
            _feed(live, stream[:n], restart=True)
        _feed(replay, stream, restart=False)  # later, from the stream's start
        for w in (live, replay):
            index = {i.id: i.index for i in w.manifest.issuers}
            with w.builder.store.read() as r:
                before, after = (r.status(sf.status_key(index["sign-mobile-g1"], n))
                                 for n in (701, 801))  # fmt: skip
                good = r.status(sf.status_key(index["auth-mobile-g1"], 704))
                refused = r.status(sf.status_key(index["auth-mobile-g1"], 804))
            assert before is not None and after is not None and good is not None
            assert before.category_enum is after.category_enum is Category.CARD_CASCADE
            assert before.revoked_at == int((T0 - timedelta(days=30)).timestamp())
            assert before.revoked_at < before.not_before  # rules 7's, kept as it was
            assert after.revoked_at == after.not_before
            assert not good.revoked and refused is None
            (reason,) = _quarantined(w)
            assert reason.endswith("(Act §35-2(1), (3))")
        states = [node_state(w.builder.store) for w in (live, replay)]
        assert states[0] == states[1]
        assert dump_store(live.builder.store, meta=flag)["meta"] == [
            (sf.META_RULES8_FROM, sf.pack_u64(8))
        ]
    finally:
        live.builder.close()
        replay.builder.close()
