"""Key ceremonies (Ord §74(3): 複数の者) and the operation log (Ord §73(3): 動作の記録).

`crlbuilder keys ...` refuses a ceremony without two distinct operators' approvals, logs the
refusal and does nothing; an approved one generates the key in the token, issues its
certificate, and every operation lands in the hash-chained operation log, whose edits,
deletions and reorderings `crlbuilder keys verify-log` detects.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from crlbuilder.auditlog import append_chained
from crlbuilder.cli import main as cli_main
from crlbuilder.crl.encode import encode_crl
from crlbuilder.crl.publish import crl_signing
from crlbuilder.keys import oplog
from crlbuilder.keys import pkcs11 as p11
from crlbuilder.keys.approval import (
    Approval,
    ApprovalError,
    add_operator,
    check_approvals,
    fingerprint,
    fingerprints,
    hash_secret,
    load_operators,
)
from crlbuilder.keys.signer import SignerError, load_signer
from crlbuilder.manifest import Manifest, dump_manifest, load_manifest
from tests.support.softhsm import SoftHsmToken, make_token

ALICE = b"alice-secret-0001"
BOB = b"bob-secret-000002"


RECORD: dict[Path, str] = {}
"""The ceremony record of each test's logs: the head its last successful command printed."""


@pytest.fixture(autouse=True)
def _fresh_record() -> Iterator[None]:
    RECORD.clear()
    yield
    RECORD.clear()


def main(argv: list[str]) -> int:
    """The CLI run as operators who keep the ceremony record (`RECORD`): a ceremony given
    neither --anchor nor --new-log is given the head the last successful command on its log
    printed; where the record has none, --new-log for an add-operator where there is no log,
    or the head of a log written otherwise (an older log's first head noted in the record
    after examining it). Each successful or failed (ceremony-failed) command's head goes into
    the record."""
    argv = list(argv)
    ceremony = argv[:1] == ["keys"] and argv[1:2] != ["verify-log"] and "--log" in argv
    log = Path(argv[argv.index("--log") + 1]) if ceremony else None
    if log is not None and not {"--anchor", "--new-log"} & set(argv):
        if log in RECORD:
            argv += ["--anchor", RECORD[log]]
        elif log.exists() and log.stat().st_size > 0:
            argv += ["--anchor", str(oplog.verify_oplog(log).anchor)]
        elif argv[1] == "add-operator":
            argv += ["--new-log"]
    rc = cli_main(argv)
    if log is not None and (rc == 0 or _printed_a_failure(log)):
        RECORD[log] = str(oplog.verify_oplog(log).anchor)
    return rc


def _printed_a_failure(log: Path) -> bool:
    """The command failed part-way and printed the head (its ``ceremony-failed`` line is after
    the recorded head): the operators write that head into the record too."""
    held = int(RECORD[log].partition(":")[0]) if log in RECORD else 0
    return log.exists() and any(r.event == "ceremony-failed" for r in records(log)[held:])


def secret_file(directory: Path, name: str, secret: bytes) -> Path:
    path = directory / f"{name}.secret"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret + b"\n")
    return path


@pytest.fixture
def operators(tmp_path: Path) -> Path:
    path = tmp_path / "operators.toml"
    for name, secret in (("alice", ALICE), ("bob", BOB)):
        src = secret_file(tmp_path, name, secret)
        assert main(["keys", "add-operator", "--operators", str(path), "--name", name,
                     "--secret", f"file:{src}", "--log", str(tmp_path / "oplog.jsonl")]) == 0  # fmt: skip
    return path


@pytest.fixture(autouse=True)
def _sessions_unlogged() -> Iterator[None]:
    yield
    oplog.end_all()
    oplog.configure(None)


def records(log: Path) -> list[oplog.OpRecord]:
    return [
        msgspec.json.decode(line, type=oplog.OpRecord) for line in log.read_bytes().splitlines()
    ]


def after_enrolments(log: Path) -> list[oplog.OpRecord]:
    """The log's lines after the `operators` fixture's two enrolments: the ceremonies' (a
    ceremony is logged where its operators were enrolled, which accounts for them)."""
    recs = records(log)
    assert [r.event for r in recs[:2]] == ["operator-enrolled", "operator-enrolled"]
    return recs[2:]


def approvals(tmp_path: Path, *names: str) -> list[str]:
    out = []
    for n in names:
        out += ["--approval", f"{n}:file:{tmp_path / (n + '.secret')}"]
    return out


def test_operators_file_is_private_and_holds_no_secret(operators: Path) -> None:
    assert stat.S_IMODE(operators.stat().st_mode) == 0o600
    text = operators.read_bytes()
    assert ALICE not in text and BOB not in text
    assert sorted(load_operators(operators)) == ["alice", "bob"]


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ([("alice", ALICE)], "1 approval"),
        ([("alice", ALICE), ("alice", ALICE)], "alice approved twice"),
        ([("alice", ALICE), ("carol", BOB)], "'carol' is not in the operators file"),
        ([("alice", ALICE), ("bob", b"not-bobs-secret-00")], "'bob': the secret does not match"),
        # one secret under two names (the same approval file given twice, or one person's
        # two names sharing a secret): refused whatever the operators file holds
        ([("alice", ALICE), ("bob", ALICE)], "operators alice and bob gave one secret"),
        ([("bob", BOB), ("alice", BOB)], "operators bob and alice gave one secret"),
    ],
)
def test_ord_74_3_two_distinct_operators_rule(
    operators: Path, given: list[tuple[str, bytes]], why: str
) -> None:
    ops = load_operators(operators)
    with pytest.raises(ApprovalError, match=why):
        check_approvals(ops, [Approval(n, s) for n, s in given])
    assert check_approvals(ops, [Approval("alice", ALICE), Approval("bob", BOB)]) == [
        "alice",
        "bob",
    ]


