"""The demo's SoftHSM2 set-up (`crlbuilder.demo.softhsm`, `pki init --keys`, `make demo KEYS=`)
refuses what it cannot do before touching anything; its key references parse (RFC 7512)."""

from __future__ import annotations

from pathlib import Path

import pytest

from crlbuilder.demo.__main__ import use_keys
from crlbuilder.demo.pki import PkiError, init_pki
from crlbuilder.demo.softhsm import SoftHsmError, SoftHsmToken, init_token
from crlbuilder.keys.pkcs11 import parse_key_uri


def test_rfc7512_key_uri_round_trips_labels_that_need_percent_encoding(tmp_path: Path) -> None:
    token = SoftHsmToken(conf=tmp_path / "c", label="jpki va;demo", pin_file=tmp_path / "pin")
    uri = parse_key_uri(token.key_uri("ocsp sign/g1?x"))
    assert (uri.token, uri.label, uri.pin_source) == (
        "jpki va;demo",
        "ocsp sign/g1?x",
        f"file:{tmp_path / 'pin'}",
    )


def test_a_token_directory_is_made_once(tmp_path: Path) -> None:
    (tmp_path / "softhsm2.conf").write_text("directories.tokendir = /nowhere\n")
    with pytest.raises(SoftHsmError, match="already made"):
        init_token(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["softhsm2.conf"]


def test_pki_init_refuses_unknown_key_storage(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="pem or softhsm"):
        init_pki(tmp_path / "pki", keys="hsm")
    assert not (tmp_path / "pki").exists()


def test_demo_refuses_a_directory_made_with_other_keys(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "pki.json").write_text("{}")
    with pytest.raises(SystemExit, match="made with --keys pem"):
        use_keys(tmp_path, "softhsm")
    (tmp_path / "pki" / "softhsm").mkdir()
    (tmp_path / "pki" / "softhsm" / "softhsm2.conf").write_text("")
    with pytest.raises(SystemExit, match="made with --keys softhsm"):
        use_keys(tmp_path, "pem")
