"""A secret handed over by systemd's LoadCredential= is read (`crlbuilder.secretmode`):
systemd 254 and later leave it 0400 with a POSIX ACL entry for the unit's user, which
``stat`` shows as mode 0440; the same mode anywhere else is still refused."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from crlbuilder.options import ConfigError
from crlbuilder.seal import read_facts_key
from crlbuilder.secretmode import too_open
from responder.v1.watchset import SecretError, load_secret

KEY = secrets.token_hex(32)


def _file(directory: Path, mode: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    f = directory / "facts.key"
    f.write_text(KEY + "\n")
    f.chmod(mode)
    return f


def test_a_credential_shown_0440_by_its_acl_mask_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "run/credentials/jpki-va-node-builder.service"
    f = _file(creds, 0o440)
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert read_facts_key(f, field="facts_key_file", environ=env) == bytes.fromhex(KEY)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert load_secret(f, create=False) == bytes.fromhex(KEY)


def test_mode_0440_outside_the_credentials_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "run/credentials/unit.service"
    creds.mkdir(parents=True)
    f = _file(tmp_path / "etc", 0o440)  # a group that is no ACL's mask: it reads the key
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    with pytest.raises(ConfigError, match="chmod 600"):
        read_facts_key(f, field="facts_key_file", environ=env)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    with pytest.raises(SecretError, match="0600"):
        load_secret(f, create=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(SecretError, match="0600"):
        load_secret(f, create=False)


@pytest.mark.parametrize("mode", [0o444, 0o404, 0o460, 0o470])
def test_a_credential_others_read_or_anyone_writes_is_refused(tmp_path: Path, mode: int) -> None:
    creds = tmp_path / "creds"
    f = _file(creds, mode)
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    with pytest.raises(ConfigError, match="chmod 600"):
        read_facts_key(f, field="facts_key_file", environ=env)


def test_only_a_file_directly_in_the_credentials_directory_is_one() -> None:
    env = {"CREDENTIALS_DIRECTORY": "/run/credentials/u.service"}
    assert not too_open(Path("/run/credentials/u.service/k"), 0o100440, env)
    assert too_open(Path("/run/credentials/u.service/sub/k"), 0o100440, env)
    assert too_open(Path("/run/credentials/other.service/k"), 0o100440, env)
    assert too_open(Path("/run/credentials/u.service/k"), 0o100440, {})
    assert not too_open(Path("/etc/jpki-va/k"), 0o100600, env)
