"""The PKCS#11 signer back end (署名装置 in an HSM, Ord §73, §74) on a SoftHSM2 token of the test's own.

Unit tests: the RFC 7512 key reference and its refusals, the PIN sources, the choice of
back end. Integration tests (a token made with softhsm2-util): signatures that verify
against the certificate, every start-up fault with its message (never the PIN), a signer
used after fork, a token that disappears at run time and comes back, and the builder and
the responder refusing to start on a bad key.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import ocsp
from pkcs11 import Attribute, ObjectClass

from crlbuilder.keys import pkcs11 as p11
from crlbuilder.keys.signer import (
    EXIT_PIN_REFUSED,
    SHA256_WITH_RSA_DER,
    PemSigner,
    Signer,
    SignerError,
    load_signer,
)
from crlbuilder.manifest import Manifest
from crlbuilder.model import CertStatus
from tests.conftest import Built
from tests.support.builder import as_of_the_clock, events_until, follow_process
from tests.support.harness import request_for, start_server, total
from tests.support.pki import make_ca, rsa_key
from tests.support.softhsm import SoftHsmToken, issue, keys_into_token, make_token
from tests.support.wait import until

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cret-PIN-9931"
"""A PIN that must never show in a message or a log."""


def _verify(signer: Signer, data: bytes, signature: bytes) -> None:
    public = signer.certificate.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())


# --- the key reference (unit) ------------------------------------------------------------


def test_rfc7512_uri_names_token_key_and_pin_source() -> None:
    uri = p11.parse_key_uri(
        "pkcs11:token=jpki%20va;object=ocsp-sign-g1;type=private?pin-source=file:/etc/jpki-va/pin"
    )
    assert (uri.token, uri.label, uri.pin_source) == (
        "jpki va",
        "ocsp-sign-g1",
        "file:/etc/jpki-va/pin",
    )
    env = p11.parse_key_uri("pkcs11:object=k;token=t?pin-source=env:JPKIVA_PIN")
    assert (env.token, env.label, env.pin_source) == ("t", "k", "env:JPKIVA_PIN")


@pytest.mark.parametrize(
    ("ref", "why"),
    [
        (f"pkcs11:token=t;object=k?pin-value={SECRET}", "PIN inside the key reference"),
        (f"pkcs11:token=t;object=k;pin-value={SECRET}?pin-source=env:P", "PIN inside"),
        ("pkcs11:token=t;object=k;id=%01?pin-source=env:P", "'id' is not accepted"),
        (
            "pkcs11:token=t;object=k?pin-source=env:P&module-path=/x.so",
            "'module-path' is not accepted",
        ),
        ("pkcs11:object=k?pin-source=env:P", "'token' attribute is required"),
        ("pkcs11:token=t?pin-source=env:P", "'object' attribute is required"),
        ("pkcs11:token=t;object=k", "'pin-source' attribute is required"),
        ("pkcs11:token=t;object=k;type=public?pin-source=env:P", "type=private"),
        ("pkcs11:token=t;object=k;token=u?pin-source=env:P", "given twice"),
        ("pkcs11:token=t;object=k?pin-source=file:pin.txt", "absolute path"),
        ("pkcs11:token=t;object=k?pin-source=https://x/pin", "file:/absolute/path or env:NAME"),
        ("pkcs11:token=t;object=k?pin-source=env:A-B", "variable name"),
        ("/etc/jpki-va/ocsp.key", "not a PKCS#11 URI"),
        # a PIN under a misspelt name, or with none: refused, and never shown
        (f"pkcs11:token=t;object=k?pin_value={SECRET}", "'pin_value' is not accepted"),
        (f"pkcs11:token=t;object=k?pin%2Dvalue={SECRET}", "is not accepted"),
        (f"pkcs11:token=t;object=k;pin={SECRET}?pin-source=env:P", "'pin' is not accepted"),
        (f"pkcs11:token=t;object=k?{SECRET}", "a part without '='"),
        (f"pkcs11:{SECRET};token=t;object=k?pin-source=env:P", "a part without '='"),
    ],
)
def test_key_reference_refused_with_a_clear_message_never_the_pin(ref: str, why: str) -> None:
    with pytest.raises(SignerError) as e:
        p11.parse_key_uri(ref)
    message = str(e.value)
    assert why in message
    assert SECRET not in message
    assert message.startswith(p11.redact(ref))


def test_redact_keeps_only_the_values_that_hold_no_secret() -> None:
    ref = f"pkcs11:token=t;object=k?pin-value={SECRET}&pin-source=env:P"
    assert p11.redact(ref) == "pkcs11:token=t;object=k?pin-value=<redacted>&pin-source=env:P"
    assert p11.redact("/a/b.key") == "/a/b.key"
    shown = "pkcs11:token=t;object=k;id=%01;type=private?pin-source=file:/etc/pin"
    assert p11.redact(shown) == shown
    assert p11.redact(f"PKCS11:Pin={SECRET};token=t") == "PKCS11:pin=<redacted>;token=t"
    assert p11.redact(f"pkcs11:token=t?{SECRET}&pin-source=env:P") == (
        "pkcs11:token=t?<redacted>&pin-source=env:P"
    )


def test_pin_file_readable_by_others_refused(tmp_path: Path) -> None:
    pin = tmp_path / "pin"
    pin.write_text(SECRET + "\n")
    pin.chmod(0o644)
    uri = p11.parse_key_uri(f"pkcs11:token=t;object=k?pin-source=file:{pin}")
    with pytest.raises(SignerError, match="0644") as e:
        uri.read_pin()
    assert SECRET not in str(e.value)
    pin.chmod(0o600)
    assert uri.read_pin() == SECRET


def test_pin_from_unset_environment_variable_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JPKIVA_TEST_PIN", raising=False)
    uri = p11.parse_key_uri("pkcs11:token=t;object=k?pin-source=env:JPKIVA_TEST_PIN")
    with pytest.raises(SignerError, match="JPKIVA_TEST_PIN is not set"):
        uri.read_pin()
    monkeypatch.setenv("JPKIVA_TEST_PIN", SECRET)
    assert uri.read_pin() == SECRET


def test_module_path_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(p11.MODULE_ENV, "/opt/hsm/lib.so")
    assert p11.module_path() == "/opt/hsm/lib.so"


def test_load_signer_picks_the_back_end_by_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = rsa_key()
    ca = make_ca("pem signer", key)
    key_file = tmp_path / "k.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    cert_file = tmp_path / "c.pem"
    cert_file.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    signer = load_signer(key_file, cert_file)
    assert isinstance(signer, PemSigner)
    # a pkcs11: reference goes to the PKCS#11 back end (here: a module that is not there)
    pin = tmp_path / "pin"
    pin.write_text(SECRET)
    pin.chmod(0o600)
    monkeypatch.setenv(p11.MODULE_ENV, str(tmp_path / "no-such-module.so"))
    ref = f"pkcs11:token=t;object=k?pin-source=file:{pin}"
    with pytest.raises(SignerError, match="cannot load the PKCS#11 module") as e:
        load_signer(ref, cert_file)
    assert str(e.value).startswith(ref) and SECRET not in str(e.value)


def test_manifest_key_field_holds_a_path_or_a_pkcs11_uri(tmp_path: Path) -> None:
    manifest = msgspec.convert(
        {"key_size": 2048, "base_url": "http://127.0.0.1", "issuers": [], "client_ca": "c",
         "client_ca_key": "k", "server_cert": "c", "server_key": "k",
         "group_responder_cert": "c", "group_responder_key": "k", "directory": str(tmp_path)},
        Manifest,
    )  # fmt: skip
    uri = "pkcs11:token=t;object=ocsp;type=private?pin-source=env:PIN"
    assert manifest.key_ref(uri) == uri
    assert manifest.key_ref("PKCS11:token=t;object=k?pin-source=env:P").startswith("PKCS11:")
    assert manifest.key_ref("ocsp/sign-card-g1.key") == str(tmp_path / "ocsp/sign-card-g1.key")


# --- on a SoftHSM2 token (integration) ----------------------------------------------------


@pytest.fixture
def token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsmToken:
    t = make_token(tmp_path, monkeypatch, pin=SECRET)
    yield t  # type: ignore[misc]
    t.close()


@pytest.mark.integration
def test_pkcs11_signature_verifies_against_the_certificate(token: SoftHsmToken) -> None:
    ref, cert = token.add_key("ocsp-signer")
    signer = load_signer(ref, cert)
    assert isinstance(signer, p11.Pkcs11Signer)
    assert isinstance(signer, Signer)
    assert signer.signature_algorithm_der == SHA256_WITH_RSA_DER
    data = b"tbsResponseData" * 100
    _verify(signer, data, signer.sign(data))
    assert SECRET not in repr(signer)


@pytest.mark.integration
def test_pin_from_environment_variable(
    token: SoftHsmToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, cert = token.add_key("k")
    monkeypatch.setenv("JPKIVA_TEST_PIN", SECRET)
    signer = load_signer(token.uri("k", pin_env="JPKIVA_TEST_PIN"), cert)
    _verify(signer, b"x", signer.sign(b"x"))


@pytest.mark.integration
def test_key_generated_in_token_is_sensitive_and_never_extractable(token: SoftHsmToken) -> None:
    import pkcs11

    token.add_key("ca-g1")
    with pkcs11.lib(token.module).get_token(token_label=token.label).open() as session:
        key = session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, label="ca-g1")
        assert key[pkcs11.Attribute.SENSITIVE] is True
        assert key[pkcs11.Attribute.EXTRACTABLE] is False
        assert key[pkcs11.Attribute.NEVER_EXTRACTABLE] is True
    with pytest.raises(SignerError, match="already has a key 'ca-g1'"):
        token.add_key("ca-g1")


@pytest.mark.integration
def test_destroyed_key_is_gone_from_the_token(token: SoftHsmToken) -> None:
    ref, cert = token.add_key("retired")
    p11.destroy_key(ref, module=token.module)
    p11.close_all()
    with pytest.raises(SignerError, match="no private key labelled 'retired'"):
        load_signer(ref, cert)


@pytest.mark.integration
def test_destroying_a_key_leaves_another_pairs_public_key_under_its_label(
    token: SoftHsmToken,
) -> None:
    """Retirement destroyed every public-key object under the key's label: another key pair's
    public key that shares the label (relabelled, imported) went with it. Only the retired
    key's own public key (by fingerprint) goes."""
    ref, _ = token.add_key("retired")
    _, other_cert = token.add_key("other")
    p11.close_all()
    lib = pkcs11.lib(token.module)
    lib.reinitialize()  # close_all finalised it
    with lib.get_token(token_label=token.label).open(rw=True, user_pin=SECRET) as session:
        [other] = session.get_objects(
            {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: "other"}
        )
        other[Attribute.LABEL] = "retired"
    p11.destroy_key(ref, module=token.module)
    p11.close_all()
    lib.reinitialize()
    with lib.get_token(token_label=token.label).open(user_pin=SECRET) as session:
        left = [
            int.from_bytes(bytes(k[Attribute.MODULUS]), "big")
            for k in session.get_objects(
                {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: "retired"}
            )
        ]
        privates = {
            str(k.label) for k in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})
        }
    assert privates == {"other"}
    public = x509.load_pem_x509_certificate(other_cert.read_bytes()).public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    assert left == [public.public_numbers().n]  # the other pair's public key, relabelled: kept


