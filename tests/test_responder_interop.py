"""The real responder on loopback, asked by real clients: openssl ocsp, gnutls ocsptool, Python.

Every sample certificate of answers.jsonl is checked through `openssl ocsp`
(POST, with and without nonce, answer signature verified against the CA) and
through gnutls `ocsptool` (its request, its verification of our answer); GET
with RFC 5019 caching headers; access control (no credentials, wrong family,
foreign issuer, signed requests, client certificate header from a trusted proxy).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from crlbuilder.model import Answer, CertStatus
from crlbuilder.store.lmdbstore import Store
from tests.conftest import Built, run_tool
from tests.support.harness import Server, request_for, start_server, status_of
from tests.support.wait import until

OPENSSL_STATUS = {
    CertStatus.GOOD: "good",
    CertStatus.REVOKED: "revoked",
    CertStatus.UNKNOWN: "unknown",
}
REASONS = {
    0: "unspecified", 1: "keyCompromise", 2: "cACompromise", 3: "affiliationChanged",
    4: "superseded", 5: "cessationOfOperation", 6: "certificateHold",
}  # fmt: skip


@pytest.fixture(scope="module")
def server(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_server(built, tmp_path_factory.mktemp("responder")) as s:
        yield s


def trusted_responder(built: Built, issuer: str, flag: str) -> list[str]:
    """After a compromise of ``issuer``'s key its answers are signed by the successor's
    delegate, which a client must trust explicitly (RFC 6960 §4.2.2.2; tests/test_compromise.py)."""
    files = built.manifest.issuer(issuer)
    if issuer not in compromised_issuers(built.store) or not files.successor:
        return []
    return [flag, str(built.manifest.path(built.manifest.issuer(files.successor).ocsp_cert))]


@functools.cache
def compromised_issuers(store: Path) -> frozenset[str]:
    s = Store.open(store, readonly=True)
    try:
        with s.read() as r:
            return frozenset(i.id for i in r.issuers() if i.compromised_at)
    finally:
        s.close()


def openssl_ocsp(
    server: Server, a: Answer, *extra: str, token: str | None = "both-verifier"
) -> tuple[str, str]:
    pop = server.built.population
    args = ["openssl", "ocsp", "-url", f"{server.url}/ocsp", "-issuer", str(pop / a.issuer_cert),
            "-cert", str(pop / a.cert), "-CAfile", str(pop / a.issuer_cert),
            *trusted_responder(server.built, a.issuer, "-VAfile"), *extra]  # fmt: skip
    if token:
        args += ["-header", f"Authorization=Bearer {server.token(token)}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    if out.returncode != 0 and not out.stderr:  # say how it ended (once: nothing at all)
        return out.stdout, f"openssl ocsp ended with status {out.returncode} and said nothing"
    return out.stdout, out.stderr


def check_openssl_text(text: str, a: Answer) -> None:
    """openssl's -resp_text: status, reason and revocation time agree with the answer."""
    assert f": {OPENSSL_STATUS[a.status]}" in text, (a.case, text)
    if a.status is CertStatus.REVOKED:
        assert a.revoked_at is not None
        when = a.revoked_at.astimezone(UTC).strftime("%b %e %H:%M:%S %Y GMT").replace("  ", " ")
        assert f"Revocation Time: {when}" in " ".join(text.split()).replace("  ", " "), (
            a.case,
            text,
        )
        if a.reason:
            assert f"Reason: {REASONS[a.reason]}" in text, (a.case, text)


def test_every_sample_with_openssl_post(server: Server) -> None:
    """POST, no nonce: every sample's status, reason, time; signature verified against the CA."""
    for a in server.built.answers:
        out, err = openssl_ocsp(server, a, "-no_nonce")
        assert "Response verify OK" in err, (a.case, err)
        check_openssl_text(out, a)


def test_samples_with_nonce(server: Server) -> None:
    """With a nonce (openssl's default): echoed, so the answer is freshly signed."""
    seen: set[tuple[str, str]] = set()
    for a in server.built.answers:
        if (a.family.value, a.case) in seen:
            continue
        seen.add((a.family.value, a.case))
        out, err = openssl_ocsp(server, a)
        assert "Response verify OK" in err and "WARNING: no nonce" not in err, (a.case, err)
        check_openssl_text(out, a)


