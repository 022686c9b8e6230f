"""Two appliances on loopback: the 機構's (built from records) and a group's (fed by HTTP from it).

The group (団体署名検証者 ``group-verifier``, Act §17(5)) is set up by ``crlbuilder group
init`` from what it received alone (the CA certificates at the 機構's ``/ca/``, the CRL
URLs, its token, its own responder key), fed by ``crlbuilder group pull --follow`` at a
one-second cycle, and answers its members (署名確認者 ``member-1``, ``member-2``, Act
§20(1)) signed with its own key: ``openssl ocsp -VAfile group.pem`` verifies the answers.
Covered: the 機構's public /ca/; what init writes (no CA or 機構 signer key); the member
× family answers against the 機構's CRL files; auth certificates, a member of another
group, a 機構 party and a malformed request refused; a refusal under Act §20(2) within a
second; a revocation recorded at the 機構 reaching a member; per-member counts in the
group's ledger and the group's downloads in the 機構's; a tampered CRL refused with the
old data kept; the 機構 stopped during the pull (the group keeps answering); a slow 機構
and one member's flood of record-info requests delaying neither another member's nor OCSP.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import io
import json
import os
import secrets
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import msgspec
import pytest
import schemathesis
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from crlbuilder.demo.pki import write_private
from crlbuilder.group.answerkeys import KEYS_NAME, parse_jwks
from crlbuilder.group.pull import GroupFeed
from crlbuilder.group.setup import load_group_setup
from crlbuilder.model import Answer, CertStatus, Family
from crlbuilder.rules import JST
from crlbuilder.store.lmdbstore import Store
from responder.ledger import Ledger
from responder.v1 import jws
from tests.conftest import BIN, Built, run_tool
from tests.support.builder import as_of_the_clock
from tests.support.harness import Server, start_server
from tests.support.procs import started, wait_line
from tests.support.store import dump_store
from tests.support.wait import until
from tests.test_java_interop import JVM_FLAGS, Jdk, jdk  # noqa: F401 (the module's JDK fixture)
from tests.test_v1_records_server import cases, population, ref

pytestmark = [pytest.mark.integration, pytest.mark.interop, pytest.mark.real_clock]

GROUP: Final = "group-verifier"
MEMBERS: Final = ("member-1", "member-2")
SIGN: Final = ("sign-card", "sign-mobile")


@dataclass
class Appliances:
    built: Built
    kikou: Server
    kikou_store: Path
    kikou_spool: Path
    kikou_crl: Path
    group_dir: Path
    group_url: str
    group_log: Path
    pull_log: Path
    pull: subprocess.Popen[bytes]
    kikou_stop: contextlib.ExitStack

    def token(self, party: str) -> str:
        return (self.built.pki / "parties" / f"{party}.token").read_text().strip()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_text().strip().encode()).hexdigest()


def _registry(group_dir: Path, *args: str) -> None:
    run_tool("responder", "registry", *args, "--registry", str(group_dir / "registry.toml"))


def init_args(built: Built, url: str, out: Path, *extra: str, cycle: int = 1) -> list[str]:
    pki = built.pki
    return [
        "group", "init", "--out", str(out), "--authority", url,
        "--group-id", GROUP, "--token-file", str(pki / "parties" / f"{GROUP}.token"),
        "--cycle", str(cycle), "--responder-cert", str(pki / "tls" / "group-responder.pem"),
        "--responder-key", str(pki / "tls" / "group-responder.key"), "--port", "0",
        "--metrics-port", "0", "--name", "デモ団体 (demo group)", "--address", "demo address",
        "--representative", "demo representative", "--office", "demo office",
        "--start", "2016-01-01", "--group-kind", "1", "--member-prefix", "member-",
        "--liability", "demo", "--member-answer", "OCSP signed by the group's responder key",
        *extra,
    ]  # fmt: skip


def _group_init(built: Built, kikou: Server, out: Path, cycle: int = 1) -> None:
    pki = built.pki
    run_tool("crlbuilder", *init_args(built, kikou.url, out, cycle=cycle))
    for m in MEMBERS:
        _registry(
            out, "add", "--id", m, "--name", f"demo {m}", "--title", "signature-confirmer",
            "--group", GROUP, "--group-kind", "1", "--token-sha256", _sha256(pki / "parties" / f"{m}.token"),
            "--mtls-cert", str(pki / "parties" / f"{m}.pem"),
        )  # fmt: skip
    # another group and its member: registered here, answered by nobody here (Act §20(1))
    _registry(
        out, "add", "--id", "other-group", "--name", "another group",
        "--title", "group-signature-verifier", "--group-kind", "2", "--members", "outsider-1",
        "--address", "a", "--representative", "r", "--office", "o", "--start", "2016-01-01",
        "--liability", "l", "--member-answer", "m",
    )  # fmt: skip
    _registry(
        out, "add", "--id", "outsider-1", "--name", "a member of another group",
        "--title", "signature-confirmer", "--group", "other-group",
        "--token-sha256", _sha256(pki / "parties" / "sig-verifier.token"),
    )  # fmt: skip


@contextlib.contextmanager
def group_responder(group_dir: Path, log: Path, *extra: str) -> Iterator[str]:
    args = [str(BIN / "responder"), "serve", "--config", str(group_dir / "responder.toml"),
            "--workers", "2", *extra]  # fmt: skip
    with started(args, log=log, grace=20) as p:
        try:
            yield wait_line(p, r"(listening on \S+)", 30).split()[-1]
        except Exception as e:
            raise AssertionError(f"{e}\n{log.read_text()}") from None


@pytest.fixture(scope="module")
def apps(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliances]:
    d = tmp_path_factory.mktemp("group")
    store, crl, spool = d / "kikou" / "store", d / "kikou" / "crl", d / "kikou" / "store-spool"
    shutil.copytree(built.store, store)
    shutil.copytree(built.crl_dir, crl)
    spool.mkdir()
    args = as_of_the_clock(built.builder_args(store, crl))
    with contextlib.ExitStack() as stack:
        kikou_stack = stack.enter_context(contextlib.ExitStack())
        kikou_stack.enter_context(
            started(
                [str(BIN / "crlbuilder"), "build", *args, "--follow", "--follow-interval", "0.1"],
                log=d / "kikou-build.log",
            )
        )
        kikou = kikou_stack.enter_context(
            start_server(
                built,
                d / "kikou",
                store=store,
                extra=("--crl-dir", str(crl), "--facts-key-file", str(built.facts_key)),
            )
        )
        group_dir = d / "g"
        _group_init(built, kikou, group_dir)
        run_tool("crlbuilder", "group", "pull", "--group", str(group_dir))  # the first, in full
        pull_log = d / "pull.log"
        pull = stack.enter_context(
            started(
                [str(BIN / "crlbuilder"), "group", "pull", "--group", str(group_dir), "--follow"],
                log=pull_log,
            )
        )
        group_log = d / "group.log"
        url = stack.enter_context(group_responder(group_dir, group_log))
        yield Appliances(
            built, kikou, store, spool, crl, group_dir, url, group_log, pull_log, pull, kikou_stack
        )


def ocsp(
    apps: Appliances, a: Answer, party: str | None, *extra: str, url: str | None = None
) -> tuple[str, str]:
    pop = apps.built.population
    args = ["openssl", "ocsp", "-url", f"{url or apps.group_url}/ocsp",
            "-issuer", str(pop / a.issuer_cert), "-cert", str(pop / a.cert),
            "-VAfile", str(apps.group_dir / "group.pem"), "-no_nonce", *extra]  # fmt: skip
    if party is not None:
        args += ["-header", f"Authorization=Bearer {apps.token(party)}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    return out.stdout, out.stderr


def refused(got: tuple[str, str]) -> bool:
    """openssl says the responder answered ``unauthorized`` (RFC 6960 §2.3)."""
    return "unauthorized" in got[0] + got[1]


def crl_serials(crl_dir: Path, issuer: str) -> set[int]:
    """The serials the 機構's current full and delta CRL list (what the group may know)."""
    out: set[int] = set()
    for name in (f"{issuer}.crl", f"{issuer}-delta.crl"):
        path = crl_dir / name
        if path.exists():
            out |= {r.serial_number for r in x509.load_der_x509_crl(path.read_bytes())}
    return out


