"""Disclosure of a holder's own records (開示, Act §58-61): `crlbuilder.disclosure` and
`crlbuilder disclose`.

The document is a pure function of a store view: the unit tests read an in-memory store
(`MemoryReader`) at a fixed instant; the command's tests write a real store with `Commit`
(a sign-card certificate with its sealed facts, one revoked, an expired auth-card one, a
consent) and run the command as an enrolled operator on the operation log.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from crlbuilder import disclosure
from crlbuilder.cli import main
from crlbuilder.keys import oplog
from crlbuilder.model import Category, Family, FourFacts, Reason, Sex
from crlbuilder.seal import FACTS_KEY_ENV, FactsCipher
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.memory import MemoryReader
from crlbuilder.store.writer import Commit

HOLDER = bytes.fromhex("3f1c" * 16)
OTHER = bytes.fromhex("ab" * 32)
SIGN, AUTH, MOBILE = 1, 2, 3
T0 = 1_900_000_000
"""2030-03-17: the certificates' notBefore."""
NOW = T0 + 400 * 86400
"""The instant the documents are made at: after the expired certificate's notAfter."""
YEARS_5 = 5 * 365 * 86400
PAST = 1_500_000_000
"""2017: an expired certificate's validity, for the command, which reads the clock."""
FACTS = FourFacts(
    name="山田 花子", sex=Sex.FEMALE, birth_date="419900102", address="東京都千代田区1-1"
)
KEY = bytes(range(32))
ISSUERS = [
    sf.IssuerMeta(index=SIGN, id="sign-card-g1", family=Family.SIGN_CARD, generation=1,
                  cert_der=b"s"),
    sf.IssuerMeta(index=AUTH, id="auth-card-g1", family=Family.AUTH_CARD, generation=1,
                  cert_der=b"a"),
    sf.IssuerMeta(index=MOBILE, id="auth-mobile-g1", family=Family.AUTH_MOBILE, generation=1,
                  cert_der=b"m"),
]  # fmt: skip


def _st(family: Family, *, holder: bytes = HOLDER, not_after: int = T0 + YEARS_5,
        state: int = sf.STATE_GOOD, revoked_at: int = 0, not_before: int = T0,
        ) -> sf.StatusRecord:  # fmt: skip
    revoked = state != sf.STATE_GOOD
    return sf.StatusRecord(
        version=1, state=state,
        category=Category.REQUEST.code if state == sf.STATE_REVOKED else 0,
        reason=int(Reason.KEY_COMPROMISE) if state == sf.STATE_REVOKED else 0,
        family=family.code, not_before=not_before, not_after=not_after,
        revoked_at=revoked_at if revoked else 0, holder=holder,
    )  # fmt: skip


GOOD_SIGN = sf.status_key(SIGN, 0x10)
REVOKED_SIGN = sf.status_key(SIGN, 0x11)
EXPIRED_AUTH = sf.status_key(AUTH, 0x20)
ERASED_MOBILE = sf.status_key(MOBILE, 0x30)
OTHERS_SIGN = sf.status_key(SIGN, 0x99)


def _memory() -> MemoryReader:
    cipher = FactsCipher(KEY)
    return MemoryReader(
        status_records={
            GOOD_SIGN: _st(Family.SIGN_CARD),
            REVOKED_SIGN: _st(Family.SIGN_CARD, state=sf.STATE_REVOKED, revoked_at=T0 + 100),
            EXPIRED_AUTH: _st(Family.AUTH_CARD, not_after=T0 + 86400),
            ERASED_MOBILE: _st(Family.AUTH_MOBILE, state=sf.STATE_ERASED),
            OTHERS_SIGN: _st(Family.SIGN_CARD, holder=OTHER),
        },
        revoked={
            REVOKED_SIGN: sf.RevokedEntry(
                revoked_at=T0 + 100,
                reason=int(Reason.KEY_COMPROMISE),
                category=Category.REQUEST.code,
                commit=2,
                recorded_at=T0 + 90,
            )
        },
        links={
            (HOLDER, Family.SIGN_CARD): [GOOD_SIGN, REVOKED_SIGN],
            (HOLDER, Family.AUTH_CARD): [EXPIRED_AUTH],
            (HOLDER, Family.AUTH_MOBILE): [ERASED_MOBILE],
            (OTHER, Family.SIGN_CARD): [OTHERS_SIGN],
        },
        facts={
            GOOD_SIGN: cipher.seal(GOOD_SIGN, FACTS),
            OTHERS_SIGN: cipher.seal(OTHERS_SIGN, FACTS),
        },
        consents={(HOLDER, "sig-verifier"): T0 + 5, (OTHER, "other-verifier"): T0 + 6},
        pendings={
            HOLDER: sf.PendingMoveOut(
                record_id="c-4",
                notified_at=T0 + 200,
                planned_date="2031-04-20",
                abroad=False,
                lapsed_at=T0 + 300,
            )
        },
        kept_taken={HOLDER: [sf.Taken(T0 + 300, False, True, 0, 0, T0 + 250)]},
        kept_move_ins={HOLDER: [sf.MoveIn(T0 + 150, 0)]},
        issuer_table=list(ISSUERS),
        commit=4,
        last_committed_at=T0 + 300,
    )


