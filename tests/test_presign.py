"""Pre-signing with signing processes: chunks of several issuers in flight at once.

`crlbuilder.presign.Presigner` keeps up to two chunks per signing process in flight and
no longer waits for one issuer's last chunk before the next issuer's first (the signing
processes would idle meanwhile). Each chunk carries its own issuer's signer: every stored
answer must still be its own serial's, signed by its own issuer's delegate.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import ocsp

from crlbuilder import presign
from crlbuilder.manifest import ocsp_signer_files
from crlbuilder.store.lmdbstore import Store
from tests.conftest import Built


def test_every_answer_is_signed_again_by_its_own_issuers_delegate_across_chunks(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_path = tmp_path / "store"
    shutil.copytree(built.store, store_path)
    monkeypatch.setattr(presign, "CHUNK", 7)  # many chunks, and issuers' chunks side by side
    store = Store.open(store_path, readonly=False)
    try:
        with store.read() as r:
            revoked = {i.index: [k for k, _ in r.revocations(i.index)] for i in r.issuers()}
            by_index = {i.index: i for i in r.issuers()}
        assert sum(1 for keys in revoked.values() if len(keys) > 7) >= 2  # several issuers
        now = int(time.time())
        p = presign.Presigner(
            store, built.manifest, validity_seconds=3600, refresh_before_seconds=10**9, workers=2
        )
        result = p.run(now)
        delegates: dict[str, x509.Certificate] = {}  # a compromised issuer's: its successor's
        for issuer in built.manifest.all_issuers():
            files = ocsp_signer_files(
                built.manifest, issuer, by_index[issuer.index].compromised_at > 0
            )
            if files is None:
                continue
            delegates[issuer.id] = x509.load_pem_x509_certificate(
                built.manifest.path(files[1]).read_bytes()
            )
        signed = 0
        with store.read() as r:
            for index, keys in revoked.items():
                issuer_id = by_index[index].id
                if issuer_id not in p._response_signers:
                    continue  # compromised without a successor: nothing signs
                rs = p._response_signers[issuer_id]
                for key in keys:
                    a = r.stored_answer(key)
                    assert a is not None and a.this_update == now, key.hex()
                    assert a.signer_id == rs.signer_id
                    resp = ocsp.load_der_ocsp_response(a.stem + rs.certs_suffix)
                    assert resp.serial_number == int.from_bytes(key[2:], "big")
                    assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED
                    public = delegates[issuer_id].public_key()
                    assert isinstance(public, rsa.RSAPublicKey)
                    assert resp.signature_hash_algorithm is not None
                    public.verify(resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(),
                                  resp.signature_hash_algorithm)  # fmt: skip
                    signed += 1
        assert signed == result.signed and result.kept == 0
    finally:
        store.close()