def samples(apps: Appliances) -> list[tuple[Answer, str]]:
    """Per sign family: a valid certificate never revoked, one revoked and listed, one whose
    serial the 機構 never issued; with what the group must say (from the 機構's CRLs)."""
    out = []
    now = datetime.now(UTC)
    for fam in SIGN:
        picked: dict[str, Answer] = {}
        for a in apps.built.answers:
            if a.family.value != fam:
                continue
            cert = x509.load_pem_x509_certificate((apps.built.population / a.cert).read_bytes())
            if cert.not_valid_after_utc < now + timedelta(hours=1):
                continue
            listed = a.serial in crl_serials(apps.kikou_crl, a.issuer)
            kind = "revoked" if listed else a.status.value if a.case != "good" else "good"
            if kind in ("good", "revoked", "unknown") and kind not in picked:
                if kind == "good" and a.status is not CertStatus.GOOD:
                    continue
                picked[kind] = a
        assert set(picked) == {"good", "revoked", "unknown"}, (fam, sorted(picked))
        # a serial the 機構 never issued is on no CRL: the group answers good (docs/operations.md)
        out += [
            (picked["good"], "good"),
            (picked["revoked"], "revoked"),
            (picked["unknown"], "good"),
        ]
    return out


def test_kikou_publishes_ca_certificates(apps: Appliances) -> None:
    """GET /ca/index.json and /ca/<id>.pem: public (no credential), the manifest's certificates."""
    status, body = apps.kikou.get("/ca/index.json")
    assert status == 200
    index = json.loads(body)["issuers"]
    m = apps.built.manifest
    assert {e["id"] for e in index} == {i.id for i in m.issuers}
    for e in index:
        status, pem = apps.kikou.get(e["cert"])
        want = x509.load_pem_x509_certificate(m.path(m.issuer(e["id"]).cert).read_bytes())
        assert status == 200 and x509.load_pem_x509_certificate(pem) == want
        assert e["sha256"] == hashlib.sha256(want.public_bytes(Encoding.DER)).hexdigest()
    assert apps.kikou.get("/ca/nothing.pem")[0] == 404


def test_group_init_writes_no_ca_or_kikou_key(apps: Appliances) -> None:
    """The group's directory holds certificates, its token (0600), config and registry; no key
    of the 機構 (the group's own key is referenced where it lives)."""
    files = {
        p.relative_to(apps.group_dir).as_posix() for p in apps.group_dir.rglob("*") if p.is_file()
    }
    assert not [f for f in files if f.endswith(".key")], files
    assert (apps.group_dir / "authority.token").stat().st_mode & 0o077 == 0
    setup = load_group_setup(apps.group_dir)
    assert setup.group_id == GROUP and setup.authority == apps.kikou.url
    # the 機構's answer keys pinned as its /v1/keys serves them (public keys only)
    status, jwks = apps.kikou.get("/v1/keys")
    assert status == 200
    pinned = parse_jwks((apps.group_dir / setup.answer_keys).read_bytes())
    assert set(pinned) == set(parse_jwks(jwks)) and all(not k.is_private for k in pinned.values())
    pem = (apps.group_dir / "group.pem").read_bytes()
    for i in apps.built.manifest.issuers:  # no delegate of the 機構's CAs is anywhere
        assert apps.built.manifest.path(i.ocsp_cert).read_bytes() != pem
    check = run_tool(
        "responder", "registry", "check", "--registry", str(apps.group_dir / "registry.toml")
    )
    assert check.returncode == 0


