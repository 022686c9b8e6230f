"""The benchmarks' own command lines: `--help` answers as bench/README.md says (exit 0)."""

from __future__ import annotations

import pytest

from bench import bench_applied_size, bench_apply


def test_bench_apply_help_exits_0_with_its_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_apply.main(["--help"]) == 0
    assert "python -m bench.bench_apply cpu" in capsys.readouterr().out


def test_bench_apply_bad_usage_still_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_apply.main(["dump"]) == 2
    assert "python -m bench.bench_apply dump STORE" in capsys.readouterr().err


def test_bench_applied_size_help_exits_0_with_its_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench_applied_size.cli(["--help"])
    assert exit_.value.code == 0
    assert "python -m bench.bench_applied_size" in capsys.readouterr().out


def test_bench_applied_size_refuses_a_count_below_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench_applied_size.cli(["0"])
    assert exit_.value.code == 2
    assert "N must be at least 1" in capsys.readouterr().err
