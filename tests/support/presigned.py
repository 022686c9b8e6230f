"""The DER a responder sends for a stored pre-signed answer, in tests that read the store."""

from __future__ import annotations

from cryptography import x509

from crlbuilder.ocsp.request import CertId
from crlbuilder.ocsp.response import ResponseSigner, cert_id_der, issuer_hashes
from crlbuilder.store.reader import StoreReader
from responder.flow import presigned_der


def served(r: StoreReader, key: bytes, rs: ResponseSigner, issuer: x509.Certificate) -> bytes:
    """``key``'s stored answer as the responder sends it to a SHA-1 CertID of ``issuer``
    (`responder.flow.presigned_der`: a stem with ``rs``'s certs, or the parts rebuilt)."""
    a, st = r.stored_answer(key), r.status(key)
    assert a is not None and st is not None
    name_hash, key_hash = issuer_hashes(issuer, "sha1")
    serial = int.from_bytes(key[2:], "big")
    cid = CertId(
        "sha1", name_hash, key_hash, serial, cert_id_der("sha1", name_hash, key_hash, serial)
    )
    der = presigned_der(a, st, cid, rs)
    assert der is not None
    return der
