"""Key ceremonies (鍵の儀式): `crlbuilder keys ...`, each approved by two operators and logged.

This module holds the flags of ``crlbuilder keys`` and their types (each refuses a value before
anything is checked or logged), built without `crlbuilder.ceremony` (the token, the signer,
cryptography's x509): ``crlbuilder --help`` and every other command start without them; a
ceremony imports it when it runs (``add_cli``'s ``run``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from crlbuilder.keyref import MIN_RSA_BITS, is_pkcs11_uri
from crlbuilder.model import JPKI_FAMILIES

if TYPE_CHECKING:
    from crlbuilder.auditlog import Anchor


def _anchor(text: str) -> Anchor:
    from crlbuilder.auditlog import Anchor

    try:
        return Anchor.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


_MAX_RSA_BITS: Final = 8192


def _rsa_bits(text: str) -> int:
    """``--bits``: an RSA modulus size the token is asked for, checked at the command line
    (refused after the approvals, it left a ceremony-failed line for a typo)."""
    try:
        bits = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("--bits takes a number of bits, e.g. 3072") from None
    if not MIN_RSA_BITS <= bits <= _MAX_RSA_BITS:
        raise argparse.ArgumentTypeError(
            f"RSA-{bits} refused: {MIN_RSA_BITS} to {_MAX_RSA_BITS} bits"
        )
    return bits


def _token_key(text: str) -> str:
    """A key reference that must be a ``pkcs11:`` URI (a key made or destroyed in the token);
    anything else is a usage error that does not show the text (it may be the PIN, typed in
    the URI's place), before anything is checked or logged."""
    if not is_pkcs11_uri(text):
        raise argparse.ArgumentTypeError(
            "a pkcs11: URI is required (pkcs11:token=LABEL;object=KEY;type=private?"
            "pin-source=file:/path); the text given is not shown (it may be a PIN)"
        )
    return text


def _key_ref(text: str) -> str:
    """A key reference that is a ``pkcs11:`` URI or the path of an existing PEM key file;
    anything else is a usage error that does not show the text (it may be the PIN, typed in
    the reference's place), before anything is checked or logged."""
    if is_pkcs11_uri(text) or Path(text).is_file():
        return text
    raise argparse.ArgumentTypeError(
        "neither a pkcs11: URI nor an existing PEM key file; the text given is not shown "
        "(it may be a PIN)"
    )


def _fingerprint(text: str) -> str:
    from crlbuilder.keys import destruction

    try:
        return destruction.parse_fingerprint(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _approval_args(p: argparse.ArgumentParser, *, generates: bool = True) -> None:
    """The flags of every approved ceremony; ``--bits`` only where a key is generated."""
    p.add_argument("--log", type=Path, required=True, help="the operation log (JSON lines)")
    _anchor_arg(p, required=True)
    p.add_argument("--operators", type=Path, required=True, help="operators file (0600)")
    p.add_argument(
        "--approval",
        action="append",
        metavar="NAME:SOURCE",
        help="an operator's approval: NAME:file:/path (0600) or NAME:env:VAR; give two",
    )
    if generates:
        p.add_argument(
            "--bits",
            type=_rsa_bits,
            default=2048,
            help=f"RSA modulus size ({MIN_RSA_BITS} to {_MAX_RSA_BITS}; default 2048)",
        )


def _anchor_arg(p: Any, *, required: bool) -> None:
    """``--anchor`` on ``p`` (a parser, or add-operator's group with ``--new-log``): the head
    the last ceremony printed, as written into its record; the ceremony refuses a log that
    does not extend it (`_ledger`)."""
    p.add_argument(
        "--anchor",
        type=_anchor,
        required=required,
        metavar="SEQ:SHA256",
        help="the operation log's head written into the last ceremony record: the ceremony "
        "refuses a log that does not hold it (cut off, rewritten, or another log)",
    )


def add_cli(subparsers: Any, run: Callable[[argparse.Namespace], int]) -> None:
    """``crlbuilder keys ...``, every action run by ``run`` (which reads ``args.ceremony``:
    `crlbuilder.ceremony.run`, or a function importing it when called)."""
    k = subparsers.add_parser(
        "keys",
        help="key ceremonies: keys in the token, two operators, the operation log",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    k.set_defaults(func=run)
    ks = k.add_subparsers(dest="ceremony", required=True)
    # the Act's families: the token issuer (Act §38-3) has no rollover ceremony (yet); a new
    # one is made by the CA operator and named in pki.json's token_issuer
    families = [f.value for f in JPKI_FAMILIES]

    p = ks.add_parser("add-operator", help="enrol an operator (salted hash of the secret)")
    p.add_argument(
        "--operators",
        type=Path,
        required=True,
        help="the operators file (created 0600 if absent; holds salted hashes, no secret)",
    )
    p.add_argument("--name", required=True, help="the operator's name, as given in --approval")
    p.add_argument(
        "--secret",
        required=True,
        metavar="file:/path|env:VAR",
        help="where the operator's secret is read: a file (0600) or an environment variable",
    )
    change = p.add_mutually_exclusive_group()
    change.add_argument(
        "--replace",
        action="store_true",
        help="set a new secret for an operator enrolled already, who gives the current one "
        "(--current-secret); without it, a name enrolled already is refused",
    )
    change.add_argument(
        "--reset",
        action="store_true",
        help="set a new secret for an operator who forgot theirs, approved by two other "
        "enrolled operators (--approval x2)",
    )
    p.add_argument(
        "--current-secret",
        metavar="file:/path|env:VAR",
        help="with --replace: where the operator's current secret is read (as --secret)",
    )
    p.add_argument(
        "--log", type=Path, required=True, help="the operation log: the enrolment is recorded"
    )
    held = p.add_mutually_exclusive_group(required=True)
    _anchor_arg(held, required=False)
    held.add_argument(
        "--new-log",
        action="store_true",
        help="start the operation log's ceremonies with this enrolment (the first bootstrap, or "
        "the first --replace after a broken log was set aside); refused where the log "
        "records a ceremony already (signing sessions and refusals do not count)",
    )
    p.add_argument(
        "--approval",
        action="append",
        metavar="NAME:SOURCE",
        help="once two operators are enrolled, a new one (or a --reset) needs two of them: "
        "NAME:file:/path (0600) or NAME:env:VAR, as at every ceremony",
    )

    p = ks.add_parser("new-ca", help="a CA generation's key in the token and its certificate")
    p.add_argument("--key", required=True, type=_token_key, help="PKCS#11 URI of the new key")
    p.add_argument("--family", required=True, choices=families, help="the CA's family")
    p.add_argument("--generation", type=int, required=True, help="the generation number")
    p.add_argument("--out", type=Path, required=True, help="the certificate (PEM)")
    _approval_args(p)

    p = ks.add_parser("new-ocsp", help="an OCSP signer's key in the token, issued by its CA")
    p.add_argument("--key", required=True, type=_token_key, help="PKCS#11 URI of the new key")
    p.add_argument(
        "--ca-key", required=True, type=_key_ref, help="the CA key: PKCS#11 URI or PEM file"
    )
    p.add_argument("--ca-cert", type=Path, required=True, help="the CA certificate (PEM)")
    p.add_argument("--out", type=Path, required=True, help="the certificate (PEM)")
    _approval_args(p)

    p = ks.add_parser("rollover", help="a family's next generation: CA, OCSP signer, manifest")
    p.add_argument("--pki", type=Path, required=True, help="the PKI directory (pki.json)")
    p.add_argument(
        "--family",
        required=True,
        choices=families,
        help="the family whose next generation this is (the highest in pki.json, plus one)",
    )
    p.add_argument("--ca-key", required=True, type=_token_key, help="PKCS#11 URI of the new CA key")
    p.add_argument(
        "--ocsp-key", required=True, type=_token_key, help="PKCS#11 URI of the new OCSP signer key"
    )
    _approval_args(p)

    p = ks.add_parser("retire", help="destroy a key in the token (its certificate is kept)")
    p.add_argument("--key", required=True, type=_token_key, help="PKCS#11 URI of the key")
    p.add_argument("--cert", type=Path, required=True, help="its certificate (kept)")
    held = p.add_mutually_exclusive_group(required=True)  # a destruction cannot be undone
    held.add_argument(
        "--pki",
        type=Path,
        help="refuse if this PKI's manifest still signs with the key (named by its token and "
        "label, or by a certificate with its public key); one of --pki and --no-pki is required",
    )
    held.add_argument(
        "--no-pki",
        action="store_true",
        help="there is no PKI manifest to hold the key against (nothing keeps a key a "
        "manifest signs with from being destroyed)",
    )
    _approval_args(p, generates=False)

    p = ks.add_parser(
        "successor",
        help="a compromised generation's successor certificate, named in the manifest",
    )
    p.add_argument("--pki", type=Path, required=True, help="the PKI directory (pki.json)")
    p.add_argument(
        "--issuer", required=True, help="the generation (compromised), e.g. sign-card-g1"
    )
    p.add_argument(
        "--successor", required=True, help="the later generation whose CA key signs its CRLs"
    )
    _approval_args(p, generates=False)

    p = ks.add_parser(
        "inventory",
        help="record the token's keys as found, differences examined and accepted by two",
    )
    p.add_argument(
        "--key",
        required=True,
        help="PKCS#11 URI naming the token (any key label) and its pin-source",
    )
    _approval_args(p, generates=False)

    p = ks.add_parser(
        "destroy",
        help="destroy a private key that has no certificate, named by its SPKI fingerprint",
        description="Destroy one private key object (and its public key) in the token, named "
        "by the SHA-256 of its SubjectPublicKeyInfo as verify-log --token lists it: a key made "
        "outside a ceremony, a second object of one key pair (narrowed by --label or --id), or "
        "a key a failed ceremony left; in place of the HSM's own tool, which leaves no line. "
        "Refused, nothing done, when the fingerprint names no key or several, when it is a key "
        "a certificate of the log names (retire --cert destroys it), or when the token, "
        "without it, does not hold what the log says (record the other differences with keys "
        "inventory first). Two operators approve; one key-destroyed line records its "
        "fingerprint, label and id (nothing secret); the token then matches the log, and the "
        "next ceremony on it needs no keys inventory.",
    )
    p.add_argument(
        "--key",
        required=True,
        help="PKCS#11 URI naming the token (any key label) and its pin-source",
    )
    p.add_argument(
        "--spki",
        required=True,
        type=_fingerprint,
        metavar="SHA256",
        help="the key's SPKI SHA-256, as verify-log --token lists it (64 hex digits)",
    )
    p.add_argument(
        "--label", help="where several objects have that fingerprint: the one with this label"
    )
    p.add_argument(
        "--id", help="where several objects have that fingerprint: the one with this CKA_ID (hex)"
    )
    held = p.add_mutually_exclusive_group(required=True)  # a destruction cannot be undone
    held.add_argument(
        "--pki",
        type=Path,
        help="also refuse a key this PKI's manifest signs with (by its certificates' public "
        "keys: keys from before the operation log too); one of --pki and --no-pki is required",
    )
    held.add_argument(
        "--no-pki",
        action="store_true",
        help="there is no PKI manifest to hold the key against: only the log's certificates "
        "protect a key in use (a key from before the log is not protected)",
    )
    _approval_args(p, generates=False)

    p = ks.add_parser("verify-log", help="check the operation log's hash chain")
    p.add_argument("--log", type=Path, required=True, help="the operation log (JSON lines)")
    p.add_argument(
        "--anchor",
        type=_anchor,
        help="SEQ:SHA256 recorded at a ceremony or the last review: the log must hold it; "
        "every line after it is listed (what was done since)",
    )
    p.add_argument(
        "--operators",
        type=Path,
        help="also compare this operators file with the log: every credential enrolled by a "
        "line, every approval by a credential enrolled before it",
    )
    p.add_argument(
        "--token",
        action="append",
        metavar="URI",
        help="also compare the private keys in this key's token with those the log says it "
        "holds (a pkcs11: URI of any key of it, with its pin-source); may be repeated",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document (the chain, the lines after --anchor, the operators)",
    )
