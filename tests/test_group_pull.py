"""The group's CRL feed (`crlbuilder.group.pull.GroupFeed`) against a 機構 played by a local HTTP server.

In process (the server is a thread on 127.0.0.1; the CRLs are signed with the test PKI's
CA keys, dated by the test's own clock): a first pass imports the full and the delta
CRL; an unchanged file is answered 304 to If-None-Match (its ETag, kept in the store: by
another feed too, as after a restart), never downloaded again; a 429 is the agreement's
limit, not an unreachable 機構; the
full CRL fetched again after its deltas is nothing to do (the "going backwards" exit of
issue 13); a delta based on a full CRL published between the two fetches makes the pass
fetch the full CRL again; the bearer token goes to every request and never over plain
http to another host.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import io
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from crlbuilder.crl import importer as crlimport
from crlbuilder.group.pull import FetchFailed, GroupFeed, fetch, run_pull
from crlbuilder.group.setup import GroupIssuer, GroupSetup, dump_group_setup
from crlbuilder.manifest import Manifest
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.writer import Commit
from tests.support.grouppull import crl_number, staged_left
from tests.support.store import dump_store
from tests.test_crlimport import G1, G2, NOW, make_crl, pki  # noqa: F401 (its PKI fixture)
from tests.test_crlimport_adversarial import entry, invalidity_ext, raw_crl, reason_ext

TOKEN = "group-token-for-tests"


def token_file(path: Path, text: str) -> None:
    """A token file as ``group init`` writes it: 0600 (`crlbuilder.tokenfile`)."""
    path.write_text(text)
    path.chmod(0o600)


class Kikou:
    """Files by path: (ETag, body); every request recorded as (method, path, Authorization);
    304 to an If-None-Match naming the file's ETag; ``limited`` paths answer 429 as the
    responder does when the agreed cycle refuses a download (Retry-After, problem rule)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[str, bytes]] = {}
        self.requests: list[tuple[str, str, str]] = []
        self.limited: dict[str, int | str] = {}
        self.dripping: set[str] = set()
        """Paths answered with a header line a byte every 0.1 s (3.7 s), then the file."""
        self.held: set[str] = set()
        """Paths whose GET is recorded, then held until `release` (at most 60 s), then a 404."""
        self.stalled: set[str] = set()
        """Paths whose file is answered whole in its head and half in its body, the other
        half 20 s later (a download in flight: a large file, a slow link)."""
        self.released = threading.Event()
        kikou = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, body: bool) -> None:
                kikou.requests.append(
                    (self.command, self.path, self.headers.get("Authorization", ""))
                )
                if self.path in kikou.held:
                    kikou.released.wait(60)
                    self.send_error(404)
                    return
                got = kikou.files.get(self.path)
                if got and self.headers.get("If-None-Match") == got[0]:
                    self.send_response(304)
                    self.send_header("ETag", got[0])
                    self.end_headers()
                    return
                if got and self.path in kikou.dripping:
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    for b in b"X-Pad: " + b"p" * 28 + b"\r\n":
                        self.wfile.write(bytes([b]))
                        self.wfile.flush()
                        time.sleep(0.1)
                    self.wfile.write(
                        b"ETag: %s\r\nContent-Length: %d\r\n\r\n%s"
                        % (got[0].encode(), len(got[1]), got[1])
                    )
                    self.close_connection = True
                    return
                if got and self.path in kikou.stalled:
                    self.send_response(200)
                    self.send_header("ETag", got[0])
                    self.send_header("Content-Length", str(len(got[1])))
                    self.end_headers()
                    half = len(got[1]) // 2
                    self.wfile.write(got[1][:half])
                    self.wfile.flush()
                    time.sleep(20)
                    self.wfile.write(got[1][half:])
                    return
                if got and self.path in kikou.limited:
                    problem = b'{"title":"cycle","status":429}'
                    self.send_response(429)
                    self.send_header("Retry-After", str(kikou.limited[self.path]))
                    self.send_header("Content-Length", str(len(problem)))
                    self.end_headers()
                    self.wfile.write(problem)
                    return
                self.send_response(200 if got else 404)
                if got:
                    self.send_header("ETag", got[0])
                self.send_header("Content-Length", str(len(got[1]) if got else 0))
                self.end_headers()
                if body and got:
                    self.wfile.write(got[1])

            def do_GET(self) -> None:
                self._answer(True)

            def do_HEAD(self) -> None:
                self._answer(False)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def gets(self, *paths: str) -> list[str]:
        """The paths asked, in order (only ``paths``, when given)."""
        return [p for m, p, _ in self.requests if m == "GET" and (not paths or p in paths)]


