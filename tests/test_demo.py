"""`make demo` (`crlbuilder.demo`): what it runs is confined to its directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from crlbuilder.demo.__main__ import responder_flags
from responder.cli import parser
from responder.config import FIELD_TYPES, load_config, overrides_from_args


def test_the_demo_responder_keeps_every_file_under_the_demo_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # run from another directory, as `python -m crlbuilder.demo --dir D` may be: nothing
    # the responder writes (its ledger, quota table, watch lists) may land in the cwd
    # (make demo KEYS=softhsm, under var/demo-softhsm, shared var/demo's ledger so)
    d = tmp_path / "demo-softhsm"
    monkeypatch.chdir(tmp_path)
    args = parser().parse_args(["serve", *responder_flags(d, 8080)])
    cfg = load_config(args.config, overrides_from_args(args), environ={})
    paths = {
        "store.path": cfg.store.path,
        "store.pki": cfg.store.pki,
        "store.crl_dir": cfg.store.crl_dir,
        "store.facts_key_file": cfg.store.facts_key_file,
        "registry.path": cfg.registry.path,
        "ledger.dir": cfg.ledger.dir,
        "token.request_dir": cfg.token.request_dir,
        "token.issued_dir": cfg.token.issued_dir,
    }
    for field, path in paths.items():
        assert path is not None, field
        assert Path(path).is_relative_to(d), (field, path)
    # the fields left to their defaults are derived from the ledger's directory, or private
    assert cfg.watch.dir is None and cfg.watch.secret_file is None
    assert cfg.metrics.dir is None
    # every path-valued field of the configuration is one of the above or derived
    path_fields = {
        name
        for name, kind in FIELD_TYPES.items()
        if "Path" in str(kind) and not name.startswith(("server.tls.", "v1.", "group."))
    }
    assert path_fields <= set(paths) | {"watch.dir", "watch.secret_file", "metrics.dir"}
