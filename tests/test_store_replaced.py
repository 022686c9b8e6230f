"""A store put in place of the one a responder opened (`Store.replaced`, `JpkiApp.store_replaced`).

`crlbuilder store copy` and a rename (docs/operations.md, "Stores built before the meminit
fix"), or a restore, while the responder runs: its workers keep the old data.mdb mapped, and the
builder started on the new one writes there. A revocation committed in the new file must
not leave the workers answering ``good`` from the old one (DESIGN.md, freshness: no worker
answers good once the builder committed a revocation): they answer ``tryLater`` and
/v1 says 503 and /readyz 503 why, until the responder is restarted.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography.x509 import ocsp

from crlbuilder.model import Category, CertStatus, Reason
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store, copy_store
from crlbuilder.store.writer import Commit
from tests.conftest import Built
from tests.support.harness import request_for, sample, start_server
from tests.test_agreements_server import v1_status


def _swap_in_a_copy(store: Path, *, compact: bool = True) -> None:
    """The documented compaction (or, not ``compact``, a restore of a byte copy), done while
    a reader has ``store`` open (compaction opens it: in another process)."""
    if compact:
        copy_store(store, store.with_name("store.new"))
    else:
        shutil.copytree(store, store.with_name("store.new"))
    store.rename(store.with_name("store.old"))
    store.with_name("store.new").rename(store)


def test_a_store_knows_when_its_path_holds_another_file(built: Built, tmp_path: Path) -> None:
    path = tmp_path / "store"
    shutil.copytree(built.store, path)
    store = Store.open(path, readonly=True)
    try:
        assert not store.replaced()
        _swap_in_a_copy(path, compact=False)
        assert store.replaced()
        shutil.rmtree(path)
        assert store.replaced()  # nothing there at all
    finally:
        store.close()


def test_a_responder_whose_store_was_replaced_never_answers_good_from_the_old_file(
    built: Built, tmp_path: Path
) -> None:
    path = tmp_path / "store"
    shutil.copytree(built.store, path)
    a = sample(built, CertStatus.GOOD, "sign-card")
    with start_server(built, tmp_path / "responder", store=path) as server:
        token = server.token("both-verifier")
        for _ in range(4):  # both workers: good, and cached
            r = ocsp.load_der_ocsp_response(server.post(request_for(server, a), token))
            assert r.certificate_status is ocsp.OCSPCertStatus.GOOD
        assert server.get("/readyz")[0] == 200
        status, entry = v1_status(server, a, "both-verifier")
        assert status == 200 and entry["status"] == "good", entry
        _swap_in_a_copy(path)
        new = Store.open(path, readonly=False)  # the builder, started on the new file
        at = int(time.time())
        try:
            with Commit(new, lambda: datetime.fromtimestamp(at, UTC)) as c:
                index = next(i.index for i in c.issuers() if i.id == a.issuer)
                key = sf.status_key(index, a.serial)
                st = c.status(key)
                assert st is not None and st.state == sf.STATE_GOOD
                c.revoke(key, st, category=Category.REQUEST.code,
                         reason=int(Reason.UNSPECIFIED), at=at, recorded_at=at)  # fmt: skip
        finally:
            new.close()
        time.sleep(1.2)  # the workers look once a second
        for _ in range(4):
            r = ocsp.load_der_ocsp_response(server.post(request_for(server, a), token))
            assert r.response_status is ocsp.OCSPResponseStatus.TRY_LATER
        status, body = server.get("/readyz")
        assert status == 503 and b"store replaced" in body
        status, problem = v1_status(server, a, "both-verifier")
        assert status == 503 and problem["rule"] == "unavailable", problem
