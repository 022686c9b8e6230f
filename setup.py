"""The optional native build of the OCSP hot path with mypyc (issue 17); off unless asked.

``pip install -e .`` (`make venv`) compiles nothing: the package stays pure Python.
``JPKI_VA_MYPYC=1 python setup.py build_ext --inplace`` (`make compiled`) compiles the
modules listed in pyproject.toml ``[tool.jpki-va.mypyc]`` with mypyc (it ships with mypy,
a dev dependency; it needs a C compiler and Python's headers) next to their sources: one
shared library (``responder/_hotpath__mypyc*.so``) and one small extension per module,
which Python imports instead of the ``.py`` file. `make clean` removes them. The modules
are those a worker spends its instructions in per OCSP answer, measured step by step with
``python -m bench.bench_mypyc``.

``JPKI_VA_MYPYC`` names the steps to compile, comma-separated (``ocsp,flow``), or ``1``
for all of them.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from setuptools import setup

HERE = Path(__file__).resolve().parent
PACKAGES = ("crlbuilder", "responder")


def native_config() -> dict[str, Any]:
    """pyproject.toml's ``[tool.jpki-va.mypyc]``: ``group`` and ``steps`` (name -> files)."""
    with (HERE / "pyproject.toml").open("rb") as f:
        config: dict[str, Any] = tomllib.load(f)["tool"]["jpki-va"]["mypyc"]
    return config


def modules(choice: str, steps: dict[str, list[str]]) -> list[str]:
    """The source files of the steps named in ``choice`` (``1``: every step)."""
    names = list(steps) if choice.strip() == "1" else [s.strip() for s in choice.split(",")]
    unknown = [n for n in names if n not in steps]
    if unknown:
        raise SystemExit(f"JPKI_VA_MYPYC: unknown step(s) {unknown}; known: {list(steps)}")
    return [path for name in names for path in steps[name]]


def ext_modules() -> list[Any]:
    choice = os.environ.get("JPKI_VA_MYPYC", "")
    if not choice:
        return []
    from mypyc.build import mypycify  # only when asked: a dev dependency (mypy)

    config = native_config()
    files = modules(choice, config["steps"])
    # type-checked as `make typecheck` checks the tree (both packages, strict); only the
    # steps' files are compiled
    checked = sorted(
        str(p.relative_to(HERE)) for pkg in PACKAGES for p in (HERE / pkg).rglob("*.py")
    )
    return list(
        mypycify(checked, only_compile_paths=files, opt_level="3", group_name=config["group"])
    )


setup(ext_modules=ext_modules())