def test_act_58_a_holders_certificates_facts_consents_and_notices() -> None:
    doc = disclosure.disclose(_memory(), HOLDER, at=NOW, opener=FactsCipher(KEY))
    assert doc.exists and doc.holder == HOLDER.hex() and doc.store_commit == 4
    by_serial = {c.serial: c for c in doc.certificates}
    assert sorted(by_serial) == ["10", "11", "20", "30"]  # nothing of the other holder
    good, revoked = by_serial["10"], by_serial["11"]
    assert (good.state, good.issuer, good.family) == ("good", "sign-card-g1", "sign-card")
    assert good.facts == FACTS and good.facts_state == "opened"
    assert revoked.state == "revoked" and revoked.facts is None
    assert revoked.facts_state == "not-kept"  # deleted by the revocation's commit
    assert revoked.category == "request" and revoked.reason == "KEY_COMPROMISE"
    assert revoked.article == Category.REQUEST.articles[Family.SIGN_CARD]
    assert revoked.lost_effect_at == "2030-03-17T17:48:20Z"
    assert revoked.recorded_at == "2030-03-17T17:48:10Z"
    assert by_serial["20"].state == "expired" and by_serial["20"].facts_state == "none"
    assert by_serial["30"].state == "erased" and by_serial["30"].lost_effect_at is None
    assert [(c.verifier, c.recorded_at) for c in doc.consents] == [
        ("sig-verifier", "2030-03-17T17:46:45Z")
    ]
    assert doc.move_out_notice is not None and doc.move_out_notice.record_id == "c-4"
    assert doc.move_out_notice.lapsed_at == "2030-03-17T17:51:40Z"
    assert doc.move_out_notice.lapse_due.startswith("2031-05-")  # planned date + 30 days
    assert [m.notified_at for m in doc.move_ins] == ["2030-03-17T17:49:10Z"]
    assert [(k.took_auth_card, k.lapse_due) for k in doc.changes_kept] == [
        (True, "2030-03-17T17:50:50Z")
    ]
    assert any("counts per party" in n for n in doc.notes)  # the ledger keeps no holder
    assert any("notices file" in n for n in doc.notes)  # beside the store, not read


def test_act_58_the_facts_are_reported_sealed_without_the_key_and_refused_with_another() -> None:
    doc = disclosure.disclose(_memory(), HOLDER, at=NOW)
    [good] = [c for c in doc.certificates if c.serial == "10"]
    assert good.facts is None and good.facts_state == "sealed"
    with pytest.raises(disclosure.FactsUnopened) as e:
        disclosure.disclose(_memory(), HOLDER, at=NOW, opener=FactsCipher(bytes(32)))
    assert "山田" not in str(e.value) and HOLDER.hex() not in str(e.value)


def test_act_58_1_a_holder_the_store_does_not_know_is_told_none_exists() -> None:
    doc = disclosure.disclose(_memory(), bytes(32), at=NOW, opener=FactsCipher(KEY))
    assert not doc.exists
    assert (doc.certificates, doc.consents, doc.move_out_notice, doc.move_ins,
            doc.changes_kept) == ([], [], None, [], [])  # fmt: skip
    assert json.loads(disclosure.encode(doc))["exists"] is False


