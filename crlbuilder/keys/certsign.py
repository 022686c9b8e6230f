"""A certificate signed by a key that cryptography cannot hold (a key in a token, Ord §73(4)).

cryptography's ``CertificateBuilder.sign`` needs the private key object; a key generated
inside a PKCS#11 token (発行者署名符号 on the HSM, never extractable) only offers "sign
these bytes". `sign_certificate` builds the to-be-signed certificate with cryptography
(signed once by a throwaway key, only to serialise it), has the real key sign the
tbsCertificate bytes (sha256WithRSAEncryption, RFC 4055 §5) and puts that signature in
place of the throwaway one with asn1crypto (RFC 5280 §4.1: tbsCertificate and
signatureAlgorithm are kept byte for byte, only signatureValue changes).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["draft_certificate", "sign_certificate", "with_signature"]


@cache
def _throwaway() -> rsa.RSAPrivateKey:
    """The key whose signature is discarded; generated once per process."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def draft_certificate(builder: x509.CertificateBuilder) -> x509.Certificate:
    """``builder``'s certificate with a throwaway signature: its TBS is final, its signature not."""
    return builder.sign(_throwaway(), hashes.SHA256())


def with_signature(draft: x509.Certificate, signature: bytes) -> x509.Certificate:
    """``draft`` with ``signature`` (sha256WithRSAEncryption of its TBS) in place of its own."""
    cert = asn1_x509.Certificate.load(draft.public_bytes(serialization.Encoding.DER))
    cert["signature_value"] = signature
    return x509.load_der_x509_certificate(cert.dump(force=False))


def sign_certificate(
    builder: x509.CertificateBuilder, sign: Callable[[bytes], bytes]
) -> x509.Certificate:
    """``builder``'s certificate, signed sha256WithRSAEncryption by ``sign`` (RSASSA-PKCS1-v1_5).

    ``sign`` receives the whole DER tbsCertificate (not a digest), as `Signer.sign` does.
    """
    draft = draft_certificate(builder)
    return with_signature(draft, sign(draft.tbs_certificate_bytes))
