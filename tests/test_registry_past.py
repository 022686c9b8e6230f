"""`responder registry`: no command dates a party's state in the past, unless it states a correction.

A suspension (提供の停止, Act §18(6), §37(4)), a resumption, an end of provision or a credential's
window dated before now would say the party received nothing (or was served) while the ledger
(帳簿, Act §40) counted otherwise. The commands' clock is injected (`cli.clock`): these tests
never read the wall clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from crlbuilder.rules import JST
from responder.registry import cli
from responder.registry.audit import audit_path_for, verify_audit
from responder.registry.cli import main
from responder.registry.pastinstants import ALLOWANCE, past_instants
from responder.registry.schema import PartyEntry, parse_registry

NOW = datetime(2031, 5, 1, 12, 0, tzinfo=JST)
"""The commands' now in these tests (any instant after the parties' start would do)."""
TOKEN = "ab" * 32


@pytest.fixture
def reg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A registry of one 署名検証者 ``bank`` with one token, the commands' clock at `NOW`."""
    monkeypatch.setattr(cli, "clock", NOW.timestamp)
    path = tmp_path / "registry.toml"
    assert run("add", "--registry", str(path), "--id", "bank", "--name", "X", "--address",
               "a", "--office", "o", "--start", "2024-04-01", "--title", "signature-verifier",
               "--category", "4", "--liability", "l", "--token-sha256", TOKEN,
               "--label", "t1") == 0  # fmt: skip
    yield path


def run(*argv: str) -> int:
    return main(["registry", *argv])


def act(reg: Path, action: str, *more: str) -> int:
    return run(action, "--registry", str(reg), "--id", "bank", *more)


def at(delta: timedelta) -> str:
    return (NOW + delta).isoformat()


def state(reg: Path) -> tuple[bytes, bytes]:
    return reg.read_bytes(), audit_path_for(reg).read_bytes()


def entry(reg: Path) -> PartyEntry:
    e = parse_registry(reg.read_text(), source="t").find("bank")
    assert isinstance(e, PartyEntry)
    return e


SUSPEND = ("suspend", "--article", "Act §18(6)(1)", "--reason", "breach")


