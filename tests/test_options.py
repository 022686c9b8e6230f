"""crlbuilder.options: the one command-line time parser and the one ConfigError of both binaries."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from crlbuilder import cli as crlbuilder_cli
from crlbuilder import config as crlbuilder_config
from crlbuilder.options import ConfigError, instant, transfer_rate
from crlbuilder.rules import JST
from responder import cli as responder_cli
from responder import config as responder_config


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


def test_both_configurations_refuse_with_the_one_config_error(tmp_path: Path) -> None:
    """crlbuilder's and the responder's configuration errors are one class: source, field, problem."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[store]\nmap_size_gib = 0\n")
    with pytest.raises(ConfigError) as built:
        crlbuilder_config.load_config(bad)
    assert (built.value.source, built.value.field) == (str(bad), "store.map_size_gib")
    assert str(built.value) == f"{bad}: store.map_size_gib: {built.value.problem}"
    bad.write_text("[server]\nport = -1\n")
    with pytest.raises(ConfigError) as served:
        responder_config.load_config(bad, {}, environ={})
    assert (served.value.source, served.value.field) == (str(bad), "server.port")
    for load in (crlbuilder_config.load_config, responder_config.load_config):
        with pytest.raises(ConfigError, match=r"absent\.toml: cannot read \("):
            load(tmp_path / "absent.toml")
    bad.write_text("[crl.retention_days_by_category.sign-card]\nlost = 1\n")
    with pytest.raises(ConfigError) as category:
        crlbuilder_config.load_config(bad)
    assert category.value.field == "crl.retention_days_by_category.sign-card"
    assert category.value.problem == "unknown category 'lost'"


def test_transfer_rate_reads_bytes_a_second_with_binary_units() -> None:
    assert [transfer_rate(t) for t in ("1024", "512K", "1M", "1m", "2G")] == [
        1024, 512 << 10, 1 << 20, 1 << 20, 2 << 30,
    ]  # fmt: skip


@pytest.mark.parametrize("text", ["", "0", "1023", "1.5M", "-1M", "1MB", "M", "1 M x", "inf"])
def test_transfer_rate_refuses_naming_the_text(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=repr(text).replace(".", r"\.")):
        transfer_rate(text)


def _read_in_a_thread(path: Path) -> BaseException | None:
    """`read_toml(path)` in a thread given 5 s; what it raised (None: it returned). A reader
    still blocked then is released (a writer opens and closes the pipe) and the test fails."""
    import threading

    from crlbuilder.options import read_toml

    got: list[BaseException | None] = []

    def run() -> None:
        try:
            read_toml(path)
            got.append(None)
        except BaseException as exc:
            got.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(5)
    if t.is_alive():
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        t.join(5)
        pytest.fail(f"read_toml({path}) still blocked after 5 s")
    return got[0]


@pytest.mark.parametrize("target", ["fifo", "/dev/zero", "dir"])
def test_a_configuration_that_is_no_regular_file_is_refused_at_once(
    tmp_path: Path, target: str
) -> None:
    """The responder's master reads its configuration again on every reload, in the loop
    that supervises the workers: a path replaced by a symbolic link to a named pipe held it
    in ``open`` for ever (no worker restarted, no SIGTERM handled), one to /dev/zero filled
    its memory. Each is refused at once, naming the file."""
    where = tmp_path / "target"
    if target == "fifo":
        os.mkfifo(where)
    elif target == "dir":
        where.mkdir()
    else:
        where = Path(target)
    link = tmp_path / "responder.toml"
    link.symlink_to(where)
    exc = _read_in_a_thread(link)
    assert isinstance(exc, ConfigError), exc
    assert str(link) in str(exc)
    assert "not a regular file" in str(exc) or "Is a directory" in str(exc)


def test_a_configuration_too_large_is_refused(tmp_path: Path) -> None:
    from crlbuilder.options import MAX_TOML_BYTES

    big = tmp_path / "big.toml"
    big.write_bytes(b"# " + b"x" * MAX_TOML_BYTES + b"\n")
    exc = _read_in_a_thread(big)
    assert isinstance(exc, ConfigError) and "larger than" in str(exc), exc
    small = tmp_path / "small.toml"
    small.write_text("[server]\nport = 1\n# 日本語\n", encoding="utf-8")
    assert _read_in_a_thread(small) is None
