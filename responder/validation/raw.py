"""A raw PKCS#1 v1.5 signature, as the card's JPKI application returns it (RFC 8017 §8.2).

The card signs a DigestInfo the client computed; the verifier holds the signer certificate
and either the signed data or its digest and hash algorithm. The digest's length must be
the algorithm's (a wrong one is ``malformed``, never silently truncated).
"""

from __future__ import annotations

from responder.validation.request import Pkcs1Item
from responder.validation.signature import (
    UNCHECKED,
    FormatError,
    SignatureOutcome,
    Signed,
    certificate_octets,
    failed,
    hash_named,
    load_certificate,
    malformed,
    proved,
    rsa_key,
    verify_pkcs1,
)


def check_pkcs1(item: Pkcs1Item) -> Signed:
    """The signature check of one ``pkcs1`` item (read, then proved)."""
    return proved(read_pkcs1(item))


def read_pkcs1(item: Pkcs1Item) -> Signed:
    """One ``pkcs1`` item read, its RSA check left pending (`Signed.proof`)."""
    try:
        cert = load_certificate(item.certificate, "certificate")
    except FormatError as e:
        return failed(e)
    try:
        if (item.data is None) == (item.digest is None):
            raise malformed("give exactly one of data and digest")
        if item.digest is not None and item.hash is None:
            raise malformed("a digest needs its hash algorithm (hash)")
        name = item.hash or "sha256"
        algorithm = hash_named(name)
        if item.digest is not None and len(item.digest) != algorithm.digest_size:
            raise malformed(f"digest is not {algorithm.digest_size} octets long, as {name} is")
    except FormatError as e:
        return failed(e, cert)

    def proof() -> tuple[SignatureOutcome, str]:
        key = rsa_key(cert)
        if len(item.signature) != (key.key_size + 7) // 8:
            raise malformed("signature is not as long as the key's modulus")
        if verify_pkcs1(key, item.signature, algorithm, data=item.data, digest=item.digest):
            return SignatureOutcome.VALID, "the signature verifies with the certificate's key"
        return (
            SignatureOutcome.MISMATCH,
            "the signature does not verify with the certificate's key over this data",
        )

    return Signed(
        SignatureOutcome.NOT_CHECKED, UNCHECKED, cert, hash=name,
        octets=certificate_octets(item.certificate), proof=proof,
    )  # fmt: skip