def test_group_init_refuses_bad_input_and_writes_nothing(apps: Appliances, tmp_path: Path) -> None:
    """An existing directory, a certificate not pinned, a pin not served, a responder
    certificate without the OCSP-signing purpose or a key not its certificate's, a 機構 that
    does not answer: refused (exit 1), nothing left behind."""
    pki = apps.built.pki
    url = apps.kikou.url
    pinned = load_group_setup(apps.group_dir).issuers[0].sha256
    cases = [
        (apps.group_dir, url, (), "not empty"),
        (tmp_path / "a", url, ("--ca-sha256", "0" * 64), "not one of --ca-sha256"),
        (tmp_path / "b", url, ("--ca-sha256", pinned), "not one of --ca-sha256"),
        (tmp_path / "c", "http://127.0.0.1:9", (), "cannot fetch"),
    ]
    for out, authority, extra, why in cases:
        r = run_tool("crlbuilder", *init_args(apps.built, authority, out, *extra), check=False)
        assert r.returncode == 1 and why in r.stderr, (why, r.stderr)
        assert out == apps.group_dir or not out.exists()
    args = init_args(apps.built, url, tmp_path / "d")
    for cert, key, why in (
        (pki / "parties" / "member-1.pem", pki / "parties" / "member-1.key", "OCSP-signing"),
        (pki / "tls" / "group-responder.pem", pki / "parties" / "member-1.key", "responder key"),
    ):
        bad = list(args)
        bad[bad.index("--responder-cert") + 1] = str(cert)
        bad[bad.index("--responder-key") + 1] = str(key)
        r = run_tool("crlbuilder", *bad, check=False)
        assert r.returncode == 1 and why in r.stderr, (why, r.stderr)
        assert not (tmp_path / "d").exists()


def test_member_answers_verify_with_the_group_key(apps: Appliances) -> None:
    """Each member, each sign family: good / revoked as the 機構's CRLs say, signed by the group
    key (openssl -VAfile group.pem: Response verify OK); never-issued serials are good."""
    for member in MEMBERS:
        for a, want in samples(apps):
            out, err = ocsp(apps, a, member, "-resp_text")
            assert "Response verify OK" in err, (member, a.case, out, err)
            assert f": {want}" in out.splitlines()[-1] or f": {want}\n" in out, (a.case, out)
            assert "jpki-va demo group relay responder" in out  # the responder id