@pytest.fixture
def kikou() -> Iterator[Kikou]:
    k = Kikou()
    t = threading.Thread(target=k.server.serve_forever, daemon=True)
    t.start()
    try:
        yield k
    finally:
        k.released.set()  # held answers end (a pull killed while it waited for one)
        k.server.shutdown()


def group_issuer(pki: Manifest, issuer: str, index: int, url: str, suffix: str) -> GroupIssuer:  # noqa: F811
    i = pki.issuer(issuer)
    return GroupIssuer(
        id=issuer, family=i.family, generation=i.generation, index=index,
        cert=str(pki.path(i.cert)), sha256="0" * 64,
        crl_url=f"{url}/f{suffix}.crl", delta_crl_url=f"{url}/d{suffix}.crl",
    )  # fmt: skip


def two_issuer_setup(pki: Manifest, url: str, directory: Path, token: str) -> GroupSetup:  # noqa: F811
    """A group fed from ``url`` with two issuers (G1 at /f.crl and /d.crl, G2 at /f2.crl and
    /d2.crl), its ``token`` written to ``directory``/token, its store ``directory``/store."""
    token_file(directory / "token", token + "\n")
    setup = GroupSetup(
        group_id="g", authority=url, token_file="token", cycle_seconds=1,
        responder_cert="unused.pem", responder_key="unused.key", store="store",
        issuers=[group_issuer(pki, G1, 1, url, ""), group_issuer(pki, G2, 2, url, "2")],
    )  # fmt: skip
    setup.directory = str(directory)
    return setup


@pytest.fixture
def feed(pki: Manifest, kikou: Kikou, tmp_path: Path) -> Iterator[GroupFeed]:  # noqa: F811
    """The group's feed of two issuers: G1 at /f.crl and /d.crl, G2 at /f2.crl and /d2.crl."""
    setup = two_issuer_setup(pki, kikou.url, tmp_path, TOKEN)
    store = Store.open(tmp_path / "store", readonly=False)
    try:
        yield GroupFeed(setup, store, clock=lambda: NOW, log=io.StringIO())
    finally:
        store.close()


def statuses(feed: GroupFeed) -> list[str]:
    """G1's full and delta outcomes of one pass (G2's files are served by the tests that
    need them; absent, they are refused as unreachable)."""
    return [o.status for o in feed.pass_once() if o.issuer == G1]


def test_unchanged_files_are_not_downloaded_and_the_same_full_crl_is_nothing_to_do(
    feed: GroupFeed,
    kikou: Kikou,
    pki: Manifest,  # noqa: F811
) -> None:
    full10 = make_crl(pki, G1, 10, [(5, 1, 1)])
    kikou.files = {
        "/f.crl": ('"f10"', full10),
        "/d.crl": ('"d11"', make_crl(pki, G1, 11, [(6, 1, 1)], delta_base=10)),
    }
    assert statuses(feed) == ["imported", "imported"]
    assert statuses(feed) == ["unchanged", "unchanged"]  # 304 to If-None-Match
    kikou.files["/d.crl"] = ('"d12"', make_crl(pki, G1, 12, [(6, 1, 1), (7, 1, 1)], delta_base=10))
    assert statuses(feed) == ["unchanged", "imported"]
    kikou.files["/f.crl"] = ('"f10-again"', full10)  # the same full CRL, served anew
    assert statuses(feed) == ["already-imported", "unchanged"]
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth in kikou.requests)


def test_a_delta_ahead_of_the_full_crl_fetches_the_full_crl_again(
    feed: GroupFeed,
    kikou: Kikou,
    pki: Manifest,  # noqa: F811
) -> None:
    """The 機構 published full 12 and delta 13 while the pull read the unchanged full 10."""
    kikou.files = {"/f.crl": ('"f"', make_crl(pki, G1, 10, [(5, 1, 1)]))}
    assert statuses(feed) == ["imported", "absent"]  # no delta published: not a failure
    kikou.files = {
        "/f.crl": ('"f"', make_crl(pki, G1, 12, [(5, 1, 1), (8, 1, 1)])),  # same ETag: skipped
        "/d.crl": ('"d13"', make_crl(pki, G1, 13, [(9, 1, 1)], delta_base=12)),
    }
    got = [o for o in feed.pass_once() if o.issuer == G1]
    assert [o.status for o in got] == ["imported", "imported"], got
    assert [o.number for o in got] == [12, 13]


