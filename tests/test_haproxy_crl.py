"""deploy/haproxy/haproxy.cfg run for real in front of three responders: a CRL file that is
not one whole CRL (503, `responder.app._CRL_FILE_BROKEN`) takes no node out.

The nodes' backend marks a node down after five 5xx answers in a row (``observe layer7
error-limit 5 on-error mark-down``): that is right for OCSP, where a node answering 5xx is
broken, but a broken CRL file is the same on every node it was shipped to, and a party (or
a group appliance retrying its pull) asking for it took the nodes out one after the other,
so that every party's OCSP through haproxy failed. The CRL paths now go to a backend of
their own that follows the nodes' health checks (``track``) without observing its answers,
and retries a 503 on another node, so one node's broken copy is not seen at all.

The config is the deploy file itself, with only what loopback needs changed
(`tests.support.shippedproxy`).
"""

from __future__ import annotations

import contextlib
import http.client
import shutil
import time
import urllib.parse
from pathlib import Path

from tests.conftest import Built
from tests.support.harness import start_server
from tests.support.shippedproxy import shipped_haproxy

ROOT = Path(__file__).resolve().parent.parent
HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
FILE = "sign-card-g1.crl"
"""A full CRL that sig-verifier (a 署名検証者, Act §18(1)) may download."""
PARTY = "sig-verifier"


def _ask(lb: tuple[str, int], method: str, path: str, token: str) -> int:
    conn = http.client.HTTPConnection(*lb, timeout=10)
    try:
        conn.request(method, path, headers={"Authorization": f"Bearer {token}"})
        r = conn.getresponse()
        r.read()
        return r.status
    except OSError:
        return 0  # haproxy not listening yet
    finally:
        conn.close()


def _crl_dir(built: Built, d: Path, *, broken: bool) -> Path:
    crl = d / "crl"
    shutil.copytree(built.crl_dir, crl)
    if broken:  # cut short, as a copy in place leaves it
        whole = (crl / FILE).read_bytes()
        (crl / FILE).write_bytes(whole[: len(whole) // 2])
    return crl


def test_a_broken_crl_file_on_every_node_takes_no_node_out(built: Built, tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        nodes = []
        for i, broken in enumerate((True, True, True, True, False, False)):
            d = tmp_path / f"node{i}"
            crl = _crl_dir(built, d, broken=broken)
            extra = ("--crl-dir", str(crl), "--workers", "1")
            nodes.append(stack.enter_context(start_server(built, d, extra=extra)))
        token = nodes[0].token(PARTY)
        ports = [int(urllib.parse.urlsplit(n.url).port or 0) for n in nodes]

        # every node has the broken file (shipped to all): a party asks for it again and again
        lb_dir = tmp_path / "lb"
        lb_dir.mkdir()
        with shipped_haproxy(lb_dir, ports[:3]) as lb:
            deadline = time.monotonic() + 20
            while _ask(lb, "GET", "/announcements", token) != 200:  # the nodes UP (rise 2)
                assert time.monotonic() < deadline, (lb_dir / "haproxy.log").read_text()
                time.sleep(0.2)
            time.sleep(2.5)  # every node's checks passed
            crl = [_ask(lb, "GET", f"/crl/{FILE}", token) for _ in range(30)]
            other = []
            for _ in range(10):  # meanwhile every other request of the parties is served
                other.append(_ask(lb, "GET", "/announcements", token))
                time.sleep(0.1)
            log = (lb_dir / "haproxy.log").read_text()
        assert set(crl) == {503}, crl  # the file is not served: the responder's own 503
        assert set(other) == {200}, (other, log)
        assert " is DOWN" not in log, log

        # one node's copy broken, the others whole: a party never sees the broken one
        lb_dir = tmp_path / "lb2"
        lb_dir.mkdir()
        with shipped_haproxy(lb_dir, ports[3:]) as lb:
            deadline = time.monotonic() + 20
            while _ask(lb, "GET", "/announcements", token) != 200:
                assert time.monotonic() < deadline, (lb_dir / "haproxy.log").read_text()
                time.sleep(0.2)
            time.sleep(2.5)
            heads = [_ask(lb, "HEAD", f"/crl/{FILE}", token) for _ in range(9)]  # HEAD: no count
            log = (lb_dir / "haproxy.log").read_text()
        assert set(heads) == {200}, (heads, log)
        assert " is DOWN" not in log, log
