"""Rules 7, on the record stream from its first message of release 1.7
(`crlbuilder.release.RULES_7`): a mobile certificate's validity is bounded by its card
certificate's alone (Act §16-4, §35-4; the seed Ordinance's periods, Ord §13 and §49, are the
card certificates'); and a certificate is in effect through its notAfter's own second (RFC 5280;
Ord §13, §49: to the end of its last day), so a loss of effect recorded then takes it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import msgspec

from crlbuilder import release, rules
from crlbuilder.ingest import Located
from crlbuilder.manifest import Manifest
from crlbuilder.model import (
    CaCompromise,
    Category,
    ChangeKind,
    Family,
    FourFacts,
    Issuance,
    Record,
    RequestReason,
    ResidentChange,
    RevocationRequest,
    Sex,
)
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import copy_store
from crlbuilder.stream import Delivered, first_of, rules7_from
from tests.support.store import dump_store, node_state
from tests.test_tokenrevocation import _feed, _quarantined
from tests.test_tokens import (  # noqa: F401  (its fixtures)
    T0,
    World,
    pki,
    world,
)

FACTS = FourFacts(name="試験 花子", sex=Sex.FEMALE, birth_date="319800915", address="東京都1-1")
"""Born 1980-09-15: a card certificate renewed on 2025-07-01 runs to the 6th birthday after it,
2030-09-15; a mobile one issued on 2025-07-02 reaches the 5th birthday after its own issuance,
2029-09-15, first."""
RENEWED_END = rules.end_of_day_utc(date(2030, 9, 15))
OLD, NEW = "1.6", str(release.RULES_7)


def _jst(d: date, hour: int = 10) -> datetime:
    return datetime(d.year, d.month, d.day, hour, tzinfo=rules.JST).astimezone(UTC)


def _renewed_card_and_mobile(holder: str, base: int) -> list[Record]:
    """A sign-card certificate renewed under three months before its end (Ord §13(1): the 6th
    birthday), then a first sign-mobile certificate against it, ending with it (Act §16-4)."""
    old_end = rules.end_of_day_utc(date(2025, 9, 15))  # the 5th birthday after 2021-01-10
    renewed, mobile = _jst(date(2025, 7, 1)), _jst(date(2025, 7, 2))
    return [
        Issuance(id=f"i-{base}", recorded_at=_jst(date(2021, 1, 10)), serial=base,
                 family=Family.SIGN_CARD, issuer="sign-card-g1",
                 not_before=_jst(date(2021, 1, 10)), not_after=old_end, holder=holder,
                 facts=FACTS),
        RevocationRequest(id=f"r-{base}", recorded_at=renewed, serial=base,
                          issuer="sign-card-g1", reason=RequestReason.RENEWAL),
        Issuance(id=f"i-{base + 1}", recorded_at=renewed + timedelta(minutes=1),
                 serial=base + 1, family=Family.SIGN_CARD, issuer="sign-card-g2",
                 not_before=renewed + timedelta(minutes=1), not_after=RENEWED_END,
                 holder=holder, facts=FACTS, renewal=True),
        Issuance(id=f"i-{base + 2}", recorded_at=mobile, serial=base + 2,
                 family=Family.SIGN_MOBILE, issuer="sign-mobile-g1", not_before=mobile,
                 not_after=RENEWED_END, holder=holder, facts=FACTS, card_serial=base + 1),
    ]  # fmt: skip


def test_first_of_finds_the_first_message_of_a_release_or_later() -> None:
    def d(seq: int, rel: str | None, record: bool = True) -> Delivered:
        rec = _renewed_card_and_mobile("ab" * 32, 10)[0]
        item = Located("f.jsonl", seq, rec) if record else None
        return Delivered(seq=seq, item=item, at=T0, end=True, pending=0, release=rel)

    batch = [d(1, None), d(2, "1.6"), d(3, "1.6", record=False), d(4, "1.8"), d(5, "1.6")]
    assert rules7_from(batch) == release.FirstOf(2, 4)  # the tick is no record
    assert first_of(batch, release.Release(1, 6)) == release.FirstOf(1, 2)
    assert rules7_from(batch[:3]) == release.FirstOf(2, None)
    assert first_of([d(1, "2.1")], release.RULES_7) == release.FirstOf(0, 1)  # a newer format


def test_a_mobile_certificate_ends_with_its_renewed_card_certificate(world: World) -> None:  # noqa: F811
    """Outside the record stream (record files), rules 7 from the upgrade: the first mobile
    certificate of a holder whose card certificate was renewed may end with it."""
    holder = "cd" * 32
    path = world.tmp / "in.jsonl"
    lines = [msgspec.json.encode(r) for r in _renewed_card_and_mobile(holder, 500)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    world.builder.build([path], as_of=T0)
    assert _quarantined(world) == []
    index = {i.id: i.index for i in world.manifest.issuers}
    with world.builder.store.read() as r:
        mobile = r.status(sf.status_key(index["sign-mobile-g1"], 502))
    assert mobile is not None and not mobile.revoked
    assert mobile.not_after == int(RENEWED_END.timestamp())


def test_mobile_validity_by_the_card_alone_from_the_streams_first_1_7_message(
    world: World,  # noqa: F811
    pki: tuple[Path, Manifest],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The same records of two holders on the record stream, one before its first 1.7 message
    (the upgraded signer's tick) and one after it (still under the feed's 1.6 header: the
    stream's order decides): the first holder's mobile certificate is refused as the nodes of
    1.6 refused it, by a node that applied the stream live and one replaying it from its start;
    the second is applied on both; both hold the same bytes, the flag at the same message."""
    at = T0 + timedelta(hours=1)

    def d(seq: int, rec: Record | None, rel: str | None) -> Delivered:
        item = None if rec is None else Located("feed.jsonl", seq, rec)
        return Delivered(seq=seq, item=item, at=at + timedelta(seconds=seq), end=True,
                         pending=0, release=rel)  # fmt: skip

    first, second = "e1" * 32, "e2" * 32
    stream = [d(n + 1, r, OLD) for n, r in enumerate(_renewed_card_and_mobile(first, 700))]
    stream.append(d(5, None, NEW))  # the upgraded signer's first tick: the flag
    stream += [d(n + 6, r, OLD) for n, r in enumerate(_renewed_card_and_mobile(second, 800))]
    (tmp_path / "replay").mkdir()
    replay = World(tmp_path / "replay", pki)
    replay.builder.key = world.builder.key  # the nodes of one stream share the facts key
    index = {i.id: i.index for i in world.manifest.issuers}
    try:
        for n in range(1, len(stream) + 1):  # live: the stream as it grew
            _feed(world, stream[:n], restart=True)
        _feed(replay, stream, restart=False)  # later, from the stream's start
        for w in (world, replay):
            (reason,) = _quarantined(w)
            assert "later than the validity the rules allow (Act §16-4)" in reason
            with w.builder.store.read() as r:
                assert r.status(sf.status_key(index["sign-mobile-g1"], 702)) is None
                mobile = r.status(sf.status_key(index["sign-mobile-g1"], 802))
            assert mobile is not None and not mobile.revoked
        flag = [sf.META_RULES7_FROM]
        live, again = (
            (node_state(w.builder.store), dump_store(w.builder.store, meta=flag)["meta"])
            for w in (world, replay)
        )
        assert live == again
        assert live[1] == [(sf.META_RULES7_FROM, sf.pack_u64(5))]
    finally:
        replay.builder.close()
    # `crlbuilder store copy` keeps it (a node restored from the copy judges alike)
    copy_store(Path(replay.builder.cfg.store.path), tmp_path / "copy")
    assert dump_store(tmp_path / "copy", meta=flag)["meta"] == live[1]