@pytest.mark.integration
@pytest.mark.parametrize(
    "fault",
    ["wrong_pin", "wrong_pin_of_a_second_key", "missing_token", "missing_key", "other_cert"],
)
def test_fault_at_start_names_the_key_and_what_is_wrong(
    token: SoftHsmToken, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ref, cert = token.add_key("ocsp-signer")
    p11.close_all()  # a fresh process: nothing logged in yet
    if fault.startswith("wrong_pin"):
        wrong = token.directory / "wrong.pin"
        wrong.write_text("not-" + SECRET)
        wrong.chmod(0o600)
        expected = "the token refused the PIN (wrong PIN)"
        if fault == "wrong_pin_of_a_second_key":  # the token is logged in by a first key
            first, first_cert = token.add_key("first")
            load_signer(first, first_cert)
            expected = "wrong PIN (not the PIN token 'jpki-va-test' is logged in with)"
        ref = ref.replace(str(token.pin_file), str(wrong))
    elif fault == "missing_token":
        ref = token.uri("ocsp-signer", token="no-such-token")
        expected = "no token labelled 'no-such-token'"
    elif fault == "missing_key":
        ref = token.uri("no-such-key")
        expected = "no private key labelled 'no-such-key' in token 'jpki-va-test'"
    else:
        cert = token.directory / "other.pem"
        other = issue(token.ca, "other", rsa_key().public_key())
        cert.write_bytes(other.public_bytes(serialization.Encoding.PEM))
        expected = "does not match the certificate's public key"
    with pytest.raises(SignerError) as e:
        load_signer(ref, cert)
    message = str(e.value)
    assert message.startswith(ref), message  # which key: its reference (a PIN source, no PIN)
    assert expected in message
    assert SECRET not in message and SECRET not in caplog.text


@pytest.mark.integration
@pytest.mark.parametrize(
    ("attrs", "why"),
    [
        ({"extractable": True}, "CKA_EXTRACTABLE is true"),
        ({"sensitive": False}, "CKA_SENSITIVE is false"),
    ],
)
def test_ord_73_4_a_key_the_token_would_let_out_is_refused_at_start(
    token: SoftHsmToken, attrs: dict[str, bool], why: str
) -> None:
    """A signing key imported extractable or not sensitive (its value can be wrapped out or
    read) is refused at start, naming the key and why; one imported sensitive and not
    extractable is used."""
    key = rsa_key()
    cert = token.directory / "imported.pem"
    cert.write_bytes(
        issue(token.ca, "imported", key.public_key()).public_bytes(serialization.Encoding.PEM)
    )
    ref = token.import_key("imported-leaky", key, **attrs)
    p11.close_all()
    with pytest.raises(SignerError) as e:
        load_signer(ref, cert)
    assert str(e.value).startswith(ref) and why in str(e.value)
    assert token.pin not in str(e.value)
    kept = token.import_key("imported-kept", key)
    _verify(load_signer(kept, cert), b"data", load_signer(kept, cert).sign(b"data"))


@pytest.mark.integration
def test_signer_used_after_fork_opens_its_own_session(token: SoftHsmToken) -> None:
    ref, cert = token.add_key("presign")
    signer = load_signer(ref, cert)
    _verify(signer, b"parent", signer.sign(b"parent"))  # the parent is logged in
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's session is not its own
        os.close(read)
        code = 0
        try:
            os.write(write, signer.sign(b"child"))
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    signature = b""
    while chunk := os.read(read, 4096):
        signature += chunk
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    _verify(signer, b"child", signature)
    _verify(signer, b"parent again", signer.sign(b"parent again"))


@pytest.mark.integration
def test_token_gone_at_run_time_is_unavailable_then_used_again(token: SoftHsmToken) -> None:
    ref, cert = token.add_key("ocsp")
    signer = load_signer(ref, cert)
    signer.sign(b"before")
    tokens = token.directory / "tokens"
    away = token.directory / "tokens-away"
    tokens.rename(away)  # the token disappears under a running signer
    try:
        for _ in range(3):  # every attempt fails cleanly, none crashes
            with pytest.raises(p11.TokenUnavailable) as e:
                signer.sign(b"during")
            assert str(e.value).startswith(ref) and SECRET not in str(e.value)
    finally:
        away.rename(tokens)
    _verify(signer, b"after", signer.sign(b"after"))  # back: no restart needed


# --- the builder and the responder with keys in the token (integration) -------------------


@pytest.fixture
def pki_in_token(
    demo_pki: tuple[Path, object], token: SoftHsmToken, tmp_path: Path
) -> tuple[Path, SoftHsmToken]:
    pki = tmp_path / "pki"
    shutil.copytree(demo_pki[0], pki)
    keys_into_token(pki, token)
    p11.close_all()
    return pki, token


def _break(pki: Path, token: SoftHsmToken, fault: str) -> str:
    """Make one key reference of ``pki`` faulty; the reference as the error must name it."""
    manifest = pki / "pki.json"
    text = manifest.read_text()
    ref = token.uri("sign-card-g1-ocsp_key")
    assert ref in text
    if fault == "wrong_pin":
        wrong = token.directory / "wrong.pin"
        wrong.write_text("not-" + SECRET)
        wrong.chmod(0o600)
        bad = ref.replace(str(token.pin_file), str(wrong))
    else:
        bad = token.uri("no-such-key")
    manifest.write_text(text.replace(ref, bad))
    return bad


@pytest.mark.integration
@pytest.mark.parametrize("fault", ["wrong_pin", "missing_key"])
def test_responder_refuses_to_start_on_a_bad_key(
    pki_in_token: tuple[Path, SoftHsmToken], tmp_path: Path, fault: str
) -> None:
    pki, token = pki_in_token
    bad = _break(pki, token, fault)
    out = subprocess.run(
        [str(BIN / "responder"), "serve", "--pki", str(pki), "--store", str(tmp_path / "none"),
         "--registry", str(tmp_path / "none.toml"), "--port", "0", "--no-metrics"],
        check=False, capture_output=True, text=True, timeout=60, env=os.environ.copy(),
    )  # fmt: skip
    # a wrong PIN is its own status, which the units do not restart for (a restart loop
    # would give the wrong PIN every few seconds until the HSM locked it); a key not there: 2
    assert out.returncode == (EXIT_PIN_REFUSED if fault == "wrong_pin" else 2), out.stderr
    assert bad in out.stderr
    assert SECRET not in out.stderr + out.stdout


@pytest.mark.integration
def test_builder_exits_pin_refused_on_a_wrong_pin(
    pki_in_token: tuple[Path, SoftHsmToken], tmp_path: Path
) -> None:
    pki, token = pki_in_token
    _break(pki, token, "wrong_pin")  # writes wrong.pin
    # every key of the token with the wrong PIN: the first one opened tries it (a key given
    # another PIN than the one the token is logged in with is refused without a try: 2)
    manifest = pki / "pki.json"
    manifest.write_text(
        manifest.read_text().replace(str(token.pin_file), str(token.directory / "wrong.pin"))
    )
    key = tmp_path / "facts.key"
    subprocess.run([str(BIN / "crlbuilder"), "facts-key", "--out", str(key)], check=True)
    (tmp_path / "records").mkdir()
    out = subprocess.run(
        [str(BIN / "crlbuilder"), "build", "--config", str(ROOT / "config" / "builder.toml"),
         "--store", str(tmp_path / "store"), "--pki", str(pki),
         "--input", str(tmp_path / "records"), "--facts-key-file", str(key),
         "--quarantine", str(tmp_path / "q.jsonl"), "--notices", str(tmp_path / "n.jsonl"),
         "--crl-dir", str(tmp_path / "crl"), "--spool", str(tmp_path / "spool"), "--no-progress"],
        check=False, capture_output=True, text=True, timeout=120, env=os.environ.copy(),
    )  # fmt: skip
    assert out.returncode == EXIT_PIN_REFUSED == 5, out.stderr  # not restarted: not 2
    assert "the token refused the PIN (wrong PIN)" in out.stderr and "wrong.pin" in out.stderr
    assert SECRET not in out.stderr + out.stdout
    assert not (tmp_path / "crl").exists() or not any((tmp_path / "crl").iterdir())


@pytest.mark.integration
def test_responder_with_ocsp_keys_in_token_answers_try_later_while_the_token_is_gone(
    built: Built, token: SoftHsmToken, tmp_path: Path
) -> None:
    """Fresh answers are signed in the token by each worker's own session; a token that
    disappears gives tryLater and counts jpkiva_signer_errors_total, the workers stay up
    (one restarted meanwhile comes up too), and the token is used again once back."""
    pki = tmp_path / "pki"
    shutil.copytree(built.pki, pki)
    keys_into_token(pki, token, fields=("ocsp_key",))
    p11.close_all()
    in_token = dataclasses.replace(built, pki=pki)
    good = [a for a in built.answers if a.status is CertStatus.GOOD]
    goods = [a for a in good if a.issuer == good[0].issuer]  # one signer for all of them
    with start_server(in_token, tmp_path / "server") as s:
        party = s.token("sig-verifier")

        def fresh(i: int) -> ocsp.OCSPResponse:  # SHA-256 CertIDs: never pre-signed
            return ocsp.load_der_ocsp_response(
                s.post(request_for(s, goods[i], hashes.SHA256()), token=party)
            )

        answer = fresh(0)
        assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        signer = answer.certificates[0]  # the delegated signer whose key is in the token
        ocsp_certs = {(pki / i.ocsp_cert).read_bytes(): i.id for i in built.manifest.issuers}
        signer_id = ocsp_certs[signer.public_bytes(serialization.Encoding.PEM)]
        public = signer.public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        public.verify(
            answer.signature, answer.tbs_response_bytes, padding.PKCS1v15(), hashes.SHA256()
        )
        tokens, away = token.directory / "tokens", token.directory / "tokens-away"
        tokens.rename(away)
        try:
            for i in range(1, 5):
                assert fresh(i).response_status is ocsp.OCSPResponseStatus.TRY_LATER
            errors = s.scrape()
            assert total(errors, "jpkiva_signer_errors_total") == 4
            assert total(errors, "jpkiva_signer_errors_total", signer=signer_id) == 4
            assert os.waitpid(s.pid, os.WNOHANG) == (0, 0)  # the responder still runs
            assert s.events("worker_exit") == []
            # a worker restarted while the token is gone comes up and serves (no restart loop)
            victim = int(str(s.events("worker_start")[0]["worker_pid"]))
            os.kill(victim, signal.SIGKILL)
            until(lambda: len(s.events("worker_start")) == 3, what="the worker restarted")
            until(
                lambda: total(s.scrape(), "jpkiva_workers_up") == 2,
                what="the restarted worker serving",
            )
            assert fresh(5).response_status is ocsp.OCSPResponseStatus.TRY_LATER
            assert s.events("worker_start_failed") == []
        finally:
            away.rename(tokens)
        until(  # a refused answer is not cached: the same request until it is signed
            lambda: fresh(6).response_status is ocsp.OCSPResponseStatus.SUCCESSFUL,
            timeout=10,
            what="a fresh answer signed in the token once it is back",
        )
        assert s.events("signer_unavailable")
        log = s.log.read_text()
        assert "pkcs11 session opened" in log  # each worker's own session, in the JSON log
        assert token.pin not in log


@pytest.mark.integration
def test_builder_signs_crls_and_presigned_answers_with_every_key_in_the_token(
    built: Built, token: SoftHsmToken, tmp_path: Path
) -> None:
    """`crlbuilder build` with the CA and OCSP keys in the token and two forked signing
    workers (each opens its own session): the CRLs verify under their CA certificate, and a
    pre-signed answer served by the responder verifies under its delegated signer's."""
    pki = tmp_path / "pki"
    shutil.copytree(built.pki, pki)
    keys_into_token(pki, token)
    p11.close_all()
    in_token = dataclasses.replace(built, pki=pki)
    store, crl_dir = tmp_path / "store", tmp_path / "crl"
    out = subprocess.run(
        [str(BIN / "crlbuilder"), "build", *in_token.builder_args(store, crl_dir), "--sign-workers", "2"],
        check=False, capture_output=True, text=True, timeout=300, env=os.environ.copy(),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert token.pin not in out.stderr + out.stdout
    summary = json.loads(out.stderr.strip().splitlines()[-1])
    assert summary["ocsp_presigned"] > 0
    for issuer in built.manifest.issuers:
        crl = x509.load_der_x509_crl((crl_dir / f"{issuer.id}.crl").read_bytes())
        names = [issuer.cert] + ([issuer.successor_cert] if issuer.successor_cert else [])
        keys = [x509.load_pem_x509_certificate((pki / n).read_bytes()).public_key() for n in names]
        assert any(crl.is_signature_valid(k) for k in keys), issuer.id
    revoked = next(a for a in built.answers if a.status is CertStatus.REVOKED)
    with start_server(in_token, tmp_path / "server", store=store) as s:
        answer = ocsp.load_der_ocsp_response(
            s.post(request_for(s, revoked), token=s.token("both-verifier"))
        )
        assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        until(  # counted at the worker's next flush
            lambda: total(s.scrape(), "jpkiva_ocsp_answers_total", source="presigned") == 1,
            what="the answer counted as pre-signed",
        )
    public = answer.certificates[0].public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(answer.signature, answer.tbs_response_bytes, padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.integration
def test_builder_follow_loop_outlives_a_token_gone_while_it_signs(
    built: Built, token: SoftHsmToken, tmp_path: Path
) -> None:
    """A token removed while `build --follow` runs: the record file that arrives is committed,
    its pre-signing and CRLs fail with a warning naming the key (never the PIN), the loop goes
    on (it used to die with a traceback, leaving the CRLs behind until a restart with the token
    back), and signs them by itself once the token is back: the new revocation is in the CRL."""
    pki = tmp_path / "pki"
    shutil.copytree(built.pki, pki)
    keys_into_token(pki, token)
    p11.close_all()
    in_token = dataclasses.replace(built, pki=pki)
    store = tmp_path / "store"
    shutil.copytree(built.store, store)
    spool, crl_dir = tmp_path / "store-spool", tmp_path / "crl"
    spool.mkdir()
    shutil.copytree(built.crl_dir, crl_dir)
    good = next(
        a for a in built.answers if a.status is CertStatus.GOOD and a.family.value == "auth-card"
    )
    rec = {"type": "revocation-request", "id": "token-gone-1", "issuer": good.issuer,
           "recorded_at": built.as_of.isoformat(), "serial": good.serial, "reason": "loss"}  # fmt: skip
    args = as_of_the_clock(in_token.builder_args(store, crl_dir))
    p = follow_process(args, "--follow-interval", "0.1", "--max-idle", "120", "--sign-workers", "1")
    assert p.stderr is not None
    tokens, away = token.directory / "tokens", token.directory / "tokens-away"
    events: list[dict[str, object]] = []
    try:
        events_until(p.stderr, "build", events)  # the start-up build, with the token
        assert events[-1]["event"] == "build", events
        tokens.rename(away)  # the token disappears under the running loop
        tmp = spool / "in.tmp"
        tmp.write_bytes(msgspec.json.encode(rec) + b"\n")
        tmp.rename(spool / "0001.jsonl")
        events_until(p.stderr, "spool-file", events)
        assert events[-1]["event"] == "spool-file", events
        warned = [e for e in events if e["event"] == "warning" and "signing failed" in str(e)]
        assert warned, events
        assert token.pin not in str(warned)
        assert p.poll() is None  # alive, not crashed
        away.rename(tokens)  # back: the loop signs again without a restart
        while True:
            events_until(p.stderr, "refresh", events)
            assert events[-1]["event"] == "refresh", events
            if events[-1]["crls"]:
                break
        crl = x509.load_der_x509_crl((crl_dir / f"{good.issuer}.crl").read_bytes())
        delta = x509.load_der_x509_crl((crl_dir / f"{good.issuer}-delta.crl").read_bytes())
        assert any(
            c.get_revoked_certificate_by_serial_number(good.serial) is not None
            for c in (crl, delta)
        )
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=60) == 0
    finally:
        if away.exists():
            away.rename(tokens)
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.integration
def test_a_key_found_again_after_an_outage_is_checked_against_the_certificate(
    token: SoftHsmToken,
) -> None:
    """The key is compared with its certificate at start; a signer that finds it again by its
    label (a new thread's session, the token back after an outage, another HSM of a failover
    group) signed with whatever key held the label then: a key made again under that label
    signed answers that carried the old certificate, and every client rejected them. Refused
    now, each time, naming the key; nothing is signed."""
    ref, cert = token.add_key("ocsp")
    signer = load_signer(ref, cert)
    _verify(signer, b"before", signer.sign(b"before"))
    p11.destroy_key(ref, module=token.module)  # the label's key replaced in the token
    token.add_key("ocsp")
    for _ in range(2):  # not once only: never a signature by the other key
        with pytest.raises(p11.TokenUnavailable) as e:
            signer.sign(b"after")
        assert str(e.value).startswith(ref), str(e.value)
        assert "does not match the certificate" in str(e.value)
        assert SECRET not in str(e.value)


@pytest.mark.integration
def test_a_pin_refused_at_run_time_is_not_tried_again(
    token: SoftHsmToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token's PIN changed while a service runs (it stays logged in), then the token goes
    away and comes back: the service's login with the old PIN is refused. Every signature
    after that logged in again with the same wrong PIN (every worker, every signing process
    the builder starts again), and an HSM locks its user PIN after a few wrong ones: every
    key in it, the CA keys too. Now one try; then no login with that PIN in this process or
    a child forked after, and none in another process while the token says a wrong PIN was
    given since its last login (CKF_USER_PIN_COUNT_LOW). A restart with the right PIN signs."""
    ref, cert = token.add_key("ocsp")
    signer = load_signer(ref, cert)
    _verify(signer, b"before", signer.sign(b"before"))
    new_pin = "changed-" + SECRET
    with pkcs11.lib(token.module).get_token(token_label=token.label).open(rw=True) as session:
        session.set_pin(SECRET, new_pin)  # this process is logged in: the session is the user's
    logins: list[str] = []
    real_log_in = p11._log_in

    def counting(tok: object, pin: str) -> object:
        logins.append("try")
        return real_log_in(tok, pin)

    monkeypatch.setattr(p11, "_log_in", counting)
    tokens, away = token.directory / "tokens", token.directory / "tokens-away"
    tokens.rename(away)
    try:
        with pytest.raises(p11.TokenUnavailable):
            signer.sign(b"during")
    finally:
        away.rename(tokens)
    with pytest.raises(p11.TokenUnavailable, match="refused the PIN"):
        signer.sign(b"after")
    assert logins == ["try"]
    for _ in range(3):
        with pytest.raises(p11.TokenUnavailable, match="not tried again") as e:
            signer.sign(b"again")
        assert str(e.value).startswith(ref) and SECRET not in str(e.value)
    assert logins == ["try"]
    pid = os.fork()
    if pid == 0:  # a signing process forked now: it knows the refusal
        code = 3
        try:
            signer.sign(b"child")
        except p11.TokenUnavailable as exc:
            code = 0 if "not tried again" in str(exc) and logins == ["try"] else 4
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    p11.close_all()  # another process's state: only the token's own flags tell it
    with pytest.raises(p11.TokenUnavailable, match="given wrong since its last login") as e:
        signer.sign(b"another process")
    assert SECRET not in str(e.value) and new_pin not in str(e.value)
    assert logins == ["try"]
    token.pin_file.write_text(new_pin + "\n")  # the operator fixes the PIN source, restarts
    p11.close_all()
    restarted = load_signer(ref, cert)
    _verify(restarted, b"restarted", restarted.sign(b"restarted"))
    assert logins == ["try", "try"]
