"""The JSON shapes every /v1 route shares (msgspec Structs): problems, certificate references, store references.

Each service module defines its own request and response Structs next to its handler;
what more than one route needs lives here, defined once:

- `Problem`: an RFC 9457 problem details object (``application/problem+json``) naming
  the rule, its article and the offending field, never the data (`responder.v1.problem`
  builds them);
- `CertRef`: one certificate named by issuer + serial, or by the certificate itself
  (DER, base64): exactly one form (`CertRef.form`); the serial is hexadecimal, at most
  20 octets (RFC 5280 §4.1.2.2), so that no JSON number loses precision;
- `StoreRef`: the store's commit sequence and commit time an answer reflects (what the
  party can quote when it keeps the answer as evidence).

Decoding is strict everywhere (``forbid_unknown_fields=True``), and every string and
list has a bound (`msgspec.Meta`), so a request cannot make a worker allocate more than
its body's size suggests. Field names are camelCase on the wire (``rename="camel"``:
snake_case in Python).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Final

import msgspec

ISSUER_ID: Final = r"^[a-z0-9][a-z0-9-]{0,63}$"
"""An issuer generation's id as the PKI manifest and the store name it (``sign-card-g1``)."""
SERIAL_HEX: Final = r"^[0-9A-Fa-f]{1,40}$"
"""A certificate serial number in hexadecimal: at most 40 digits, 20 octets (RFC 5280 §4.1.2.2)."""
CERT_B64_MAX: Final = 16384
"""The longest base64 certificate accepted (12 KiB of DER: JPKI certificates are ~1.5 KiB)."""

IssuerId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        extra_json_schema={"pattern": ISSUER_ID},
        description="issuer generation id, as the PKI manifest names it",
        examples=["sign-card-g2", "auth-card-g1"],
    ),
]
"""Decoding checks the length; the pattern is the issuer table's business (an id it does not
hold is bad input, `responder.v1.problem.bad_input`)."""
SerialHex = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=40,
        extra_json_schema={"pattern": SERIAL_HEX},
        description="serial number, hexadecimal, at most 20 octets (RFC 5280 §4.1.2.2)",
        examples=["1a2b3c"],
    ),
]
"""Decoding checks the length (at most 40 digits: a serial over 20 octets is refused there);
the digits are checked by `serial_int` or, for a batch, `first_bad_serial` (one regular
expression pass over all of them: msgspec's per-value pattern costs 10,000 regex calls)."""
CertificateB64 = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=CERT_B64_MAX,
        description="the certificate itself: DER, base64 (RFC 4648 §4, padded)",
    ),
]


class Problem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """RFC 9457 problem details: what was refused and by which rule, never the data asked about."""

    type: str
    """``urn:jpki-va:problem:<rule>``."""
    title: str
    """The rule's name (``bad_input``, ``unauthorized_service``, ``quota`` ...)."""
    status: int
    detail: str
    """A fixed explanation of the rule; names fields, never values."""
    rule: str
    article: str = ""
    """The article the refusal rests on (``Act §18(1)``), when a law decides it."""
    field: str = ""
    """The offending field of the request (``$.entries[12].serial``), for bad input."""
    remaining: int | None = None
    """A 429 of the agreed provisions per day (``provisions_per_day``, 件数): how many the
    party may still be provided today (JST) on this node, fewer than the call would take."""
    resets_at: datetime | None = msgspec.field(default=None, name="resetsAt")
    """With ``remaining``: when the Japan calendar day turns (the next 00:00 JST) and the
    count starts again."""


class CertRef(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """One certificate: ``issuer`` + ``serial``, or ``certificate`` (exactly one form)."""

    issuer: IssuerId | None = None
    serial: SerialHex | None = None
    certificate: CertificateB64 | None = None

    def form(self) -> str | None:
        """``"serial"`` or ``"certificate"``; None when the reference is not exactly one form
        (the caller refuses it as bad input naming the entry)."""
        if self.certificate is None:
            if self.issuer is not None and self.serial is not None:
                return "serial"
            return None
        if self.issuer is None and self.serial is None:
            return "certificate"
        return None


_SERIAL: Final = re.compile(SERIAL_HEX)
_HEX_ONLY: Final = re.compile(r"[0-9A-Fa-f]*")


def serial_int(text: str) -> int | None:
    """The serial number a `SerialHex` names, or None when it is not 1 to 40 hex digits
    (``int(text, 16)`` alone would take ``0x``, ``_``, signs and spaces; `SERIAL_HEX`'s
    ``$``, the OpenAPI document's, matches before a final line feed in Python: whole
    strings only, ``fullmatch``)."""
    return int(text, 16) if _SERIAL.fullmatch(text) else None


def first_bad_serial(refs: Sequence[CertRef]) -> int | None:
    """The index of the first reference whose serial is not hexadecimal, None when all are.

    Lengths (1 to 40) were checked by decoding, so one pass over the serials joined says
    whether every digit is hexadecimal; only then are they looked at one by one."""
    serials = [r.serial for r in refs if r.serial is not None]
    if _HEX_ONLY.fullmatch("".join(serials)):
        return None
    return next(
        i for i, r in enumerate(refs) if r.serial is not None and not _SERIAL.fullmatch(r.serial)
    )


class StoreRef(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The state of the store an answer reflects."""

    commit: int
    """The store's commit sequence number (``META_COMMIT``): moves with every write of records."""
    committed_at: datetime | None
    """When that commit was written (UTC); null before the first commit."""