def _status(w: World, issuer: str, serial: int) -> sf.StatusRecord:
    index = {i.id: i.index for i in w.manifest.issuers}
    with w.builder.store.read() as r:
        st = r.status(sf.status_key(index[issuer], serial))
    assert st is not None
    return st


def test_a_loss_of_effect_in_notafters_own_second_takes_the_certificate(world: World) -> None:  # noqa: F811
    """Ord §13: valid through the last day, whose 23:59:59 JST is notAfter (RFC 5280: inclusive).
    A request (Act §11) recorded in that second revokes the sign-card certificate and cascades to
    its mobile one (Act §16-13); a compromise (Act §33) recorded in an auth-card certificate's
    last second takes it. Rules 6 held both expired then."""
    holder = "cf" * 32
    end = rules.end_of_day_utc(date(2028, 9, 15))
    issued = _jst(date(2024, 1, 10))
    records: list[Record] = [
        Issuance(id="i-901", recorded_at=issued, serial=901, family=Family.SIGN_CARD,
                 issuer="sign-card-g1", not_before=issued, not_after=end, holder=holder,
                 facts=FACTS),
        Issuance(id="i-902", recorded_at=issued, serial=902, family=Family.SIGN_MOBILE,
                 issuer="sign-mobile-g1", not_before=issued, not_after=end, holder=holder,
                 facts=FACTS, card_serial=901),
        Issuance(id="i-903", recorded_at=issued, serial=903, family=Family.AUTH_CARD,
                 issuer="auth-card-g1", not_before=issued, not_after=end, holder=holder),
        RevocationRequest(id="r-901", recorded_at=end, serial=901, issuer="sign-card-g1",
                          reason=RequestReason.LOSS),
        CaCompromise(id="k-auth", recorded_at=end, issuer="auth-card-g1"),
    ]  # fmt: skip
    path = world.tmp / "in.jsonl"
    path.write_bytes(b"\n".join(msgspec.json.encode(r) for r in records) + b"\n")
    world.builder.build([path], as_of=T0)
    assert _quarantined(world) == []
    card, mobile, auth = (_status(world, i, n) for i, n in
                          (("sign-card-g1", 901), ("sign-mobile-g1", 902), ("auth-card-g1", 903)))  # fmt: skip
    assert card.revoked and card.revoked_at == card.not_after
    assert mobile.revoked and mobile.category_enum is Category.CARD_CASCADE
    assert auth.revoked and auth.category_enum is Category.CA_COMPROMISE


