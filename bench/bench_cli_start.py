"""How long the command-line tools take to start: the wall time of a few commands an operator
and the test suite run by hand and from scripts, each run ``--runs`` times in a row, median
and spread printed (and, with ``--importtime``, the slowest imports of each by
``python -X importtime``). Not in ``make bench``: a check of start-up imports, not of the
service; the machine is shared, so compare runs made one right after the other.

    python -m bench.bench_cli_start [--runs 20] [--importtime]

The commands, after the interpreter's own start (``python -c pass``) for scale; a registry of
one party and a two-line notices file are made in a temporary directory first, with the tools
themselves:

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
        check=True, capture_output=True,
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


def _time(argv: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *argv], check=True, stdout=subprocess.DEVNULL)
        out.append(time.perf_counter() - t0)
    return out


def _slowest_imports(argv: list[str], n: int = 8) -> list[str]:
    """The ``n`` top-level imports (``python -X importtime``) with the most cumulative µs."""
    err = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
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
    args = ap.parse_args()
    os.environ.setdefault("COLUMNS", "100")
    with tempfile.TemporaryDirectory() as d:
        commands = _commands(Path(d))
        for name, argv in commands.items():
            t = _time(argv, args.runs)
            q = statistics.quantiles(t, n=4)
            print(f"{name:28} median {statistics.median(t) * 1000:6.1f} ms  "
                  f"(quartiles {q[0] * 1000:.1f}-{q[2] * 1000:.1f}, min {min(t) * 1000:.1f}, "
                  f"{args.runs} runs)", flush=True)  # fmt: skip
            if args.importtime:
                for row in _slowest_imports(argv):
                    print(f"    {row}")


if __name__ == "__main__":
    main()
