"""The promise a build run makes for every issuer (`crlbuilder.store.format.META_VOUCHED`).

An issuer's data is fresh until the nextUpdate the builder promised: its last CRL's, else
the earliest of its pre-signed answers' (`ReaderRules.promised_next_update`). An issuer with
neither (``[crl] enabled = false`` and no revoked serial) used to have no promise at all: a
stopped builder left it ``good``, ``/readyz`` 200, for ever. Every build run now vouches for
every issuer until its instant plus ``ocsp.validity_seconds`` (the nextUpdate it gives the
answers it signs), written with the build number it moves; the next run renews it, and the
idle follow loop runs at least twice within it (`Builder.refresh_every`).

Real processes: `crlbuilder build` (as of two hours ago: a builder stopped since) and
`responder serve`; in process, the builder's own runs on a copy of the built store.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from cryptography.x509 import ocsp

from crlbuilder.apply import epoch
from crlbuilder.build import Builder
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from tests.conftest import Built, run_tool
from tests.support.builder import builder_config
from tests.support.harness import request_for, start_server, status_of

VALIDITY = 3600


def _bare(store: Path) -> tuple[set[str], int]:
    """The issuers nothing but the build run's promise vouches for (no CRL state, no stored
    answer), and that promise."""
    s = Store.open(store, readonly=True)
    try:
        with s.read() as r:
            bare = {
                i.id
                for i in r.issuers()
                if not r.crl_state(i.index).next_update and not r.ocsp_state(i.index).next_update
            }
            return bare, r.vouched_until()
    finally:
        s.close()


def _good(store: Path, issuer: str, serial: int) -> bool:
    """Whether ``issuer``'s certificate ``serial`` is good in ``store``."""
    s = Store.open(store, readonly=True)
    try:
        with s.read() as r:
            index = next(i.index for i in r.issuers() if i.id == issuer)
            st = r.status(sf.status_key(index, serial))
            return st is not None and st.state == sf.STATE_GOOD
    finally:
        s.close()


def test_a_builder_stopped_past_its_promise_leaves_try_later_for_an_issuer_no_crl_vouches_for(
    built: Built, tmp_path: Path
) -> None:
    """No CRLs, and an issuer with no revoked serial: its good certificates were answered
    ``good`` for ever once the builder stopped. Now ``tryLater`` and ``/readyz`` 503 past the
    last run's promise, and ``good`` again once the builder runs."""
    # the population's issuances alone: no revoked serial, so no stored answer either (a
    # renewal's second issuance is refused, its holder's first certificate still valid)
    records = tmp_path / "records"
    records.mkdir()
    with (records / "issuances.jsonl").open("w") as out:
        for f in sorted((built.population / "records").iterdir()):
            out.writelines(x for x in f.open() if x.startswith('{"type":"issuance"'))
    store = tmp_path / "store"
    args = [*built.builder_args(store, tmp_path / "crl"), "--no-crl"]
    args += ["--ocsp-validity-seconds", str(VALIDITY)]
    args[args.index("--input") + 1] = str(records)
    stopped = datetime.now(UTC) - timedelta(hours=2)  # its last run; stopped since
    args[args.index("--as-of") + 1] = stopped.isoformat()
    run_tool("crlbuilder", "build", *args)
    bare, promised = _bare(store)
    assert promised == epoch(stopped) + VALIDITY
    good = next(a for a in built.answers if a.issuer in bare and _good(store, a.issuer, a.serial))
    with start_server(built, tmp_path / "srv", store) as s:
        der = s.post(request_for(s, good), token=s.token("both-verifier"))
        assert status_of(der) is ocsp.OCSPResponseStatus.TRY_LATER
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{s.url}/readyz", timeout=5)
        assert e.value.code == 503
        assert good.issuer in e.value.read().decode()
        # the builder runs again (a refresh: nothing new to apply): vouched for again
        empty = tmp_path / "empty"
        empty.mkdir()
        args[args.index("--input") + 1] = str(empty)
        args[args.index("--as-of") + 1] = datetime.now(UTC).isoformat()
        run_tool("crlbuilder", "build", *args)
        der = s.post(request_for(s, good), token=s.token("both-verifier"))
        assert status_of(der) is ocsp.OCSPResponseStatus.SUCCESSFUL
        assert ocsp.load_der_ocsp_response(der).certificate_status is ocsp.OCSPCertStatus.GOOD


def test_every_run_renews_the_promise_and_an_idle_loop_runs_within_it(
    built: Built, tmp_path: Path
) -> None:
    """In process: each run (a build, a spool file, a refresh of the idle follow loop: all
    `Builder.after_commit`) writes its instant plus ``ocsp.validity_seconds`` with the build
    number it moves, and the idle loop refreshes at least twice within it, with or without
    pre-signing and CRLs."""
    shutil.copytree(built.store, tmp_path / "store")
    cfg = builder_config(tmp_path, built.pki)
    cfg = msgspec.structs.replace(
        cfg,
        store=msgspec.structs.replace(cfg.store, path=str(tmp_path / "store")),
        keys=msgspec.structs.replace(cfg.keys, facts_key_file=str(built.facts_key)),
        ocsp=msgspec.structs.replace(
            cfg.ocsp, validity_seconds=VALIDITY, refresh_before_seconds=600
        ),
        crl=msgspec.structs.replace(cfg.crl, enabled=False),
    )
    b = Builder(cfg, progress=False)
    try:
        first = built.as_of + timedelta(minutes=1)
        b.build([], as_of=first)
        with b.store.read() as r:
            build = r.generation().build
            assert r.vouched() == (build, epoch(first) + VALIDITY)
            assert all(r.promised_next_update(i.index) > epoch(first) for i in r.issuers())
        later = first + timedelta(minutes=20)
        b.build([], as_of=later)
        with b.store.read() as r:
            assert r.vouched() == (build + 1, epoch(later) + VALIDITY)
        assert b.refresh_every() * 2 <= VALIDITY
    finally:
        b.close()
    for presign in (True, False):
        off = msgspec.structs.replace(
            cfg, ocsp=msgspec.structs.replace(cfg.ocsp, presign=presign, refresh_before_seconds=0)
        )
        b = Builder(off, progress=False)
        try:
            assert b.refresh_every() * 2 <= VALIDITY
        finally:
            b.close()
