"""特定利用者証明検証者証明符号 (Act §38-3) on a node of the record stream (`Builder.consume`).

The CRL signer of a cluster follows the stream, not a spool: its loop refreshes (pre-signing,
CRLs, tokens) when records come or every ``refresh_every`` (half an hour by default, hours
on a node without CRLs). A token request queued (the party is told to ask again in 2 s) and
an approval revoked in the registry (Act §38-2(6): the token must stop answering good) must
not wait for that: the loop acts on them as the spool loop does.

In a cluster, only the signer issues and revokes tokens, and it does so through the stream:
each issuance and revocation is a record (`crlbuilder.model.TokenIssued`, `TokenRevoked`) that
every node, the signer too, applies, so every node answers OCSP for a token alike, revoked at
the same instant, and their stores hold the same bytes. A real NATS cluster.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from crlbuilder import release, tokenrevocation
from crlbuilder.config import BuilderConfig, TokensSection
from crlbuilder.keys.signer import Signer, load_signer
from crlbuilder.manifest import Manifest
from crlbuilder.model import Category, Record, TokenIssued, TokenRevoked
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.stream import Consumer, ensure_stream
from crlbuilder.tokenrequest import (
    TokenRequest,
    approval_window,
    issued_path,
    party_uri,
    request_id,
    token_holder,
    token_serial,
    write_request,
)
from crlbuilder.tokens import issued_record_id, revoked_record_id, token_certificate
from responder.registry.schema import toml_dumps
from tests.support.nats import NatsCluster
from tests.support.store import dump_store, node_state
from tests.test_stream import (  # noqa: F401
    follower,
    node_config,
    population,
    publish_files,
    same_key,
)
from tests.test_tokens import APPROVED, party


def signer_config(
    cfg: BuilderConfig, registry: Path, requests: Path, issued: Path
) -> BuilderConfig:
    """``cfg`` as the cluster's signer (``crl.enabled``: the CA keys, the token issuer's among
    them) with the registry and the token queue."""
    return msgspec.structs.replace(
        cfg,
        crl=msgspec.structs.replace(cfg.crl, enabled=True),
        input=msgspec.structs.replace(cfg.input, registry=str(registry)),
        tokens=TokensSection(requests=str(requests), issued=str(issued)),
    )


def csr_of_new_key(party: str = "spec") -> tuple[bytes, bytes]:
    """A CSR (DER) of a new P-256 key naming ``party`` (`crlbuilder.tokenrequest.party_uri`)
    and that key's SubjectPublicKeyInfo."""
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(party_uri(party))])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(san, critical=False)
    )
    der = csr.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der, spki


class Forger:
    """A `Signer` of another RSA key than the token issuer's: a publisher that has no access
    to the token issuer's key, forging under its name."""

    def __init__(self, issuer_cert: x509.Certificate) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._cert = issuer_cert

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    @property
    def signature_algorithm_der(self) -> bytes:
        raise NotImplementedError  # certificates only: token_certificate does not ask

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def signed_token(
    manifest: Manifest, pid: str, at: datetime, *, signer: Signer | None = None
) -> x509.Certificate:
    """A token certificate of ``pid`` for a new key, requested at ``at``, signed by the token
    issuer's key (``signer``: another key, under the token issuer's name, a forger's)."""
    tok = manifest.token_issuer
    assert tok is not None
    real = load_signer(manifest.key_ref(tok.key), manifest.path(tok.cert))
    der, spki = csr_of_new_key(pid)
    req = TokenRequest(
        id=request_id(pid, spki, approval_window(APPROVED, None)), party=pid, csr=der,
        requested_at=at,
    )  # fmt: skip
    return token_certificate(
        req, issuer=tok, issuer_cert=real.certificate, signer=signer or real,
        approval_window=approval_window(APPROVED, None), validity=timedelta(days=1),
    )  # fmt: skip


def status(cfg: BuilderConfig, key: bytes) -> sf.StatusRecord | None:
    """The status record OCSP answers from (`responder.flow.OcspFlow.lookup`: none, unknown)."""
    store = Store.open(Path(cfg.store.path), readonly=True)
    try:
        with store.read() as r:
            return r.status(key)
    finally:
        store.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, the loop's timed waits
