"""`crlbuilder.validity`: a certificate's validity period, both ends included, in whole seconds
(RFC 5280 §4.1.2.5), and signature validation's use of it (`responder.validation.verdict`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from crlbuilder.validity import end_exclusive, expired_at, not_yet_valid_at, second, valid_at
from responder.validation.result import Outcome
from responder.validation.verdict import _validity
from tests.support.pki import certificate, rsa_key

NB, NA = 1_700_000_000, 1_700_086_399


def test_both_ends_are_inside_in_whole_seconds() -> None:
    assert not valid_at(NB, NA, NB - 1) and not_yet_valid_at(NB, NB - 0.001)
    assert valid_at(NB, NA, NB) and valid_at(NB, NA, NA) and valid_at(NB, NA, NA + 0.999)
    assert not valid_at(NB, NA, NA + 1) and expired_at(NA, NA + 1)
    assert not expired_at(NA, NA + 0.5)
    at = datetime.fromtimestamp(NA, UTC)
    assert valid_at(NB, at, at + timedelta(microseconds=999_999))
    assert expired_at(at, at + timedelta(seconds=1))
    assert second(at + timedelta(milliseconds=500)) == NA
    assert end_exclusive(at) == NA + 1


def test_a_signature_made_within_the_notafters_second_is_within_the_validity() -> None:
    """/v1/verify: a signing instant (or now) inside notAfter's second, after its first
    instant (a GeneralizedTime with a fraction, or the clock), was taken as past the
    validity (``instant > notAfter``)."""
    key = rsa_key()
    cert = certificate("signer", key, not_before=datetime.fromtimestamp(NB, UTC), days=1)
    end = cert.not_valid_after_utc
    inside = end + timedelta(milliseconds=500)
    got = _validity(cert, inside, "signingTime", inside)
    assert got.outcome is Outcome.PASS and got.detail == "valid at the signing instant", got
    got = _validity(cert, end, "signingTime", end + timedelta(seconds=1))
    assert got.outcome is Outcome.PASS and "expired since" in got.detail
    got = _validity(cert, end + timedelta(seconds=1), "signingTime", end + timedelta(seconds=1))
    assert got.outcome is Outcome.FAIL
