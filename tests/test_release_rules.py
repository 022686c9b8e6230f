"""`RULES` (crlbuilder/release.py) is bumped whenever the rules change what a store ends with.

Nodes of one record stream compare releases only by that number: a rules change merged without
a bump lets nodes of the older and the newer build apply the same stream side by side, each by
its own rules, and their stores drift apart with nothing said. This test keeps, for each
`RULES`, a digest of what the rules make of a fixed, seeded set of one holder's records (each
certificate's end: revoked or not, category, instant; the records refused; through the real
`Applier` and its lapse sweep, in the made order and reversed, in one and in two stages), of
the move-out notices left after erasures past retention at fixed instants (`crlbuilder.lapsed`),
of the kept changes, lapses and move-ins left after later ones (`crlbuilder.keptfor`), of two holders' consents read out of order and erased (`crlbuilder.consentkept`) and of the retention periods (`crlbuilder.periods`) over a grid of instants and lengths. A change of
either with `RULES` as it was fails here. If the change is meant, bump `RULES` (say in its
docstring what changed) and add the digest this test prints for it; a refactoring that moves
no outcome keeps the digest. A change of the harness (`tests.orderperm`) moves it too: then
record the new digest under the same `RULES`, saying so in the commit.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest

from crlbuilder import periods, release
from crlbuilder.rules import end_of_day_utc
from crlbuilder.store import format as sf
from tests.orderperm import (
    Rec,
    Run,
    auth,
    day,
    deletion,
    fact_change,
    made_order,
    move_in,
    move_out,
)
from tests.orderperm import sign as sign_card
from tests.test_apply import INDEX, World, issuance, ts

DIGESTS: dict[int, str] = {
    2: "005d4a924750e1d9ac352b5da2545af20f0572582b392763c5530b5d3fecc08f",
    3: "34a8f341b93bcb7c263462864e013e92e2a3a1b48298fdfbcae6849bfb427b59",
    4: "468cdd6dfe18c692454dd74c9198d258de6b9693d747391dc85913462004fd59",
    5: "11544c4299ab6943dcdbd85e2b756ec54f98515a4ea3170b902908e4ce1577c5",
    # 6 also made a token-revoked need the token issuer's signature, which the fixed
    # records here do not hold: this digest is the lateness and planned-date bounds'
    6: "92e7be6542722561124824e847b7b1723c2cca2730b9f75e0077659f35244509",
    # 7 bounds a mobile certificate by its card certificate alone, and takes a certificate
    # in its notAfter's own second: the fixed records gained a holder's mobile certificates
    # against renewed card certificates (refused by 6) and a request in a last second
    7: "a8489d275c74d590254138d894fa38356b0fc443f66d9a2c80d2a23312adc880",
    # 8 dates a cascade no earlier than the mobile certificate's notBefore, takes none of a
    # later card certificate, and refuses an auth-mobile issuance without a sign-card
    # certificate in effect: the fixed records gain both (and a sign-card certificate for the
    # holder of the request in a last second, whose auth-mobile certificate 8 would refuse)
    8: "a60a7318cdbcbe60d7f619fc650c13785caa67a69e51a2b374908690acbd9844",
    # 9 decides a holder's consent by the latest recordedAt, grant or withdrawal, keeps a
    # withdrawal until its own end and refuses a grant older than the consents' erasure's bound:
    # the fixed records gain two holders' consents read out of order and erasures around their
    # ends (the harness's rules 8 records make the rules 8 digest, as before)
    9: "605f73cee46d2c33777ba3da3b319271a0a7fd26a13d413535bac84211cce2a9",
}
"""`RULES` -> the digest of the rules' outcome under it (a digest is never changed afterwards
except for a harness change, said in its commit)."""

SEEDS = 60
DAYS = (0, 10, 20, 25, 30, 31, 35, 40, 45, 60, 75, 100)
CAUSES = ("death", "move-out", "abroad-move-out", "ex-officio")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


def scenario(rng: random.Random) -> list[Rec]:
    """2 to 5 records of one holder (as `tests.test_order_permutations` draws them, but notices
    may share a day: only the made order and its reverse are applied)."""
    pool = ["S", "A", "O", "O", "OA", "I", "D", "F"]
    rng.shuffle(pool)
    recs: list[Rec] = []
    for kind in pool[: rng.randint(2, 5)]:
        d = rng.choice(DAYS)  # notices on one day too: one made order, the bounds' equalities
        lag = rng.choice((0.5, 0.5, 50))
        if kind == "S":
            recs.append(sign_card(d))
        elif kind == "A":
            recs.append(auth(d))
        elif kind in ("O", "OA"):
            recs.append(move_out(d, d + rng.choice((0, 5, 20)), abroad=kind == "OA", lag=lag))
        elif kind == "I":
            recs.append(move_in(d, lag=lag))
        elif kind == "D":
            recs.append(deletion(d, rng.choice(CAUSES)))
        else:
            recs.append(fact_change(d))
    return recs if len(recs) >= 2 and len({r.name for r in recs}) == len(recs) else scenario(rng)


def bounds() -> Iterator[list[Rec]]:
    """Scenarios at the rules' bounds: a move-in notice made around its move-out notice's
    lapse (the JST day turns at 0.625 of `day`), on the move-out notice's own instant, and
    each deletion cause, of a holder of both cards."""
    for planned in (0, 5, 20):
        for after in (-1, 0, 29.5, 30.0, 30.6, 30.625, 30.7, 31.0, 31.7):  # after the planned day
            made = 1 + planned + after if after >= 0 else 1
            for abroad in (False, True):
                yield [sign_card(0), auth(0), move_out(1, 1 + planned, abroad=abroad),
                       move_in(made)]  # fmt: skip
    for cause in CAUSES:
        for d in (0, 1, 30):
            yield [sign_card(0), auth(0), deletion(d, cause), fact_change(d + 1)]


def window() -> Iterator[list[Rec]]:
    """A sign-card certificate issued in a 国外転出届's window (Act §12(2)), whose notice lapses,
    with and without the deletion it caused: the notice is kept while the certificate is valid
    (`crlbuilder.lapsed`)."""
    yield [move_out(1, 6, abroad=True), sign_card(3)]
    yield [move_out(1, 6, abroad=True), sign_card(3), deletion(7, "abroad-move-out")]


def rules_digest(world: World) -> str:
    """The digest of what the rules make of the fixed records and periods (see the module)."""
    h = hashlib.sha256()
    rng = random.Random("release-rules")
    late = day(400)
    corpus = [*bounds(), *(scenario(rng) for _ in range(SEEDS)), *window()]
    for n, recs in enumerate(corpus):
        made = made_order(recs)
        clocks = (late,) if n % 2 == 0 else (day(rng.choice((40, 57, 72))), late)
        run = Run.of(world, f"r{n}", recs, clocks, batch_size=7, orders=[made, made[::-1]])
        run.apply()
        for k, outcome in enumerate(run.outcomes()):
            h.update(msgspec.json.encode([run.label(k), sorted(outcome.certs.items()),
                                          list(outcome.refused)]))  # fmt: skip
    # a record id reused with other content (refused from RULES 5), and what the store keeps per
    # applied record id (the commit and, from RULES 5, a digest of the record's content)
    holder = "cd" * 32
    issued = [
        {**issuance(9000 + n, "auth-card-g1", holder, d), "id": f"rules-i{n}"}
        for n, d in ((1, 1), (2, 9))
    ]
    revoke = {"type": "revocation-request", "id": "rules-dup", "recorded_at": ts(5),
              "issuer": "auth-card-g1", "reason": "application"}  # fmt: skip
    # its time written under +09:00, and replayed in UTC: the same instant, the same record
    jst = datetime.fromisoformat(ts(5)).astimezone(timezone(timedelta(hours=9))).isoformat()
    world.apply([issued[0], {**revoke, "serial": 9001, "recorded_at": jst}])
    world.apply([{**revoke, "serial": 9001}])
    world.apply(
        [issued[1], {**revoke, "serial": 9002, "recorded_at": ts(10)}]
    )  # the holder's next card, the id reused
    h.update(msgspec.json.encode([world.status("auth-card-g1", n).state for n in (9001, 9002)]))
    h.update(
        msgspec.json.encode([q["reason"] for q in world.quarantined() if q["id"] == "rules-dup"])
    )
    with world.store.env.begin() as txn:
        for k, v in txn.cursor(db=world.store.dbs[sf.DB_APPLIED]):
            h.update(bytes(k) + b"\0" + bytes(v))
    # mobile certificates against a renewed card certificate (the 6th birthday, Ord §13(1)),
    # ending with it or later (from RULES 7 bounded by the card certificate alone, Act §16-4,
    # §35-4), and a renewal claimed for a mobile one
    holder, renew = "ab" * 32, (date(2028, 7, 1) - date(2024, 1, 10)).days
    fifth, sixth = (end_of_day_utc(date(y, 9, 15)).isoformat() for y in (2028, 2033))
    mobiles = world.apply([
        {**issuance(9201, "sign-card-g1", holder, 0, not_after=fifth), "id": "rules-m1"},
        {**issuance(9202, "auth-card-g1", holder, 0, not_after=fifth), "id": "rules-m2"},
        *({"type": "revocation-request", "id": f"rules-m3-{n}", "recorded_at": ts(renew),
           "serial": n, "issuer": i, "reason": "renewal"}
          for n, i in ((9201, "sign-card-g1"), (9202, "auth-card-g1"))),
        {**issuance(9207, "auth-card-g1", holder, renew + 0.005, not_after=sixth, renewal=True),
         "id": "rules-m4"},
        {**issuance(9203, "sign-card-g2", holder, renew + 0.01, not_after=sixth, renewal=True),
         "id": "rules-m5"},
        {**issuance(9204, "sign-mobile-g1", holder, renew + 1, not_after=sixth,
                    card_serial=9203), "id": "rules-m6"},
        {**issuance(9205, "auth-mobile-g1", holder, renew + 1, not_after=sixth,
                    card_serial=9207, renewal=True), "id": "rules-m7"},
    ])  # fmt: skip
    refused = sorted((str(q["id"]), str(q["reason"])) for q in world.quarantined()
                     if str(q["id"]).startswith("rules-m"))  # fmt: skip
    h.update(msgspec.json.encode([mobiles.summary.applied, refused]))
    # a request recorded in a certificate's last second: from RULES 7 it takes it (in effect
    # through its notAfter) and its mobile one (Act §35-13)
    holder = "ac" * 32
    world.apply([
        # from RULES 8 an auth-mobile certificate needs a sign-card one in effect (Act §35-2(3))
        {**issuance(9300, "sign-card-g1", holder, 0, not_after=ts(100)), "id": "rules-s0"},
        {**issuance(9301, "auth-card-g1", holder, 0, not_after=ts(100)), "id": "rules-s1"},
        {**issuance(9302, "auth-mobile-g1", holder, 0.5, not_after=ts(100), card_serial=9301),
         "id": "rules-s2"},
        {"type": "revocation-request", "id": "rules-s3", "recorded_at": ts(100),
         "serial": 9301, "issuer": "auth-card-g1", "reason": "application"},
    ])  # fmt: skip
    h.update(msgspec.json.encode([
        [st.state, st.category, st.revoked_at]
        for st in (world.status("auth-card-g1", 9301), world.status("auth-mobile-g1", 9302))
    ]))  # fmt: skip
    # a request revoking a card certificate at day 3, read after the issuance records of a mobile
    # certificate begun at day 5 against it and of one begun at day 40 against the holder's next
    # card certificate (from RULES 8: the first taken at its notBefore, the second not taken, Act
    # §16-13, §16-4); and an auth-mobile issuance after the holder's sign-card certificate was
    # revoked, and one after it expired (refused from RULES 8, Act §35-2(1), (3))
    holder, other = "ad" * 32, "ae" * 32
    late = world.apply([
        {**issuance(9401, "sign-card-g1", holder, 0, not_after=ts(20)), "id": "rules-c1"},
        {**issuance(9402, "sign-mobile-g1", holder, 5, not_after=ts(20), card_serial=9401),
         "id": "rules-c2"},
        {**issuance(9403, "sign-card-g2", holder, 30, not_after=ts(900)), "id": "rules-c3"},
        {**issuance(9404, "sign-mobile-g1", holder, 40, not_after=ts(800), card_serial=9403),
         "id": "rules-c4"},
        {"type": "revocation-request", "id": "rules-c5", "recorded_at": ts(3), "serial": 9401,
         "issuer": "sign-card-g1", "reason": "loss"},
        {**issuance(9501, "sign-card-g1", other, 0, not_after=ts(900)), "id": "rules-a1"},
        {**issuance(9502, "auth-card-g1", other, 0, not_after=ts(900)), "id": "rules-a2"},
        {"type": "revocation-request", "id": "rules-a3", "recorded_at": ts(3), "serial": 9501,
         "issuer": "sign-card-g1", "reason": "application"},
        {**issuance(9503, "auth-mobile-g1", other, 5, not_after=ts(800), card_serial=9502),
         "id": "rules-a4"},
        {**issuance(9405, "auth-card-g1", holder, 30, not_after=ts(1200)), "id": "rules-a5"},
        {**issuance(9406, "auth-mobile-g1", holder, 950, not_after=ts(1100), card_serial=9405),
         "id": "rules-a6"},
    ])  # fmt: skip
    refused = sorted((str(q["id"]), str(q["reason"])) for q in world.quarantined()
                     if str(q["id"]).startswith(("rules-c", "rules-a")))  # fmt: skip
    with world.store.read() as r:
        ends = [
            None if st is None else [st.state, st.category, st.revoked_at]
            for st in (r.status(sf.status_key(INDEX[i], n)) for i, n in (
                ("sign-mobile-g1", 9402), ("sign-mobile-g1", 9404), ("auth-mobile-g1", 9503),
                ("auth-mobile-g1", 9406)))
        ]  # fmt: skip
    h.update(msgspec.json.encode([late.summary.applied, refused, ends]))
    # the lapsed move-out notices the erasure past retention takes (`crlbuilder.lapsed`), with
    # a period shorter than the window sign-card certificates' validity, at instants around it,
    # and the kept changes, lapses and move-ins (`crlbuilder.keptfor`) around the ends of validity
    # of what they could take (six years on: days 2190 to 2350)
    ap = world.apply([])
    kept_days = range(2190, 2351, 8)
    for d in (60, 72, 100, 300, 431, 432, 902, 903, 904, 1401, 1402, 1403, 2000, *kept_days):
        now = int(day(d).timestamp())
        ap.clock = lambda now=now: datetime.fromtimestamp(now, UTC)  # type: ignore[misc]
        ap.erase_past_retention(now, lambda f, c: 30, keep_time=False)
        with world.store.read() as r:
            left = [(h.hex(), msgspec.json.encode(p).decode()) for h, p in r.pending_notices()]
            if d in kept_days:
                left += [(h.hex(), msgspec.json.encode(t).decode()) for h, t in r.taken_kept()]
                left += [(h.hex(), msgspec.json.encode(m).decode()) for h, m in r.move_ins_kept()]
        erased = [ap.summary.notices_erased, ap.summary.taken_erased, ap.summary.move_ins_erased]
        h.update(msgspec.json.encode([d, erased if d in kept_days else erased[0], left]))
    # records read after those erasures (from RULES 6): made before what they may have erased,
    # refused as read too late (`crlbuilder.lateness`), one just inside applied; and move-out
    # notices whose planned date is before the notice or more than a year on, refused
    # (`rules.planned_date_refusal`)
    holder = "ef" * 32

    def notice(name: str, made: float, planned: float) -> dict[str, object]:
        on = datetime.fromisoformat(ts(made)).date() + timedelta(days=planned)
        return {"type": "resident-change", "id": f"rules-{name}", "recorded_at": ts(2349),
                "notified_at": ts(made), "holder": holder, "change": "move-out-notice",
                "planned_date": on.isoformat()}  # fmt: skip

    after = world.apply(
        [{**issuance(9100, "auth-card-g1", holder, 1), "id": "rules-late-issuance"},
         notice("late-notice", 2000, 5), notice("before", 2340, -1), notice("far", 2340, 366),
         notice("inside", 2340, 5)]
    )  # fmt: skip
    refused = sorted((str(q["id"]), str(q["reason"])) for q in world.quarantined())
    h.update(msgspec.json.encode([after.summary.applied, after.summary.late, refused]))
    # consents (from RULES 9): the latest recordedAt of a holder's grants and withdrawals decides,
    # whatever the order they are read in (a tie is the withdrawal's); a withdrawal is kept until
    # a consent recorded with it would be erased, and that erasure refuses an older grant as read
    # too late (`crlbuilder.consentkept`)
    holder, other = "c1" * 32, "c2" * 32

    def said(who: str, name: str, made: float, granted: bool) -> dict[str, object]:
        return {"type": "consent", "id": f"rules-k{name}", "recorded_at": ts(made),
                "holder": who, "verifier": "bank", "granted": granted}  # fmt: skip

    def consents_now() -> list[object]:
        with world.store.read() as r:
            return [(r.consents_of(bytes.fromhex(x)), r.withdrawals_of(bytes.fromhex(x)))
                    for x in (holder, other)]  # fmt: skip

    said_first = world.apply([
        {**issuance(9601, "sign-card-g1", holder, 2400, not_after=ts(2500)), "id": "rules-k0"},
        {**issuance(9602, "sign-card-g1", other, 2400, not_after=ts(2600)), "id": "rules-k00"},
        said(holder, "1", 2401, True), said(holder, "2", 2410, False),
        said(holder, "3", 2405, True), said(holder, "4", 2410, True),
        said(other, "5", 2420, True), said(other, "6", 2402, True), said(other, "7", 2415, False),
    ])  # fmt: skip
    h.update(msgspec.json.encode([said_first.summary.applied, said_first.summary.no_effect,
                                  consents_now()]))  # fmt: skip
    for d in (2530, 2531, 2532, 2632, 2633):
        now = int(day(d).timestamp())
        ap.clock = lambda now=now: datetime.fromtimestamp(now, UTC)  # type: ignore[misc]
        ap.erase_past_retention(now, lambda f, c: 30, keep_time=False)
        h.update(msgspec.json.encode([d, consents_now()]))
    said_late = world.apply([said(holder, "8", 2405, True), said(holder, "9", 2620, True)])
    refused = sorted((str(q["id"]), str(q["reason"])) for q in world.quarantined()
                     if str(q["id"]).startswith("rules-k"))  # fmt: skip
    h.update(msgspec.json.encode([said_late.summary.applied, said_late.summary.late, refused,
                                  consents_now(), ap.summary.consents_erased,
                                  ap.summary.withdrawals_erased]))  # fmt: skip
    start = int(day(0).timestamp())
    for offset in range(0, 2 * 86_400, 3_600 * 5 + 7):  # across JST day boundaries
        for days in (1, 30, 31, 365, 3_653):
            h.update(b"%d %d %d %d %d" % (offset, days, periods.kept_until(start + offset, days),
                     periods.first_kept_at(start + offset, days),
                     periods.day_end(start + offset)))  # fmt: skip
    return h.hexdigest()


def test_a_change_of_the_rules_comes_with_a_bump_of_rules(world: World) -> None:
    got = rules_digest(world)
    assert max(DIGESTS) == release.RULES, "RULES has no digest here yet, or went back"
    assert DIGESTS[release.RULES] == got, (
        f"what the rules make of the fixed records changed under RULES {release.RULES}: "
        f"bump RULES in crlbuilder/release.py (nodes of the two builds would apply one stream "
        f"differently) and record {got!r} for it here"
    )
