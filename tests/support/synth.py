"""`synth_population`: a synthetic population's record files (``crlbuilder synth``), made
once per module by the record stream's test files for their nodes to publish
(tests/test_stream.py, tests/test_stream_compact.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def synth_population(
    tmp_path_factory: pytest.TempPathFactory, pki: Path, *, holders: int, seed: int
) -> Path:
    """The record files of ``holders`` synthetic holders of ``pki`` (``crlbuilder synth``,
    ``seed``), in a directory of their own."""
    out = tmp_path_factory.mktemp("pop") / "pop"
    subprocess.run(
        [sys.executable, "-m", "crlbuilder.cli", "synth", "--pki", str(pki),
         "--holders", str(holders), "--out", str(out), "--seed", str(seed), "--no-progress"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return out / "records"
