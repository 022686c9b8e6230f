"""The four facts (基本4情報) as JPKI sign certificates carry them: OIDs and the era date.

A sign certificate (署名用電子証明書, Act §7, Ord §14) carries the holder's
name, sex, birth date and address as subjectAltName otherName values under the
arc 1.2.392.200149.8.5.5; auth certificates (利用者証明用電子証明書) carry none.
The birth date is one era digit (1 明治, 2 大正, 3 昭和, 4 平成, 5 令和)
followed by the Gregorian date YYYYMMDD. This module owns those encodings.
"""

from __future__ import annotations

from datetime import date
from typing import Final

from cryptography.x509.oid import ObjectIdentifier

JPKI_FACTS_ARC: Final = "1.2.392.200149.8.5.5"
OID_NAME: Final = ObjectIdentifier(JPKI_FACTS_ARC + ".1")
OID_NAME_ALT: Final = ObjectIdentifier(JPKI_FACTS_ARC + ".2")
OID_SEX: Final = ObjectIdentifier(JPKI_FACTS_ARC + ".3")
OID_BIRTH_DATE: Final = ObjectIdentifier(JPKI_FACTS_ARC + ".4")
OID_ADDRESS: Final = ObjectIdentifier(JPKI_FACTS_ARC + ".5")
OID_ADDRESS_ALT: Final = ObjectIdentifier(JPKI_FACTS_ARC + ".6")

# (era digit, first day of the era), newest first.
ERAS: Final = (
    (5, date(2019, 5, 1)),  # 令和
    (4, date(1989, 1, 8)),  # 平成
    (3, date(1926, 12, 25)),  # 昭和
    (2, date(1912, 7, 30)),  # 大正
    (1, date(1868, 1, 25)),  # 明治 (Gregorian start of the calendar reform era)
)
ERA_NAMES: Final = {1: "明治", 2: "大正", 3: "昭和", 4: "平成", 5: "令和"}


class EraDateError(ValueError):
    """An era birth date string that is malformed or inconsistent."""


def era_of(d: date) -> int:
    """The era digit of a Gregorian date."""
    for digit, start in ERAS:
        if d >= start:
            return digit
    raise EraDateError("date before the Meiji era")


def encode_birth_date(d: date) -> str:
    """``date(1980, 1, 2)`` -> ``"319800102"`` (era digit + YYYYMMDD)."""
    return f"{era_of(d)}{d:%Y%m%d}"


def decode_birth_date(s: str) -> date:
    """The Gregorian date of an era birth date string; the era digit must match the date."""
    if len(s) != 9 or not s.isascii() or not s.isdigit():
        raise EraDateError("birth date must be one era digit and YYYYMMDD")
    try:
        d = date(int(s[1:5]), int(s[5:7]), int(s[7:9]))
    except ValueError:
        raise EraDateError("birth date is not a calendar date") from None
    if era_of(d) != int(s[0]):
        raise EraDateError("era digit does not match the date")
    return d
