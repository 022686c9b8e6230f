"""`responder serve` refusing to start: one line naming what is wrong, exit code 2."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from crlbuilder.manifest import Manifest, load_manifest
from responder.cli import main, parser
from responder.ocsp import load_issuers
from tests.support.clihelp import options
from tests.support.pki import certificate


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (None, "cannot read"),
        ('[server]\nport = "x"\n', "server.port: Expected `int`, got `str`"),
        ("[server\nport = 1\n", "invalid TOML"),
        ("[server]\nbogus = 1\n", "unknown field `bogus`"),
    ],
    ids=["missing", "wrong-type", "not-toml", "unknown-field"],
)
def test_a_bad_configuration_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None, said: str
) -> None:
    config = tmp_path / "responder.toml"
    if text is not None:
        config.write_text(text)
    rc = main(["serve", "--config", str(config), "--no-metrics"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"responder serve: error: {config}: ") and said in err, err


def test_a_bad_flag_value_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["serve", "--port", "99999", "--no-metrics"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    # named where it was given: the flag, not the file or the defaults
    assert "error: --port: server.port: Expected `int` <= 65535" in err


def test_every_option_of_every_subcommand_is_explained() -> None:
    unexplained = [
        f"{name} {action.option_strings[0]}"
        for name, action in options(parser(), "responder")
        if not action.help
    ]
    assert unexplained == []


def test_every_option_with_a_default_says_it() -> None:
    """A flag whose value is a default (not a switch, a count or unset) names it in --help."""
    silent = [
        f"{name} {action.option_strings[0]}"
        for name, action in options(parser(), "responder")
        if not isinstance(action, argparse._CountAction)
        and action.default not in (None, [], argparse.SUPPRESS)
        and not isinstance(action.default, bool)
        and "default" not in (action.help or "")
    ]
    assert silent == []


def _signer_swapped(pki: Path, tmp: Path, issuer: str, cert: Path, key: Path) -> Path:
    """A copy of ``pki`` whose ``issuer`` answers with the OCSP signer ``cert`` and ``key``."""
    copy = tmp / "pki"
    shutil.copytree(pki, copy)
    manifest = json.loads((copy / "pki.json").read_text())
    (entry,) = [i for i in manifest["issuers"] if i["id"] == issuer]
    entry["ocsp_cert"], entry["ocsp_key"] = str(cert), str(key)
    (copy / "pki.json").write_text(json.dumps(manifest))
    return copy


def test_a_certificate_that_is_no_delegated_ocsp_signer_of_its_issuer_is_refused(
    demo_pki: tuple[Path, Manifest], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """RFC 6960 §4.2.2.2: a client accepts an answer signed by the CA or by a delegate the
    CA's key issued, with id-kp-OCSPSigning. pki.json naming another generation's signer,
    or a certificate without that purpose (both got from the CA operator, docs/operations.md
    "OCSP signer renewal"), started a responder whose every answer for the issuer failed
    verification at the client; it now refuses to start, naming the file and the reason."""
    pki, manifest = demo_pki
    g2 = manifest.issuer("sign-card-g2")
    other = manifest.issuer("auth-card-g1")  # another CA's delegate: key and certificate match
    ca_key = serialization.load_pem_private_key((pki / g2.key).read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((pki / g2.cert).read_bytes())
    signer_key = serialization.load_pem_private_key((pki / g2.ocsp_key).read_bytes(), None)
    assert isinstance(ca_key, rsa.RSAPrivateKey) and isinstance(signer_key, rsa.RSAPrivateKey)
    no_purpose = tmp_path / "no-purpose.pem"  # issued by the right CA, no id-kp-OCSPSigning
    no_purpose.write_bytes(
        certificate(
            "no purpose",
            signer_key,
            ca_key,
            issuer=ca_cert.subject,
        ).public_bytes(serialization.Encoding.PEM)
    )
    cases = [
        (pki / other.ocsp_cert, pki / other.ocsp_key, "not issued by the CA"),
        (no_purpose, pki / g2.ocsp_key, "lacks the OCSP-signing purpose"),
    ]
    for n, (cert, key, said) in enumerate(cases):
        copy = _signer_swapped(pki, tmp_path / str(n), "sign-card-g2", cert, key)
        rc = main(["serve", "--pki", str(copy), "--no-metrics"])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert err.startswith(f"responder serve: error: {cert}: sign-card-g2's OCSP signer: ")
        assert said in err, err
    assert len(load_issuers(load_manifest(pki))) == len(manifest.all_issuers())  # the demo's


def test_a_start_with_an_empty_registry_file_is_a_configuration_error(
    demo_pki: tuple[Path, Manifest],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An empty registry file (truncated, not yet written) started a responder that refused
    every call 401; it is refused at start as the builder refuses it, one line, exit 2."""
    pki, _ = demo_pki
    registry = tmp_path / "registry.toml"
    registry.write_text("\n")
    monkeypatch.setenv("JPKI_VA_REGISTRY", str(registry))
    monkeypatch.setenv("JPKI_VA_STORE", str(tmp_path / "store"))  # none: never served
    rc = main(["serve", "--pki", str(pki), "--no-metrics"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"responder serve: error: {registry}: empty: not a registry"), err
