"""A group appliance's `responder serve` refuses its own OCSP responder certificate when it is
not valid now, as the 機構's refuses a delegate (tests/test_build_delegate.py).

A group's answers are all signed by its own responder key (団体署名検証者, Act §20(1);
`responder.ocsp.load_group_issuers`). A renewal of that certificate installed before its
notBefore, or one that had expired, was loaded and served: every answer signed until the
notBefore failed at each member that checks its trusted responder's validity (RFC 5280
§6.1.3, RFC 6960 §4.2.2.2), whatever the status, while the 機構's responder refused such a
signer at start. Now the master refuses it, naming the file; a worker (``outage_ok``, the
master checked) does not, so a certificate that expires while the responder runs does not
make its workers fail again and again (they answer ``tryLater``, rule ``signer_expired``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from crlbuilder.group.setup import GroupSetup
from crlbuilder.keys.signer import SignerError
from responder.ocsp import load_group_issuers
from tests.support.pki import certificate, rsa_key

pytestmark = pytest.mark.unit


def _setup(tmp_path: Path, not_before: datetime, days: float) -> GroupSetup:
    key = rsa_key()
    cert = certificate(
        "group responder", key, not_before=not_before, days=days,
        extensions=[(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), False)],
    )  # fmt: skip
    (tmp_path / "group.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "group.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "group.key").chmod(0o600)
    return GroupSetup(
        group_id="group-1", authority="https://kikou.example", token_file="authority.token",
        cycle_seconds=60, responder_cert="group.pem", responder_key="group.key", issuers=[],
        directory=str(tmp_path),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("begins", "days", "when"),
    [(-400, 399, "expired"), (1, 400, "not valid yet")],
    ids=["expired", "renewal-installed-early"],
)
def test_group_serve_refuses_a_responder_certificate_not_valid_now(
    tmp_path: Path, begins: int, days: int, when: str
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    setup = _setup(tmp_path, now + timedelta(days=begins), days)
    with pytest.raises(SignerError) as refused:
        load_group_issuers(setup)
    assert str(refused.value).startswith(
        f"{tmp_path / 'group.pem'}: the group's OCSP responder: its certificate is {when}"
    )
    assert load_group_issuers(setup, outage_ok=True) == []  # a worker: the master checked


def test_group_serve_takes_a_responder_certificate_valid_now(tmp_path: Path) -> None:
    setup = _setup(tmp_path, datetime.now(UTC) - timedelta(days=1), 30)
    assert load_group_issuers(setup) == []
