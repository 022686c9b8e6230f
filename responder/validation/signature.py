"""What every signature format yields, and the raw PKCS#1 v1.5 check (RFC 8017 §8.2).

Each format module (`raw`, `cms`, `xmldsig`) turns its input into a `Signed`: the signer
certificate it names, whether the signature verifies with that certificate's key
(`SignatureOutcome`), the signing instant the signature claims (CMS signingTime), the
hash algorithm, and what was signed (XML references). The certificate path, the
status and the verdict are format-independent (`path`, `status`, `verdict`).

Each format reads its input without any RSA operation on the signature: the check itself
is a `Proof` the `Signed` carries, run by `proved` only once the path says a configured
JPKI issuer generation issued the signer certificate for signatures
(`responder.validation.verdict`). So the size and exponent of a key an attacker writes in a
certificate of its own cost nothing; what is left to verify is a key the 機構 certified,
within `MAX_RSA_BITS` and `MAX_RSA_EXPONENT`.

JPKI keys are RSA and the card computes PKCS#1 v1.5 signatures (RSASSA-PKCS1-v1_5);
only SHA-256, SHA-384 and SHA-512 are accepted (SHA-1 is refused as ``unsupported``: a
collision-prone hash does not bind a document). Details never quote input bytes.
"""

from __future__ import annotations

import dataclasses
import enum
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.utils import CryptographyDeprecationWarning

from crlbuilder.der import DerError, der_header


class SignatureOutcome(enum.Enum):
    """The signature check's own outcome."""

    VALID = "valid"
    """Made with the certificate's key over exactly the data (Act §19(1): 署名利用者符号を用いて)."""
    MISMATCH = "mismatch"
    """Does not verify: the data was changed, or another key signed it."""
    MALFORMED = "malformed"
    """The input does not parse, or is inconsistent (a digest of the wrong length...)."""
    UNSUPPORTED = "unsupported"
    """Well-formed, but not something this appliance verifies (an algorithm, several signers)."""
    NOT_CHECKED = "not-checked"
    """Read, but no RSA operation was spent on it: the certificate is not one a configured
    JPKI issuer generation issued for signatures, or the agreement does not cover its family
    (`Signed.proof` not run)."""