def test_every_sample_with_gnutls_ocsptool(server: Server, tmp_path: Path) -> None:
    """ocsptool makes the request and verifies our answer against the issuing CA."""
    pop = server.built.population
    for a in server.built.answers:
        req = tmp_path / "req.der"
        subprocess.run(
            ["ocsptool", "--generate-request", "--load-issuer", str(pop / a.issuer_cert),
             "--load-cert", str(pop / a.cert), "--no-nonce", "--outfile", str(req)],
            check=True, capture_output=True,
        )  # fmt: skip
        der = server.post(req.read_bytes(), token=server.token("both-verifier"))
        resp = tmp_path / "resp.der"
        resp.write_bytes(der)
        out = subprocess.run(
            ["ocsptool", "--verify-response", "--infile", str(resp),
             *(trusted_responder(server.built, a.issuer, "--load-trust") or ["--load-trust", str(pop / a.issuer_cert)])],
            check=False, capture_output=True, text=True,
        )  # fmt: skip
        text = out.stdout + out.stderr
        assert "Verifying OCSP Response: Success" in text, (a.case, text)
        want = {
            "good": "Certificate Status: good",
            "revoked": "Certificate Status: revoked",
            "unknown": "Certificate Status: unknown",
        }
        assert want[a.status.value] in text, (a.case, text)