def test_a_stream_node_issues_a_queued_token_and_revokes_it_without_waiting_for_a_refresh(
    tmp_path: Path,
    nats: NatsCluster,
    population: Path,  # noqa: F811
    demo_pki: tuple[Path, Manifest],
) -> None:
    registry, requests, issued = tmp_path / "registry.toml", tmp_path / "req", tmp_path / "iss"
    registry.write_text(toml_dumps({"version": 2, "party": [party()]}))
    requests.mkdir()
    cfg = signer_config(
        node_config(tmp_path / "tok", demo_pki[0], nats.source, "tok"), registry, requests, issued
    )
    publish_files(cfg, nats, sorted(population.glob("*.jsonl"))[:1])
    der, spki = csr_of_new_key()
    rid = request_id("spec", spki, approval_window(APPROVED, None))
    tok = demo_pki[1].token_issuer
    assert tok is not None
    events = Path(cfg.store.path).parent / "events.jsonl"
    seen: dict[str, float] = {}

    def party_and_ministers() -> None:
        """Once the node has caught up: the request, then (issued) the approval revoked."""
        deadline = time.monotonic() + 30
        while '"event":"stream"' not in events.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        now = datetime.now(UTC).replace(microsecond=0)
        write_request(requests, TokenRequest(id=rid, party="spec", csr=der, requested_at=now))
        asked = time.monotonic()
        while not issued_path(issued, rid).exists() and time.monotonic() - asked < 6:
            time.sleep(0.05)
        if not issued_path(issued, rid).exists():
            return
        seen["issued"] = time.monotonic() - asked
        time.sleep(1.1)  # the registry's mtime moves visibly, and the revocation is dated after
        registry.write_text(toml_dumps({"version": 2, "party": [party(revoked=datetime.now(UTC))]}))

    acting = threading.Thread(target=party_and_ministers)
    with follower(cfg, nats, Consumer) as (b, consumer):
        assert b.refresh_every() > 60  # no periodic refresh can be what issues or revokes
        acting.start()
        b.consume(consumer, follow=True, max_idle=12.0, tail_wait=0.5, interval=0.1)
    acting.join()
    assert "issued" in seen, "the queued request was not issued while the node idled"
    st = status(cfg, sf.status_key(tok.index, token_serial(rid)))
    assert st is not None and st.revoked, "the revoked approval's token still answers good"
    assert st.category == Category.APPROVAL_WITHDRAWN.code


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster
def test_a_token_the_signer_issues_and_revokes_is_the_same_on_every_node(
    tmp_path: Path,
    nats: NatsCluster,
    population: Path,  # noqa: F811
    demo_pki: tuple[Path, Manifest],
) -> None:
    """Issued by the signer: good on another node once it applied the stream; revoked with the
    approval (Act §38-2(6)): revoked on both at the same instant; the stores byte-equal."""
    registry, requests, issued = tmp_path / "registry.toml", tmp_path / "req", tmp_path / "iss"
    registry.write_text(toml_dumps({"version": 2, "party": [party()]}))
    requests.mkdir()
    signer = signer_config(
        node_config(tmp_path / "signer", demo_pki[0], nats.source, "toks"),
        registry, requests, issued,
    )  # fmt: skip
    node = node_config(tmp_path / "node", demo_pki[0], nats.source, "toks")
    node = msgspec.structs.replace(  # the registry too (consents), no token queue, no CA key
        node, input=msgspec.structs.replace(node.input, registry=str(registry))
    )
    same_key(Path(signer.keys.facts_key_file), Path(node.keys.facts_key_file))
    publish_files(signer, nats, sorted(population.glob("*.jsonl"))[:1])
    tok = demo_pki[1].token_issuer
    assert tok is not None

    def run(cfg: BuilderConfig) -> None:
        """One pass of the node's builder over the stream (caught up: it returns)."""
        with follower(cfg, nats, Consumer) as (b, consumer):
            b.consume(consumer, tail_wait=0.5, interval=0.2)

    run(node)  # the node's store predates the token (as one restored from a snapshot would)
    der, spki = csr_of_new_key()
    rid = request_id("spec", spki, approval_window(APPROVED, None))
    key = sf.status_key(tok.index, token_serial(rid))
    now = datetime.now(UTC).replace(microsecond=0)
    write_request(requests, TokenRequest(id=rid, party="spec", csr=der, requested_at=now))
    run(signer)  # applies the population, issues the token: its record goes on the stream
    assert issued_path(issued, rid).exists()
    run(signer)  # the signer records it as every node does: from the stream
    good = status(signer, key)
    assert good is not None and not good.revoked
    assert status(node, key) is None  # not yet applied there: the stream's lag
    run(node)
    there = status(node, key)
    assert there is not None and not there.revoked, "another node answers unknown for the token"
    assert there == good
    assert node_state(Path(node.store.path)) == node_state(Path(signer.store.path))

    time.sleep(1.1)  # the revocation is dated after the issuance, and the registry's mtime moves
    registry.write_text(toml_dumps({"version": 2, "party": [party(revoked=datetime.now(UTC))]}))
    time.sleep(2.2)  # a node that revoked by its own clock would date it seconds later
    run(signer)  # the approval is revoked: the signer publishes the token's revocation
    run(node)  # the node applies it first, seconds before the signer does
    time.sleep(2.2)
    run(signer)
    a, b = status(signer, key), status(node, key)
    assert a is not None and a.revoked and a.category == Category.APPROVAL_WITHDRAWN.code
    assert b is not None and b.revoked, "the token answers good on another node"
    assert a.revoked_at == b.revoked_at, "the nodes revoked the token at different instants"
    assert node_state(Path(node.store.path)) == node_state(Path(signer.store.path))


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster
def test_tokens_the_signer_held_before_the_token_records_reach_every_node(
    tmp_path: Path,
    nats: NatsCluster,
    demo_pki: tuple[Path, Manifest],
) -> None:
    """Upgrade: a release before the token records committed tokens to the signer's store only
    (as a single node still does). A node restored from a snapshot taken while one was good
    kept it good for ever once the signer revoked it (it is no longer revoked by a node's own
    clock); another node never had it. The signer publishes them once: every node has the
    token, revoked at the signer's instant."""
    registry, requests, issued = tmp_path / "registry.toml", tmp_path / "req", tmp_path / "iss"
    registry.write_text(toml_dumps({"version": 2, "party": [party()]}))
    requests.mkdir()
    signer = signer_config(
        node_config(tmp_path / "signer", demo_pki[0], nats.source, "held"),
        registry, requests, issued,
    )  # fmt: skip
    node = node_config(tmp_path / "node", demo_pki[0], nats.source, "held")
    fresh = node_config(tmp_path / "fresh", demo_pki[0], nats.source, "held")
    for cfg in (node, fresh):
        same_key(Path(signer.keys.facts_key_file), Path(cfg.keys.facts_key_file))
    tok = demo_pki[1].token_issuer
    assert tok is not None
    der, spki = csr_of_new_key()
    rid = request_id("spec", spki, approval_window(APPROVED, None))
    key = sf.status_key(tok.index, token_serial(rid))
    now = datetime.now(UTC).replace(microsecond=0)
    write_request(requests, TokenRequest(id=rid, party="spec", csr=der, requested_at=now))
    with follower(signer, nats, Consumer) as (b, _):
        b.build([])  # not on the stream: committed here only, as before the token records
    shutil.copytree(Path(signer.store.path), Path(node.store.path))  # the node's snapshot
    time.sleep(1.1)
    # withdrawn in a whole second already begun (the builder's clock reads whole seconds: one
    # written with its fraction is in force only from the next second)
    withdrawn = datetime.now(UTC).replace(microsecond=0)
    registry.write_text(toml_dumps({"version": 2, "party": [party(revoked=withdrawn)]}))
    with follower(signer, nats, Consumer) as (b, _):
        b.build([])  # revoked here only, by the signer's clock
    held = status(signer, key)
    assert held is not None and held.revoked
    was = status(node, key)
    assert was is not None and not was.revoked

    def run(cfg: BuilderConfig) -> None:
        with follower(cfg, nats, Consumer) as (b, consumer):
            b.consume(consumer, tail_wait=0.5, interval=0.2)

    run(signer)  # upgraded: it publishes what it held
    run(signer)
    run(node)
    run(fresh)
    for cfg in (signer, node, fresh):
        st = status(cfg, key)
        assert st is not None and st.revoked, f"{cfg.stream.durable}: the token answers good"
        assert st.revoked_at == held.revoked_at
        assert st.category == Category.APPROVAL_WITHDRAWN.code
    with follower(signer, nats, Consumer) as (b, consumer):
        seq = b.consume(consumer, tail_wait=0.5, interval=0.2)
    run(node)
    with follower(signer, nats, Consumer) as (b, consumer):
        assert b.consume(consumer, tail_wait=0.5, interval=0.2) == seq  # published once only


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster
def test_a_token_record_in_a_record_file_published_on_the_stream_is_refused(
    tmp_path: Path,
    nats: NatsCluster,
    demo_pki: tuple[Path, Manifest],
) -> None:
    """Token records are the signer builder's: a record file the feed publishes with
    `crlbuilder publish` (one holding token lines by mistake, or a copy of the signer's)
    neither issues nor revokes a token on any node, and is quarantined saying so; the signer's
    own record of that token is applied after it."""
    node = node_config(tmp_path / "node", demo_pki[0], nats.source, "feedtok")
    tok = demo_pki[1].token_issuer
    assert tok is not None
    now = datetime.now(UTC).replace(microsecond=0)
    cert = signed_token(demo_pki[1], "spec", now)
    serial = cert.serial_number
    issued = TokenIssued(
        id=issued_record_id(tok.id, serial), recorded_at=now, serial=serial, issuer=tok.id,
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
        holder=token_holder("spec").hex(), certificate=cert.public_bytes(serialization.Encoding.DER),
    )  # fmt: skip
    feedfile = tmp_path / "feed.jsonl"
    copy = msgspec.structs.replace(issued, id="feed-copy")  # JetStream would drop the same id
    feedfile.write_bytes(msgspec.json.encode(copy) + b"\n")
    assert publish_files(node, nats, [feedfile]) == 1
    with follower(node, nats, Consumer) as (b, consumer):
        b.consume(consumer, tail_wait=0.5, interval=0.2)
    assert status(node, sf.status_key(tok.index, serial)) is None, "the feed's file issued a token"
    quarantined = Path(node.input.quarantine).read_text()
    assert "record stream only" in quarantined
    with follower(node, nats, Consumer) as (b, consumer):
        consumer.publish_records([issued])  # the signer's (`TokenIssuer`)
        b.consume(consumer, tail_wait=0.5, interval=0.2)
    st = status(node, sf.status_key(tok.index, serial))
    assert st is not None and not st.revoked


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster
def test_a_one_shot_run_of_the_signer_records_the_tokens_it_published(
    tmp_path: Path,
    nats: NatsCluster,
    population: Path,  # noqa: F811
    demo_pki: tuple[Path, Manifest],
) -> None:
    """A one-shot ``crlbuilder build --source nats://...`` of the signer (no ``--follow``) that
    issues a token, or revokes one, has it in its store and its CRLs when it returns, as a
    build from files does: it applies the records it published before it stops."""
    registry, requests, issued = tmp_path / "registry.toml", tmp_path / "req", tmp_path / "iss"
    registry.write_text(toml_dumps({"version": 2, "party": [party()]}))
    requests.mkdir()
    signer = signer_config(
        node_config(tmp_path / "signer", demo_pki[0], nats.source, "once"),
        registry, requests, issued,
    )  # fmt: skip
    publish_files(signer, nats, sorted(population.glob("*.jsonl"))[:1])
    tok = demo_pki[1].token_issuer
    assert tok is not None

    def run() -> None:
        with follower(signer, nats, Consumer) as (b, consumer):
            b.consume(consumer, tail_wait=0.5, interval=0.2)

    run()  # caught up, nothing queued
    der, spki = csr_of_new_key()
    rid = request_id("spec", spki, approval_window(APPROVED, None))
    key = sf.status_key(tok.index, token_serial(rid))
    now = datetime.now(UTC).replace(microsecond=0)
    write_request(requests, TokenRequest(id=rid, party="spec", csr=der, requested_at=now))
    run()  # nothing new on the stream: the token is issued by the run's last refresh
    assert issued_path(issued, rid).exists()
    st = status(signer, key)
    assert st is not None and not st.revoked, "the run returned before recording its token"
    registry.write_text(toml_dumps({"version": 2, "party": [party(revoked=datetime.now(UTC))]}))
    time.sleep(1.1)  # builds are dated in whole seconds
    run()
    st = status(signer, key)
    assert st is not None and st.revoked, "the run returned before recording its revocation"
    crls = [
        x509.load_der_x509_crl(p.read_bytes())
        for p in Path(signer.crl.directory).glob(f"{tok.id}*.crl")
    ]
    listed = [c for c in crls if c.get_revoked_certificate_by_serial_number(token_serial(rid))]
    assert listed, "the run's CRLs do not list the token it revoked"


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster
def test_a_forged_token_record_published_first_is_refused_on_every_node(
    tmp_path: Path,
    nats: NatsCluster,
    population: Path,  # noqa: F811
    demo_pki: tuple[Path, Manifest],
) -> None:
    """Another publisher on the record stream (the feed's NATS user, which holds the facts key
    that seals a message) writes, before the signer, a `token-issued` of the serial the signer
    is about to issue, with another party's holder and a certificate it signed with a key of its
    own under the token issuer's name. Every node refuses it (quarantined, the party not named)
    and records the signer's own record, so the token is revoked when its party's approval is
    (Act §38-2(6)); the stores stay byte-equal."""
    registry, requests, issued = tmp_path / "registry.toml", tmp_path / "req", tmp_path / "iss"
    registry.write_text(toml_dumps({"version": 2, "party": [party()]}))
    requests.mkdir()
    signer = signer_config(
        node_config(tmp_path / "signer", demo_pki[0], nats.source, "forge"),
        registry, requests, issued,
    )  # fmt: skip
    node = node_config(tmp_path / "node", demo_pki[0], nats.source, "forge")
    same_key(Path(signer.keys.facts_key_file), Path(node.keys.facts_key_file))
    publish_files(signer, nats, sorted(population.glob("*.jsonl"))[:1])
    manifest = demo_pki[1]
    tok = manifest.token_issuer
    assert tok is not None

    def run(cfg: BuilderConfig) -> None:
        with follower(cfg, nats, Consumer) as (b, consumer):
            b.consume(consumer, tail_wait=0.5, interval=0.2)

    der, spki = csr_of_new_key()
    rid = request_id("spec", spki, approval_window(APPROVED, None))
    serial = token_serial(rid)
    key = sf.status_key(tok.index, serial)
    now = datetime.now(UTC).replace(microsecond=0)
    real = load_signer(manifest.key_ref(tok.key), manifest.path(tok.cert)).certificate
    forged_cert = token_certificate(  # the serial computed from what the forger knows
        TokenRequest(id=rid, party="mallory-7", csr=der, requested_at=now),
        issuer=tok, issuer_cert=real, signer=Forger(real),
        approval_window=approval_window(APPROVED, None), validity=timedelta(days=1),
    )  # fmt: skip
    forged = TokenIssued(
        id=issued_record_id(tok.id, serial), recorded_at=now, serial=serial, issuer=tok.id,
        not_before=forged_cert.not_valid_before_utc, not_after=forged_cert.not_valid_after_utc,
        holder=token_holder("mallory-7").hex(),
        certificate=forged_cert.public_bytes(serialization.Encoding.DER),
    )  # fmt: skip
    with follower(node, nats, Consumer) as (_, consumer):
        consumer.publish_records([forged])  # a message as the signer's builder writes one
    run(node)
    assert status(node, key) is None, "the forged record recorded the token's serial"
    write_request(requests, TokenRequest(id=rid, party="spec", csr=der, requested_at=now))
    run(signer)  # issues the token, publishes and applies its record
    run(node)
    for cfg in (signer, node):
        st = status(cfg, key)
        assert st is not None and st.holder == token_holder("spec"), "the forged holder stands"
    (line,) = [
        q for q in Path(node.input.quarantine).read_text().splitlines() if serial_hex(serial) in q
    ]
    assert f"not signed by the token issuer {tok.id}" in line and "mallory" not in line
    time.sleep(1.1)  # the revocation is dated after the issuance
    registry.write_text(toml_dumps({"version": 2, "party": [party(revoked=datetime.now(UTC))]}))
    time.sleep(1.1)  # builds are dated in whole seconds: the next one is past the revocation
    run(signer)
    run(node)
    st = status(node, key)
    assert st is not None and st.revoked, "the token outlives its party's approval (§38-2(6))"
    assert node_state(Path(node.store.path)) == node_state(Path(signer.store.path))


