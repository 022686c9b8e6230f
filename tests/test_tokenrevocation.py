"""A `token-revoked` record's signature (`crlbuilder.tokenrevocation`): a node revokes a token
only on the token issuer's signature over what the record says; the signer signs each one it
publishes (`TokenIssuer`), with a PEM key or a key in an HSM alike."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jws
from joserfc.jwk import RSAKey

from crlbuilder import release
from crlbuilder.apply import Applier
from crlbuilder.ingest import TOKEN_SOURCE, Located
from crlbuilder.keys.signer import Signer, load_signer
from crlbuilder.manifest import Manifest
from crlbuilder.model import ChangeKind, Record, ResidentChange, TokenIssued, TokenRevoked
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import copy_store
from crlbuilder.stream import MAX_BATCH, Batcher, Delivered
from crlbuilder.tokenrequest import token_holder
from crlbuilder.tokenrevocation import TYP, claim, refusal, sign
from crlbuilder.tokens import TokenReport, issued_record_id, revoked_record_id
from crlbuilder.verifiers import Verifiers
from tests.support.softhsm import make_token
from tests.support.store import dump_store, node_state
from tests.test_token_stream import Forger, signed_token
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
    issuer, published = world.publishing_issuer()
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


# --- release 1.5's unsigned revocations on the record stream (the store's flag) -------------

OLD, NEW = "1.5", str(release.SIGNS_TOKEN_REVOCATIONS)


def _issued(w: World, pid: str, at: datetime) -> TokenIssued:
    """A `TokenIssued` record of a token of ``pid`` as the signer's builder writes it."""
    cert = signed_token(w.manifest, pid, at)
    tok = w.manifest.token_issuer
    assert tok is not None
    return TokenIssued(
        id=issued_record_id(tok.id, cert.serial_number),
        recorded_at=cert.not_valid_before_utc, serial=cert.serial_number, issuer=tok.id,
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
        holder=token_holder(pid).hex(), certificate=cert.public_bytes(serialization.Encoding.DER),
    )  # fmt: skip


def _revoked(w: World, serial: int, at: datetime, pid: str, signer: Signer | None) -> TokenRevoked:
    """A revocation of ``pid``'s token ``serial``: unsigned (release 1.5's signer) or signed by
    ``signer`` (the token issuer's key, or a forger's)."""
    tok = w.manifest.token_issuer
    assert tok is not None
    sig = "" if signer is None else sign(signer, issuer=tok.id, serial=serial, at=at,
                                         holder=token_holder(pid))  # fmt: skip
    return TokenRevoked(
        id=revoked_record_id(tok.id, serial), recorded_at=at, serial=serial, issuer=tok.id, at=at,
        signature=sig,
    )  # fmt: skip


def _stream_node(w: World, verifiers: Verifiers | None = None) -> Applier:
    """The applier of a node of the record stream (its token records applied; consents checked
    against ``verifiers``, None: refused)."""
    b = w.builder
    return Applier(
        b.store, facts_key=b.key, quarantine=b.quarantine, notices_path=w.tmp / "notices.jsonl",
        clock=lambda: T0, published=True, token_records=True, verifiers=verifiers,
    )  # fmt: skip


def _feed(
    w: World, stream: list[Delivered], *, restart: bool, verifiers: Verifiers | None = None
) -> int:
    """Apply ``stream`` to ``w``'s store as a node of the record stream does: batches cut by
    the publishers' end marks (`Batcher`), each applied by `Builder._stream_batch`; with
    ``restart``, by a new applier each (the node restarted between batches), and from the
    sequence the store says it stands at. Returns the records its appliers refused as read
    too late (their summaries' ``refused_late``)."""
    applier = _stream_node(w, verifiers)
    used = [applier]
    with w.builder.store.read() as r:
        batcher = Batcher(after=r.stream_seq(), batch_size=MAX_BATCH)
    for d in stream:
        batch = batcher.add(d)
        if batch is not None:
            if restart:
                used.append(applier := _stream_node(w, verifiers))
            w.builder._stream_batch(applier, batch)
    return sum(a.summary.late for a in used)  # the summary's refused_late