def test_get_with_rfc5019_caching_headers(server: Server) -> None:
    for a in [next(x for x in server.built.answers if x.status is s) for s in CertStatus]:
        b64 = base64.b64encode(request_for(server, a)).decode()
        url = f"{server.url}/ocsp/{urllib.parse.quote(b64, safe='')}"
        req = urllib.request.Request(
            url, headers={"Authorization": f"Bearer {server.token('both-verifier')}"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            der = r.read()
            resp = ocsp.load_der_ocsp_response(der)
            assert resp.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
            assert resp.certificate_status.name.lower() == a.status.value
            assert resp.next_update_utc is not None
            max_age = int(r.headers["Cache-Control"].split("max-age=")[1].split(",")[0])
            assert 0 < max_age <= (resp.next_update_utc - datetime.now(UTC)).total_seconds() + 2
            # answers to a registered party are not for shared caches (Act §18(1), §37(1),
            # §40, §45): private, never public (issue 9.9)
            directives = {d.strip() for d in r.headers["Cache-Control"].split(",")}
            assert "private" in directives and "public" not in directives
            assert r.headers["ETag"] == f'"{hashlib.sha1(der).hexdigest()}"'
            assert r.headers["Expires"] and r.headers["Last-Modified"]
        # base64url without padding is tolerated too
        b64url = base64.urlsafe_b64encode(request_for(server, a)).decode().rstrip("=")
        req = urllib.request.Request(
            f"{server.url}/ocsp/{b64url}",
            headers={"Authorization": f"Bearer {server.token('both-verifier')}"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert (
                ocsp.load_der_ocsp_response(r.read()).certificate_status.name.lower()
                == a.status.value
            )


def test_openssl_with_a_root_responder_url_by_get_and_post(server: Server, tmp_path: Path) -> None:
    """RFC 5019 §5: a client given ``http://127.0.0.1:PORT/`` GETs ``{url}/{base64}`` (URL-
    encoded, after the URL's own slash: ``//{base64}`` too). openssl's request (``-reqout``),
    sent by GET to the root, and openssl reading the answer (``-respin``): verified, the
    status the store holds, the RFC 5019 §6 fields; openssl POSTing to the root URL itself."""
    pop = server.built.population
    auth = {"Authorization": f"Bearer {server.token('both-verifier')}"}
    for a in [next(x for x in server.built.answers if x.status is s) for s in CertStatus]:
        common = ["-issuer", str(pop / a.issuer_cert), "-cert", str(pop / a.cert)]
        reqfile, respfile = tmp_path / f"{a.case}.req", tmp_path / f"{a.case}.resp"
        subprocess.run(["openssl", "ocsp", *common, "-no_nonce", "-reqout", str(reqfile)],
                       capture_output=True, timeout=30, check=True)  # fmt: skip
        b64 = urllib.parse.quote(base64.b64encode(reqfile.read_bytes()).decode(), safe="")
        for path in (f"/{b64}", f"//{b64}"):
            req = urllib.request.Request(f"{server.url}{path}", headers=auth)
            with urllib.request.urlopen(req, timeout=10) as r:
                respfile.write_bytes(r.read())
                assert r.headers["Content-Type"] == "application/ocsp-response"
                assert "max-age=" in r.headers["Cache-Control"] and r.headers["ETag"]
            out = subprocess.run(
                ["openssl", "ocsp", *common, "-reqin", str(reqfile), "-respin", str(respfile),
                 "-CAfile", str(pop / a.issuer_cert),
                 *trusted_responder(server.built, a.issuer, "-VAfile"), "-resp_text"],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            assert "Response verify OK" in out.stderr, (a.case, path, out.stderr)
            check_openssl_text(out.stdout, a)
        root = server.url.rstrip("/") + "/"
        args = ["openssl", "ocsp", "-url", root, *common, "-CAfile", str(pop / a.issuer_cert),
                *trusted_responder(server.built, a.issuer, "-VAfile"), "-resp_text",
                "-header", f"Authorization=Bearer {server.token('both-verifier')}"]  # fmt: skip
        out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
        assert "Response verify OK" in out.stderr, (a.case, out.stderr)
        check_openssl_text(out.stdout, a)


def test_sha256_certid(server: Server) -> None:
    a = next(x for x in server.built.answers if x.status is CertStatus.REVOKED)
    resp = ocsp.load_der_ocsp_response(server.post(request_for(server, a, hashes.SHA256()),
                                            token=server.token("both-verifier")))  # fmt: skip
    assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert isinstance(resp.hash_algorithm, hashes.SHA256)


def test_unknown_certid_hash_algorithm_is_unauthorized(server: Server) -> None:
    """RFC 6960 §2.3, as `crlbuilder.ocsp.request` decides: a CertID hashed with an algorithm the
    responder does not index (SHA-384 here) names no issuer it serves: unauthorized, for an
    authenticated party that is answered for the same certificate with SHA-1."""
    a = next(x for x in server.built.answers if x.status is CertStatus.GOOD)
    token = server.token("both-verifier")
    assert status_of(server.post(request_for(server, a, hashes.SHA384()), token=token)) is (
        ocsp.OCSPResponseStatus.UNAUTHORIZED
    )
    assert status_of(server.post(request_for(server, a), token=token)) is (
        ocsp.OCSPResponseStatus.SUCCESSFUL
    )


def test_unauthenticated_and_unauthorized(server: Server) -> None:
    sign = next(
        a
        for a in server.built.answers
        if a.family.value == "sign-card" and a.status is CertStatus.REVOKED
    )
    auth = next(a for a in server.built.answers if a.family.value == "auth-card")
    unauthorized = ocsp.OCSPResponseStatus.UNAUTHORIZED
    assert status_of(server.post(request_for(server, sign))) is unauthorized
    assert status_of(server.post(request_for(server, sign), token="not-a-token")) is unauthorized
    # a 利用者証明検証者 may not receive sign information (Act §37), and the reverse
    assert (
        status_of(server.post(request_for(server, sign), token=server.token("auth-verifier")))
        is unauthorized
    )
    assert (
        status_of(server.post(request_for(server, auth), token=server.token("sig-verifier")))
        is unauthorized
    )
    assert status_of(
        server.post(request_for(server, auth), token=server.token("auth-verifier"))
    ) is (ocsp.OCSPResponseStatus.SUCCESSFUL)
    # a 署名確認者 is answered by its group only (Act §20(1))
    assert (
        status_of(server.post(request_for(server, sign), token=server.token("member-1")))
        is unauthorized
    )
    out, _ = openssl_ocsp(server, sign, "-no_nonce", token=None)
    assert "unauthorized" in out


def test_foreign_issuer_is_unauthorized(server: Server, tmp_path: Path) -> None:
    from crlbuilder.demo.pki import init_pki

    other = init_pki(tmp_path / "other")
    a = next(x for x in server.built.answers if x.status is CertStatus.GOOD)
    cert = x509.load_pem_x509_certificate((server.built.population / a.cert).read_bytes())
    foreign = x509.load_pem_x509_certificate(other.path(other.issuers[0].cert).read_bytes())
    req = ocsp.OCSPRequestBuilder().add_certificate(cert, foreign, hashes.SHA1()).build()
    der = server.post(
        req.public_bytes(serialization.Encoding.DER), token=server.token("both-verifier")
    )
    assert status_of(der) is ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_signed_request_authenticates(server: Server) -> None:
    """RFC 6960 §4.1.2: requestorName + signature, checked against the party's registered certificate."""
    a = next(
        x
        for x in server.built.answers
        if x.family.value == "sign-card" and x.status is CertStatus.GOOD
    )
    parties = server.built.pki / "parties"
    out, err = openssl_ocsp(server, a, "-no_nonce", "-signer", str(parties / "sig-verifier.pem"),
                            "-signkey", str(parties / "sig-verifier.key"), token=None)  # fmt: skip
    assert "Response verify OK" in err and ": good" in out, (out, err)
    # signed with a key that is not registered: unauthorized
    out, _ = openssl_ocsp(server, a, "-no_nonce", "-signer", str(server.built.pki / "tls" / "server.pem"),
                          "-signkey", str(server.built.pki / "tls" / "server.key"), token=None)  # fmt: skip
    assert "unauthorized" in out


def test_odd_report_paths_on_the_real_server(server: Server) -> None:
    """Issue 10.10: /reports/0000 answered 500 (ValueError), which pages the operators.
    Every odd path, raw on the wire, is a 4xx (404 from the app; a path longer than the
    header limit, or not ASCII, is refused by the HTTP layer), never a 5xx."""
    import socket

    from tests.test_app_routes import ODD_REPORT_PATHS

    host, port = urllib.parse.urlsplit(server.url).netloc.rsplit(":", 1)
    for path in ODD_REPORT_PATHS:
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status_line = sock.makefile("rb").readline()
        status = int(status_line.split()[1])
        assert 400 <= status < 500, (path[:40], status)
        if len(path) < 1000 and path.isascii():  # else the HTTP layer refuses it first
            assert status == 404, (path, status)
    with urllib.request.urlopen(f"{server.url}/reports/1970.json", timeout=10) as r:
        assert r.status == 200


def test_client_certificate_from_trusted_proxy(server: Server) -> None:
    a = next(x for x in server.built.answers if x.family.value == "auth-card")
    pem = (server.built.pki / "parties" / "auth-verifier.pem").read_text()
    header = urllib.parse.quote(pem)
    der = server.post(request_for(server, a), headers={"client-cert": header})
    assert status_of(der) is ocsp.OCSPResponseStatus.SUCCESSFUL


def test_bad_input_and_routes(server: Server) -> None:
    token = server.token("both-verifier")
    assert (
        status_of(server.post(b"\x30\x03\x02\x01", token=token))
        is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    )
    assert (
        status_of(server.post(os.urandom(200), token=token))
        is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    )

    def code(method: str, path: str, body: bytes | None = None, ctype: str | None = None) -> int:
        req = urllib.request.Request(f"{server.url}{path}", data=body, method=method)
        if ctype:
            req.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    assert code("GET", "/nope") == 404
    assert code("PUT", "/ocsp", b"x", "application/ocsp-request") == 405
    assert code("POST", "/ocsp", b"x", "text/plain") == 415
    assert code("GET", "/healthz") == 200
    assert code("GET", "/readyz") == 200
    assert code("POST", "/ocsp", os.urandom(70_000), "application/ocsp-request") == 413
    assert code("GET", "/crl/sign-card-g1.crl") == 401


def test_crl_files_for_entitled_parties(server: Server) -> None:
    def get(path: str, party: str) -> tuple[int, bytes]:
        req = urllib.request.Request(
            f"{server.url}{path}", headers={"Authorization": f"Bearer {server.token(party)}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return int(r.status), r.read()
        except urllib.error.HTTPError as e:
            return int(e.code), b""

    status, body = get("/crl/sign-card-g2.crl", "sig-verifier")
    assert status == 200 and body == (server.built.crl_dir / "sign-card-g2.crl").read_bytes()
    assert get("/crl/sign-card-g2.crl", "auth-verifier")[0] == 403
    assert get("/crl/auth-card-g1-delta.crl", "auth-verifier")[0] == 200
    assert get("/crl/../pki.json", "sig-verifier")[0] == 404


def test_new_revocation_served_without_restart(built: Built, tmp_path: Path) -> None:
    """A revocation committed by crlbuilder is answered at once (no restart, no stale cached good)."""
    import shutil

    store = tmp_path / "store"
    shutil.copytree(built.store, store)
    with start_server(built, tmp_path, store) as server:
        revoke_while_serving(server, store, tmp_path)


def revoke_while_serving(server: Server, store: Path, tmp_path: Path) -> None:
    import msgspec

    a = next(x for x in server.built.answers if x.status is CertStatus.GOOD and x.family.value == "auth-card"
             and x.case == "good")  # fmt: skip
    token = server.token("both-verifier")
    body = request_for(server, a)
    assert (
        ocsp.load_der_ocsp_response(server.post(body, token=token)).certificate_status
        is ocsp.OCSPCertStatus.GOOD
    )
    rec = tmp_path / "late.jsonl"
    rec.write_bytes(msgspec.json.encode({"type": "revocation-request", "id": "late-1",
                                         "recorded_at": datetime.now(UTC).isoformat(), "serial": a.serial,
                                         "issuer": a.issuer, "reason": "key-compromise"}) + b"\n")  # fmt: skip
    args = server.built.builder_args(store, tmp_path / "crl")
    args[args.index("--input") + 1] = str(rec)
    args[args.index("--as-of") + 1] = datetime.now(UTC).isoformat()
    run_tool("crlbuilder", "build", *args)

    def revoked() -> ocsp.OCSPResponse | None:
        resp = ocsp.load_der_ocsp_response(server.post(body, token=token))
        return resp if resp.certificate_status is ocsp.OCSPCertStatus.REVOKED else None

    resp = until(revoked, timeout=5, what="the new revocation served")
    assert resp.revocation_reason is x509.ReasonFlags.key_compromise


def test_random_and_mutated_requests_through_the_real_server(server: Server) -> None:
    """Property: any body gets an OCSP response (malformedRequest or an answer), never a crash or a hang."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    token = server.token("both-verifier")
    valid = request_for(server, server.built.answers[0])
    allowed = {
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
        ocsp.OCSPResponseStatus.SUCCESSFUL,
        ocsp.OCSPResponseStatus.UNAUTHORIZED,
    }

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        st.one_of(
            st.binary(max_size=300),
            st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)).map(
                lambda m: valid[: m[0]] + bytes([m[1]]) + valid[m[0] + 1 :]
            ),
            st.integers(0, len(valid) - 1).map(lambda n: valid[:n]),
        )
    )
    def check(body: bytes) -> None:
        assert status_of(server.post(body, token=token)) in allowed

    check()
    with urllib.request.urlopen(f"{server.url}/healthz", timeout=5) as r:
        assert r.status == 200


def test_stale_data_gets_try_later(built: Built, tmp_path: Path) -> None:
    """Past the nextUpdate the builder promised, never an expired answer: tryLater, and /readyz fails."""
    from datetime import timedelta

    store = tmp_path / "store"  # a new store: a build may not go back before a store's last commit
    args = built.builder_args(store, tmp_path / "crl")
    args[args.index("--as-of") + 1] = (datetime.now(UTC) - timedelta(hours=3)).isoformat()
    run_tool("crlbuilder", "build", *args)  # a delta CRL whose nextUpdate has passed
    with start_server(built, tmp_path, store) as s:
        a = next(x for x in built.answers if x.status is CertStatus.GOOD)
        der = s.post(request_for(s, a), token=s.token("both-verifier"))
        assert status_of(der) is ocsp.OCSPResponseStatus.TRY_LATER
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{s.url}/readyz", timeout=5)
        assert e.value.code == 503


LATE_PARTY = """
[[party]]
id = "late-party"
name = "Late"

[party.notification]
address = "a"
office = "o"
start = 2024-04-01

[[party.title]]
kind = "user-verifier"
category = 1

[party.agreement]
services = ["auth-revocation-info"]
families = ["auth-card"]
methods = ["ocsp"]
liability = "l"

[[party.credential]]
kind = "token"
token_sha256 = "{digest}"
"""


def test_sighup_reloads_the_registry(built: Built, tmp_path: Path) -> None:
    with start_server(built, tmp_path) as s:
        a = next(x for x in built.answers if x.family.value == "auth-card")
        body = request_for(s, a)
        token = "a-new-party-token-0123456789"
        assert status_of(s.post(body, token=token)) is ocsp.OCSPResponseStatus.UNAUTHORIZED
        digest = hashlib.sha256(token.encode()).hexdigest()
        with s.registry.open("a") as f:  # appended by hand, in the current format
            f.write(LATE_PARTY.format(digest=digest))
        os.kill(s.pid, signal.SIGHUP)
        until(
            lambda: status_of(s.post(body, token=token)) is ocsp.OCSPResponseStatus.SUCCESSFUL,
            timeout=5, what="the new party accepted after SIGHUP",
        )  # fmt: skip
        # every worker has it (several requests land on both)
        for _ in range(20):
            assert status_of(s.post(body, token=token)) is ocsp.OCSPResponseStatus.SUCCESSFUL


def _registry_file_bad(s: Server) -> float:
    with urllib.request.urlopen(f"{s.metrics_url}/metrics", timeout=10) as r:
        text = r.read().decode()
    return max(
        (float(line.split()[-1]) for line in text.splitlines()
         if line.startswith("jpkiva_registry_file_bad")),
        default=-1.0,
    )  # fmt: skip


@pytest.mark.real_clock  # the workers' registry watch is a timed wait
def test_worker_restarted_with_a_broken_registry_serves_the_last_good(
    built: Built, tmp_path: Path
) -> None:
    """Issue 10.9: a worker killed after a bad registry edit failed to start (RegistryError)
    and the master kept trying, one worker short. The master keeps the last good registry
    and a new worker serves it, saying in the log and in jpkiva_registry_file_bad that the
    file on disk is bad; SIGHUP with the bad file keeps the registry in use and logs why."""
    with start_server(built, tmp_path) as s:
        a = next(x for x in built.answers if x.family.value == "auth-card")
        body, token = request_for(s, a), s.token("auth-verifier")
        assert status_of(s.post(body, token=token)) is ocsp.OCSPResponseStatus.SUCCESSFUL
        good = s.registry.read_text()
        s.registry.write_text(good + "\n[[party]\n")  # a bad hand edit: not TOML
        until(lambda: s.events("registry_file_bad"), what="the master saw it")
        master_event = s.events("registry_file_bad")[0]
        assert master_event["pid"] == s.pid and str(s.registry) in str(master_event["error"])
        children = Path(f"/proc/{s.pid}/task/{s.pid}/children").read_text().split()
        victim = int(children[0])
        os.kill(victim, signal.SIGKILL)  # a child of the server this test started

        def replaced() -> bool:
            return any(e["worker_pid"] != victim and e["pid"] == s.pid
                       for e in s.events("worker_ready")[2:])  # fmt: skip

        until(replaced, what="the killed worker replaced by a serving one")
        assert not s.events("worker_start_failed")
        new_pid = s.events("worker_ready")[2]["worker_pid"]
        bad = [e for e in s.events("registry_file_bad") if e["pid"] == new_pid]
        assert bad and "not valid TOML" in str(bad[0]["error"]), "the new worker says why"
        for _ in range(20):  # new connections land on both workers
            assert status_of(s.post(body, token=token)) is ocsp.OCSPResponseStatus.SUCCESSFUL
        assert _registry_file_bad(s) == 1
        # SIGHUP with the bad file keeps the registry in use and logs what is wrong and where
        os.kill(s.pid, signal.SIGHUP)
        until(lambda: len(s.events("registry_reload_failed")) >= 2, what="SIGHUP logged")
        failed = s.events("registry_reload_failed")
        assert all(str(s.registry) in str(e["error"]) for e in failed)
        assert status_of(s.post(body, token=token)) is ocsp.OCSPResponseStatus.SUCCESSFUL
        # fixed: every worker loads it again and the metric goes back to 0
        s.registry.write_text(good)
        until(lambda: _registry_file_bad(s) == 0, what="the metric cleared")


def test_unsigned_request_naming_a_requestor_gets_sig_required(server: Server) -> None:
    """RFC 6960 §2.3: a request that names its requestor but is neither signed nor otherwise
    authenticated is told to sign (sigRequired); an anonymous one is unauthorized."""
    from asn1crypto import ocsp as aocsp
    from asn1crypto import x509 as ax509

    a = next(x for x in server.built.answers if x.status is CertStatus.GOOD)
    plain = aocsp.OCSPRequest.load(request_for(server, a))
    tbs = plain["tbs_request"]
    name = ax509.Name.build({"common_name": "someone"})
    named = aocsp.OCSPRequest(
        {
            "tbs_request": aocsp.TBSRequest(
                {"requestor_name": ax509.GeneralName(name="directory_name", value=name),
                 "request_list": tbs["request_list"]}
            )
        }
    )  # fmt: skip
    assert status_of(server.post(named.dump())) is ocsp.OCSPResponseStatus.SIG_REQUIRED
    assert status_of(server.post(plain.dump())) is ocsp.OCSPResponseStatus.UNAUTHORIZED
    # with a bearer token the same named request is answered
    assert status_of(server.post(named.dump(), token=server.token("both-verifier"))) is (
        ocsp.OCSPResponseStatus.SUCCESSFUL
    )


@pytest.mark.real_clock  # the workers' registry watch is a timed wait
def test_a_registry_no_check_foresaw_keeps_every_worker_taking_changes(
    built: Built, tmp_path: Path
) -> None:
    """A hand edit naming a certificate whose key `cryptography` cannot load: before, the
    check raised UnsupportedAlgorithm out of each worker's registry watch, whose thread
    died, so the suspension (提供の停止, Act §37(4)) written next never reached a worker and
    the party stayed served. Now the file is refused like any bad file (the metric says so)
    and the next change reaches every worker."""
    from tests.test_registry import UNSUPPORTED_KEY_CERT

    with start_server(built, tmp_path) as s:
        a = next(x for x in built.answers if x.family.value == "auth-card")
        body, token = request_for(s, a), s.token("auth-verifier")
        assert status_of(s.post(body, token=token)) is ocsp.OCSPResponseStatus.SUCCESSFUL
        good = s.registry.read_text()
        (s.registry.parent / "weird.pem").write_bytes(UNSUPPORTED_KEY_CERT)
        s.registry.write_text(
            good + '\n[[party.credential]]\nkind = "mtls"\ncert = "weird.pem"\n'
        )  # the last party's, by hand
        until(lambda: _registry_file_bad(s) == 1, what="the bad file seen")
        suspended = tmp_path / "next" / "registry.toml"
        suspended.parent.mkdir()
        suspended.write_text(good)
        run_tool(
            "responder", "registry", "suspend", "--registry", str(suspended),
            "--id", "auth-verifier", "--article", "Act §37(4)(1)", "--reason", "r",
        )  # fmt: skip
        s.registry.write_text(suspended.read_text())
        until(lambda: _registry_file_bad(s) == 0, what="the metric cleared")
        until(
            lambda: all(
                status_of(s.post(body, token=token)) is ocsp.OCSPResponseStatus.UNAUTHORIZED
                for _ in range(20)
            ),
            timeout=5, what="the suspension in force on every worker",
        )  # fmt: skip