def test_a_delta_that_takes_an_erased_entry_off_removes_it_from_the_group(
    feed: GroupFeed,
    kikou: Kikou,
    pki: Manifest,  # noqa: F811
) -> None:
    """The 機構 erased a record past its retention (Ord §70(1)(iii)): the delta on the same
    base lists it removeFromCRL (8) (`crlbuilder.crl.publish`), every later delta on that base
    again, and the next full CRL not at all. The pull removes it at the first such delta; the
    repeats and the next full CRL change nothing; the log line counts the removal."""
    full10 = make_crl(pki, G1, 10, [(5, 1, 1), (6, 1, 1)])
    kikou.files = {"/f.crl": ('"f10"', full10)}
    assert statuses(feed) == ["imported", "absent"]
    kikou.files["/d.crl"] = ('"d11"', make_crl(pki, G1, 11, [(5, 2, 8)], delta_base=10))
    got = [o for o in feed.pass_once() if o.issuer == G1]
    assert [(o.status, o.removed, o.added) for o in got] == [
        ("unchanged", 0, 0),
        ("imported", 1, 0),
    ]

    def held() -> set[int]:
        with feed.store.read() as r:
            return {int.from_bytes(k[2:], "big") for k, _ in r.revocations(1)}

    assert held() == {6}
    kikou.files["/d.crl"] = ('"d12"', make_crl(pki, G1, 12, [(5, 2, 8), (7, 3, 1)], delta_base=10))
    got = [o for o in feed.pass_once() if o.issuer == G1]
    assert [(o.status, o.removed, o.added) for o in got] == [
        ("unchanged", 0, 0),
        ("imported", 0, 1),
    ]
    assert held() == {6, 7}
    kikou.files["/f.crl"] = ('"f13"', make_crl(pki, G1, 13, [(6, 1, 1), (7, 3, 1)]))
    kikou.files["/d.crl"] = ('"d14"', make_crl(pki, G1, 14, [], delta_base=13))
    got = [o for o in feed.pass_once() if o.issuer == G1]
    assert [(o.status, o.removed, o.added) for o in got] == [("imported", 0, 0), ("imported", 0, 0)]
    assert held() == {6, 7}
    assert isinstance(feed.log, io.StringIO)
    lines = [msgspec.json.decode(x) for x in feed.log.getvalue().splitlines()]
    assert [x.get("removed") for x in lines if x.get("number") == 11] == [1]


def test_another_issuers_crl_at_an_issuers_url_is_refused_and_nothing_is_written(
    feed: GroupFeed,
    kikou: Kikou,
    pki: Manifest,  # noqa: F811
) -> None:
    """The 機構 serves G2's genuine CRL at G1's URL (a mix-up on its side): refused for G1, and
    the store unchanged: G2's data is G2's own file's to change, at its own URL."""
    kikou.files = {
        "/f.crl": ('"f10"', make_crl(pki, G1, 10, [(5, 1, 1)])),
        "/f2.crl": ('"g20"', make_crl(pki, G2, 20, [(6, 1, 1)])),
    }
    assert [o.status for o in feed.pass_once()] == ["imported", "absent"] * 2
    before = dump_store(feed.store)
    kikou.files["/f.crl"] = ('"mixed"', make_crl(pki, G2, 21, [(6, 1, 1), (7, 1, 1)]))
    got = feed.pass_once()
    assert [o.status for o in got] == ["refused", "absent", "unchanged", "absent"], got
    assert f"{G2}'s, not {G1}'s" in got[0].detail
    assert dump_store(feed.store) == before


def test_a_delta_with_a_critical_entry_extension_is_refused_whole(
    feed: GroupFeed,
    kikou: Kikou,
    pki: Manifest,  # noqa: F811
) -> None:
    """RFC 5280 §5.3: reasonCode and invalidityDate are non-critical. A delta marking one
    critical (its other entries well formed) was taken; it is refused whole, the store as it
    was, the outcome naming the extension, and the next pass tries it again (not skipped as
    seen)."""
    kikou.files = {"/f.crl": ('"f10"', make_crl(pki, G1, 10, [(5, 1, 1)]))}
    assert statuses(feed) == ["imported", "absent"]
    before = dump_store(feed.store)
    bad = raw_crl(
        pki, G1, 11,
        [
            entry(6, int(NOW.timestamp()) - 60, reason_ext(1)),
            entry(7, int(NOW.timestamp()) - 60, reason_ext(1), invalidity_ext(NOW, critical=True)),
        ],
        delta_base=10, this_update=NOW,
    )  # fmt: skip
    kikou.files["/d.crl"] = ('"d11"', bad)
    got = [o for o in feed.pass_once() if o.issuer == G1]
    assert [o.status for o in got] == ["unchanged", "refused"], got
    assert "invalidityDate (2.5.29.24) is marked critical" in got[1].detail
    assert dump_store(feed.store) == before
    assert statuses(feed) == ["unchanged", "refused"]  # asked again, refused again


