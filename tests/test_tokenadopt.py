"""`crlbuilder.tokenadopt`: the token records a store applied, made again for a record stream made
again (sans-I/O, on a store fed as a node of the stream feeds it); the record id a message
carries (`crlbuilder.stream.message_record_id`). The whole adoption, on a real NATS cluster:
tests/test_stream_adopt_tokens.py."""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec
from cryptography import x509

from crlbuilder import tokenadopt
from crlbuilder.ingest import TOKEN_SOURCE, Located
from crlbuilder.model import Record, TokenIssued
from crlbuilder.recorddigest import RecordDigest
from crlbuilder.stream import (
    H_FILE,
    H_ID,
    H_RECORD,
    H_TICK,
    Delivered,
    StreamCipher,
    message_record_id,
    record_messages,
    token_msg_id,
)
from crlbuilder.tokenrevocation import sign
from tests.test_token_stream import Forger
from tests.test_tokenrevocation import NEW, OLD, _feed, _issued, _revoked, _signer
from tests.test_tokens import (  # noqa: F401  (its fixtures)
    T0,
    World,
    pki,
    world,
)


def _stream(w: World) -> tuple[TokenIssued, TokenIssued, TokenIssued, datetime, datetime]:
    """Feed ``w``'s store a stream as the 1.6 upgrade left it: release 1.5's signer issued three
    tokens and revoked the first unsigned; a revocation of the third signed stands before the
    flag too (checked there); after the flag (a 1.6 tick) the second is revoked signed."""
    one, two, three = (_issued(w, "spec", T0) for _ in range(3))
    at, later = T0 + timedelta(hours=1), T0 + timedelta(hours=2)

    def d(seq: int, rec: Record | None, rel: str) -> Delivered:
        item = None if rec is None else Located(TOKEN_SOURCE, seq, rec)
        return Delivered(seq=seq, item=item, at=later, end=True, pending=0, release=rel)

    _feed(w, [
        d(1, one, OLD), d(2, two, OLD), d(3, three, OLD),
        d(4, _revoked(w, one.serial, at, "spec", None), OLD),
        d(5, _revoked(w, three.serial, at, "spec", _signer(w)), OLD),
        d(6, None, NEW), d(7, _revoked(w, two.serial, later, "spec", _signer(w)), NEW),
    ], restart=False)  # fmt: skip
    return one, two, three, at, later


def test_the_signer_makes_again_each_token_record_its_store_applied(
    world: World,  # noqa: F811
) -> None:
    """Each as applied (the digest kept beside its id), release 1.5's unsigned revocation
    signed with its instant; a token whose certificate file is gone is not made, and counted;
    what the stream carries already is left out."""
    one, two, three, at, later = _stream(world)
    signer = _signer(world)
    digests = RecordDigest(world.builder.key)
    certs = {r.serial: x509.load_der_x509_certificate(r.certificate) for r in (one, two, three)}

    def signs(issuer: str, serial: int, when: datetime, holder: bytes) -> str:
        return sign(signer, issuer=issuer, serial=serial, at=when, holder=holder)

    signed_one = _revoked(world, one.serial, at, "spec", signer)
    signed_two = _revoked(world, two.serial, later, "spec", signer)
    signed_three = _revoked(world, three.serial, at, "spec", signer)
    with world.builder.store.read() as r:
        got = tokenadopt.held(r, digests, certs, signs)
        assert got.unmade == 0
        by_id = sorted([one, two, three], key=lambda x: x.id) + sorted(
            [signed_one, signed_two, signed_three], key=lambda x: x.id
        )  # issuances first: a revocation needs its token's status
        assert got.records == by_id
        lost = tokenadopt.held(r, digests, {one.serial: certs[one.serial]}, signs)
        assert lost.unmade == 2 and two not in lost.records and one in lost.records
        on_stream = {one.id, signed_two.id}
        rest = tokenadopt.held(r, digests, certs, signs, skip=on_stream.__contains__)
        assert {x.id for x in rest.records} == {two.id, three.id, signed_one.id, signed_three.id}
        # the unsigned one: by its id, with the digest kept beside it
        unsigned_one = _revoked(world, one.serial, at, "spec", None)
        kept = digests.of(unsigned_one)
        assert tokenadopt.unsigned(r, digests) == {unsigned_one.id: kept}
        # on every node: its signed form, checked, is kept instead
        assert tokenadopt.signed_digest(r, digests, signed_one, kept) == digests.of(signed_one)
        forged = _revoked(world, one.serial, at, "spec", Forger(signer.certificate))
        assert tokenadopt.signed_digest(r, digests, forged, kept) is None
        moved = _revoked(world, one.serial, later, "spec", signer)  # another instant, signed
        assert tokenadopt.signed_digest(r, digests, moved, kept) is None
        assert tokenadopt.signed_digest(r, digests, unsigned_one, kept) is None
        assert tokenadopt.signed_digest(r, digests, one, kept) is None


def test_a_store_that_applied_no_token_record_makes_none(
    world: World,  # noqa: F811
) -> None:
    digests = RecordDigest(world.builder.key)
    with world.builder.store.read() as r:
        got = tokenadopt.held(r, digests, {}, lambda *_: "never called")
        assert got == tokenadopt.Held([], 0)
        assert tokenadopt.unsigned(r, digests) == {}


def test_the_record_id_of_a_message_from_its_headers(world: World) -> None:  # noqa: F811
    """A token record's message carries its record id (``Jpki-Id``); one published before that
    header is named by its message id's record id; a file's line of an older publisher by its
    message id; a tick by none."""
    one = _issued(world, "spec", T0)
    (m,) = record_messages([one], StreamCipher(world.builder.key))
    assert m.headers[H_RECORD] == one.id
    assert message_record_id(dict(m.headers)) == one.id
    older = {k: v for k, v in m.headers.items() if k != H_RECORD}
    assert older[H_ID] == token_msg_id(one.id, msgspec.json.encode(one)) != one.id
    assert message_record_id(older) == one.id
    assert message_record_id({H_ID: "rec-1", H_FILE: "0001.jsonl"}) == "rec-1"
    assert message_record_id({H_ID: "tick:1", H_TICK: "1"}) is None
    assert message_record_id({}) is None
    assert message_record_id({H_ID: "#x", H_FILE: TOKEN_SOURCE}) is None
    assert tokenadopt.is_token_id(one.id) and not tokenadopt.is_token_id("rec-1")
