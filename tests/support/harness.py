"""The one harness for a real `responder serve` in tests, and the client side of it.

`start_server` runs ``responder serve`` (two workers, ephemeral loopback ports, the
demo registry, a trusted proxy on 127.0.0.1, every /metrics scrape rendered fresh) on a
`tests.conftest.Built` store and stops it by PID afterwards; on the way out it checks that
no party's bearer token reached the log. `Server` is what a test talks to: the public URL,
the admin listener (``metrics_url``), its log's JSON events, `Server.post` and
`Server.scrape`. `ocsp_request` builds the OCSP request of a sample answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from prometheus_client.parser import text_string_to_metric_families

from crlbuilder.model import Answer, CertStatus
from tests.conftest import BIN, Built, run_tool
from tests.support.procs import started, wait_line

Labels = frozenset[tuple[str, str]]
SIGNING_ENV = "JPKI_TEST_SIGNING"
"""An ``[ocsp] signing`` (threads, loop, processes) for every server `start_server` starts
whose test names none: ``JPKI_TEST_SIGNING=processes pytest tests/test_ledger_server.py``."""
PARTIES = ("both-verifier", "sig-verifier", "auth-verifier")
"""The demo registry's parties whose tokens must never be logged."""


@dataclass(frozen=True)
class Server:
    """A running `responder serve` (see `start_server`)."""

    url: str
    built: Built
    registry: Path
    pid: int
    metrics_url: str
    """The admin listener (``metrics on`` line): /metrics is not on the public port; "" when
    metrics are off."""
    log: Path
    """Its stderr: JSON lines."""
    d: Path
    """Its working directory (registry, ledger, log)."""

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def token(self, party: str) -> str:
        return (self.built.pki / "parties" / f"{party}.token").read_text().strip()

    def get(self, path: str, base: str | None = None) -> tuple[int, bytes]:
        """GET ``path`` (on ``base``, by default the public URL): status and body."""
        try:
            with urllib.request.urlopen(f"{base or self.url}{path}", timeout=10) as r:
                return int(r.status), r.read()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read()

    def post(
        self, body: bytes, token: str | None = None, headers: dict[str, str] | None = None
    ) -> bytes:
        """POST an OCSP request to /ocsp; the answer's bytes (HTTPError on a non-2xx status)."""
        h = {"Content-Type": "application/ocsp-request", **(headers or {})}
        if token:
            h["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(f"{self.url}/ocsp", data=body, headers=h, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.headers["Content-Type"] == "application/ocsp-response"
            data: bytes = r.read()
            return data

    def scrape(self) -> dict[tuple[str, Labels], float]:
        """Every sample of the admin listener's /metrics."""
        status, body = self.get("/metrics", self.metrics_url)
        assert status == 200, body
        return parse_metrics(body.decode())

    def events(self, event: str | None = None) -> list[dict[str, object]]:
        """The JSON lines of its log (those whose ``event`` is ``event``, when given)."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and (event is None or obj.get("event") == event):
                out.append(obj)
        return out


@contextlib.contextmanager
def start_server(
    built: Built,
    d: Path,
    store: Path | None = None,
    extra: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    """A real `responder serve` on an ephemeral loopback port, stopped by PID afterwards.

    Two workers; the admin listener on another ephemeral port, where every scrape renders
    (render interval 0) unless ``extra`` says otherwise, so that a count shows in the next
    scrape; ``d`` holds the registry (made from the demo PKI unless there), the ledger and
    the log (``stderr.log``). Fresh signatures are made where ``extra``'s ``--signing``
    says, else where `SIGNING_ENV` says (to run server test files again with another
    ``[ocsp] signing``), else by the configuration's default. ``env``: the server's whole
    environment (default: this process's).
    """
    d.mkdir(parents=True, exist_ok=True)
    registry = d / "registry.toml"
    if not registry.exists():
        run_tool("responder", "registry", "init", "--pki", str(built.pki), "--out", str(registry))
    log = d / "stderr.log"
    log.unlink(missing_ok=True)  # this run's lines only
    metrics = "--no-metrics" not in extra
    args = [
        str(BIN / "responder"), "serve", "--store", str(store or built.store),
        "--pki", str(built.pki), "--registry", str(registry), "--crl-dir", str(built.crl_dir),
        "--port", "0", "--workers", "2", "--trusted-proxy", "127.0.0.1",
        "--ledger-dir", str(d / "ledger"), "--metrics-port", "0",
        "--metrics-render-interval", "0", *extra,
    ]  # fmt: skip
    signing = os.environ.get(SIGNING_ENV, "")
    if signing and "--signing" not in extra:
        args += ["--signing", signing]
    with started(args, log=log, grace=20, env=env) as p:
        ready = r"(listening on \S+\s+metrics on \S+)" if metrics else r"(listening on \S+)"
        try:
            words = wait_line(p, ready, 30).split()
        except Exception as e:
            raise AssertionError(f"{e}\n{log.read_text()}") from None
        yield Server(words[2], built, registry, p.pid, words[-1] if metrics else "", log, d)
    text = log.read_text()
    for party in PARTIES:
        assert (built.pki / "parties" / f"{party}.token").read_text().strip() not in text


def ocsp_request(
    built: Built,
    a: Answer,
    *,
    alg: hashes.HashAlgorithm | None = None,
    nonce: bool = False,
    issuer_cert: Path | None = None,
) -> bytes:
    """The DER OCSPRequest for sample ``a`` (SHA-1 CertID unless ``alg``), optionally with a
    nonce or naming another issuer certificate."""
    pop = built.population
    cert = x509.load_pem_x509_certificate((pop / a.cert).read_bytes())
    issuer = x509.load_pem_x509_certificate((issuer_cert or pop / a.issuer_cert).read_bytes())
    b = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, alg or hashes.SHA1())
    if nonce:
        b = b.add_extension(x509.OCSPNonce(os.urandom(16)), critical=False)
    return b.build().public_bytes(serialization.Encoding.DER)


def status_of(der: bytes) -> ocsp.OCSPResponseStatus:
    return ocsp.load_der_ocsp_response(der).response_status


def sample(
    built: Built, status: CertStatus, family: str | None = None, case: str | None = None
) -> Answer:
    """The first sample answer with ``status`` (of ``family``, of ``case``)."""
    return next(
        a
        for a in built.answers
        if a.status is status
        and (family is None or a.family.value == family)
        and (case is None or a.case == case)
    )


def parse_metrics(text: str) -> dict[tuple[str, Labels], float]:
    """Every sample of a /metrics text: (sample name, labels) -> value."""
    out: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def total(samples: dict[tuple[str, Labels], float], name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def request_for(server: Server, a: Answer, alg: hashes.HashAlgorithm | None = None) -> bytes:
    """`ocsp_request` for sample ``a`` of the server's population."""
    return ocsp_request(server.built, a, alg=alg)