@pytest.mark.parametrize(
    "url",
    [
        "http://va.example/crl/x.crl",
        # a host name that begins like a loopback address is a name like any other: it
        # resolves wherever its owner says (127.0.0.1.nip.io-style names, 127.example)
        "http://127.0.0.1.example.invalid/crl/x.crl",
        "http://127.example.invalid/crl/x.crl",
        "http://localhost.example.invalid/crl/x.crl",
    ],
)
def test_the_token_never_goes_over_plain_http_to_another_host(url: str) -> None:
    """A host name starting with ``127.`` passed the check as loopback: the token went in
    clear to wherever the name resolved. Loopback is ``localhost`` or a loopback address."""
    with pytest.raises(FetchFailed, match="plain http"):
        fetch(url, TOKEN)
    with pytest.raises(FetchFailed, match="http"):
        fetch("file:///etc/passwd", TOKEN)


def test_import_crl_by_hand_on_a_group_appliance(
    kikou: Kikou,
    pki: Manifest,  # noqa: F811
    tmp_path: Path,
) -> None:
    """docs/operations.md: `crlbuilder import-crl --group DIR SOURCE` imports a file by hand into
    a group appliance's store, with the issuers (and indexes) of its group.json, its store and
    its token: a group has no pki.json, and the 機構's would number the issuers otherwise."""
    token_file(tmp_path / "token", TOKEN + "\n")
    setup = GroupSetup(
        group_id="g", authority=kikou.url, token_file="token", cycle_seconds=1,
        responder_cert="unused.pem", responder_key="unused.key", store="store",
        issuers=[
            msgspec.structs.replace(i, sha256=cert_sha256(Path(i.cert)))
            for i in (group_issuer(pki, G1, 1, kikou.url, ""), group_issuer(pki, G2, 2, kikou.url, "2"))
        ],
    )  # fmt: skip
    dump_group_setup(setup, tmp_path)
    kikou.files = {"/f2.crl": ('"g20"', make_crl(pki, G2, 20, [(6, 1, 1)]))}
    crl = tmp_path / "g1.crl"
    crl.write_bytes(make_crl(pki, G1, 10, [(5, 1, 1)]))
    p = argparse.ArgumentParser()
    crlimport.add_cli(p.add_subparsers())
    log = io.StringIO()
    args = p.parse_args(
        ["import-crl", "--group", str(tmp_path), "--as-of", NOW.isoformat(), str(crl),
         f"{kikou.url}/f2.crl"]
    )  # fmt: skip
    assert args.func(args, log=log) == 0, log.getvalue()
    assert kikou.requests == [("GET", "/f2.crl", f"Bearer {TOKEN}")]
    # a group receives the signature CRL files only (Act §18(2)), by hand as by the pull
    auth = next(i for i in pki.issuers if not i.family.is_sign)
    setup.issuers.append(
        msgspec.structs.replace(
            group_issuer(pki, auth.id, 3, kikou.url, "3"), sha256=cert_sha256(pki.path(auth.cert))
        )
    )
    dump_group_setup(setup, tmp_path)
    crl.write_bytes(make_crl(pki, auth.id, 1, [(5, 1, 1)]))
    args = p.parse_args(
        ["import-crl", "--group", str(tmp_path), "--as-of", NOW.isoformat(), str(crl)]
    )
    assert args.func(args, log=log) == 1 and "unknown issuer" in log.getvalue()
    store = Store.open(tmp_path / "store", readonly=True)
    try:
        with store.read() as r:
            assert {m.id: m.index for m in r.issuers()} == {G1: 1, G2: 2}
            assert (r.crl_state(1).number, r.crl_state(2).number) == (10, 20)
    finally:
        store.close()