@pytest.mark.parametrize(
    ("names", "why"),
    [
        (("alice",), "1 approval"),
        (("alice", "alice"), "approved twice"),
        (("alice", "mallory"), "not in the operators file"),
    ],
)
def test_ord_74_3_ceremony_without_two_operators_is_refused_logged_and_does_nothing(
    tmp_path: Path,
    operators: Path,
    names: tuple[str, ...],
    why: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret_file(tmp_path, "mallory", b"mallory-secret-0003")
    log = tmp_path / "oplog.jsonl"
    out = tmp_path / "ca.pem"
    key = f"pkcs11:token=none;object=ca;type=private?pin-source=file:{tmp_path}/no.pin"
    argv = ["keys", "new-ca", "--key", key, "--family", "sign-card", "--generation", "3",
            "--out", str(out), "--log", str(log), "--operators", str(operators)]  # fmt: skip
    assert main(argv + approvals(tmp_path, *names)) == 2
    assert "refused, nothing done" in capsys.readouterr().err
    assert not out.exists()  # nothing done (the token was never opened: it does not exist)
    [rec] = after_enrolments(log)
    assert rec.event == "ceremony-refused" and why in str(rec.detail["reason"])
    assert rec.operators == list(names) and rec.key == key.split("?", maxsplit=1)[0]
    assert "pin-source" not in log.read_text() and "secret" not in rec.detail["reason"]
    assert oplog.verify_oplog(log).problems == []


def test_the_ceremony_hash_covers_every_parameter_approved(tmp_path: Path, operators: Path) -> None:
    """The SHA-256 of what the operators approved, in every line of the ceremony, left out
    the key size (new-ca, new-ocsp, rollover) and retire's --pki / --no-pki: two ceremonies
    that differ in them had one description."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from crlbuilder.demo.pki import init_pki

    log, pki, cert = tmp_path / "oplog.jsonl", init_pki(tmp_path / "pki"), tmp_path / "old.pem"
    now = datetime(2026, 1, 1, tzinfo=UTC)
    name = x509.Name.from_rfc4514_string("CN=an old key")
    private = ec.generate_private_key(ec.SECP256R1())
    built = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
             .public_key(private.public_key()).serial_number(1)
             .not_valid_before(now).not_valid_after(now + timedelta(days=1)))  # fmt: skip
    cert.write_bytes(built.sign(private, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    key = f"pkcs11:token=none;object=ca;type=private?pin-source=file:{tmp_path}/no.pin"
    common = ["--log", str(log), "--operators", str(operators), *approvals(tmp_path, "alice")]
    new_ca = ["keys", "new-ca", "--key", key, "--family", "sign-card", "--generation", "3",
              "--out", str(tmp_path / "ca.pem"), *common]  # fmt: skip
    retire = ["keys", "retire", "--key", key, "--cert", str(cert), *common]
    for argv in ([*new_ca, "--bits", "2048"], [*new_ca, "--bits", "4096"],
                 [*retire, "--no-pki"], [*retire, "--pki", pki.directory]):  # fmt: skip
        assert main(argv) == 2  # one approval: refused, its line names the ceremony
    refused = [r for r in after_enrolments(log) if r.event == "ceremony-refused"]
    assert len(refused) == 4 and len({r.ceremony for r in refused}) == 4


def test_a_bad_secret_is_refused_and_logged(tmp_path: Path, operators: Path) -> None:
    (tmp_path / "bob.secret").unlink()
    secret_file(tmp_path, "bob", b"not-bobs-secret-00")
    log = tmp_path / "oplog.jsonl"
    out = tmp_path / "ocsp.pem"
    (tmp_path / "ca.key").touch(0o600)  # a PEM key file's place (refused before it is read)
    argv = ["keys", "new-ocsp", "--key", "pkcs11:token=t;object=k;type=private?pin-source=env:P",
            "--ca-key", str(tmp_path / "ca.key"), "--ca-cert", str(tmp_path / "ca.pem"),
            "--out", str(out), "--log", str(log), "--operators", str(operators)]  # fmt: skip
    assert main(argv + approvals(tmp_path, "alice", "bob")) == 2
    [rec] = after_enrolments(log)
    assert rec.event == "ceremony-refused" and rec.operators == ["alice", "bob"]
    assert "'bob': the secret does not match" in str(rec.detail["reason"])
    assert b"not-bobs-secret" not in log.read_bytes() and not out.exists()


def test_a_secret_file_that_cannot_be_used_is_named_a_secret_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The operator is told which of the ceremony's files is wrong: the secret, not a key."""
    loose = secret_file(tmp_path, "carol", b"carol-secret-0005")
    loose.chmod(0o640)
    for source, why in (
        (tmp_path / "missing.secret", "cannot open the secret file (No such file or directory)"),
        (loose, "the secret file's mode 0640 allows group or other access"),
    ):
        argv = ["keys", "add-operator", "--operators", str(tmp_path / "ops.json"), "--name",
                "carol", "--secret", f"file:{source}", "--log", str(tmp_path / "log"),
                "--new-log"]  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{source}: {why}" in err and "key file" not in err
        assert b"carol-secret" not in err.encode() and not (tmp_path / "ops.json").exists()


@pytest.mark.parametrize(
    "approval",
    ["bob:typed-secret-0004", "typed-secret-0004", "typed-secret:0004-x", "typed-secret:file:"],
    ids=["as-source", "alone", "with-a-colon", "source-without-path"],
)
def test_a_secret_typed_in_place_of_its_source_is_neither_shown_nor_logged(
    tmp_path: Path, operators: Path, approval: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The refusal quoted the text it could not parse: a secret given on the command line went
    to stderr and into the hash-chained operation log, where it cannot be removed. A secret
    with a colon in it had its first part logged as the approver's name: only an approval's
    shape (NAME:file:/path, NAME:env:VAR) names someone in the refusal's line."""
    log = tmp_path / "oplog.jsonl"
    argv = ["keys", "new-ca", "--key", "pkcs11:token=t;object=k", "--family", "sign-card",
            "--generation", "3", "--out", str(tmp_path / "ca.pem"), "--log", str(log),
            "--operators", str(operators), *approvals(tmp_path, "alice"),
            "--approval", approval]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "refused, nothing done" in err and "typed-secret" not in err
    assert log.exists() and b"typed-secret" not in log.read_bytes()
    assert main(["keys", "add-operator", "--operators", str(operators), "--name", "carol",
                 "--secret", "typed-secret-0004", "--log", str(log)]) == 2  # fmt: skip
    assert "typed-secret" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("ceremony", "flag"),
    [("new-ca", "--key"), ("new-ocsp", "--key"), ("new-ocsp", "--ca-key"),
     ("rollover", "--ca-key"), ("rollover", "--ocsp-key"), ("retire", "--key")],
)  # fmt: skip
def test_a_pin_typed_in_place_of_a_key_uri_is_neither_shown_nor_logged(
    tmp_path: Path,
    operators: Path,
    ceremony: str,
    flag: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A ceremony's key that is not a pkcs11: URI went through: refused (one approval) with
    the text as the line's key, or approved and then failed with it on stderr ("PIN: not a
    PKCS#11 URI") and in the ceremony-failed line, in a log that cannot be edited. The keys
    a ceremony makes or destroys are in the token: anything else is a usage error that shows
    nothing of it. new-ocsp's --ca-key may also be a PEM key file: one that is not there is
    refused the same way."""
    log = tmp_path / "oplog.jsonl"
    uri = f"pkcs11:token=t;object=k;type=private?pin-source=file:{tmp_path}/no.pin"
    given = {
        "new-ca": ["--key", uri, "--family", "sign-card", "--generation", "3",
                   "--out", str(tmp_path / "ca.pem")],
        "new-ocsp": ["--key", uri, "--ca-key", uri, "--ca-cert", str(tmp_path / "ca.pem"),
                     "--out", str(tmp_path / "ocsp.pem")],
        "rollover": ["--pki", str(tmp_path / "pki"), "--family", "sign-card",
                     "--ca-key", uri, "--ocsp-key", uri],
        "retire": ["--key", uri, "--cert", str(tmp_path / "ca.pem"), "--no-pki"],
    }[ceremony]  # fmt: skip
    given[given.index(flag) + 1] = "typed-pin-004711"
    before = log.read_bytes()
    for names in (("alice",), ("alice", "bob")):
        with pytest.raises(SystemExit) as e:
            main(["keys", ceremony, *given, "--log", str(log), "--operators", str(operators),
                  *approvals(tmp_path, *names)])  # fmt: skip
        assert e.value.code == 2
        err = capsys.readouterr().err
        said = (
            "neither a pkcs11: URI nor"
            if flag == "--ca-key" and ceremony == "new-ocsp"
            else "a pkcs11: URI is required"
        )
        assert said in err and "typed-pin" not in err
    assert log.read_bytes() == before


def test_an_enrolled_operator_is_replaced_only_when_asked(
    tmp_path: Path, operators: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Enrolling a name again replaced its secret silently: a mistyped name took over a
    colleague's approvals (and with them the two-person rule)."""
    before = operators.read_bytes()
    src = secret_file(tmp_path, "mallory", b"mallory-secret-0005")
    add = ["keys", "add-operator", "--operators", str(operators), "--name", "bob",
           "--secret", f"file:{src}", "--log", str(tmp_path / "oplog.jsonl")]  # fmt: skip
    assert main(add) == 2
    assert "operator bob is enrolled already: give --replace" in capsys.readouterr().err
    assert operators.read_bytes() == before
    both = [Approval("alice", ALICE), Approval("bob", BOB)]
    assert check_approvals(load_operators(operators), both) == ["alice", "bob"]
    current = ["--current-secret", f"file:{tmp_path / 'bob.secret'}"]
    assert main([*add, "--replace", *current]) == 0
    assert "operator bob secret replaced" in capsys.readouterr().out
    with pytest.raises(ApprovalError):
        check_approvals(load_operators(operators), both)


def enrol(tmp_path: Path, operators: Path, name: str, *extra: str) -> list[str]:
    """add-operator's argv for ``name``, whose secret file is made (``NAME-secret-00000``)."""
    src = tmp_path / f"{name}.secret"
    if not src.exists():
        secret_file(tmp_path, name, f"{name}-secret-00000".encode())
    return ["keys", "add-operator", "--operators", str(operators), "--name", name,
            "--secret", f"file:{src}", "--log", str(tmp_path / "oplog.jsonl"), *extra]  # fmt: skip


def test_ord_74_3_no_two_operators_share_one_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One person enrolling two names with one secret (at the bootstrap, or a --replace or
    --reset to a colleague's secret) held both names and passed every two-person ceremony
    alone, each approval "distinct" by name. A secret another enrolled operator has is
    refused, logged without naming that operator, and nothing changes."""
    operators, log = tmp_path / "operators.toml", tmp_path / "oplog.jsonl"
    assert main(enrol(tmp_path, operators, "alice")) == 0
    secret_file(tmp_path, "bob", b"alice-secret-00000")  # alice's, under bob's name
    before = operators.read_bytes()
    assert main(enrol(tmp_path, operators, "bob")) == 2
    err = capsys.readouterr().err
    assert "the secret given for bob is another enrolled operator's" in err
    assert "alice" not in err.partition("refused")[2]
    assert operators.read_bytes() == before
    [refused] = records(log)[1:]
    assert refused.event == "ceremony-refused" and refused.detail["operator"] == "bob"
    assert b"alice-secret" not in log.read_bytes()
    (tmp_path / "bob.secret").unlink()
    assert main(enrol(tmp_path, operators, "bob")) == 0  # bob's own
    # bob replacing his secret by alice's: refused too
    theirs = ["--replace", "--current-secret", f"file:{tmp_path / 'bob.secret'}"]
    argv = enrol(tmp_path, operators, "bob", *theirs)
    argv[argv.index("--secret") + 1] = f"file:{tmp_path / 'alice.secret'}"
    before = operators.read_bytes()
    assert main(argv) == 2
    assert "another enrolled operator's" in capsys.readouterr().err
    assert operators.read_bytes() == before
    # a new secret of his own is taken
    argv[argv.index("--secret") + 1] = (
        f"file:{secret_file(tmp_path, 'bob-new', b'bob-new-secret-01')}"
    )
    assert main(argv) == 0


@pytest.mark.parametrize(
    "name",
    ["ａｌｉｃｅ", "bоb", "carol²", "x" * 65],
    ids=["fullwidth", "cyrillic-o", "superscript", "long"],
)
def test_an_operator_name_is_ascii_and_the_operators_file_stays_readable(
    tmp_path: Path, operators: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A name str.isalnum() took (fullwidth letters, a Cyrillic o in "bob", a superscript
    digit) was enrolled, logged, and written as a TOML key the operators file cannot hold:
    every later ceremony was refused ("not an operators file"); and two names that look
    alike in the log's review are not two people. Refused, nothing written but the
    refusal's line."""
    log = tmp_path / "oplog.jsonl"
    secret_file(tmp_path, "newcomer", b"newcomer-secret-01")
    argv = ["keys", "add-operator", "--operators", str(operators), "--name", name,
            "--secret", f"file:{tmp_path / 'newcomer.secret'}", "--log", str(log),
            *approvals(tmp_path, "alice", "bob")]  # fmt: skip
    before = operators.read_bytes()
    assert main(argv) == 2
    assert "ASCII letters, digits, - and _ only" in capsys.readouterr().err
    assert operators.read_bytes() == before
    assert sorted(load_operators(operators)) == ["alice", "bob"]
    assert [r.event for r in after_enrolments(log)] == ["ceremony-refused"]


def test_ord_74_2_every_enrolment_and_secret_change_is_in_the_operation_log(
    tmp_path: Path, operators: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An operator enrolled, or their secret replaced, left no trace in the operation log:
    one operator could replace a colleague's secret (--replace) or enrol a second name of
    their own and then approve a two-person ceremony alone, and nothing recorded it. Now each
    is a chained line naming who authorised it (no one for the bootstrap, the operator for a
    replaced secret, two approvers for a third operator) and the SHA-256 of the stored salted
    hash (never the secret), which a review compares with the operators file."""
    log = tmp_path / "oplog.jsonl"
    new_bob = secret_file(tmp_path, "bob2", b"bob-secret-000009")
    replace = ["keys", "add-operator", "--operators", str(operators), "--name", "bob",
               "--secret", f"file:{new_bob}", "--log", str(log), "--replace",
               "--current-secret", f"file:{tmp_path / 'bob.secret'}"]  # fmt: skip
    assert main(replace) == 0
    assert "operator bob secret replaced" in capsys.readouterr().out
    carol = enrol(tmp_path, operators, "carol")
    assert main([*carol, "--approval", "alice:file:" + str(tmp_path / "alice.secret"),
                 "--approval", f"bob:file:{new_bob}"]) == 0  # fmt: skip
    assert "operator carol enrolled (approvals)" in capsys.readouterr().out
    recs = records(log)
    assert [(r.event, r.operators, r.detail["authorised_by"]) for r in recs] == [
        ("operator-enrolled", [], "bootstrap"),
        ("operator-enrolled", [], "bootstrap"),
        ("operator-secret-replaced", ["bob"], "current-secret"),
        ("operator-enrolled", ["alice", "bob"], "approvals"),
    ]
    assert [r.detail["operator"] for r in recs] == ["alice", "bob", "bob", "carol"]
    stored = load_operators(operators)
    for r in recs[2:]:
        name = str(r.detail["operator"])
        assert r.detail["credential_sha256"] == hashlib.sha256(stored[name].encode()).hexdigest()
    assert b"carol-secret" not in log.read_bytes() and b"bob-secret" not in log.read_bytes()
    assert main(["keys", "verify-log", "--log", str(log)]) == 0
    with pytest.raises(SystemExit) as e:  # no log named: refused, nothing enrolled
        main(enrol(tmp_path, operators, "dave")[:-2])
    assert e.value.code == 2
    assert load_operators(operators) == stored


@pytest.mark.parametrize(
    ("name", "extra", "why"),
    [
        ("bob", ["--replace", "--current-secret", "file:{d}/alice.secret"],
         "'bob': the current secret does not match"),
        ("bob", ["--replace"], "--replace needs bob's current secret"),
        ("bob", ["--replace", "--current-secret", "file:{d}/bob.secret",
                 "--approval", "alice:file:{d}/alice.secret"], "not approvals"),
        ("carol", [], "0 approval(s) given"),
        ("carol", ["--approval", "alice:file:{d}/alice.secret"], "1 approval(s) given"),
        ("carol", ["--approval", "alice:file:{d}/alice.secret",
                   "--approval", "carol:file:{d}/carol.secret"],
         "carol cannot approve their own enrolment"),
        ("carol", ["--approval", "alice:file:{d}/alice.secret",
                   "--approval", "mallory:file:{d}/carol.secret"],
         "'mallory' is not in the operators file"),
        ("carol", ["--approval", "alice:file:{d}/alice.secret",
                   "--approval", "bob:file:{d}/alice.secret"], "alice and bob gave one secret"),
        ("carol", ["--approval", "alice:file:{d}/alice.secret",
                   "--approval", "bob:file:{d}/carol.secret"], "'bob': the secret does not match"),
    ],
    ids=["wrong-current-secret", "no-current-secret", "replace-by-approvals", "no-approval",
         "one-approval", "self-approval", "unknown-approver", "one-secret-twice",
         "wrong-approver-secret"],
)  # fmt: skip
def test_ord_74_3_one_person_cannot_take_a_second_operator_and_nothing_changes(
    tmp_path: Path,
    operators: Path,
    name: str,
    extra: list[str],
    why: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With --replace and no old secret anyone could replace bob's secret and act as bob;
    with two operators enrolled, anyone could enrol a second name and approve a two-person
    ceremony alone. Each is refused (exit 2), the operators file unchanged, and the refusal
    logged ``ceremony-refused`` with the reason (never a secret)."""
    log = tmp_path / "oplog.jsonl"
    before, lines = operators.read_bytes(), len(records(log))
    argv = enrol(tmp_path, operators, name, *(x.format(d=tmp_path) for x in extra))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert why in err and "refused, nothing done" in err
    assert operators.read_bytes() == before
    recs = records(log)
    assert len(recs) == lines + 1
    assert recs[-1].event == "ceremony-refused" and why in str(recs[-1].detail["reason"])
    assert recs[-1].key == str(operators) and recs[-1].detail["ceremony"] == "add-operator"
    assert recs[-1].detail["operator"] == name
    assert b"-secret-0" not in log.read_bytes()


def test_bootstrap_enrols_the_first_two_without_approvals_then_asks_for_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first two operators have no one to approve them: they enrol alone, and the log
    says it was the bootstrap; from the third on, two enrolled operators approve."""
    operators = tmp_path / "operators.toml"
    with_approval = ["--approval", f"x:file:{tmp_path / 'x.secret'}"]
    secret_file(tmp_path, "x", b"x-secret-0000001")
    assert main(enrol(tmp_path, operators, "alice", *with_approval)) == 2
    assert "bootstrap" in capsys.readouterr().err and not operators.exists()
    assert not (tmp_path / "oplog.jsonl").exists()  # a refusal never starts the log
    assert main(enrol(tmp_path, operators, "alice")) == 0
    assert main(enrol(tmp_path, operators, "bob")) == 0
    assert "operator bob enrolled (bootstrap)" in capsys.readouterr().out
    assert main(enrol(tmp_path, operators, "carol")) == 2
    assert sorted(load_operators(operators)) == ["alice", "bob"]
    ok = approvals(tmp_path, "alice", "bob")
    assert main(enrol(tmp_path, operators, "carol", *ok)) == 0
    assert sorted(load_operators(operators)) == ["alice", "bob", "carol"]
    recs = records(tmp_path / "oplog.jsonl")
    assert [(r.event, r.detail.get("authorised_by")) for r in recs] == [
        ("operator-enrolled", "bootstrap"),
        ("operator-enrolled", "bootstrap"),
        ("ceremony-refused", None),
        ("operator-enrolled", "approvals"),
    ]


def test_an_enrolment_never_exists_without_its_log_line(
    tmp_path: Path, operators: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The operators file was written before the log line: a log that could not be written
    left an operator enrolled with no record. Now the line comes first; without it, nothing
    changes (bootstrap, approved enrolment, replaced secret)."""
    blocked = tmp_path / "not-a-dir"
    blocked.write_bytes(b"")
    bad_log = ["--log", str(blocked / "oplog.jsonl")]
    fresh = tmp_path / "fresh.toml"
    assert main([*enrol(tmp_path, fresh, "dave"), *bad_log]) == 2
    assert "operation log" in capsys.readouterr().err and not fresh.exists()
    before = operators.read_bytes()
    ok = approvals(tmp_path, "alice", "bob")
    assert main([*enrol(tmp_path, operators, "carol", *ok), *bad_log]) == 2
    assert "operation log" in capsys.readouterr().err
    current = ["--replace", "--current-secret", f"file:{tmp_path / 'bob.secret'}"]
    assert main([*enrol(tmp_path, operators, "bob", *current), *bad_log]) == 2
    assert operators.read_bytes() == before
    assert main(enrol(tmp_path, operators, "carol", *ok)) == 0  # a reset needs two others
    before = operators.read_bytes()
    reset = ["--reset", *approvals(tmp_path, "bob", "carol")]
    assert main([*enrol(tmp_path, operators, "alice", *reset), *bad_log]) == 2
    assert operators.read_bytes() == before
    # the file holds no credential the log does not account for
    assert verify_against(tmp_path, operators, capsys) == (0, "accounted for by the log")


def test_an_operators_file_that_cannot_be_written_leaves_no_copy(
    tmp_path: Path,
    operators: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A write that fails (a full disk) refuses in one line, keeps the file as it was, and
    leaves no temporary copy of the operators' hashes (nor one that refuses the next run).
    The log line written first is followed by ``ceremony-failed``: it did not happen."""
    before = operators.read_bytes()
    fsync = os.fsync

    def full(fd: int) -> None:  # the operators file's disk is full, not the log's
        if "operators" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(28, "No space left on device")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    add = enrol(tmp_path, operators, "carol", *approvals(tmp_path, "alice", "bob"))
    assert main(add) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert operators.read_bytes() == before
    assert not [p.name for p in operators.parent.iterdir() if p.name.endswith(".tmp")]
    recs = records(tmp_path / "oplog.jsonl")
    assert [r.event for r in recs[-2:]] == ["operator-enrolled", "ceremony-failed"]
    assert recs[-1].ceremony == recs[-2].ceremony
    monkeypatch.undo()
    assert main(add) == 0
    assert verify_against(tmp_path, operators, capsys) == (0, "accounted for by the log")


# --- the log's account of the operators file (Ord §74(2), §74(3)) --------------------------


def verify_against(
    tmp_path: Path, operators: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """verify-log --operators on the test's log: its exit code and what it printed."""
    capsys.readouterr()
    rc = main(["keys", "verify-log", "--log", str(tmp_path / "oplog.jsonl"),
               "--operators", str(operators)])  # fmt: skip
    return rc, capsys.readouterr().out if rc else "accounted for by the log"


def write_by_hand(path: Path, ops: dict[str, str]) -> None:
    """The operators file as anyone who can write it may write it, without a command."""
    text = "".join(f'[operators.{n}]\nscrypt = "{h}"\n' for n, h in ops.items())
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text or "[operators]\n")


def _emptied(tmp_path: Path, operators: Path) -> None:
    operators.unlink()


def _bob_removed(tmp_path: Path, operators: Path) -> None:
    write_by_hand(operators, {"alice": load_operators(operators)["alice"]})


def _emptied_after_a_ceremony(tmp_path: Path, operators: Path) -> None:
    assert main(enrol(tmp_path, operators, "carol", *approvals(tmp_path, "alice", "bob"))) == 0
    write_by_hand(operators, {})


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (_emptied, "alice: enrolled at line 1, not in the operators file"),
        (_bob_removed, "bob: enrolled at line 2, not in the operators file"),
        (_emptied_after_a_ceremony, "1 approved ceremony line(s) from line 3; 3 more finding(s)"),
    ],
    ids=["emptied", "one-removed", "emptied-after-a-ceremony"],
)
def test_ord_74_3_an_emptied_operators_file_does_not_reopen_the_bootstrap(
    tmp_path: Path,
    operators: Path,
    edit: Callable[[Path, Path], None],
    why: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Whoever could write the operators file could empty it (or take operators out) and
    enrol two names of their own as a new bootstrap, then pass every two-person step alone.
    The log remembers what the file lost: a bootstrap is refused once it records an
    enrolment the file does not hold, or an approved ceremony; nothing changes."""
    edit(tmp_path, operators)
    capsys.readouterr()
    before = operators.read_bytes() if operators.exists() else None
    for name in ("mallory", "mallory2"):
        assert main(enrol(tmp_path, operators, name)) == 2
        err = capsys.readouterr().err
        assert "no bootstrap" in err and why in err and "restore the operators file" in err
        assert (operators.read_bytes() if operators.exists() else None) == before
        last = records(tmp_path / "oplog.jsonl")[-1]
        assert last.event == "ceremony-refused" and last.detail["operator"] == name


def test_a_bootstrap_enrolment_whose_file_write_failed_can_be_done_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An enrolment line followed by ``ceremony-failed`` did not enrol anyone: it does not
    close the bootstrap, and the operators it made are accounted for by the log."""
    operators = tmp_path / "operators.toml"
    fsync = os.fsync

    def full(fd: int) -> None:
        if "operators" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(28, "No space left on device")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    assert main(enrol(tmp_path, operators, "alice")) == 2
    monkeypatch.undo()
    assert not operators.exists()
    assert main(enrol(tmp_path, operators, "alice")) == 0
    assert main(enrol(tmp_path, operators, "bob")) == 0
    assert [r.event for r in records(tmp_path / "oplog.jsonl")] == [
        "operator-enrolled", "ceremony-failed", "operator-enrolled", "operator-enrolled"
    ]  # fmt: skip
    assert verify_against(tmp_path, operators, capsys) == (0, "accounted for by the log")


def _hash_by_hand(tmp_path: Path, operators: Path) -> None:
    ops = load_operators(operators) | {"bob": hash_secret(b"bob-by-hand-0001")}
    write_by_hand(operators, ops)


def _name_by_hand(tmp_path: Path, operators: Path) -> None:
    write_by_hand(operators, load_operators(operators) | {"mallory": hash_secret(ALICE)})


def _old_hash_put_back(tmp_path: Path, operators: Path) -> None:
    old = load_operators(operators)
    new = secret_file(tmp_path, "bob-new", b"bob-secret-new01")
    replace = ["--replace", "--current-secret", f"file:{tmp_path / 'bob.secret'}"]
    argv = enrol(tmp_path, operators, "bob", *replace)
    argv[argv.index("--secret") + 1] = f"file:{new}"
    assert main(argv) == 0
    write_by_hand(operators, old)


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (_hash_by_hand, "bob: the operators file holds a credential no line of the log enrols"),
        (_name_by_hand, "mallory: in the operators file, but no line of the log enrols them"),
        (_bob_removed, "bob: enrolled at line 2, not in the operators file"),
        (_emptied, "alice: enrolled at line 1, not in the operators file"),
        (_old_hash_put_back,
         "bob: the operators file holds the credential of line 2, replaced at line 3"),
    ],
    ids=["hash-by-hand", "name-by-hand", "removed-by-hand", "emptied", "old-hash-put-back"],
)  # fmt: skip
def test_ord_74_2_verify_log_flags_an_operators_file_changed_by_hand(
    tmp_path: Path,
    operators: Path,
    edit: Callable[[Path, Path], None],
    why: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A hash edited into the operators file by hand was visible only to someone reading the
    log's lines one by one. verify-log --operators compares the file with the log: each
    operator's credential must be the one its last line enrolled (exit 1 otherwise)."""
    assert verify_against(tmp_path, operators, capsys) == (0, "accounted for by the log")
    edit(tmp_path, operators)
    rc, out = verify_against(tmp_path, operators, capsys)
    assert rc == 1 and f"PROBLEM {why}" in out, out
    assert "chain intact" in out


def test_ord_74_3_verify_log_flags_a_ceremony_approved_by_a_credential_never_enrolled(
    tmp_path: Path, operators: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a hash written in by hand, one person approves as two; the ceremony's lines did
    not say which credential approved. Now each approved line carries its approvers'
    fingerprints, and verify-log flags an approval by a credential the log never enrolled
    (such a ceremony is refused now; a line written by a copy of the program without that
    check, or by hand into a rewritten chain, is still named)."""
    _hash_by_hand(tmp_path, operators)
    by_hand = fingerprints(load_operators(operators), ["alice", "bob"])
    oplog.record(tmp_path / "oplog.jsonl", "key-generated", key="pkcs11:token=t;object=k",
                 operators=["alice", "bob"], credentials=by_hand, ceremony="c" * 64)  # fmt: skip
    rc, out = verify_against(tmp_path, operators, capsys)
    assert rc == 1
    assert "PROBLEM line 3 (key-generated): approved by bob with a credential no line " \
        "before it enrols" in out  # fmt: skip
    assert b"bob-by-hand" not in (tmp_path / "oplog.jsonl").read_bytes()


def _alice_as_bob(tmp_path: Path, operators: Path) -> list[str]:
    ops = load_operators(operators)
    write_by_hand(operators, ops | {"bob": ops["alice"]})
    return ["--approval", f"alice:file:{tmp_path / 'alice.secret'}",
            "--approval", f"bob:file:{tmp_path / 'alice.secret'}"]  # fmt: skip


def _bob_by_hand(tmp_path: Path, operators: Path) -> list[str]:
    _hash_by_hand(tmp_path, operators)
    return ["--approval", f"alice:file:{tmp_path / 'alice.secret'}",
            "--approval", f"bob:file:{secret_file(tmp_path, 'bobh', b'bob-by-hand-0001')}"]  # fmt: skip


def _bob_old_secret(tmp_path: Path, operators: Path) -> list[str]:
    _old_hash_put_back(tmp_path, operators)
    return approvals(tmp_path, "alice", "bob")


def _bootstrapped_under_another_log(tmp_path: Path, operators: Path) -> list[str]:
    operators.unlink()
    for name in ("mallory", "mallory2"):
        argv = enrol(tmp_path, operators, name)
        argv[argv.index("--log") + 1] = str(tmp_path / "other.jsonl")  # passes: a new log
        assert main(argv) == 0
    argv = enrol(tmp_path, operators, "carol", *approvals(tmp_path, "mallory", "mallory2"))
    argv[argv.index("--log") + 1] = str(tmp_path / "other.jsonl")
    assert main(argv) == 0  # a third, so that carol's reset is asked of the real log
    # as an older operators file, naming no log (one naming other.jsonl is refused before
    # the approvals are read: test_an_operators_file_names_its_log_...)
    write_by_hand(operators, load_operators(operators))
    return approvals(tmp_path, "mallory", "mallory2")


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        # alice's hash in bob's place passes only with alice's secret given for both: the
        # approvals' own check refuses that first (one secret under two names)
        (_alice_as_bob, "operators alice and bob gave one secret"),
        (_bob_by_hand, "approved by bob with a credential no line before it enrols"),
        (_bob_old_secret, "approved by bob with the credential of line 2, replaced at line 4"),
        (_bootstrapped_under_another_log, "approved by mallory, whom no line before it enrols"),
    ],
    ids=["alice-hash-as-bob", "hash-by-hand", "old-hash-put-back", "another-log"],
)
@pytest.mark.parametrize("ceremony", ["new-ca", "add-operator", "reset"])
def test_ord_74_3_a_ceremony_approved_by_a_credential_the_log_did_not_enrol_is_refused(
    tmp_path: Path,
    operators: Path,
    edit: Callable[[Path, Path], list[str]],
    why: str,
    ceremony: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One person who can write the operators file (a copy of their own hash in a
    colleague's place, a hash of their making, an old one put back, or a new file
    bootstrapped under another --log) approved a key ceremony as two operators: the key was
    made, exit 0, and only the next verify-log --operators said so. The approvers'
    credentials are now checked against the log first: refused, nothing done, one line."""
    log = tmp_path / "oplog.jsonl"
    assert main(enrol(tmp_path, operators, "carol", *approvals(tmp_path, "alice", "bob"))) == 0
    given = edit(tmp_path, operators)
    argv = {
        "new-ca": ["keys", "new-ca", "--key", "pkcs11:token=t;object=g9;type=private",
                   "--family", "sign-card", "--generation", "9", "--out",
                   str(tmp_path / "g9.pem"), "--log", str(log), "--operators", str(operators)],
        "add-operator": enrol(tmp_path, operators, "dave"),
        "reset": enrol(tmp_path, operators, "carol", "--reset"),
    }[ceremony]  # fmt: skip
    before, lines = operators.read_bytes(), len(records(log))
    capsys.readouterr()
    assert main([*argv, *given]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    ledger = "does not account for an approver's credential" in err
    assert why in err and (ledger or "gave one secret" in why), err
    assert "secret-0" not in err and "by-hand" not in err
    assert operators.read_bytes() == before and not (tmp_path / "g9.pem").exists()
    assert [r.event for r in records(log)[lines:]] == ["ceremony-refused"]


def test_a_restored_operators_file_approves_again(
    tmp_path: Path, operators: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The check refuses the credential, not the operator: the file restored from its
    backup, the same two approve; so does an operator whose secret was replaced or reset."""
    backup = operators.read_bytes()
    alice_twice = _alice_as_bob(tmp_path, operators)
    assert main(enrol(tmp_path, operators, "carol", *alice_twice)) == 2
    operators.write_bytes(backup)
    assert main(enrol(tmp_path, operators, "carol", *approvals(tmp_path, "alice", "bob"))) == 0
    new = secret_file(tmp_path, "bob-new", b"bob-secret-new01")
    replace = enrol(tmp_path, operators, "bob", "--replace", "--current-secret",
                    f"file:{tmp_path / 'bob.secret'}")  # fmt: skip
    replace[replace.index("--secret") + 1] = f"file:{new}"
    assert main(replace) == 0
    assert main(enrol(tmp_path, operators, "dave", "--approval",
                      f"bob:file:{new}", *approvals(tmp_path, "carol"))) == 0  # fmt: skip
    assert verify_against(tmp_path, operators, capsys) == (0, "accounted for by the log")


class _LineBefore(msgspec.Struct, kw_only=True):
    """An operation log line as written before approvers' fingerprints were recorded."""

    seq: int
    at: str
    event: str
    key: str = ""
    operators: list[str] = []
    ceremony: str = ""
    detail: dict[str, str | int] = {}
    pid: int = 0
    prev: str


def test_a_log_written_before_fingerprints_stays_valid_and_says_what_it_cannot_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Logs written by earlier versions stay valid: ceremonies approved before enrolments
    were logged (no line enrols alice and bob), an enrolment line of the first version that
    logged them (``operators``: the operator; no ``authorised_by``), ceremony lines without
    ``credentials``: reported as not checked (exit 0); what they carry is still checked."""
    log, operators = tmp_path / "oplog.jsonl", tmp_path / "operators.toml"
    carol = hash_secret(b"carol-secret-0003")
    at = "2026-01-05T01:00:00.000000+00:00"
    append_chained(log, [
        _LineBefore(seq=0, prev="", at=at, event="key-generated", key="pkcs11:object=k",
                    operators=["alice", "bob"], ceremony="c" * 64, detail={"bits": 2048}),
        _LineBefore(seq=0, prev="", at=at, event="operator-enrolled", key=str(operators),
                    operators=["carol"], ceremony="d" * 64,
                    detail={"operator": "carol", "credential_sha256": fingerprint(carol)}),
        _LineBefore(seq=0, prev="", at=at, event="key-destroyed", key="pkcs11:object=k",
                    operators=["alice", "carol"], ceremony="e" * 64, detail={}),
    ])  # fmt: skip
    write_by_hand(operators, {"alice": hash_secret(ALICE), "bob": hash_secret(BOB), "carol": carol})
    assert main(["keys", "verify-log", "--log", str(log)]) == 0
    capsys.readouterr()
    assert main(["keys", "verify-log", "--log", str(log), "--operators", str(operators)]) == 0
    out = capsys.readouterr().out
    assert "accounted for by the log" in out
    assert "not checked: alice, bob: approved ceremonies before any enrolment was logged" in out
    assert "not checked: 2 approved line(s) (lines 1-3) carry no approvers' fingerprints" in out
    # the hash a line did record is checked; a name no line knows is not excused
    ops = load_operators(operators)
    write_by_hand(operators, ops | {"carol": hash_secret(b"carol-secret-0003")})
    rc, out = verify_against(tmp_path, operators, capsys)
    assert rc == 1 and "PROBLEM carol: the operators file holds a credential no line" in out
    write_by_hand(operators, ops | {"mallory": hash_secret(b"mallory-secret-1")})
    rc, out = verify_against(tmp_path, operators, capsys)
    assert rc == 1 and "PROBLEM mallory: in the operators file, but no line of the log" in out
    # and a bootstrap is refused on it: ceremonies were approved under it
    write_by_hand(operators, {})
    assert main(enrol(tmp_path, operators, "mallory")) == 2
    assert "no bootstrap" in capsys.readouterr().err


def test_the_upgrade_path_records_every_operator_until_the_first_ceremony(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a log begun before enrolments were logged, the docs have each operator run
    --replace once. Carol, enrolled then but with no ceremony to her name, could do so only
    before anyone else: after alice's, her line was a problem (verify-log exit 1 for good)
    and her ceremonies refused. Now every operator no line enrols may record their
    credential with their own --replace until the first ceremony after the upgrade; after
    it, one written in by hand is refused."""
    log, operators = tmp_path / "oplog.jsonl", tmp_path / "operators.toml"
    at = "2026-01-05T01:00:00.000000+00:00"
    append_chained(log, [
        _LineBefore(seq=0, prev="", at=at, event="key-generated", key="pkcs11:object=k",
                    operators=["alice", "bob"], ceremony="c" * 64, detail={"bits": 2048}),
    ])  # fmt: skip
    secrets = {n: f"{n}-secret-00000".encode() for n in ("alice", "bob", "carol", "mallory")}
    write_by_hand(operators, {n: hash_secret(secrets[n]) for n in ("alice", "bob", "carol")})
    rc, out = verify_against(tmp_path, operators, capsys)
    assert rc == 1 and "PROBLEM carol: in the operators file, but no line of the log enrols " \
        "them (enrolled before enrolments were logged? add-operator --replace" in out  # fmt: skip

    def replace(name: str) -> int:
        current = secret_file(tmp_path, name, secrets[name])
        argv = enrol(tmp_path, operators, name, "--replace", "--current-secret", f"file:{current}")
        argv[argv.index("--secret") + 1] = f"file:{current}"  # the same secret typed again
        return main(argv)

    for name in ("alice", "carol", "bob"):
        assert replace(name) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["keys", "verify-log", "--log", str(log), "--operators", str(operators)]) == 0
    out = capsys.readouterr().out
    assert "accounted for by the log" in out
    assert "not checked: carol: no line enrols them before their own --replace at line 3" in out
    # the first ceremony after the upgrade closes the path
    assert main(enrol(tmp_path, operators, "dave", *approvals(tmp_path, "alice", "carol"))) == 0
    write_by_hand(
        operators, load_operators(operators) | {"mallory": hash_secret(secrets["mallory"])}
    )
    before = operators.read_bytes()
    assert replace("mallory") == 2
    assert "approved by mallory, whom no line before it enrols" in capsys.readouterr().err
    assert operators.read_bytes() == before


def test_ord_74_3_names_no_line_enrols_do_not_approve_on_an_old_log_or_a_new_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a log begun before enrolments were logged, every approver of a line written
    with fingerprints counted as "enrolled before enrolments were logged" until someone's
    first --replace: two names written into the operators file by hand approved a
    ceremony, exit 0, and verify-log listed them as not checked (exit 0); on a new,
    empty --log anyone in the file approved. Only the approvers of lines an older version
    wrote are excused now (and an operator's own --replace, the upgrade path)."""
    log, operators = tmp_path / "oplog.jsonl", tmp_path / "operators.toml"
    at = "2026-01-05T01:00:00.000000+00:00"
    append_chained(log, [
        _LineBefore(seq=0, prev="", at=at, event="key-generated", key="pkcs11:object=k",
                    operators=["alice", "bob"], ceremony="c" * 64, detail={"bits": 2048}),
    ])  # fmt: skip
    names = ("alice", "bob", "m1", "m2")
    for n in names:
        secret_file(tmp_path, n, f"{n}-secret-00000".encode())
    write_by_hand(operators, {n: hash_secret(f"{n}-secret-00000".encode()) for n in names})
    before = operators.read_bytes()
    assert main(enrol(tmp_path, operators, "dave", *approvals(tmp_path, "m1", "m2"))) == 2
    assert "approved by m1, whom no line before it enrols" in capsys.readouterr().err
    assert operators.read_bytes() == before
    rc, out = verify_against(tmp_path, operators, capsys)
    assert rc == 1 and "PROBLEM m1: in the operators file, but no line of the log" in out
    # the operators of the old lines still approve (not checked), on this log only
    assert main(enrol(tmp_path, operators, "dave", *approvals(tmp_path, "alice", "bob"))) == 0
    full = operators.read_bytes()
    write_by_hand(operators, {n: h for n, h in load_operators(operators).items() if n != "bob"})
    rc, out = verify_against(tmp_path, operators, capsys)
    assert rc == 1 and "not checked: 1 approved line(s) (lines 3-3) by operators" in out, out
    assert "PROBLEM bob: approved ceremonies before enrolments were logged, not in the " \
        "operators file (removed by hand)" in out  # fmt: skip
    operators.write_bytes(full)
    other = enrol(tmp_path, operators, "erin", *approvals(tmp_path, "alice", "bob"))
    other[other.index("--log") + 1] = str(tmp_path / "new.jsonl")
    assert main(other) == 2  # dave's enrolment named the log in the file: not this one
    assert "--new-log starts a log only at" in capsys.readouterr().err
    write_by_hand(operators, load_operators(operators))  # an older file, naming no log
    assert main(other) == 2
    assert "approved by alice, whom no line before it enrols" in capsys.readouterr().err


def test_ord_74_3_a_signing_session_line_naming_an_operator_excuses_no_one_on_an_old_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a log begun before enrolments were logged, the names of an approved line without
    fingerprints are excused ("enrolled before enrolments were logged"). A signing-session
    line naming "mallory", appended by hand after the recorded head (signing sessions may
    follow it), counted as such a line: mallory written into the file then approved with
    alice, exit 0. Only ceremony lines name approvers."""
    log, operators = tmp_path / "oplog.jsonl", tmp_path / "operators.toml"
    append_chained(log, [
        _LineBefore(seq=0, prev="", at="2026-01-05T01:00:00.000000+00:00",
                    event="key-generated", key="pkcs11:object=k", operators=["alice", "bob"],
                    ceremony="c" * 64, detail={"bits": 2048}),
    ])  # fmt: skip
    held = str(oplog.verify_oplog(log).anchor)
    oplog.record(log, "signing-session-started", key="pkcs11:object=k", operators=["mallory"])
    names = ("alice", "bob", "mallory")
    for n in names:
        secret_file(tmp_path, n, f"{n}-secret-00000".encode())
    write_by_hand(operators, {n: hash_secret(f"{n}-secret-00000".encode()) for n in names})
    before = operators.read_bytes()
    argv = enrol(tmp_path, operators, "dave", *approvals(tmp_path, "alice", "mallory"))
    assert main([*argv, "--anchor", held]) == 2
    assert "approved by mallory, whom no line before it enrols" in capsys.readouterr().err
    assert operators.read_bytes() == before


def test_ord_74_2_a_forgotten_secret_is_reset_by_two_other_operators(
    tmp_path: Path, operators: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A forgotten secret could only be reset by editing the operators file. Now two other
    enrolled operators approve a new one (--reset), logged as such with their fingerprints;
    the operator cannot approve their own reset, and nothing changes on a refusal."""
    log = tmp_path / "oplog.jsonl"
    new = secret_file(tmp_path, "alice-new", b"alice-secret-new1")
    reset = enrol(tmp_path, operators, "alice", "--reset")
    reset[reset.index("--secret") + 1] = f"file:{new}"
    refusals = [
        (approvals(tmp_path, "bob"), "needs 2 other enrolled operators; only 1 other is enrolled"),
    ]
    for extra, why in refusals:
        before = operators.read_bytes()
        assert main([*reset, *extra]) == 2
        assert why in capsys.readouterr().err and operators.read_bytes() == before
    assert main(enrol(tmp_path, operators, "carol", *approvals(tmp_path, "alice", "bob"))) == 0
    refusals = [
        ([], "0 approval(s) given"),
        (approvals(tmp_path, "bob"), "1 approval(s) given"),
        (approvals(tmp_path, "alice", "bob"), "alice cannot approve the reset of their own"),
        (["--current-secret", f"file:{tmp_path / 'alice.secret'}",
          *approvals(tmp_path, "bob", "carol")], "--current-secret is for --replace only"),
        ([*approvals(tmp_path, "bob"), "--approval", f"mallory:file:{tmp_path / 'carol.secret'}"],
         "'mallory' is not in the operators file"),
    ]  # fmt: skip
    for extra, why in refusals:
        before, lines = operators.read_bytes(), len(records(log))
        assert main([*reset, *extra]) == 2
        assert why in capsys.readouterr().err and operators.read_bytes() == before
        assert [r.event for r in records(log)[lines:]] == ["ceremony-refused"]
    with pytest.raises(SystemExit) as e:
        main([*reset, "--replace", *approvals(tmp_path, "bob", "carol")])
    assert e.value.code == 2
    before = load_operators(operators)
    assert main([*reset, *approvals(tmp_path, "bob", "carol")]) == 0
    assert "operator alice secret reset" in capsys.readouterr().out
    rec = records(log)[-1]
    assert (rec.event, rec.operators, rec.detail["authorised_by"], rec.detail["operator"]) == (
        "operator-secret-reset", ["bob", "carol"], "approvals", "alice"
    )  # fmt: skip
    assert rec.credentials == fingerprints(before, ["bob", "carol"])
    after = load_operators(operators)
    assert rec.detail["credential_sha256"] == fingerprint(after["alice"])
    assert {n: h for n, h in after.items() if n != "alice"} == {
        n: h for n, h in before.items() if n != "alice"
    }
    bob = Approval("bob", BOB)
    assert check_approvals(after, [Approval("alice", b"alice-secret-new1"), bob])
    with pytest.raises(ApprovalError, match="'alice': the secret does not match"):
        check_approvals(after, [Approval("alice", ALICE), bob])
    assert b"alice-secret" not in log.read_bytes()
    assert verify_against(tmp_path, operators, capsys) == (0, "accounted for by the log")


def head_of_line(log: Path, seq: int) -> str:
    """``SEQ:SHA256`` of line ``seq`` as the log holds it (what anyone who reads it can name)."""
    line = log.read_bytes().splitlines()[seq - 1]
    return f"{seq}:{hashlib.sha256(line).hexdigest()}"


def _cut(tmp_path: Path, operators: Path) -> None:
    """The tail cut off after alice's line, the file back to alice, mallory a "bootstrap"."""
    log = tmp_path / "oplog.jsonl"
    log.write_bytes(log.read_bytes().splitlines(keepends=True)[0])
    write_by_hand(operators, {"alice": load_operators(operators)["alice"]})
    assert main(enrol(tmp_path, operators, "mallory", "--anchor", head_of_line(log, 1))) == 0


def _replaced(tmp_path: Path, operators: Path) -> None:
    """A whole new log and file in their place: two bootstraps and an approved enrolment."""
    log = tmp_path / "oplog.jsonl"
    log.unlink()
    operators.unlink()
    assert main(enrol(tmp_path, operators, "mallory", "--new-log")) == 0
    for n, name in enumerate(("mallory2", "mallory3"), 1):
        extra = approvals(tmp_path, "mallory", "mallory2") if name == "mallory3" else []
        assert main(enrol(tmp_path, operators, name, "--anchor", head_of_line(log, n), *extra)) == 0


def _rewritten(tmp_path: Path, operators: Path) -> None:
    """The last line rewritten (carol's approvers), the chain recomputed: it holds."""
    log = tmp_path / "oplog.jsonl"
    lines = log.read_bytes().splitlines()
    log.write_bytes(b"\n".join(lines[:-1]) + b"\n")
    rec = msgspec.json.decode(lines[-1], type=oplog.OpRecord)
    append_chained(log, [msgspec.structs.replace(rec, detail={**rec.detail, "operator": "mal"})])


def _removed(tmp_path: Path, operators: Path) -> None:
    (tmp_path / "oplog.jsonl").unlink()


@pytest.mark.parametrize(
    ("attack", "why"),
    [
        (_cut, "the tail was cut off"),
        (_replaced, "the log was rewritten"),
        (_rewritten, "the log was rewritten"),
        (_removed, "no operation log here, but the ceremony record's head names its line 3"),
    ],
    ids=["tail-cut", "new-log-in-its-place", "last-line-rewritten", "removed"],
)
def test_ord_73_3_a_ceremony_refuses_a_log_that_does_not_extend_the_recorded_head(
    tmp_path: Path,
    operators: Path,
    attack: Callable[[Path, Path], None],
    why: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A log whose tail was cut off (and a new bootstrap after it), or a whole new log put in
    its place, was consistent in itself: the ceremonies after it ran, and only verify-log
    --anchor, if someone ran it, showed it. Now every ceremony is given the head written into
    the last ceremony record (--anchor) and refuses, changing nothing, a log that does not
    extend it."""
    log = tmp_path / "oplog.jsonl"
    assert main(enrol(tmp_path, operators, "carol", *approvals(tmp_path, "alice", "bob"))) == 0
    held = RECORD[log]  # what the operators wrote into the ceremony record: line 3
    attack(tmp_path, operators)
    capsys.readouterr()
    ok = approvals(tmp_path, "alice", "bob")
    new_ca = ["keys", "new-ca", "--key", "pkcs11:token=t;object=g9", "--family", "sign-card",
              "--generation", "9", "--out", str(tmp_path / "g9.pem"), "--log", str(log),
              "--operators", str(operators), "--anchor", held, *ok]  # fmt: skip
    # the first refusal's line may itself be line 3: then the second says "rewritten"
    held_not = (why, "the log was rewritten")
    for argv, whys in ((enrol(tmp_path, operators, "dave", "--anchor", held, *ok), (why,)),
                       (new_ca, held_not)):  # fmt: skip
        before = operators.read_bytes() if operators.exists() else None
        lines = log.read_bytes().splitlines() if log.exists() else None
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "refused, nothing done" in err, err
        assert any(w in err for w in whys), err
        assert (operators.read_bytes() if operators.exists() else None) == before
        assert not (tmp_path / "g9.pem").exists()
        if lines is None:  # a refusal never starts a log
            assert not log.exists() and "no operation log to record it" in err
        else:  # the refusal is the one line added
            assert log.read_bytes().splitlines()[:-1] == lines
            assert records(log)[-1].event == "ceremony-refused"


def test_a_new_log_is_started_only_explicitly_and_only_where_there_is_none(
    tmp_path: Path, operators: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log that is not there where one is expected is refused unless the first-log step
    is taken (--new-log), and that step is refused where a log exists."""
    log = tmp_path / "oplog.jsonl"
    before, lines = operators.read_bytes(), log.read_bytes()
    assert main(enrol(tmp_path, operators, "carol", "--new-log")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--new-log starts a log only where none is recorded" in err
    assert operators.read_bytes() == before and log.read_bytes().startswith(lines)
    assert [r.event for r in records(log)[2:]] == ["ceremony-refused"]
    for extra in ([], ["--new-log", "--anchor", RECORD[log]]):  # one of the two, always
        argv = enrol(tmp_path, operators, "carol", *approvals(tmp_path, "alice", "bob"), *extra)
        with pytest.raises(SystemExit) as e:
            cli_main(argv)
        assert e.value.code == 2
    with pytest.raises(SystemExit):
        cli_main(["keys", "retire", "--key", "pkcs11:token=t;object=k", "--cert", "c.pem",
                  "--no-pki", "--log", str(log), "--operators", str(operators), *approvals(tmp_path, "alice", "bob")])  # fmt: skip
    # where the log is expected but missing, even a bootstrap needs --new-log
    fresh, elsewhere = tmp_path / "fresh.toml", tmp_path / "elsewhere"
    argv = enrol(tmp_path, fresh, "zoe", "--anchor", RECORD[log])
    argv[argv.index("--log") + 1] = str(elsewhere / "oplog.jsonl")
    assert main(argv) == 2
    assert "no operation log here" in capsys.readouterr().err
    assert not fresh.exists() and not elsewhere.exists()
    # a log where only signing sessions (a responder started first) and refusals were
    # logged records no ceremony: it is begun with --new-log, as a missing one
    elsewhere.mkdir()
    oplog.record(elsewhere / "oplog.jsonl", "signing-session-started", key="pkcs11:token=t")
    argv = enrol(tmp_path, fresh, "zoe", "--approval", "x:env:NONE")
    argv[argv.index("--log") + 1] = str(elsewhere / "oplog.jsonl")
    assert main([*argv, "--new-log"]) == 2  # refused (and logged): the first is approved by no one
    assert records(elsewhere / "oplog.jsonl")[-1].event == "ceremony-refused"
    assert main([*argv[:-2], "--new-log"]) == 0
    assert records(elsewhere / "oplog.jsonl")[-1].event == "operator-enrolled"


def test_a_broken_log_is_set_aside_and_the_operators_go_on_in_a_new_one(
    tmp_path: Path, operators: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The documented way out of a broken log still works with the head required: the log is
    kept as evidence under another name, the first --replace starts the new one (--new-log),
    the others follow with the head each printed, and the next ceremony is approved."""
    log = tmp_path / "oplog.jsonl"
    assert main(enrol(tmp_path, operators, "carol", *approvals(tmp_path, "alice", "bob"))) == 0
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(lines[0] + lines[1].replace(b'"bob"', b'"eve"') + lines[2])
    ok = approvals(tmp_path, "alice", "bob")
    assert main(enrol(tmp_path, operators, "dave", *ok)) == 2
    assert "the chain is broken" in capsys.readouterr().err
    log.rename(tmp_path / "oplog-broken.jsonl")
    for n, name in enumerate(("alice", "bob", "carol")):
        current = ["--current-secret", f"file:{tmp_path / (name + '.secret')}"]
        held = ["--new-log"] if n == 0 else ["--anchor", RECORD[log]]
        assert main([*enrol(tmp_path, operators, name, "--replace", *current), *held]) == 0
    assert main(enrol(tmp_path, operators, "dave", *ok, "--anchor", RECORD[log])) == 0
    assert verify_against(tmp_path, operators, capsys)[0] == 0


def test_ord_74_3_two_operators_one_forgot_bootstrap_anew_in_a_new_log(
    tmp_path: Path, operators: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With two operators there is no reset (one person would decide another's credential);
    the documented way out, the old log and file set aside and a new bootstrap in a new log,
    works, and the old log cannot be continued from the new one's heads."""
    log = tmp_path / "oplog.jsonl"
    new_bob = secret_file(tmp_path, "bob-new", b"bob-secret-000003")
    reset = enrol(tmp_path, operators, "bob", "--reset", *approvals(tmp_path, "alice", "alice"))
    reset[reset.index("--secret") + 1] = f"file:{new_bob}"
    assert main(reset) == 2
    assert "only 1 other is enrolled" in capsys.readouterr().err
    old_head = RECORD.pop(log)
    log.rename(tmp_path / "oplog-until.jsonl")
    operators.rename(tmp_path / "operators-until.toml")
    assert main(enrol(tmp_path, operators, "alice", "--new-log")) == 0
    bob = enrol(tmp_path, operators, "bob")
    bob[bob.index("--secret") + 1] = f"file:{new_bob}"
    assert main(bob) == 0
    assert [r.detail["authorised_by"] for r in records(log)] == ["bootstrap", "bootstrap"]
    assert verify_against(tmp_path, operators, capsys) == (0, "accounted for by the log")
    ok = [*approvals(tmp_path, "alice"), "--approval", f"bob:file:{new_bob}"]
    assert main(enrol(tmp_path, operators, "carol", "--anchor", old_head, *ok)) == 2
    assert "not the log of the ceremony record" in capsys.readouterr().err
    assert main(enrol(tmp_path, operators, "carol", *ok)) == 0  # the new log's record


def test_ord_74_3_two_enrolments_at_once_cannot_both_pass_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """add-operator's check and its writes were not under one lock: two bootstrap enrolments
    started together both saw one operator enrolled, both passed as a bootstrap, and one
    person had two operators no one approved (or one write lost the other). Now the second
    waits for the first's lock (FILE.lock, 0600), then finds the first one's line after the
    head it was given, and is refused."""
    import multiprocessing

    from crlbuilder import ceremony

    operators, log = tmp_path / "operators.toml", tmp_path / "oplog.jsonl"
    assert main(enrol(tmp_path, operators, "alice")) == 0
    held = RECORD[log]
    real = ceremony.add_operator

    def slow(*a: object, **kw: object) -> None:  # the window between the check and the write
        time.sleep(0.5)
        real(*a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(ceremony, "add_operator", slow)
    argvs = [enrol(tmp_path, operators, n, "--anchor", held) for n in ("bob", "mallory")]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=lambda a=a: sys.exit(cli_main(a))) for a in argvs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert sorted(p.exitcode for p in procs) == [0, 2]
    enrolled = [r.detail["operator"] for r in records(log) if r.event == "operator-enrolled"]
    assert len(enrolled) == 2 and sorted(load_operators(operators)) == sorted(enrolled)
    assert records(log)[-1].event == "ceremony-refused"
    # the second waited, then found the first one's line after the head it was given
    assert "line 2 (operator-enrolled) after the head given" in str(
        records(log)[-1].detail["reason"]
    )
    lock = tmp_path / "operators.toml.lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600


def test_ord_74_3_an_enrolment_written_into_the_log_after_the_recorded_head_is_refused(
    tmp_path: Path, operators: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One operator (alice) with the account's files appended an enrolment of "mallory",
    approved by alice and bob (their fingerprints are the SHA-256 of the readable operators
    file's hashes), after the head in the record, and wrote mallory's hash into the file: the
    log then accounted for mallory, and alice alone, as alice and mallory, passed every check,
    given the last recorded head. A ceremony line after that head is one the record does not
    hold: refused. Signing sessions and refusals after it are not ceremonies."""
    log = tmp_path / "oplog.jsonl"
    held = RECORD[log]  # the fixture's second bootstrap: line 2
    oplog.record(log, "signing-session-started", key="pkcs11:token=t;object=k")
    oplog.record(log, "ceremony-refused", detail={"ceremony": "new-ca", "reason": "x"})
    stored = hash_secret(b"mallory-secret-0")
    oplog.record(log, "operator-enrolled", key=str(operators), operators=["alice", "bob"],
                 credentials=fingerprints(load_operators(operators), ["alice", "bob"]),
                 ceremony="0" * 64,
                 detail={"operator": "mallory", "authorised_by": "approvals",
                         "credential_sha256": fingerprint(stored)})  # fmt: skip
    add_operator(operators, "mallory", stored)
    secret_file(tmp_path, "mallory", b"mallory-secret-0")
    before, lines = operators.read_bytes(), len(records(log))
    argv = enrol(tmp_path, operators, "dave", *approvals(tmp_path, "alice", "mallory"))
    assert main([*argv, "--anchor", held]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 5 (operator-enrolled) after the head given" in err
    assert operators.read_bytes() == before and len(records(log)) == lines + 1
    assert records(log)[-1].event == "ceremony-refused"


def test_a_stale_head_is_refused_the_last_one_passes(
    tmp_path: Path, operators: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An older head from the record still "extended" the log, so a tail cut after it (back to
    it) went unseen: the head given must be the last ceremony's."""
    log = tmp_path / "oplog.jsonl"
    stale = RECORD[log]
    assert main(enrol(tmp_path, operators, "carol", *approvals(tmp_path, "alice", "bob"))) == 0
    ok = approvals(tmp_path, "alice", "bob")
    assert main([*enrol(tmp_path, operators, "dave", *ok), "--anchor", stale]) == 2
    assert "line 3 (operator-enrolled) after the head given (--anchor 2:" in capsys.readouterr().err
    assert main([*enrol(tmp_path, operators, "dave", *ok), "--anchor", RECORD[log]]) == 0


def test_a_ceremony_that_failed_part_way_prints_the_head_the_next_one_is_given(
    tmp_path: Path,
    operators: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A failed ceremony's lines (here an enrolment and its ceremony-failed) follow the head
    in the record: it prints the head to record, and the retry given it passes."""
    from crlbuilder import ceremony

    log = tmp_path / "oplog.jsonl"
    held = RECORD[log]

    def full_disk(*a: object, **kw: object) -> None:
        raise OSError(28, "No space left on device")

    ok = approvals(tmp_path, "alice", "bob")
    with monkeypatch.context() as m:
        m.setattr(ceremony, "add_operator", full_disk)
        assert cli_main([*enrol(tmp_path, operators, "carol", *ok), "--anchor", held]) == 2
    err = capsys.readouterr().err
    printed = err.rsplit(" head ", 1)[1].split(":", 2)
    assert records(log)[-1].event == "ceremony-failed"
    assert ":".join(printed[:2]) == str(oplog.verify_oplog(log).anchor)
    assert cli_main([*enrol(tmp_path, operators, "carol", *ok), "--anchor", held]) == 2
    assert "after the head given" in capsys.readouterr().err
    head = ":".join(printed[:2])
    assert cli_main([*enrol(tmp_path, operators, "carol", *ok), "--anchor", head]) == 0


@pytest.mark.integration
def test_two_ceremonies_at_once_on_one_log_the_second_waits_and_is_refused(
    tmp_path: Path, operators: Path, token: SoftHsmToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two new-ca ceremonies started together with the same head both read the log before
    either wrote, and both made a key. Now every ceremony holds the operators file's lock:
    the second waits, then finds the first one's lines after the head it was given."""
    import multiprocessing

    from crlbuilder import ceremony

    log = tmp_path / "oplog.jsonl"
    held = RECORD[log]
    real = ceremony._generate

    def slow(*a: Any, **kw: Any) -> Any:  # the window between the check and the key
        time.sleep(0.5)
        return real(*a, **kw)

    monkeypatch.setattr(ceremony, "_generate", slow)
    argvs = [
        ["keys", "new-ca", "--key", token.uri(f"sign-card-g{g}"), "--family", "sign-card",
         "--generation", str(g), "--out", str(tmp_path / f"g{g}.pem"), "--log", str(log),
         "--anchor", held, "--operators", str(operators), *approvals(tmp_path, "alice", "bob")]
        for g in (5, 6)
    ]  # fmt: skip
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=lambda a=a: sys.exit(cli_main(a))) for a in argvs]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert sorted(proc.exitcode for proc in procs) == [0, 2]
    assert [r.event for r in after_enrolments(log)].count("key-generated") == 1
    assert sum((tmp_path / f"g{g}.pem").exists() for g in (5, 6)) == 1
    assert "after the head given" in str(records(log)[-1].detail["reason"])


_INTERRUPTED = """
import os, signal, sys
from crlbuilder.cli import main
from crlbuilder.keys import pkcs11 as p11
real = p11.generate_rsa_key
def interrupted(*a, **kw):  # Ctrl-C while the token makes the key
    public = real(*a, **kw)
    os.kill(os.getpid(), signal.SIGINT)
    return public
p11.generate_rsa_key = interrupted
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.integration
def test_ord_73_3_a_ceremony_is_not_interrupted_half_way(
    tmp_path: Path, operators: Path, token: SoftHsmToken
) -> None:
    """Ctrl-C during new-ca's key generation raised KeyboardInterrupt as the token returned:
    the key stayed in the token with no line in the log, nothing undone, no head printed, and
    the retry given the recorded head passed. Now the interrupt waits for the ceremony's end."""
    log, out = tmp_path / "oplog.jsonl", tmp_path / "ca.pem"
    argv = ["keys", "new-ca", "--key", token.uri("sign-card-g4"), "--family", "sign-card",
            "--generation", "4", "--out", str(out), "--log", str(log), "--anchor", RECORD[log],
            "--operators", str(operators), *approvals(tmp_path, "alice", "bob")]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED, *argv],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "SIGINT held until the ceremony ended" in done.stderr
    assert [r.event for r in after_enrolments(log) if "session" not in r.event] == [
        "key-generated",
        "certificate-issued",
        "token-inventory",
    ]
    assert out.exists() and "done; operation log" in done.stdout


def test_a_mistyped_head_is_refused_as_one_not_as_a_rewritten_log(
    tmp_path: Path, operators: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A head copied with one digit wrong was refused as "the operation log is broken ...: the
    log was rewritten": a careless pair would set a sound log aside (the broken-log
    procedure). The refusal now says to check the head against the record first."""
    log = tmp_path / "oplog.jsonl"
    seq, _, head = RECORD[log].partition(":")
    typo = f"{seq}:{head[:-1]}{'0' if head[-1] != '0' else '1'}"
    before = operators.read_bytes()
    argv = enrol(tmp_path, operators, "carol", *approvals(tmp_path, "alice", "bob"))
    assert main([*argv, "--anchor", typo]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not hold the head given" in err
    assert "a digit copied wrong?" in err and "is broken" not in err
    assert operators.read_bytes() == before
    assert main([*argv, "--anchor", RECORD[log]]) == 0


def test_a_done_ceremony_whose_output_cannot_be_written_stays_done(
    tmp_path: Path, operators: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The terminal closed (a hangup is held until the ceremony ends) or stdout a closed pipe:
    the final print's OSError went to the failure path, which logged ceremony-failed after
    the enrolment was written (and would have undone a new-ca's key and certificate)."""

    class Gone(io.StringIO):
        def write(self, _s: str) -> int:
            raise OSError(5, "Input/output error")

    log = tmp_path / "oplog.jsonl"
    monkeypatch.setattr(sys, "stdout", Gone())
    argv = enrol(tmp_path, operators, "carol", *approvals(tmp_path, "alice", "bob"))
    assert cli_main([*argv, "--anchor", RECORD[log]]) == 0
    assert "carol" in load_operators(operators)
    assert records(log)[-1].event == "operator-enrolled"


def write_chain(log: Path) -> None:
    for i in range(4):
        oplog.record(log, "key-generated", key=f"pkcs11:token=t;object=k{i}", operators=["a", "b"])


@pytest.mark.parametrize(
    "tamper",
    [
        lambda ls: [ls[0], ls[1].replace(b"object=k1", b"object=kX"), ls[2], ls[3]],
        lambda ls: [ls[0], ls[2], ls[3]],
        lambda ls: [ls[0], ls[2], ls[1], ls[3]],
    ],
    ids=["edit", "delete", "reorder"],
)
def test_ord_73_3_verify_log_detects_tampering(
    tmp_path: Path, tamper: object, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "ops.jsonl"
    write_chain(log)
    assert main(["keys", "verify-log", "--log", str(log)]) == 0
    assert "4 records, chain intact" in capsys.readouterr().out
    ls = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(tamper(ls)))  # type: ignore[operator]
    assert main(["keys", "verify-log", "--log", str(log)]) == 1
    assert "chain is broken" in capsys.readouterr().out


def test_ord_73_3_verify_log_checks_the_tail_against_the_recorded_head(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "ops.jsonl"
    write_chain(log)
    anchor = str(oplog.verify_oplog(log).anchor)
    log.write_bytes(b"".join(log.read_bytes().splitlines(keepends=True)[:3]))
    assert main(["keys", "verify-log", "--log", str(log)]) == 0  # the chain alone holds
    assert main(["keys", "verify-log", "--log", str(log), "--anchor", anchor]) == 1
    assert "cut off" in capsys.readouterr().out


# --- on a SoftHSM2 token ---------------------------------------------------------------


@pytest.fixture
def token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SoftHsmToken]:
    t = make_token(tmp_path / "hsm", monkeypatch)
    yield t
    t.close()


def crl_with(signer_key: str, cert: Path) -> bytes:
    signer = load_signer(signer_key, cert)
    now = datetime.now(UTC).replace(microsecond=0)
    return encode_crl(
        issuer=signer.certificate,
        signer=signer,
        number=1,
        this_update=now,
        next_update=now + timedelta(days=1),
        entries=[(0x1234, int(now.timestamp()) - 60, 1)],
    )


@pytest.mark.integration
def test_generate_issue_sign_a_crl_retire_on_softhsm(
    tmp_path: Path, operators: Path, token: SoftHsmToken
) -> None:
    log = tmp_path / "oplog.jsonl"  # where the operators were enrolled
    common = [
        "--log",
        str(log),
        "--operators",
        str(operators),
        *approvals(tmp_path, "alice", "bob"),
    ]
    ca_key, ca_cert = token.uri("sign-card-g3"), tmp_path / "ca" / "sign-card-g3.pem"
    assert main(["keys", "new-ca", "--key", ca_key, "--family", "sign-card",
                 "--generation", "3", "--out", str(ca_cert), *common]) == 0  # fmt: skip
    ocsp_key, ocsp_cert = token.uri("sign-card-g3-ocsp"), tmp_path / "ocsp" / "sign-card-g3.pem"
    assert main(["keys", "new-ocsp", "--key", ocsp_key, "--ca-key", ca_key,
                 "--ca-cert", str(ca_cert), "--out", str(ocsp_cert), *common]) == 0  # fmt: skip
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    assert ca.subject.rfc4514_string() == "CN=JPKI sign-card CA G3,O=jpki-va demo,C=JP"
    ocsp = x509.load_pem_x509_certificate(ocsp_cert.read_bytes())
    ocsp.verify_directly_issued_by(ca)
    assert x509.OCSPNoCheck() in [e.value for e in ocsp.extensions]

    # use: a CRL signed in the token verifies with openssl
    crl = tmp_path / "g3.crl"
    crl.write_bytes(crl_with(ca_key, ca_cert))
    p11.close_all()  # this process's signing session ends (its count goes to the log)
    res = subprocess.run(
        ["openssl", "crl", "-inform", "DER", "-in", str(crl), "-noout", "-CAfile", str(ca_cert)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0 and "verify OK" in res.stderr + res.stdout

    # retire: the key is gone from the token, its certificate kept
    assert main(["keys", "retire", "--key", ca_key, "--cert", str(ca_cert), "--no-pki",
                 *common]) == 0  # fmt: skip
    assert ca_cert.exists()
    with pytest.raises(SignerError):
        load_signer(ca_key, ca_cert)

    recs = after_enrolments(log)
    assert [r.event for r in recs] == [
        "key-generated",
        "signing-session-started",  # the new CA key signs its own certificate
        "certificate-issued",
        "signing-session-ended",
        "token-inventory",  # the token's keys at the ceremony's end
        "key-generated",
        "signing-session-started",  # the CA key signs the OCSP signer's certificate
        "certificate-issued",
        "signing-session-ended",
        "token-inventory",
        "signing-session-started",  # the CRL
        "signing-session-ended",
        "key-destroyed",
        "token-inventory",
    ]
    ceremonies = [r for r in recs if not r.event.startswith("signing-session")]
    assert all(r.operators == ["alice", "bob"] and len(r.ceremony) == 64 for r in ceremonies)
    # each line says which credentials approved it (Ord §74(2)), never a secret
    approved_with = fingerprints(load_operators(operators), ["alice", "bob"])
    assert all(r.credentials == approved_with for r in ceremonies)
    assert [r.detail["signatures"] for r in recs if r.event == "signing-session-ended"] == [1, 1, 1]
    assert recs[-2].detail["cert_sha256"] and recs[-2].key == ca_key.split("?")[0]
    assert "pin" not in log.read_text().replace("pkcs11:", "")
    assert oplog.verify_oplog(log).problems == []


def respelt(uri: str, *, typed: bool = True) -> str:
    """Another spelling of a key's PKCS#11 URI naming the same key: attributes reordered, the
    label percent-encoded, ``type=private`` kept or left out."""
    path, _, query = uri.partition("?")
    attrs = dict(a.split("=", 1) for a in path.removeprefix("pkcs11:").split(";"))
    label = "".join(f"%{b:02x}" for b in attrs["object"].encode())
    typ = "type=private;" if typed else ""
    return f"pkcs11:{typ}object={label};token={attrs['token']}?{query}"


@pytest.mark.integration
def test_rollover_adds_the_next_generation_to_the_manifest_atomically(
    tmp_path: Path, operators: Path, token: SoftHsmToken, capsys: pytest.CaptureFixture[str]
) -> None:
    from crlbuilder.demo.pki import init_pki

    pki = init_pki(tmp_path / "pki")
    log = tmp_path / "oplog.jsonl"  # where the operators were enrolled
    ca_key, ocsp_key = token.uri("auth-card-g2"), token.uri("auth-card-g2-ocsp")
    argv = ["keys", "rollover", "--pki", pki.directory, "--family", "auth-card",
            "--ca-key", ca_key, "--ocsp-key", ocsp_key,
            "--log", str(log), "--operators", str(operators)]  # fmt: skip
    before = (Path(pki.directory) / "pki.json").read_bytes()
    assert main([*argv, *approvals(tmp_path, "bob")]) == 2  # one approval: nothing changes
    assert (Path(pki.directory) / "pki.json").read_bytes() == before
    assert main([*argv, *approvals(tmp_path, "bob", "alice")]) == 0
    m = load_manifest(pki.directory)
    new = m.issuer("auth-card-g2")
    assert (new.key, new.ocsp_key, new.generation, new.live) == (ca_key, ocsp_key, 2, True)
    assert m.issuer("auth-card-g1").live
    ca = load_signer(new.key, m.path(new.cert))
    ocsp = load_signer(new.ocsp_key, m.path(new.ocsp_cert))
    ocsp.certificate.verify_directly_issued_by(ca.certificate)
    ev = [r.event for r in after_enrolments(log) if not r.event.startswith("signing-session")]
    assert ev == ["ceremony-refused", "key-generated", "certificate-issued", "key-generated",
                  "certificate-issued", "rollover", "token-inventory"]  # fmt: skip
    rollover = [r for r in after_enrolments(log) if r.event == "rollover"]
    assert (
        rollover[0].operators == ["bob", "alice"] and rollover[0].detail["issuer"] == "auth-card-g2"
    )
    # the manifest still signs with the new key: retiring it is refused, the key stays
    retire = ["keys", "retire", "--key", ca_key, "--cert", str(m.path(new.cert)),
              "--pki", pki.directory, "--log", str(log), "--operators", str(operators)]  # fmt: skip
    assert main([*retire, *approvals(tmp_path, "alice", "bob")]) == 2
    assert load_signer(ca_key, m.path(new.cert)).certificate == ca.certificate
    # nor under another spelling of its URI (attributes reordered, the label percent-encoded,
    # type=private added): the manifest's key is found by token and label as parsed, and by
    # its certificate's public key; the OCSP signer's the same
    at = retire.index(ca_key)
    assert main([*retire[:at], respelt(ca_key), *retire[at + 1 :],
                 *approvals(tmp_path, "alice", "bob")]) == 2  # fmt: skip
    assert "auth-card-g2 in the manifest still signs with this key" in capsys.readouterr().err
    ocsp_retire = ["keys", "retire", "--key", respelt(ocsp_key, typed=False), "--cert", str(m.path(new.ocsp_cert)), "--pki", pki.directory, "--log", str(log),
                   "--operators", str(operators)]  # fmt: skip
    assert main([*ocsp_retire, *approvals(tmp_path, "alice", "bob")]) == 2
    assert "auth-card-g2's OCSP signer in the manifest still signs" in capsys.readouterr().err
    assert load_signer(ca_key, m.path(new.cert)).certificate == ca.certificate
    assert load_signer(ocsp_key, m.path(new.ocsp_cert)).certificate == ocsp.certificate
    # and a retire names the manifest it is held against, or says there is none (--no-pki)
    no_pki = [a for a in retire if a not in ("--pki", pki.directory)]
    with pytest.raises(SystemExit) as e:
        main([*no_pki, *approvals(tmp_path, "alice", "bob")])
    assert e.value.code == 2
    assert "one of the arguments --pki --no-pki is required" in capsys.readouterr().err
    assert [r.event for r in after_enrolments(log)][-1] == "token-inventory"  # nothing logged
    pub = ca.certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert pub not in log.read_bytes()


@pytest.mark.integration
def test_a_rollover_refused_half_way_makes_no_key_and_no_certificate(
    tmp_path: Path, operators: Path, token: SoftHsmToken
) -> None:
    """The OCSP key's label already used in the token: refused before the CA key is made (it
    made the CA key and wrote its certificate, then refused, and every later attempt was
    refused for that certificate); one key named twice is refused before the approvals."""
    from crlbuilder.demo.pki import init_pki

    pki = init_pki(tmp_path / "pki")
    log = tmp_path / "oplog.jsonl"  # where the operators were enrolled
    token.add_key("used-label")
    ca_key = token.uri("auth-card-g2")
    base = ["keys", "rollover", "--pki", pki.directory, "--family", "auth-card",
            "--ca-key", ca_key, "--log", str(log), "--operators", str(operators),
            *approvals(tmp_path, "bob", "alice")]  # fmt: skip
    before = (Path(pki.directory) / "pki.json").read_bytes()
    assert main([*base, "--ocsp-key", ca_key]) == 2
    assert main([*base, "--ocsp-key", respelt(ca_key, typed=False)]) == 2  # the same key
    assert main([*base, "--ocsp-key", token.uri("used-label")]) == 2
    assert (Path(pki.directory) / "pki.json").read_bytes() == before
    assert not pki.path("ca/auth-card-g2.pem").exists()
    p11.refuse_used_label(ca_key)  # no CA key was made
    assert [r.event for r in after_enrolments(log)] == ["ceremony-failed"]
    assert main([*base, "--ocsp-key", token.uri("auth-card-g2-ocsp")]) == 0


@pytest.mark.integration
def test_ord_73_3_a_signing_session_is_two_lines_with_its_count_not_one_per_signature(
    tmp_path: Path, token: SoftHsmToken
) -> None:
    ref, cert = token.add_key("sign-card-g1-ocsp")
    log = tmp_path / "ops.jsonl"
    oplog.configure(log)
    signer = load_signer(ref, cert)
    for n in range(5):
        signer.sign(b"answer %d" % n)
    p11.close_all()
    recs = records(log)
    assert [r.event for r in recs] == ["signing-session-started", "signing-session-ended"]
    assert recs[1].detail == {"signatures": 5} and recs[0].pid == recs[1].pid == os.getpid()
    # a log that cannot be written: nothing is signed (tryLater for the responder)
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    oplog.configure(blocked)
    with pytest.raises(p11.TokenUnavailable, match="operation log"):
        load_signer(ref, cert).sign(b"answer")


@pytest.mark.integration
def test_an_approved_ceremony_on_a_token_that_cannot_be_listed_is_refused(
    tmp_path: Path, operators: Path, token: SoftHsmToken
) -> None:
    """A token the ceremony cannot reach failed after the approval (ceremony-failed); its keys
    are now listed before anything is done (the inventory), so it is refused instead."""
    log = tmp_path / "oplog.jsonl"  # where the operators were enrolled
    out = tmp_path / "ca.pem"
    key = token.uri("sign-card-g3", token="no-such-token")
    argv = ["keys", "new-ca", "--key", key, "--family", "sign-card", "--generation", "3",
            "--out", str(out), "--log", str(log), "--operators", str(operators)]  # fmt: skip
    assert main([*argv, *approvals(tmp_path, "alice", "bob")]) == 2
    [rec] = after_enrolments(log)
    assert rec.event == "ceremony-refused" and rec.operators == ["alice", "bob"]
    assert "the keys of token 'no-such-token' cannot be listed" in str(rec.detail["reason"])
    assert not out.exists()


def test_the_log_names_a_key_without_its_pin_source_or_a_pin_value() -> None:
    assert (
        oplog.key_name("pkcs11:token=t;object=k;pin-value=1234;type=private?pin-source=env:P")
        == "pkcs11:token=t;object=k;type=private"
    )
    assert oplog.key_name("/etc/jpki-va/ca-keys/g1.key") == "/etc/jpki-va/ca-keys/g1.key"


def test_a_refused_ceremony_logs_no_pin_written_in_the_key_reference(
    tmp_path: Path, operators: Path
) -> None:
    """A PIN put in the key reference under a name that is not ``pin-value`` (``pin=``), or
    with no name: the ceremony refused (one approval) wrote its line with the reference as
    given, PIN and all, into the operation log, which keeps every line for good. Only the
    attributes that hold no secret keep their values there now."""
    log = tmp_path / "oplog.jsonl"
    pin = "7301-typed-pin"
    refs = [
        f"pkcs11:token=none;object=ca;pin={pin};type=private?pin-source=env:P",
        f"pkcs11:{pin};token=none;object=ca?pin-source=env:P",
    ]
    for key in refs:
        argv = ["keys", "new-ca", "--key", key, "--family", "sign-card", "--generation", "3",
                "--out", str(tmp_path / "ca.pem"), "--log", str(log), "--operators",
                str(operators), *approvals(tmp_path, "alice")]  # fmt: skip
        assert main(argv) == 2
    recs = [r for r in after_enrolments(log) if r.event == "ceremony-refused"]
    assert [r.key for r in recs] == [
        "pkcs11:token=none;object=ca;pin=<redacted>;type=private",
        "pkcs11:<redacted>;token=none;object=ca",
    ]
    assert pin not in log.read_text()
    assert oplog.verify_oplog(log).problems == []


_pool_signer: list[object] = []


def _pool_init(ref: str, cert: str) -> None:
    _pool_signer.append(load_signer(ref, cert))


def _pool_sign(n: int) -> int:
    signer = _pool_signer[0]
    assert isinstance(signer, p11.Pkcs11Signer)
    for i in range(n):
        signer.sign(b"presign %d" % i)
    return os.getpid()


@pytest.mark.integration
def test_ord_73_3_a_signing_process_ends_its_session_with_its_count_as_it_exits(
    tmp_path: Path, token: SoftHsmToken
) -> None:
    """The builder's signing pool: each worker's session is logged by the worker itself."""
    import multiprocessing

    ref, cert = token.add_key("presign")
    log = tmp_path / "ops.jsonl"
    oplog.configure(log)
    p11.close_all()  # the child opens its own session after fork
    with multiprocessing.get_context("fork").Pool(1, _pool_init, (ref, str(cert))) as pool:
        pid = pool.apply(_pool_sign, (3,))
        pool.close()
        pool.join()
    recs = records(log)
    assert [(r.event, r.pid) for r in recs] == [
        ("signing-session-started", pid),
        ("signing-session-ended", pid),
    ]
    assert recs[1].detail == {"signatures": 3}


@pytest.mark.integration
def test_new_ca_into_an_unwritable_place_makes_no_key(
    tmp_path: Path, operators: Path, token: SoftHsmToken, capsys: pytest.CaptureFixture[str]
) -> None:
    """The key was generated (and logged) before the certificate was written: an --out that
    cannot be written left a key in the token that no certificate names."""
    log = tmp_path / "oplog.jsonl"  # where the operators were enrolled
    (tmp_path / "ca").write_text("a file, not a directory\n")
    ca_key = token.uri("sign-card-g3")
    argv = ["keys", "new-ca", "--key", ca_key, "--family", "sign-card", "--generation", "3",
            "--out", str(tmp_path / "ca" / "g3" / "ca.pem"), "--log", str(log),
            "--operators", str(operators), *approvals(tmp_path, "alice", "bob")]  # fmt: skip
    assert main(argv) == 2
    assert "is not a directory" in capsys.readouterr().err
    p11.refuse_used_label(ca_key)  # no key was made
    assert not log.exists() or "key-generated" not in log.read_text()


@pytest.mark.integration
@pytest.mark.parametrize("ceremony", ["new-ca", "rollover"])
def test_a_certificate_write_that_fails_takes_back_the_keys_and_files_it_made(
    tmp_path: Path,
    operators: Path,
    token: SoftHsmToken,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    ceremony: str,
) -> None:
    """A certificate write refused after the key was made (a full disk) left the key in the
    token, and (rollover) the CA's key and certificate: every retry was then refused."""
    from crlbuilder.demo.pki import init_pki

    log = tmp_path / "oplog.jsonl"  # where the operators were enrolled
    common = ["--log", str(log), "--operators", str(operators),
              *approvals(tmp_path, "alice", "bob")]  # fmt: skip
    ca_key, ocsp_key = token.uri("auth-card-g2"), token.uri("auth-card-g2-ocsp")
    if ceremony == "new-ca":
        out = tmp_path / "new" / "ca.pem"
        argv = ["keys", "new-ca", "--key", ca_key, "--family", "auth-card", "--generation",
                "2", "--out", str(out), *common]  # fmt: skip
        fail_at, keys = 1, [ca_key]
    else:
        pki = init_pki(tmp_path / "pki")
        out = pki.path("ca/auth-card-g2.pem")
        argv = ["keys", "rollover", "--pki", pki.directory, "--family", "auth-card",
                "--ca-key", ca_key, "--ocsp-key", ocsp_key, *common]  # fmt: skip
        fail_at, keys = 2, [ca_key, ocsp_key]  # the OCSP signer's certificate
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p != log)
    real_link, calls = os.link, []

    def link(src: str | Path, dst: str | Path, **kw: object) -> None:
        calls.append(dst)
        if len(calls) == fail_at:
            raise OSError(28, "No space left on device")
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link)
    assert main(argv) == 2
    assert "No space left on device" in capsys.readouterr().err
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p != log)
    assert after == before  # no certificate, directory or temporary file left
    for key in keys:
        p11.refuse_used_label(key)  # taken out of the token
    events = [r.event for r in records(log) if not r.event.startswith("signing-session")]
    assert events[-1] == "ceremony-failed" and events.count("key-destroyed") == len(keys)
    assert events.count("key-generated") == len(keys)
    assert oplog.verify_oplog(log).problems == []
    monkeypatch.undo()
    assert main(argv) == 0 and out.exists()


# --- the successor certificate (Act §14, §16-12, §33, §35-12: 発行者署名符号の漏えい等) ------


def without_successor(pki: Path, issuer_id: str) -> None:
    """The demo PKI names a successor for every generation but a family's last: take it
    back (manifest entry and file), as a PKI made before any compromise planning is."""
    m = load_manifest(pki)
    rel = m.issuer(issuer_id).successor_cert
    issuers = [
        msgspec.structs.replace(i, successor="", successor_cert="") if i.id == issuer_id else i
        for i in m.issuers
    ]
    dump_manifest(msgspec.structs.replace(m, issuers=issuers), pki)
    m.path(rel).unlink()


def successor_argv(pki: Path, log: Path, operators: Path, issuer: str, succ: str) -> list[str]:
    return ["keys", "successor", "--pki", str(pki), "--issuer", issuer, "--successor", succ,
            "--log", str(log), "--operators", str(operators)]  # fmt: skip


def openssl_crl_verifies(crl: Path, ca: Path) -> bool:
    res = subprocess.run(
        ["openssl", "crl", "-inform", "DER", "-in", str(crl), "-noout", "-CAfile", str(ca)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return res.returncode == 0 and "verify OK" in res.stderr + res.stdout


def check_successor_profile(m: Manifest, issuer_id: str, successor_id: str) -> x509.Certificate:
    """The certificate the manifest names: the generation's CA name, the successor's CA key,
    issued and signed by the successor CA, cRLSign only."""
    i, s = m.issuer(issuer_id), m.issuer(successor_id)
    assert (i.successor, i.successor_cert) == (successor_id, f"ca/{issuer_id}-successor.pem")
    cert = x509.load_pem_x509_certificate(m.path(i.successor_cert).read_bytes())
    own = x509.load_pem_x509_certificate(m.path(i.cert).read_bytes())
    succ_ca = x509.load_pem_x509_certificate(m.path(s.cert).read_bytes())
    assert cert.subject.public_bytes() == own.subject.public_bytes()
    assert cert.issuer == succ_ca.subject and cert.public_key() == succ_ca.public_key()
    cert.verify_directly_issued_by(succ_ca)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.crl_sign and not ku.value.key_cert_sign
    assert not ku.value.digital_signature
    return cert


@pytest.mark.integration
def test_act_14_successor_ceremony_on_softhsm_signs_the_generations_crls(
    tmp_path: Path, operators: Path, token: SoftHsmToken
) -> None:
    """auth-card-g1 has no successor; a rollover makes auth-card-g2 in the token, then the
    successor ceremony certifies auth-card-g2's token key under auth-card-g1's name, and a
    CRL of auth-card-g1 signed as after its compromise verifies with that certificate."""
    from crlbuilder.demo.pki import init_pki

    pki = Path(init_pki(tmp_path / "pki").directory)
    log = tmp_path / "oplog.jsonl"  # where the operators were enrolled
    both = approvals(tmp_path, "alice", "bob")
    ca_key, ocsp_key = token.uri("auth-card-g2"), token.uri("auth-card-g2-ocsp")
    assert main(["keys", "rollover", "--pki", str(pki), "--family", "auth-card", "--ca-key",
                 ca_key, "--ocsp-key", ocsp_key, "--log", str(log), "--operators",
                 str(operators), *both]) == 0  # fmt: skip
    n = len(records(log))
    argv = successor_argv(pki, log, operators, "auth-card-g1", "auth-card-g2")
    assert main([*argv, *both]) == 0
    m = load_manifest(pki)
    check_successor_profile(m, "auth-card-g1", "auth-card-g2")
    new = records(log)[n:]
    assert [r.event for r in new] == [
        "signing-session-started",  # the successor's CA key, in the token, signs it
        "certificate-issued",
        "successor-named",
        "signing-session-ended",  # with the ceremony (its count: one signature)
        "token-inventory",
    ]
    assert new[-2].detail["signatures"] == 1
    named = new[-3]
    assert named.operators == ["alice", "bob"] and named.key == ca_key.split("?")[0]
    assert named.detail["issuer"] == "auth-card-g1" and named.detail["successor"] == "auth-card-g2"
    assert named.ceremony == new[1].ceremony and len(named.ceremony) == 64
    assert oplog.verify_oplog(log).problems == []

    # the publisher's signer for the compromised generation: the token key, that certificate
    signing = crl_signing(m, m.issuer("auth-card-g1"), compromised=True)
    assert signing is not None
    cert, signer = signing
    now = datetime.now(UTC).replace(microsecond=0)
    crl = tmp_path / "auth-card-g1.crl"
    crl.write_bytes(encode_crl(issuer=cert, signer=signer, number=7, this_update=now,
                               next_update=now + timedelta(days=1),
                               entries=[(0x2001, int(now.timestamp()) - 60, 2)]))  # fmt: skip
    p11.close_all()
    g1 = m.issuer("auth-card-g1")
    assert openssl_crl_verifies(crl, m.path(g1.successor_cert))
    assert not openssl_crl_verifies(crl, m.path(g1.cert))


@pytest.mark.integration
def test_act_14_successor_ceremony_with_pem_keys_then_a_build_after_the_compromise(
    tmp_path: Path, operators: Path
) -> None:
    """PEM keys: the ceremony certifies sign-card-g2's key under sign-card-g1's name; a build
    that reads a ca-compromise record for sign-card-g1 signs its CRLs with that key, and they
    verify with the ceremony's certificate (openssl), not with the compromised CA's."""
    from crlbuilder.demo.pki import init_pki
    from tests.conftest import ROOT, run_tool

    pki = Path(init_pki(tmp_path / "pki").directory)
    without_successor(pki, "sign-card-g1")
    log = tmp_path / "oplog.jsonl"  # where the operators were enrolled
    argv = successor_argv(pki, log, operators, "sign-card-g1", "sign-card-g2")
    assert main([*argv, *approvals(tmp_path, "alice", "bob")]) == 0
    m = load_manifest(pki)
    check_successor_profile(m, "sign-card-g1", "sign-card-g2")
    assert [r.event for r in records(log)][-2:] == ["certificate-issued", "successor-named"]

    issued = datetime(2025, 1, 6, tzinfo=UTC)
    facts = {"name": "試験 花子", "sex": "2", "birth_date": "419900101", "address": "東京都港区1-1"}

    def rec(kind: str, n: int, at: datetime, **kw: object) -> bytes:
        return msgspec.json.encode(
            {"type": kind, "id": f"kc-{n}", "recorded_at": at.isoformat(), **kw}
        )

    inputs = tmp_path / "records"
    inputs.mkdir()
    now = datetime.now(UTC).replace(microsecond=0)
    (inputs / "a.jsonl").write_bytes(
        rec("issuance", 1, issued, serial=0x1001, family="sign-card", issuer="sign-card-g1",
            not_before=issued.isoformat(), not_after=(issued + timedelta(days=1500)).isoformat(),
            holder="01" * 32, facts=facts)
        + b"\n" + rec("ca-compromise", 2, now - timedelta(hours=1), issuer="sign-card-g1") + b"\n"
    )  # fmt: skip
    key = tmp_path / "facts.key"
    run_tool("crlbuilder", "facts-key", "--out", str(key))
    d = tmp_path / "b"
    run_tool(
        "crlbuilder", "build", "--config", str(ROOT / "config" / "builder.toml"),
        "--store", str(d / "store"), "--pki", str(pki), "--input", str(inputs),
        "--facts-key-file", str(key), "--quarantine", str(d / "quarantine.jsonl"),
        "--notices", str(d / "notices.jsonl"), "--crl-dir", str(d / "crl"),
        "--spool", str(d / "spool"), "--sign-workers", "1", "--as-of", now.isoformat(),
        "--no-progress",
    )  # fmt: skip
    g1 = m.issuer("sign-card-g1")
    crl = d / "crl" / "sign-card-g1.crl"
    assert openssl_crl_verifies(crl, m.path(g1.successor_cert))
    assert not openssl_crl_verifies(crl, m.path(g1.cert))
    parsed = x509.load_der_x509_crl(crl.read_bytes())
    [entry] = list(parsed)
    assert entry.serial_number == 0x1001
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason == x509.ReasonFlags.ca_compromise


def test_successor_ceremony_refusals_change_nothing(
    tmp_path: Path, operators: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One operator (refusal logged), an unknown generation, one of another family or an
    earlier one, a generation that has a successor already, a certificate file in the way:
    each refused with one line, exit 2, the manifest and the PKI's files as they were."""
    from crlbuilder.demo.pki import init_pki

    pki = Path(init_pki(tmp_path / "pki").directory)
    without_successor(pki, "sign-card-g1")
    log = tmp_path / "oplog.jsonl"  # where the operators were enrolled
    both = approvals(tmp_path, "alice", "bob")

    def files() -> dict[Path, bytes]:
        return {p: p.read_bytes() for p in sorted(pki.rglob("*")) if p.is_file()}

    cases = [
        ("sign-card-g1", "sign-card-g2", approvals(tmp_path, "alice"), "2 distinct operators"),
        ("sign-card-g1", "sign-card-g2", approvals(tmp_path, "alice", "alice"), "distinct"),
        ("sign-card-g9", "sign-card-g2", both, "sign-card-g9: no such issuer generation"),
        ("sign-card-g1", "auth-card-g9", both, "auth-card-g9: no such issuer generation"),
        ("sign-card-g1", "sign-mobile-g1", both, "not a later generation"),
        ("sign-card-g2", "sign-card-g1", both, "not a later generation"),
        ("sign-card-g1", "sign-card-g1", both, "not a later generation"),
        ("verifier-token-g1", "sign-card-g2", both, "no such issuer generation"),
    ]
    before = files()
    for issuer, succ, given, why in cases:
        assert main([*successor_argv(pki, log, operators, issuer, succ), *given]) == 2, issuer
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0], err
        assert files() == before
    refused = [r for r in records(log) if r.event == "ceremony-refused"]
    assert [r.operators for r in refused] == [["alice"], ["alice", "alice"]]

    # the certificate's file exists (left by hand, or by an earlier attempt): refused before
    # the approvals are even read, nothing written over it
    (pki / "ca" / "sign-card-g1-successor.pem").write_bytes(b"not mine\n")
    before = files()
    assert main([*successor_argv(pki, log, operators, "sign-card-g1", "sign-card-g2"), *both]) == 2
    assert "exists" in capsys.readouterr().err and files() == before
    (pki / "ca" / "sign-card-g1-successor.pem").unlink()

    # done once; a second time is refused: the successor named is never replaced
    assert main([*successor_argv(pki, log, operators, "sign-card-g1", "sign-card-g2"), *both]) == 0
    capsys.readouterr()
    before = files()
    assert main([*successor_argv(pki, log, operators, "sign-card-g1", "sign-card-g2"), *both]) == 2
    assert "already has a successor" in capsys.readouterr().err and files() == before
    assert oplog.verify_oplog(log).problems == []


def test_a_successor_ceremony_whose_manifest_cannot_be_written_takes_its_certificate_back(
    tmp_path: Path, operators: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The certificate written, then the manifest not (a full disk): the certificate is
    removed, the failure logged, and the ceremony can be done again."""
    from crlbuilder import ceremony
    from crlbuilder.demo.pki import init_pki

    pki = Path(init_pki(tmp_path / "pki").directory)
    without_successor(pki, "sign-card-g1")
    log = tmp_path / "oplog.jsonl"  # where the operators were enrolled
    argv = [*successor_argv(pki, log, operators, "sign-card-g1", "sign-card-g2"),
            *approvals(tmp_path, "alice", "bob")]  # fmt: skip
    manifest_before = (pki / "pki.json").read_bytes()

    def full(*_: object) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ceremony, "dump_manifest", full)
    assert main(argv) == 2
    assert not (pki / "ca" / "sign-card-g1-successor.pem").exists()
    assert (pki / "pki.json").read_bytes() == manifest_before
    events = [r.event for r in records(log)]
    assert events[-2:] == ["certificate-issued", "ceremony-failed"]
    assert records(log)[-1].key == str(pki / "ca" / "sign-card-g2.key")
    monkeypatch.undo()
    assert main(argv) == 0
    check_successor_profile(load_manifest(pki), "sign-card-g1", "sign-card-g2")


# --- the review: what was done since the reviewed head ------------------------------------


@pytest.mark.integration
def test_ord_73_3_verify_log_lists_what_was_done_since_the_reviewed_head(
    tmp_path: Path, operators: Path, token: SoftHsmToken, capsys: pytest.CaptureFixture[str]
) -> None:
    """The monthly review starts at the last reviewed head and must see each line after it:
    verify-log --anchor listed nothing, only checked that the head was there."""
    log = tmp_path / "oplog.jsonl"
    reviewed = RECORD[log]  # the head after the two enrolments
    common = ["--log", str(log), "--operators", str(operators)]
    ca_key, ca_cert = token.uri("sign-card-g3"), tmp_path / "ca" / "sign-card-g3.pem"
    new_ca = ["keys", "new-ca", "--key", ca_key, "--family", "sign-card", "--generation", "3",
              "--out", str(ca_cert), *common]  # fmt: skip
    assert main([*new_ca, *approvals(tmp_path, "alice")]) == 2  # refused: one approval
    assert main([*new_ca, *approvals(tmp_path, "alice", "bob")]) == 0
    p11.close_all()
    capsys.readouterr()
    spki = next(r.detail["spki_sha256"] for r in records(log) if r.event == "key-generated")

    assert main(["keys", "verify-log", "--log", str(log), "--anchor", reviewed]) == 0
    out = capsys.readouterr().out
    assert "since line 2 (the head given): " in out and "1 refusal(s)" in out
    listed = [
        ln.split()[2] for ln in out.splitlines() if ln.startswith("  ") and ln.split()[0].isdigit()
    ]
    assert listed[:3] == ["ceremony-refused", "key-generated", "certificate-issued"]
    assert f"spki_sha256={spki}" in out and "by alice+bob key pkcs11:token=" in out
    assert "pin-source" not in out and ALICE.decode() not in out and BOB.decode() not in out

    assert main(["keys", "verify-log", "--log", str(log), "--anchor", reviewed, "--json",
                 "--operators", str(operators)]) == 0  # fmt: skip
    doc = msgspec.json.decode(capsys.readouterr().out)
    assert doc["intact"] and doc["anchor"] == reviewed and doc["head"] == RECORD[log]
    lines = doc["since"]["lines"]
    assert [ln["seq"] for ln in lines] == sorted(ln["seq"] for ln in lines) and lines[0]["seq"] > 2
    generated = next(ln for ln in lines if ln["event"] == "key-generated")
    assert generated["operators"] == ["alice", "bob"]
    assert generated["key"] == ca_key.split("?")[0] and generated["detail"]["spki_sha256"] == spki
    assert doc["since"]["signing_sessions"][ca_key.split("?")[0]]["signatures"] == 1
    assert doc["operators"]["problems"] == [] and doc["operators"]["compared"]

    # the head the review ends on lists nothing more; a head the log lacks lists nothing
    assert main(["keys", "verify-log", "--log", str(log), "--anchor", RECORD[log]]) == 0
    assert "0 ceremony line(s), 0 refusal(s)" in capsys.readouterr().out
    wrong = RECORD[log][:-1] + ("0" if RECORD[log][-1] != "0" else "1")
    assert main(["keys", "verify-log", "--log", str(log), "--anchor", wrong, "--json"]) == 1
    doc = msgspec.json.decode(capsys.readouterr().out)
    assert not doc["intact"] and "since" not in doc and "rewritten" in doc["problems"][0]


# --- the operators file names its log -------------------------------------------------------


def test_an_operators_file_names_its_log_and_a_stray_log_is_refused(
    tmp_path: Path, operators: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """add-operator --new-log with a mistyped --log started a stray log there and wrote into
    the real operators file a credential the real log did not enrol (alice refused from then
    on). The file now names its log (path, first line's SHA-256): a --new-log elsewhere, or a
    ceremony given another log, is refused, neither file nor log written."""
    log = tmp_path / "oplog.jsonl"
    genesis = head_of_line(log, 1).partition(":")[2]
    text = operators.read_text()
    assert f'path = "{log.resolve()}"' in text and f'genesis = "{genesis}"' in text
    before = operators.read_bytes()

    stray = tmp_path / "oplog.jsnol"  # the typo
    secret_file(tmp_path, "alicenew", b"alice-new-secret-01")
    replace = ["keys", "add-operator", "--operators", str(operators), "--name", "alice",
               "--secret", f"file:{tmp_path / 'alicenew.secret'}", "--replace",
               "--current-secret", f"file:{tmp_path / 'alice.secret'}"]  # fmt: skip
    capsys.readouterr()
    assert main([*replace, "--log", str(stray), "--new-log"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--new-log starts a log only at {log.resolve()}" in err, err
    assert "not recorded in" in err and "secret-0" not in err
    assert operators.read_bytes() == before and not stray.exists()

    # another pair's log, at its own head: a ceremony given it is refused, and not written to
    other, other_ops = tmp_path / "other.jsonl", tmp_path / "other.toml"
    for name in ("alice", "bob"):
        argv = enrol(tmp_path, other_ops, name)
        argv[argv.index("--log") + 1] = str(other)
        assert main(argv) == 0
    other_bytes = other.read_bytes()
    new_ca = ["keys", "new-ca", "--key", f"pkcs11:token=t;object=g9;type=private?pin-source=file:{tmp_path}/no.pin",
              "--family", "sign-card", "--generation", "9", "--out", str(tmp_path / "g9.pem"),
              "--log", str(other), "--operators", str(operators), "--anchor", RECORD[other],
              *approvals(tmp_path, "alice", "bob")]  # fmt: skip
    for argv in (new_ca, [*replace, "--log", str(other), "--anchor", RECORD[other]]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"operation log {other} is not the operators file's log" in err, err
        assert other.read_bytes() == other_bytes and operators.read_bytes() == before
    assert not (tmp_path / "g9.pem").exists()
    rc = main(["keys", "verify-log", "--log", str(other), "--operators", str(operators)])
    assert rc == 1 and "PROBLEM operation log" in capsys.readouterr().out

    # the real log passes; a log set aside and begun anew at its own path is the recovery
    assert main([*replace, "--log", str(log)]) == 0
    log.rename(tmp_path / "oplog-broken.jsonl")
    again = [*replace, "--secret", f"file:{tmp_path / 'alice.secret'}",
             "--current-secret", f"file:{tmp_path / 'alicenew.secret'}", "--log", str(log)]  # fmt: skip
    assert main([*again, "--new-log"]) == 0
    assert f'genesis = "{head_of_line(log, 1).partition(":")[2]}"' in operators.read_text()


def test_a_copy_of_the_log_elsewhere_takes_no_ceremony_and_a_moved_log_is_named_first(
    tmp_path: Path, operators: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A copy of the operation log at another path (a backup, a USB stick) began with the
    operators file's first line and took a ceremony given the recorded head: its lines went
    into the copy, the real log never had them, and the real log's next ceremony, given the
    same head, passed too (two logs forked from one head). A ceremony now takes the log only
    at the path the operators file names; a log that moved is named there by an operator's
    own add-operator --replace, the one command that writes the path."""
    log, fork = tmp_path / "oplog.jsonl", tmp_path / "backup" / "oplog.jsonl"
    fork.parent.mkdir()
    fork.write_bytes(log.read_bytes())
    key = f"pkcs11:token=none;object=g9;type=private?pin-source=file:{tmp_path}/no.pin"
    new_ca = ["keys", "new-ca", "--key", key, "--family", "sign-card", "--generation", "9",
              "--out", str(tmp_path / "g9.pem"), "--operators", str(operators),
              *approvals(tmp_path, "alice", "bob")]  # fmt: skip
    before = fork.read_bytes()
    capsys.readouterr()
    assert main([*new_ca, "--log", str(fork), "--anchor", RECORD[log]]) == 2
    err = capsys.readouterr().err
    assert f"operation log {fork.resolve()} begins as the operators file's log" in err, err
    assert "not recorded in" in err
    assert fork.read_bytes() == before  # nothing written into the copy
    # the log moved: a ceremony is refused until an operator's own --replace names it
    log.rename(fork)
    assert main([*new_ca, "--log", str(fork), "--anchor", RECORD[log]]) == 2
    assert "is not at its path" in capsys.readouterr().err
    secret_file(tmp_path, "alicenew", b"alice-new-secret-01")
    replace = ["keys", "add-operator", "--operators", str(operators), "--name", "alice",
               "--secret", f"file:{tmp_path / 'alicenew.secret'}", "--replace",
               "--current-secret", f"file:{tmp_path / 'alice.secret'}", "--log", str(fork),
               "--anchor", RECORD[log]]  # fmt: skip
    assert main(replace) == 0
    assert f'path = "{fork.resolve()}"' in operators.read_text()
    rc = main(["keys", "verify-log", "--log", str(fork), "--operators", str(operators)])
    assert rc == 0, capsys.readouterr()


def test_an_older_operators_file_naming_no_log_works_and_add_operator_names_it(
    tmp_path: Path, operators: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The upgrade: a file written by an earlier version (no [log]) still approves; its next
    add-operator (here an operator's own --replace) writes the log's name into it."""
    log = tmp_path / "oplog.jsonl"
    write_by_hand(operators, load_operators(operators))  # as an earlier version wrote it
    assert "[log]" not in operators.read_text()
    capsys.readouterr()
    assert main(["keys", "verify-log", "--log", str(log), "--operators", str(operators)]) == 0
    assert "not checked: the operators file names no operation log" in capsys.readouterr().out
    secret_file(tmp_path, "bobnew", b"bob-new-secret-0002")
    replace = enrol(tmp_path, operators, "bob", "--replace",
                    "--current-secret", f"file:{tmp_path / 'bob.secret'}")  # fmt: skip
    assert main([*replace, "--secret", f"file:{tmp_path / 'bobnew.secret'}"]) == 0
    text = operators.read_text()
    assert f'path = "{log.resolve()}"' in text
    assert f'genesis = "{head_of_line(log, 1).partition(":")[2]}"' in text
    assert sorted(load_operators(operators)) == ["alice", "bob"]
    assert main(["keys", "verify-log", "--log", str(log), "--operators", str(operators)]) == 0
    assert "names no operation log" not in capsys.readouterr().out
    # from now on a stray --new-log is refused
    stray = enrol(tmp_path, operators, "bob", "--new-log", "--replace",
                  "--current-secret", f"file:{tmp_path / 'bobnew.secret'}")  # fmt: skip
    stray[stray.index("--log") + 1] = str(tmp_path / "stray.jsonl")
    text = operators.read_text()
    assert main(stray) == 2 and not (tmp_path / "stray.jsonl").exists()
    assert operators.read_text() == text


# --- the token's key inventory at each ceremony --------------------------------------------


def token_labels(token: SoftHsmToken) -> list[str]:
    _, keys = p11.token_keys(token.uri("any"))
    return sorted(k.label for k in keys)


@pytest.mark.integration
def test_ord_74_3_a_key_made_outside_a_ceremony_with_the_pin_is_found_by_the_next_one(
    tmp_path: Path, operators: Path, token: SoftHsmToken, capsys: pytest.CaptureFixture[str]
) -> None:
    """keyaudit's lone operator: with the PIN the services read, a key made in the token
    without any ceremony left no trace the commands looked at; the next ceremony ran. Each
    ceremony now records the token's keys and compares the token with the log first."""
    log = tmp_path / "oplog.jsonl"
    common = ["--log", str(log), "--operators", str(operators)]
    both = approvals(tmp_path, "alice", "bob")
    ca_key, ca_cert = token.uri("sign-card-g3"), tmp_path / "ca" / "sign-card-g3.pem"
    assert main(["keys", "new-ca", "--key", ca_key, "--family", "sign-card", "--generation",
                 "3", "--out", str(ca_cert), *common, *both]) == 0  # fmt: skip
    [inv] = [r for r in records(log) if r.event == "token-inventory"]
    spki = next(r.detail["spki_sha256"] for r in records(log) if r.event == "key-generated")
    assert inv.detail["token"] == token.label and inv.detail["private_keys"] == 1
    assert inv.detail[f"key:{spki}"] == "sign-card-g3" and "baseline" in inv.detail
    assert inv.operators == ["alice", "bob"] and inv.key == f"pkcs11:token={token.label}"
    assert token.pin not in log.read_text()
    assert main(["keys", "verify-log", "--log", str(log), "--token", ca_key]) == 0
    assert "1 private key(s), as the log records" in capsys.readouterr().out

    # alone, with the PIN: a key of her own, no ceremony, no line
    p11.generate_rsa_key(token.uri("mallory-ca"), 2048)
    p11.close_all()
    assert main(["keys", "verify-log", "--log", str(log), "--token", ca_key, "--json"]) == 1
    doc = msgspec.json.decode(capsys.readouterr().out)
    [tok] = doc["tokens"]
    assert [u["label"] for u in tok["unexpected"]] == ["mallory-ca"] and tok["missing"] == []

    ocsp_key, ocsp_cert = token.uri("sign-card-g3-ocsp"), tmp_path / "ocsp" / "g3.pem"
    new_ocsp = ["keys", "new-ocsp", "--key", ocsp_key, "--ca-key", ca_key, "--ca-cert",
                str(ca_cert), "--out", str(ocsp_cert), *common, *both]  # fmt: skip
    lines = len(records(log))
    assert main(new_ocsp) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and "holds 1 key(s) no ceremony of the log made: 'mallory-ca'" in err
    )
    assert not ocsp_cert.exists() and token_labels(token) == ["mallory-ca", "sign-card-g3"]
    assert [r.event for r in records(log)[lines:]] == ["ceremony-refused"]

    # a key destroyed outside a ceremony is found the same way
    p11.destroy_key(token.uri("mallory-ca"))
    p11.destroy_key(ca_key)
    p11.close_all()
    assert main(new_ocsp) == 2
    assert "lacks 1 key(s) the log says it holds: 'sign-card-g3'" in capsys.readouterr().err
    assert main(["keys", "verify-log", "--log", str(log), "--token", ca_key]) == 1
    assert "PROBLEM token" in capsys.readouterr().out


@pytest.mark.integration
def test_the_token_inventory_follows_failed_ceremonies_and_is_accepted_only_by_two(
    tmp_path: Path, operators: Path, token: SoftHsmToken, capsys: pytest.CaptureFixture[str]
) -> None:
    """Keys made and taken back by a ceremony that failed part-way are followed line by line
    (no false alarm at the next ceremony); a difference is settled only by two operators
    recording the token as examined (keys inventory), which the review lists."""
    log = tmp_path / "oplog.jsonl"
    common = ["--log", str(log), "--operators", str(operators)]
    both = approvals(tmp_path, "alice", "bob")
    ca_key, ca_cert = token.uri("sign-card-g3"), tmp_path / "ca" / "sign-card-g3.pem"
    assert main(["keys", "new-ca", "--key", ca_key, "--family", "sign-card", "--generation",
                 "3", "--out", str(ca_cert), *common, *both]) == 0  # fmt: skip
    reviewed = RECORD[log]
    # a rollover whose second certificate write fails (a full disk): its two keys are made,
    # then destroyed (undone), line by line
    from crlbuilder.demo.pki import init_pki

    pki = init_pki(tmp_path / "pki")
    real_link, calls = os.link, []

    def link(src: str | Path, dst: str | Path, **kw: object) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_link(src, dst)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "link", link)
        assert main(["keys", "rollover", "--pki", pki.directory, "--family", "auth-card",
                     "--ca-key", token.uri("auth-card-g2"), "--ocsp-key",
                     token.uri("auth-card-g2-ocsp"), *common, *both]) == 2  # fmt: skip
    events = [r.event for r in records(log)]
    assert events.count("key-generated") == 3 and events.count("key-destroyed") == 2
    capsys.readouterr()
    assert token_labels(token) == ["sign-card-g3"]
    assert main(["keys", "verify-log", "--log", str(log), "--token", ca_key]) == 0
    capsys.readouterr()

    p11.generate_rsa_key(token.uri("stray"), 2048)  # outside a ceremony
    p11.close_all()
    inv = ["keys", "inventory", "--key", ca_key, *common]
    assert main([*inv, *approvals(tmp_path, "alice")]) == 2  # one operator cannot accept it
    assert "1 approval(s) given" in capsys.readouterr().err
    assert main([*inv, *both]) == 0
    assert "holds 1 key(s) no ceremony of the log made: 'stray'" in capsys.readouterr().out
    last = records(log)[-1]
    assert last.event == "token-inventory" and last.operators == ["alice", "bob"]
    assert "accepted" in last.detail and "stray" in last.detail.values()
    assert main(["keys", "verify-log", "--log", str(log), "--token", ca_key,
                 "--anchor", reviewed]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "2 private key(s), as the log records" in out
    assert "token-inventory by alice+bob" in out and "accepted=" in out


@pytest.mark.integration
def test_a_key_made_in_the_token_while_a_ceremony_runs_is_not_taken_into_its_inventory(
    tmp_path: Path,
    operators: Path,
    token: SoftHsmToken,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The end-of-ceremony inventory recorded whatever the token held then: a key made with
    the PIN while the ceremony ran (between its check and its end; an RSA-4096 key takes
    seconds) went into the line as if the log accounted for it, and the next ceremony
    passed. The line records what the log accounts for and the difference, not accepted;
    the next ceremony is refused until two operators record it (keys inventory). Both on a
    token's first inventory (the baseline) and on a later one."""
    from crlbuilder import ceremony

    log = tmp_path / "oplog.jsonl"
    common = ["--log", str(log), "--operators", str(operators)]
    both = approvals(tmp_path, "alice", "bob")
    ca_key, ca_cert = token.uri("sign-card-g3"), tmp_path / "ca" / "sign-card-g3.pem"
    generate = p11.generate_rsa_key

    def meanwhile(stray: str) -> None:
        def gen(key_ref: str, bits: int = 2048, module: str | None = None) -> Any:
            generate(token.uri(stray), 2048)  # alone, with the PIN, as the ceremony runs
            monkeypatch.setattr(ceremony.p11, "generate_rsa_key", generate)  # once
            return generate(key_ref, bits, module)

        monkeypatch.setattr(ceremony.p11, "generate_rsa_key", gen)

    def stray_refused(stray: str, argv: list[str], *, inventory: bool = False) -> None:
        if inventory:
            assert main(["keys", "inventory", "--key", ca_key, *common, *both]) == 0
        said = capsys.readouterr().err
        inv = records(log)[-1]
        assert main(argv) == 2  # the stray key is found by the next ceremony
        assert f"{stray!r}" in capsys.readouterr().err
        assert records(log)[-1].event == "ceremony-refused"
        assert main(["keys", "verify-log", "--log", str(log), "--token", ca_key]) == 1
        assert f"holds 1 key(s) no ceremony of the log made: {stray!r}" in capsys.readouterr().out
        assert inv.event == "token-inventory" and ("accepted" in inv.detail) == inventory
        assert "differs" in inv.detail and [stray] == [
            v for k, v in inv.detail.items() if k.startswith("differs_unexpected:")
        ]
        assert stray not in inventory_labels(inv)
        assert (
            f"WARNING token {token.label!r} holds 1 key(s) no ceremony of the log made: {stray!r}"
            in said
            and "changed while the ceremony ran" in said
        )
        assert main(["keys", "inventory", "--key", ca_key, *common, *both]) == 0
        assert "accepted" in records(log)[-1].detail
        capsys.readouterr()

    new_ca = ["keys", "new-ca", "--key", ca_key, "--family", "sign-card", "--generation", "3",
              "--out", str(ca_cert), *common, *both]  # fmt: skip

    def new_ocsp(label: str) -> list[str]:
        return ["keys", "new-ocsp", "--key", token.uri(label), "--ca-key", ca_key, "--ca-cert",
                str(ca_cert), "--out", str(tmp_path / f"{label}.pem"), *common, *both]  # fmt: skip

    meanwhile("mallory-1")
    assert main(new_ca) == 0  # the token's first inventory
    assert "baseline" in records(log)[-1].detail
    stray_refused("mallory-1", new_ocsp("ocsp-1"))
    meanwhile("mallory-2")
    assert main(new_ocsp("ocsp-1")) == 0  # a later one
    stray_refused("mallory-2", new_ocsp("ocsp-2"))
    assert main(new_ocsp("ocsp-2")) == 0

    # keys inventory accepts what two operators examined at its check, not a key made after
    generate(token.uri("mallory-3"), 2048)
    p11.close_all()
    listed = p11.token_keys

    def listing(key_ref: str, module: str | None = None) -> Any:
        found = listed(key_ref, module)
        monkeypatch.setattr(ceremony.p11, "token_keys", listed)  # once: at the check
        generate(token.uri("mallory-4"), 2048)
        return found

    monkeypatch.setattr(ceremony.p11, "token_keys", listing)
    stray_refused("mallory-4", new_ocsp("ocsp-3"), inventory=True)
    inv = next(r for r in reversed(records(log)) if "differs" in r.detail)
    assert "mallory-3" in inventory_labels(inv) and "mallory-4" not in inventory_labels(inv)
    assert inv.detail["accepted"] and "mallory-3" in [
        v for k, v in inv.detail.items() if k.startswith("unexpected:")
    ]


def inventory_labels(rec: oplog.OpRecord) -> list[str]:
    """The labels of the keys a token-inventory line records as the token's."""
    return sorted(str(v) for k, v in rec.detail.items() if k.startswith("key:"))


@pytest.mark.integration
def test_a_first_inventory_says_and_records_the_keys_the_log_made_that_the_token_lacks(
    tmp_path: Path, operators: Path, token: SoftHsmToken, capsys: pytest.CaptureFixture[str]
) -> None:
    """A token's first inventory in a log (after the upgrade) is taken as found. It said on
    stderr only which keys no line made; a key a ceremony of the log made and that is gone
    (destroyed outside a ceremony, or replaced under its label by a key of someone's own)
    went unsaid, and nothing of it stayed in the log for the review. Both are said, as a
    WARNING, and recorded in the baseline line."""
    log = tmp_path / "oplog.jsonl"
    common = ["--log", str(log), "--operators", str(operators)]
    both = approvals(tmp_path, "alice", "bob")
    gone = "e" * 64  # a key an earlier version's ceremony made in the token, now gone
    oplog.record(log, "key-generated", key=f"pkcs11:token={token.label};object=sign-card-g2",
                 operators=["alice", "bob"], detail={"bits": 2048, "spki_sha256": gone})  # fmt: skip
    RECORD[log] = str(oplog.verify_oplog(log).anchor)  # the upgrade's head, examined
    p11.generate_rsa_key(token.uri("pki-init-ca"), 2048)  # made before the log knew of it
    p11.close_all()
    ca_key = token.uri("sign-card-g3")
    # before it, the review lists each key the baseline will take, to hold against the records
    assert main(["keys", "verify-log", "--log", str(log), "--token", ca_key]) == 0
    out = capsys.readouterr().out
    assert "not checked: no line of the log inventories it yet" in out
    assert "  'pki-init-ca' spki " in out
    assert main(["keys", "new-ca", "--key", ca_key, "--family", "sign-card", "--generation",
                 "3", "--out", str(tmp_path / "ca.pem"), *common, *both]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "WARNING token" in err and "1 made by no line of it: 'pki-init-ca'" in err
    assert "1 made by a line of it and not there: 'sign-card-g2'" in err
    inv = records(log)[-1]
    assert inv.event == "token-inventory" and "baseline" in inv.detail
    assert inv.detail[f"baseline_missing:{gone}"] == "sign-card-g2"
    assert "pki-init-ca" in [v for k, v in inv.detail.items()
                             if k.startswith("baseline_unaccounted:")]  # fmt: skip
    assert inventory_labels(inv) == ["pki-init-ca", "sign-card-g3"]
    assert token.pin not in log.read_text()


def test_keys_inventory_of_no_token_is_refused_not_done(
    tmp_path: Path, operators: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """keys inventory given a --key that names no token (a PEM key file, a URI mistyped
    without its scheme) listed nothing, recorded nothing, and printed "done" with a head
    for the record: two operators believed the token recorded. Refused, nothing logged but
    the refusal."""
    log = tmp_path / "oplog.jsonl"
    lines = len(records(log))
    for key in ("/etc/jpki-va/pki/ca.key", "pkcs11 token=jpki-va;object=ca"):
        assert main(["keys", "inventory", "--key", key, "--log", str(log), "--operators",
                     str(operators), *approvals(tmp_path, "alice", "bob")]) == 2  # fmt: skip
        out = capsys.readouterr()
        assert "done" not in out.out and "names no token" in out.err
    assert [r.event for r in records(log)[lines:]] == ["ceremony-refused"] * 2


def test_a_pin_typed_in_place_of_a_token_uri_is_neither_shown_nor_logged(
    tmp_path: Path, operators: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """verify-log --token and keys inventory --key take a key URI "with its pin-source": the
    PIN typed in its place was printed back (and put in --json, for a ticket), and keys
    inventory wrote it as the refusal line's key into the log, where it cannot be removed."""
    log = tmp_path / "oplog.jsonl"
    pin = "4711-typed-pin"
    assert main(["keys", "verify-log", "--log", str(log), "--token", pin]) == 1
    out = capsys.readouterr()
    assert "is not a pkcs11: URI" in out.out and pin not in out.out + out.err
    assert main(["keys", "verify-log", "--log", str(log), "--token", pin, "--json"]) == 1
    assert pin not in capsys.readouterr().out
    assert main(["keys", "inventory", "--key", pin, "--log", str(log), "--operators",
                 str(operators), *approvals(tmp_path, "alice", "bob")]) == 2  # fmt: skip
    out = capsys.readouterr()
    assert "names no token" in out.err and pin not in out.out + out.err
    assert records(log)[-1].event == "ceremony-refused" and pin.encode() not in log.read_bytes()


@pytest.mark.integration
def test_a_second_object_of_one_key_found_at_the_check_is_not_said_to_be_made_meanwhile(
    tmp_path: Path, operators: Path, token: SoftHsmToken, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two objects of one key pair (the same key imported twice) in a token's first
    inventory: the end of the ceremony said the second was made while it ran, by no line,
    and recorded that; it was there at the check. It is recorded as found; every later
    comparison names it (a second object of a key pair is never a ceremony's), and keys
    inventory does not take it in either."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    log = tmp_path / "oplog.jsonl"
    common = ["--log", str(log), "--operators", str(operators)]
    both = approvals(tmp_path, "alice", "bob")
    twice = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token.import_key("pki-init-ca", twice)
    token.import_key("pki-init-ca-copy", twice)
    p11.close_all()
    ca_key = token.uri("sign-card-g3")
    assert main(["keys", "new-ca", "--key", ca_key, "--family", "sign-card", "--generation",
                 "3", "--out", str(tmp_path / "ca.pem"), *common, *both]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "changed while the ceremony ran" not in err and "WARNING token" in err
    assert "1 second object(s) of a key pair it holds" in err
    assert "differs" not in records(log)[-1].detail
    ocsp = ["keys", "new-ocsp", "--key", token.uri("ocsp"), "--ca-key", ca_key, "--ca-cert",
            str(tmp_path / "ca.pem"), "--out", str(tmp_path / "ocsp.pem"), *common, *both]  # fmt: skip
    assert main(ocsp) == 2
    assert "holds 1 key(s) no ceremony of the log made: 'pki-init-ca" in capsys.readouterr().err
    assert main(["keys", "inventory", "--key", ca_key, *common, *both]) == 0
    assert "changed while the ceremony ran" not in capsys.readouterr().err
    assert "differs" not in records(log)[-1].detail and "accepted" in records(log)[-1].detail


# --- keys destroy: a key without a certificate, named by its fingerprint --------------------


def spki_of(token: SoftHsmToken, label: str) -> str:
    """The fingerprint verify-log --token lists for the (one) key labelled ``label``."""
    _, keys = p11.token_keys(token.uri("any"))
    [fp] = [k.fingerprint for k in keys if k.label == label]
    return fp


@pytest.mark.integration
def test_ord_74_3_a_stray_key_is_destroyed_by_two_by_its_fingerprint_and_the_next_ceremony_runs(
    tmp_path: Path, operators: Path, token: SoftHsmToken, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key made outside a ceremony (here under the live CA key's own label, which a label
    cannot tell apart) had no way out but the HSM's own tool, which leaves no line. keys
    destroy names it by the fingerprint verify-log --token lists, two operators approve, one
    line records it, and the next ceremony on the token runs with no keys inventory. A
    fingerprint that names nothing, a key a certificate of the log names, and one approval
    are refused, nothing done."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    log = tmp_path / "oplog.jsonl"
    common = ["--log", str(log), "--operators", str(operators)]
    both = approvals(tmp_path, "alice", "bob")
    ca_key, ca_cert = token.uri("sign-card-g3"), tmp_path / "ca" / "sign-card-g3.pem"
    assert main(["keys", "new-ca", "--key", ca_key, "--family", "sign-card", "--generation",
                 "3", "--out", str(ca_cert), *common, *both]) == 0  # fmt: skip
    ca_fp = spki_of(token, "sign-card-g3")
    stray = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token.import_key("sign-card-g3", stray)  # alone, with the PIN: the CA key's label
    p11.close_all()
    _, keys = p11.token_keys(ca_key)
    [stray_fp] = [k.fingerprint for k in keys if k.fingerprint != ca_fp]
    capsys.readouterr()
    # the review lists it in full, as keys destroy is given it
    assert main(["keys", "verify-log", "--log", str(log), "--token", ca_key]) == 1
    assert f"unexpected 'sign-card-g3' spki {stray_fp} id -" in capsys.readouterr().out

    destroy = ["keys", "destroy", "--key", ca_key, "--no-pki", *common]
    before, lines = token_labels(token), len(records(log))
    refusals = [
        ([*destroy, "--spki", "ab" * 32, *both], "holds no private key with spki abab"),
        ([*destroy, "--spki", ca_fp, *both], "a certificate of the log names"),
        ([*destroy, "--spki", stray_fp, *approvals(tmp_path, "alice")], "1 approval(s) given"),
    ]
    for argv, why in refusals:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and why in err, err
    assert token_labels(token) == before
    assert [r.event for r in records(log)[lines:]] == ["ceremony-refused"] * 3

    assert main([*destroy, "--spki", stray_fp.upper(), *both]) == 0
    out = capsys.readouterr()
    assert f"spki {stray_fp}" in out.out and "WARNING" not in out.err
    _, keys = p11.token_keys(ca_key)
    assert [k.fingerprint for k in keys] == [ca_fp]
    gone, inv = records(log)[-2:]
    assert gone.event == "key-destroyed" and gone.operators == ["alice", "bob"]
    assert gone.key == f"pkcs11:token={token.label};object=sign-card-g3;type=private"
    assert gone.detail["spki_sha256"] == stray_fp and gone.detail["label"] == "sign-card-g3"
    assert gone.detail["objects_left"] == 0 and "id" in gone.detail
    assert inv.event == "token-inventory" and inv.detail[f"key:{ca_fp}"] == "sign-card-g3"
    assert "differs" not in inv.detail and "accepted" not in inv.detail
    assert token.pin not in log.read_text()

    # the token matches the log: the CA key signs again, the next ceremony runs
    assert main(["keys", "verify-log", "--log", str(log), "--token", ca_key]) == 0
    ocsp_cert = tmp_path / "ocsp" / "g3.pem"
    assert main(["keys", "new-ocsp", "--key", token.uri("sign-card-g3-ocsp"), "--ca-key",
                 ca_key, "--ca-cert", str(ca_cert), "--out", str(ocsp_cert), *common,
                 *both]) == 0  # fmt: skip
    assert "keys inventory" not in [r.detail.get("ceremony") for r in records(log)]


@pytest.mark.integration
def test_a_second_object_of_one_key_pair_is_destroyed_by_label_and_the_token_goes_on(
    tmp_path: Path, operators: Path, token: SoftHsmToken, capsys: pytest.CaptureFixture[str]
) -> None:
    """One key pair stored twice: every ceremony on the token was refused, keys inventory does
    not take it in, and only the HSM's tool (no line) could take it out. Its fingerprint names
    two objects: refused until --label (or --id) names one; that one goes, the other stays,
    and the token matches the log."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    log = tmp_path / "oplog.jsonl"
    common = ["--log", str(log), "--operators", str(operators)]
    both = approvals(tmp_path, "alice", "bob")
    twice = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token.import_key("pki-init-ca", twice)
    token.import_key("pki-init-ca-copy", twice)
    p11.close_all()
    ca_key, ca_cert = token.uri("sign-card-g3"), tmp_path / "ca.pem"
    assert main(["keys", "new-ca", "--key", ca_key, "--family", "sign-card", "--generation",
                 "3", "--out", str(ca_cert), *common, *both]) == 0  # fmt: skip
    fp = spki_of(token, "pki-init-ca")
    capsys.readouterr()
    destroy = ["keys", "destroy", "--key", ca_key, "--spki", fp, "--no-pki", *common, *both]
    assert main(destroy) == 2
    assert "2 private key objects have spki" in capsys.readouterr().err
    assert main([*destroy, "--label", "nothing-so-labelled"]) == 2
    assert "has the --label/--id given" in capsys.readouterr().err
    assert main([*destroy, "--label", "pki-init-ca-copy"]) == 0
    assert "1 other object(s) of the key pair stay" in capsys.readouterr().out
    assert token_labels(token) == ["pki-init-ca", "sign-card-g3"]
    gone = records(log)[-2]
    assert gone.event == "key-destroyed" and gone.detail["objects_left"] == 1
    assert gone.detail["public_keys_destroyed"] == 0  # another object of the pair stays
    assert main(["keys", "verify-log", "--log", str(log), "--token", ca_key]) == 0
    assert main(["keys", "new-ocsp", "--key", token.uri("ocsp"), "--ca-key", ca_key,
                 "--ca-cert", str(ca_cert), "--out", str(tmp_path / "ocsp.pem"), *common,
                 *both]) == 0  # fmt: skip


@pytest.mark.integration
def test_a_key_a_failed_ceremony_could_not_take_back_is_destroyed_with_its_public_key(
    tmp_path: Path,
    operators: Path,
    token: SoftHsmToken,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new-ca whose certificate write failed, and whose undo failed too, left its key in the
    token with a key-generated line and no certificate: retire needs one. keys destroy takes
    it (and its public key object) out; the log follows it, the label is free again. While
    a stray key is there too, destroying the leftover is refused (the token would still
    differ from the log); the stray goes first."""
    log = tmp_path / "oplog.jsonl"
    common = ["--log", str(log), "--operators", str(operators)]
    both = approvals(tmp_path, "alice", "bob")
    ca_key, out = token.uri("auth-card-g2"), tmp_path / "ca.pem"
    new_ca = ["keys", "new-ca", "--key", ca_key, "--family", "auth-card", "--generation", "2",
              "--out", str(out), *common, *both]  # fmt: skip

    assert main(["keys", "new-ca", "--key", token.uri("sign-card-g3"), "--family", "sign-card",
                 "--generation", "3", "--out", str(tmp_path / "g3.pem"), *common, *both]) == 0  # fmt: skip

    def no_link(src: str | Path, dst: str | Path, **kw: object) -> None:
        raise OSError(28, "No space left on device")

    def no_destroy(ref: str, module: str | None = None) -> None:
        raise SignerError("token removed")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "link", no_link)
        mp.setattr(p11, "destroy_key", no_destroy)
        assert main(new_ca) == 2
    assert "could not undo key" in capsys.readouterr().err
    assert token_labels(token) == ["auth-card-g2", "sign-card-g3"]
    fp = [r.detail["spki_sha256"] for r in records(log) if r.event == "key-generated"][-1]
    assert main(["keys", "verify-log", "--log", str(log), "--token", ca_key]) == 0
    capsys.readouterr()

    p11.generate_rsa_key(token.uri("mallory"), 2048)  # alone, with the PIN
    p11.close_all()
    destroy = ["keys", "destroy", "--key", ca_key, "--no-pki", *common, *both]
    assert main([*destroy, "--spki", str(fp)]) == 2
    err = capsys.readouterr().err
    assert "no ceremony of the log made: 'mallory'" in err and "besides the key" in err
    assert token_labels(token) == ["auth-card-g2", "mallory", "sign-card-g3"]
    assert main([*destroy, "--spki", spki_of(token, "mallory")]) == 0
    assert main([*destroy, "--spki", str(fp)]) == 0
    assert "1 public key object(s) with it" in capsys.readouterr().out
    assert token_labels(token) == ["sign-card-g3"]
    assert main(["keys", "verify-log", "--log", str(log), "--token", ca_key]) == 0
    assert main(new_ca) == 0 and out.exists()  # the label is free, the token as the log says


@pytest.mark.integration
@pytest.mark.parametrize("field", ["ocsp_key", "group_responder_key"])
def test_keys_destroy_with_pki_refuses_a_key_the_manifest_signs_with_from_before_the_log(
    tmp_path: Path,
    operators: Path,
    token: SoftHsmToken,
    capsys: pytest.CaptureFixture[str],
    field: str,
) -> None:
    """A key put in the token before the operation log (its certificate issued outside any
    ceremony) is one the log cannot say is in use; --pki holds the target against the
    public keys of the manifest's certificates, so the OCSP signer it names is refused, and
    so is the group relay's responder key (a signing key field that may be a PKCS#11 URI)."""
    from crlbuilder.demo.pki import init_pki

    log = tmp_path / "oplog.jsonl"
    common = ["--log", str(log), "--operators", str(operators)]
    both = approvals(tmp_path, "alice", "bob")
    ref, cert = token.add_key("legacy-ocsp")
    pki = init_pki(tmp_path / "pki")
    m = load_manifest(pki.directory)
    if field == "ocsp_key":
        first = msgspec.structs.replace(m.issuers[0], ocsp_key=ref, ocsp_cert=str(cert))
        m = msgspec.structs.replace(m, issuers=[first, *m.issuers[1:]])
    else:
        m = msgspec.structs.replace(m, group_responder_key=ref, group_responder_cert=str(cert))
    dump_manifest(m, pki.directory)
    p11.close_all()
    assert main(["keys", "inventory", "--key", ref, *common, *both]) == 0  # its baseline
    capsys.readouterr()
    destroy = ["keys", "destroy", "--key", ref, "--spki", spki_of(token, "legacy-ocsp"),
               *common, *both]  # fmt: skip
    lines = len(records(log))
    # neither --pki nor --no-pki: a usage error, before anything (no line, the key stays)
    lines = len(records(log))
    with pytest.raises(SystemExit) as usage:
        main(destroy)
    assert usage.value.code == 2 and "one of the arguments --pki --no-pki is required" in (
        capsys.readouterr().err
    )
    assert len(records(log)) == lines and token_labels(token) == ["legacy-ocsp"]
    assert main([*destroy, "--pki", pki.directory]) == 2
    err = capsys.readouterr().err
    assert "'legacy-ocsp', which the manifest signs with" in err and err.count("\n") == 1
    assert token_labels(token) == ["legacy-ocsp"]
    assert [r.event for r in records(log)[lines:]] == ["ceremony-refused"]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (["--generation", "0"], "--generation 0: generation must be 1..9"),
        (["--generation", "10"], "--generation 10: generation must be 1..9"),
        (["--generation", "3", "--bits", "1024"], "RSA-1024 refused: 2048 to 8192 bits"),
        (["--generation", "3", "--bits", "2k"], "--bits takes a number of bits"),
    ],
    ids=["generation-0", "generation-10", "bits-1024", "bits-not-a-number"],
)
def test_a_new_ca_the_pki_cannot_hold_is_refused_before_the_approvals(
    tmp_path: Path,
    operators: Path,
    token: SoftHsmToken,
    extra: list[str],
    why: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """new-ca --generation 0 (or 10, or -1) made a key in the token and a certificate
    "JPKI sign-card CA G0" for a generation no manifest can hold (its store code: 1..9), to
    be retired in another ceremony; a key size the token is refused after the approvals left
    a ceremony-failed line for a typo. Both are usage errors now: nothing made, no line."""
    log, out = tmp_path / "oplog.jsonl", tmp_path / "ca.pem"
    before = log.read_bytes()
    argv = ["keys", "new-ca", "--key", token.uri("ca"), "--family", "sign-card", *extra,
            "--out", str(out), "--log", str(log), "--operators", str(operators),
            *approvals(tmp_path, "alice", "bob")]  # fmt: skip
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = int(str(e.code))
    assert rc == 2
    assert why in capsys.readouterr().err
    assert not out.exists() and token_labels(token) == []
    assert log.read_bytes() == before
