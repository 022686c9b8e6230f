"""The legal rules, each test naming the article it checks."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from crlbuilder import rules
from crlbuilder.model import (
    Category,
    ChangeKind,
    DeletionCause,
    Fact,
    Family,
    MinorCorrection,
    Reason,
    RequestReason,
    ResidentChange,
)

T0 = datetime(2025, 4, 1, 0, 0, tzinfo=UTC)
HOLDER = "ab" * 32


def change(kind: ChangeKind, **kw: object) -> ResidentChange:
    return ResidentChange(id="c1", recorded_at=T0, holder=HOLDER, change=kind, **kw)  # type: ignore[arg-type]


# --- validity: Ord §13, §49 ------------------------------------------------------


def test_ord_13_1_fifth_birthday_after_issuance() -> None:
    end = rules.validity_end(
        family=Family.SIGN_CARD, issued=date(2024, 6, 1), birth_date=date(1980, 9, 15),
        renewal=False, card_expiry=date(2034, 9, 15),
    )  # fmt: skip
    # birthdays after 1 June 2024: 2024-09-15 (1st) ... 2028-09-15 (5th)
    assert end == date(2028, 9, 15)


def test_ord_13_1_issued_on_birthday_counts_from_the_next() -> None:
    # "発行の日後の…五回目の誕生日": strictly after the day of issuance
    assert rules.nth_birthday_after(date(1990, 6, 1), date(2024, 6, 1), 5) == date(2029, 6, 1)
    assert rules.nth_birthday_after(date(1990, 6, 2), date(2024, 6, 1), 5) == date(2028, 6, 2)


def test_ord_13_1_renewal_within_three_months_gets_sixth_birthday() -> None:
    end = rules.validity_end(
        family=Family.SIGN_CARD, issued=date(2024, 7, 1), birth_date=date(1980, 9, 15),
        renewal=True, card_expiry=date(2040, 1, 1),
    )  # fmt: skip
    assert end == date(2029, 9, 15)


def test_ord_13_1_renewal_window_is_less_than_three_months() -> None:
    end = date(2029, 9, 15)
    assert rules.is_renewal(end, date(2029, 6, 16))
    assert not rules.is_renewal(end, date(2029, 6, 15))
    assert not rules.is_renewal(end, date(2029, 9, 16))
    # a month with fewer days: 31 May less three months is clamped to 28/29 February
    assert rules.months_before(date(2029, 5, 31), 3) == date(2029, 2, 28)


def test_ord_13_2_sign_capped_by_auth_certificate() -> None:
    end = rules.validity_end(
        family=Family.SIGN_CARD, issued=date(2024, 6, 1), birth_date=date(1980, 9, 15),
        renewal=False, card_expiry=date(2034, 9, 15), auth_cert_end=date(2027, 1, 31),
    )  # fmt: skip
    assert end == date(2027, 1, 31)


def test_ord_49_auth_not_capped_by_sign_certificate() -> None:
    end = rules.validity_end(
        family=Family.AUTH_CARD, issued=date(2024, 6, 1), birth_date=date(1980, 9, 15),
        renewal=False, card_expiry=date(2034, 9, 15), auth_cert_end=date(2025, 1, 1),
    )  # fmt: skip
    assert end == date(2028, 9, 15)


def test_ord_13_3_and_49_2_capped_by_card_expiry() -> None:
    for fam in (Family.SIGN_CARD, Family.AUTH_CARD):
        end = rules.validity_end(
            family=fam, issued=date(2024, 6, 1), birth_date=date(1980, 9, 15),
            renewal=False, card_expiry=date(2026, 3, 31),
        )  # fmt: skip
        assert end == date(2026, 3, 31)


def test_act_16_4_mobile_within_card_certificate() -> None:
    end = rules.validity_end(
        family=Family.SIGN_MOBILE, issued=date(2024, 6, 1), birth_date=date(1980, 9, 15),
        renewal=False, card_expiry=date(2034, 1, 1), card_cert_end=date(2028, 2, 1),
    )  # fmt: skip
    assert end == date(2028, 2, 1)
    with pytest.raises(ValueError, match="card certificate"):
        rules.validity_end(
            family=Family.AUTH_MOBILE, issued=date(2024, 6, 1), birth_date=date(1980, 9, 15),
            renewal=False, card_expiry=date(2034, 1, 1),
        )  # fmt: skip


def test_ord_13_leap_day_birthday_in_common_year() -> None:
    # born 29 Feb: the birthday of a common year is 28 Feb (年齢計算ニ関スル法律)
    assert rules.nth_birthday_after(date(2000, 2, 29), date(2024, 3, 1), 1) == date(2025, 2, 28)
    assert rules.nth_birthday_after(date(2000, 2, 29), date(2024, 3, 1), 4) == date(2028, 2, 29)


def test_not_after_is_end_of_the_japanese_day() -> None:
    assert rules.end_of_day_utc(date(2029, 9, 15)) == datetime(2029, 9, 15, 14, 59, 59, tzinfo=UTC)


def test_japan_days_are_cut_by_the_one_jst() -> None:
    """The epoch-second offset (ledger days, daily quotas, synth) is derived from `rules.JST`."""
    assert rules.JST.utcoffset(None) == timedelta(hours=9)  # no DST
    assert rules.JST_OFFSET == 9 * 3600
    start = int(rules.start_of_day_utc(date(2026, 4, 1)).timestamp())
    assert (start + rules.JST_OFFSET) % 86400 == 0
    assert (start - 1 + rules.JST_OFFSET) // 86400 == (start + rules.JST_OFFSET) // 86400 - 1


# --- Act §12 with Ord §20: sign certificates -----------------------------------------


@pytest.mark.parametrize("fact", list(Fact))
def test_act_12_1_any_four_fact_change_revokes_sign(fact: Fact) -> None:
    assert rules.sign_revoked_by(change(ChangeKind.FACT_CHANGE, fact=fact), issued_at=T0)


@pytest.mark.parametrize("correction", list(MinorCorrection))
def test_ord_20_minor_corrections_revoke_nothing(correction: MinorCorrection) -> None:
    c = change(ChangeKind.MINOR_CORRECTION, correction=correction)
    assert correction.article.startswith("Ord §20(")
    assert not rules.sign_revoked_by(c, issued_at=T0)
    assert not rules.auth_revoked_by(c)


@pytest.mark.parametrize("cause", list(DeletionCause))
def test_act_12_2_record_deletion_revokes_sign(cause: DeletionCause) -> None:
    assert rules.sign_revoked_by(change(ChangeKind.RECORD_DELETION, cause=cause), issued_at=T0)


def test_act_12_2_abroad_deletion_spares_certificate_issued_after_the_notice() -> None:
    notice = rules.MoveOutNotice(notified_at=T0, planned_date=date(2025, 4, 20), abroad=True)
    deletion = change(ChangeKind.RECORD_DELETION, cause=DeletionCause.ABROAD_MOVE_OUT)
    issued_in_window = T0 + timedelta(days=3)
    issued_before = T0 - timedelta(days=300)
    assert not rules.sign_revoked_by(deletion, issued_at=issued_in_window, notice=notice)
    assert rules.sign_revoked_by(deletion, issued_at=issued_before, notice=notice)
    # a domestic notice gives no such exception
    domestic = notice._replace(abroad=False)
    assert rules.sign_revoked_by(deletion, issued_at=issued_in_window, notice=domestic)


def test_act_12_3_koseki_annex_deletion_revokes_sign() -> None:
    assert rules.sign_revoked_by(change(ChangeKind.KOSEKI_ANNEX_DELETION), issued_at=T0)


def test_act_12_notices_alone_revoke_nothing() -> None:
    out = change(ChangeKind.MOVE_OUT_NOTICE, planned_date=date(2025, 5, 1))
    assert not rules.sign_revoked_by(out, issued_at=T0)
    assert not rules.sign_revoked_by(change(ChangeKind.MOVE_IN_NOTICE), issued_at=T0)


# --- Act §31: auth certificates ---------------------------------------------------


@pytest.mark.parametrize("fact", list(Fact))
def test_act_31_fact_changes_do_not_revoke_auth(fact: Fact) -> None:
    assert not rules.auth_revoked_by(change(ChangeKind.FACT_CHANGE, fact=fact))


def test_act_31_1_deletion_revokes_auth_except_by_move_out_notice() -> None:
    for cause, revokes in [
        (DeletionCause.DEATH, True),
        (DeletionCause.EX_OFFICIO, True),
        (DeletionCause.MOVE_OUT, False),
        (DeletionCause.ABROAD_MOVE_OUT, False),
    ]:
        assert rules.auth_revoked_by(change(ChangeKind.RECORD_DELETION, cause=cause)) is revokes


def test_act_31_3_koseki_annex_deletion_revokes_auth() -> None:
    assert rules.auth_revoked_by(change(ChangeKind.KOSEKI_ANNEX_DELETION))


def test_act_31_2_thirty_days_after_planned_date() -> None:
    planned = date(2025, 5, 10)
    at = rules.move_out_lapse(planned)
    # 30 days from the planned date have passed at 00:00 JST of 10 June (= 9 June 15:00 UTC)
    assert at == datetime(2025, 6, 9, 15, 0, tzinfo=UTC)
    notice = rules.MoveOutNotice(notified_at=T0, planned_date=planned, abroad=False)
    issued = T0 - timedelta(days=400)
    assert not rules.lapse_revokes(notice, issued_at=issued, as_of=at - timedelta(seconds=1))
    assert rules.lapse_revokes(notice, issued_at=issued, as_of=at)


def test_act_31_2_a_notice_ends_the_clock_from_the_move_out_until_the_lapse_is_due() -> None:
    """A 転入届 (or a later 転出届) made from the 転出届 itself up to the second before the due
    instant ends its 30-day clock; one made earlier follows another move, one made at the due
    instant comes too late."""
    planned = date(2025, 5, 10)
    notice = rules.MoveOutNotice(notified_at=T0, planned_date=planned, abroad=False)
    due = rules.move_out_lapse(planned)
    assert not rules.ends_before_lapse(notice, T0 - timedelta(seconds=1))
    assert rules.ends_before_lapse(notice, T0)
    assert rules.ends_before_lapse(notice, due - timedelta(seconds=1))
    assert not rules.ends_before_lapse(notice, due)


def test_act_31_2_lapse_takes_the_certificates_issued_before_it_fell_due() -> None:
    """Written late (the notice's record came late), the lapse still takes only what the holder
    had when it fell due: a certificate issued at or after the due instant is not under it."""
    planned = date(2025, 5, 10)
    notice = rules.MoveOutNotice(notified_at=T0, planned_date=planned, abroad=False)
    due = rules.move_out_lapse(planned)
    late = due + timedelta(days=30)
    assert rules.lapse_revokes(notice, issued_at=due - timedelta(seconds=1), as_of=late)
    assert not rules.lapse_revokes(notice, issued_at=due, as_of=late)


def test_act_31_2_abroad_notice_spares_certificate_issued_in_window() -> None:
    planned = date(2025, 5, 10)
    notice = rules.MoveOutNotice(notified_at=T0, planned_date=planned, abroad=True)
    late = rules.move_out_lapse(planned) + timedelta(days=1)
    assert not rules.lapse_revokes(notice, issued_at=T0 + timedelta(days=1), as_of=late)
    assert rules.lapse_revokes(notice, issued_at=T0 - timedelta(days=1), as_of=late)


def test_resident_change_never_applies_to_mobile() -> None:
    # mobile certificates have no 異動 category (Act §16-10..§16-13, §35-10..§35-13)
    c = change(ChangeKind.RECORD_DELETION, cause=DeletionCause.DEATH)
    for fam in (Family.SIGN_MOBILE, Family.AUTH_MOBILE):
        assert not rules.resident_change_revokes(fam, c, issued_at=T0)
        assert not Category.RESIDENT_CHANGE.applies_to(fam)
    assert rules.resident_change_revokes(Family.SIGN_CARD, c, issued_at=T0)
    assert rules.resident_change_revokes(Family.AUTH_CARD, c, issued_at=T0)


# --- cascade: Act §16-13, §35-13 ------------------------------------------------------


@pytest.mark.parametrize(
    "category",
    [Category.REQUEST, Category.RESIDENT_CHANGE, Category.RECORDING_ERROR, Category.CA_COMPROMISE],
)
def test_act_16_13_and_35_13_card_revocation_cascades(category: Category) -> None:
    assert rules.cascade(Family.SIGN_CARD, category) == (
        Family.SIGN_MOBILE, Category.CARD_CASCADE, Reason.CESSATION_OF_OPERATION,
    )  # fmt: skip
    assert rules.cascade(Family.AUTH_CARD, category) == (
        Family.AUTH_MOBILE, Category.CARD_CASCADE, Reason.CESSATION_OF_OPERATION,
    )  # fmt: skip


def test_act_16_13_mobile_revocation_does_not_cascade() -> None:
    assert rules.cascade(Family.SIGN_MOBILE, Category.REQUEST) is None
    assert rules.cascade(Family.SIGN_CARD, Category.CARD_CASCADE) is None


def test_category_articles_per_family() -> None:
    assert Category.CARD_CASCADE.articles == {
        Family.SIGN_MOBILE: "Act §16-13", Family.AUTH_MOBILE: "Act §35-13",
    }  # fmt: skip
    assert Category.RESIDENT_CHANGE.articles == {
        Family.SIGN_CARD: "Act §12", Family.AUTH_CARD: "Act §31",
    }  # fmt: skip
    assert Category.CA_COMPROMISE.articles[Family.AUTH_MOBILE] == "Act §35-12"


# --- CA compromise: Act §14, §16-12, §33, §35-12 --------------------------------------


def test_act_14_compromise_revokes_every_valid_certificate_of_that_generation() -> None:
    later = T0 + timedelta(days=100)
    assert rules.compromise_revokes(
        cert_issuer="sign-card-g1", compromised_issuer="sign-card-g1", not_after=later, at=T0
    )
    assert not rules.compromise_revokes(
        cert_issuer="sign-card-g2", compromised_issuer="sign-card-g1", not_after=later, at=T0
    )
    assert not rules.compromise_revokes(
        cert_issuer="sign-card-g1", compromised_issuer="sign-card-g1",
        not_after=T0 - timedelta(days=1), at=T0,
    )  # fmt: skip


# --- requests: Act §11 ---------------------------------------------------------------


def test_act_11_request_reasons() -> None:
    assert rules.request_revocation(RequestReason.KEY_COMPROMISE) == (
        Category.REQUEST,
        Reason.KEY_COMPROMISE,
    )
    assert rules.request_revocation(RequestReason.LOSS)[1] is Reason.KEY_COMPROMISE
    assert rules.request_revocation(RequestReason.RENEWAL)[1] is Reason.SUPERSEDED
    assert rules.request_revocation(RequestReason.APPLICATION)[1] is Reason.CESSATION_OF_OPERATION
    assert rules.request_revocation(RequestReason.UNDELIVERED)[1] is Reason.UNSPECIFIED


def test_every_request_reason_has_its_j_lis_reason_code() -> None:
    """DOMAIN §3's mapping of J-LIS's published practice, for every 申請 / 届出 the record
    names: a damaged card and a card that lost effect (番号利用法 §17(6), taken as a report
    that the medium is unusable, Ord §17, §53) are no longer used (cessationOfOperation); the
    category stays 失効申請等情報 (Act §11, §16-10, §30, §35-10) beside the code."""
    expected = {
        RequestReason.APPLICATION: Reason.CESSATION_OF_OPERATION,
        RequestReason.RENEWAL: Reason.SUPERSEDED,
        RequestReason.KEY_COMPROMISE: Reason.KEY_COMPROMISE,
        RequestReason.LOSS: Reason.KEY_COMPROMISE,
        RequestReason.DAMAGE: Reason.CESSATION_OF_OPERATION,
        RequestReason.UNUSABLE: Reason.CESSATION_OF_OPERATION,
        RequestReason.UNDELIVERED: Reason.UNSPECIFIED,
    }
    assert set(expected) == set(RequestReason)
    for reason, code in expected.items():
        assert rules.request_revocation(reason) == (Category.REQUEST, code), reason


# --- double issuance: Act §6, §16-5, §25, §35-5 ---------------------------------------


def test_act_6_double_issuance_refused() -> None:
    held = [rules.HeldCert(serial=1, not_after=T0 + timedelta(days=10), revoked_at=None)]
    assert rules.double_issuance(held, T0) == held[0]


def test_act_6_new_certificate_after_revocation_or_expiry() -> None:
    revoked = rules.HeldCert(
        serial=1, not_after=T0 + timedelta(days=10), revoked_at=T0 - timedelta(hours=1)
    )
    expired = rules.HeldCert(serial=2, not_after=T0 - timedelta(days=1), revoked_at=None)
    assert rules.double_issuance([revoked, expired], T0) is None
    revoked_later = revoked._replace(revoked_at=T0 + timedelta(hours=1))
    assert rules.double_issuance([revoked_later], T0) == revoked_later


# --- holder key: Act §44, §45 ----------------------------------------------------------


def test_act_44_holder_key_is_keyed_hash_not_the_code() -> None:
    k = rules.holder_key(b"s" * 32, "12345678901")
    assert len(k) == 64 and "12345678901" not in k
    assert k != rules.holder_key(b"t" * 32, "12345678901")
    with pytest.raises(ValueError):
        rules.holder_key(b"s" * 32, "1234")


def test_act_12_31_change_takes_no_certificate_issued_after_it() -> None:
    """A change takes the card certificates issued no later than it (``recorded_at``), never one
    issued on the changed record (whichever record the builder reads first)."""
    for c in (
        change(ChangeKind.FACT_CHANGE, fact=Fact.ADDRESS),
        change(ChangeKind.RECORD_DELETION, cause=DeletionCause.DEATH),
    ):
        for fam in (Family.SIGN_CARD, Family.AUTH_CARD):
            assert not rules.resident_change_revokes(fam, c, issued_at=T0 + timedelta(seconds=1))
        assert rules.resident_change_revokes(Family.SIGN_CARD, c, issued_at=T0)
