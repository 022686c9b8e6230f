"""A holder's consents (同意, Act §18(3)) go once past every sign certificate they could serve.

`crlbuilder.consentkept`: a consent is kept while the holder holds a sign certificate not past
its notAfter, and then for the longest retention period of the sign families' records, from the
latest notAfter (or from when the consent was recorded, if later). Erased by the erasure past
retention from the retention agenda (`crlbuilder.retention`), without reading every consent at
each erasure; a new certificate keeps it; a consent read late is seen at the next erasure; an
agenda of an earlier release is stale. They were kept for ever.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from crlbuilder import consentkept, disclosure
from crlbuilder.apply import Applier, from_epoch
from crlbuilder.model import Category, Family
from crlbuilder.periods import kept_until
from crlbuilder.retention import FACTS, KEPT, NOTICES, periods_digest, scanned
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.reader import LmdbReader
from crlbuilder.store.writer import Commit
from crlbuilder.verifiers import Verifiers
from responder.v1 import recordinfo
from tests.test_apply import H1, H2, World, issuance, ts, two_holders, world

__all__ = ["world"]

DAY = 86_400
T0 = int(datetime.fromisoformat(ts(0)).timestamp())


def retention(family: Family, category: Category) -> int:
    return 200 if family is Family.SIGN_MOBILE and category is Category.CARD_CASCADE else 100


LONGEST = 200


def consent(holder: str, day: float, rid: str) -> dict[str, object]:
    return {"type": "consent", "id": rid, "recorded_at": ts(day), "holder": holder,
            "verifier": "bank", "granted": True}  # fmt: skip


def consents(w: World) -> dict[str, list[str]]:
    with w.store.read() as r:
        return {
            h: [v for v, _ in r.consents_of(bytes.fromhex(h))]
            for h in (H1, H2)
            if r.consents_of(bytes.fromhex(h))
        }


def erase(w: World, now: int, *, agenda: bool = True) -> Applier:
    ap = w.apply([])
    ap.erase_past_retention(now, retention, keep_time=False, agenda=agenda)
    return ap


def _no_scan(self: LmdbReader) -> Iterator[tuple[bytes, list[tuple[str, int]]]]:
    raise AssertionError("the agenda was not used: every consent was read")


def _population(w: World) -> None:
    """H1's sign certificates end on days 300 (card) and 290 (mobile); H2's run to day 1400."""
    two_holders(w)
    w.apply([consent(H1, 5, "c-1"), consent(H2, 5, "c-2")])
    assert consents(w) == {H1: ["bank"], H2: ["bank"]}


def test_a_consent_goes_the_longest_sign_period_after_the_holders_last_sign_certificate_ends(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _population(world)
    due = kept_until(T0 + 300 * DAY, LONGEST)
    assert erase(world, due - 10 * DAY).summary.consents_erased == 0  # a scan: lists H1 at due
    with monkeypatch.context() as m:
        m.setattr(LmdbReader, "consents_kept", _no_scan)
        assert erase(world, due - 1).summary.consents_erased == 0  # the agenda alone
        ap = erase(world, due)
    assert ap.summary.consents_erased == 1
    assert consents(world) == {H2: ["bank"]}
    # the certificates themselves are as they were: only the consent went
    with world.store.read() as r:
        assert len(r.holder_certs(bytes.fromhex(H1), Family.SIGN_CARD)) == 1


def test_a_new_sign_certificate_keeps_the_consent(world: World) -> None:
    """Listed on the agenda at the old instant, checked again then: a card issued since (after
    the old ones ended) keeps the consent until the longest period after its own end."""
    _population(world)
    due = kept_until(T0 + 300 * DAY, LONGEST)
    erase(world, due - 10 * DAY)
    world.apply([issuance(111, "sign-card-g1", H1, 350, not_after=ts(2000))])
    assert erase(world, due).summary.consents_erased == 0
    assert consents(world) == {H1: ["bank"], H2: ["bank"]}
    assert erase(world, kept_until(T0 + 1400 * DAY, LONGEST)).summary.consents_erased == 1
    assert consents(world) == {H1: ["bank"]}  # H2's went at its own instant
    later = kept_until(T0 + 2000 * DAY, LONGEST)
    assert erase(world, later - 1).summary.consents_erased == 0
    assert erase(world, later).summary.consents_erased == 1
    assert consents(world) == {}


def test_a_consent_read_late_is_erased_at_the_next_erasure(world: World) -> None:
    """A consent recorded on day 5 read on day 700, long after the holder's sign certificates
    ended (day 300) and the period after them: the agenda made on day 690 does not list it; the
    consent's recordedAt lowers the agenda's watermark, so the next erasure scans and erases it
    (rather than keeping it until the horizon, 30 days later). No consent was erased before it,
    so no bound refuses it as read too late (the tests below)."""
    two_holders(world)
    world.apply([consent(H2, 5, "c-2")])
    assert erase(world, T0 + 690 * DAY).summary.consents_erased == 0  # nothing of H1
    world.apply([consent(H1, 5, "c-late")])
    assert consents(world) == {H1: ["bank"], H2: ["bank"]}
    assert erase(world, T0 + 691 * DAY).summary.consents_erased == 1
    assert consents(world) == {H2: ["bank"]}


def test_an_agenda_of_an_earlier_release_is_stale_and_the_first_erasure_erases_the_backlog(
    tmp_path: Path,
) -> None:
    """A store an earlier release wrote: its agenda's digest without `retention.CONSENTS`, a
    consent long past the rule. The first erasure finds the agenda stale, scans and erases it."""
    w = World(tmp_path)
    try:
        _population(w)
        now = T0 + 900 * DAY
        earlier = periods_digest(retention, (NOTICES, KEPT, FACTS))
        assert earlier != periods_digest(retention)
        with Commit(w.store, lambda: from_epoch(now)) as c:  # as the earlier release left it
            c.rebuild_retention(scanned(now - 5 * DAY, earlier), [])
        w.store.close()
        w.store = Store.open(tmp_path / "store", readonly=False, map_size=1 << 26)
        assert erase(w, now).summary.consents_erased == 1
        assert consents(w) == {H2: ["bank"]}
    finally:
        w.store.close()


def test_erasable_at() -> None:
    assert consentkept.longest_sign_period(retention) == LONGEST
    end = T0 + 300 * DAY
    assert consentkept.erasable_at(T0, [end, end - DAY], 10) == kept_until(end, 10)
    assert consentkept.erasable_at(end + DAY, [end], 10) == kept_until(end + DAY, 10)
    assert consentkept.erasable_at(T0, [], 10) == kept_until(T0, 10)  # auth certificates only


# --- rules 9: the holder's latest word decides, a withdrawal kept until its own end -----------


def withdrawal(holder: str, day: float, rid: str) -> dict[str, object]:
    return {**consent(holder, day, rid), "granted": False}


def kept(w: World, holder: str = H1) -> tuple[int | None, int | None]:
    """(the consent's recordedAt, the withdrawal's kept) of ``holder`` for "bank"."""
    with w.store.read() as r:
        return r.consent(bytes.fromhex(holder), "bank"), r.withdrawal(bytes.fromhex(holder), "bank")


def at(day: float) -> int:
    return T0 + int(day * DAY)


def test_a_sign_certificate_issued_before_the_erasure_and_read_after_it_does_not_bring_it_back(
    world: World,
) -> None:
    """A decision (docs/records.md, "consent"): the erasure judges the holder's certificates by
    the records read by then; an issuance made days before it and read after it is applied (not
    refused: that would lose a certificate) and the consent stays erased: record-info says
    ``not-provided`` until the holder consents again (a new grant, recorded after the erasure's
    bound, is applied). It provides less, never more, than the holder consented to."""
    _population(world)
    due = kept_until(T0 + 300 * DAY, LONGEST)
    day = (due - T0) // DAY
    assert erase(world, due).summary.consents_erased == 1
    world.apply([issuance(111, "sign-card-g1", H1, day - 5, not_after=ts(day + 1500))])
    with world.store.read() as r:
        assert len(r.holder_certs(bytes.fromhex(H1), Family.SIGN_CARD)) == 2  # applied, not late
    assert consents(world) == {H2: ["bank"]}
    world.apply([consent(H1, day + 1, "c-anew")])
    assert consents(world) == {H1: ["bank"], H2: ["bank"]}


def test_an_older_grant_read_late_does_not_move_the_consents_time_back(world: World) -> None:
    """Rules 9: the later recordedAt stays (rules 8 wrote day 3 over day 1400: the consent then
    fell due, and was disclosed, by the older time)."""
    _population(world)
    world.apply([consent(H2, 1400, "c-again")])
    ap = world.apply([consent(H2, 3, "c-older")])  # recorded before both, read last
    assert (ap.summary.applied, ap.summary.no_effect) == (1, 1)
    assert kept(world, H2) == (at(1400), None)


def test_a_grant_recorded_before_a_withdrawal_and_read_after_it_grants_nothing(
    world: World,
) -> None:
    """Rules 9: the withdrawal is kept (its recordedAt, a tombstone), and a grant recorded before
    it grants nothing, whenever it is read (rules 8 granted the consent again: a provision the
    holder withdrew, Act §18(3)). A tie is the withdrawal's."""
    _population(world)
    world.apply([withdrawal(H1, 10, "w-1")])
    assert consents(world) == {H2: ["bank"]}
    assert kept(world) == (None, at(10))
    ap = world.apply([consent(H1, 8, "g-older"), consent(H1, 10, "g-same-instant")])
    assert (ap.summary.applied, ap.summary.no_effect, ap.summary.quarantined) == (2, 2, 0)
    assert consents(world) == {H2: ["bank"]}
    assert kept(world) == (None, at(10))


