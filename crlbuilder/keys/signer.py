"""The signer interface (署名装置): who signs CRLs and OCSP answers, and with what.

A `Signer` holds one signing key and its certificate: the CA key that signs
失効情報ファイル (CRLs, Act §16, §16-15, §35, §35-15), or a delegated OCSP
signer's key (id-kp-OCSPSigning). Callers see only `certificate`, `sign` and
`signature_algorithm_der`, so the key can live in a PEM file (`PemSigner`,
mode 0600) or in an HSM behind PKCS#11 (`crlbuilder.keys.pkcs11.Pkcs11Signer`;
Ord §73, §74: signing keys on dedicated, access-controlled equipment) without
changing the encoders. `load_signer` picks the back end by the key reference:
a ``pkcs11:`` URI (RFC 7512) or a PEM file path.

Every signature is sha256WithRSAEncryption (RSASSA-PKCS1-v1_5 with SHA-256),
as JPKI uses; keys are RSA with a modulus of 2048 bits or more (Ord §2, §38).
Key material is never logged and never appears in an error message: errors
name the file, not its contents.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from crlbuilder.keyref import MIN_RSA_BITS, is_pkcs11_uri

__all__ = [
    "EXIT_PIN_REFUSED",
    "MIN_RSA_BITS",
    "SHA256_WITH_RSA_DER",
    "PemSigner",
    "PinRefused",
    "Signer",
    "SignerError",
    "load_certificate",
    "load_signer",
    "read_private_file",
    "spki_der",
]

log = logging.getLogger(__name__)

SHA256_WITH_RSA_DER: Final = bytes.fromhex("300d06092a864886f70d01010b0500")
"""DER AlgorithmIdentifier of sha256WithRSAEncryption (1.2.840.113549.1.1.11, NULL params).

