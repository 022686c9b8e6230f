"""What a reload (SIGHUP) does not apply is named by `reload_needs_restart`
(`responder.server.restart_fields`): docs/operations.md, "The units", says hosts, port,
workers, ``[metrics]`` and the PKI need a restart, and "Signing fairness" and "Where fresh
signatures are made" that ``[ocsp] sign_threads`` and ``signing`` do."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from responder.app import JpkiApp
from responder.config import ResponderConfig, load_config
from responder.server import restart_fields
from responder.v1 import changes
from tests.conftest import Built


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
        ("[watch]\nscan_limit = 5\n", "watch.scan_limit"),
        ("[watch]\nmax_per_party = 5\n", "watch.max_per_party"),
        ("[watch]\nreplication_wait_seconds = 5\n", "watch.replication_wait_seconds"),
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
        "[watch]\nunbound_cursors = false\nready_requires_replication = true\n",
    ],
)
def test_what_a_reload_applies_is_not_named(tmp_path: Path, toml: str) -> None:
    assert restart_fields(ResponderConfig(), _with(tmp_path, toml)) == []


@pytest.mark.real_clock  # the ledger flusher's timed wait hangs under libfaketime
def test_a_reload_ends_the_unbound_cursor_transition(built: Built, tmp_path: Path) -> None:
    """docs/operations.md ("The changes feed's watch lists") says: turn ``[watch]
    unbound_cursors`` off and reload. The feed's env is made once per worker, so the reload
    must reach it (it did not: the cursors were still read until a restart)."""
    cfg = built.app_config(tmp_path)
    a = JpkiApp(cfg, 0)
    try:
        assert a.v1 is not None
        env = a.v1.env(changes.CHANGES_ROUTE.path)
        assert isinstance(env, changes.WatchEnv) and env.config.unbound_cursors
        off = msgspec.structs.replace(
            cfg, watch=msgspec.structs.replace(cfg.watch, unbound_cursors=False)
        )
        assert restart_fields(cfg, off) == []
        a.reload(off)
        assert env.config == off.watch
        a.reload(cfg)
        assert env.config.unbound_cursors
    finally:
        a.close()
