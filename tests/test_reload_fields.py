"""What a reload (SIGHUP) does not apply is named by `reload_needs_restart`
(`responder.server.restart_fields`): docs/operations.md, "The units", says hosts, port,
workers, ``[metrics]`` and the PKI need a restart, and "Signing fairness" and "Where fresh
signatures are made" that ``[ocsp] sign_threads`` and ``signing`` do."""

from __future__ import annotations

from pathlib import Path

import pytest

from responder.config import ResponderConfig, load_config
from responder.server import restart_fields

pytestmark = pytest.mark.unit


def _with(tmp_path: Path, toml: str) -> ResponderConfig:
    path = tmp_path / "r.toml"
    path.write_text(toml, encoding="utf-8")
    return load_config(path, {}, environ={})


def test_nothing_changed_names_nothing() -> None:
    assert restart_fields(ResponderConfig(), ResponderConfig()) == []


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("[server]\nport = 9000\n", "port"),
        ("[server]\nworkers = 3\n", "workers"),
        ("[metrics]\nport = 9999\n", "metrics.port"),
        ("[metrics]\nrender_interval = 2.0\n", "metrics.render_interval"),
        ("[metrics]\nflush_interval = 2.0\n", "metrics.flush_interval"),
        ("[metrics]\nmax_connections = 4\n", "metrics.max_connections"),
        ("[store]\npki = 'other/pki'\n", "store.pki"),
        ("[ocsp]\nsign_threads = 4\n", "ocsp.sign_threads"),
        ("[ocsp]\nsigning = 'loop'\n", "ocsp.signing"),
    ],
)
def test_a_field_a_reload_does_not_apply_is_named(tmp_path: Path, toml: str, named: str) -> None:
    assert restart_fields(ResponderConfig(), _with(tmp_path, toml)) == [named]


@pytest.mark.parametrize(
    "toml",
    [
        "[ocsp]\nsign_queue_per_party = 8\nmax_certids = 4\n",
        "[server.limits]\nheader_timeout = 2\n",
        "[log]\naccess_log = 'all'\n",
        "[ledger]\ncollect_interval = 5\n",
    ],
)
def test_what_a_reload_applies_is_not_named(tmp_path: Path, toml: str) -> None:
    assert restart_fields(ResponderConfig(), _with(tmp_path, toml)) == []
