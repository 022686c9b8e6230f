"""The token records a store applied, carried over to a record stream made again (`crlbuilder stream adopt`).

The records of 特定利用者証明検証者証明符号 (Act §38-3: `crlbuilder.model.TokenIssued`, and
`TokenRevoked` when the party's approval no longer holds, Act §38-2(6)) come from the cluster
signer's builder, not from a record file: republishing every record file onto a record stream
deleted and made again leaves them off it, and adopting the new stream asks it to carry every
record the store applied (`crlbuilder.streamadopt`). Nothing else publishes them again: the
signer's builder refuses the new stream until its store adopted it, and publishes only the
tokens its store holds from no stream record (`crlbuilder.tokens.TokenIssuer.republish_held`).

So the signer's adopt (run first on the signer's node, docs/operations.md) publishes them
(`held`): each the very record its store applied, made again from what it holds (the status
record, the CRL entry, the token's certificate in ``tokens.issued``) and checked against the
digest kept beside its id (`crlbuilder.recorddigest`), so every adopted node skips it as a
duplicate. One exception: release 1.5's signer published unsigned revocations, applied as
release 1.5 did before the old stream's first message of release 1.6
(`crlbuilder.tokenrevocation`). The new stream's first message is of release 1.6 or later (the
republished record files, or this publication), from which a node replaying it refuses an
unsigned revocation: such a revocation is published signed now by the token issuer's key, with
its instant (RSASSA-PKCS1-v1_5: every run signs the same bytes), so a node made from the new
stream's start revokes the token at the same instant. A record that cannot be made again (its
certificate file gone, another content than the store's) is not published: adopt is refused,
saying how many.

On every node (`unsigned`, `signed_digest`), the digest kept beside such a revocation's id is
then that of its signed form as read from the new stream, its signature checked (the token
issuer's, over what the unsigned record said, for the token's party): the builder skips it as a
duplicate rather than refusing it as an id reused with other content, and every node, adopted or
made from the new stream, keeps the same digest. Pure functions of the store's view and bytes;
the caller publishes and reads the stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from crlbuilder import tokenrevocation
from crlbuilder.model import Family, Record, TokenIssued, TokenRevoked
from crlbuilder.recorddigest import RecordDigest
from crlbuilder.store import format as sf
from crlbuilder.store.reader import LmdbReader

ISSUED: Final = "token-issued:"
REVOKED: Final = "token-revoked:"
"""The record ids' prefixes (`crlbuilder.tokens.issued_record_id`, `revoked_record_id`)."""


def is_token_id(record_id: str) -> bool:
    """``record_id`` names a token record (the signer's builder writes it, no record file)."""
    return record_id.startswith((ISSUED, REVOKED))


def _parse(record_id: str) -> tuple[str, str, int] | None:
    """(prefix, issuer id, serial) of a token record id; None: not one."""
    for prefix in (ISSUED, REVOKED):
        if record_id.startswith(prefix):
            issuer, _, serial = record_id[len(prefix) :].rpartition(":")
            try:
                return prefix, issuer, int(serial, 16)
            except ValueError:
                return None
    return None


@dataclass(frozen=True, slots=True)
class _Held:
    """A token record id the store applied, and what it holds of the token."""

    record_id: str
    prefix: str
    issuer: sf.IssuerMeta
    serial: int
    status: sf.StatusRecord
    recorded_at: int
    """The revocation's recording instant (its CRL entry's); 0 for an issuance or none kept."""
    digest: bytes | None


def _held(r: LmdbReader) -> Iterable[_Held]:
    """Every token record id ``r``'s store applied, with its token's state (ids of an unknown
    issuer or serial, which no token record can be made of, left out)."""
    issuers = {i.id: i for i in r.issuers() if i.family is Family.SPECIFIED_VERIFIER_TOKEN}
    for prefix in (ISSUED, REVOKED):
        for rid, applied in r.applied_entries(prefix):
            parsed = _parse(rid)
            meta = issuers.get(parsed[1]) if parsed is not None else None
            if parsed is None or meta is None:
                continue
            key = sf.status_key(meta.index, parsed[2])
            st = r.status(key)
            if st is None:
                continue
            entry = r.revoked_entry(key) if prefix == REVOKED else None
            recorded = entry.recorded_at if entry is not None else 0
            yield _Held(rid, prefix, meta, parsed[2], st, recorded, applied.digest)


