"""`responder registry ...`: changes checked before writing, atomic, audited with a hash chain."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import shutil
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from crlbuilder.manifest import Manifest
from crlbuilder.model import Family
from crlbuilder.rules import JST
from responder.policy import ALLOWED, Refused, Rule, decide
from responder.registry.audit import audit_path_for, verify_audit
from responder.registry.auditkey import AuditKey, key_path_for
from responder.registry.cli import add_cli, main
from responder.registry.lookup import Registry
from responder.registry.schema import PartyEntry, RegistryError
from responder.registry.vocabulary import Method, Service, Title


@pytest.fixture
def reg(demo_pki: tuple[Path, Manifest], tmp_path: Path) -> Path:
    """A registry initialised from the demo PKI (copied beside it, so paths stay relative)."""
    pki, _ = demo_pki
    shutil.copytree(pki, tmp_path / "pki")
    out = tmp_path / "registry.toml"
    assert (
        main(
            [
                "registry",
                "init",
                "--pki",
                str(tmp_path / "pki"),
                "--out",
                str(out),
                "--actor",
                "tester",
            ]
        )
        == 0
    )
    return out


def run(*argv: str) -> int:
    return main(["registry", *argv])


def act(reg: Path, action: str, pid: str, *more: str) -> int:
    """``responder registry ACTION --registry REG --id PID ...``: its exit code."""
    return run(action, "--registry", str(reg), "--id", pid, *more)


PAST: tuple[str, ...] = ("--correction", "a past case restated")
"""A command's instant more than a minute back: refused unless it corrects the record."""


def suspend(reg: Path, pid: str, article: str, *more: str, reason: str = "r") -> int:
    """``registry suspend`` (提供の停止) of ``pid`` under ``article``."""
    return act(reg, "suspend", pid, "--article", article, "--reason", reason, *more)


def audit_lines(reg: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in audit_path_for(reg).read_text().splitlines()]


ADD_BANK = [
    "--id",
    "bank-1",
    "--name",
    "テスト銀行",
    "--address",
    "東京都千代田区一丁目1",
    "--representative",
    "代表 太郎",
    "--office",
    "大阪市北区二丁目2",
    "--start",
    "2024-04-01",
    "--title",
    "signature-verifier",
    "--title",
    "user-verifier",
    "--category",
    "4",
    "--liability",
    "standard terms",
    "--crl-cycle",
    "3600",
    "--quota-per-second",
    "50",
]


def test_init_writes_a_private_valid_registry_and_audits_it(reg: Path) -> None:
    assert stat.S_IMODE(reg.stat().st_mode) == 0o600
    assert stat.S_IMODE(audit_path_for(reg).stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path_for(reg).stat().st_mode) == 0o600  # the audit key, drawn by init
    r = Registry.load(reg)
    assert set(r.parties) == {
        "sig-verifier",
        "auth-verifier",
        "both-verifier",
        "group-verifier",
        "specified-verifier",  # 特定利用者証明検証者 (Act §38-2): asks for its token (§38-3)
        "member-1",
        "member-2",
    }
    lines = audit_lines(reg)
    assert [x["party"] for x in lines] == list(r.parties)
    assert {x["action"] for x in lines} == {"init"} and {x["actor"] for x in lines} == {"tester"}
    report = verify_audit(audit_path_for(reg), reg)
    assert report.problems == [] and report.records == 7
    # init refuses to overwrite without --force; --force is audited as a change (or no change)
    assert run("init", "--pki", str(reg.parent / "pki"), "--out", str(reg)) == 2
    assert run("init", "--pki", str(reg.parent / "pki"), "--out", str(reg), "--force") == 0
    assert len(audit_lines(reg)) == 7  # identical content: nothing to record


