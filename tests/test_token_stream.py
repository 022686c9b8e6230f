"""特定利用者証明検証者証明符号 (Act §38-3) on a node of the record stream (`Builder.consume`).

The CRL signer of a cluster follows the stream, not a spool: its loop refreshes (pre-signing,
CRLs, tokens) when records come or every ``refresh_every`` (half an hour by default, hours
on a node without CRLs). A token request queued (the party is told to ask again in 2 s) and
an approval revoked in the registry (Act §38-2(6): the token must stop answering good) must
not wait for that: the loop acts on them as the spool loop does. A real NATS cluster.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from crlbuilder.config import TokensSection
from crlbuilder.manifest import Manifest
from crlbuilder.model import Category
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.stream import Consumer
from crlbuilder.tokenrequest import (
    TokenRequest,
    approval_window,
    issued_path,
    request_id,
    token_serial,
    write_request,
)
from responder.registry.schema import toml_dumps
from tests.support.nats import NatsCluster
from tests.test_stream import follower, node_config, population, publish_files  # noqa: F401
from tests.test_tokens import APPROVED, party


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, the loop's timed waits
def test_a_stream_node_issues_a_queued_token_and_revokes_it_without_waiting_for_a_refresh(
    tmp_path: Path,
    nats: NatsCluster,
    population: Path,  # noqa: F811
    demo_pki: tuple[Path, Manifest],
) -> None:
    cfg = node_config(tmp_path / "tok", demo_pki[0], nats.source, "tok")
    registry, requests, issued = tmp_path / "registry.toml", tmp_path / "req", tmp_path / "iss"
    registry.write_text(toml_dumps({"version": 2, "party": [party()]}))
    requests.mkdir()
    cfg = msgspec.structs.replace(
        cfg,
        input=msgspec.structs.replace(cfg.input, registry=str(registry)),
        tokens=TokensSection(requests=str(requests), issued=str(issued)),
    )
    publish_files(cfg, nats, sorted(population.glob("*.jsonl"))[:1])
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    der = csr.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
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
    store = Store.open(Path(cfg.store.path), readonly=True)
    try:
        with store.read() as r:
            st = r.status(sf.status_key(tok.index, token_serial(rid)))
    finally:
        store.close()
    assert st is not None and st.revoked, "the revoked approval's token still answers good"
    assert st.category == Category.APPROVAL_WITHDRAWN.code
