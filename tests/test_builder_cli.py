"""`crlbuilder`'s command line: bad input is refused in one line (exit != 0), nothing written,
and every option's help says what it is and its default."""

from __future__ import annotations

from pathlib import Path

import pytest

from crlbuilder import cli
from crlbuilder.config import FLAGS
from crlbuilder.options import run_command
from tests.conftest import Built
from tests.support.clihelp import options


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """The exit code and stderr of ``crlbuilder argv`` run in this process, argparse's exits
    included; stderr must be one line and no traceback."""
    try:
        rc = cli.main(argv)
    except SystemExit as e:
        rc = int(e.code or 0)
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err, err
    return rc, err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "serial", ["-5", "0", "0x" + "ff" * 21, "xyz"], ids=["negative", "zero", "21-octets", "text"]
)
def test_status_refuses_a_serial_no_certificate_can_have(
    serial: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A negative serial raised OverflowError out of the store's key encoding (a traceback)."""
    rc, err = _refused(
        ["status", "--store", str(tmp_path), "--issuer", "sign-card-g1", "--serial", serial],
        capsys,
    )
    assert rc == 2 and "argument --serial" in err and repr(serial) in err


def test_status_names_the_0x_a_hex_serial_needs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The /v1 services and the demo write serials in hex without 0x; status reads 0x-hex."""
    rc, err = _refused(
        ["status", "--store", str(tmp_path), "--issuer", "sign-card-g1", "--serial", "5010E6F4"],
        capsys,
    )
    assert rc == 2 and "give 0x5010E6F4" in err


def test_max_idle_must_be_seconds_and_only_with_follow(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--max-idle -1 and nan were taken (nan: a loop that never stopped); without --follow the
    flag did nothing, silently."""
    for bad in ("-1", "nan"):
        rc, err = _refused(["build", "--follow", "--max-idle", bad], capsys)
        assert rc == 2 and "argument --max-idle" in err
    rc, err = _refused(["build", "--store", str(tmp_path / "s"), "--max-idle", "5"], capsys)
    assert rc == 2 and err == "crlbuilder build: error: --max-idle applies to --follow only"
    assert not (tmp_path / "s").exists()


def test_a_bad_flag_value_is_named_as_the_flag_not_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The error named the configuration file, whose value was fine, for a value the command
    line gave."""
    config = tmp_path / "builder.toml"
    config.write_text("[input]\nbatch_size = 100\n")
    rc, err = _refused(["build", "--config", str(config), "--batch-size", "0"], capsys)
    assert rc == 2 and err.startswith("crlbuilder build: error: --batch-size: input.batch_size:")
    config.write_text("[input]\nbatch_size = 0\n")
    rc, err = _refused(["build", "--config", str(config)], capsys)
    assert err.startswith(f"crlbuilder build: error: {config}: input.batch_size:")


def test_facts_key_says_why_it_cannot_write_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An output directory that cannot be made ended in a traceback; a file where the parent
    directory goes was reported as the key file existing."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    rc, err = _refused(["facts-key", "--out", str(blocker / "facts.key")], capsys)
    assert rc == 2 and err == f"crlbuilder facts-key: error: {blocker} is not a directory"
    rc, err = _refused(["facts-key", "--out", str(blocker / "sub" / "facts.key")], capsys)
    assert rc == 1 and err == f"crlbuilder facts-key: error: {blocker / 'sub'}: Not a directory"
    key = tmp_path / "facts.key"
    key.write_text("")
    rc, err = _refused(["facts-key", "--out", str(key)], capsys)
    assert rc == 2 and err.endswith("exists; refusing to replace a key")


def test_import_crl_checks_its_flags_before_making_a_store(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for flag, value in (("--changes-keep-days", "0"), ("--timeout", "-1")):
        store = tmp_path / f"store{flag}"
        rc, err = _refused(
            ["import-crl", "--store", str(store), "--pki", str(tmp_path), flag, value, "x.crl"],
            capsys,
        )
        assert rc == 2 and flag in err
        assert not store.exists()


@pytest.mark.integration  # the built population
def test_build_checks_its_input_before_making_a_store(
    built: Built, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A missing --input was found after the store had been created (and the registry warning
    printed): a new, empty store was left behind."""
    args = built.builder_args(tmp_path / "store", tmp_path / "crl")
    args[args.index("--input") + 1] = str(tmp_path / "absent")
    rc, err = _refused(["build", *args], capsys)
    assert rc == 2 and err.endswith("absent: no such record file or directory")
    assert not (tmp_path / "store").exists()


def test_every_configuration_flag_says_what_it_is_and_its_default() -> None:
    parser = cli.parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    build = sub.choices["build"]  # type: ignore[attr-defined]
    helps = {a.option_strings[0]: a.help or "" for a in build._actions if a.option_strings}
    for flag, (section, name) in FLAGS.items():
        text = helps[f"--{flag}"]
        assert text.startswith(f"{section}.{name}: ") and "(default: " in text, (flag, text)
    assert (
        "(default: 50000; > 0)" in helps["--batch-size"] and "(default: on)" in helps["--presign"]
    )
    assert "(default: 1.0; > 0, <= 86400)" in helps["--follow-interval"]  # its range too


def test_run_command_keeps_an_os_error_to_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.parser()

    def fails(_: object) -> int:
        raise PermissionError(13, "Permission denied", "/srv/x")

    sub = next(a for a in parser._actions if a.dest == "command")
    sub.choices["status"].set_defaults(func=fails)  # type: ignore[attr-defined]
    rc = run_command(parser, ["status", "--store", "s", "--issuer", "i", "--serial", "1"])
    assert rc == 1
    assert capsys.readouterr().err == "crlbuilder status: error: /srv/x: Permission denied\n"


def test_every_option_of_every_subcommand_is_explained() -> None:
    unexplained = [
        f"{name} {action.option_strings[0]}"
        for name, action in options(cli.parser(), "crlbuilder")
        if not action.help
    ]
    assert unexplained == []