HASHES: Final[dict[str, hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
}
"""The hash algorithms accepted, by their name (asn1crypto's and the request's)."""
REFUSED_HASHES: Final = frozenset({"md5", "sha1", "sha224"})


class FormatError(Exception):
    """The input cannot be checked: ``outcome`` is MALFORMED or UNSUPPORTED, ``detail`` says why.

    The detail is a fixed phrase that may name a field or an algorithm, never a value.
    """

    def __init__(self, outcome: SignatureOutcome, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail


def malformed(detail: str) -> FormatError:
    return FormatError(SignatureOutcome.MALFORMED, detail)


def unsupported(detail: str) -> FormatError:
    return FormatError(SignatureOutcome.UNSUPPORTED, detail)


class CertificateOctets(NamedTuple):
    """Two parts of a certificate as it carries them (RFC 5280 §4.1)."""

    tbs: bytes
    """The tbsCertificate, the octets the issuer signed."""
    issuer: bytes
    """The issuer Name."""


Proof = Callable[[], tuple[SignatureOutcome, str]]
"""A signature's cryptographic check, not yet run: (VALID or MISMATCH, detail); raises
`FormatError` for what only the check can tell (a key past the bounds, a signature value
of the wrong length, an XML Id xmlsec1 cannot register)."""


@dataclass(frozen=True, slots=True)
class Signed:
    """One format's result: the signature check and what the signature says about itself."""

    outcome: SignatureOutcome
    detail: str
    certificate: x509.Certificate | None
    """The signer certificate (None when the input did not get that far)."""
    hash: str | None = None
    signing_time: datetime | None = None
    """The signing instant the signature claims (CMS signingTime, a signed attribute)."""
    signed_attributes: bool | None = None
    """CMS: the signature covers signed attributes (messageDigest checked) rather than the
    content (None for the other formats)."""
    attached: bool | None = None
    """CMS and XML: the signed content travels inside the signature (None for raw PKCS#1)."""
    references: tuple[str, ...] = ()
    """XML: the URIs of the references the signature covers (``""`` the whole document)."""
    octets: CertificateOctets | None = None
    """The signer certificate's tbsCertificate and issuer Name as received
    (`certificate_octets`); None: not read, `responder.validation.path.check_path` asks
    cryptography (which re-encodes them)."""
    proof: Proof | None = None
    """The check itself, to run (`proved`) once the signer certificate is known to be a
    JPKI sign certificate; ``outcome`` is NOT_CHECKED while it is pending."""


UNCHECKED: Final = "the signature has not been checked"
"""The detail of a `Signed` whose `Signed.proof` is pending."""


def proved(signed: Signed) -> Signed:
    """``signed`` with its pending check run (the RSA operation); as it is without one."""
    if signed.proof is None:
        return signed
    try:
        outcome, detail = signed.proof()
    except FormatError as e:
        outcome, detail = e.outcome, e.detail
    return dataclasses.replace(signed, outcome=outcome, detail=detail, proof=None)


def failed(error: FormatError, certificate: x509.Certificate | None = None) -> Signed:
    return Signed(error.outcome, error.detail, certificate)


def hash_named(name: str) -> hashes.HashAlgorithm:
    """The accepted hash algorithm of that name; raises `FormatError` otherwise."""
    algorithm = HASHES.get(name)
    if algorithm is not None:
        return algorithm
    if name in REFUSED_HASHES:
        raise unsupported(f"hash algorithm {name} is not accepted (SHA-256, SHA-384, SHA-512 are)")
    raise unsupported("unknown hash algorithm")


def load_certificate(der: bytes, field: str) -> x509.Certificate:
    """A DER certificate; raises MALFORMED naming ``field`` when it does not parse.

    cryptography parses a certificate's parts lazily: every part the checks read is read
    here once, so that a bad one is this item's ``malformed`` and not an exception later.
    """
    try:
        with warnings.catch_warnings():
            # a serial that is not positive warns, then is refused below
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            cert = x509.load_der_x509_certificate(der)
            _ = (cert.issuer, cert.extensions, cert.serial_number)
            _ = (cert.not_valid_before_utc, cert.not_valid_after_utc)
            _ = cert.signature_hash_algorithm
            serial = cert.serial_number
            cert.public_key()
    except UnsupportedAlgorithm:
        raise unsupported(f"{field} uses an algorithm this appliance does not verify") from None
    except Exception:  # ValueError, TypeError, InvalidVersion, DuplicateExtension...: bad input
        raise malformed(f"{field} is not a DER X.509 certificate") from None
    if serial <= 0:
        raise malformed(f"{field} has a serial number that is not positive (RFC 5280 §4.1.2.2)")
    return cert


_CONTEXT_0: Final = 0xA0
_SEQUENCE: Final = 0x30


def certificate_octets(der: bytes) -> CertificateOctets | None:
    """The tbsCertificate and the issuer Name (its field after [0] version, serialNumber
    and signature) of the certificate ``der`` (parsed by cryptography already), as it
    carries them: cryptography re-encodes both on each call and builds a Python object
    per name attribute. None when the octets are not strict DER (the caller then asks
    cryptography)."""
    try:
        _, s, end = der_header(der, 0, len(der))
        _, p, end = der_header(der, s, end)  # tbsCertificate
        tbs = der[s:end]
        tag, _, q = der_header(der, p, end)
        if tag == _CONTEXT_0:  # version
            p = q
        for _ in range(2):  # serialNumber, signature
            _, _, p = der_header(der, p, end)
        tag, _, q = der_header(der, p, end)
    except DerError:
        return None
    return CertificateOctets(tbs, der[p:q]) if tag == _SEQUENCE else None


MAX_CERTIFICATES: Final = 16
"""Certificates a CMS SignedData or an XML signature may carry: each is parsed (240 us for
a JPKI one) until the signer's is found, and a signer's chain is a few."""
MIN_RSA_BITS: Final = 2048
"""The smallest modulus of a signature key by the law: an electronic signature rests on the
difficulty of factoring an integer of 2048 bits or more, the product of two primes of about
the same size (Ord §2 for 電子署名, §38 for 電子利用者証明; `crlbuilder.demo.pki.MIN_KEY_SIZE`).
A sign certificate with a shorter key is off the profile (`responder.validation.path`)."""
MAX_RSA_BITS: Final = 4096
"""The largest modulus verified. The 機構's signature keys are 2048-bit (the demo PKI's and
every profile's default); 4096 leaves room for a later generation. A verification costs
about the square of the modulus's length times the exponent's: a 4096-bit key with the
largest exponent costs about 0.17 ms where a 2048-bit JPKI key costs 0.03, an 8192-bit one
0.8 ms (`bench/bench_verify_worst.py`). Only a certificate a JPKI issuer generation issued
reaches the check (`Signed.proof`), so the bound is the appliance's, not an attacker's."""
MAX_RSA_EXPONENT: Final = (1 << 32) - 1
"""The largest public exponent verified (JPKI keys use 65537): a verification costs one
squaring per exponent bit, and OpenSSL takes an exponent as long as a 3072-bit modulus,
which made each item of a call cost a hundred times a JPKI key's (8 ms, not 0.08)."""


def rsa_key(cert: x509.Certificate) -> rsa.RSAPublicKey:
    """The certificate's RSA public key; JPKI keys are RSA, anything else is unsupported,
    as is a key whose verification would cost more than a JPKI-sized one's many times over.
    Called by a `Proof`, that is once the path is known (`Signed.proof`)."""
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise unsupported("the signer certificate's key is not RSA (JPKI keys are)")
    if key.key_size > MAX_RSA_BITS:
        raise unsupported(f"the signer certificate's RSA key is longer than {MAX_RSA_BITS} bits")
    if key.public_numbers().e > MAX_RSA_EXPONENT:
        raise unsupported("the signer certificate's RSA public exponent is longer than 32 bits")
    return key


def verify_pkcs1(
    key: rsa.RSAPublicKey, signature: bytes, algorithm: hashes.HashAlgorithm, *,
    data: bytes | None = None, digest: bytes | None = None,
) -> bool:  # fmt: skip
    """RSASSA-PKCS1-v1_5 over ``data``, or over its precomputed ``digest`` (exactly one)."""
    if (data is None) == (digest is None):
        raise ValueError("exactly one of data and digest")
    try:
        if digest is not None:
            key.verify(signature, digest, padding.PKCS1v15(), Prehashed(algorithm))
        else:
            assert data is not None
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        return False
    return True
