"""One certificate named in a request (`responder.v1.wire.CertRef`) resolved against the store.

The routes that take a single certificate to find its holder's other certificates
(``/v1/record-info``, ``/v1/corresponding``) find its issuer generation and serial here: by issuer id + serial (hexadecimal), or by
the certificate itself (DER, base64: its issuer by name and authority key identifier,
`responder.v1.status.from_certificate`, the batch route's own). Bad input (both forms or
neither, an issuer not served here, a certificate that does not parse) is a 400 problem
naming the field, never its value. What both routes then refuse alike is here too: a
certificate the 機構 did not issue (404: no holder to answer about), and a store that holds
no issuance records (a group appliance's CRL import: 503). Sans-I/O: reads the store
through `StoreReader`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, NamedTuple

from crlbuilder.store import format as sf
from crlbuilder.store.reader import StoreReader
from responder.v1 import problem
from responder.v1.status import IssuerIndex, from_certificate
from responder.v1.wire import CertRef, Problem, StoreRef

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
    "Or this store was built from CRLs (a group appliance): it holds no issuance records.",
)
"""(status, meaning) of the two for the OpenAPI document (`responder.v1.route.Route.problems`)."""


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
        issuer_id, serial = ref.issuer, int(ref.serial, 16)
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
