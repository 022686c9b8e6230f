"""Pure Python against mypyc-compiled hot modules, step by step, per OCSP answer in process.

    python -m bench.bench_mypyc --store-dir DIR --steps ocsp flow http app \
        [--callgrind -n 500 --distinct 300 | -n 5000 --distinct 300]

For each prefix of ``--steps`` (pure Python first, then the first step, the first two,
...): copy the tree (crlbuilder, responder, bench, tests/support, pyproject.toml,
setup.py) to a temporary directory, compile those steps there as `make compiled` does
(``JPKI_VA_MYPYC=<steps> python setup.py build_ext --inplace``; the steps are
pyproject.toml's ``[tool.jpki-va.mypyc.steps]``), check that the compiled modules are the
ones imported, and run `bench.bench_hotpath` from the copy (instructions per answer with
``--callgrind``, else CPU µs per answer). The working tree is never compiled. The store
directory is only read (bench_hotpath keeps its request set next to it: give a directory
of your own, symlinks to a built store's parts are enough), and must stay fresh for the
whole run (bench_hotpath's warm-up is refused ``stale`` past the issuers' promised
nextUpdate: with config/builder.toml an hour after the last build, so refresh a copy with
``crlbuilder build`` first).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
COPIED: Final = (
    "crlbuilder", "responder", "bench", "tests/__init__.py", "tests/support", "pyproject.toml",
    "setup.py",
)  # fmt: skip


def _steps_table() -> dict[str, tuple[str, ...]]:
    """pyproject.toml's ``[tool.jpki-va.mypyc.steps]`` (what setup.py compiles)."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        steps = tomllib.load(f)["tool"]["jpki-va"]["mypyc"]["steps"]
    return {name: tuple(files) for name, files in steps.items()}


def copy_tree(dest: Path) -> None:
    for name in COPIED:
        src = ROOT / name
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(
                src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.so", "results")
            )
        else:
            shutil.copy2(src, dest / name)


def compile_steps(tree: Path, steps: list[str], table: dict[str, tuple[str, ...]]) -> None:
    env = {**os.environ, "JPKI_VA_MYPYC": ",".join(steps)}
    got = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=tree, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if got.returncode:
        raise SystemExit(
            f"mypyc build of {steps} failed:\n{got.stdout[-4000:]}{got.stderr[-4000:]}"
        )
    names = [p.removesuffix(".py").replace("/", ".") for s in steps for p in table[s]]
    check = "import importlib, sys; print('\\n'.join(importlib.import_module(m).__file__ for m in sys.argv[1:]))"
    files = subprocess.run(
        [sys.executable, "-c", check, *names], cwd=tree, check=True, capture_output=True, text=True
    ).stdout.split()
    pure = [f for f in files if not f.endswith(".so")]
    if pure:
        raise SystemExit(f"not compiled after the build: {pure}")


def measure(tree: Path, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "bench.bench_hotpath", "--store-dir", str(args.store_dir.resolve()),
        "-n", str(args.n), "--distinct", str(args.distinct), "--out", str(out),
    ]  # fmt: skip
    if args.callgrind:
        cmd.append("--callgrind")
    for load in args.only or ():
        cmd += ["--only", load]
    subprocess.run(cmd, cwd=tree, check=True)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store-dir", type=Path, required=True)
    p.add_argument(
        "--steps",
        nargs="+",
        default=None,
        help="step names of pyproject.toml [tool.jpki-va.mypyc.steps], in order",
    )
    p.add_argument("--no-pure", action="store_true", help="skip the pure Python run")
    p.add_argument("--skip", type=int, default=0, help="skip the first SKIP compiled prefixes")
    p.add_argument("--callgrind", action="store_true", help="instructions per answer")
    p.add_argument("-n", type=int, default=5000)
    p.add_argument("--distinct", type=int, default=300)
    p.add_argument("--only", action="append", default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    table = _steps_table()
    steps: list[str] = args.steps or list(table)
    unknown = [s for s in steps if s not in table]
    if unknown:
        raise SystemExit(f"unknown steps {unknown}; pyproject.toml has {list(table)}")
    prefixes = [steps[: i + 1] for i in range(args.skip, len(steps))]
    if not args.no_pure:
        prefixes.insert(0, [])
    results: dict[str, Any] = {}
    for prefix in prefixes:
        label = "+".join(prefix) or "pure"
        print(f"{label}:", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-mypyc-") as tmp:
            tree = Path(tmp)
            copy_tree(tree)
            if prefix:
                compile_steps(tree, prefix, table)
            results[label] = measure(tree, args, tree / "result.json")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
