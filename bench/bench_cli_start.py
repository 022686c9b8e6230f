"""How long the command-line tools take to start: the wall time of a few commands an operator
and the test suite run by hand and from scripts, each run ``--runs`` times (median and
quartiles printed; with ``--importtime``, each one's slowest imports by ``python -X
importtime``). Not in ``make bench``: a check of start-up imports, not of the service; the
machine is shared, so compare runs made together: ``--against DIR`` runs every command also
from DIR (another checkout of the project, e.g. ``git archive REV | tar -x -C DIR``, with
``python -m compileall -q DIR/crlbuilder DIR/responder``), alternating run by run.

    python -m bench.bench_cli_start [--runs 20] [--importtime] [--against DIR]

The commands, after the interpreter's own start (``python -c pass``) for scale; a registry of
one party and a two-line notices file are made in a temporary directory first, with the tools
themselves, which is also every command's working directory (so that ``python -m`` imports
the installed project, or DIR's):

    responder --help
    crlbuilder --help
    responder registry list --registry REG
    crlbuilder outbox mark --file F
    crlbuilder build --help
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PARTY = [
    "--id", "bank-1", "--name", "bench", "--address", "bench", "--representative", "bench",
    "--office", "bench", "--start", "2024-04-01", "--title", "signature-verifier",
    "--category", "4", "--liability", "standard terms", "--token-sha256", "ab" * 32,
]  # fmt: skip


def _commands(tmp: Path) -> dict[str, list[str]]:
    registry = tmp / "registry.toml"
    notices = tmp / "notices.jsonl"
    notices.write_text('{"n": 1}\n{"n": 2}\n')
    subprocess.run(
        [sys.executable, "-m", "responder", "registry", "add", "--registry", str(registry),
         "--actor", "bench", *PARTY],
        check=True, capture_output=True, cwd=tmp,
    )  # fmt: skip
    reg = str(registry)
    return {
        "python -c pass": ["-c", "pass"],
        "responder --help": ["-m", "responder", "--help"],
        "crlbuilder --help": ["-m", "crlbuilder", "--help"],
        "responder registry list": ["-m", "responder", "registry", "list", "--registry", reg],
        "crlbuilder outbox mark": ["-m", "crlbuilder", "outbox", "mark", "--file", str(notices)],
        "crlbuilder build --help": ["-m", "crlbuilder", "build", "--help"],
    }


def _once(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *argv], check=True, stdout=subprocess.DEVNULL, cwd=cwd,
                   env=env)  # fmt: skip
    return time.perf_counter() - t0


def _said(name: str, t: list[float]) -> str:
    q = statistics.quantiles(t, n=4)
    return (f"{name:36} median {statistics.median(t) * 1000:6.1f} ms  (quartiles "
            f"{q[0] * 1000:.1f}-{q[2] * 1000:.1f}, min {min(t) * 1000:.1f}, {len(t)} runs)")  # fmt: skip


def _slowest_imports(argv: list[str], cwd: Path, env: dict[str, str], n: int = 8) -> list[str]:
    """The ``n`` imports (``python -X importtime``) with the most cumulative µs."""
    err = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=cwd,
        env=env,
    ).stderr  # fmt: skip
    rows = []
    for line in err.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        rows.append((int(cumulative), name.rstrip()))
    return [f"{us / 1000:7.1f} ms {name}" for us, name in sorted(rows, reverse=True)[:n]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--importtime", action="store_true", help="also the slowest imports")
    ap.add_argument(
        "--against", type=Path, metavar="DIR",
        help="another checkout: each command also run from it (PYTHONPATH), run by run",
    )  # fmt: skip
    args = ap.parse_args()
    env = {**os.environ, "COLUMNS": "100"}
    env.pop("PYTHONPATH", None)
    trees = {"": env}
    if args.against is not None:
        trees = {"this tree": env, str(args.against): {**env, "PYTHONPATH": str(args.against)}}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        commands = _commands(tmp)
        for name, argv in commands.items():
            times: dict[str, list[float]] = {tree: [] for tree in trees}
            for _ in range(args.runs):
                for tree, tree_env in trees.items():
                    times[tree].append(_once(argv, tmp, tree_env))
            for tree, t in times.items():
                print(_said(f"{name} {tree}".rstrip(), t), flush=True)
                if args.importtime:
                    for row in _slowest_imports(argv, tmp, trees[tree]):
                        print(f"    {row}")


if __name__ == "__main__":
    main()
