"""CRL files (失効情報ファイル) through the real responder: HEAD provides nothing, downloads hold
no copies, a replaced file is served new (follow-ups of issue 10, items 7 and 11).

- HEAD ``/crl/{file}`` answered what GET answers, and counted in the ledger (帳簿, Act §40)
  and used up the party's CRL cycle (周期, Ord §31(2)) for nothing: now it answers the
  header fields, counts nothing and uses nothing.
- Each download read the file into a copy of its own, held until the client had read
  it: N slow downloads of a large CRL grew the worker by N × the file. Now every
  download is a view of one memory map per file per worker.
- crlbuilder replaces a CRL by renaming a new file over it: the next request gets the
  new file, a download in flight finishes with the old one, whole.
- A file that was not one whole CRL (cut short, written in place) was served as it was
  and counted as a download (decision C of the public routes' reading): now it is 503,
  nothing counted, its bytes not sent, counted in jpkiva_crl_file_broken_total and
  logged once per worker.
- A node that had not yet received the newest CRL handed a party that held it (its
  If-None-Match named it) the older file: now 503, nothing counted, counted in
  jpkiva_crl_file_behind_total.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import socket
import time
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from crlbuilder.der import der_header
from responder.crlfiles import CrlFiles
from tests.conftest import Built, run_tool
from tests.support.harness import Server, start_server
from tests.test_http_hardening import _counted, _request

FILE = "sign-card-g1.crl"
"""A full CRL that sig-verifier (a 署名検証者, Act §18(1)) may download."""
PARTY = "sig-verifier"


def _crl_dir(built: Built, d: Path) -> Path:
    """A copy of the demo CRL directory that the test may replace files in."""
    crl = d / "crl"
    shutil.copytree(built.crl_dir, crl)
    return crl


@pytest.mark.real_clock  # the cycle change reaches workers by their timed registry watch
def test_head_on_a_crl_neither_counts_nor_uses_the_cycle(built: Built, tmp_path: Path) -> None:
    with start_server(built, tmp_path) as s:
        run_tool(
            "responder", "registry", "update", "--id", PARTY, "--crl-cycle", "3600",
            "--registry", str(s.registry), "--actor", "test",
        )  # fmt: skip
        time.sleep(1.2)  # the workers take the change within a second
        token = s.token(PARTY)
        size = (built.crl_dir / FILE).stat().st_size
        for _ in range(5):
            head = _request(s, "HEAD", f"/crl/{FILE}", token)
            assert head.status == 200
            assert int(head.getheader("Content-Length") or -1) == size
            assert head.getheader("Last-Modified") and head.getheader("ETag")
        assert _counted(tmp_path / "ledger", PARTY) == 0
        get = _request(s, "GET", f"/crl/{FILE}", token)  # the cycle was not used by the HEADs
        assert get.status == 200 and get.getheader("ETag") == head.getheader("ETag")
        assert _counted(tmp_path / "ledger", PARTY) == 1
        # within the cycle: GET and HEAD both refused, and still one count
        assert _request(s, "GET", f"/crl/{FILE}", token).status == 429
        refused = _request(s, "HEAD", f"/crl/{FILE}", token)
        assert refused.status == 429 and refused.getheader("Retry-After")
        assert _counted(tmp_path / "ledger", PARTY) == 1
        # the file the party holds, named by If-None-Match: 304 within the cycle, nothing
        # counted (a group's pull restarted, crlbuilder.group.pull); another ETag: 429
        etag = str(get.getheader("ETag"))
        host, port = urllib.parse.urlsplit(s.url).netloc.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        for method, tags in [("GET", etag), ("HEAD", etag), ("GET", f'"x", W/{etag}'),
                             ("GET", "*"), ("GET", '"other"')]:  # fmt: skip
            conn.request(
                method, f"/crl/{FILE}",
                headers={"Authorization": f"Bearer {token}", "If-None-Match": tags},
            )  # fmt: skip
            resp = conn.getresponse()
            body = resp.read()
            if tags == '"other"':
                assert resp.status == 429, (method, tags)
                continue
            assert (resp.status, body, resp.getheader("ETag")) == (304, b"", etag), (method, tags)
            # the length a 200 would carry, and no body on the connection (it is reused)
            assert int(resp.getheader("Content-Length") or -1) == size
        conn.close()
        assert _counted(tmp_path / "ledger", PARTY) == 1


def _workers(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _rss_anon(pids: list[int]) -> int:
    """Anonymous resident memory of ``pids`` in bytes (copies; mapped file pages are not in it)."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                total += int(line.split()[1]) * 1024
    return total


