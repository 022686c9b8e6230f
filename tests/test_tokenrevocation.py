"""A `token-revoked` record's signature (`crlbuilder.tokenrevocation`): a node revokes a token
only on the token issuer's signature over what the record says; the signer signs each one it
publishes (`TokenIssuer`), with a PEM key or a key in an HSM alike."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jws
from joserfc.jwk import RSAKey

from crlbuilder.keys.signer import Signer, load_signer
from crlbuilder.model import Record, TokenRevoked
from crlbuilder.tokenrequest import token_holder
from crlbuilder.tokenrevocation import TYP, claim, refusal, sign
from crlbuilder.tokens import TokenIssuer, TokenReport, revoked_record_id
from tests.support.softhsm import make_token
from tests.test_token_stream import Forger
from tests.test_tokens import (  # noqa: F401  (its fixtures)
    T0,
    World,
    party,
    pki,
    world,
)

SERIAL = 0x5C0F1234
HOLDER = token_holder("spec")


def _signer(w: World) -> Signer:
    tok = w.manifest.token_issuer
    assert tok is not None
    return load_signer(w.manifest.key_ref(tok.key), w.manifest.path(tok.cert))


def _record(w: World, signer: Signer, at: datetime = T0, **change: object) -> TokenRevoked:
    tok = w.manifest.token_issuer
    assert tok is not None
    rec = TokenRevoked(
        id=revoked_record_id(tok.id, SERIAL), recorded_at=at, serial=SERIAL, issuer=tok.id,
        at=at, signature=sign(signer, issuer=tok.id, serial=SERIAL, at=at, holder=HOLDER),
    )  # fmt: skip
    return msgspec.structs.replace(rec, **change)


def _why(w: World, rec: TokenRevoked, holder: bytes = HOLDER) -> str | None:
    issuer_der = w.ca().public_bytes(serialization.Encoding.DER)
    return refusal(rec, issuer_der=issuer_der, holder=holder)


def test_the_token_issuers_signature_is_accepted(world: World) -> None:  # noqa: F811
    signer = _signer(world)
    rec = _record(world, signer)
    assert _why(world, rec) is None
    assert _record(world, signer) == rec, "a revocation signed again is another record"
    jst = rec.at.astimezone(timezone(timedelta(hours=9)))  # the same instant, another offset
    assert _why(world, msgspec.structs.replace(rec, at=jst, recorded_at=jst)) is None


def test_a_revocation_signed_with_another_key_is_refused(world: World) -> None:  # noqa: F811
    tok = world.manifest.token_issuer
    assert tok is not None
    rec = _record(world, Forger(world.ca()))
    assert _why(world, rec) == f"the token revocation is not signed by the token issuer {tok.id}"


def test_a_revocation_without_a_signature_is_refused(world: World) -> None:  # noqa: F811
    rec = _record(world, _signer(world), signature="")
    why = _why(world, rec)
    assert why is not None and why.startswith("the token revocation carries no signature")
    garbage = _record(world, _signer(world), signature="not.a.jws")
    assert _why(world, garbage) == (
        f"the token revocation is not signed by the token issuer {rec.issuer}"
    )


def test_a_signed_revocation_altered_in_any_field_is_refused(world: World) -> None:  # noqa: F811
    """The signature covers the serial, the instant, the issuer and the party: a genuine
    revocation moved to another token, another instant or another party is refused."""
    signer = _signer(world)
    rec = _record(world, signer)
    mismatch = (
        "the token revocation's signed content is not the record's "
        "(issuer, serial, instant, category or party)"
    )
    later = T0 + timedelta(days=1)
    assert _why(world, msgspec.structs.replace(rec, serial=SERIAL + 1)) == mismatch
    assert _why(world, msgspec.structs.replace(rec, at=later, recorded_at=later)) == mismatch
    assert _why(world, msgspec.structs.replace(rec, issuer="verifier-token-g2")) == mismatch
    assert _why(world, rec, holder=token_holder("mallory-7")) == mismatch
    assert _why(world, msgspec.structs.replace(rec, recorded_at=later)) == (
        "the token revocation is recorded at another instant than it signs"
    )
    assert "spec" not in mismatch and "mallory" not in mismatch


def test_a_jws_of_the_token_issuer_that_is_no_revocation_is_refused(
    world: World,  # noqa: F811
) -> None:
    """Only a JWS typed as a token revocation counts, whatever else the key might sign."""
    signer = _signer(world)
    tok = world.manifest.token_issuer
    assert tok is not None
    payload = msgspec.json.encode(claim(issuer=tok.id, serial=SERIAL, at=T0, holder=HOLDER))
    public = signer.certificate.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    key = serialization.load_pem_private_key(
        world.manifest.path(tok.key).read_bytes(), password=None
    )
    other = jws.serialize_compact(
        {"alg": "RS256", "typ": "jpki-va-answer+jws"}, payload, RSAKey.import_key(key)
    )
    assert TYP != "jpki-va-answer+jws"
    assert _why(world, _record(world, signer, signature=other)) == (
        "the token revocation's signature is not a token revocation's (typ)"
    )


@pytest.mark.integration
def test_a_token_issuer_key_in_an_hsm_signs_the_same_revocation(
    world: World,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The token issuer's key in a PKCS#11 token (SoftHSM2) signs through the `Signer`: the same
    record as with the PEM key (RSASSA-PKCS1-v1_5 is deterministic), which every node accepts."""
    tok = world.manifest.token_issuer
    assert tok is not None
    key = serialization.load_pem_private_key(
        world.manifest.path(tok.key).read_bytes(), password=None
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    hsm = make_token(tmp_path / "hsm", monkeypatch)
    try:
        signer = load_signer(hsm.import_key("token-issuer", key), world.manifest.path(tok.cert))
        rec = _record(world, signer)
        assert _why(world, rec) is None
        assert rec == _record(world, _signer(world))
    finally:
        hsm.close()


def test_the_signer_signs_each_revocation_it_publishes(world: World) -> None:  # noqa: F811
    """On the record stream, `TokenIssuer.revoke_withdrawn` and `republish_held` publish
    revocations that every node accepts (the party's digest the token's)."""
    rid, _ = world.queue()
    world.build(T0 + timedelta(minutes=1))
    world.write_registry(party(revoked=T0 + timedelta(minutes=2)))
    published: list[Record] = []
    verifiers = world.builder._verifiers()
    assert verifiers is not None
    issuer = TokenIssuer(
        world.builder.store, world.manifest, requests=world.requests, issued=world.issued,
        validity_days=365, verifiers=verifiers, clock=lambda: T0, publish=published.extend,
    )  # fmt: skip
    issuer.revoke_withdrawn(int((T0 + timedelta(minutes=3)).timestamp()), TokenReport())
    (rec,) = published
    assert isinstance(rec, TokenRevoked) and rec.signature
    assert rec.at == datetime.fromtimestamp(int((T0 + timedelta(minutes=3)).timestamp()), UTC)
    assert _why(world, rec) is None
    assert _why(world, rec, holder=token_holder("spec2")) is not None
    world.build(T0 + timedelta(minutes=4))  # revoked in this store alone (no stream)
    published.clear()
    issuer.republish_held()
    (again,) = [p for p in published if isinstance(p, TokenRevoked)]
    assert _why(world, again) is None
    assert world.status(rid) is not None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


MALFORMED = [
    "..", ".", "a", "a.b.c", "é.é.é",
    _b64(b"[]") + "." + _b64(b"{}") + "." + _b64(b"x"),
    _b64(b'{"alg":"none"}') + "." + _b64(b"{}") + ".",
    _b64(b'{"alg":"HS256"}') + "." + _b64(b"{}") + "." + _b64(b"x"),
    _b64(b'{"alg":1}') + "." + _b64(b"{}") + "." + _b64(b"x"),
    _b64(b'{"alg":"RS256","crit":["b64"],"b64":false}') + "." + _b64(b"{}") + "." + _b64(b"x"),
    _b64(b"\xff\xfe") + "." + _b64(b"{}") + "." + _b64(b"x"),
    _b64(b'{"alg":"RS256"}') + ".!!!." + _b64(b"\0" * 256),
]  # fmt: skip


@pytest.mark.parametrize("signature", MALFORMED)
def test_a_malformed_signature_is_refused_not_raised(
    world: World,  # noqa: F811
    signature: str,
) -> None:
    """Whatever another publisher puts in ``signature`` is a refusal (quarantined), never an
    exception that would stop every node's builder at that record."""
    why = _why(world, _record(world, _signer(world), signature=signature))
    assert why is not None and why.startswith("the token revocation")
