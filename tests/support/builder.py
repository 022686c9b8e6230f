"""`builder_config`: the configuration of an in-process `crlbuilder.build.Builder` on a folder."""

from __future__ import annotations

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