def test_a_grant_newer_than_the_withdrawal_grants_again_and_the_withdrawal_goes(
    world: World,
) -> None:
    """The holder consents again after withdrawing: the grant is the later word, and the
    withdrawal is no longer kept (nothing it outranks is older than the consent now kept). A
    withdrawal older than the consent kept, read after it, withdraws nothing; the withdrawal read
    first and the grant after it end the same."""
    _population(world)
    world.apply([withdrawal(H1, 10, "w-1")])
    world.apply([consent(H1, 12, "g-newer")])
    assert kept(world) == (at(12), None)
    ap = world.apply([withdrawal(H1, 11, "w-older"), consent(H1, 9, "g-oldest")])
    assert (ap.summary.applied, ap.summary.no_effect) == (2, 2)
    assert kept(world) == (at(12), None)
    world.apply([withdrawal(H1, 12, "w-tie")])  # the same instant as the grant: withdrawn
    assert kept(world) == (None, at(12))


def test_a_withdrawal_with_no_consent_kept_is_kept_too(world: World) -> None:
    """Read before the grant it outranks (records in another order than made)."""
    two_holders(world)
    ap = world.apply([withdrawal(H1, 10, "w-first")])
    assert (ap.summary.applied, ap.summary.no_effect) == (1, 1)  # no answer changed
    world.apply([consent(H1, 4, "g-after")])
    assert kept(world) == (None, at(10))