def serial_hex(serial: int) -> str:
    """How a token record's id names its serial (`crlbuilder.tokens.issued_record_id`)."""
    return f"{serial:x}"


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster
def test_a_forged_token_revocation_leaves_the_token_good_and_the_signers_revokes_it(
    tmp_path: Path,
    nats: NatsCluster,
    population: Path,  # noqa: F811
    demo_pki: tuple[Path, Manifest],
) -> None:
    """Another publisher on the record stream (the feed's NATS user, which holds the facts key
    that seals a message) writes `token-revoked` records of a good token under the signer's
    record id: one unsigned (as release 1.5's signer wrote them), one signed with a key of its
    own. Every node, the signer too, refuses both (quarantined, the party not named) and the
    token answers good; the signer's own revocation, when the party's approval is revoked
    (Act §38-2(6)), revokes it on every node at one instant; the stores stay byte-equal."""
    registry, requests, issued = tmp_path / "registry.toml", tmp_path / "req", tmp_path / "iss"
    registry.write_text(toml_dumps({"version": 2, "party": [party()]}))
    requests.mkdir()
    signer = signer_config(
        node_config(tmp_path / "signer", demo_pki[0], nats.source, "revforge"),
        registry, requests, issued,
    )  # fmt: skip
    node = node_config(tmp_path / "node", demo_pki[0], nats.source, "revforge")
    same_key(Path(signer.keys.facts_key_file), Path(node.keys.facts_key_file))
    publish_files(signer, nats, sorted(population.glob("*.jsonl"))[:1])
    manifest = demo_pki[1]
    tok = manifest.token_issuer
    assert tok is not None

    def run(cfg: BuilderConfig) -> None:
        with follower(cfg, nats, Consumer) as (b, consumer):
            b.consume(consumer, tail_wait=0.5, interval=0.2)

    der, spki = csr_of_new_key()
    rid = request_id("spec", spki, approval_window(APPROVED, None))
    serial = token_serial(rid)
    key = sf.status_key(tok.index, serial)
    now = datetime.now(UTC).replace(microsecond=0)
    write_request(requests, TokenRequest(id=rid, party="spec", csr=der, requested_at=now))
    run(signer)  # issues the token: its record on the stream
    run(signer)
    run(node)
    for cfg in (signer, node):
        st = status(cfg, key)
        assert st is not None and not st.revoked
    real = load_signer(manifest.key_ref(tok.key), manifest.path(tok.cert)).certificate
    at = datetime.now(UTC).replace(microsecond=0)
    unsigned = TokenRevoked(
        id=revoked_record_id(tok.id, serial), recorded_at=at, serial=serial, issuer=tok.id, at=at
    )
    forged = msgspec.structs.replace(unsigned, signature=tokenrevocation.sign(
        Forger(real), issuer=tok.id, serial=serial, at=at, holder=token_holder("spec"),
    ))  # fmt: skip
    with follower(node, nats, Consumer) as (_, consumer):
        consumer.publish_records([unsigned, forged])  # messages as the signer's builder writes
    run(node)
    run(signer)
    for cfg in (signer, node):
        st = status(cfg, key)
        assert st is not None and not st.revoked, "a forged revocation revoked the token"
        lines = [
            q for q in Path(cfg.input.quarantine).read_text().splitlines()
            if revoked_record_id(tok.id, serial) in q
        ]  # fmt: skip
        reasons = [json.loads(q)["reason"] for q in lines]
        assert len(reasons) == 2 and not any("spec" in r for r in reasons), "a party named"
        assert "carries no signature of the token issuer" in lines[0]
        assert f"not signed by the token issuer {tok.id}" in lines[1]
    assert node_state(Path(node.store.path)) == node_state(Path(signer.store.path))

    time.sleep(1.1)  # the revocation is dated after the forgeries
    registry.write_text(toml_dumps({"version": 2, "party": [party(revoked=datetime.now(UTC))]}))
    time.sleep(1.1)  # builds are dated in whole seconds: the next one is past the revocation
    run(signer)  # publishes its signed revocation under the id the forgeries left free
    run(node)
    run(signer)
    a, b = status(signer, key), status(node, key)
    assert a is not None and a.revoked and a.category == Category.APPROVAL_WITHDRAWN.code
    assert b is not None and b.revoked, "the signer's revocation was not applied on the node"
    assert a.revoked_at == b.revoked_at > int(at.timestamp())
    assert node_state(Path(node.store.path)) == node_state(Path(signer.store.path))


