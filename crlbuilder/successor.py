"""The successor certificate (a compromised generation's name, its successor's CA key).

After a compromise of a generation's issuing key (発行者署名符号の漏えい等, Act §14, §16-12,
§33, §35-12) its CRLs are signed by the successor generation's CA key under the compromised
generation's name (`crlbuilder.crl.publish.crl_signing`); clients verify them with this
certificate. This module owns what makes one, for the `crlbuilder keys successor` ceremony
and the demo PKI alike (one code path):

- `plan`: which generation, which successor, and where the certificate goes, checked
  against the manifest (sans-I/O: refuses before anything is approved or signed);
- `issue`: the certificate (`successor_builder`'s profile) signed by the
  successor's CA key, in the token or a PEM file, and checked against the successor CA;
- `named`: the manifest with the generation's ``successor`` and ``successor_cert`` set.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import rsa

from crlbuilder.keys import certsign
from crlbuilder.keys.signer import load_signer
from crlbuilder.manifest import IssuerFiles, Manifest

__all__ = ["SuccessorPlan", "SuccessorPlanError", "issue", "named", "plan", "successor_builder"]


class SuccessorPlanError(Exception):
    """The successor certificate asked for cannot be made; the message says why."""


@dataclass(frozen=True, slots=True)
class SuccessorPlan:
    issuer: IssuerFiles
    """The generation whose CRLs the successor key will sign (compromised, or prepared for)."""
    successor: IssuerFiles
    """The generation whose CA key signs them."""
    cert: str
    """Where the certificate goes, relative to the manifest's directory."""


_CRL_SIGN_ONLY = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
"""keyUsage cRLSign only: it signs CRLs under the compromised name and certifies nothing."""


def successor_builder(
    compromised_ca: x509.Certificate, successor_ca: x509.Certificate
) -> x509.CertificateBuilder:
    """The certificate that lets a successor key publish a compromised generation's CRLs
    (`issue` signs it).

    Subject: the compromised generation's CA name, byte for byte (the issuer name
    its certificates and their CRL distribution points lead clients to expect);
    public key: the successor CA's key (so SKI and the CRLs' authorityKeyIdentifier
    are the successor's); issued and signed by the successor CA; keyUsage cRLSign
    only, so it can sign CRLs under that name and certify nothing. A client that
    has dropped the compromised CA as a trust anchor verifies the generation's
    final CRLs with this certificate (docs/operations.md, "CA key compromise").
    """
    ski = successor_ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    public = successor_ca.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise SuccessorPlanError("the successor CA's key is not an RSA key")
    return (
        x509.CertificateBuilder()
        .subject_name(compromised_ca.subject)
        .issuer_name(successor_ca.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(
            max(compromised_ca.not_valid_before_utc, successor_ca.not_valid_before_utc)
        )
        .not_valid_after(successor_ca.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CRL_SIGN_ONLY, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )


def plan(manifest: Manifest, issuer_id: str, successor_id: str) -> SuccessorPlan:
    """Check that ``successor_id`` may stand for ``issuer_id`` and name the certificate's file.

    The successor is a later generation of the same family, both issuers of the Act's
    families (the token issuer has no successor); ``issuer_id`` has no successor yet: a
    successor named once is what relying parties were told to install, never replaced here.
    """
    ids = {i.id: i for i in manifest.issuers}
    if issuer_id not in ids:
        raise SuccessorPlanError(f"{issuer_id}: no such issuer generation in the manifest")
    if successor_id not in ids:
        raise SuccessorPlanError(f"{successor_id}: no such issuer generation in the manifest")
    issuer, successor = ids[issuer_id], ids[successor_id]
    if successor.family is not issuer.family or successor.generation <= issuer.generation:
        raise SuccessorPlanError(
            f"{successor_id} is not a later generation of {issuer_id}'s family"
        )
    if issuer.successor or issuer.successor_cert:
        raise SuccessorPlanError(
            f"{issuer_id} already has a successor ({issuer.successor}, {issuer.successor_cert})"
        )
    return SuccessorPlan(issuer, successor, f"ca/{issuer_id}-successor.pem")


def issue(manifest: Manifest, p: SuccessorPlan) -> x509.Certificate:
    """The successor certificate, signed by the successor's CA key (token or PEM), checked
    to verify with the successor CA's certificate before it is returned."""
    compromised = x509.load_pem_x509_certificate(manifest.path(p.issuer.cert).read_bytes())
    ca = load_signer(manifest.key_ref(p.successor.key), manifest.path(p.successor.cert))
    builder = successor_builder(compromised, ca.certificate)
    cert = certsign.sign_certificate(builder, ca.sign)
    try:
        cert.verify_directly_issued_by(ca.certificate)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise SuccessorPlanError(f"the certificate does not verify with its issuer: {e}") from None
    return cert


def named(manifest: Manifest, p: SuccessorPlan) -> Manifest:
    """``manifest`` with ``p.issuer``'s successor and successor certificate set (a copy)."""
    issuers = [
        msgspec.structs.replace(i, successor=p.successor.id, successor_cert=p.cert)
        if i.id == p.issuer.id
        else i
        for i in manifest.issuers
    ]
    return msgspec.structs.replace(manifest, issuers=issuers)
