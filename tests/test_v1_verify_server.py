"""POST /v1/verify on the real server with the demo population (`built`): all three formats
verified through the worker (Act §19(1)), a group for its members (§20(1), §21(1)), the
refusals, 413, the signed receipt, and nothing personal in the log.

The signatures are made in process with the demo's sample subject key (cryptography,
asn1crypto, xmlsec1 through python-xmlsec) and, for one CMS, by ``openssl cms -sign``.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from crlbuilder.model import Answer, CertStatus, Family
from responder.v1 import jws
from responder.validation.facts import decode_facts
from tests.conftest import ROOT, Built
from tests.support.harness import start_server, total
from tests.support.signing import cms_signed, pkcs1, xml_signed
from tests.support.wait import until
from tests.test_v1_server import v1, v1_raw

pytestmark = pytest.mark.integration

DOC = "電子申請: 住所変更届\n".encode()


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def sample(built: Built, family: Family, case: str = "good") -> tuple[Answer, x509.Certificate]:
    for a in built.answers:
        if a.family is family and a.case == case and a.status is CertStatus.GOOD:
            cert = x509.load_pem_x509_certificate((built.population / a.cert).read_bytes())
            if family is not Family.SIGN_CARD or a.issuer == "sign-card-g2":
                return a, cert
    raise AssertionError(f"no {family.value} {case} sample")


def subject_key(built: Built) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(
        (built.population / "samples" / "subject-key.pem").read_bytes(), None
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def items(built: Built, cert: x509.Certificate, tmp: Path) -> list[dict[str, Any]]:
    key = subject_key(built)
    der = cert.public_bytes(serialization.Encoding.DER)
    (tmp / "doc.txt").write_bytes(DOC)
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    subprocess.run(
        ["openssl", "cms", "-sign", "-binary", "-md", "sha256", "-in", str(tmp / "doc.txt"),
         "-signer", str(tmp / "cert.pem"), "-inkey", str(built.population / "samples" / "subject-key.pem"),
         "-outform", "DER", "-out", str(tmp / "doc.p7s")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return [
        {"format": "pkcs1", "certificate": b64(der), "signature": b64(pkcs1(DOC, key)), "data": b64(DOC)},
        {"format": "cms", "cms": b64((tmp / "doc.p7s").read_bytes()), "content": b64(DOC)},
        {"format": "cms", "cms": b64(cms_signed(DOC, cert, key))},
        {"format": "xmldsig", "xml": b64(xml_signed(cert, key))},
        {"format": "xmldsig", "xml": b64(xml_signed(cert, key, detached=("doc.txt", DOC))),
         "documents": {"doc.txt": b64(DOC)}},
    ]  # fmt: skip


def test_verify_through_the_real_server(built: Built, tmp_path: Path) -> None:
    _, card = sample(built, Family.SIGN_CARD)
    _, mobile = sample(built, Family.SIGN_MOBILE)
    _, auth = sample(built, Family.AUTH_CARD)
    batch = items(built, card, tmp_path) + items(built, mobile, tmp_path)[:1]
    batch += items(built, auth, tmp_path)[:1]
    with start_server(built, tmp_path / "srv") as s:
        code, headers, raw = v1_raw(s, "/v1/verify", {"items": batch}, "sig-verifier")
        assert code == 200, raw
        got = json.loads(raw)
        results = [r["result"] for r in got["results"]]
        assert results == ["ok"] * 6 + ["not-a-sign-certificate"], got
        assert got["store"]["commit"] > 0
        facts = got["results"][0]["facts"]["facts"]
        expected = decode_facts(card)
        assert expected is not None and facts["name"] == expected.name
        # the receipt: a detached JWS over the exact bytes, by the key of GET /v1/keys
        _, _, jwks = v1(s, "/v1/keys")
        signer = x509.load_der_x509_certificate(base64.b64decode(jwks["keys"][0]["x5c"][0]))
        assert jws.verify(headers["jws-signature"], raw, signer)["alg"] == "RS256"
        # a group for its members (Act §20(1), §21(1)); the member itself is answered by
        # its group, not by the 機構 (§20(1)); a 利用者証明検証者 receives no sign information
        code, _, got = v1(s, "/v1/verify", {"items": batch[:1]}, "group-verifier")
        assert code == 200 and got["results"][0]["result"] == "ok"
        code, _, got = v1(s, "/v1/verify", {"items": batch[:1]}, "member-1")
        assert code == 403 and got["article"] == "Act §20(1)"
        code, _, got = v1(s, "/v1/verify", {"items": batch[:1]}, "auth-verifier")
        assert code == 403 and got["rule"] == "unauthorized_service"
        code, _, got = v1(s, "/v1/verify", {"items": batch[:1]})
        assert code == 401
        # a 10 MB document: 413 naming the item (verify_max_document_bytes), the worker unharmed
        big = dict(batch[1], content=b64(b"x" * (10 << 20)))
        code, _, got = v1(s, "/v1/verify", {"items": [batch[0], big]}, "sig-verifier")
        assert code == 413 and got["field"] == "$.items[1].content", got
        code, _, got = v1(s, "/v1/verify", {"items": batch[:1]}, "sig-verifier")
        assert code == 200 and got["results"][0]["result"] == "ok"
        # the route shows in the metrics under its own endpoint label
        until(lambda: total(s.scrape(), "jpkiva_requests_total", endpoint="v1-verify") > 0, 10)
        log = s.log.read_text()
        assert expected.name not in log and expected.address not in log
        assert b64(DOC) not in log


def readme_block() -> str:
    """The shell block of the README's 'Signature validation' section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Signature validation") :]
    start = section.index("```sh\n") + len("```sh\n")
    return section[start : section.index("```", start)]


def test_readme_curl_commands_verify_each_format(built: Built, tmp_path: Path) -> None:
    """The README's commands, run as written against the real server (D and URL set to it)."""
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "pki").symlink_to(built.pki)
    (demo / "population").symlink_to(built.population)
    work = tmp_path / "work"  # the commands write doc.txt ... in the current directory
    work.mkdir()
    (work / "docs").symlink_to(ROOT / "docs")
    with start_server(built, tmp_path / "srv") as s:
        script = readme_block().replace(
            "D=var/demo URL=http://127.0.0.1:8080", f"D={demo} URL={s.url}"
        )
        assert f"URL={s.url}" in script
        out = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], cwd=work, capture_output=True,
            text=True, timeout=120, check=False,
        )  # fmt: skip
    assert out.returncode == 0, out.stderr
    answers = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert [a["results"][0]["format"] for a in answers] == ["pkcs1", "cms", "xmldsig"]
    assert [a["results"][0]["result"] for a in answers] == ["ok", "ok", "ok"], answers