def test_the_withdrawal_ends_when_the_consent_it_ended_would_have_and_an_older_grant_stays_refused(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tombstone's end: erased at the instant a consent recorded with it would be
    (`consentkept.erasable_at` of its recordedAt and the holder's sign certificates), from the
    agenda, not a second before; that erasure raises the grants' bound, so a grant recorded before
    the withdrawal, read after its erasure, is refused as read too late (quarantined, counted
    ``refused_late``) instead of granting again until the next erasure; a grant recorded after the
    bound is applied."""
    _population(world)
    world.apply([withdrawal(H1, 10, "w-1")])
    due = kept_until(T0 + 300 * DAY, LONGEST)  # H1's sign certificates end on day 300
    assert erase(world, due - 10 * DAY).summary.withdrawals_erased == 0  # a scan: listed
    with monkeypatch.context() as m:
        m.setattr(LmdbReader, "consents_kept", _no_scan)
        m.setattr(LmdbReader, "withdrawals_kept", _no_scan)
        assert erase(world, due - 1).summary.withdrawals_erased == 0
        assert kept(world) == (None, at(10))
        ap = erase(world, due)
    assert (ap.summary.withdrawals_erased, ap.summary.consents_erased) == (1, 0)
    assert kept(world) == (None, None)
    with world.store.read() as r:
        assert r.withdrawals_of(bytes.fromhex(H1)) == []
    late = world.apply([consent(H1, 8, "g-older")])
    assert (late.summary.quarantined, late.summary.late) == (1, 1)
    assert [q["reason"] for q in world.quarantined()] == [consentkept.LATE_GRANT]
    assert consents(world) == {H2: ["bank"]}
    bound = consentkept.granted_before(due, LONGEST)
    assert kept_until(bound - 1, LONGEST) <= due < kept_until(bound, LONGEST)
    day = (due - T0) // DAY
    world.apply([consent(H1, day, "g-now")])
    assert kept(world) == (at(day), None)


def test_a_withdrawal_older_than_the_bound_is_not_kept(world: World) -> None:
    """Every grant it could outrank is refused as read too late already: it withdraws the
    consent it ends and keeps nothing."""
    _population(world)
    world.apply([withdrawal(H2, 20, "w-h2")])
    due = kept_until(T0 + 1400 * DAY, LONGEST)
    assert erase(world, due).summary.withdrawals_erased == 1
    world.apply([consent(H1, 1, "g-h1-old-too")])  # older than the bound: refused
    ap = world.apply([withdrawal(H1, 6, "w-h1")])  # older than the bound too
    assert ap.summary.applied == 1
    assert kept(world) == (None, None)


def test_record_info_answers_not_provided_after_a_withdrawal_whatever_order_the_grants_come(
    world: World,
) -> None:
    """The provision (`responder.v1.recordinfo.decide`, what ``/v1/record-info`` answers) over
    the store: granted on day 5, withdrawn on day 10, a grant of day 8 read last: ``not-provided``
    (rules 8 answered with the holder's certificate); granted again on day 12: provided."""
    _population(world)
    world.apply([withdrawal(H1, 10, "w-1")])
    world.apply([consent(H1, 8, "g-older")])
    asked = world.status("sign-card-g1", 101)
    now = at(20)
    with world.store.read() as r:
        assert recordinfo.decide(r, asked, "bank", now) is recordinfo.Result.NOT_PROVIDED
    world.apply([consent(H1, 12, "g-newer")])
    with world.store.read() as r:
        answer = recordinfo.decide(r, asked, "bank", now)
    assert isinstance(answer, recordinfo.Current)
    assert answer.status.holder == bytes.fromhex(H1)


def test_the_holders_disclosure_shows_the_withdrawal_kept(world: World) -> None:
    """Act §58: the withdrawal kept is something the store holds about the holder."""
    _population(world)
    world.apply([withdrawal(H1, 10, "w-1")])
    with world.store.read() as r:
        doc = disclosure.disclose(r, bytes.fromhex(H1), at=at(20))
    assert doc.consents == []
    assert doc.withdrawals == [
        disclosure.Withdrawal(verifier="bank", recorded_at=ts(10).replace("+00:00", "Z"))
    ]


def test_the_grants_bound_is_the_stores_not_the_holders(world: World) -> None:
    """A decision (docs/records.md, "consent"): the bound one erasure raised refuses a grant of
    another holder recorded as long before, though that holder's sign certificates (to day 1400)
    would still keep it; a grant of that holder recorded after the bound is applied."""
    _population(world)
    world.apply([withdrawal(H1, 10, "w-1"), withdrawal(H2, 6, "w-2")])
    due = kept_until(T0 + 300 * DAY, LONGEST)
    assert erase(world, due).summary.withdrawals_erased == 1  # H1's: H2's is kept
    bound_day = (consentkept.granted_before(due, LONGEST) - T0) // DAY
    late = world.apply([consent(H2, bound_day - 1, "g-h2-before")])
    assert (late.summary.quarantined, late.summary.late) == (1, 1)
    world.apply([consent(H2, bound_day + 1, "g-h2-after")])
    assert kept(world, H2) == (at(bound_day + 1), None)


def test_a_withdrawal_of_a_holder_with_no_certificate_yet_is_kept_and_ends_as_one_with_none(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read before the holder's first issuance (records in another order than made): kept, and
    erased at `consentkept.erasable_at` with no sign certificate (the longest period from its
    own recordedAt), found by the agenda; an issuance read meanwhile keeps it as long as its
    certificate would keep a consent, and the grant it outranks grants nothing."""
    holder = "55" * 32
    two_holders(world)
    ap = world.apply([withdrawal(holder, 10, "w-first")])
    assert (ap.summary.applied, ap.summary.quarantined) == (1, 0)
    assert kept(world, holder) == (None, at(10))
    due = kept_until(at(10), LONGEST)
    assert erase(world, due - 10 * DAY).summary.withdrawals_erased == 0  # a scan: listed
    with monkeypatch.context() as m:
        m.setattr(LmdbReader, "consents_kept", _no_scan)
        m.setattr(LmdbReader, "withdrawals_kept", _no_scan)
        assert erase(world, due - 1).summary.withdrawals_erased == 0
        assert erase(world, due).summary.withdrawals_erased == 1
    assert kept(world, holder) == (None, None)
    world.apply([issuance(501, "sign-card-g1", holder, 2, not_after=ts(1500))])
    late = world.apply([consent(holder, 5, "g-outranked")])
    assert (late.summary.quarantined, late.summary.late) == (1, 1)  # the bound: read too late
    assert kept(world, holder) == (None, None)


def test_an_issuance_read_after_a_withdrawal_of_its_holder_keeps_the_withdrawal_longer(
    world: World,
) -> None:
    """The withdrawal's end grows with the holder's sign certificates as a consent's does."""
    holder = "55" * 32
    two_holders(world)
    world.apply([withdrawal(holder, 10, "w-first")])
    world.apply([issuance(501, "sign-card-g1", holder, 2, not_after=ts(600))])
    assert erase(world, kept_until(at(10), LONGEST)).summary.withdrawals_erased == 0
    world.apply([consent(holder, 5, "g-outranked")])  # no erasure bound refuses it yet
    assert kept(world, holder) == (None, at(10))
    due = kept_until(at(600), LONGEST)
    assert erase(world, due - 1).summary.withdrawals_erased == 0
    assert erase(world, due).summary.withdrawals_erased == 1


def _erasures(w: World, days: list[int]) -> dict[int, tuple[int, int]]:
    """(consents erased, withdrawals erased) by an erasure at each instant, from the agenda
    where it is not stale."""
    out = {}
    for d in days:
        s = erase(w, d).summary
        out[d] = (s.consents_erased, s.withdrawals_erased)
    return out


def test_withdrawals_written_after_the_agendas_scan_are_erased_each_at_its_own_instant(
    world: World,
) -> None:
    """Two holders: H1's consent listed on the agenda, then withdrawn after the scan (its
    withdrawal found where the consent was listed, checked again there); H2's withdrawn after the
    scan with no consent listed (found by the watermark or the next scan). Each goes at its own
    instant, not a second before, whatever path each erasure takes."""
    _population(world)
    due1 = kept_until(at(300), LONGEST)  # H1's sign certificates end on day 300
    due2 = kept_until(at(1400), LONGEST)
    erase(world, due1 - 5 * DAY)  # a scan: H1 listed at due1
    world.apply([withdrawal(H1, 250, "w-h1"), withdrawal(H2, 7, "w-h2")])
    assert kept(world, H1) == (None, at(250)) and kept(world, H2) == (None, at(7))
    got = _erasures(world, [due1 - 1, due1, due2 - DAY, due2 - 1, due2])
    assert got == {due1 - 1: (0, 0), due1: (0, 1), due2 - DAY: (0, 0), due2 - 1: (0, 0),
                   due2: (0, 1)}  # fmt: skip
    assert (kept(world, H1), kept(world, H2)) == ((None, None), (None, None))


def test_a_withdrawal_then_a_grant_again_then_the_erasure(world: World) -> None:
    """Granted on day 5, withdrawn on day 10, granted again on day 12 (after the agenda's scan):
    the consent of day 12 is kept and erased at its instant, no withdrawal is left to erase,
    and the bound then refuses the older grants read late."""
    _population(world)
    due = kept_until(at(300), LONGEST)
    erase(world, due - 5 * DAY)
    world.apply([withdrawal(H1, 10, "w-1")])
    world.apply([consent(H1, 12, "g-again")])
    assert kept(world) == (at(12), None)
    assert _erasures(world, [due - 1, due]) == {due - 1: (0, 0), due: (1, 0)}
    late = world.apply([consent(H1, 11, "g-between")])
    assert (late.summary.quarantined, late.summary.late) == (1, 1)
    assert kept(world) == (None, None)


def test_a_holders_consent_and_withdrawal_to_two_verifiers_each_go_at_their_own_instant(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan merges the consents and the withdrawals kept by holder (`_consents_first_due`):
    H2 consents to one verifier (day 5) and withdraws from another (day 1500, after its sign
    certificate's end on day 1400); listed at the earlier instant, the later is listed again
    when it comes, from the agenda alone."""
    world.verifiers = Verifiers(eligible=frozenset({"bank", "shop"}))
    two_holders(world)
    world.apply([consent(H2, 5, "c-bank"), {**withdrawal(H2, 1500, "w-shop"), "verifier": "shop"}])
    due_consent = kept_until(at(1400), LONGEST)
    due_withdrawal = kept_until(at(1500), LONGEST)
    erase(world, due_consent - 5 * DAY)  # a scan
    with monkeypatch.context() as m:
        m.setattr(LmdbReader, "consents_kept", _no_scan)
        m.setattr(LmdbReader, "withdrawals_kept", _no_scan)
        got = _erasures(world, [due_consent - 1, due_consent])
    assert got == {due_consent - 1: (0, 0), due_consent: (1, 0)}
    with world.store.read() as r:
        assert r.withdrawals_of(bytes.fromhex(H2)) == [("shop", at(1500))]
    got = _erasures(world, [due_withdrawal - 1, due_withdrawal])
    assert got == {due_withdrawal - 1: (0, 0), due_withdrawal: (0, 1)}
