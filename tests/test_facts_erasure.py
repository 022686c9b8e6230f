"""The sealed four facts (基本4情報) go when their certificate is revoked.

The store keeps a sign certificate's four facts only to answer 特定署名用電子証明書記録情報
(Act §18(3)): the facts recorded in the holder's sign certificate that has **not lost effect**
(§15(1), §16-14(1)). A revoked certificate never is in effect again, so nothing reads its facts
any more: they are deleted by the revoking commit (`store.writer.Commit.revoke`), whatever the
cause (a request, a recording error, a resident change, the card cascade, a compromise), and by
the erasure past retention (`Commit.erase`) for a store whose revocation an earlier release
wrote while keeping them.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from crlbuilder.model import Category, Family, FourFacts, Sex
from crlbuilder.seal import FactsCipher
from crlbuilder.store import format as sf
from tests.test_apply import H1, H2, INDEX, KEY, World, holder_set, issuance, rid, ts, world

__all__ = ["world"]

DAY = 86_400


def sealed(w: World, issuer: str, serial: int) -> bytes | None:
    with w.store.read() as r:
        return r.sealed_facts(sf.status_key(INDEX[issuer], serial))


def test_a_revocation_deletes_the_facts_of_the_card_and_of_the_mobile_it_takes(
    world: World,
) -> None:
    world.apply(holder_set(H1) + holder_set(H2, base=200))
    assert sealed(world, "sign-card-g1", 101) is not None
    assert sealed(world, "sign-mobile-g1", 103) is not None
    world.apply([{"type": "revocation-request", "id": rid(), "recorded_at": ts(10),
                  "serial": 101, "issuer": "sign-card-g1", "reason": "loss"}])  # fmt: skip
    assert world.status("sign-card-g1", 101).revoked
    assert world.status("sign-mobile-g1", 103).revoked  # the cascade, Act §16-13
    assert sealed(world, "sign-card-g1", 101) is None
    assert sealed(world, "sign-mobile-g1", 103) is None
    # another holder's certificates, in effect, keep theirs, and they still open
    key = sf.status_key(INDEX["sign-card-g1"], 201)
    facts = sealed(world, "sign-card-g1", 201)
    assert facts is not None and FactsCipher(KEY).open(key, facts).sex is Sex.MALE
    assert sealed(world, "sign-mobile-g1", 203) is not None


def test_a_recording_error_and_a_resident_change_delete_them_too(world: World) -> None:
    world.apply(holder_set(H1) + holder_set(H2, base=200))
    world.apply(
        [
            {"type": "recording-error", "id": rid(), "recorded_at": ts(9), "serial": 101,
             "issuer": "sign-card-g1"},
            {"type": "resident-change", "id": rid(), "recorded_at": ts(9), "holder": H2,
             "change": "fact-change", "fact": "address"},
        ]
    )  # fmt: skip
    for serial in (101, 201):
        assert world.status("sign-card-g1", serial).revoked
        assert sealed(world, "sign-card-g1", serial) is None
    for serial in (103, 203):
        assert world.status("sign-mobile-g1", serial).revoked
        assert sealed(world, "sign-mobile-g1", serial) is None


def test_an_issuance_read_after_the_change_that_took_it_keeps_no_facts(world: World) -> None:
    world.apply([issuance(102, "auth-card-g1", H1)])
    world.apply([{"type": "resident-change", "id": rid(), "recorded_at": ts(20), "holder": H1,
                  "change": "fact-change", "fact": "name"}])  # fmt: skip
    # a certificate issued before the change, its record read after it: revoked as it is added
    world.apply([issuance(150, "sign-card-g2", H1, 5, not_after=ts(1400))])
    assert world.quarantined() == []
    assert world.status("sign-card-g2", 150).revoked
    assert sealed(world, "sign-card-g2", 150) is None


def test_the_holders_new_certificate_keeps_its_facts_for_record_info(world: World) -> None:
    world.apply(holder_set(H1))
    world.apply([{"type": "revocation-request", "id": rid(), "recorded_at": ts(10),
                  "serial": 101, "issuer": "sign-card-g1", "reason": "loss"}])  # fmt: skip
    new = issuance(300, "sign-card-g2", H1, 11, facts={"name": "試験 花子", "sex": "2",
                   "birth_date": "319800915", "address": "東京都千代田区2-2"},
                   not_after=ts(1400))  # fmt: skip
    world.apply([new])
    assert world.quarantined() == []
    key = sf.status_key(INDEX["sign-card-g2"], 300)
    facts = sealed(world, "sign-card-g2", 300)
    assert facts is not None
    assert FactsCipher(KEY).open(key, facts) == FourFacts(
        name="試験 花子", sex=Sex.FEMALE, birth_date="319800915", address="東京都千代田区2-2"
    )
    assert sealed(world, "sign-card-g1", 101) is None


def test_an_erasure_past_retention_deletes_facts_an_earlier_release_kept(tmp_path: Path) -> None:
    w = World(tmp_path)
    try:
        w.apply([issuance(101, "sign-card-g1", H1, 0, not_after=ts(300))])
        key = sf.status_key(INDEX["sign-card-g1"], 101)
        kept = sealed(w, "sign-card-g1", 101)
        assert kept is not None
        w.apply([{"type": "revocation-request", "id": rid(), "recorded_at": ts(10),
                  "serial": 101, "issuer": "sign-card-g1", "reason": "loss"}])  # fmt: skip
        with w.store.env.begin(write=True) as txn:  # as a builder of an earlier release left it
            txn.put(key, kept, db=w.store.dbs[sf.DB_HOLDERS])
        t0 = int(datetime.fromisoformat(ts(0)).timestamp())

        def retention(family: Family, category: Category) -> int:
            return 100

        ap = w.apply([])
        assert ap.erase_past_retention(t0 + 400 * DAY, retention, keep_time=False) == 1
        assert w.status("sign-card-g1", 101).erased
        assert sealed(w, "sign-card-g1", 101) is None
    finally:
        w.store.close()
