"""A group appliance's /readyz (団体署名検証者, Act §20(1)) with a signature issuer never fed.

The group's responder (`responder.app.JpkiApp`, group mode, in process) over a store that
`crlbuilder group pull` filled with one issuer's CRL while the other's first fetch failed
(the 機構 unreachable, its CRL refused): every member's question about that issuer is
``tryLater`` (`crlbuilder.store.reader.never_fed`), as for an issuer past its nextUpdate, and
/readyz says so, as it does for a stale one (docs/operations.md, Readiness).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from crlbuilder.group.pull import GroupFeed
from crlbuilder.group.setup import GroupIssuer, GroupSetup, dump_group_setup, load_group_setup
from crlbuilder.manifest import Manifest
from crlbuilder.store.lmdbstore import Store
from responder.app import JpkiApp
from responder.config import (
    GroupConfig,
    LedgerConfig,
    MetricsConfig,
    RegistryConfig,
    ResponderConfig,
    StoreConfig,
)
from responder.http import Request, Response
from tests.test_crlimport import G1, G2, make_crl, pki  # noqa: F401 (its PKI fixture)
from tests.test_group_pull import TOKEN, Kikou, kikou, token_file  # noqa: F401 (its fixture)

AUTH = "auth-card-g1"


def _issuer(pki: Manifest, issuer: str, index: int, url: str, suffix: str) -> GroupIssuer:  # noqa: F811
    i = pki.issuer(issuer)
    cert = x509.load_pem_x509_certificate(pki.path(i.cert).read_bytes())
    return GroupIssuer(
        id=issuer, family=i.family, generation=i.generation, index=index,
        cert=str(pki.path(i.cert)),
        sha256=hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest(),
        crl_url=f"{url}/f{suffix}.crl", delta_crl_url=f"{url}/d{suffix}.crl",
    )  # fmt: skip


@pytest.fixture
def group(pki: Manifest, kikou: Kikou, tmp_path: Path) -> Path:  # noqa: F811
    """A group of three issuers (G1, G2, an auth one: its CRL never comes to a group) whose
    pull imported G1's CRL; G2's files the 機構 did not serve."""
    g = tmp_path / "group"
    g.mkdir()
    token_file(g / "token", TOKEN + "\n")
    setup = GroupSetup(
        group_id="g", authority=kikou.url, token_file="token", cycle_seconds=60,
        responder_cert=str(pki.path(pki.group_responder_cert)),
        responder_key=str(pki.path(pki.group_responder_key)), store="store",
        issuers=[
            _issuer(pki, G1, 1, kikou.url, ""), _issuer(pki, G2, 2, kikou.url, "2"),
            _issuer(pki, AUTH, 3, kikou.url, "3"),
        ],
    )  # fmt: skip
    dump_group_setup(setup, g)
    (g / "registry.toml").write_text("version = 2\n")
    now = datetime.now(UTC)
    kikou.files["/f.crl"] = (
        '"f"',
        make_crl(pki, G1, 10, [], this_update=now - timedelta(minutes=1)),
    )
    store = Store.open(g / "store", readonly=False)
    try:
        feed = GroupFeed(load_group_setup(g), store, log=io.StringIO())
        assert [(o.issuer, o.status) for o in feed.pass_once() if o.kind == "full"] == [
            (G1, "imported"), (G2, "unreachable"),
        ]  # fmt: skip
    finally:
        store.close()
    return g


@pytest.fixture
def app(group: Path, tmp_path: Path) -> Iterator[JpkiApp]:
    config = msgspec.structs.replace(
        ResponderConfig(),
        group=GroupConfig(file=group / "group.json"),
        store=StoreConfig(path=group / "store"),
        registry=RegistryConfig(path=group / "registry.toml"),
        ledger=LedgerConfig(dir=tmp_path / "ledger"),
        metrics=MetricsConfig(enabled=False),
    )
    a = JpkiApp(config, 0)
    yield a
    a.close()


def ready(app: JpkiApp) -> tuple[int, str]:
    req = Request(b"GET", b"/readyz", {}, b"", ("127.0.0.1", 1), None, b"1.1", True, 1)
    got = app.handle(req)
    assert isinstance(got, Response)
    return got.status, bytes(got.body).decode()


def test_readyz_names_a_signature_issuer_no_crl_of_which_was_imported(
    app: JpkiApp,
    kikou: Kikou,  # noqa: F811
    pki: Manifest,  # noqa: F811
) -> None:
    """/readyz said 200 "ready" while every answer about G2 was tryLater: only an issuer past
    a nextUpdate counted, and one never fed has none (its promise 0). The auth issuer, whose
    CRL never comes to a group (Act §20(1)), is not named: its certificates are refused."""
    status, body = ready(app)
    assert (status, body) == (503, f"stale data for {G2}\n")