def test_act_31_2_a_pending_lapse_is_disclosed_on_the_certificates_it_takes() -> None:
    view = _memory()
    view.pendings[HOLDER] = sf.PendingMoveOut(
        record_id="c-5", notified_at=T0 + 200, planned_date="2030-04-01", abroad=False
    )
    view.status_records[EXPIRED_AUTH] = _st(Family.AUTH_CARD)  # good until 2035
    doc = disclosure.disclose(view, HOLDER, at=T0 + 300)
    [auth] = [c for c in doc.certificates if c.serial == "20"]
    assert auth.state == "good" and auth.lapse_due is not None
    assert doc.move_out_notice is not None and doc.move_out_notice.lapsed_at is None
    assert auth.lapse_due == doc.move_out_notice.lapse_due
    [sign] = [c for c in doc.certificates if c.serial == "10"]
    assert sign.lapse_due is None  # no 30-day rule for sign certificates


def test_a_consent_alone_is_something_the_store_holds() -> None:
    view = MemoryReader(consents={(OTHER, "v"): T0})
    assert disclosure.disclose(view, OTHER, at=NOW).exists


def _z(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def test_a_withdrawal_kept_alone_is_something_the_store_holds() -> None:
    view = MemoryReader(withdrawals={(OTHER, "v"): T0})
    doc = disclosure.disclose(view, OTHER, at=NOW)
    assert doc.exists and doc.withdrawals == [
        disclosure.Withdrawal(verifier="v", recorded_at=_z(T0))
    ]


@pytest.mark.parametrize("text", ["", "3f1c", "zz" * 32, "3f1c" * 16 + "00", " " * 64, "é" * 64])
def test_an_ill_formed_holder_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(ValueError) as e:
        disclosure.holder_of(text)
    assert "64 hex digits" in str(e.value)
    assert not text.strip() or text not in str(e.value)


def test_a_holder_key_in_either_case() -> None:
    assert disclosure.holder_of(HOLDER.hex().upper()) == HOLDER


# --- the command ------------------------------------------------------------------------


def _store(path: Path) -> None:
    """A real store: a good sign-card certificate with its facts sealed, one revoked (its
    facts deleted by the revocation), an expired auth-card certificate, a consent, and
    withdrawal kept, and another holder's certificate."""
    store = Store.open(path, readonly=False)
    cipher = FactsCipher(KEY)
    try:
        at = datetime.fromtimestamp(T0, UTC)
        with Commit(store, lambda: at) as c:
            c.put_issuers(ISSUERS)
            far = int(datetime(2099, 1, 1, tzinfo=UTC).timestamp())
            for key, st in (
                (GOOD_SIGN, _st(Family.SIGN_CARD, not_after=far)),
                (REVOKED_SIGN, _st(Family.SIGN_CARD, not_after=far)),
                (EXPIRED_AUTH, _st(Family.AUTH_CARD, not_before=PAST, not_after=PAST + 86400)),
                (OTHERS_SIGN, _st(Family.SIGN_CARD, holder=OTHER, not_after=far)),
            ):
                facts = cipher.seal(key, FACTS) if st.family == Family.SIGN_CARD.code else None
                c.add_certificate(key, st, st.family_enum, facts)
            c.put_consent(HOLDER, "sig-verifier", T0 + 5)
            c.put_withdrawal(HOLDER, "gone-verifier", T0 + 7)  # rules 9: a withdrawal kept
        with Commit(store, lambda: at) as c:
            st = c.status(REVOKED_SIGN)
            assert st is not None
            c.revoke(REVOKED_SIGN, st, category=Category.REQUEST.code,
                     reason=int(Reason.KEY_COMPROMISE), at=T0 + 100, recorded_at=T0 + 90)  # fmt: skip
    finally:
        store.close()


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    """A store, a facts key file, and an operation log where alice is enrolled."""
    _store(tmp_path / "store")
    key = tmp_path / "facts.key"
    key.write_text(KEY.hex() + "\n")
    key.chmod(0o600)
    secret = tmp_path / "alice.secret"
    secret.write_bytes(b"alice-secret-0001\n")
    secret.chmod(0o600)
    operators, log = tmp_path / "operators.toml", tmp_path / "oplog.jsonl"
    assert main(["keys", "add-operator", "--operators", str(operators), "--name", "alice",
                 "--secret", f"file:{secret}", "--log", str(log), "--new-log"]) == 0  # fmt: skip
    return {"store": tmp_path / "store", "key": key, "secret": secret, "operators": operators,
            "log": log, "dir": tmp_path}  # fmt: skip


def _argv(s: dict[str, Path], holder: str, *extra: str) -> list[str]:
    return ["disclose", "--store", str(s["store"]), "--holder", holder, "--log", str(s["log"]),
            "--operators", str(s["operators"]), "--operator", f"alice:file:{s['secret']}",
            *extra]  # fmt: skip


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FACTS_KEY_ENV, raising=False)


