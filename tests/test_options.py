"""crlbuilder.options: the one parser of a command-line time, behind every time flag of both CLIs."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from crlbuilder import cli as crlbuilder_cli
from crlbuilder.options import instant
from crlbuilder.rules import JST
from responder import cli as responder_cli


def test_instant_reads_an_offset_or_z() -> None:
    assert instant("2026-04-01T00:00:00+09:00") == datetime(2026, 4, 1, tzinfo=JST)
    assert instant("2026-03-31T15:00:00Z") == datetime(2026, 3, 31, 15, tzinfo=UTC)
    assert instant("2026-04-01T00:00:00-05:00").utcoffset() == timedelta(hours=-5)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("2026-04-01T00:00:00", "has no UTC offset"),  # the machine's zone would be a guess
        ("2026-04-01", "has no UTC offset"),
        ("yesterday", "is not an ISO 8601 time"),
        ("", "is not an ISO 8601 time"),
    ],
)
def test_instant_refuses_naming_the_text(text: str, problem: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as err:
        instant(text)
    assert str(err.value).startswith(f"{text!r} {problem}")
    assert "2026-04-01T00:00:00+09:00" in str(err.value)  # the form wanted


NAIVE = "2026-04-01T00:00:00"
TIME_FLAGS: list[tuple[Callable[[], argparse.ArgumentParser], list[str]]] = [
    (crlbuilder_cli.parser, ["build", "--as-of", NAIVE]),
    (crlbuilder_cli.parser, ["import-crl", "--store", "s", "--pki", "p", "--as-of", NAIVE, "x"]),
    (
        crlbuilder_cli.parser,
        ["synth", "--pki", "p", "--holders", "1", "--out", "o", "--as-of", NAIVE],
    ),
    (responder_cli.parser, ["registry", "resume", "--id", "p", "--at", NAIVE]),
    (
        responder_cli.parser,
        ["registry", "suspend", "--id", "p", "--article", "a", "--reason", "r", "--since", NAIVE],
    ),
]


@pytest.mark.parametrize(("make", "argv"), TIME_FLAGS, ids=[" ".join(a[:2]) for _, a in TIME_FLAGS])
def test_every_time_flag_refuses_a_naive_time_alike(
    make: Callable[[], argparse.ArgumentParser], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        make().parse_args(argv)
    assert exit_.value.code == 2
    assert f"{NAIVE!r} has no UTC offset: give one, e.g. 2026-04-01T00:00:00+09:00" in (
        capsys.readouterr().err
    )


def test_registry_flags_also_take_a_japan_day() -> None:
    args = responder_cli.parser().parse_args(
        ["registry", "resume", "--id", "p", "--at", "2026-04-01"]
    )
    assert args.at == datetime(2026, 4, 1, tzinfo=timezone(timedelta(hours=9)))
    assert args.at.tzinfo is JST
