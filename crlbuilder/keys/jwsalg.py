"""JOSE ``RS256`` whose signature comes from a `crlbuilder.keys.signer.Signer`, defined once.

joserfc's own ``RS256`` signs with a private key object it holds; a CA key in an HSM
(PKCS#11, `crlbuilder.keys.pkcs11`) never leaves its token. `SignerRS256` hands the signing
input to a `Signer` instead (a PEM key or a key in a token), which returns the same
RSASSA-PKCS1-v1_5 SHA-256 signature (every key of the service, Ord §2, §38). Used to sign only:
a JWS is verified with joserfc's own ``RS256`` and the certificate's public key. The /v1
answers' JWS (`responder.v1.jws`) and the token issuer's signature over a ``token-revoked``
record (`crlbuilder.tokenrevocation`) sign with it.
"""

from __future__ import annotations

from typing import Any, Final

from joserfc.jwa import JWSAlgModel

from crlbuilder.keys.signer import Signer

ALG: Final = "RS256"


class SignerRS256(JWSAlgModel):
    """``RS256`` by a `Signer`: the key argument joserfc passes is unused."""

    name = ALG
    description = "RSASSA-PKCS1-v1_5 using SHA-256, by a Signer (PEM file or PKCS#11)"
    key_type = "RSA"
    recommended = True

    def __init__(self, signer: Signer) -> None:
        self._signer = signer

    def sign(self, msg: bytes, key: Any) -> bytes:
        return self._signer.sign(msg)

    def verify(self, msg: bytes, sig: bytes, key: Any) -> bool:
        return False  # never used to verify: verifiers use joserfc's own RS256