def test_add_with_a_new_token(reg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert run("add", "--registry", str(reg), *ADD_BANK, "--new-token", "--actor", "ops") == 0
    out = capsys.readouterr().out
    token = out.strip().splitlines()[-1]
    assert len(token) >= 40 and "shown once" in out
    assert token not in reg.read_text() and token not in audit_path_for(reg).read_text()
    assert hashlib.sha256(token.encode()).hexdigest() in reg.read_text()
    r = Registry.load(reg)
    bank = r.by_token(token.encode())
    assert bank is not None and bank.id == "bank-1"
    # defaults: every service both titles allow, including corresponding-serial (Act §18(5))
    assert Service.CORRESPONDING_SERIAL in bank.grants and Service.AUTH_CRL_FILE in bank.grants
    ok = decide(
        bank,
        service=Service.SIGN_REVOCATION_INFO,
        family=Family.SIGN_CARD,
        method=Method.OCSP,
        now=time.time(),
    )
    assert ok is ALLOWED
    last = audit_lines(reg)[-1]
    assert (last["action"], last["party"], last["actor"], last["before"]) == (
        "add",
        "bank-1",
        "ops",
        None,
    )
    # personal data stays out of the audit: only digests of name, address, representative, office
    audit = audit_path_for(reg).read_text()
    for value in ("テスト銀行", "千代田", "代表 太郎", "大阪"):
        assert value not in audit
    after = last["after"]
    assert isinstance(after, dict)
    key = bytes.fromhex(key_path_for(reg).read_text().strip())  # keyed: not tried name by name
    assert (
        after["notification"]["address"]
        == "hmac-sha256:" + hmac.new(key, "東京都千代田区一丁目1".encode(), "sha256").hexdigest()
    )
    assert key.hex() not in audit and last["key_id"] == AuditKey(key).key_id
    assert stat.S_IMODE(reg.stat().st_mode) == 0o600


def notified(pid: str, title: str, *more: str, office: bool = True) -> list[str]:
    """`registry add` flags of party ``pid`` notified (届出) under ``title`` (Act §17(1) item 4)."""
    where = ["--address", "a", *(["--office", "o"] if office else [])]
    head = ["--id", pid, "--name", "X", *where, "--start", "2024-04-01", "--title", title]
    return [*head, "--category", "4", "--liability", "l", *more]


def member(pid: str, group: str, *more: str) -> list[str]:
    """`registry add` flags of party ``pid``, a 署名確認者 of ``group`` (Act §20(1))."""
    return ["--id", pid, "--name", "M", "--title", "signature-confirmer", "--group", group, *more]


def services(*prefixes: str) -> list[str]:
    """``--service P-revocation-info`` for each prefix (``sign``, ``auth``)."""
    return [a for p in prefixes for a in ("--service", f"{p}-revocation-info")]


REFUSALS = [
    (
        "sign info for a 利用者証明検証者",
        notified("u-1", "user-verifier", "--new-token", *services("auth", "sign")),
        ["party 'u-1'", "sign-revocation-info"],
    ),
    (
        "corresponding-serial without both titles",
        notified("s-1", "signature-verifier", "--service", "corresponding-serial", "--new-token"),
        ["party 's-1'", "Act §18(5)"],
    ),
    (
        "member outside the group's range",
        member("member-9", "group-verifier", "--new-token"),
        ["party 'member-9'", "outside the member range"],
    ),
    (
        "token of another party",
        notified("x-1", "user-verifier", "--token-sha256", "@sig-verifier"),
        ["party 'x-1'", "also party 'sig-verifier'"],
    ),
    (
        "an expired credential",
        notified("x-2", "user-verifier", "--new-token", "--not-after", "2020-01-01"),
        ["party 'x-2'", "already expired"],
    ),
    (
        "a missing field",
        notified("x-3", "user-verifier", "--new-token", office=False),
        ["party 'x-3'", "`office`"],
    ),
    ("an existing id", ["--id", "sig-verifier", "--name", "X"], ["already registered"]),
]


def test_a_change_keeps_the_files_owner_group_and_mode(reg: Path) -> None:
    """docs/operations.md: root writes ``/etc/jpki-va/registry.toml`` root:jpki-va 0640, and
    the responder (user jpki-va) reads it through its group. A change (``registry suspend``,
    run as root) wrote it back root's own 0600: the service could not read it, the
    suspension never came into force, and the next start was refused. The replaced file's
    owner, group and mode are kept now, its mode at most 0640."""
    group = 65534 if os.geteuid() == 0 else os.getgid()  # root: another group than its own
    os.chown(reg, os.getuid(), group)
    reg.chmod(0o640)
    assert suspend(reg, "sig-verifier", "Act §18(6)(1)") == 0
    st = reg.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, os.getuid(), group)
    reg.chmod(0o666)  # wider than the service needs: narrowed, others lose their bits
    assert act(reg, "resume", "sig-verifier") == 0
    assert stat.S_IMODE(reg.stat().st_mode) == 0o640
    assert [p.name for p in reg.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_a_group_the_writer_may_not_give_is_not_given(
    reg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not root, a writer cannot give the file to the replaced one's owner: it stays the
    writer's, readable by its owner only, never by a group it did not name."""

    def refuse(fd: int, uid: int, gid: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    reg.chmod(0o640)
    monkeypatch.setattr(os, "fchown", refuse)
    assert suspend(reg, "sig-verifier", "Act §18(6)(1)") == 0
    assert stat.S_IMODE(reg.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("argv", "needles"), [(r[1], r[2]) for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refused_changes_leave_everything_unchanged(
    reg: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needles: list[str]
) -> None:
    if "@sig-verifier" in argv:
        digest = (reg.parent / "pki/parties/sig-verifier.token").read_text().strip()
        argv = [
            hashlib.sha256(digest.encode()).hexdigest() if a == "@sig-verifier" else a for a in argv
        ]
    before, audit_before = reg.read_bytes(), audit_path_for(reg).read_bytes()
    capsys.readouterr()
    assert run("add", "--registry", str(reg), *argv) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, (needle, err)
    assert reg.read_bytes() == before and audit_path_for(reg).read_bytes() == audit_before
    assert not list(reg.parent.glob(".registry.toml.*.tmp"))


def test_files_that_cannot_be_written_are_one_line(
    reg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An export to a directory or a missing one, a registry whose directory cannot be made:
    one error line naming the file, exit 2, nothing written."""
    capsys.readouterr()
    missing = tmp_path / "missing" / "out.toml"
    for out, said in ((tmp_path, "Is a directory"), (missing, "No such file or directory")):
        assert run("export", "--registry", str(reg), "--out", str(out)) == 2
        err = capsys.readouterr().err
        assert err == f"responder registry export: error: {out}: cannot write the export ({said})\n"
    assert not missing.parent.exists()
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert suspend(blocked / "registry.toml", "sig-verifier", "Act §18(6)(1)") == 2
    err = capsys.readouterr().err
    assert err.startswith("responder registry suspend: error: refused, ") and "Traceback" not in err
    assert err.count("\n") == 1 and f"{blocked}: File exists" in err, err


def test_a_registry_that_cannot_be_replaced_says_the_audit_has_the_change(
    reg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit record is written first; a registry file that then cannot be replaced
    (a full disk) is said so, in one line, and the file keeps what it had."""
    from responder.registry import cli

    def full(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device", str(path))

    before = reg.read_bytes()
    monkeypatch.setattr(cli, "write_atomic", full)
    capsys.readouterr()
    assert suspend(reg, "sig-verifier", "Act §18(6)(1)") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err, err
    assert "already records the change" in err and reg.read_bytes() == before


def test_unknown_field_in_a_party_file_is_refused(
    reg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "party.toml"
    f.write_text(
        '[[party]]\nid = "p-1"\nname = "P"\ncolour = "red"\n[[party.title]]\nkind = "user-verifier"\ncategory = 1\n'
    )
    before = reg.read_bytes()
    assert run("add", "--registry", str(reg), "--id", "p-1", "--from", str(f)) == 2
    assert "unknown field `colour`" in capsys.readouterr().err
    assert reg.read_bytes() == before


def test_rotation_update_and_expire(reg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = (reg.parent / "pki/parties/auth-verifier.token").read_text().strip().encode()
    capsys.readouterr()
    assert act(reg, "update", "auth-verifier", "--new-token", "--label", "token-2025") == 0
    new = capsys.readouterr().out.strip().splitlines()[-1].encode()
    r = Registry.load(reg)
    assert r.by_token(old) is r.by_token(new) is r.parties["auth-verifier"]  # both work meanwhile
    assert act(reg, "update", "auth-verifier", "--expire-credential", "token-1") == 0
    r = Registry.load(reg)
    assert r.by_token(old) is None and r.by_token(new) is r.parties["auth-verifier"]
    # expiring the last token too: every credential kind would still include the certificates
    assert act(reg, "update", "auth-verifier", "--remove-credential", "token-1") == 0
    assert "token-1" not in {
        c.label for c in Registry.load(reg).parties["auth-verifier"].credentials
    }
    assert (
        run(
            "update", "--registry", str(reg), "--id", "auth-verifier", "--remove-credential", "nope"
        )
        == 2
    )
    # renewing a certification, narrowing the agreement
    assert (
        act(
            reg,
            "update",
            "auth-verifier",
            "--service",
            "auth-revocation-info",
            "--family",
            "auth-card",
            "--method",
            "ocsp",
            "--quota-per-day",
            "1000",
        )
        == 0
    )
    p = Registry.load(reg).parties["auth-verifier"]
    assert set(p.grants) == {Service.AUTH_REVOCATION_INFO} and p.families == {Family.AUTH_CARD}
    assert [a["action"] for a in audit_lines(reg)][-4:] == ["update"] * 4


def test_a_party_left_with_expired_credentials_only_is_refused(
    reg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["update", "--registry", str(reg), "--id", "sig-verifier"]
    for label in ("mtls-1", "signed-request-1"):
        assert run(*args, "--remove-credential", label) == 0
    before = reg.read_bytes()
    assert run(*args, "--expire-credential", "token-1") == 2
    assert "every credential would be expired" in capsys.readouterr().err
    assert reg.read_bytes() == before


def test_suspend_resume_end(reg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--registry", str(reg), "--id", "both-verifier"]
    sign: dict[str, Any] = {
        "service": Service.SIGN_REVOCATION_INFO,
        "family": Family.SIGN_CARD,
        "method": Method.OCSP,
    }
    auth: dict[str, Any] = {
        "service": Service.AUTH_REVOCATION_INFO,
        "family": Family.AUTH_CARD,
        "method": Method.OCSP,
    }
    assert (
        run(
            "suspend",
            *base,
            "--article",
            "Act §18(6)(1)",
            "--reason",
            "purpose breach",
            "--carry-over",
        )
        == 0
    )
    p = Registry.load(reg).parties["both-verifier"]
    now = time.time()
    assert decide(p, **sign, now=now) == Refused(
        Rule.SUSPENDED, "Act §18(6)(1)", "provision is suspended (提供の停止)"
    )
    got = decide(p, **auth, now=now)
    assert isinstance(got, Refused) and got.article == "Act §37(4)(6)"
    capsys.readouterr()
    assert run("list", "--registry", str(reg)) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("both-verifier"))
    assert "suspended (Act §18(6)(1), Act §37(4)(6))" in line
    # an article the party's titles do not match is refused
    assert suspend(reg, "auth-verifier", "Act §18(6)(1)", reason="x") == 2
    assert run("resume", *base) == 0
    p = Registry.load(reg).parties["both-verifier"]
    assert decide(p, **sign, now=time.time() + 1) is ALLOWED
    assert run("resume", *base) == 2  # nothing in force
    assert run("end", *base, "--reason", "withdrew", "--article", "Act §17(3)") == 0
    p = Registry.load(reg).parties["both-verifier"]
    got = decide(p, **sign, now=time.time() + 1)
    assert isinstance(got, Refused) and (got.rule, got.article) == (Rule.ENDED, "Act §17(3)")
    assert run("end", *base, "--reason", "again") == 2
    capsys.readouterr()
    assert run("show", "--registry", str(reg), "--id", "both-verifier", "--format", "json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "ended" and shown["entry"]["ended"]["reason"] == "withdrew"
    assert [a["action"] for a in audit_lines(reg)][-3:] == ["suspend", "resume", "end"]
    assert verify_audit(audit_path_for(reg), reg).problems == []


def test_scheduled_suspension(reg: Path) -> None:
    since = (datetime.now(JST) + timedelta(days=1)).replace(microsecond=0).isoformat()
    assert suspend(reg, "sig-verifier", "Act §18(6)(2)", "--since", since) == 0
    p = Registry.load(reg).parties["sig-verifier"]
    assert p.state(time.time()).value == "active"
    assert p.state(time.time() + 2 * 86400).value == "suspended"


def test_export_import_round_trip(
    reg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exported = tmp_path / "exported.toml"
    assert run("export", "--registry", str(reg), "--out", str(exported)) == 0
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600
    elsewhere = tmp_path / "other" / "registry.toml"
    elsewhere.parent.mkdir()
    assert run("import", "--registry", str(elsewhere), "--from", str(exported)) == 0
    a, b = Registry.load(reg), Registry.load(elsewhere)
    assert set(a.parties) == set(b.parties)
    for pid in a.parties:  # certificate paths were rebased: the same credentials
        assert a.parties[pid].credentials == b.parties[pid].credentials
    assert run("import", "--registry", str(elsewhere), "--from", str(exported)) == 2
    assert "already registered" in capsys.readouterr().err
    assert run("import", "--registry", str(elsewhere), "--from", str(exported), "--replace") == 0
    capsys.readouterr()
    assert run("export", "--registry", str(reg), "--format", "json") == 0
    assert {p["id"] for p in json.loads(capsys.readouterr().out)} == set(a.parties)


OLD_ENTRIES = """
[[party]]
id = "late-party"
name = "Late"
titles = ["user-verifier"]
tokens_sha256 = ["{digest}"]

[[party]]
id = "old-member"
name = "Old member"
titles = ["signature-confirmer"]
group = "{group}"
tokens_sha256 = ["{member_digest}"]

[[party]]
id = "gone"
name = "Gone"
titles = ["signature-verifier"]
"""

DETAILS = """
[[party]]
id = "late-party"

[party.notification]
address = "a"
office = "o"
start = 2024-04-01

[[party.title]]
kind = "{kind}"
category = 1

[party.agreement]
services = ["auth-revocation-info"]
families = ["auth-card"]
methods = ["ocsp"]
liability = "l"
"""


def test_old_format_is_migrated_only_with_what_it_lacks(
    reg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 9.11: old flat entries are refused when the registry loads; `registry migrate`
    rewrites them, audited, keeping their credentials and asking the operator for the
    notification (届出), title details and agreement (取決め) it will not invent; a party
    without them is refused unless dropped; a 署名確認者 needs none."""
    group = next(
        p.id
        for p in Registry.load(reg).parties.values()
        if Title.GROUP_SIGNATURE_VERIFIER in p.titles
    )
    assert run("update", "--registry", str(reg), "--id", group, "--member-prefix", "old-") == 0
    with reg.open("a") as f:  # an operator appended old-style entries by hand
        f.write(
            OLD_ENTRIES.format(
                digest=hashlib.sha256(b"late").hexdigest(),
                member_digest=hashlib.sha256(b"member").hexdigest(),
                group=group,
            )
        )
    before = reg.read_bytes()
    capsys.readouterr()
    with pytest.raises(RegistryError, match="registry migrate"):
        Registry.load(reg)
    assert run("check", "--registry", str(reg)) == 2
    assert run("update", "--registry", str(reg), "--id", "late-party", "--name", "L") == 2
    assert "registry migrate" in capsys.readouterr().err
    # nothing given: refused, saying what each party lacks
    assert run("migrate", "--registry", str(reg)) == 2
    err = capsys.readouterr().err
    assert "party 'late-party': notification, title and agreement" in err
    assert "party 'gone': notification, title and agreement" in err
    assert "old-member" not in err  # a member needs no notification or agreement
    details = tmp_path / "details.toml"
    # titles other than the old entry's: refused (migration changes no title)
    details.write_text(DETAILS.format(kind="signature-verifier"))
    assert run("migrate", "--registry", str(reg), "--details", str(details), "--drop", "gone") == 2
    assert "not the old entry's" in capsys.readouterr().err
    assert reg.read_bytes() == before
    details.write_text(DETAILS.format(kind="user-verifier"))
    assert run("migrate", "--registry", str(reg), "--details", str(details), "--drop", "gone") == 0
    r = Registry.load(reg)
    assert "gone" not in r.parties
    late = r.parties["late-party"]
    assert r.by_token(b"late") is late and late.start < time.time()
    assert set(late.grants) == {Service.AUTH_REVOCATION_INFO}  # what was agreed, not every service
    member = r.parties["old-member"]
    assert r.by_token(b"member") is member and member.group == group
    records = [x for x in audit_lines(reg) if x["action"] == "migrate"]
    assert {x["party"] for x in records} == {"late-party", "old-member", "gone"}
    assert next(x for x in records if x["party"] == "gone")["after"] is None
    assert run("verify-audit", "--registry", str(reg)) == 0
    assert suspend(reg, "late-party", "Act §37(4)(1)") == 0


def test_audit_chain_detects_rewriting(reg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert suspend(reg, "sig-verifier", "Act §18(6)(1)") == 0
    audit = audit_path_for(reg)
    good = audit.read_bytes()
    assert verify_audit(audit, reg).problems == []
    # rewrite a line in place: the next line's prev no longer matches
    lines = good.splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"actor":"tester"', b'"actor":"mallory"')
    audit.write_bytes(b"".join(lines))
    report = verify_audit(audit, reg)
    assert (
        report.problems and ":4:" in report.problems[0] and "chain is broken" in report.problems[0]
    )
    capsys.readouterr()
    assert run("verify-audit", "--registry", str(reg)) == 1
    assert "BROKEN" in capsys.readouterr().out
    # drop the last line: the chain holds but the registry no longer matches its last record
    audit.write_bytes(b"".join(good.splitlines(keepends=True)[:-1]))
    report = verify_audit(audit, reg)
    assert report.problems and "differs" in report.problems[0]
    # a partial line at the end refuses further changes (nothing is appended after it)
    audit.write_bytes(good + b'{"seq":')
    before = reg.read_bytes()
    assert run("resume", "--registry", str(reg), "--id", "sig-verifier") == 2
    assert "partial line" in capsys.readouterr().err and reg.read_bytes() == before
    audit.write_bytes(good)
    assert run("resume", "--registry", str(reg), "--id", "sig-verifier") == 0
    recs = audit_lines(reg)
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    assert recs[-1]["prev"] == hashlib.sha256(good.splitlines()[-1]).hexdigest()
    assert recs[-1]["registry_sha256"] == hashlib.sha256(reg.read_bytes()).hexdigest()


def test_workers_see_a_change_by_stat(reg: Path) -> None:
    loaded = Registry.load(reg)
    assert loaded.reload_if_changed(reg) is None
    assert suspend(reg, "auth-verifier", "Act §37(4)(1)") == 0
    fresh = loaded.reload_if_changed(reg)
    assert (
        fresh is not None
        and fresh.parties["auth-verifier"].state(time.time() + 1).value == "suspended"
    )


def test_show_list_check(reg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert run("show", "--registry", str(reg), "--id", "group-verifier") == 0
    out = capsys.readouterr().out
    assert out.startswith("# state now: active") and 'members = ["member-1", "member-2"]' in out
    assert run("list", "--registry", str(reg), "--format", "json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["id"]: r["credentials_valid"] for r in rows}["member-1"] == 3
    assert run("check", "--registry", str(reg)) == 0
    assert run("show", "--registry", str(reg), "--id", "nobody") == 2


def test_add_cli_wires_into_a_parent_parser(reg: Path) -> None:
    parser = argparse.ArgumentParser(prog="responder")
    sub = parser.add_subparsers(dest="command", required=True)
    add_cli(sub)
    args = parser.parse_args(["registry", "check", "--registry", str(reg)])
    assert args.func(args) == 0
    args = parser.parse_args(["registry", "show", "--registry", str(reg), "--id", "nobody"])
    assert args.func(args) == 2  # a refused command is an exit code, not a traceback


def test_concurrent_changes_are_serialised(reg: Path) -> None:
    """Two admins at once: the lock makes both changes land, in one chain."""
    import subprocess
    import sys

    code = "import sys; from responder.registry.cli import main; sys.exit(main(sys.argv[1:]))"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                "registry",
                "suspend",
                *("--registry", str(reg), "--id", pid, "--article", art, "--reason", "r"),
            ]
        )
        for pid, art in (("sig-verifier", "Act §18(6)(1)"), ("auth-verifier", "Act §37(4)(1)"))
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    r = Registry.load(reg)
    now = datetime.now(UTC).timestamp() + 1
    assert (
        r.parties["sig-verifier"].state(now).value
        == r.parties["auth-verifier"].state(now).value
        == "suspended"
    )
    assert verify_audit(audit_path_for(reg), reg).problems == []


@pytest.mark.parametrize("flag", ["--quota-per-second", "--quota-per-day", "--crl-cycle"])
def test_a_negative_quota_or_cycle_is_refused_as_negative(
    reg: Path, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # 0 means "none" for each of them, so the message must not say "at least 1"
    before = reg.read_bytes()
    with pytest.raises(SystemExit) as exit_:
        act(reg, "update", "sig-verifier", flag, "-5")
    assert exit_.value.code == 2
    assert "-5 is negative (0 means none)" in capsys.readouterr().err
    assert reg.read_bytes() == before
    assert act(reg, "update", "sig-verifier", flag, "0") == 0


ONE_PARTY = """
[[party]]
id = "auth-verifier"
name = "Renamed"
[party.notification]
address = "a"
office = "o"
start = 2016-01-01
[[party.title]]
kind = "user-verifier"
category = 4
[party.agreement]
services = ["auth-revocation-info"]
families = ["auth-card"]
methods = ["ocsp"]
liability = "l"
[[party.credential]]
kind = "token"
token_sha256 = "{digest}"
"""


def test_an_ended_or_suspended_party_stays_so_through_update_from_a_file(
    reg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The end of provision is final and a suspension (提供の停止, Act §37(4)) lasts until
    `registry resume`: `update --from FILE` (a notification form, without state) keeps both;
    a file that states another end or other suspensions is refused, nothing written."""
    token = (reg.parent / "pki/parties/auth-verifier.token").read_text().strip()
    form = tmp_path / "form.toml"
    form.write_text(ONE_PARTY.format(digest=hashlib.sha256(token.encode()).hexdigest()))
    assert suspend(reg, "auth-verifier", "Act §37(4)(1)") == 0
    assert act(reg, "update", "auth-verifier", "--from", str(form)) == 0
    p = Registry.load(reg).parties["auth-verifier"]
    assert p.name == "Renamed" and [s.article for s in p.suspensions] == ["Act §37(4)(1)"]
    assert act(reg, "end", "auth-verifier", "--reason", "withdrew") == 0
    assert act(reg, "update", "auth-verifier", "--from", str(form)) == 0
    p = Registry.load(reg).parties["auth-verifier"]
    assert p.state(time.time() + 1).value == "ended"
    # a file that ends it otherwise is refused
    form.write_text(
        form.read_text() + '[party.ended]\nat = 2099-01-01T00:00:00+09:00\nreason = "x"\n'
    )
    before = reg.read_bytes()
    capsys.readouterr()
    assert act(reg, "update", "auth-verifier", "--from", str(form)) == 2
    assert "ended" in capsys.readouterr().err and reg.read_bytes() == before


def test_import_replace_does_not_revive_an_ended_party_or_lift_a_suspension(
    reg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An export taken before `registry end` (or `suspend`) imported with --replace would put
    the party back in service: refused, the registry and its audit unchanged."""
    exported = tmp_path / "before.toml"
    assert run("export", "--registry", str(reg), "--out", str(exported)) == 0
    assert suspend(reg, "sig-verifier", "Act §18(6)(1)") == 0
    assert act(reg, "end", "auth-verifier", "--reason", "withdrew") == 0
    before, audit_before = reg.read_bytes(), audit_path_for(reg).read_bytes()
    capsys.readouterr()
    assert run("import", "--registry", str(reg), "--from", str(exported), "--replace") == 2
    err = capsys.readouterr().err
    assert "'sig-verifier'" in err and "'auth-verifier'" in err and "registry resume" in err
    assert reg.read_bytes() == before and audit_path_for(reg).read_bytes() == audit_before
    r = Registry.load(reg)
    assert r.parties["auth-verifier"].state(time.time() + 1).value == "ended"
    assert r.parties["sig-verifier"].state(time.time() + 1).value == "suspended"


def test_a_group_narrows_its_member_range_once_the_member_has_ended(
    reg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A group notifies a change of its range (署名確認者の範囲, Ord §32(4)): a member still
    served must stay inside it; one whose provision has ended no longer needs to (no command
    removes a party: its entry is kept, with its history)."""
    narrow = ("update", "group-verifier", "--members", "member-1")
    capsys.readouterr()
    assert act(reg, *narrow) == 2
    assert "'member-2'" in capsys.readouterr().err
    assert act(reg, "end", "member-2", "--reason", "left the group") == 0
    assert act(reg, *narrow) == 0
    r = Registry.load(reg)
    assert r.parties["member-2"].state(time.time()).value == "ended"
    # an end still to come is no end yet
    assert act(reg, "end", "member-1", "--reason", "r", "--at", "2099-01-01") == 0
    assert act(reg, "update", "group-verifier", "--members", "member-2") == 2


def test_a_lifted_suspension_does_not_bind_the_titles_the_party_holds_later(
    reg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A suspension (提供の停止, Act §18(6)) lifted long ago is history, kept in the entry (only
    `suspend`/`resume` change suspensions): the party may give up the title it stopped later.
    One still in force, or still to come, keeps binding the title it stops."""
    change = ("update", "both-verifier", "--title", "user-verifier")
    assert suspend(reg, "both-verifier", "Act §18(6)(1)", "--since", "2025-01-01", *PAST) == 0
    capsys.readouterr()
    assert act(reg, *change) == 2
    assert "holds none of those titles" in capsys.readouterr().err
    assert act(reg, "resume", "both-verifier", "--at", "2025-02-01", *PAST) == 0
    assert act(reg, *change) == 0
    p = Registry.load(reg).parties["both-verifier"]
    assert p.titles == {Title.USER_VERIFIER} and p.state(time.time()).value == "active"
    entry = Registry.load(reg).file.find("both-verifier")
    assert isinstance(entry, PartyEntry) and [s.article for s in entry.suspension] == [
        "Act §18(6)(1)"
    ]


def test_an_end_still_to_come_can_be_moved_one_in_effect_is_final(
    reg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`registry end --at` ahead (a notified withdrawal, 届出の廃止, on a given day) can be set
    again while it has not taken effect (a mistaken date is not stuck in the registry);
    once in effect it is final."""
    assert act(reg, "end", "sig-verifier", "--reason", "r", "--at", "2099-01-01") == 0
    assert act(reg, "end", "sig-verifier", "--reason", "withdrawal", "--at", "2098-04-01") == 0
    p = Registry.load(reg).parties["sig-verifier"]
    assert p.end == datetime(2098, 4, 1, tzinfo=JST).timestamp()
    assert act(reg, "end", "sig-verifier", "--reason", "now") == 0
    capsys.readouterr()
    assert act(reg, "end", "sig-verifier", "--reason", "again", "--at", "2099-01-01") == 2
    assert "already ended" in capsys.readouterr().err


def test_resume_cancels_only_a_suspension_not_begun(
    reg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`registry resume` drops a suspension that has not begun (a cancelled one, the audit
    keeps it); one in force since before is lifted, never dropped, whatever ``--at`` says:
    a `--at` before it began would have erased that the party was stopped (提供の停止)."""
    assert suspend(reg, "sig-verifier", "Act §18(6)(1)", "--since", "2025-01-01", *PAST) == 0
    before = reg.read_bytes()
    capsys.readouterr()
    assert act(reg, "resume", "sig-verifier", "--at", "2024-12-01") == 2
    assert "before it began" in capsys.readouterr().err and reg.read_bytes() == before
    ahead = (datetime.now(JST) + timedelta(days=2)).replace(microsecond=0).isoformat()
    assert suspend(reg, "auth-verifier", "Act §37(4)(1)", "--since", ahead) == 0
    assert act(reg, "resume", "auth-verifier") == 0  # not begun: cancelled
    entry = Registry.load(reg).file.find("auth-verifier")
    assert isinstance(entry, PartyEntry) and entry.suspension == []


def test_list_names_the_suspension_articles_of_a_suspended_party_only(
    reg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`registry list` showed an ended party as "ended (Act §18(6)(1))", as if the
    suspension's article had ended it."""
    assert suspend(reg, "sig-verifier", "Act §18(6)(1)") == 0
    assert act(reg, "end", "sig-verifier", "--reason", "withdrew") == 0
    capsys.readouterr()
    assert run("list", "--registry", str(reg)) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("sig-verifier"))
    assert line.split()[1] == "ended" and "§18" not in line


def test_a_party_file_nested_too_deeply_is_one_line(
    reg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`update --from FILE` nesting 100,000 deep: a RecursionError traceback before."""
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    before = reg.read_bytes()
    capsys.readouterr()
    assert act(reg, "update", "sig-verifier", "--from", str(deep)) == 2
    assert "nested too deeply" in capsys.readouterr().err and reg.read_bytes() == before


def test_init_force_does_not_discard_parties_the_demo_has_not_unless_counted(
    reg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`registry init --force` over a production registry replaced its parties (their
    notifications, agreements, suspensions) with the demo's: refused unless
    ``--discard-parties N`` names how many go."""
    assert run("add", "--registry", str(reg), *notified("bank-1", "signature-verifier")) == 0
    assert run("add", "--registry", str(reg), *notified("bank-2", "user-verifier")) == 0
    init = ("init", "--pki", str(reg.parent / "pki"), "--out", str(reg), "--force")
    before, audit_before = reg.read_bytes(), audit_path_for(reg).read_bytes()
    capsys.readouterr()
    assert run(*init) == 2
    err = capsys.readouterr().err
    assert "holds 2 parties the demo PKI has not (bank-1, bank-2)" in err
    assert "--discard-parties 2" in err
    for wrong in ("1", "3", "0"):
        assert run(*init, "--discard-parties", wrong) == 2
    assert (reg.read_bytes(), audit_path_for(reg).read_bytes()) == (before, audit_before)
    assert run(*init, "--discard-parties", "2") == 0
    assert "bank-1" not in Registry.load(reg).parties
    gone = [x for x in audit_lines(reg) if x["party"] in ("bank-1", "bank-2")][-2:]
    assert [(x["action"], x["after"]) for x in gone] == [("init", None), ("init", None)]
    # now only demo parties: --force alone replaces it, and a count of parties it has not is wrong
    assert run(*init) == 0
    capsys.readouterr()
    assert run(*init, "--discard-parties", "1") == 2
    assert "holds no party the demo PKI has not" in capsys.readouterr().err
    assert verify_audit(audit_path_for(reg), reg).problems == []


def test_init_force_over_a_file_that_is_no_registry_is_refused(
    reg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`change` reads an unreadable registry as empty for init: the parties it would discard
    could not be counted."""
    reg.write_text("[[party]\nbroken")
    capsys.readouterr()
    assert run("init", "--pki", str(reg.parent / "pki"), "--out", str(reg), "--force") == 2
    assert "move it aside first" in capsys.readouterr().err
    assert reg.read_text() == "[[party]\nbroken"


def test_update_from_reads_certificate_paths_relative_to_the_file(
    reg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`update --from FILE` read a credential's ``cert`` relative to the registry, `import
    --from` relative to FILE: a form kept beside its certificates named the wrong file. Both
    read it relative to FILE now; the registry stores it relative to itself."""
    forms = tmp_path / "forms"
    forms.mkdir()
    shutil.copy(reg.parent / "pki/parties/auth-verifier.pem", forms / "client.pem")
    token = (reg.parent / "pki/parties/auth-verifier.token").read_text().strip()
    form = forms / "auth-verifier.toml"
    form.write_text(
        ONE_PARTY.format(digest=hashlib.sha256(token.encode()).hexdigest())
        + '[[party.credential]]\nkind = "mtls"\nlabel = "mtls-9"\ncert = "client.pem"\n'
    )
    assert act(reg, "update", "auth-verifier", "--from", str(form)) == 0, capsys.readouterr().err
    entry = Registry.load(reg).file.find("auth-verifier")
    assert isinstance(entry, PartyEntry)
    stored = [c for c in entry.credential if c.label == "mtls-9"]
    assert [getattr(c, "cert", None) for c in stored] == ["forms/client.pem"]
    # and `add --from` the same way (the certificate freed first: one party's only)
    assert act(reg, "update", "auth-verifier", "--remove-credential", "mtls-9") == 0
    form.write_text(form.read_text().replace('id = "auth-verifier"', 'id = "auth-2"'))
    form.write_text(form.read_text().replace(token_line(form), ""))
    assert run("add", "--registry", str(reg), "--id", "auth-2", "--from", str(form)) == 0
    e2 = Registry.load(reg).file.find("auth-2")
    assert isinstance(e2, PartyEntry)
    assert [getattr(c, "cert", None) for c in e2.credential] == ["forms/client.pem"]


def token_line(form: Path) -> str:
    """The form's token credential table (a token is one party's only)."""
    text = form.read_text()
    start = text.index('[[party.credential]]\nkind = "token"')
    return text[start : text.index("\n", text.index("token_sha256", start)) + 1]


def test_an_export_to_another_directory_reads_back_as_the_same_credentials(
    reg: Path, tmp_path: Path
) -> None:
    """`export --out` wrote certificate paths relative to the registry, which `import --from`
    and `update --from` read relative to the export: elsewhere, they named no file."""
    exported = tmp_path / "backup" / "x" / "exported.toml"
    exported.parent.mkdir(parents=True)
    assert run("export", "--registry", str(reg), "--out", str(exported)) == 0
    elsewhere = tmp_path / "other" / "registry.toml"
    elsewhere.parent.mkdir()
    assert run("import", "--registry", str(elsewhere), "--from", str(exported)) == 0
    a, b = Registry.load(reg), Registry.load(elsewhere)
    for pid in a.parties:
        assert a.parties[pid].credentials == b.parties[pid].credentials
    # outside the export's directory, a path is written whole
    assert f'cert = "{(reg.parent / "pki").resolve()}/' in exported.read_text()


def test_a_members_own_bound_on_its_groups_appliance(
    reg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 署名確認者 has no agreement: ``--quota-per-second`` and ``--quota-per-day`` set the
    group's bound on it (its signature-confirmer title, Ord §33(4), `responder.memberbound`);
    0 removes it (back to ``[group]``'s default); provisions per day are refused."""
    assert act(reg, "update", "member-1", "--quota-per-second", "7", "--quota-per-day", "900") == 0
    p = Registry.load(reg).parties["member-1"]
    assert (p.requests_per_second, p.requests_per_day) == (7, 900)
    entry = Registry.load(reg).file.find("member-1")
    assert isinstance(entry, PartyEntry) and entry.agreement is None
    assert act(reg, "update", "member-1", "--quota-per-second", "0") == 0
    p = Registry.load(reg).parties["member-1"]
    assert (p.requests_per_second, p.requests_per_day) == (None, 900)
    capsys.readouterr()
    assert act(reg, "update", "member-1", "--provisions-per-day", "5") != 0
    assert "no provisions per day" in capsys.readouterr().err


@pytest.mark.parametrize("left", ["", "\n", "  \n\t\n"], ids=["empty", "newline", "blank"])
@pytest.mark.parametrize(
    "command",
    [
        ("add", *ADD_BANK, "--new-token"),
        ("import", "--from", "{export}"),
        ("init", "--pki", "{pki}", "--out", "{reg}", "--force"),
    ],
    ids=["add", "import", "init-force"],
)
def test_a_truncated_registry_is_refused_not_taken_for_a_new_one(
    reg: Path, left: str, command: tuple[str, ...]
) -> None:
    """A registry cut to nothing (a full disk, an editor's crash, ``> registry.toml``) read as
    a registry of no party: ``registry add`` then wrote one holding the new party alone, a
    valid file every worker and the builder took, so every other party was refused 401 and
    its tokens revoked (Act §17(1), §36(1)), though the workers had kept the last good
    registry until then (`Registry.load` refuses a blank file). Refused now, nothing
    written, as a file that does not read as a registry is."""
    export = reg.parent / "export.toml"
    assert run("export", "--registry", str(reg), "--out", str(export)) == 0
    audit_before = audit_path_for(reg).read_bytes()
    reg.write_text(left)
    fill = {"export": str(export), "pki": str(reg.parent / "pki"), "reg": str(reg)}
    argv = [a.format(**fill) for a in command]
    if argv[0] != "init":
        argv[1:1] = ["--registry", str(reg)]
    assert run(*argv) == 2
    assert reg.read_text() == left  # unchanged: the operator restores it from a backup
    assert audit_path_for(reg).read_bytes() == audit_before


def test_a_truncated_registry_is_repaired_by_replication(reg: Path) -> None:
    """What the refusal above points to: a node's blank registry takes the cluster's whole
    (`responder.registry.cli.replicate`, what ``registry sync`` runs), audited as a change
    from nothing."""
    from responder.registry.auditkey import load_key
    from responder.registry.cli import replicate

    good = reg.read_bytes()
    reg.write_text("\n")
    key = load_key(key_path_for(reg), create=False)
    changed = replicate(reg, good, audit=audit_path_for(reg), origin="bucket#9", key=key)
    assert reg.read_bytes() == good and len(changed) == 7
    assert {x["action"] for x in audit_lines(reg)[-7:]} == {"replicate"}


class _Bucket:
    """A stand-in for the cluster's registry bucket (`responder.registry.shared.
    SharedRegistry`): what `change` asks of it, and what was put."""

    def __init__(self, data: bytes) -> None:
        from responder.registry.shared import Shared

        self.bucket = "JPKI_REGISTRY"
        self.held = Shared(1, data)
        self.puts: list[bytes] = []

    def get(self) -> Any:
        return self.held

    def put(self, data: bytes, expected: int) -> int:
        from responder.registry.shared import Shared

        assert expected == self.held.revision
        self.puts.append(data)
        self.held = Shared(expected + 1, data)
        return expected + 1

    def close(self) -> None:
        pass


def test_a_change_refused_for_its_audit_log_is_not_put_in_the_cluster(reg: Path) -> None:
    """On several nodes a change goes to the cluster's bucket, then to this node's audit log
    and file. An audit log that cannot take a line (its last line cut short by a crash)
    refused the change here, "unchanged", after the bucket had taken it: every other node
    applied a suspension (提供の停止, Act §18(6)) its operator was told had been refused, and
    no node's audit log recorded it. The audit log is checked before the bucket is written."""
    from responder.registry.cli import CommandError, change

    bucket = _Bucket(reg.read_bytes())
    log = audit_path_for(reg)
    log.write_bytes(log.read_bytes() + b'{"seq": 8, "at"')  # a line cut short
    before = reg.read_bytes()

    def mutate(data: Any) -> Any:
        import msgspec

        parties = [
            msgspec.structs.replace(p, name=p.name + " (renamed)")
            if p.id == "sig-verifier" else p
            for p in data.parties
        ]  # fmt: skip
        data.parties = parties
        return data

    with pytest.raises(CommandError, match="audit log"):
        change(reg, mutate, action="update", actor="ops", shared=bucket)  # type: ignore[arg-type]
    assert bucket.puts == [] and reg.read_bytes() == before
