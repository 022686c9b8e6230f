"""The registry audit log's personal fields: a keyed hash (HMAC-SHA256), the key 0600 and unlogged.

An unsalted SHA-256 of a natural person's name is recovered by hashing candidate names; under
a key it is not. Lines written before the key keep their ``sha256:`` values and still verify.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from crlbuilder.auditlog import ZERO_HASH, append_chained
from crlbuilder.rules import JST
from responder.registry import cli
from responder.registry.audit import audit_path_for, verify_audit
from responder.registry.auditkey import AuditKey, AuditKeyError, key_path_for, load_key
from responder.registry.cli import main

NOW = datetime(2031, 5, 1, 12, 0, tzinfo=JST)
NAME = "山田 太郎"  # a natural person's name (氏名, Ord §30(1))


@pytest.fixture(autouse=True)
def _clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(cli, "clock", NOW.timestamp)
    yield


def run(*argv: str) -> int:
    return main(["registry", *argv])


def add(reg: Path, pid: str, name: str = NAME, *more: str) -> int:
    return run("add", "--registry", str(reg), "--id", pid, "--name", name, "--address", "a",
               "--office", "o", "--start", "2024-04-01", "--title", "signature-verifier",
               "--category", "4", "--liability", "l", "--token-sha256", hashlib.sha256(pid.encode()).hexdigest(),
               *more)  # fmt: skip


def lines(reg: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in audit_path_for(reg).read_text().splitlines()]


def test_the_first_change_draws_a_private_key_and_never_logs_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = tmp_path / "registry.toml"
    assert add(reg, "p1") == 0
    key_file = key_path_for(reg)
    assert key_file.name == "registry.audit.secret"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    hexkey = key_file.read_text().strip()
    assert len(bytes.fromhex(hexkey)) == 32
    out = capsys.readouterr()
    audit = audit_path_for(reg).read_text()
    assert hexkey not in audit + out.out + out.err and NAME not in audit
    (line,) = lines(reg)
    assert line["after"]["name"].startswith("hmac-sha256:")
    # the unkeyed digest a name-guesser would compute is not in the log
    assert hashlib.sha256(NAME.encode()).hexdigest() not in audit
    assert verify_audit(audit_path_for(reg), reg).problems == []


def test_a_key_group_or_others_may_read_is_refused_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = tmp_path / "registry.toml"
    assert add(reg, "p1") == 0
    key_file = key_path_for(reg)
    hexkey = key_file.read_text().strip()
    before = reg.read_bytes(), audit_path_for(reg).read_bytes()
    for mode in (0o640, 0o604, 0o660):
        os.chmod(key_file, mode)
        capsys.readouterr()
        assert add(reg, "p2") == 2
        err = capsys.readouterr().err
        assert "readable by its owner only" in err and hexkey not in err
        assert (reg.read_bytes(), audit_path_for(reg).read_bytes()) == before
    with pytest.raises(AuditKeyError, match="owner only"):
        load_key(key_file, create=False)
    os.chmod(key_file, 0o600)
    assert add(reg, "p2") == 0


def test_a_key_file_of_other_content_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "k"
    for text in ("", "zz" * 32, "ab" * 16):
        bad.write_text(text)
        bad.chmod(0o600)
        with pytest.raises(AuditKeyError, match="64 hex digits"):
            load_key(bad, create=False)
    with pytest.raises(AuditKeyError, match="no audit key"):
        load_key(tmp_path / "absent", create=False)


def test_same_name_same_key_same_hash_another_key_another(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "registry.toml", tmp_path / "b" / "registry.toml"
    assert add(a, "p1") == 0 and add(a, "p2") == 0 and add(b, "p1") == 0
    h1, h2 = (x["after"]["name"] for x in lines(a))
    (other,) = (x["after"]["name"] for x in lines(b))
    assert h1 == h2  # one name, one key: one value (a changed name shows as a changed value)
    assert other != h1  # the other registry drew its own key
    ka, kb = (load_key(key_path_for(r), create=False) for r in (a, b))
    assert ka.pseudonym(NAME) == h1 and kb.pseudonym(NAME) == other
    assert lines(a)[0]["key_id"] == ka.key_id != kb.key_id
    # the key given by --audit-key is the one used
    c = tmp_path / "c" / "registry.toml"
    assert add(c, "p1", NAME, "--audit-key", str(key_path_for(a))) == 0
    assert lines(c)[0]["after"]["name"] == h1 and not key_path_for(c).exists()


def test_audit_hash_checks_a_name_read_from_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = tmp_path / "registry.toml"
    assert add(reg, "p1") == 0
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO(NAME + "\n"))
    assert run("audit-hash", "--registry", str(reg)) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == lines(reg)[0]["after"]["name"]
    monkeypatch.setattr("sys.stdin", io.StringIO("山田 次郎\n"))
    assert run("audit-hash", "--registry", str(reg)) == 0
    assert capsys.readouterr().out.strip() not in audit_path_for(reg).read_text()
    # an auditor's check never draws a key
    monkeypatch.setattr("sys.stdin", io.StringIO(NAME + "\n"))
    assert run("audit-hash", "--registry", str(tmp_path / "none.toml")) == 2
    assert not key_path_for(tmp_path / "none.toml").exists()


class _OldAuditRecord(msgspec.Struct, kw_only=True):
    """A line as the audit log was written before the key: the same fields, no key_id."""

    seq: int
    at: str
    actor: str
    action: str
    party: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    registry_sha256: str
    prev: str


def test_a_log_written_before_the_key_still_verifies_and_is_continued(tmp_path: Path) -> None:
    """The lines of an older log keep their ``sha256:`` values (rewriting them would break the
    chain); new lines follow them, keyed, and the whole log verifies."""
    reg = tmp_path / "registry.toml"
    assert add(reg, "p1") == 0
    audit = audit_path_for(reg)
    (new,) = lines(reg)
    # the same change as the old code logged it: unkeyed digests, no key_id
    after = dict(new["after"])
    after["name"] = "sha256:" + hashlib.sha256(NAME.encode()).hexdigest()
    audit.unlink()
    append_chained(audit, [_OldAuditRecord(
        seq=0, at=new["at"], actor=new["actor"], action="add", party="p1", before=None,
        after=after, registry_sha256=new["registry_sha256"], prev=ZERO_HASH,
    )])  # fmt: skip
    old_bytes = audit.read_bytes()
    assert verify_audit(audit, reg).problems == []
    assert run("suspend", "--registry", str(reg), "--id", "p1", "--article", "Act §18(6)(1)",
               "--reason", "r") == 0  # fmt: skip
    assert audit.read_bytes().startswith(old_bytes)  # the old line as it was
    old, cont = lines(reg)
    assert "key_id" not in old and old["after"]["name"].startswith("sha256:")
    assert cont["before"]["name"].startswith("hmac-sha256:") and cont["key_id"]
    report = verify_audit(audit, reg)
    assert report.problems == [] and report.records == 2
    key = load_key(key_path_for(reg), create=False)
    assert report.keys == {None: 1, key.key_id: 1} and report.corrections == 0


def test_verify_audit_says_which_key_each_line_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = tmp_path / "registry.toml"
    assert add(reg, "p1") == 0
    key_file = key_path_for(reg)
    first = load_key(key_file, create=False).key_id
    key_file.unlink()  # a new key (rotated): the next line names it
    assert add(reg, "p2") == 0
    second = load_key(key_file, create=False).key_id
    capsys.readouterr()
    assert run("verify-audit", "--registry", str(reg)) == 0
    out = capsys.readouterr().out
    assert f"1 under audit key {first}, 1 under audit key {second}" in out
    assert first != second and "corrections of the record: 0" in out


def test_the_key_object_does_not_show_its_bytes() -> None:
    key = AuditKey(bytes(range(32)))
    assert bytes(range(32)).hex() not in repr(key) + str(key)
