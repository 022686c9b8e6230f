"""The agreement's ``provisions_per_day`` (件数 per Japan day) in the registry file and the
``responder registry`` commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from responder.registry.lookup import Registry
from tests.test_registry import build, refused, text, verifier
from tests.test_registrycli import ADD_BANK, act, reg, run  # noqa: F401  (reg: the fixture)


def test_the_field_reaches_the_party() -> None:
    v = verifier("bank")
    v["agreement"]["provisions_per_day"] = 1_000_000
    assert build(text(v)).parties["bank"].provisions_per_day == 1_000_000
    assert build(text(verifier("plain"))).parties["plain"].provisions_per_day is None


@pytest.mark.parametrize("value", [0, -3])
def test_a_bound_below_one_is_refused_naming_the_field(value: int) -> None:
    v = verifier("bank")
    v["agreement"]["provisions_per_day"] = value
    message = refused(text(v))
    assert message == (
        "reg.toml: party 'bank': Expected `int` >= 1 - at `agreement.provisions_per_day`"
    )


def test_registry_update_sets_and_clears_the_bound(reg: Path) -> None:  # noqa: F811
    assert act(reg, "update", "sig-verifier", "--provisions-per-day", "5000") == 0
    assert Registry.load(reg).parties["sig-verifier"].provisions_per_day == 5000
    assert "provisions_per_day = 5000" in reg.read_text()
    assert act(reg, "update", "sig-verifier", "--provisions-per-day", "0") == 0  # 0: none
    assert Registry.load(reg).parties["sig-verifier"].provisions_per_day is None
    assert "provisions_per_day" not in reg.read_text()


def test_a_negative_bound_is_refused_and_nothing_changes(
    reg: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = reg.read_bytes()
    with pytest.raises(SystemExit) as exit_:
        act(reg, "update", "sig-verifier", "--provisions-per-day", "-5")
    assert exit_.value.code == 2
    assert "-5 is negative (0 means none)" in capsys.readouterr().err
    assert reg.read_bytes() == before


def test_registry_add_takes_the_bound(reg: Path) -> None:  # noqa: F811
    argv = ("add", "--registry", str(reg), *ADD_BANK, "--provisions-per-day", "70000")
    assert run(*argv, "--new-token", "--actor", "ops") == 0
    assert Registry.load(reg).parties["bank-1"].provisions_per_day == 70000


TOO_LARGE = "99999999999999999999"  # > 2**63 - 1: no 64-bit counter holds it
FIELDS = ["crl_cycle_seconds", "requests_per_second", "requests_per_day", "provisions_per_day"]


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", [2**63, int(TOO_LARGE)])
def test_an_agreement_value_past_int64_in_the_file_is_refused_naming_the_field(
    field: str, value: int
) -> None:
    v = verifier("bank")
    v["agreement"][field] = value
    src = text(v)
    assert f"{field} = {value}" in src  # the file holds it as written
    assert refused(src) == (
        f"reg.toml: party 'bank': Expected `int` <= 9223372036854775807 - at `agreement.{field}`"
    )
    v["agreement"][field] = 2**63 - 1  # the largest is taken
    assert "bank" in build(text(v)).parties


@pytest.mark.parametrize(
    "flag", ["--provisions-per-day", "--quota-per-day", "--quota-per-second", "--crl-cycle"]
)
@pytest.mark.parametrize("action", ["update", "add"])
def test_an_agreement_value_past_int64_on_the_command_line_is_refused_and_nothing_changes(
    reg: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    flag: str,
    action: str,
) -> None:
    before = reg.read_bytes()
    argv = ("update", "--registry", str(reg), "--id", "sig-verifier")
    if action == "add":
        argv = ("add", "--registry", str(reg), *ADD_BANK, "--new-token")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run(*argv, flag, TOO_LARGE)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after argparse's usage: the one-line refusal
    assert last.endswith(f"{flag}: {TOO_LARGE} is too large (at most 9223372036854775807)")
    assert reg.read_bytes() == before
    assert run(*argv, flag, str(2**63 - 1)) == 0
