"""What the product must answer for a sample once retention has run (Ord §70(1)(iii)).

`crlbuilder synth` writes each sample's answer as the records decide it; a revocation
record past its retention (per family and category, config/builder.toml) whose
certificate has expired is erased by the build, and OCSP then answers ``unknown`` (the
shipped ``crl.erased_answer``). `as_served` turns a sample's answer into that, computed
here from the dates, independently of the builder's erasure code.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from pathlib import Path

import msgspec
from cryptography import x509

from crlbuilder.config import load_config
from crlbuilder.model import Answer, CertStatus

CONFIG = Path(__file__).resolve().parent.parent / "config" / "builder.toml"
_CRL = load_config(CONFIG).crl
_JST = timezone(timedelta(hours=9))


def erased(a: Answer, population: Path, as_of: datetime) -> bool:
    """Whether the sample's revocation record is past its retention and its certificate expired."""
    if a.status is not CertStatus.REVOKED or a.category is None or a.revoked_at is None:
        return False
    # kept through the JST day ``days`` after the day it was recorded (初日不算入, Civil
    # Code §140-§141): erased from 00:00 JST of the day after that
    days = _CRL.retention_period_days(a.family, a.category)
    last_day = a.revoked_at.astimezone(_JST).date() + timedelta(days=days)
    if as_of < datetime.combine(last_day + timedelta(days=1), time(0), _JST):
        return False
    cert = x509.load_pem_x509_certificate((population / a.cert).read_bytes())
    return cert.not_valid_after_utc <= as_of


def as_served(a: Answer, population: Path, as_of: datetime) -> Answer:
    if not erased(a, population, as_of):
        return a
    assert _CRL.erased_answer == "unknown"
    return msgspec.structs.replace(
        a, status=CertStatus.UNKNOWN, category=None, reason=None, revoked_at=None
    )