def test_disclose_writes_the_holders_document_and_records_it_in_the_operation_log(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(_argv(setup, HOLDER.hex(), "--facts-key-file", str(setup["key"]))) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["exists"] is True and doc["holder"] == HOLDER.hex()
    states = {c["serial"]: (c["state"], c["facts_state"]) for c in doc["certificates"]}
    assert states == {"10": ("good", "opened"), "11": ("revoked", "not-kept"),
                      "20": ("expired", "none")}  # fmt: skip
    [good] = [c for c in doc["certificates"] if c["serial"] == "10"]
    assert good["facts"]["name"] == FACTS.name
    assert [c["verifier"] for c in doc["consents"]] == ["sig-verifier"]
    assert doc["withdrawals"] == [{"verifier": "gone-verifier", "recorded_at": _z(T0 + 7)}]
    assert FACTS.name not in err and HOLDER.hex() not in err
    last = oplog.read_oplog(setup["log"])[-1]
    assert (last.event, last.operators) == ("holder-disclosed", ["alice"])
    logged = setup["log"].read_text(encoding="utf-8")
    assert HOLDER.hex() not in logged and FACTS.name not in logged and "sig-verifier" not in logged
    assert "gone-verifier" not in logged


@pytest.mark.integration
def test_disclose_runs_while_the_builder_holds_the_store(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Another process holds the store for writing, a write transaction open (a builder's
    batch): the read-only open reads the last commit."""
    holder = (
        "import sys; from crlbuilder.store.lmdbstore import Store; "
        f"s = Store.open({str(setup['store'])!r}, readonly=False); "
        "t = s.env.begin(write=True); print('held', flush=True); sys.stdin.read()"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "held\n"
        assert main(_argv(setup, HOLDER.hex())) == 0
    finally:
        assert writer.stdin is not None
        writer.stdin.close()
        writer.wait(timeout=30)
    [good] = [c for c in json.loads(capsys.readouterr().out)["certificates"] if c["serial"] == "10"]
    assert good["facts_state"] == "sealed" and good["facts"] is None


def test_act_58_1_disclose_of_a_holder_the_store_does_not_know_says_none_exists(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(_argv(setup, "00" * 32)) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["exists"] is False and doc["certificates"] == []


def test_disclose_refuses_an_ill_formed_holder_writing_nothing(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = setup["dir"] / "doc.json"
    lines = len(oplog.read_oplog(setup["log"]))
    capsys.readouterr()
    assert main(_argv(setup, "not-a-holder-Tanaka", "--out", str(out))) == 2
    o, err = capsys.readouterr()
    assert o == "" and "64 hex digits" in err and "Tanaka" not in err
    assert not out.exists() and len(oplog.read_oplog(setup["log"])) == lines


def test_disclose_refuses_an_operator_with_the_wrong_secret_before_reading(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = setup["dir"] / "wrong.secret"
    wrong.write_bytes(b"not-alices-secret\n")
    wrong.chmod(0o600)
    argv = _argv(setup, HOLDER.hex())
    argv[argv.index("--operator") + 1] = f"alice:file:{wrong}"
    capsys.readouterr()
    assert main(argv) == 2
    o, err = capsys.readouterr()
    assert o == "" and "the secret does not match" in err
    assert oplog.read_oplog(setup["log"])[-1].event != "holder-disclosed"


def test_disclose_out_is_0600_and_never_replaced_without_force(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = setup["dir"] / "doc.json"
    old = os.umask(0o022)
    try:
        assert main(_argv(setup, HOLDER.hex(), "--out", str(out))) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert json.loads(out.read_bytes())["exists"] is True
    out.write_text("kept")
    capsys.readouterr()
    assert main(_argv(setup, "00" * 32, "--out", str(out))) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == "kept"
    assert main(_argv(setup, "00" * 32, "--out", str(out), "--force")) == 0
    assert json.loads(out.read_bytes())["exists"] is False
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_disclose_with_another_stores_facts_key_discloses_nothing(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    other = setup["dir"] / "other.key"
    other.write_text("00" * 32 + "\n")
    other.chmod(0o600)
    capsys.readouterr()
    assert main(_argv(setup, HOLDER.hex(), "--facts-key-file", str(other))) == 2
    o, err = capsys.readouterr()
    assert o == "" and "does not open" in err and HOLDER.hex() not in err


def test_a_disclosure_line_is_no_ceremony_the_next_ceremony_must_hold(
    setup: dict[str, Path],
) -> None:
    """The line records no ceremony (`oplog.NO_CEREMONY_EVENTS`): the next ceremony, given the
    head the last one printed, is not refused for a ceremony the record does not hold."""
    head = oplog.verify_oplog(setup["log"]).anchor
    assert main(_argv(setup, HOLDER.hex())) == 0
    secret = setup["dir"] / "bob.secret"
    secret.write_bytes(b"bob-secret-000002\n")
    secret.chmod(0o600)
    assert main(["keys", "add-operator", "--operators", str(setup["operators"]), "--name", "bob",
                 "--secret", f"file:{secret}", "--log", str(setup["log"]),
                 "--anchor", str(head)]) == 0  # fmt: skip


@pytest.mark.parametrize("to_file", [True, False])
def test_disclose_discloses_nothing_when_the_operation_log_cannot_record_it(
    setup: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    to_file: bool,
) -> None:
    """The operator checked, the document made, then its line cannot be appended (the disk
    full): nothing is handed over (the line is written first), exit 1, and the message says
    so and names the log (the bare system error, as run_command reports any, said neither)."""

    def full(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(oplog, "record", full)
    out = setup["dir"] / "doc.json"
    capsys.readouterr()
    assert main(_argv(setup, HOLDER.hex(), *(["--out", str(out)] if to_file else []))) == 1
    o, err = capsys.readouterr()
    assert not out.exists() and o == "" and "nothing disclosed" in err
    assert HOLDER.hex() not in err and FACTS.name not in err


def test_disclose_out_that_cannot_be_written_is_said_before_the_log_records_anything(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--out`` in a directory that does not exist, or naming a directory with ``--force``:
    nothing disclosed and nothing in the operation log (the document was written after the
    log's line: the log recorded a disclosure never handed over, exit 1 with the temporary's
    name, or for a directory 'Is a directory'); no temporary left beside it."""
    lines = len(oplog.read_oplog(setup["log"]))
    missing = setup["dir"] / "no-such-dir" / "doc.json"
    capsys.readouterr()
    assert main(_argv(setup, HOLDER.hex(), "--out", str(missing))) == 1
    o, err = capsys.readouterr()
    assert o == "" and "nothing disclosed" in err and HOLDER.hex() not in err
    target = setup["dir"] / "a-directory"
    target.mkdir()
    assert main(_argv(setup, HOLDER.hex(), "--out", str(target), "--force")) == 2
    assert "is a directory" in capsys.readouterr().err
    assert len(oplog.read_oplog(setup["log"])) == lines
    assert not missing.parent.exists() and list(target.iterdir()) == []
    assert [p.name for p in setup["dir"].iterdir() if p.name.endswith(".tmp")] == []


def test_disclose_the_document_staged_is_removed_when_the_log_cannot_record_it(
    setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(oplog, "record", full)
    assert main(_argv(setup, HOLDER.hex(), "--out", str(setup["dir"] / "doc.json"))) == 1
    assert [p.name for p in setup["dir"].iterdir() if "doc.json" in p.name] == []


@pytest.mark.integration
def test_disclose_to_a_stdout_that_cannot_take_it_says_the_log_over_reports(
    setup: dict[str, Path],
) -> None:
    """Standard output full (or a closed pipe) after the log's line: exit 1, and the message
    says that the log records a disclosure not handed over (it said only the system error)."""
    with open("/dev/full", "wb") as full:
        got = subprocess.run(
            [sys.executable, "-m", "crlbuilder", *_argv(setup, HOLDER.hex())],
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert got.returncode == 1
    assert "standard output" in got.stderr and "not handed over" in got.stderr, got.stderr
    assert oplog.read_oplog(setup["log"])[-1].event == "holder-disclosed"


def test_a_facts_key_that_opens_some_of_the_holders_facts_discloses_the_others_as_damaged() -> None:
    """One of the holder's two sealed values damaged: the key opens the other, so it is the
    store's key; the document is made, the damaged one ``damaged`` (the whole disclosure was
    refused as 'another store's key?', leaving the requester nothing). A key opening none is
    still refused."""
    view = _memory()
    second = sf.status_key(SIGN, 0x12)
    view.status_records[second] = _st(Family.SIGN_CARD)
    view.links[(HOLDER, Family.SIGN_CARD)].append(second)
    sealed = bytearray(FactsCipher(KEY).seal(second, FACTS))
    sealed[-1] ^= 1
    view.facts[second] = bytes(sealed)
    doc = disclosure.disclose(view, HOLDER, at=NOW, opener=FactsCipher(KEY))
    states = {c.serial: (c.facts_state, c.facts) for c in doc.certificates}
    assert states["10"] == ("opened", FACTS) and states["12"] == ("damaged", None)
    with pytest.raises(disclosure.FactsUnopened):
        disclosure.disclose(view, HOLDER, at=NOW, opener=FactsCipher(bytes(32)))


def test_a_link_to_another_holders_certificate_discloses_nothing() -> None:
    """A damaged store whose link names another holder's certificate: refused whole, never
    disclosed (the other holder's serial and facts were given as this holder's)."""
    view = _memory()
    view.links[(HOLDER, Family.SIGN_CARD)].append(OTHERS_SIGN)
    with pytest.raises(sf.StoreCorrupt) as e:
        disclosure.disclose(view, HOLDER, at=NOW, opener=FactsCipher(KEY))
    assert HOLDER.hex() not in str(e.value) and OTHER.hex() not in str(e.value)


def test_disclose_warns_of_damaged_facts_naming_no_holder(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store.open(setup["store"], readonly=False)
    second = sf.status_key(SIGN, 0x12)
    try:
        with Commit(store, lambda: datetime.fromtimestamp(T0, UTC)) as c:
            far = int(datetime(2099, 1, 1, tzinfo=UTC).timestamp())
            c.add_certificate(second, _st(Family.SIGN_CARD, not_after=far), Family.SIGN_CARD,
                              bytes(40))  # fmt: skip
    finally:
        store.close()
    capsys.readouterr()
    assert main(_argv(setup, HOLDER.hex(), "--facts-key-file", str(setup["key"]))) == 0
    out, err = capsys.readouterr()
    states = {c["serial"]: c["facts_state"] for c in json.loads(out)["certificates"]}
    assert states["10"] == "opened" and states["12"] == "damaged"
    assert "1 sealed facts value(s)" in err and HOLDER.hex() not in err


def test_disclose_reads_the_holder_from_standard_input_with_dash(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--holder -``: the holder key read from standard input, out of the command line
    (``ps``, /proc/<pid>/cmdline) that other local users may list; ill-formed input refused
    without echo."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(HOLDER.hex() + "\n"))
    capsys.readouterr()
    assert main(_argv(setup, "-")) == 0
    assert json.loads(capsys.readouterr().out)["holder"] == HOLDER.hex()
    monkeypatch.setattr(sys, "stdin", io.StringIO("Tanaka Taro\n"))
    assert main(_argv(setup, "-")) == 2
    o, err = capsys.readouterr()
    assert o == "" and "64 hex digits" in err and "Tanaka" not in err
