"""The responder's configuration (responder/config.py) and its example file."""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from responder.config import (
    FIELD_PATHS,
    ConfigError,
    ResponderConfig,
    add_arguments,
    flag_fields,
    load_config,
    overrides_from_args,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "responder.toml"


def _leaves(tree: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _leaves(value, f"{prefix}{key}.")
        else:
            out.add(prefix + key)
    return out


def test_defaults() -> None:
    config = load_config(None, {}, environ={})
    assert config == ResponderConfig()
    assert config.server.hosts == ("127.0.0.1",) and config.server.port == 8080
    limits = config.server.limits
    assert (limits.max_body_bytes, limits.max_header_bytes) == (65536, 8192)
    assert (limits.header_timeout, limits.idle_timeout, limits.drain_timeout) == (5, 30, 10)
    assert limits.max_connections == 10000
    assert config.ocsp.max_certids == 16 and config.ocsp.max_nonce == 128
    assert config.server.worker_count >= 1
    assert not config.server.tls.enabled


def test_example_documents_every_field_and_loads() -> None:
    text = EXAMPLE.read_text()
    as_is = load_config(EXAMPLE, {}, environ={})
    assert as_is == ResponderConfig()  # the example shows the defaults
    uncommented = re.sub(r"(?m)^# (\w+ = )", r"\1", text)
    assert _leaves(tomllib.loads(uncommented)) == set(FIELD_PATHS)
    for field in FIELD_PATHS:  # and a comment explains each
        name = field.rsplit(".", 1)[1]
        line = next(i for i, ln in enumerate(uncommented.splitlines()) if ln.startswith(name))
        assert uncommented.splitlines()[line - 1].startswith("#"), field


def test_file_environment_and_flags_in_order(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(
        '[server]\nport = 9000\nworkers = 3\n[store]\npath = "from-file"\npki = "pki-file"\n'
    )
    env = {"JPKI_VA_STORE": "/env/store", "JPKI_VA_REGISTRY": "/env/reg.toml"}
    config = load_config(path, {"server.port": 9100}, environ=env)
    assert config.server.port == 9100  # flag over file
    assert config.server.workers == 3
    assert config.store.path == Path("/env/store")  # environment over file
    assert config.store.pki == Path("pki-file")
    assert config.registry.path == Path("/env/reg.toml")
    flagged = load_config(path, {"store.path": "/flag/store"}, environ=env)
    assert flagged.store.path == Path("/flag/store")  # flag over environment


@pytest.mark.parametrize(
    ("toml", "field", "problem"),
    [
        ("[server]\nprot = 1\n", "server", "unknown field `prot`"),
        ("[server]\nport = '80'\n", "server.port", "Expected `int`, got `str`"),
        ("[server]\nport = 70000\n", "server.port", "<= 65535"),
        ("[server.limits]\nheader_timeout = 0\n", "server.limits.header_timeout", "> 0"),
        ("[server.tls]\ncert = 'a.pem'\n", "server.tls", "cert and key"),
        (
            "[server.tls]\ncert = 'a'\nkey = 'b'\nclient_cert = 'required'\n",
            "server.tls",
            "client_ca",
        ),
        ("[server.tls]\nclient_cert = 'maybe'\n", "server.tls.client_cert", "Invalid enum"),
        ("[server]\ntrusted_proxies = ['proxy.example']\n", "server", "not an address"),
        ("[server]\nhosts = []\n", "server", "at least one"),
        ("[server]\nclient_cert_header = 'Bad Header'\n", "server", "header name"),
        ("[log]\naccess_log = 'some'\n", "log.access_log", "Invalid enum"),
        ("[log]\nsample_rate = 2.0\n", "log.sample_rate", "<= 1.0"),
        ("[ocsp]\nmax_nonce = 129\n", "ocsp.max_nonce", "<= 128"),
        # RFC 9654 §2.1: clients send 32-byte nonces, which a responder must accept
        ("[ocsp]\nmax_nonce = 16\n", "ocsp.max_nonce", ">= 32"),
        ("[store]\npath = ''\n", "store.path", "empty path"),
        ("store = 3\n", "store", "Expected `object`"),
        ("[server\n", "", "invalid TOML"),
    ],
)
def test_errors_name_the_file_and_the_field(
    tmp_path: Path, toml: str, field: str, problem: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path, {}, environ={})
    err = info.value
    assert err.source == str(path)
    assert err.field == field
    assert problem in err.problem
    assert str(err).startswith(f"{path}: {field}")


def test_missing_file_and_unknown_override(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml", {})
    with pytest.raises(ConfigError, match="no such field") as info:
        load_config(None, {"server.nope": 1})
    assert info.value.source == "<command line>"


def test_every_field_has_a_flag_and_flags_round_trip() -> None:
    assert sorted(flag_fields().values()) == sorted(FIELD_PATHS)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert overrides_from_args(parser.parse_args([])) == {}
    ns = parser.parse_args(
        [
            "--host",
            "127.0.0.1",
            "--host",
            "::1",
            "--port",
            "0",
            "--workers",
            "2",
            "--store",
            "/s",
            "--pki",
            "/p",
            "--registry",
            "/r.toml",
            "--max-body-bytes",
            "1000",
            "--header-timeout",
            "1.5",
            "--tls-client-cert",
            "optional",
            "--access-log",
            "all",
        ]
    )
    overrides = overrides_from_args(ns)
    assert overrides["server.hosts"] == ["127.0.0.1", "::1"]
    assert overrides["server.port"] == 0
    with pytest.raises(ConfigError, match="needs TLS"):
        load_config(None, overrides, environ={})  # client certificates need TLS
    del overrides["server.tls.client_cert"]
    config = load_config(None, overrides, environ={})
    assert config.server.hosts == ("127.0.0.1", "::1")
    assert config.server.workers == 2 and config.server.limits.max_body_bytes == 1000
    assert config.server.limits.header_timeout == 1.5
    assert config.store.path == Path("/s") and config.registry.path == Path("/r.toml")
    assert config.log.access_log == "all"
    with pytest.raises(SystemExit):
        parser.parse_args(["--access-log", "sometimes"])


def test_every_flag_says_its_built_in_default() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = " ".join(parser.format_help().split())
    defaults = ResponderConfig()
    for flag, field in flag_fields().items():
        at = text.index(f"[{field}; default: ")
        assert flag in text[:at], flag
    assert "[server.port; default: 8080; >= 0, <= 65535]" in text  # its range too
    assert "[server.hosts; default: 127.0.0.1]" in text
    assert "[server.reuseport; default: on]" in text
    assert "[store.crl_dir; default: unset]" in text
    assert f"[ocsp.max_certids; default: {defaults.ocsp.max_certids}; >= 1]" in text