def test_suspension_since_an_hour_ago_is_refused_within_the_allowance_taken(
    reg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = state(reg)
    capsys.readouterr()
    assert act(reg, *SUSPEND, "--since", at(timedelta(hours=-1))) == 2
    err = capsys.readouterr().err
    assert "帳簿, Act §40" in err and "suspension (Act §18(6)(1)) since" in err
    assert "60 min ago" in err and "--correction REASON" in err
    assert state(reg) == before  # nothing written, nothing audited
    # a few seconds back (typed as "now", a node's clock a little behind) is no correction
    assert act(reg, *SUSPEND, "--since", at(timedelta(seconds=-(ALLOWANCE - 1)))) == 0
    assert entry(reg).suspension[0].since == NOW - timedelta(seconds=ALLOWANCE - 1)


def test_a_correction_takes_a_past_instant_and_the_audit_log_keeps_its_reason(
    reg: Path,
) -> None:
    since = at(timedelta(days=-3))
    assert (
        act(reg, *SUSPEND, "--since", since, "--correction", "the order of 4/28 was not entered")
        == 0
    )
    assert entry(reg).suspension[0].since.isoformat() == since
    last = json.loads(audit_path_for(reg).read_text().splitlines()[-1])
    assert (last["action"], last["correction"]) == ("suspend", "the order of 4/28 was not entered")
    assert verify_audit(audit_path_for(reg), reg).problems == []
    # a change with no past instant has no correction field
    assert act(reg, "resume") == 0
    assert "correction" not in json.loads(audit_path_for(reg).read_text().splitlines()[-1])


def test_a_correction_that_corrects_nothing_is_refused(
    reg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = state(reg)
    capsys.readouterr()
    assert act(reg, *SUSPEND, "--correction", "why not") == 2
    assert "sets none" in capsys.readouterr().err and state(reg) == before


def test_resume_at_a_past_instant_is_refused(reg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The party was refused until now (the ledger counted nothing): a past resumption would
    say it was served."""
    assert act(reg, *SUSPEND, "--since", at(timedelta(days=-3)), "--correction", "c") == 0
    before = state(reg)
    capsys.readouterr()
    assert act(reg, "resume", "--at", at(timedelta(days=-1))) == 2
    assert "until" in capsys.readouterr().err and state(reg) == before
    assert act(reg, "resume", "--at", at(timedelta(days=-1)), "--correction", "lifted 4/30") == 0
    assert entry(reg).suspension[0].until == NOW - timedelta(days=1)


def test_end_at_a_past_instant_is_refused_ahead_or_now_taken(
    reg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = state(reg)
    capsys.readouterr()
    assert act(reg, "end", "--reason", "withdrew", "--at", "2031-04-01") == 2  # a date: 00:00 JST
    assert "ended at 2031-04-01T00:00:00+09:00" in capsys.readouterr().err
    assert state(reg) == before
    assert act(reg, "end", "--reason", "withdrew", "--at", "2031-06-01") == 0
    # moving the end still to come back into the past is refused too
    assert act(reg, "end", "--reason", "withdrew", "--at", at(timedelta(hours=-2))) == 2
    assert act(reg, "end", "--reason", "withdrew") == 0  # now
    e = entry(reg).ended
    assert e is not None and e.at == NOW


def test_expiring_a_credential_in_the_past_is_refused(
    reg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`update --expire-credential --at`: requests it authenticated since were served and counted."""
    assert act(reg, "update", "--new-token") == 0  # a second one, so the party keeps one
    before = state(reg)
    capsys.readouterr()
    assert act(reg, "update", "--expire-credential", "t1", "--at", at(timedelta(days=-2))) == 2
    assert "credential 't1' not_after" in capsys.readouterr().err and state(reg) == before
    assert act(reg, "update", "--expire-credential", "t1") == 0
    assert entry(reg).credential[0].not_after == NOW


def test_update_from_a_file_cannot_backdate_a_credential_either(
    reg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rule is the change's, not a flag's: a form (`--from`) moving a window is refused too."""
    assert act(reg, "update", "--new-token") == 0
    form = tmp_path / "bank.toml"
    text = reg.read_text().replace(
        'label = "t1"', f'label = "t1"\nnot_after = {at(timedelta(days=-2))}'
    )
    form.write_text(text)
    before = state(reg)
    capsys.readouterr()
    assert act(reg, "update", "--from", str(form)) == 2
    assert "credential 't1' not_after" in capsys.readouterr().err and state(reg) == before


def test_past_instants_compares_what_changed_only() -> None:
    """An instant kept from before is not set by the change, however old; one set exactly
    `ALLOWANCE` seconds back is taken, one more second is not."""
    old = NOW - timedelta(days=400)

    def registry(*suspensions: tuple[datetime, datetime | None]) -> str:
        lines = [
            'version = 2\n[[party]]\nid = "p"\nname = "P"\n'
            '[[party.title]]\nkind = "user-verifier"\ncategory = 1\n'
        ]
        for since, until in suspensions:
            lines.append(
                f'[[party.suspension]]\narticle = "Act §37(4)(1)"\nreason = "r"\nsince = {since.isoformat()}\n'
                + (f"until = {until.isoformat()}\n" if until else "")
            )
        return "".join(lines)

    before = parse_registry(registry((old, None)), source="t")
    now = NOW.timestamp()
    assert past_instants(before, parse_registry(registry((old, None)), source="t"), now) == []
    edge = NOW - timedelta(seconds=ALLOWANCE)
    assert past_instants(before, parse_registry(registry((old, edge)), source="t"), now) == []
    late = edge - timedelta(seconds=1)
    found = past_instants(before, parse_registry(registry((old, late)), source="t"), now)
    assert [(f.party, f.field, f.at) for f in found] == [
        ("p", "suspension (Act §37(4)(1)) until", late)
    ]


def test_a_correction_states_a_reason(reg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = state(reg)
    for reason in ("", "   ", "x" * 2001):
        with pytest.raises(SystemExit):
            act(reg, *SUSPEND, "--since", at(timedelta(days=-1)), "--correction", reason)
        assert "reason" in capsys.readouterr().err and state(reg) == before