@contextlib.contextmanager
def _unread_downloads(s: Server, name: str, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections that ask for ``name`` and do not read (small receive buffers)."""
    host, port = urllib.parse.urlsplit(s.url).netloc.split(":")
    request = (
        f"GET /crl/{name} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {s.token(PARTY)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(10)
            sock.connect((host, int(port)))
            sock.sendall(request)
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _answered(sock: socket.socket) -> bytearray:
    """What the client has read once the answer's header has come (the download has begun)."""
    data = bytearray()
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, "closed before the answer"
        data += chunk
    return data


def _body(sock: socket.socket, data: bytearray) -> bytes:
    """The rest of the answer begun with ``data``: its body."""
    while chunk := sock.recv(1 << 20):
        data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head[:100]
    return body


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + content


def _large_crl(template: bytes, size: int) -> bytes:
    """A whole CertificateList of about ``size`` bytes: ``template``'s tbsCertList and
    signatureAlgorithm with a random signatureValue that long (the responder never checks
    the signature; a party would). Another call: another file."""
    _, start, end = der_header(template, 0, len(template))
    _, _, tbs_end = der_header(template, start, end)
    _, _, alg_end = der_header(template, tbs_end, end)
    signature = _tlv(0x03, b"\x00" + os.urandom(size))
    return _tlv(0x30, template[start:alg_end] + signature)


def test_slow_downloads_share_one_map_and_a_replaced_file_is_served_new(
    built: Built, tmp_path: Path
) -> None:
    size, count = 8 << 20, 16
    crl = _crl_dir(built, tmp_path)
    template = (crl / FILE).read_bytes()
    old = _large_crl(template, size)
    (crl / FILE).write_bytes(old)
    with start_server(built, tmp_path, extra=("--crl-dir", str(crl))) as s:
        workers = _workers(s.pid)
        assert len(workers) == 2
        for _ in range(4):  # each worker maps the file once (whichever answers)
            assert _request(s, "GET", f"/crl/{FILE}", s.token(PARTY)).status == 200
        before = _rss_anon(workers)
        with _unread_downloads(s, FILE, count) as socks:
            begun = [_answered(sock) for sock in socks]  # every body waits for its client
            time.sleep(0.5)
            grown = _rss_anon(workers) - before
            # replaced by rename, as crlbuilder publishes: the next request gets the new file
            new = _large_crl(template, size // 2)
            (crl / f"{FILE}.tmp").write_bytes(new)
            os.replace(crl / f"{FILE}.tmp", crl / FILE)
            host, port = urllib.parse.urlsplit(s.url).netloc.split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request(
                "GET", f"/crl/{FILE}", headers={"Authorization": f"Bearer {s.token(PARTY)}"}
            )
            assert conn.getresponse().read() == new
            conn.close()
            # the downloads begun before the replacement finish with the old file, whole
            assert all(_body(sock, data) == old for sock, data in zip(socks, begun, strict=True))
    # a copy per download would be count × size (128 MiB); views of one map cost none
    assert grown < 2 * size, f"workers grew by {grown >> 20} MiB for {count} downloads"


def test_a_party_holding_the_current_file_gets_304_and_no_count(
    built: Built, tmp_path: Path
) -> None:
    """A party (or a group's ``crlbuilder group pull``) polling its CRL files sends the ETag
    it has: the server answered 200 with the whole file every time and counted each in the
    ledger (帳簿, Act §40). Now If-None-Match (or If-Modified-Since) naming the current file
    gets 304, the 200's Content-Length and no body, and nothing is counted or used."""
    with start_server(built, tmp_path) as s:
        token = s.token(PARTY)
        size = (built.crl_dir / FILE).stat().st_size
        host, port = urllib.parse.urlsplit(s.url).netloc.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        auth = {"Authorization": f"Bearer {token}"}
        conn.request("GET", f"/crl/{FILE}", headers=auth)
        first = conn.getresponse()
        assert first.status == 200 and len(first.read()) == size
        etag, modified = first.getheader("ETag"), first.getheader("Last-Modified")
        assert etag and modified
        for validators in (
            {"If-None-Match": etag},
            {"If-None-Match": f'"other", W/{etag}'},
            {"If-Modified-Since": modified},
        ):
            conn.request("GET", f"/crl/{FILE}", headers=auth | validators)
            again = conn.getresponse()
            assert again.status == 304, validators
            assert again.read() == b""
            assert int(again.getheader("Content-Length") or -1) == size
            assert again.getheader("ETag") == etag
        # a validator of another file: the whole file, on the same connection (so the 304s
        # sent no body that this answer would be read from)
        conn.request("GET", f"/crl/{FILE}", headers=auth | {"If-None-Match": '"old"'})
        changed = conn.getresponse()
        assert changed.status == 200 and len(changed.read()) == size
        conn.close()
        assert _counted(tmp_path / "ledger", PARTY) == 2


def test_a_node_behind_never_takes_a_party_back_to_an_older_crl(
    built: Built, tmp_path: Path
) -> None:
    """Another node received the next CRL first and served it to the party; this node still
    has the one before. The party's If-None-Match (the newer file's ETag) matched nothing
    here, so it was handed the older file, and counted: revocations since missing until its
    next cycle. Now 503 with Retry-After: 1 (haproxy's ``crl_files`` backend retries it on
    another node), nothing counted or used, counted in jpkiva_crl_file_behind_total."""
    served = x509.load_der_x509_crl((built.crl_dir / FILE).read_bytes())
    later = served.last_update_utc + timedelta(hours=1)
    newer = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(served.issuer)
        .last_update(later)
        .next_update(later + timedelta(days=1))
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )
    ahead = tmp_path / "ahead"
    ahead.mkdir()
    (ahead / FILE).write_bytes(newer.public_bytes(serialization.Encoding.DER))
    held = CrlFiles(ahead).get(FILE)  # what the node ahead gave the party
    assert held is not None and held.whole
    with start_server(built, tmp_path / "node") as s:
        token = s.token(PARTY)
        auth = {"Authorization": f"Bearer {token}"}
        host, port = urllib.parse.urlsplit(s.url).netloc.split(":")
        for method in ("GET", "HEAD", "GET"):
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request(
                method, f"/crl/{FILE}", headers=auth | {"If-None-Match": held.etag.decode()}
            )
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            assert resp.status == 503, (method, resp.status)
            assert resp.getheader("Retry-After") == "1"
            assert resp.getheader("ETag") is None
            assert body in (
                b"this node has not received the newest CRL file yet, retry later\n",
                b"",
            )
        assert _counted(tmp_path / "node" / "ledger", PARTY) == 0
        # the party that holds this node's file, or none, is served as before
        current = _request(s, "GET", f"/crl/{FILE}", token)
        assert current.status == 200
        deadline = time.monotonic() + 5
        while _metric(s, "jpkiva_crl_file_behind_total") != 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _metric(s, "jpkiva_crl_file_behind_total") == 3
        assert _counted(tmp_path / "node" / "ledger", PARTY) == 1


def test_a_file_that_is_not_a_whole_crl_is_503_and_not_counted(
    built: Built, tmp_path: Path
) -> None:
    crl = _crl_dir(built, tmp_path)
    whole = (crl / FILE).read_bytes()
    (crl / FILE).write_bytes(whole[: len(whole) // 2])  # cut short, as a copy in place leaves it
    with start_server(built, tmp_path, extra=("--crl-dir", str(crl))) as s:
        token = s.token(PARTY)
        host, port = urllib.parse.urlsplit(s.url).netloc.split(":")
        for method in ("GET", "GET", "HEAD", "GET", "GET", "GET"):
            conn = http.client.HTTPConnection(host, int(port), timeout=10)  # either worker
            conn.request(method, f"/crl/{FILE}", headers={"Authorization": f"Bearer {token}"})
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            assert resp.status == 503, (method, resp.status)
            assert resp.getheader("Retry-After") == "60"
            assert resp.getheader("ETag") is None and resp.getheader("Last-Modified") is None
            assert body in (b"CRL file unavailable, retry later\n", b"")  # HEAD: no body
        assert _counted(tmp_path / "ledger", PARTY) == 0
        lines = [x for x in s.log.read_text().splitlines() if "crl_file_broken" in x]
        assert 1 <= len(lines) <= 2, lines  # once per worker that was asked
        assert all(FILE in x and "truncated" in x for x in lines), lines
        deadline = time.monotonic() + 5
        while _broken(s) != 6 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _broken(s) == 6
        # the next CRL published by rename is served and counted again
        (crl / f"{FILE}.tmp").write_bytes(whole)
        os.replace(crl / f"{FILE}.tmp", crl / FILE)
        got = _request(s, "GET", f"/crl/{FILE}", token)
        assert got.status == 200
        assert _counted(tmp_path / "ledger", PARTY) == 1


def _broken(s: Server) -> float:
    """``jpkiva_crl_file_broken_total`` of `FILE` (every worker's)."""
    return _metric(s, "jpkiva_crl_file_broken_total")


def _metric(s: Server, name: str) -> float:
    """Counter ``name`` of `FILE` (every worker's)."""
    status, text = s.get("/metrics", s.metrics_url)
    assert status == 200
    for line in text.decode().splitlines():
        if line.startswith(f'{name}{{file="{FILE}"}}'):
            return float(line.split()[-1])
    return 0.0
