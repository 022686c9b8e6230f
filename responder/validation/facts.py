"""The four facts (基本4情報) of a JPKI sign certificate, decoded for the verifier (Act §7(1)(3)).

A sign certificate (署名用電子証明書) carries the holder's name, sex, birth date and
address as subjectAltName otherName values under the arc 1.2.392.200149.8.5.5
(`crlbuilder.facts`: .1 name, .2 name in substitute characters, .3 sex, .4 birth date
as era digit + YYYYMMDD, .5 address, .6 address in substitute characters), each value
a DER UTF8String (read with `crlbuilder.der.der_header`, strict DER). A verifier matches them to its customer (Act §19(1)); this module
turns them into named fields, the birth date also as a Gregorian date and its era's name.

Errors never quote the values: they name the field only.
"""

from __future__ import annotations

from datetime import date
from typing import Final

import msgspec
from cryptography import x509

from crlbuilder.der import DerError, der_header
from crlbuilder.facts import (
    ERA_NAMES,
    OID_ADDRESS,
    OID_ADDRESS_ALT,
    OID_BIRTH_DATE,
    OID_NAME,
    OID_NAME_ALT,
    OID_SEX,
    EraDateError,
    decode_birth_date,
)
from crlbuilder.model import Sex


class FactsError(ValueError):
    """The certificate's facts do not follow the profile; the message names the field only."""


class BirthDate(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """生年月日 as the certificate records it, and what it means."""

    encoded: str
    """The certificate's value: era digit + YYYYMMDD (``"319800102"``)."""
    date: date
    """The Gregorian date."""
    era: str
    """The era's name (明治, 大正, 昭和, 平成, 令和)."""


class FourFacts(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    """基本4情報 of a sign certificate: name, sex, birth date, address (Act §7(1)(3))."""

    name: str
    """氏名."""
    sex: str
    """性別: ``male``, ``female`` or ``unknown`` (the certificate's 1, 2, 3)."""
    birth_date: BirthDate
    address: str
    """住所."""
    name_substitute: str | None = None
    """氏名 in substitute characters (代替文字), when the certificate has it (.2)."""
    address_substitute: str | None = None
    """住所 in substitute characters (代替文字), when the certificate has it (.6)."""


_FIELDS: Final = {
    OID_NAME: "name",
    OID_NAME_ALT: "name_substitute",
    OID_SEX: "sex",
    OID_BIRTH_DATE: "birth_date",
    OID_ADDRESS: "address",
    OID_ADDRESS_ALT: "address_substitute",
}
_SEX: Final = {Sex.MALE.value: "male", Sex.FEMALE.value: "female", Sex.UNKNOWN.value: "unknown"}
_REQUIRED: Final = ("name", "sex", "birth_date", "address")


_UTF8STRING: Final = 0x0C


def _utf8(der: bytes, field: str) -> str:
    """The text of one otherName value, a DER UTF8String (the project's strict TLV reader)."""
    try:
        tag, start, end = der_header(der, 0, len(der))
        if tag != _UTF8STRING or end != len(der):
            raise FactsError(f"{field} is not a DER UTF8String")
        return der[start:end].decode("utf-8")
    except (DerError, UnicodeDecodeError):
        raise FactsError(f"{field} is not a DER UTF8String") from None


def decode_facts(cert: x509.Certificate) -> FourFacts | None:
    """The four facts of ``cert``, or None when it carries none (an auth certificate).

    Raises `FactsError` when some facts are present but a required one is missing, a
    value is not a UTF8String, appears twice, or the sex or birth date is not as the
    profile encodes it.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    except ValueError:
        raise FactsError("the subjectAltName extension does not parse") from None
    values: dict[str, str] = {}
    for other in san.get_values_for_type(x509.OtherName):
        field = _FIELDS.get(other.type_id)
        if field is None:
            continue
        if field in values:
            raise FactsError(f"{field} appears twice")
        values[field] = _utf8(other.value, field)
    if not values:
        return None
    missing = [f for f in _REQUIRED if f not in values]
    if missing:
        raise FactsError(f"the sign certificate lacks {', '.join(missing)}")
    sex = _SEX.get(values["sex"])
    if sex is None:
        raise FactsError("sex is not 1, 2 or 3")
    encoded = values["birth_date"]
    try:
        born = decode_birth_date(encoded)
    except EraDateError as e:
        raise FactsError(f"birth_date: {e}") from None
    return FourFacts(
        name=values["name"],
        sex=sex,
        birth_date=BirthDate(encoded=encoded, date=born, era=ERA_NAMES[int(encoded[0])]),
        address=values["address"],
        name_substitute=values.get("name_substitute"),
        address_substitute=values.get("address_substitute"),
    )
