"""Whether a certificate may sign OCSP answers about a CA's certificates (RFC 6960 §4.2.2.2).

The CA itself, or a delegate its key issued directly with id-kp-OCSPSigning and, when it has
a key usage, digitalSignature in it (RFC 5280 §4.2.1.3): a client checks every answer against
that, so any other signer makes every answer of the issuer fail at the client, whatever
status it says. The builder (pre-signing) and the responder (fresh answers) refuse such a
signer at start with the same reason.
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from crlbuilder.validity import expired_at, valid_at


def validity_problem(signer: x509.Certificate, at: datetime) -> str | None:
    """Why answers ``signer`` signs at ``at`` fail at the clients, or None: its certificate is
    not valid then (expired, or a renewal installed before its notBefore). A client checks the
    signer's validity at the time it verifies (RFC 5280 §6.1.3, as RFC 6960 §4.2.2.2's path to
    the CA), so it rejects every answer. The responder refuses such a signer at start; the
    builder's pre-signing skips its issuer at each run (`crlbuilder.presign`)."""
    begins, ends = signer.not_valid_before_utc, signer.not_valid_after_utc
    if valid_at(begins, ends, at):
        return None
    when = "expired" if expired_at(ends, at) else "not valid yet"
    return (
        f"its certificate is {when} (valid {begins:%Y-%m-%dT%H:%M:%SZ} to "
        f"{ends:%Y-%m-%dT%H:%M:%SZ}): clients would reject every answer it signs"
    )


def delegate_problem(
    ca: x509.Certificate, signer: x509.Certificate, *, at: datetime | None = None
) -> str | None:
    """Why ``signer`` cannot sign OCSP answers about ``ca``'s certificates, or None; with
    ``at``, also when its certificate is not valid then (`validity_problem`)."""
    if at is not None and (problem := validity_problem(signer, at)) is not None:
        return problem
    if signer == ca:
        return None
    if signer.issuer != ca.subject:
        return f"not issued by the CA {ca.subject.rfc4514_string()}"
    try:
        signer.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return f"its signature does not verify with the key of the CA {ca.subject.rfc4514_string()}"
    try:
        eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is None or ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        return "lacks the OCSP-signing purpose (extended key usage id-kp-OCSPSigning)"
    try:
        usage = signer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if not usage.digital_signature:
        return "its key usage lacks digitalSignature (RFC 5280 §4.2.1.3: it may not sign answers)"
    return None


def nocheck_missing(ca: x509.Certificate, signer: x509.Certificate) -> str | None:
    """Why a delegate ``signer`` of ``ca`` is off the profile its clients expect, or None: it
    lacks id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1), which every delegate this project makes
    carries (`crlbuilder.demo.pki`). Not a refusal: a client may then check the delegate's
    own revocation status (the CA's CRL) before it believes an answer, so answers still
    verify where that CRL is reachable; the services warn at start. None for the CA itself."""
    if signer == ca:
        return None
    try:
        signer.extensions.get_extension_for_class(x509.OCSPNoCheck)
    except x509.ExtensionNotFound:
        return (
            "lacks id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1): clients may check this "
            "signer's own revocation before believing its answers (a CRL they must reach); "
            "renew it with the extension"
        )
    return None