def test_refusals(apps: Appliances) -> None:
    """Auth certificates, a member of another group, a 機構 party, no credential: unauthorized;
    a malformed request: malformedRequest (RFC 6960 §2.3)."""
    auth = next(a for a in apps.built.answers if a.family.value == "auth-card")
    assert refused(ocsp(apps, auth, "member-1"))
    good = next(a for a in apps.built.answers if a.family.value == "sign-card" and a.case == "good")
    for party in ("sig-verifier", "both-verifier", None):  # outsider-1's token, a 機構 party, none
        assert refused(ocsp(apps, good, party)), party
    req = urllib.request.Request(
        f"{apps.group_url}/ocsp", data=b"\x30\x03\x02\x01\x00", method="POST",
        headers={"Content-Type": "application/ocsp-request",
                 "Authorization": f"Bearer {apps.token('member-1')}"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.read() == bytes.fromhex("30030a0101")  # malformedRequest


def relay(
    apps: Appliances, body: object, party: str | None, ctype: str = "application/json"
) -> tuple[int, dict[str, str], bytes]:
    """POST /v1/record-info to the group's appliance as ``party``."""
    headers = {"Content-Type": ctype}
    if party is not None:
        headers["Authorization"] = f"Bearer {apps.token(party)}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"{apps.group_url}/v1/record-info", data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(r.status), {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), {k.lower(): v for k, v in e.headers.items()}, e.read()


def test_record_info_relay_act_20_4_5(apps: Appliances) -> None:
    """A member asks its group; the group asks the 機構 with its own credential and passes the
    signed answer on unchanged (the JWS verifies with the 機構's /v1/keys): provided with the
    holder's consent to the group, not-provided without; counted for the member in the
    group's ledger and for the group in the 機構's; §20(6), outsiders, bad input refused."""
    now = time.time()
    holders = population(apps.built)
    found = cases(holders, Family.SIGN_CARD, now) + cases(holders, Family.SIGN_MOBILE, now)
    consented = next(c for c in found if GROUP in c.holder.consents and c.expected is not None)
    not_consented = next(
        c for c in found if GROUP not in c.holder.consents and c.expected is not None
    )
    status, jwks = apps.kikou.get("/v1/keys")
    assert status == 200
    cert = x509.load_der_x509_certificate(base64.b64decode(json.loads(jwks)["keys"][0]["x5c"][0]))
    for case, want in ((consented, "provided"), (not_consented, "not-provided")):
        code, headers, raw = relay(apps, ref(case.asked), "member-1")
        assert code == 200, raw
        assert headers["cache-control"] == "no-store"
        jws.verify(headers["jws-signature"], raw, cert)  # the 機構's signature, unchanged
        got = json.loads(raw)
        assert got["result"] == want, got
        if want == "provided":
            assert case.expected is not None
            assert int(got["record"]["serial"], 16) == case.expected.serial
    # §20(6): the group refuses member-2 the record information, not its OCSP answers
    _registry(
        apps.group_dir, "suspend", "--id", "member-2", "--article", "Act §20(6)(2)",
        "--reason", "demo: record information used for another purpose",
    )  # fmt: skip
    try:
        passed_on = 0  # before the change reaches the workers (within a second)
        deadline = time.monotonic() + 3
        while (got := relay(apps, ref(consented.asked), "member-2"))[0] == 200:
            passed_on += 1
            assert time.monotonic() < deadline, "the refusal did not take effect"
            time.sleep(0.1)
        assert got[0] == 403 and json.loads(got[2])["article"] == "Act §20(6)(2)", got
    finally:
        _registry(apps.group_dir, "resume", "--id", "member-2")
    code, _, raw = relay(apps, ref(consented.asked), "sig-verifier")  # outsider-1: another group
    assert code == 403 and json.loads(raw)["article"] == "Act §20(1)", raw
    assert relay(apps, ref(consented.asked), None)[0] == 401
    code, _, raw = relay(apps, {"certificate": {"issuer": "sign-card-g1"}}, "member-1")
    assert code == 400 and json.loads(raw)["field"].startswith("$.certificate"), raw
    assert relay(apps, b"{not json", "member-1")[0] == 400
    assert relay(apps, ref(consented.asked), "member-1", "text/plain")[0] == 415
    auth = next(a for a in apps.built.answers if a.family.value == "auth-card")
    code, _, raw = relay(
        apps, {"certificate": {"issuer": auth.issuer, "serial": f"{auth.serial:x}"}}, "member-1"
    )
    assert code == 403 and json.loads(raw)["rule"] == "unauthorized_family", raw
    today = datetime.now(JST).date()
    days = (today - timedelta(days=1), today + timedelta(days=1))

    def counted(d: Path, who: str) -> int:
        with Ledger.open(d) as ledger:
            ledger.collect()
            return ledger.totals(*days, by=("party", "service", "method")).get(
                (who, "sign-record-info", "json"), 0
            )

    until(lambda: counted(apps.group_dir / "ledger", "member-1") == 1, timeout=5, interval=0.5)
    # the answers passed on before the refusal took effect, not the refused ones
    until(lambda: counted(apps.group_dir / "ledger", "member-2") == passed_on, timeout=5)
    until(lambda: counted(apps.kikou.d / "ledger", GROUP) >= 1, timeout=15, interval=0.5)


def test_a_slow_kikou_and_a_members_flood_starve_nobody(apps: Appliances, tmp_path: Path) -> None:
    """A second group responder on the same store whose 機構 (a stand-in) takes 2 s per
    record-info answer. member-1 sends 40 requests at once: at most 2 per worker are asked,
    the rest are 429 ``fair_share`` at once; meanwhile member-2's OCSP answers stay fast and
    its own record-info request is answered within one 機構 answer, not after the flood."""
    from concurrent.futures import ThreadPoolExecutor

    from crlbuilder.group.init import responder_toml
    from crlbuilder.group.setup import dump_group_setup
    from tests.test_group_relay import KIKOU_KEY, NOT_PROVIDED, Kikou, answer, sleeps

    slow = Kikou()
    slow.behaviour = sleeps(2.0, answer(200, NOT_PROVIDED))
    d = tmp_path / "g2"
    shutil.copytree(apps.group_dir, d, ignore=shutil.ignore_patterns("store", "ledger", "*.log"))
    setup = load_group_setup(apps.group_dir)
    setup.authority = slow.url
    setup.store = str(apps.group_dir / setup.store)  # the same store, read only
    dump_group_setup(setup, d)
    (d / setup.answer_keys).write_bytes(KIKOU_KEY.jwks)  # the stand-in's key pinned
    toml = responder_toml(d, 0, 0, "good").replace(str(d / "store"), setup.store)
    (d / "responder.toml").write_text(toml)
    asked = {"certificate": {"issuer": "sign-card-g1", "serial": "5010E63061F54256"}}

    def post(url: str, party: str) -> tuple[int, float]:
        t0 = time.monotonic()
        req = urllib.request.Request(
            f"{url}/v1/record-info", data=json.dumps(asked).encode(),
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {apps.token(party)}"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                code = int(r.status)
        except urllib.error.HTTPError as e:
            code = int(e.code)
        return code, time.monotonic() - t0

    good = next(a for a in apps.built.answers if a.family.value == "sign-card" and a.case == "good")
    try:
        with (
            group_responder(d, tmp_path / "g2.log") as url,
            ThreadPoolExecutor(max_workers=48) as threads,
        ):
            flood = [threads.submit(post, url, "member-1") for _ in range(40)]
            time.sleep(0.3)
            other = threads.submit(post, url, "member-2")
            for _ in range(3):
                t0 = time.monotonic()
                out, err = ocsp(apps, good, "member-2", url=url)
                assert "Response verify OK" in err and ": good" in out, (out, err)
                assert time.monotonic() - t0 < 1.5
            code, took = other.result(timeout=30)
            assert code == 200 and took < 3.5, (code, took)
            codes = sorted(f.result(timeout=30)[0] for f in flood)
        answered = codes.count(200)
        assert 2 <= answered <= 4 and codes.count(429) == 40 - answered, codes
        assert len(slow.seen) == answered + 1
    finally:
        slow.close()


@contextlib.contextmanager
def second_group(apps: Appliances, d: Path, *extra: str) -> Iterator[str]:
    """Another group responder on the group's store (read only), from a copy of its directory
    (``d``, which the caller may change first), with ``extra`` flags."""
    from crlbuilder.group.init import responder_toml
    from crlbuilder.group.setup import dump_group_setup

    if not d.exists():
        shutil.copytree(
            apps.group_dir, d, ignore=shutil.ignore_patterns("store", "ledger", "*.log")
        )
    setup = load_group_setup(d)
    setup.store = str(apps.group_dir / "store")  # the same store, read only
    dump_group_setup(setup, d)
    toml = responder_toml(d, 0, 0, "good").replace(str(d / "store"), setup.store)
    (d / "responder.toml").write_text(toml)
    with group_responder(d, d.parent / f"{d.name}.log", *extra) as url:
        yield url


def test_the_relay_verifies_the_kikous_answer_with_the_pinned_keys(
    apps: Appliances, tmp_path: Path
) -> None:
    """A group that pinned another key than the real 機構's: the 機構's signed answer is the
    group's 502, never passed on; ``crlbuilder group keys --answer-kid`` (the kid received
    out of band: the set shares no key with the pinned one) pins the 機構's key, and the next
    answer is passed on, no restart; it verifies with the 機構's /v1/keys."""
    from tests.test_group_relay import AnswerKey

    now = time.time()
    holders = population(apps.built)
    found = cases(holders, Family.SIGN_CARD, now) + cases(holders, Family.SIGN_MOBILE, now)
    asked = ref(next(c for c in found if c.expected is not None).asked)
    d = tmp_path / "g3"
    shutil.copytree(apps.group_dir, d, ignore=shutil.ignore_patterns("store", "ledger", "*.log"))
    (d / KEYS_NAME).write_bytes(AnswerKey().jwks)  # not the 機構's
    _, jwks = apps.kikou.get("/v1/keys")
    kid = next(iter(parse_jwks(jwks)))
    cert = x509.load_der_x509_certificate(base64.b64decode(json.loads(jwks)["keys"][0]["x5c"][0]))

    def post(url: str) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(
            f"{url}/v1/record-info", data=json.dumps(asked).encode(),
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {apps.token('member-1')}"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return int(r.status), {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as e:
            return int(e.code), {k.lower(): v for k, v in e.headers.items()}, e.read()

    with second_group(apps, d) as url:
        code, headers, raw = post(url)
        assert code == 502 and "jws-signature" not in headers, raw
        assert "not pinned" in json.loads(raw)["detail"], raw
        r = run_tool("crlbuilder", "group", "keys", "--group", str(d), check=False)
        assert r.returncode == 1 and "serves no key the group pinned" in r.stderr, r.stderr
        run_tool("crlbuilder", "group", "keys", "--group", str(d), f"--answer-kid={kid}")
        code, headers, raw = post(url)
        assert code == 200, raw
        assert jws.verify(headers["jws-signature"], raw, cert)["kid"] == kid


def test_a_members_flood_of_the_groups_own_routes_starves_no_other_member(
    apps: Appliances, tmp_path: Path
) -> None:
    """member-1 floods /v1/status (batches of 400, each answered on the event loop) from 8
    connections for 3 s; member-2 asks a one-entry batch every 0.2 s meanwhile. With the
    group's bound on each member (5 a second here), member-1 is refused past it (429
    ``member_quota``, Retry-After, the problem naming the bound) and member-2 is answered
    every time, quickly; member-1's answers stay within its bound."""
    from concurrent.futures import ThreadPoolExecutor

    serials = [f"{0x7E570000 + i:x}" for i in range(400)]
    flood_body = json.dumps(
        {"entries": [{"issuer": "sign-card-g1", "serial": s} for s in serials]}
    ).encode()
    one = json.dumps({"entries": [{"issuer": "sign-card-g1", "serial": serials[0]}]}).encode()

    def post(url: str, party: str, body: bytes) -> tuple[int, float, dict[str, str], bytes]:
        t0 = time.monotonic()
        req = urllib.request.Request(
            f"{url}/v1/status", data=body,
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {apps.token(party)}"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                got = int(r.status), dict(r.headers.items()), r.read()
        except urllib.error.HTTPError as e:
            got = int(e.code), dict(e.headers.items()), e.read()
        return got[0], time.monotonic() - t0, {k.lower(): v for k, v in got[1].items()}, got[2]

    seconds = 3.0
    with (
        second_group(apps, tmp_path / "g4", "--member-requests-per-second", "5") as url,
        ThreadPoolExecutor(max_workers=9) as threads,
    ):
        stop = time.monotonic() + seconds

        def flood() -> list[tuple[int, float, dict[str, str], bytes]]:
            out = []
            while time.monotonic() < stop and len(out) < 2000:
                out.append(post(url, "member-1", flood_body))
            return out

        floods = [threads.submit(flood) for _ in range(8)]
        other = []
        while time.monotonic() < stop:
            other.append(post(url, "member-2", one))
            time.sleep(0.2)
        flooded = [r for f in floods for r in f.result(timeout=60)]
    assert len(other) >= 10
    assert {code for code, *_ in other} == {200}, [(c, b[:200]) for c, _, _, b in other]
    assert max(t for _, t, *_ in other) < 1.5, sorted(t for _, t, *_ in other)
    answered = [r for r in flooded if r[0] == 200]
    refused = [r for r in flooded if r[0] == 429]
    assert len(answered) + len(refused) == len(flooded), {r[0] for r in flooded}
    # 5 a second on this node, each of its 2 workers one request late at most per second
    assert len(answered) <= 5 * (seconds + 1) + 2 * (seconds + 1), len(answered)
    _, _, headers, raw = refused[0]
    prob = json.loads(raw)
    assert headers["retry-after"] == "1" and prob["article"] == "Ord §33(4)", prob
    assert "this member's requests per second" in prob["detail"], prob


def resumed(check: Callable[[], bool], runs: int = 10) -> None:
    """Until a resumed party is answered by every worker of the group's responder: each
    worker reads the registry on its own one-second check, so one answer proves only its
    worker's; ``runs`` answers in a row (each on a new connection, spread over the workers'
    sockets) before the next test, which could otherwise meet the other worker still
    refusing."""
    until(lambda: all(check() for _ in range(runs)), timeout=10, what="every worker resumed")


def verify_on_group(
    apps: Appliances, body: object, party: str | None
) -> tuple[int, dict[str, str], bytes]:
    """POST /v1/verify to the group's appliance as ``party``."""
    headers = {"Content-Type": "application/json"}
    if party is not None:
        headers["Authorization"] = f"Bearer {apps.token(party)}"
    req = urllib.request.Request(
        f"{apps.group_url}/v1/verify", data=json.dumps(body).encode(), headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(r.status), {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), {k.lower(): v for k, v in e.headers.items()}, e.read()


def test_member_validates_a_signature_through_its_group_act_20_1_21_1(apps: Appliances) -> None:
    """POST /v1/verify on the group's appliance (issue 14 item 5): a member's signatures are
    validated from the group's own store (the 機構's CRLs), the answer signed by the group's
    responder key; outsiders and a member refused under Act §20(2) are refused."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.support.signing import pkcs1

    pop = apps.built.population
    key = serialization.load_pem_private_key(
        (pop / "samples" / "subject-key.pem").read_bytes(), None
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    doc = "委任状".encode()

    def item(a: Answer) -> dict[str, str]:
        cert = x509.load_pem_x509_certificate((pop / a.cert).read_bytes())
        return {
            "format": "pkcs1",
            "certificate": base64.b64encode(cert.public_bytes(Encoding.DER)).decode(),
            "signature": base64.b64encode(pkcs1(doc, key)).decode(),
            "data": base64.b64encode(doc).decode(),
        }

    picked = samples(apps)
    good = next(a for a, want in picked if want == "good" and a.case == "good")
    revoked = next(a for a, want in picked if want == "revoked")
    auth = next(a for a in apps.built.answers if a.family is Family.AUTH_CARD and a.case == "good")
    body = {"items": [item(good), item(revoked), item(auth)]}
    code, headers, raw = verify_on_group(apps, body, "member-1")
    assert code == 200, raw
    got = json.loads(raw)
    assert [r["result"] for r in got["results"]] == ["ok", "revoked", "not-a-sign-certificate"]
    assert got["results"][1]["statusNow"]["status"] == "revoked"
    # the receipt: signed by the group's responder key, which the members trust (-VAfile)
    group_cert = x509.load_pem_x509_certificate((apps.group_dir / "group.pem").read_bytes())
    assert jws.verify(headers["jws-signature"], raw, group_cert)["alg"] == "RS256"
    # outsider-1 (a member of another group), a 機構 party, no credential
    assert verify_on_group(apps, body, "sig-verifier")[0] == 403
    assert verify_on_group(apps, body, "both-verifier")[0] == 401
    assert verify_on_group(apps, body, None)[0] == 401
    _registry(
        apps.group_dir, "suspend", "--id", "member-2", "--article", "Act §20(2)(1)",
        "--reason", "demo: a breach of the purpose rule is likely",
    )  # fmt: skip
    try:
        until(lambda: verify_on_group(apps, body, "member-2")[0] == 403, timeout=3)
        assert verify_on_group(apps, body, "member-1")[0] == 200
    finally:
        _registry(apps.group_dir, "resume", "--id", "member-2")
    resumed(lambda: verify_on_group(apps, body, "member-2")[0] == 200)


def test_member_status_from_its_group_act_20_1_21_3(apps: Appliances) -> None:
    """POST /v1/status on the group's appliance: a member's batch re-check answered from the
    group's store as its OCSP answers (the 機構's CRLs), signed by the group's key, counted per
    entry in the group's ledger; outsiders refused. Another /v1 path is 404 naming the routes
    the appliance serves."""
    picked = samples(apps)
    body = {"entries": [{"issuer": a.issuer, "serial": f"{a.serial:x}"} for a, _ in picked]}
    today = datetime.now(JST).date()

    def counted() -> int:
        with Ledger.open(apps.group_dir / "ledger") as ledger:
            ledger.collect()
            return ledger.totals(
                today - timedelta(days=1),
                today + timedelta(days=1),
                by=("party", "service", "method"),
            ).get(("member-2", "sign-revocation-info", "json"), 0)

    before = counted()

    def post(party: str | None, path: str = "/v1/status") -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json"}
        if party is not None:
            headers["Authorization"] = f"Bearer {apps.token(party)}"
        req = urllib.request.Request(
            apps.group_url + path, data=json.dumps(body).encode(), headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return int(r.status), {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as e:
            return int(e.code), {k.lower(): v for k, v in e.headers.items()}, e.read()

    code, headers, raw = post("member-2")
    assert code == 200, raw
    assert [e["status"] for e in json.loads(raw)["entries"]] == [want for _, want in picked]
    group_cert = x509.load_pem_x509_certificate((apps.group_dir / "group.pem").read_bytes())
    assert jws.verify(headers["jws-signature"], raw, group_cert)["alg"] == "RS256"
    assert post("sig-verifier")[0] == 403 and post(None)[0] == 401
    until(lambda: counted() == before + len(picked), timeout=5, interval=0.5)
    code, _, raw = post("member-2", "/v1/changes")
    detail = json.loads(raw)["detail"]
    assert code == 404 and all(
        r in detail for r in ("POST /v1/status", "POST /v1/verify", "POST /v1/record-info")
    ), detail


def test_refusing_a_member_act_20_2_within_a_second(apps: Appliances) -> None:
    good = next(
        a for a in apps.built.answers if a.family.value == "sign-mobile" and a.case == "good"
    )
    _registry(
        apps.group_dir, "suspend", "--id", "member-2", "--article", "Act §20(2)(1)",
        "--reason", "demo: a breach of the purpose rule is likely",
    )  # fmt: skip
    try:
        until(lambda: refused(ocsp(apps, good, "member-2")), timeout=3)
        assert "Response verify OK" in ocsp(apps, good, "member-1")[1]
    finally:
        _registry(apps.group_dir, "resume", "--id", "member-2")
    resumed(lambda: "Response verify OK" in ocsp(apps, good, "member-2")[1])


def _events(log: Path) -> list[dict[str, object]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            obj = json.loads(line)
            if isinstance(obj, dict):
                out.append(obj)
    return out


def test_revocation_at_the_kikou_reaches_a_member(apps: Appliances) -> None:
    """A revocation recorded at the 機構 (a spool file for its build --follow) is answered
    revoked to a member after the 機構's delta CRL and one pull cycle."""
    good = [
        a for a in apps.built.answers
        if a.family.value == "sign-card" and a.case == "good" and a.status is CertStatus.GOOD
    ]  # fmt: skip
    a = good[-1]
    rec = {"type": "revocation-request", "id": "group-test-1",
           "recorded_at": datetime.now(UTC).isoformat(), "serial": a.serial,
           "issuer": a.issuer, "reason": "application"}  # fmt: skip
    t0 = time.monotonic()
    tmp = apps.kikou_spool / "in.tmp"
    tmp.write_bytes(msgspec.json.encode(rec) + b"\n")
    tmp.rename(apps.kikou_spool / "group-1.jsonl")
    until(lambda: ": revoked" in ocsp(apps, a, "member-1")[0], timeout=30, interval=0.2)
    assert time.monotonic() - t0 < 30


def test_ledgers_count_per_member_and_the_groups_downloads(apps: Appliances) -> None:
    """The group's ledger counts its answers per member (its own record: Act §40's 帳簿 is
    the 機構's); the 機構's counts the CRL files downloaded by the group."""
    good = next(a for a in apps.built.answers if a.family.value == "sign-card" and a.case == "good")
    assert "Response verify OK" in ocsp(apps, good, "member-1")[1]
    today = datetime.now(JST).date()
    days = (today - timedelta(days=1), today + timedelta(days=1))

    def totals(d: Path) -> dict[tuple[str, ...], int]:
        with Ledger.open(d) as ledger:
            ledger.collect()
            return ledger.totals(*days, by=("party", "service", "method"))

    def counted() -> bool:
        group = totals(apps.group_dir / "ledger")
        return group.get(("member-1", "sign-revocation-info", "ocsp"), 0) > 0

    until(counted, timeout=5, interval=0.5)
    group = totals(apps.group_dir / "ledger")
    assert {k[0] for k in group} <= {"member-1", "member-2"}, group
    kikou = totals(apps.kikou.d / "ledger")
    assert kikou.get((GROUP, "sign-crl-file", "crl-file"), 0) >= 2, kikou
    # the report of Act §41 is the 機構's: the group's appliance publishes none (its
    # recipients are its members, natural persons among them)
    for year in (today.year, today.year - 1):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{apps.group_url}/reports/{year}.json", timeout=10)
        assert e.value.code == 404


def test_tampered_crl_refused_old_data_kept(apps: Appliances, tmp_path: Path) -> None:
    """A CRL whose signature does not verify is refused, logged why, and the store keeps the
    last good data; the 機構's genuine files then import."""
    crl = apps.kikou_crl
    setup = load_group_setup(apps.group_dir)
    issuer = next(i for i in setup.issuers if i.family.value == "sign-mobile")
    genuine = (crl / f"{issuer.id}.crl").read_bytes()
    tampered = bytearray(genuine)
    tampered[-5] ^= 0x01  # in the signature
    files = {"/full.crl": genuine, "/delta.crl": (crl / f"{issuer.id}-delta.crl").read_bytes()}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        one = msgspec.structs.replace(
            issuer, crl_url=base + "/full.crl", delta_crl_url=base + "/delta.crl"
        )
        local = msgspec.structs.replace(setup, issuers=[one], store=str(tmp_path / "store"))
        local.directory = setup.directory
        (tmp_path / "store").mkdir()
        store = Store.open(tmp_path / "store", readonly=False)
        try:
            log = io.StringIO()
            feed = GroupFeed(local, store, log=log)
            assert [o.status for o in feed.pass_once()] == ["imported", "imported"]
            before = dump_store(store)
            files["/full.crl"] = bytes(tampered)
            files["/delta.crl"] = b"not a CRL"
            got = feed.pass_once()
            assert [o.status for o in got] == ["refused", "refused"], got
            assert "signature" in got[0].detail and "CRL" in got[1].detail
            assert dump_store(store) == before
            assert '"status": "refused"' in log.getvalue()
            # two days on, the 機構's CRLs are past their nextUpdate: refused as expired, and
            # the issuer's data is stale (the responder says tryLater for it)
            files["/full.crl"] = genuine
            later = GroupFeed(
                local, store, log=log, clock=lambda: datetime.now(UTC) + timedelta(days=2)
            )
            got = later.pass_once()
            assert got[0].status == "refused" and "expired" in got[0].detail, got
            assert '"event": "group-stale"' in log.getvalue()
            assert dump_store(store) == before
        finally:
            store.close()
    finally:
        srv.shutdown()


def test_pull_backs_off_and_honours_retry_after(apps: Appliances, tmp_path: Path) -> None:
    """A 機構 answering 503: the passes retry after 1, 2, 4 s (doubling, at most the cycle);
    a 429 with Retry-After: the next pass then; nothing imported meanwhile."""
    answer = {"status": 503, "retry": ""}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(answer["status"])
            if answer["retry"]:
                self.send_header("Retry-After", answer["retry"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    setup = load_group_setup(apps.group_dir)
    try:
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        one = msgspec.structs.replace(
            setup.issuers[0], crl_url=base + "/f.crl", delta_crl_url=base + "/d.crl"
        )
        local = msgspec.structs.replace(
            setup, issuers=[one], store=str(tmp_path / "store"), cycle_seconds=4
        )
        local.directory = setup.directory
        store = Store.open(tmp_path / "store", readonly=False)
        try:
            log = io.StringIO()
            feed = GroupFeed(local, store, log=log)
            assert feed.follow(threading.Event(), max_passes=3) == 3
            answer.update(status=429, retry="3")
            feed.follow(threading.Event(), max_passes=1)
            passes = [json.loads(x) for x in log.getvalue().splitlines() if '"group-pass"' in x]
            # 503: 1, 2, 4 (the cycle); 429 Retry-After: 3 (the agreement's limit, not a
            # failure: the next pass when the 機構 said)
            assert [p["next_in"] for p in passes] == [1, 2, 4, 3], passes
            assert [p["status"] for p in passes] == ["failed"] * 3 + ["ok"]
            assert '"imported"' not in log.getvalue()
        finally:
            store.close()
    finally:
        srv.shutdown()


def test_zz_kikou_stopped_during_the_pull(apps: Appliances) -> None:
    """The 機構 stops: the pull logs the failure and backs off; the group goes on answering
    from the last good data (fresh until the CRLs' nextUpdate)."""
    apps.kikou_stop.close()  # the 機構's responder and builder, by PID
    good = next(a for a in apps.built.answers if a.family.value == "sign-card" and a.case == "good")

    def failed() -> bool:
        return any(
            e.get("event") == "group-pull" and e.get("status") == "unreachable"
            for e in _events(apps.pull_log)
        )

    until(failed, timeout=10, interval=0.2)
    t0 = time.monotonic()
    out, err = ocsp(apps, good, "member-1")
    assert "Response verify OK" in err and ": good" in out, (out, err)
    assert time.monotonic() - t0 < 5
    passes = [e for e in _events(apps.pull_log) if e.get("event") == "group-pass"]
    assert passes[-1]["status"] == "failed" and passes[-1]["next_in"] >= 1
    assert apps.pull.poll() is None  # still following
    # while the 機構 was up, unchanged files were skipped (HEAD, same ETag), nothing refused
    pulls = [e for e in _events(apps.pull_log) if e.get("event") == "group-pull"]
    assert any(e["status"] == "unchanged" and e["kind"] == "full" for e in pulls)
    assert not [e for e in pulls if e["status"] == "refused"], pulls


def test_jdk_member_trusts_the_group_responder(
    apps: Appliances,
    jdk: Jdk,  # noqa: F811 (tests.test_java_interop's fixture)
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A member's Java client (PKIXRevocationChecker, OCSP only) over mutual TLS to the group,
    the group's responder certificate set as the trusted responder (setOcspResponderCert,
    RFC 6960 §4.2.2.2): good and revoked as the 機構's CRLs say."""
    d = tmp_path_factory.mktemp("group-jdk")
    m = apps.built.manifest
    password = secrets.token_urlsafe(16)
    env = {**os.environ, "STORE_PASS": password}
    p12 = subprocess.run(
        ["openssl", "pkcs12", "-export", "-in", str(m.path("parties/member-1.pem")),
         "-inkey", str(m.path("parties/member-1.key")), "-name", "member-1",
         "-passout", "env:STORE_PASS"],
        check=True, capture_output=True, env=env, timeout=30,
    )  # fmt: skip
    write_private(d / "member-1.p12", p12.stdout)
    subprocess.run(
        [str(jdk.bin / "keytool"), "-importcert", "-noprompt", "-alias", "client-ca",
         "-file", str(m.path(m.client_ca)), "-keystore", str(d / "trust.p12"),
         "-storetype", "PKCS12", "-storepass:env", "STORE_PASS"],
        check=True, capture_output=True, env=env, timeout=60,
    )  # fmt: skip
    checks = [(a, want) for a, want in samples(apps) if want in ("good", "revoked")]
    pop = apps.built.population
    responder = apps.group_dir / "group.pem"
    (d / "list.txt").write_text(
        "".join(f"{pop / a.cert} {pop / a.issuer_cert} responder={responder}\n" for a, _ in checks)
    )
    tls = ("--tls-cert", str(m.path(m.server_cert)), "--tls-key", str(m.path(m.server_key)),
           "--tls-client-ca", str(m.path(m.client_ca)), "--tls-client-cert", "optional",
           "--ledger-dir", str(d / "ledger"))  # fmt: skip
    with group_responder(apps.group_dir, d / "group-tls.log", *tls) as url:
        assert url.startswith("https://")
        out = subprocess.run(
            [str(jdk.bin / "java"), *JVM_FLAGS,
             f"-Djavax.net.ssl.trustStore={d / 'trust.p12'}", "-Djavax.net.ssl.trustStoreType=PKCS12",
             f"-Djavax.net.ssl.trustStorePassword={password}",
             f"-Djavax.net.ssl.keyStore={d / 'member-1.p12'}", "-Djavax.net.ssl.keyStoreType=PKCS12",
             f"-Djavax.net.ssl.keyStorePassword={password}",
             "-cp", str(jdk.classes), "OcspCheck", f"{url}/ocsp", str(d / "list.txt")],
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    got = out.stdout.splitlines()
    assert [g.split()[0] for g in got] == [want for _, want in checks], got


def test_the_groups_openapi_document_names_every_v1_route_it_serves(apps: Appliances) -> None:
    """The group appliance's /v1/openapi.json lists POST /v1/record-info (the relay, Act
    §20(4),(5)) beside the routes it answers from its own store, with the relay's own
    failures (502, 504) and whose key signs the answer (the 機構's, passed on); it listed
    only /v1/status and /v1/verify. Its refusals conform to the document it serves."""
    with urllib.request.urlopen(f"{apps.group_url}/v1/openapi.json", timeout=10) as r:
        doc = json.loads(r.read())
    assert {"/v1/status", "/v1/verify", "/v1/record-info"} <= set(doc["paths"])
    op = doc["paths"]["/v1/record-info"]["post"]
    assert {"200", "400", "401", "403", "502", "504"} <= set(op["responses"])
    signature = op["responses"]["200"]["headers"]["JWS-Signature"]["description"]
    assert "機構" in signature, signature
    operation = schemathesis.openapi.from_dict(doc)["/v1/record-info"]["POST"]
    for body, party, want in (
        ({"certificate": {"issuer": "sign-card-g1", "serial": "zz"}}, "member-1", 400),
        ({"certificate": {"issuer": "sign-card-g1", "serial": "1a"}}, None, 401),
        ({"unknown": 1}, "member-1", 400),
    ):
        case = operation.Case(body=body, media_type="application/json")
        headers = {"Authorization": f"Bearer {apps.token(party)}"} if party else {}
        response = case.call(base_url=apps.group_url, headers=headers, timeout=30)
        assert response.status_code == want, (body, response.text)
        case.validate_response(
            response,
            checks=[
                status_code_conformance, content_type_conformance, response_schema_conformance,
                response_headers_conformance,
            ],
        )  # fmt: skip


def test_a_group_signing_in_processes_answers_with_the_group_key(
    apps: Appliances, tmp_path: Path
) -> None:
    """``[ocsp] signing = "processes"`` on a group appliance: the signing processes load the
    group's own key from group.json (団体署名検証者, Act §20(1)), the workers none; a
    member's fresh answers verify with group.pem as before."""
    with second_group(apps, tmp_path / "gp", "--signing", "processes") as url:
        for a, want in samples(apps)[:4]:
            out, err = ocsp(apps, a, MEMBERS[0], "-resp_text", url=url)
            assert "Response verify OK" in err, (a.case, out, err)
            assert f": {want}" in out, (a.case, out)