def _quarantined(w: World) -> list[str]:
    path = Path(w.builder.cfg.input.quarantine)
    return [json.loads(q)["reason"] for q in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("flag_by", ["record", "tick"])
def test_release_1_5_unsigned_revocations_apply_until_the_streams_first_1_6_message(
    world: World,  # noqa: F811
    pki: tuple[Path, Manifest],  # noqa: F811
    tmp_path: Path,
    flag_by: str,
) -> None:
    """A record stream as the 1.6 upgrade leaves it: release 1.5's signer issued two tokens and
    revoked one unsigned; a forger signed a revocation with its own key under a 1.5 header;
    then the upgraded signer's first message (release 1.6: a token record in the same batch, or
    a tick) sets every node's flag, after which an unsigned revocation is refused whatever release its header
    claims, and the signer's signed one applies. A node that applied the stream as it came
    (live, restarted between batches) and one made later from the stream's start (a bootstrap
    with no snapshot) revoke the same tokens at the same instants, refuse the same records and
    hold the same bytes, the flag at the same sequence."""
    signer = _signer(world)
    at = T0 + timedelta(hours=1)
    later, last = at + timedelta(seconds=1), at + timedelta(seconds=2)
    one, two, three = (_issued(world, "spec", T0) for _ in range(3))
    forger = Forger(signer.certificate)

    def d(seq: int, rec: Record | None, rel: str | None, end: bool = True) -> Delivered:
        item = None if rec is None else Located(TOKEN_SOURCE, seq, rec)
        return Delivered(seq=seq, item=item, at=at + timedelta(seconds=seq), end=end,
                         pending=0, release=rel)  # fmt: skip

    stream = [
        d(1, one, OLD, end=False),
        d(2, two, OLD),
        d(3, _revoked(world, one.serial, at, "spec", None), OLD, end=False),  # release 1.5's own
        d(4, _revoked(world, two.serial, at, "spec", forger), OLD, end=False),  # checked
        # the upgraded signer's first message: the flag (a token record, mid-batch; or a tick)
        d(5, three, NEW, end=False) if flag_by == "record" else d(5, None, NEW),
        d(6, _revoked(world, two.serial, at, "spec", None), OLD),  # an old header, too late
        d(7, None, NEW),  # a tick
        d(8, _revoked(world, two.serial, later, "spec", None), None),  # no header at all
        d(9, _revoked(world, two.serial, last, "spec", signer), NEW),  # the signer's
    ]
    (tmp_path / "replay").mkdir()
    replay = World(tmp_path / "replay", pki)
    replay.builder.key = world.builder.key  # the nodes of one stream share the facts key
    try:
        for n in range(1, len(stream) + 1):  # live: the stream as it grew
            _feed(world, stream[:n], restart=True)
        _feed(replay, stream, restart=False)  # later, from the stream's start
        tok = world.manifest.token_issuer
        assert tok is not None
        for w in (world, replay):
            with w.builder.store.read() as r:
                first = r.status(sf.status_key(tok.index, one.serial))
                second = r.status(sf.status_key(tok.index, two.serial))
                third = r.status(sf.status_key(tok.index, three.serial))
            assert first is not None and first.revoked, "release 1.5's revocation not applied"
            assert first.revoked_at == int(at.timestamp())
            # by the signer's revocation alone: not by the forger's, nor the unsigned ones after
            # the flag (one quarantine line: the same id and reason, `quarantine_key`)
            assert second is not None and second.revoked
            assert second.revoked_at == int(last.timestamp())
            if flag_by == "record":  # the upgraded signer's token: good
                assert third is not None and not third.revoked
            else:
                assert third is None
            reasons = _quarantined(w)
            assert len(reasons) == 2, reasons
            assert f"not signed by the token issuer {tok.id}" in reasons[0]
            assert "carries no signature" in reasons[1]
        flag = [sf.META_TOKEN_SIGNATURES]
        live, again = (
            (node_state(w.builder.store), dump_store(w.builder.store, meta=flag)["meta"])
            for w in (world, replay)
        )
        assert live == again
        assert live[1] == [(sf.META_TOKEN_SIGNATURES, sf.pack_u64(5))]
    finally:
        replay.builder.close()
    # `crlbuilder store copy` keeps it (a node restored from the copy refuses the same records)
    copy_store(Path(replay.builder.cfg.store.path), tmp_path / "copy")
    assert dump_store(tmp_path / "copy", meta=flag)["meta"] == live[1]


def test_without_the_stream_every_revocation_needs_its_signature(world: World) -> None:  # noqa: F811
    """An applier of the record stream given no release (a caller that is not the stream's
    batch) and a flag never set: an unsigned revocation is refused, no flag written."""
    one = _issued(world, "spec", T0)
    applier = _stream_node(world)
    at = T0 + timedelta(hours=1)
    applier.commit([Located(TOKEN_SOURCE, 1, one)])
    applier.commit([Located(TOKEN_SOURCE, 2, _revoked(world, one.serial, at, "spec", None))])
    (reason,) = _quarantined(world)
    assert "carries no signature" in reason
    assert dump_store(world.builder.store, meta=[sf.META_TOKEN_SIGNATURES])["meta"] == []


def test_a_move_outs_planned_date_is_bounded_from_the_streams_first_1_6_message(
    world: World,  # noqa: F811
    pki: tuple[Path, Manifest],  # noqa: F811
    tmp_path: Path,
) -> None:
    """Rules 6 bounds a move-out notice's planned date (`rules.planned_date_refusal`); release
    1.5 took any. A notice planned two months before it was made, on the stream before its
    first 1.6 message, is applied by a node replaying the stream as the nodes of 1.5 applied
    it (its lapse takes what theirs took); the same after that message is refused on every
    node alike. A planned date past the calendar's end is refused either way."""
    at = T0 + timedelta(hours=1)

    def notice(holder: str, planned: date) -> ResidentChange:
        return ResidentChange(
            id=f"mo-{holder[-4:]}-{planned.isoformat()}", recorded_at=at, holder=holder,
            change=ChangeKind.MOVE_OUT_NOTICE, planned_date=planned,
        )  # fmt: skip

    def d(seq: int, rec: Record | None, rel: str | None) -> Delivered:
        item = None if rec is None else Located(TOKEN_SOURCE, seq, rec)
        return Delivered(seq=seq, item=item, at=at + timedelta(seconds=seq), end=True,
                         pending=0, release=rel)  # fmt: skip

    early = at.date() - timedelta(days=60)
    holders = [f"{n:064x}" for n in (1, 2, 3)]
    stream = [
        d(1, notice(holders[0], early), OLD),  # release 1.5's: applied
        d(2, notice(holders[2], date(9999, 12, 31)), OLD),  # never: no lapse instant
        d(3, None, NEW),  # the upgraded signer's first tick: the flag
        d(4, notice(holders[1], early), OLD),  # after it: refused, whatever its header
    ]
    (tmp_path / "replay").mkdir()
    replay = World(tmp_path / "replay", pki)
    replay.builder.key = world.builder.key
    try:
        for n in range(1, len(stream) + 1):
            _feed(world, stream[:n], restart=True)
        _feed(replay, stream, restart=False)
        for w in (world, replay):
            reasons = _quarantined(w)
            assert len(reasons) == 2, reasons
            assert "past the calendar's end" in reasons[0]
            assert "days before the day the notice was made" in reasons[1]
        assert node_state(world.builder.store) == node_state(replay.builder.store)
    finally:
        replay.builder.close()


def test_the_lateness_bound_is_written_from_the_streams_first_1_6_message(
    world: World,  # noqa: F811
    pki: tuple[Path, Manifest],  # noqa: F811
    tmp_path: Path,
) -> None:
    """Rules 6 writes a lateness bound at each erasure past retention that erases anything
    (`crlbuilder.lateness`, meta ``erased-state``) and refuses a record read too late by it;
    release 1.5 wrote none and applied it. On the stream, an erasure at a tick before its first
    1.6 message writes no bound, and an expired certificate's issuance read after it is applied
    as the nodes of 1.5 applied it; an erasure at a tick after that message writes the bound,
    and the same kind of issuance read after it is refused to the quarantine (``refused_late``),
    whatever release its header claims. A node that applied the stream as it came (restarted
    between batches) and one made later from the stream's start decide alike, byte for byte,
    the bound the same."""
    from crlbuilder import lateness
    from crlbuilder.model import Family, Issuance, RequestReason, RevocationRequest

    auth = next(i.id for i in world.manifest.issuers if i.family is Family.AUTH_CARD)
    day = timedelta(days=1)

    def cert(serial: int, not_before: datetime, not_after: datetime) -> Issuance:
        return Issuance(
            id=f"late-i{serial}", recorded_at=not_before, serial=serial, family=Family.AUTH_CARD,
            issuer=auth, not_before=not_before, not_after=not_after,
            holder=f"{serial:064x}",
        )  # fmt: skip

    def loss(serial: int, at: datetime) -> RevocationRequest:
        return RevocationRequest(id=f"late-r{serial}", recorded_at=at, serial=serial,
                                 issuer=auth, reason=RequestReason.LOSS)  # fmt: skip

    def d(seq: int, rec: Record | None, rel: str | None, at: datetime) -> Delivered:
        item = None if rec is None else Located(TOKEN_SOURCE, seq, rec)
        return Delivered(seq=seq, item=item, at=at, end=True, pending=0, release=rel)

    first, second = T0, T0 + 60 * day  # the two ticks' instants (the stream's clock)
    stream = [
        d(1, cert(1, T0 - 400 * day, T0 - 100 * day), OLD, first),
        d(2, loss(1, T0 - 200 * day), OLD, first),  # due at the first tick (its period, its end)
        d(3, None, OLD, first),  # release 1.5's tick: erases it, no bound
        d(4, cert(2, T0 - 300 * day, T0 - 50 * day), OLD, first),  # expired: 1.5 applied it
        d(5, cert(3, T0 - 20 * day, T0 + 30 * day), NEW, first),  # the feed's first 1.6
        d(6, loss(3, T0 - 10 * day), NEW, first),  # due at the second tick only
        d(7, None, NEW, second),  # erases it, and writes the bound
        d(8, cert(4, T0 - 300 * day, T0 - 50 * day), NEW, second),  # read too late: refused
        d(9, cert(5, T0 - 300 * day, T0 - 50 * day), OLD, second),  # whatever its header
    ]
    (tmp_path / "replay").mkdir()
    replay = World(tmp_path / "replay", pki)
    replay.builder.key = world.builder.key  # the nodes of one stream share the facts key
    erased = [sf.META_ERASED]
    try:
        for w in (world, replay):  # every period 30 days: the erasures come within the test
            cfg = w.builder.cfg
            w.builder.cfg = msgspec.structs.replace(cfg, crl=msgspec.structs.replace(
                cfg.crl, retention_days={f.value: 30 for f in Family},
            ))  # fmt: skip
        late = 0
        for n in range(1, 5):  # live: the stream as it grew, up to before the 1.6 message
            late += _feed(world, stream[:n], restart=True)
        with world.builder.store.read() as r:
            index = next(i.index for i in r.issuers() if i.id == auth)
            gone, kept = r.status(sf.status_key(index, 1)), r.status(sf.status_key(index, 2))
        assert gone is not None and gone.erased, "no erasure at release 1.5's tick"
        assert dump_store(world.builder.store, meta=erased)["meta"] == [], "a bound before 1.6"
        assert kept is not None and _quarantined(world) == [] and late == 0
        for n in range(5, len(stream) + 1):
            late += _feed(world, stream[:n], restart=True)
        assert late == 2  # counted as refused_late
        assert _feed(replay, stream, restart=False) == 2  # later, from the stream's start
        for w in (world, replay):
            with w.builder.store.read() as r:
                st = {n: r.status(sf.status_key(index, n)) for n in (1, 2, 3, 4, 5)}
                state = r.erased_state()
            assert st[1] is not None and st[1].erased, "the first loss not erased at its tick"
            assert st[3] is not None and st[3].erased, "the second loss not erased at its tick"
            assert st[2] is not None, "an issuance read after 1.5's erasure was refused"
            assert st[4] is None and st[5] is None, "an issuance read too late was applied"
            assert state is not None and state.at == int(second.timestamp())
            assert state.issued_before > int((T0 - 300 * day).timestamp())
            assert _quarantined(w) == [lateness.LATE_ISSUANCE] * 2
        live, again = (
            (node_state(w.builder.store), dump_store(w.builder.store, meta=erased)["meta"])
            for w in (world, replay)
        )
        assert live == again
    finally:
        replay.builder.close()