def issued_record(manifest: Manifest, pid: str, at: datetime) -> TokenIssued:
    """The `TokenIssued` record of a new token of ``pid``, as the signer's builder writes it."""
    tok = manifest.token_issuer
    assert tok is not None
    cert = signed_token(manifest, pid, at)
    return TokenIssued(
        id=issued_record_id(tok.id, cert.serial_number), recorded_at=cert.not_valid_before_utc,
        serial=cert.serial_number, issuer=tok.id, not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc, holder=token_holder(pid).hex(),
        certificate=cert.public_bytes(serialization.Encoding.DER),
    )  # fmt: skip


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, the loop's timed waits
def test_release_1_5_unsigned_revocations_on_the_stream_revoke_on_a_node_made_after_the_upgrade(
    tmp_path: Path,
    nats: NatsCluster,
    population: Path,  # noqa: F811
    demo_pki: tuple[Path, Manifest],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stream as the 1.6 upgrade finds it: release 1.5's signer issued two tokens and
    revoked one without a signature. A node live then applies the revocation; the first
    message of release 1.6 (the upgraded feed's records) sets the flag on every node, and an
    unsigned revocation of the other token published afterwards under a 1.5 header is refused.
    A node made later from the stream's start (no snapshot) revokes the first token too, at the
    same instant, refuses the same record, and holds the same bytes and flag as the live one."""
    live = node_config(tmp_path / "live", demo_pki[0], nats.source, "revupgrade")
    later = node_config(tmp_path / "later", demo_pki[0], nats.source, "revupgrade")
    same_key(Path(live.keys.facts_key_file), Path(later.keys.facts_key_file))
    manifest = demo_pki[1]
    tok = manifest.token_issuer
    assert tok is not None
    now = datetime.now(UTC).replace(microsecond=0)
    one, two = issued_record(manifest, "spec", now), issued_record(manifest, "spec", now)
    at = now + timedelta(seconds=1)

    def unsigned(rec: TokenIssued, when: datetime) -> TokenRevoked:
        return TokenRevoked(id=revoked_record_id(tok.id, rec.serial), recorded_at=when,
                            serial=rec.serial, issuer=tok.id, at=when)  # fmt: skip

    def publish_as_release_1_5(records: list[Record]) -> None:
        with monkeypatch.context() as m, follower(live, nats, Consumer) as (_, consumer):
            m.setattr(release, "CURRENT", release.Release(1, 5))  # the header it writes
            ensure_stream(consumer.cluster, consumer.names)  # as release 1.5's signer made it
            consumer.publish_records(records)

    def run(cfg: BuilderConfig) -> None:
        with follower(cfg, nats, Consumer) as (b, consumer):
            b.consume(consumer, tail_wait=0.5, interval=0.2)

    def revoked_at(cfg: BuilderConfig, rec: TokenIssued) -> int | None:
        st = status(cfg, sf.status_key(tok.index, rec.serial))
        assert st is not None
        return st.revoked_at if st.revoked else None

    publish_as_release_1_5([one, two, unsigned(one, at)])
    run(live)
    assert revoked_at(live, one) == int(at.timestamp())
    publish_files(live, nats, sorted(population.glob("*.jsonl"))[:1])  # release 1.6's first
    publish_as_release_1_5([unsigned(two, at)])  # too late: a forger's old header
    run(live)
    run(later)  # from the stream's start
    flag = [sf.META_TOKEN_SIGNATURES]
    for cfg in (live, later):
        assert revoked_at(cfg, one) == int(at.timestamp()), "release 1.5's revocation lost"
        assert revoked_at(cfg, two) is None, "an unsigned revocation after 1.6 applied"
        reasons = [
            json.loads(q)["reason"] for q in Path(cfg.input.quarantine).read_text().splitlines()
            if revoked_record_id(tok.id, two.serial) in q
        ]  # fmt: skip
        assert len(reasons) == 1 and "carries no signature" in reasons[0]
        (meta,) = dump_store(Path(cfg.store.path), meta=flag)["meta"]
        assert meta == (sf.META_TOKEN_SIGNATURES, sf.pack_u64(4))  # the feed's first message
    assert node_state(Path(later.store.path)) == node_state(Path(live.store.path))
