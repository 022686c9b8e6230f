"""A refused `crlbuilder build` changes nothing: every check (keys, the registry, the store's
kind) before the first write, and a store the refused run made is not left behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from crlbuilder import release
from crlbuilder.apply import register_issuers
from crlbuilder.build import Builder, issuer_table
from crlbuilder.cli import main as cli_main
from crlbuilder.config import ConfigError
from crlbuilder.demo.pki import init_pki
from crlbuilder.keys.signer import SignerError
from crlbuilder.manifest import Manifest, load_manifest
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from tests.support.builder import builder_config
from tests.support.nats import free_ports
from tests.support.store import dump_store


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki") / "pki"
    init_pki(d)
    return d


def broken_pki(pki_dir: Path, tmp: Path) -> tuple[Path, Manifest]:
    """A copy of the PKI whose first OCSP signer key is readable by others (refused)."""
    pki = tmp / "pki"
    shutil.copytree(pki_dir, pki)
    m = load_manifest(pki)
    m.path(m.issuers[0].ocsp_key).chmod(0o644)
    return pki, m


def test_a_build_refused_for_a_key_leaves_no_new_store(pki_dir: Path, tmp_path: Path) -> None:
    pki, _ = broken_pki(pki_dir, tmp_path)
    cfg = builder_config(tmp_path, pki)
    with pytest.raises(SignerError):
        Builder(cfg, progress=False)
    assert not Path(cfg.store.path).exists()


def test_a_build_refused_for_a_key_leaves_the_store_as_it_was(
    pki_dir: Path, tmp_path: Path
) -> None:
    """The store lists fewer issuers than the manifest: the table would be written first."""
    pki, m = broken_pki(pki_dir, tmp_path)
    cfg = builder_config(tmp_path, pki)
    s = Store.open(cfg.store.path, readonly=False, map_size=1 << 26)
    try:
        register_issuers(s, issuer_table(m)[:1])
    finally:
        s.close()
    before = dump_store(Path(cfg.store.path))
    with pytest.raises(SignerError, match="chmod 600"):
        Builder(cfg, progress=False)
    assert dump_store(Path(cfg.store.path)) == before


def test_a_build_refused_for_its_registry_leaves_the_store_as_it_was(
    pki_dir: Path, tmp_path: Path
) -> None:
    m = load_manifest(pki_dir)
    cfg = builder_config(tmp_path, pki_dir)
    s = Store.open(cfg.store.path, readonly=False, map_size=1 << 26)
    try:
        register_issuers(s, issuer_table(m)[:1])
    finally:
        s.close()
    before = dump_store(Path(cfg.store.path))
    cfg.input.registry = str(tmp_path / "missing-registry.toml")
    with pytest.raises(ConfigError, match="registry"):
        Builder(cfg, progress=False)
    assert dump_store(Path(cfg.store.path)) == before


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (["--as-of", "2026-01-10T00:00:00+00:00"], "--as-of applies to record files"),
        (["--source", "nats://"], "input.source"),
        ([], "cannot connect to NATS"),
    ],
    ids=["as-of", "bad-source", "unreachable"],
)
def test_a_stream_build_refused_before_reading_leaves_no_new_store(
    pki_dir: Path,
    tmp_path: Path,
    extra: list[str],
    why: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = builder_config(tmp_path, pki_dir)
    (port,) = free_ports(1)  # nothing listens there
    argv = [
        "build", "--store", cfg.store.path, "--map-size-gib", "1", "--pki", str(pki_dir),
        "--source", f"nats://127.0.0.1:{port}", "--facts-key-file", cfg.keys.facts_key_file,
        "--quarantine", cfg.input.quarantine, "--notices", cfg.input.notices,
        "--crl-dir", cfg.crl.directory, "--no-progress", *extra,
    ]  # fmt: skip
    assert cli_main(argv) == 2
    assert why in capsys.readouterr().err
    assert not Path(cfg.store.path).exists()


def _written_by(path: Path) -> str | None:
    s = Store.open(path, readonly=True)
    try:
        with s.read() as r:
            return r.written_by()
    finally:
        s.close()


def test_release_store_refusal_and_stamp() -> None:
    """`release.store_refusal`: a store a newer release wrote is refused (a rollback), one of
    this release or an older, or naming none, is not; a name that is no release is damaged.
    `release.stamps`: a builder names itself only over an older release or none."""
    ours = release.Release(1, 9)
    assert release.store_refusal(None, ours) is None
    assert release.store_refusal("1.9", ours) is None and release.store_refusal("1.3", ours) is None
    why = release.store_refusal("1.10", ours)
    assert why is not None and "written by release 1.10, newer than this builder's 1.9" in why
    assert "newer than" in (release.store_refusal("2.1", ours) or "")
    assert "damaged store" in (release.store_refusal("1.x", ours) or "")
    assert release.stamps(None, ours) and release.stamps("1.8", ours)
    assert not release.stamps("1.9", ours) and not release.stamps("1.10", ours)


def test_a_builder_names_its_release_and_an_older_one_refuses_the_store(
    pki_dir: Path, tmp_path: Path
) -> None:
    """A builder names its release in the store (`meta/written-by`); a store naming a newer one
    (a package rolled back after an upgrade) is refused, exit 2, nothing written: older rules
    would undo the newer's."""
    cfg = builder_config(tmp_path, pki_dir)
    Builder(cfg, progress=False).close()
    assert _written_by(Path(cfg.store.path)) == str(release.CURRENT)
    newer = release.Release(release.CURRENT.format, release.CURRENT.rules + 1)
    s = Store.open(cfg.store.path, readonly=False, map_size=1 << 26)
    try:
        with s.env.begin(write=True) as txn:
            txn.put(sf.META_WRITTEN_BY, str(newer).encode(), db=s.dbs[sf.DB_META])
    finally:
        s.close()
    before = dump_store(Path(cfg.store.path))
    with pytest.raises(sf.StoreFormatError, match=f"written by release {newer}, newer than"):
        Builder(cfg, progress=False)
    assert dump_store(Path(cfg.store.path)) == before
    # a store an older release named: this builder names itself over it
    s = Store.open(cfg.store.path, readonly=False, map_size=1 << 26)
    try:
        with s.env.begin(write=True) as txn:
            txn.put(sf.META_WRITTEN_BY, b"1.1", db=s.dbs[sf.DB_META])
    finally:
        s.close()
    Builder(cfg, progress=False).close()
    assert _written_by(Path(cfg.store.path)) == str(release.CURRENT)
