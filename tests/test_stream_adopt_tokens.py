"""`crlbuilder stream adopt` of stores holding token records (特定利用者証明検証者証明符号, Act §38-3).

The token records (`token-issued`, `token-revoked`: Act §38-2(6), §38-3) come from the signer's
builder, not from a record file: republishing the record files leaves them off a stream made
again, and adopting asks the new stream to carry every record a store applied. So the signer's
adopt (run first, docs/operations.md) publishes the token records its store applied, each the
very record it applied (its digest the one kept beside the id), release 1.5's unsigned
revocations signed now by the token issuer's key: the new stream's first message is of release
1.6 or later, from which a node replaying it refuses an unsigned revocation. Every node's adopt
then finds them, and keeps beside such a revocation's id the digest of its signed form read from
the stream, so its builder skips it as a duplicate. The adopted nodes end byte-equal as before
the stream was lost, and a node made from the new stream's start revokes the same tokens at the
same instants. A real NATS cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from crlbuilder import release, tokenrevocation
from crlbuilder.build import StreamReplaced
from crlbuilder.config import BuilderConfig
from crlbuilder.keys.signer import load_signer
from crlbuilder.manifest import Manifest
from crlbuilder.model import Record, TokenIssued, TokenRevoked
from crlbuilder.recorddigest import RecordDigest
from crlbuilder.store import format as sf
from crlbuilder.stream import Consumer, ensure_stream
from crlbuilder.tokenrequest import token_holder
from crlbuilder.tokens import revoked_record_id
from responder.registry.schema import toml_dumps
from tests.support.nats import NatsCluster
from tests.support.store import node_state
from tests.test_stream import (  # noqa: F401
    flags,
    follower,
    node_config,
    population,
    publish_files,
    same_key,
)
from tests.test_stream_adopt import _delete_stream
from tests.test_token_stream import issued_record, signer_config, status
from tests.test_tokens import party


def _adopt(cfg: BuilderConfig, *extra: str) -> subprocess.CompletedProcess[str]:
    """`crlbuilder stream adopt` with ``cfg``'s command line; the signer's with its CA keys
    (``--crl``) and its issued tokens' directory."""
    argv = flags(cfg)
    if cfg.crl.enabled:
        argv = [a for a in argv if a != "--no-crl"] + ["--crl", "--token-issued", cfg.tokens.issued]
    return subprocess.run(
        [sys.executable, "-m", "crlbuilder.cli", "stream", "adopt", *argv, *extra],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _run(cfg: BuilderConfig, nats: NatsCluster) -> int:
    """One pass of ``cfg``'s builder over the stream (caught up: it returns)."""
    with follower(cfg, nats, Consumer) as (b, consumer):
        return b.consume(consumer, tail_wait=0.5, interval=0.2)


def _quarantine(cfg: BuilderConfig) -> list[str]:
    path = Path(cfg.input.quarantine)
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster
def test_stores_holding_token_records_adopt_a_stream_made_again(
    tmp_path: Path,
    nats: NatsCluster,
    population: Path,  # noqa: F811
    demo_pki: tuple[Path, Manifest],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pki, manifest = demo_pki
    tok = manifest.token_issuer
    assert tok is not None
    registry, requests, issued = tmp_path / "registry.toml", tmp_path / "req", tmp_path / "iss"
    registry.write_text(toml_dumps({"version": 2, "party": [party()]}))
    requests.mkdir()
    issued.mkdir()
    signer = signer_config(
        node_config(tmp_path / "signer", pki, nats.source, "adopttok"), registry, requests, issued
    )
    node, fresh = (
        node_config(tmp_path / n, pki, nats.source, "adopttok") for n in ("node", "fresh")
    )
    for cfg in (node, fresh):
        same_key(Path(signer.keys.facts_key_file), Path(cfg.keys.facts_key_file))
    record_file = sorted(population.glob("*.jsonl"))[0]

    now = datetime.now(UTC).replace(microsecond=0)
    one, two, three = (issued_record(manifest, "spec", now) for _ in range(3))
    for rec in (one, two, three):  # the signer's token files, as its builder wrote them
        cert = x509.load_der_x509_certificate(rec.certificate)
        (issued / f"{rec.serial:x}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    at, later = now + timedelta(seconds=1), now + timedelta(seconds=2)
    key = load_signer(manifest.key_ref(tok.key), manifest.path(tok.cert))

    def revoked(rec: TokenIssued, when: datetime, *, signed: bool) -> TokenRevoked:
        sig = tokenrevocation.sign(key, issuer=tok.id, serial=rec.serial, at=when,
                                   holder=token_holder("spec")) if signed else ""  # fmt: skip
        return TokenRevoked(id=revoked_record_id(tok.id, rec.serial), recorded_at=when,
                            serial=rec.serial, issuer=tok.id, at=when, signature=sig)  # fmt: skip

    def publish_as(rel: release.Release, records: list[Record]) -> None:
        """``records`` as the signer's builder of release ``rel`` published them."""
        with monkeypatch.context() as m, follower(signer, nats, Consumer) as (_, consumer):
            m.setattr(release, "CURRENT", rel)
            ensure_stream(consumer.cluster, consumer.names)
            consumer.publish_records(records)

    # the old stream: release 1.5's signer issued two tokens and revoked one unsigned; the
    # feed's first 1.6 message (the flag); the 1.6 signer issued a third, revoked the second
    publish_as(release.Release(1, 5), [one, two, revoked(one, at, signed=False)])
    publish_files(signer, nats, [record_file])
    publish_as(release.CURRENT, [three, revoked(two, later, signed=True)])
    for cfg in (signer, node):
        _run(cfg, nats)

    def decided(cfg: BuilderConfig) -> list[int | None]:
        """Each token's revocation instant (None: good), as OCSP answers it."""
        out: list[int | None] = []
        for rec in (one, two, three):
            st = status(cfg, sf.status_key(tok.index, rec.serial))
            assert st is not None, "a token unknown"
            out.append(st.revoked_at if st.revoked else None)
        return out

    expected = [int(at.timestamp()), int(later.timestamp()), None]
    assert decided(signer) == decided(node) == expected
    before = node_state(Path(signer.store.path))
    assert node_state(Path(node.store.path)) == before
    kept = {cfg.stream.durable: _quarantine(cfg) for cfg in (signer, node)}

    # the stream deleted and made again, the record file republished: every builder refuses it
    _delete_stream(nats, "adopttok")
    publish_files(signer, nats, [record_file])
    for cfg in (signer, node):
        with pytest.raises(StreamReplaced):
            _run(cfg, nats)
    # a store that applied token records is judged with the facts key (the digests): without
    # it, refused in one line, before NATS is read
    keyless = _adopt(node, "--facts-key-file", str(tmp_path / "no-such.key"))
    errors = [ln for ln in keyless.stderr.splitlines() if "error" in ln]
    assert keyless.returncode == 2 and len(errors) == 1, keyless.stderr
    assert "Traceback" not in keyless.stderr and "no-such.key" in errors[0], errors
    refused = _adopt(node)  # the signer's not run yet: the token records are not on it
    assert refused.returncode == 2, refused.stderr
    assert "5 records of the" in refused.stderr and "not on the record stream" in refused.stderr
    assert "5 of them token records" in refused.stderr and "signer's node first" in refused.stderr
    # another publisher on the stream (the feed's user) puts, under the first revocation's
    # id, one of its own (unsigned, another instant): it does not stand for the signer's
    forged = revoked(one, later, signed=False)
    publish_as(release.CURRENT, [forged])
    refused = _adopt(node)  # the id is there now, but not the revocation the store applied
    assert refused.returncode == 2 and "5 records of the" in refused.stderr, refused.stderr

    for cfg in (signer, node):  # the signer's first (docs/operations.md)
        out = _adopt(cfg)
        assert out.returncode == 0, out.stderr
        told = json.loads(out.stdout.strip().splitlines()[-1])
        assert told["event"] == "stream-adopt" and told["records_to_apply"] == 0, told
        assert told["token_records_published"] == (5 if cfg is signer else 0), told
    signed_one = revoked(one, at, signed=True)
    rewritten = revoked_record_id(tok.id, one.serial).encode()
    for cfg in (signer, node):
        _run(cfg, nats)
        new = _quarantine(cfg)[len(kept[cfg.stream.durable]) :]
        assert _quarantine(cfg)[: len(kept[cfg.stream.durable])] == kept[cfg.stream.durable]
        (line,) = new  # the forgery alone, as an id reused: no republished record refused
        assert json.loads(line)["id"] == forged.id and "reused" in line, new
        assert decided(cfg) == expected
    after = node_state(Path(signer.store.path))
    assert node_state(Path(node.store.path)) == after  # the adopted nodes: byte-equal
    # as before the stream was lost, but for the digest kept beside release 1.5's revocation:
    # its signed form's, read from the new stream (its commit the same)
    assert {k: v for k, v in after.items() if k != "applied"} == {
        k: v for k, v in before.items() if k != "applied"
    }
    changed = dict(set(after["applied"]) - set(before["applied"]))
    assert list(changed) == [rewritten], changed
    was = dict(before["applied"])[rewritten]
    digests = RecordDigest(bytes.fromhex(Path(signer.keys.facts_key_file).read_text().strip()))
    assert changed[rewritten] == sf.pack_applied(was[:4], digests.of(signed_one))
    assert was[4:] == digests.of(revoked(one, at, signed=False))

    # a node made from the new stream's start (its first message of release 1.6: every
    # revocation needs its signature there) revokes the same tokens at the same instants, and
    # keeps the same digests beside their ids
    _run(fresh, nats)
    assert decided(fresh) == expected
    (line,) = [q for q in _quarantine(fresh) if "token" in q]  # the forgery, refused
    assert json.loads(line)["id"] == forged.id, line

    def token_digests(state: dict[str, list[tuple[bytes, bytes]]]) -> dict[bytes, bytes]:
        return {k: v[4:] for k, v in state["applied"] if k.startswith(b"token-")}

    assert token_digests(node_state(Path(fresh.store.path))) == token_digests(after)
    assert len(token_digests(after)) == 5
