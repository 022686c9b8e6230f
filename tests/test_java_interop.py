"""The JDK's own OCSP client (PKIXRevocationChecker) against the real responder, over mutual TLS.

A relying party written in Java (a 署名検証者, Act §17, or 利用者証明検証者, Act §36)
checks revocation through ``java.security.cert.PKIXRevocationChecker`` in
OCSP-only mode. The JDK's client (``sun.security.provider.certpath.OCSP``)
cannot send an ``Authorization`` header, so the party proves itself with its
TLS client certificate: the responder is started with TLS (the demo PKI's
server certificate, client certificates from the manifest's ``client_ca``,
optional) on 127.0.0.1, and the JVM gets a PKCS#12 key store (the party's
certificate and key, made by ``openssl pkcs12 -export``) and a trust store
holding the CA of the server certificate (made by ``keytool``).

`tests/java/OcspCheck.java` is compiled into tmp_path and run once per
scenario, one JVM for all its certificates. Every sample certificate of
answers.jsonl is validated with its issuing CA as the trust anchor, and the
status, reason (the JDK's ``CRLReason`` mapped to RFC 5280 codes; an absent
reason is the JDK's ``UNSPECIFIED``) and revocation time (seconds) must agree.

Certificates past their notAfter (the ``expired`` case, and revoked
certificates that have expired since) cannot be validated by PKIX *now*: the
path is invalid before revocation is checked (``error EXPIRED``, asserted once
below). They are validated instead as of the last second of their validity
(``PKIXParameters.setDate``, what a verifier does for a signature made while
the certificate was valid); the JDK still asks the responder, and verifies the
answer, as of now. openssl and gnutls check them at the current time in
test_responder_interop.py.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import pytest
from cryptography import x509

from crlbuilder.demo.pki import write_private
from crlbuilder.model import Answer, CertStatus, Reason
from tests.conftest import Built
from tests.support.harness import Server, start_server
from tests.test_responder_interop import trusted_responder

pytestmark = pytest.mark.interop

SOURCE: Final = Path(__file__).resolve().parent / "java" / "OcspCheck.java"

JAVA_REASONS: Final[dict[str, Reason]] = {
    "UNSPECIFIED": Reason.UNSPECIFIED,
    "KEY_COMPROMISE": Reason.KEY_COMPROMISE,
    "CA_COMPROMISE": Reason.CA_COMPROMISE,
    "AFFILIATION_CHANGED": Reason.AFFILIATION_CHANGED,
    "SUPERSEDED": Reason.SUPERSEDED,
    "CESSATION_OF_OPERATION": Reason.CESSATION_OF_OPERATION,
    "CERTIFICATE_HOLD": Reason.CERTIFICATE_HOLD,
    "REMOVE_FROM_CRL": Reason.REMOVE_FROM_CRL,
    "PRIVILEGE_WITHDRAWN": Reason.PRIVILEGE_WITHDRAWN,
    "AA_COMPROMISE": Reason.AA_COMPROMISE,
}
"""java.security.cert.CRLReason (whose ordinals are RFC 5280 §5.3.1's codes) -> ours."""

EXPIRY_MARGIN: Final = timedelta(minutes=5)
"""A certificate that expires within this margin is validated as of its last second."""

JVM_FLAGS: Final = ("-XX:TieredStopAtLevel=1", "-Xshare:auto")
"""Short-lived JVM: C1 only, class-data sharing."""


@dataclass(frozen=True)
class Jdk:
    """A JDK (javac, java, keytool from one bin directory) and the compiled OcspCheck."""

    bin: Path
    classes: Path


@dataclass(frozen=True)
class Stores:
    """The JVM's TLS material: one PKCS#12 key store per party, one trust store."""

    directory: Path
    password: str
    trust: Path

    def keystore(self, party: str) -> Path:
        return self.directory / f"{party}.p12"


@pytest.fixture(scope="module")
def jdk(tmp_path_factory: pytest.TempPathFactory) -> Jdk:
    javac = shutil.which("javac")
    if javac is None:
        pytest.skip("javac is not installed (JDK interoperability needs a JDK)")
    bin_dir = Path(javac).resolve().parent
    classes = tmp_path_factory.mktemp("java-classes")
    subprocess.run(
        [str(bin_dir / "javac"), "-Xlint:all", "-Werror", "-d", str(classes), str(SOURCE)],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return Jdk(bin_dir, classes)


@pytest.fixture(scope="module")
def tls_server(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    m = built.manifest
    tls = (
        "--tls-cert", str(m.path(m.server_cert)), "--tls-key", str(m.path(m.server_key)),
        "--tls-client-ca", str(m.path(m.client_ca)), "--tls-client-cert", "optional",
    )  # fmt: skip
    with start_server(built, tmp_path_factory.mktemp("responder-tls"), extra=tls) as s:
        assert s.url.startswith("https://127.0.0.1:"), s.url
        yield s


@pytest.fixture(scope="module")
def stores(jdk: Jdk, built: Built, tmp_path_factory: pytest.TempPathFactory) -> Stores:
    d = tmp_path_factory.mktemp("java-stores")
    password = secrets.token_urlsafe(16)
    env = {**os.environ, "STORE_PASS": password}
    m = built.manifest
    for party in m.parties:
        if party.id not in ("both-verifier", "auth-verifier"):
            continue
        p12 = subprocess.run(
            ["openssl", "pkcs12", "-export", "-in", str(m.path(party.cert)),
             "-inkey", str(m.path(party.key)), "-name", party.id, "-passout", "env:STORE_PASS"],
            check=True, capture_output=True, env=env, timeout=30,
        )  # fmt: skip
        write_private(d / f"{party.id}.p12", p12.stdout)  # holds the party's private key
    trust = d / "trust.p12"
    subprocess.run(
        [str(jdk.bin / "keytool"), "-importcert", "-noprompt", "-alias", "client-ca",
         "-file", str(m.path(m.client_ca)), "-keystore", str(trust), "-storetype", "PKCS12",
         "-storepass:env", "STORE_PASS"],
        check=True, capture_output=True, env=env, timeout=60,
    )  # fmt: skip
    return Stores(d, password, trust)


@dataclass(frozen=True)
class Check:
    """One line of OcspCheck's list and the line it must print."""

    answer: Answer
    as_of: datetime | None
    want: str

    def line(self, built: Built) -> str:
        a = self.answer
        fields = [str(built.population / a.cert), str(built.population / a.issuer_cert)]
        if self.as_of is not None:
            fields.append(str(int(self.as_of.timestamp())))
        # a compromised generation's answers come from its successor's signer (test_compromise.py)
        fields += [f"responder={f}" for f in trusted_responder(built, a.issuer, "-")[1:]]
        return " ".join(fields)


def expected(a: Answer, at: datetime) -> str:
    """What the JDK must print for a sample validated as of ``at``.

    The JDK reports a revocation only when its time is before the validation
    instant (RevocationChecker: ``revocationTime.before(params.date())``).
    """
    if a.status is CertStatus.UNKNOWN:
        return "unknown"
    if a.status is CertStatus.REVOKED:
        assert a.revoked_at is not None
        if a.revoked_at < at:
            reason = (a.reason or Reason.UNSPECIFIED).name
            return f"revoked {reason} {int(a.revoked_at.timestamp())}"
    return "good"


def sample_checks(built: Built) -> list[Check]:
    """Every sample, as of now, or of its last valid second when it has expired."""
    now = datetime.now(UTC)
    checks = []
    for a in built.answers:
        cert = x509.load_pem_x509_certificate((built.population / a.cert).read_bytes())
        as_of = None
        if cert.not_valid_after_utc <= now + EXPIRY_MARGIN:
            as_of = cert.not_valid_after_utc - timedelta(seconds=1)
        checks.append(Check(a, as_of, expected(a, as_of or now)))
    return checks


def run_ocsp_check(
    jdk: Jdk,
    server: Server,
    stores: Stores,
    checks: list[Check],
    list_file: Path,
    *,
    party: str | None = "both-verifier",
    props: tuple[str, ...] = (),
    path: str = "/ocsp",
) -> tuple[list[str], str]:
    """Run one JVM over ``checks`` with the responder URL ``{server.url}{path}``; its output
    lines and stderr."""
    list_file.write_text("".join(c.line(server.built) + "\n" for c in checks))
    tls = [
        f"-Djavax.net.ssl.trustStore={stores.trust}",
        "-Djavax.net.ssl.trustStoreType=PKCS12",
        f"-Djavax.net.ssl.trustStorePassword={stores.password}",
    ]
    if party is not None:
        tls += [
            f"-Djavax.net.ssl.keyStore={stores.keystore(party)}",
            "-Djavax.net.ssl.keyStoreType=PKCS12",
            f"-Djavax.net.ssl.keyStorePassword={stores.password}",
        ]
    out = subprocess.run(
        [str(jdk.bin / "java"), *JVM_FLAGS, *tls, *props, "-cp", str(jdk.classes),
         "OcspCheck", f"{server.url}{path}", str(list_file)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    lines = out.stdout.splitlines()
    assert len(lines) == len(checks), out.stdout[-4000:]
    return lines, out.stderr


def mismatches(checks: list[Check], got: list[str]) -> list[str]:
    return [
        f"{c.answer.issuer} {c.answer.case} serial {c.answer.serial:x} as of "
        f"{c.as_of or 'now'}: want {c.want!r}, JDK said {g!r}"
        for c, g in zip(checks, got, strict=True)
        if g != c.want
    ]


def test_reason_names_are_rfc5280_codes() -> None:
    """Our map agrees with the JDK's CRLReason ordinals (RFC 5280 order, 7 unused)."""
    java_order = ["UNSPECIFIED", "KEY_COMPROMISE", "CA_COMPROMISE", "AFFILIATION_CHANGED",
                  "SUPERSEDED", "CESSATION_OF_OPERATION", "CERTIFICATE_HOLD", "UNUSED",
                  "REMOVE_FROM_CRL", "PRIVILEGE_WITHDRAWN", "AA_COMPROMISE"]  # fmt: skip
    for name, reason in JAVA_REASONS.items():
        assert java_order.index(name) == reason.value


def test_every_sample_with_jdk_pkix(
    jdk: Jdk, tls_server: Server, stores: Stores, tmp_path: Path
) -> None:
    """Every sample through PKIXRevocationChecker (OCSP only, GET, no nonce), authenticated by mTLS."""
    checks = sample_checks(tls_server.built)
    got, _ = run_ocsp_check(jdk, tls_server, stores, checks, tmp_path / "list.txt")
    assert not mismatches(checks, got), "\n".join(mismatches(checks, got))
    kinds = {g.split()[0] for g in got}
    assert kinds == {"good", "revoked", "unknown"}, kinds
    # expired samples and samples revoked then expired were really covered (as of their last second)
    assert any(c.as_of and c.answer.case == "expired" for c in checks)
    assert any(c.as_of and c.answer.status is CertStatus.REVOKED for c in checks)
    revoked_reasons = {JAVA_REASONS[g.split()[1]] for g in got if g.startswith("revoked ")}
    assert len(revoked_reasons) >= 3, revoked_reasons


def test_revocation_instant_and_path_validity(
    jdk: Jdk, tls_server: Server, stores: Stores, tmp_path: Path
) -> None:
    """The revocation time, to the second, decides the JDK's verdict; an expired path fails first.

    Validated as of the revocation second itself the certificate was still
    good (the JDK needs revocationTime < date); one second later it is revoked.
    An expired certificate validated now fails path validation (EXPIRED)
    before any OCSP request.
    """
    built = tls_server.built
    checks: list[Check] = []
    now = datetime.now(UTC)
    for family in sorted({a.family for a in built.answers}, key=lambda f: f.value):
        a = next(
            x
            for x in built.answers
            if x.family is family
            and x.status is CertStatus.REVOKED
            and x.revoked_at is not None
            and x509.load_pem_x509_certificate(
                (built.population / x.cert).read_bytes()
            ).not_valid_after_utc
            > now + EXPIRY_MARGIN
        )
        assert a.revoked_at is not None
        for delta in (0, 1):
            at = a.revoked_at + timedelta(seconds=delta)
            checks.append(Check(a, at, expected(a, at)))
    assert [c.want.split()[0] for c in checks] == ["good", "revoked"] * (len(checks) // 2)
    got, _ = run_ocsp_check(jdk, tls_server, stores, checks, tmp_path / "list.txt")
    assert not mismatches(checks, got), "\n".join(mismatches(checks, got))

    expired = next(a for a in built.answers if a.case == "expired")
    got, _ = run_ocsp_check(
        jdk, tls_server, stores, [Check(expired, None, "")], tmp_path / "expired.txt"
    )
    assert got[0].startswith("error EXPIRED:"), got


def test_get_to_a_responder_url_that_is_the_root(
    jdk: Jdk, tls_server: Server, stores: Stores, tmp_path: Path
) -> None:
    """RFC 5019 §5: given ``https://127.0.0.1:PORT/`` as its responder, the JDK GETs
    ``{url}/{URL-encoded base64}`` (below 255 characters; 404 before the root took OCSP GETs).
    One sample per family and case, each answered as by /ocsp. The JDK does not fall back
    to POST when its GET fails: before the root took GETs every one was an error."""
    seen: set[tuple[str, str]] = set()
    checks = []
    for c in sample_checks(tls_server.built):
        key = (c.answer.family.value, c.answer.case)
        if key not in seen:
            seen.add(key)
            checks.append(c)
    got, err = run_ocsp_check(
        jdk, tls_server, stores, checks, tmp_path / "list.txt",
        props=("-Djava.security.debug=certpath",), path="/",
    )  # fmt: skip
    assert not mismatches(checks, got), "\n".join(mismatches(checks, got))
    assert "useget set to false" not in err  # GET (a POST to / was answered before too)


def test_post_with_nonce(jdk: Jdk, tls_server: Server, stores: Stores, tmp_path: Path) -> None:
    """POST (com.sun.security.ocsp.useget=false) with the JDK's nonce: every response echoes it.

    One sample per family and case. The JDK rejects a nonce that differs but
    accepts a missing one, so its certpath debug output is read to count the
    nonces it sent and the nonces it received back.
    """
    seen: set[tuple[str, str]] = set()
    checks = []
    for c in sample_checks(tls_server.built):
        key = (c.answer.family.value, c.answer.case)
        if key not in seen:
            seen.add(key)
            checks.append(c)
    got, err = run_ocsp_check(
        jdk, tls_server, stores, checks, tmp_path / "list.txt",
        props=("-Djdk.security.certpath.ocspNonce=true", "-Dcom.sun.security.ocsp.useget=false",
               "-Djava.security.debug=certpath"),
    )  # fmt: skip
    assert not mismatches(checks, got), "\n".join(mismatches(checks, got))
    assert "com.sun.security.ocsp.useget set to false" in err
    sent = err.count("Default nonce has been created")
    echoed = err.count("Response nonce:")
    assert sent == len(checks), sent
    assert echoed == sent, (echoed, sent)


def test_client_certificate_is_the_credential(
    jdk: Jdk, tls_server: Server, stores: Stores, tmp_path: Path
) -> None:
    """Without a client certificate the answer is unauthorized; a 利用者証明検証者's certificate
    gets login certificates answered but not sign certificates (Act §37)."""
    built = tls_server.built
    sign = next(a for a in built.answers if a.family.value == "sign-card" and a.case == "good")
    auth = next(a for a in built.answers if a.family.value == "auth-card" and a.case == "good")
    now = datetime.now(UTC)

    def unauthorized(line: str) -> bool:
        return line.startswith("error ") and "OCSP response error: UNAUTHORIZED" in line

    got, _ = run_ocsp_check(
        jdk, tls_server, stores, [Check(sign, None, ""), Check(auth, None, "")],
        tmp_path / "anonymous.txt", party=None,
    )  # fmt: skip
    assert all(unauthorized(g) for g in got), got
    checks = [Check(sign, None, ""), Check(auth, None, expected(auth, now))]
    got, _ = run_ocsp_check(
        jdk, tls_server, stores, checks, tmp_path / "auth.txt", party="auth-verifier"
    )
    assert unauthorized(got[0]), got
    assert got[1] == checks[1].want, got