def test_notafters_own_second_from_the_streams_first_1_7_message(
    world: World,  # noqa: F811
    pki: tuple[Path, Manifest],  # noqa: F811
    tmp_path: Path,
) -> None:
    """On the record stream, before its first 1.7 message, a request recorded in an auth-card
    certificate's last second, and a 30-day lapse written by a tick's sweep in it (Act §31(2),
    dated by the stream's time), take nothing, as on the nodes of 1.6; after it, the same take
    the certificate. A node applying the stream live and one replaying it hold the same bytes."""
    at = T0 + timedelta(hours=1)

    def d(seq: int, rec: Record | None, rel: str | None) -> Delivered:
        item = None if rec is None else Located("feed.jsonl", seq, rec)
        return Delivered(seq=seq, item=item, at=at + timedelta(seconds=seq), end=True,
                         pending=0, release=rel)  # fmt: skip

    def auth(holder: str, serial: int, not_after: datetime) -> Issuance:
        return Issuance(id=f"i-{serial}", recorded_at=T0 - timedelta(days=60), serial=serial,
                        family=Family.AUTH_CARD, issuer="auth-card-g1",
                        not_before=T0 - timedelta(days=60), not_after=not_after, holder=holder)  # fmt: skip

    def request(serial: int, when: datetime) -> RevocationRequest:
        return RevocationRequest(id=f"r-{serial}", recorded_at=when, serial=serial,
                                 issuer="auth-card-g1", reason=RequestReason.APPLICATION)  # fmt: skip

    def move_out(holder: str) -> ResidentChange:  # lapsed eight days before the stream's time
        return ResidentChange(id=f"mo-{holder[:4]}", recorded_at=at,
                              notified_at=T0 - timedelta(days=40), holder=holder,
                              change=ChangeKind.MOVE_OUT_NOTICE,
                              planned_date=(T0 - timedelta(days=39)).astimezone(rules.JST).date())  # fmt: skip

    last = at + timedelta(hours=1)  # a request's instant: some certificate's last second
    a, b, c, e = ("a1" * 32, "b1" * 32, "c1" * 32, "e1" * 32)
    stream = [
        d(1, auth(a, 951, last), OLD),
        d(2, request(951, last), OLD),  # before the flag: takes nothing
        d(3, auth(c, 953, at + timedelta(seconds=5)), OLD),
        d(4, move_out(c), OLD),
        d(5, None, OLD),  # a tick: the sweep writes c's lapse at its second 5, its last
        d(6, None, NEW),  # the upgraded signer's first tick: the flag
        d(7, auth(b, 952, last), OLD),
        d(8, request(952, last), OLD),  # after the flag: takes it
        d(9, auth(e, 954, at + timedelta(seconds=11)), OLD),
        d(10, move_out(e), OLD),
        d(11, None, OLD),  # the sweep writes e's lapse at its second 11, its last: takes it
    ]
    (tmp_path / "replay").mkdir()
    replay = World(tmp_path / "replay", pki)
    replay.builder.key = world.builder.key
    try:
        for n in range(1, len(stream) + 1):
            _feed(world, stream[:n], restart=True)
        _feed(replay, stream, restart=False)
        for w in (world, replay):
            assert _quarantined(w) == []
            assert not _status(w, "auth-card-g1", 951).revoked
            assert not _status(w, "auth-card-g1", 953).revoked
            took = _status(w, "auth-card-g1", 952)
            assert took.revoked and took.revoked_at == took.not_after
            lapsed = _status(w, "auth-card-g1", 954)
            assert lapsed.revoked and lapsed.category_enum is Category.RESIDENT_CHANGE
            assert lapsed.revoked_at == lapsed.not_after
        assert node_state(world.builder.store) == node_state(replay.builder.store)
    finally:
        replay.builder.close()