def cert_sha256(path: Path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def _group_dir(pki: Manifest, kikou: Kikou, tmp_path: Path) -> Path:  # noqa: F811
    """A group directory (group.json) whose issuer G1 is fed from ``kikou``."""
    g = tmp_path / "group"
    g.mkdir()
    token_file(g / "token", TOKEN + "\n")
    issuer = group_issuer(pki, G1, 1, kikou.url, "")
    issuer = msgspec.structs.replace(issuer, sha256=cert_sha256(Path(issuer.cert)))
    setup = GroupSetup(
        group_id="g", authority=kikou.url, token_file="token", cycle_seconds=1,
        responder_cert="unused.pem", responder_key="unused.key", store="store",
        issuers=[issuer],
    )  # fmt: skip
    dump_group_setup(setup, g)
    return g


def test_a_pull_that_imports_nothing_leaves_no_new_store(
    kikou: Kikou,
    pki: Manifest,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing served (404), then a CRL refused, then no token: each run exits non-zero and
    leaves no store (the responder would take an empty one for the group's); a CRL imported
    keeps it."""
    g = _group_dir(pki, kikou, tmp_path)
    args = argparse.Namespace(group=g, follow=False, timeout=5.0, min_rate=1 << 20)
    assert run_pull(args) == 1
    assert "no CRL imported: no store made" in capsys.readouterr().err
    assert not (g / "store").exists()
    now = datetime.now(UTC)
    kikou.files["/f.crl"] = ('"x"', b"\x30\x03\x02\x01")
    assert run_pull(args) == 1
    assert not (g / "store").exists()
    (g / "token").write_text("")
    assert run_pull(args) == 2
    assert "the token file is empty" in capsys.readouterr().err
    assert not (g / "store").exists()
    (g / "token").write_text(TOKEN)
    good = make_crl(pki, G1, 10, [(5, 1, 1)], this_update=now - timedelta(minutes=1))
    kikou.files["/f.crl"] = ('"f10"', good)
    assert run_pull(args) == 0, capsys.readouterr().err
    assert (g / "store" / "data.mdb").is_file()


def test_a_restarted_feed_asks_with_the_etag_the_store_keeps(
    feed: GroupFeed,
    kikou: Kikou,
    pki: Manifest,  # noqa: F811
) -> None:
    """The ETags live in the issuer's CrlState, written with the import: a new feed on the same
    store (a restart, or `--follow` after a one-off pull) gets 304s, downloads nothing again.
    A store written before the field (its CrlState JSON without it) still opens: each file is
    downloaded once more (already imported) and its ETag kept from then on."""
    kikou.files = {
        "/f.crl": ('"f10"', make_crl(pki, G1, 10, [(5, 1, 1)])),
        "/d.crl": ('"d11"', make_crl(pki, G1, 11, [(6, 1, 1)], delta_base=10)),
    }
    assert statuses(feed) == ["imported", "imported"]
    with feed.store.read() as r:
        state = r.crl_state(1)
    assert (state.pulled_full, state.pulled_delta) == (
        sf.PulledFile(etag='"f10"', number=10),
        sf.PulledFile(etag='"d11"', number=11),
    )
    restarted = GroupFeed(feed.setup, feed.store, clock=lambda: NOW, log=io.StringIO())
    assert statuses(restarted) == ["unchanged", "unchanged"]
    assert [o.number for o in restarted.pass_once() if o.issuer == G1] == [10, 11]

    # the store of an earlier version: the same state, its JSON without the two fields
    old = msgspec.json.decode(msgspec.json.encode(state))
    assert old.pop("pulled_full") and old.pop("pulled_delta")
    key = sf.META_CRL_STATE_PREFIX + sf.pack_u32(1)
    with feed.store.env.begin(write=True) as t:
        t.put(key, msgspec.json.encode(old), db=feed.store.dbs[sf.DB_META])
    with feed.store.read() as r:
        reread = r.crl_state(1)
    assert reread.pulled_full is None and reread.number == 11 and reread.base_commit
    assert statuses(restarted) == ["already-imported", "already-imported"]
    again = GroupFeed(feed.setup, feed.store, clock=lambda: NOW, log=io.StringIO())
    assert statuses(again) == ["unchanged", "unchanged"]


def test_an_etag_is_trusted_only_while_the_store_holds_its_crl(
    feed: GroupFeed,
    kikou: Kikou,
    pki: Manifest,  # noqa: F811
) -> None:
    """A kept ETag whose CRL number is above what the store holds (a state written over by
    hand, an older store restored under it) is not sent: the file is downloaded again."""
    kikou.files = {"/f.crl": ('"f10"', make_crl(pki, G1, 10, [(5, 1, 1)]))}
    assert statuses(feed) == ["imported", "absent"]
    with feed.store.read() as r:
        state = r.crl_state(1)
    ahead = msgspec.structs.replace(state, pulled_full=sf.PulledFile(etag='"f10"', number=11))
    with Commit(feed.store) as c:
        c.put_crl_state(1, ahead)
    assert feed.pulled(feed.setup.issuers[0], "full") is None
    assert statuses(feed) == ["already-imported", "absent"]
    assert feed.pulled(feed.setup.issuers[0], "full") == sf.PulledFile(etag='"f10"', number=10)


def test_a_429_is_the_agreed_cycle_not_an_unreachable_kikou(
    feed: GroupFeed,
    kikou: Kikou,
    pki: Manifest,  # noqa: F811
) -> None:
    """A changed file the 機構 will not provide before the agreed cycle passes: ``limited``,
    logged with the time of the next try (its Retry-After), the pass not failed, the next
    pass at that time (at most a cycle)."""
    kikou.files = {"/f.crl": ('"f10"', make_crl(pki, G1, 10, [(5, 1, 1)]))}
    assert statuses(feed) == ["imported", "absent"]
    kikou.files["/f.crl"] = ('"f12"', make_crl(pki, G1, 12, [(5, 1, 1), (7, 1, 1)]))
    kikou.limited["/f.crl"] = 30
    setup = msgspec.structs.replace(feed.setup, issuers=feed.setup.issuers[:1], cycle_seconds=60)
    setup.directory = feed.setup.directory
    log = io.StringIO()
    following = GroupFeed(setup, feed.store, clock=lambda: NOW, log=log)
    assert following.follow(threading.Event(), max_passes=1) == 1
    lines = [msgspec.json.decode(x) for x in log.getvalue().splitlines()]
    full = next(x for x in lines if x.get("kind") == "full" and x.get("issuer") == G1)
    at = (NOW + timedelta(seconds=30)).isoformat(timespec="seconds")
    assert full["status"] == "limited" and full["retry_after"] == 30, full
    assert full["detail"].startswith("the agreed cycle (取決め"), full
    assert full["detail"].endswith(f"; next try at {at}"), full
    assert "unreachable" not in log.getvalue()
    (pass_,) = [x for x in lines if x["event"] == "group-pass"]
    assert (pass_["status"], pass_["next_in"]) == ("ok", 30), pass_


@pytest.mark.parametrize(
    ("retry_after", "said"),
    [("999999999999", 60), ("99999999999", 60), ("\u00b2", 0), ("1e3", 0), ("-5", 0)],
)
@pytest.mark.parametrize("others_fail", [False, True])
def test_a_retry_after_past_the_cycle_or_not_a_number_never_stops_the_feed(
    feed: GroupFeed,
    kikou: Kikou,
    pki: Manifest,  # noqa: F811
    retry_after: str,
    said: int,
    others_fail: bool,
) -> None:
    """A Retry-After of 31,688 years made the pass raise OverflowError (the next try's date
    past year 9999) and `pull --follow` exit; one past `threading.TIMEOUT_MAX` (292 years) made
    its wait raise; one of a week would have held the pull a week (the wait was capped at the
    cycle only when no other file failed); ``²`` (latin-1 0xB2, a digit to `str.isdigit`)
    raised ValueError out of the pass. The 機構 never makes a group wait more than its cycle
    (提供の周期, Ord §33(2)): a Retry-After is the delay-seconds of RFC 9110 §10.2.3 (ASCII
    digits), taken up to the cycle; anything else is no Retry-After."""
    kikou.files = {"/f.crl": ('"f10"', make_crl(pki, G1, 10, [(5, 1, 1)]))}
    assert statuses(feed) == ["imported", "absent"]
    kikou.files["/f.crl"] = ('"f12"', make_crl(pki, G1, 12, [(5, 1, 1), (7, 1, 1)]))
    kikou.limited["/f.crl"] = retry_after
    issuers = feed.setup.issuers if others_fail else feed.setup.issuers[:1]  # G2: 404, failed
    setup = msgspec.structs.replace(feed.setup, issuers=issuers, cycle_seconds=60)
    setup.directory = feed.setup.directory
    log = io.StringIO()
    following = GroupFeed(setup, feed.store, clock=lambda: NOW, log=log)
    assert following.follow(threading.Event(), max_passes=1) == 1
    lines = [msgspec.json.decode(x) for x in log.getvalue().splitlines()]
    full = next(x for x in lines if x.get("kind") == "full" and x.get("issuer") == G1)
    assert (full["status"], full["retry_after"]) == ("limited", said), full
    at = (NOW + timedelta(seconds=said)).isoformat(timespec="seconds")
    assert full["detail"].endswith(f"; next try at {at}"), full
    (pass_,) = [x for x in lines if x["event"] == "group-pass"]
    assert 1 <= pass_["next_in"] <= 60, pass_


def test_a_pull_cut_by_its_deadline_leaves_the_group_as_it_was(
    feed: GroupFeed,
    kikou: Kikou,
    pki: Manifest,  # noqa: F811
) -> None:
    """The 機構 drips the header lines of a new full CRL, a byte every 0.1 s (3.7 s): each
    read well within a 1 s timeout, so the pull waited them out (here 3.7 s, then cut by the
    body's deadline, this feed's 1 s cycle; with a cycle of an hour it imported the file). The
    whole request is cut at 1 s now: ``unreachable``, saying the store is unchanged; the store
    still holds CRL 10 and its ETag, and the next pass (the 機構 well again) imports CRL 12."""
    kikou.files = {"/f.crl": ('"f10"', make_crl(pki, G1, 10, [(5, 1, 1)]))}
    assert statuses(feed) == ["imported", "absent"]
    with feed.store.read() as r:
        before = r.crl_state(1)
    kikou.files["/f.crl"] = ('"f12"', make_crl(pki, G1, 12, [(5, 1, 1), (8, 1, 1)]))
    kikou.dripping.add("/f.crl")
    feed.timeout = 1.0
    t0 = time.monotonic()
    full = next(o for o in feed.pass_once() if o.issuer == G1 and o.kind == "full")
    assert (full.status, full.seconds < 2.0) == ("unreachable", True), (full, full.seconds)
    assert "deadline" in full.detail and "nothing imported, the store unchanged" in full.detail
    assert time.monotonic() - t0 < 6.0  # G2's files are absent: refused at once
    with feed.store.read() as r:
        assert r.crl_state(1) == before
    kikou.dripping.clear()
    assert statuses(feed) == ["imported", "absent"]
    with feed.store.read() as r:
        assert r.crl_state(1).number == 12


def kikou_gets(kikou: Kikou) -> int:
    return sum(1 for m, path, _ in kikou.requests if m == "GET" and path == "/f.crl")


@pytest.mark.real_clock  # the follow loop's timed waits (its backoff) hang under libfaketime
def test_a_follow_whose_passes_fail_shows_no_store_until_its_first_import(
    kikou: Kikou,
    pki: Manifest,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`group pull --follow` made the store at its first pass and deleted it only when the
    loop ended: while its passes failed, the responder beside it (and an operator) found an
    empty store. Now the place stays empty until a CRL is imported, then holds that data."""
    import crlbuilder.group.pull as pull

    g = _group_dir(pki, kikou, tmp_path)
    stops: list[threading.Event] = []
    monkeypatch.setattr(pull, "_stop_on_signals", stops.append)
    monkeypatch.setattr(pull, "BACKOFF_START", 0.05)
    rcs: list[int] = []
    t = threading.Thread(
        target=lambda: rcs.append(
            run_pull(argparse.Namespace(group=g, follow=True, timeout=5.0, min_rate=1 << 20))
        )
    )
    t.start()
    try:
        deadline = time.monotonic() + 20
        while kikou_gets(kikou) < 3 and time.monotonic() < deadline:  # three failed passes
            time.sleep(0.02)
        assert kikou_gets(kikou) >= 3
        assert not (g / "store").exists()
        good = make_crl(
            pki, G1, 10, [(5, 1, 1)], this_update=datetime.now(UTC) - timedelta(minutes=1)
        )
        kikou.files["/f.crl"] = ('"f10"', good)
        while not (g / "store").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (g / "store" / "data.mdb").is_file()
    finally:
        while not stops:
            time.sleep(0.01)
        stops[0].set()
        t.join(10)
    assert rcs == [0]
    assert sorted(p.name for p in g.iterdir()) == ["group.json", "store", "token"]
    assert crl_number(g) == 10  # what the responder reads: the CRL's data


def test_a_staged_store_left_by_a_crash_is_swept_and_a_live_one_refuses_another(
    tmp_path: Path,
) -> None:
    place = tmp_path / "store"
    crashed = Store.open_staged(place)
    crashed_path = crashed.path
    os.close(crashed.writer_lock.pop())  # its writer gone: its lock is free
    crashed.env.close()
    live = Store.open_staged(place)
    try:
        assert not crashed_path.exists() and live.path.exists() and not place.exists()
        with pytest.raises(sf.StoreFormatError, match=rf"another .* at {live.path.name}\)"):
            Store.open_staged(place)  # one writer at a time: a live one's staged store refuses
        assert live.path.exists()
    finally:
        live.discard()
    again = Store.open_staged(place)
    again.discard()
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_under_the_store_is_one_line_and_exit_1(
    kikou: Kikou,
    pki: Manifest,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write the store cannot take (its disk or map full: `StoreWriteError`, the import
    aborted, the store at its last commit) escaped `group pull` as a traceback, through
    ``--follow`` too; it is one line naming the store and exit 1 now, as ``build`` says it."""
    g = _group_dir(pki, kikou, tmp_path)
    now = datetime.now(UTC)
    kikou.files["/f.crl"] = (
        '"f10"',
        make_crl(pki, G1, 10, [], this_update=now - timedelta(minutes=1)),
    )
    args = argparse.Namespace(group=g, follow=False, timeout=5.0, min_rate=1 << 20)
    assert run_pull(args) == 0
    capsys.readouterr()
    kikou.files["/f.crl"] = (
        '"f12"',
        make_crl(pki, G1, 12, [], this_update=now - timedelta(minutes=1)),
    )

    def full(*args: object, **kwargs: object) -> None:
        raise sf.StoreWriteError(f"{g / 'store'}: the disk is full (MDB_MAP_FULL)")

    monkeypatch.setattr(crlimport.CrlImporter, "import_der", full)
    assert run_pull(args) == 1
    err = capsys.readouterr().err
    assert err.endswith(
        f"crlbuilder group pull: error: {g / 'store'}: the disk is full (MDB_MAP_FULL)\n"
    )
    assert "Traceback" not in err


def test_a_token_file_others_may_read_or_not_a_file_is_refused(
    kikou: Kikou,
    pki: Manifest,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The group's token (its credential for the 機構) was read whatever its mode (a copy made
    0644 went on being used unnoticed, where every other secret of the product is refused so)
    and however it was replaced: a named pipe held the pull in ``open`` for ever (SIGTERM
    unheard). Refused now, exit 2, saying why; nothing asked of the 機構."""
    g = _group_dir(pki, kikou, tmp_path)
    args = argparse.Namespace(group=g, follow=False, timeout=5.0, min_rate=1 << 20)
    (g / "token").chmod(0o644)
    assert run_pull(args) == 2
    err = capsys.readouterr().err
    assert "mode 0644 lets group or others read it: it must be 0600" in err, err
    assert TOKEN not in err
    (g / "token").unlink()
    os.mkfifo(g / "token", 0o600)
    rcs: list[int] = []
    t = threading.Thread(target=lambda: rcs.append(run_pull(args)), daemon=True)
    t.start()
    t.join(20)
    assert rcs == [2]  # not held in open() by a pipe nobody writes
    assert "the token file is not a regular file" in capsys.readouterr().err
    assert kikou.requests == []
    assert not (g / "store").exists()


class _Killed(BaseException):
    """A kill at an instant chosen by the test (the process ends: nothing runs after it)."""


def test_a_pull_killed_between_its_first_import_and_the_rename_loses_nothing(
    kikou: Kikou,
    pki: Manifest,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The first import of a new store commits in the staged store, then `Store.publish`
    renames it into place. Killed between the two (the import's commit done, the rename
    not), the next run swept the staged store as a crash's leftover and downloaded the
    file again, which the 機構 refuses within the agreed cycle (429 ``cycle``): no store for
    up to a cycle, the download counted twice. The next run now puts a dead writer's staged
    store that holds an import in place (it is what that writer would have published) and
    asks with the ETag it keeps: 304."""
    g = _group_dir(pki, kikou, tmp_path)
    full = make_crl(pki, G1, 10, [(5, 1, 1)], this_update=datetime.now(UTC) - timedelta(minutes=1))
    kikou.files["/f.crl"] = ('"f10"', full)
    opened: list[Store] = []
    real_open = Store.open_staged

    def keep(path: Path, **kw: int) -> Store:
        opened.append(real_open(path, **kw))
        return opened[-1]

    def kill(self: Store) -> Store:
        raise _Killed

    args = argparse.Namespace(group=g, follow=False, timeout=5.0, min_rate=1 << 20)
    with monkeypatch.context() as m:
        m.setattr(Store, "open_staged", staticmethod(keep))
        m.setattr(Store, "publish", kill)
        m.setattr("crlbuilder.group.pull._close", lambda store: None)  # the process is gone
        with pytest.raises(_Killed):
            run_pull(args)
    (staged,) = opened
    os.close(staged.writer_lock.pop())  # its writer dead: the lock goes with it
    staged.env.close()
    assert staged.path.exists() and not (g / "store").exists()
    assert kikou.gets() == ["/f.crl"]
    kikou.limited["/f.crl"] = 3600  # downloaded a moment ago: the cycle refuses another
    capsys.readouterr()
    assert run_pull(args) == 0, capsys.readouterr().err
    assert '"status": "unchanged"' in capsys.readouterr().err  # asked with its ETag: 304
    assert kikou.gets("/f.crl") == ["/f.crl", "/f.crl"]
    assert crl_number(g) == 10
    assert not staged_left(g)  # no staged store left


def test_two_pulls_making_the_store_in_the_same_instant_one_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second pull is refused while the first stages the store, but the check (the sweep,
    which finds a live writer's staged store by its lock) and the staging (the directory
    made, then locked) were two steps: two pulls started in the same instant both found
    nothing, both staged, both downloaded every file (the 機構 counting each twice) and the
    second to import failed to rename onto the first's store. The sweep is widened here
    to 0.3 s, as a loaded machine may; the two steps are one now (the parent directory's
    lock), so the second finds the first's staged store and is refused."""
    from crlbuilder.store import lmdbstore

    real = lmdbstore._sweep_staged

    def slow(p: Path) -> str:
        live = real(p)
        time.sleep(0.3)
        return live

    monkeypatch.setattr(lmdbstore, "_sweep_staged", slow)
    place = tmp_path / "store"
    got: list[Store | Exception] = []
    start = threading.Barrier(2)

    def stage() -> None:
        start.wait()
        try:
            got.append(Store.open_staged(place))
        except sf.StoreFormatError as e:
            got.append(e)

    threads = [threading.Thread(target=stage) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    stores = [s for s in got if isinstance(s, Store)]
    refused = [e for e in got if isinstance(e, sf.StoreFormatError)]
    try:
        assert len(stores) == 1 and len(refused) == 1, got
        assert "another process is writing this store" in str(refused[0])
    finally:
        for s in stores:
            s.discard()
