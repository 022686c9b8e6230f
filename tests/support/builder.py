"""`builder_config`: the configuration of an in-process `crlbuilder.build.Builder` on a folder;
`as_of_the_clock` and `events_until` for a `crlbuilder build --follow` run as a process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import msgspec

from crlbuilder.config import BuilderConfig, write_facts_key


def builder_config(tmp: Path, pki: Path, **crl: object) -> BuilderConfig:
    """Store, records, spool, quarantine, notices, a new facts key and CRLs under ``tmp``; the
    PKI manifest ``pki``; one signing worker. ``crl`` adds keys of the ``[crl]`` table
    (``cycle_seconds``, ``delta``, ``full_every_seconds``, ...)."""
    key = tmp / "facts.key"
    write_facts_key(key)
    data = {
        "store": {"path": str(tmp / "store"), "map_size_gib": 1},
        "pki": {"manifest": str(pki)},
        "input": {"paths": [str(tmp / "records")], "spool": str(tmp / "spool"),
                  "quarantine": str(tmp / "quarantine.jsonl"), "notices": str(tmp / "notices.jsonl")},
        "keys": {"facts_key_file": str(key)},
        "ocsp": {"sign_workers": 1},
        "crl": {"directory": str(tmp / "crl"), **crl},
    }  # fmt: skip
    return msgspec.convert(data, BuilderConfig)


def as_of_the_clock(args: list[str]) -> list[str]:
    """``crlbuilder build`` arguments (`tests.conftest.Built.builder_args`) without ``--as-of``:
    a follow loop runs as of the clock."""
    at = args.index("--as-of")
    return args[:at] + args[at + 2 :]


def events_until(lines: Iterable[str], kind: str, events: list[dict[str, object]]) -> None:
    """Read a builder's stderr ``lines`` into ``events`` (its JSON events, in order) until an
    event of ``kind`` (the last one then), or the end of the lines."""
    for line in lines:
        if line.startswith("{"):
            events.append(msgspec.json.decode(line))
            if events[-1].get("event") == kind:
                return


def follow_process(args: list[str], *flags: str) -> subprocess.Popen[str]:
    """``crlbuilder build ARGS --follow FLAGS`` started, its events on a pipe of its stderr
    (read them with `events_until`; the caller stops it)."""
    p = subprocess.Popen(
        [str(Path(sys.executable).parent / "crlbuilder"), "build", *args, "--follow", *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert p.stderr is not None
    return p