RFC 4055 §5 requires the explicit NULL parameters; this is the exact encoding
cryptography and openssl emit.
"""


class SignerError(Exception):
    """A signing key or certificate cannot be used (wrong mode, type, size, or mismatch)."""


class PinRefused(SignerError):
    """The token refused the PIN (wrong, or the token's user PIN locked): starting again
    would try the same PIN again, and each wrong one brings the token nearer to locking it."""


EXIT_PIN_REFUSED: Final = 5
"""``crlbuilder build``'s and ``responder serve``'s exit status when a token refused the PIN
at start (`PinRefused`): not 2 (a refused configuration, but also a token not there yet,
which a restart cures), so that the units do not start them again for it
(``RestartPreventExitStatus=5``): a restart loop would give the wrong PIN every few seconds
until the HSM locked its user PIN, and every key in it."""


@runtime_checkable
class Signer(Protocol):
    """Anything that signs with one key whose certificate is known.

    ``sign`` returns an RSASSA-PKCS1-v1_5 SHA-256 signature of ``data`` (the
    whole to-be-signed bytes, not a digest). ``signature_algorithm_der`` is the
    DER AlgorithmIdentifier of that signature, for structures encoded by hand
    (the CRL's tbsCertList.signature and signatureAlgorithm).
    """

    @property
    def certificate(self) -> x509.Certificate: ...

    @property
    def signature_algorithm_der(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


class PemSigner:
    """A `Signer` whose RSA key comes from an unencrypted PEM file (mode 0600).

    Build it with `PemSigner.from_files`, which enforces the file mode and
    checks that the key belongs to the certificate; the constructor does the
    same key checks for a key already in memory (tests, key ceremonies).
    """

    __slots__ = ("_certificate", "_key")

    def __init__(self, key: rsa.RSAPrivateKey, certificate: x509.Certificate) -> None:
        if not isinstance(key, rsa.RSAPrivateKey):
            raise SignerError("the signing key is not an RSA key")
        if key.key_size < MIN_RSA_BITS:
            raise SignerError(
                f"the signing key is RSA-{key.key_size}; at least RSA-{MIN_RSA_BITS} is required"
            )
        if spki_der(key.public_key()) != spki_der(certificate.public_key()):
            raise SignerError("the signing key does not match the certificate's public key")
        _check_signs(key, certificate)
        self._key = key
        self._certificate = certificate

    @classmethod
    def from_files(
        cls, key_path: str | os.PathLike[str], cert_path: str | os.PathLike[str]
    ) -> PemSigner:
        """Load an unencrypted PEM RSA key and its PEM (or DER) certificate.

        Refuses a key file whose mode lets group or others read, write or
        execute it (it must be 0600 or stricter), a key that is not RSA or is
        shorter than 2048 bits, an encrypted key, a key that does not match
        the certificate, and one whose signatures the certificate does not
        verify (`_check_signs`). Errors name the file, never the key.
        """
        key_file = Path(key_path)
        cert_file = Path(cert_path)
        key_pem = read_private_file(key_file)
        try:
            # The load's own RSA key check (primality of p and q ...) costs 50 ms for a
            # 2048-bit key, 310 ms for 4096, at every start of every process that signs;
            # `_check_signs` (a signature the certificate verifies, 1-7 ms) is what matters.
            key = serialization.load_pem_private_key(
                key_pem, password=None, unsafe_skip_rsa_key_validation=True
            )
        except TypeError:  # encrypted key and no password
            raise SignerError(
                f"{key_file}: the key is encrypted; an unencrypted PEM key is expected"
            ) from None
        except ValueError:
            raise SignerError(f"{key_file}: not a readable PEM private key") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise SignerError(f"{key_file}: not an RSA private key")
        certificate = load_certificate(cert_file)
        try:
            signer = cls(key, certificate)
        except SignerError as exc:
            raise SignerError(f"{key_file} with {cert_file}: {exc}") from None
        log.info("loaded signing key %s for certificate %s", key_file, cert_file)
        return signer

    @property
    def certificate(self) -> x509.Certificate:
        return self._certificate

    @property
    def signature_algorithm_der(self) -> bytes:
        return SHA256_WITH_RSA_DER

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def __repr__(self) -> str:
        return f"PemSigner(certificate serial {self._certificate.serial_number:#x})"


def load_signer(
    key_ref: str | os.PathLike[str],
    cert_path: str | os.PathLike[str],
    *,
    outage_ok: bool = False,
) -> Signer:
    """The signer for a key reference: a ``pkcs11:`` URI opens the key in its token
    (`crlbuilder.keys.pkcs11.Pkcs11Signer`), anything else is a PEM file (`PemSigner`).

    Either way the key is checked against the certificate now, so a wrong PIN, a
    missing token or key, or a key that does not match shows at start. ``outage_ok``
    (for a process forked after that check) accepts a token that cannot be reached
    now: its signatures fail, and are retried, until it is back.
    """
    ref = os.fspath(key_ref)
    if is_pkcs11_uri(ref):
        from crlbuilder.keys.pkcs11 import Pkcs11Signer

        return Pkcs11Signer.open(ref, cert_path, outage_ok=outage_ok)
    return PemSigner.from_files(ref, cert_path)


_PROBE: Final = b"jpki-va signer check"
"""What `_check_signs` signs: any fixed bytes."""


def _check_signs(key: rsa.RSAPrivateKey, certificate: x509.Certificate) -> None:
    """Refuse a key whose signatures its certificate does not verify: one signature of a fixed
    probe checked with the certificate's public key (a pairwise consistency test, as FIPS
    140-3 asks of a key pair). It stands in for the RSA key check a PEM load would make,
    which costs 50-300 ms a key: a damaged private part (d, or the CRT values OpenSSL would not
    fall back from) shows here as the one thing that matters, signatures that do not verify."""
    public = certificate.public_key()
    assert isinstance(public, rsa.RSAPublicKey)  # spki_der checked it
    try:
        signature = key.sign(_PROBE, padding.PKCS1v15(), hashes.SHA256())
        public.verify(signature, _PROBE, padding.PKCS1v15(), hashes.SHA256())
    except Exception:  # InvalidSignature, or an OpenSSL error from a damaged key
        raise SignerError(
            "the signing key's signatures do not verify with the certificate's public key"
        ) from None


def spki_der(public_key: object) -> bytes:
    """DER SubjectPublicKeyInfo of an RSA public key (to compare a key with a certificate's)."""
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise SignerError("the certificate's public key is not an RSA key")
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def read_private_file(path: Path, what: str = "key file") -> bytes:
    """Read a key, PIN, secret or operators file after checking, on the open descriptor, that
    only its owner may use it; errors name the file and ``what`` it is, never its content."""
    # O_NONBLOCK: a named pipe in its place is refused below, not waited on in open() (the
    # responder's master loads the TLS key on every reload, in its supervising loop)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY
    flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise SignerError(f"{path}: cannot open the {what} ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SignerError(f"{path}: the {what} is not a regular file")
        os.set_blocking(fd, True)
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise SignerError(
                f"{path}: the {what}'s mode {mode:04o} allows group or other access; "
                "it must be 0600 or stricter (chmod 600)"
            )
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def load_certificate(path: Path) -> x509.Certificate:
    """A PEM or DER certificate file; errors name the file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SignerError(f"{path}: cannot read the certificate ({exc.strerror})") from None
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise SignerError(f"{path}: not a readable X.509 certificate") from exc
