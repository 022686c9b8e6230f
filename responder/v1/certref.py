"""A certificate named in a request (`responder.v1.wire.CertRef`) resolved against the store.

Every route that takes certificates finds their issuer generation here: by issuer id +
serial (hexadecimal), or by the certificate itself (DER, base64: its issuer by subject
name and, among generations sharing a name, authority key identifier; `IssuerIndex`
parses the store's issuer table once per change, per worker; `from_certificate`). The
batch route (`responder.v1.status`) resolves its entries with these; the routes that
take one certificate to find its holder's other certificates (``/v1/record-info``,
``/v1/corresponding``) call `resolve`. Bad input (both forms or
neither, an issuer not served here, a certificate that does not parse) is a 400 problem
naming the field, never its value. What both routes then refuse alike is here too: a
certificate the 機構 did not issue (404: no holder to answer about), and a store that holds
no issuance records (a group appliance's CRL import: 503). Sans-I/O: reads the store
through `StoreReader`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, NamedTuple

from cryptography import x509

from crlbuilder.store import format as sf
from crlbuilder.store.reader import StoreReader
from responder.v1 import problem
from responder.v1.wire import CertRef, Problem, StoreRef, serial_int
from responder.validation.path import anchors

_SERIAL_END: Final = 1 << (8 * sf.SERIAL_BYTES)

UNKNOWN_CERTIFICATE: Final = problem.make(
    404,
    "unknown_certificate",
    "the 機構 issued no such certificate: there is no holder to answer about",
    field="$.certificate",
)
NO_ISSUANCE_RECORDS: Final = problem.make(
    503,
    problem.UNAVAILABLE,
    "this store was built from CRLs (a group appliance): it holds no issuance records",
)
UNKNOWN_CERTIFICATE_DOC: Final = (
    404,
    "`unknown_certificate`: the 機構 issued no such certificate.",
)
NO_ISSUANCE_RECORDS_DOC: Final = (
    503,
    "The answer could not be completed; retry. Or this store was built from CRLs (a group "
    "appliance): it holds no issuance records.",
)
"""(status, meaning) of the two for the OpenAPI document (`responder.v1.route.Route.problems`)."""


@dataclass(frozen=True, slots=True)
class _CertIssuer:
    """An issuer's subject name DER and key identifier, to find a certificate's issuer."""

    name: bytes
    key_id: bytes
    id: str


class IssuerIndex:
    """Per worker: the store's issuer table, parsed once per change (names, key ids)."""

    def __init__(self) -> None:
        self._raw: list[sf.IssuerMeta] | None = None
        self._by_name: dict[bytes, list[_CertIssuer]] = {}

    def by_name(self, reader: StoreReader) -> dict[bytes, list[_CertIssuer]]:
        issuers = reader.issuers()
        if issuers != self._raw:
            by_name: dict[bytes, list[_CertIssuer]] = {}
            for a in anchors(issuers):  # parsed once per issuer record, shared with /v1/verify
                key_id = a.ski
                if key_id is None:
                    key_id = x509.SubjectKeyIdentifier.from_public_key(a.cert.public_key()).digest
                by_name.setdefault(a.subject, []).append(_CertIssuer(a.subject, key_id, a.meta.id))
            self._by_name, self._raw = by_name, issuers
        return self._by_name


def from_certificate(
    ref: CertRef, at: str, index: IssuerIndex, reader: StoreReader
) -> tuple[str, int] | Problem:
    """(issuer id, serial) of a certificate given as base64 DER."""
    assert ref.certificate is not None
    try:
        der = base64.b64decode(ref.certificate, validate=True)
        cert = x509.load_der_x509_certificate(der)
        serial = cert.serial_number
        name = cert.issuer.public_bytes()
    except (binascii.Error, ValueError):
        return problem.bad_input(f"{at}.certificate", "not a DER certificate in base64")
    candidates = index.by_name(reader).get(name, [])
    if len(candidates) > 1:
        try:
            aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
            key_id = aki.value.key_identifier
        except (x509.ExtensionNotFound, ValueError):
            key_id = None
        candidates = [c for c in candidates if c.key_id == key_id]
    if len(candidates) != 1:
        return problem.bad_input(
            f"{at}.certificate", "the certificate's issuer is not one served here"
        )
    return candidates[0].id, serial


class Resolved(NamedTuple):
    """A certificate's issuer generation and its status key (`store.format.status_key`)."""

    issuer: sf.IssuerMeta
    key: bytes


def resolve(ref: CertRef, at: str, index: IssuerIndex, reader: StoreReader) -> Resolved | Problem:
    """The issuer generation and status key of ``ref`` (``at``: its path in the request)."""
    field = "issuer"
    if ref.certificate is None:
        if ref.issuer is None or ref.serial is None:
            return problem.bad_input(
                at, "name a certificate by issuer and serial, or by certificate"
            )
        number = serial_int(ref.serial)
        if number is None:
            return problem.bad_input(f"{at}.serial", "not a hexadecimal serial number")
        issuer_id, serial = ref.issuer, number
    else:
        if ref.issuer is not None or ref.serial is not None:
            return problem.bad_input(
                at, "name a certificate by issuer and serial, or by certificate"
            )
        got = from_certificate(ref, at, index, reader)
        if isinstance(got, Problem):
            return got
        issuer_id, serial = got
        field = "certificate"
    meta = next((m for m in reader.issuers() if m.id == issuer_id), None)
    if meta is None:
        return problem.bad_input(f"{at}.{field}", "not an issuer served here")
    if not 0 < serial < _SERIAL_END:
        return problem.bad_input(f"{at}.{field}", "a serial number is positive, at most 20 octets")
    return Resolved(meta, sf.status_key(meta.index, serial))


def issuer_ids(reader: StoreReader) -> dict[int, str]:
    """Issuer index -> issuer generation id, for naming the certificates an answer lists."""
    return {m.index: m.id for m in reader.issuers()}


def store_ref(reader: StoreReader) -> StoreRef:
    """The store state an answer reflects: its commit sequence and commit time."""
    committed = reader.committed_at()
    return StoreRef(
        commit=reader.generation().commit,
        committed_at=datetime.fromtimestamp(committed, UTC) if committed else None,
    )