def _unsigned(h: _Held) -> TokenRevoked:
    """The unsigned revocation (release 1.5's) that would have left ``h``."""
    return TokenRevoked(
        id=h.record_id, recorded_at=datetime.fromtimestamp(h.recorded_at, UTC), serial=h.serial,
        issuer=h.issuer.id, at=datetime.fromtimestamp(h.status.revoked_at, UTC),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Held:
    """What the signer can publish of the token records its store applied (`held`)."""

    records: list[Record]
    """Each record as the store applied it (release 1.5's unsigned revocations signed), in
    key order, issuances first."""
    unmade: int
    """Token record ids the store applied that could not be made again (their certificate
    file missing, or another content than the digest kept beside the id)."""


def held(
    r: LmdbReader,
    digests: RecordDigest,
    certificates: dict[int, x509.Certificate],
    sign: Callable[[str, int, datetime, bytes], str],
    *,
    skip: Callable[[str], bool] = lambda _: False,
) -> Held:
    """The token records the store of ``r`` applied, but those ``skip`` says (on the stream
    already), made again: an issuance with the token's certificate from ``certificates`` (the
    signer's ``tokens.issued``, by serial), a revocation signed by ``sign`` (issuer, serial,
    instant, holder: the token issuer's key, `tokenrevocation.sign`), each kept only when it is
    the record applied (its digest the one kept), or release 1.5's unsigned one whose digest is
    kept (published signed: module docstring)."""
    out: list[Record] = []
    unmade = 0
    for h in _held(r):
        if skip(h.record_id):
            continue
        st = h.status
        made: Record | None = None
        if h.prefix == ISSUED:
            cert = certificates.get(h.serial)
            nb = datetime.fromtimestamp(st.not_before, UTC)
            na = datetime.fromtimestamp(st.not_after, UTC)
            if cert is not None:
                rec = TokenIssued(
                    id=h.record_id, recorded_at=nb, serial=h.serial, issuer=h.issuer.id,
                    not_before=nb, not_after=na, holder=st.holder.hex(),
                    certificate=cert.public_bytes(serialization.Encoding.DER),
                )  # fmt: skip
                made = rec if digests.of(rec) == h.digest else None
        elif st.revoked:
            unsigned = _unsigned(h)
            at = unsigned.at
            signed = msgspec.structs.replace(
                unsigned, recorded_at=at, signature=sign(h.issuer.id, h.serial, at, st.holder)
            )
            as_applied = [digests.of(signed)]
            if unsigned.recorded_at == at:  # else no signature says what it said
                as_applied.append(digests.of(unsigned))
            if h.digest in as_applied:
                made = signed
        if made is None:
            unmade += 1
        else:
            out.append(made)
    return Held(out, unmade)


def kept_digests(r: LmdbReader) -> dict[str, bytes]:
    """The token record ids the store of ``r`` applied, each with the digest kept beside it
    (an id applied by a release before the digests, none kept, left out)."""
    return {
        rid: applied.digest
        for prefix in (ISSUED, REVOKED)
        for rid, applied in r.applied_entries(prefix)
        if applied.digest is not None
    }


def unsigned(r: LmdbReader, digests: RecordDigest) -> dict[str, bytes]:
    """The revocations the store of ``r`` applied unsigned (release 1.5's: the digest kept
    beside the id is the unsigned record's), by record id, with that digest."""
    return {
        h.record_id: h.digest
        for h in _held(r)
        if h.prefix == REVOKED and h.status.revoked and h.digest is not None
        and digests.of(_unsigned(h)) == h.digest
    }  # fmt: skip


def signed_digest(
    r: LmdbReader, digests: RecordDigest, record: Record, kept: bytes
) -> bytes | None:
    """The digest to keep beside the id of a revocation the store applied unsigned (its digest
    ``kept``) when ``record``, read from the new stream under that id, is the same revocation
    signed: its unsigned form digests to ``kept`` and its signature is the token issuer's over
    it for the token's party (`tokenrevocation.refusal`, against the issuer's certificate the
    store holds); None otherwise (the builder then judges it as any record read again)."""
    if not isinstance(record, TokenRevoked) or not record.signature:
        return None
    if digests.of(msgspec.structs.replace(record, signature="")) != kept:
        return None
    meta = next((i for i in r.issuers() if i.id == record.issuer), None)
    if meta is None or meta.family is not Family.SPECIFIED_VERIFIER_TOKEN:
        return None
    st = r.status(sf.status_key(meta.index, record.serial))
    if st is None:
        return None
    if tokenrevocation.refusal(record, issuer_der=meta.cert_der, holder=st.holder) is not None:
        return None
    return digests.of(record)
