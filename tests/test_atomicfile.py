"""Files written whole (`crlbuilder.atomicfile`) and their owners: every temporary file is 0600
from its creation, whatever the umask, and each owner sweeps its own stale temporaries (a
crash between the write and the rename left them, never removed) and no one else's."""

from __future__ import annotations

import os
import stat
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crlbuilder.atomicfile import STALE_TMP_SECONDS, write_new, write_whole
from crlbuilder.group.setup import dump_group_setup, load_group_setup
from crlbuilder.keys.approval import add_operator, hash_secret
from crlbuilder.manifest import Manifest, dump_manifest
from responder.ledger import LedgerWriter
from responder.registry import cli as registry_cli
from responder.storegauges import EntryCounts
from tests.test_crlimport import pki  # noqa: F401 (its PKI fixture)
from tests.test_group_pull import _group_dir


def crashed(path: Path, *, name: str | None = None, age: float = STALE_TMP_SECONDS + 60) -> Path:
    """A temporary of ``path`` as a writer killed before its rename leaves it."""
    p = path.with_name(name or f".{path.name}.{os.getpid() + 1}.tmp")
    p.write_bytes(b"half written")
    os.utime(p, (time.time() - age, time.time() - age))
    return p


@pytest.fixture
def file_modes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The mode of every regular file synced, under umask 0 (what a file made with the
    default mode would get)."""
    seen: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            seen.append(stat.S_IMODE(st.st_mode))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    old = os.umask(0)
    try:
        yield seen
    finally:
        os.umask(old)


def test_write_new_never_replaces_and_leaves_no_temporary(
    tmp_path: Path, file_modes: list[int]
) -> None:
    write_new(tmp_path / "a.pem", b"one", 0o644)
    with pytest.raises(FileExistsError):
        write_new(tmp_path / "a.pem", b"two", 0o644)
    assert (tmp_path / "a.pem").read_bytes() == b"one" and file_modes == [0o600, 0o600]
    assert [p.name for p in tmp_path.iterdir()] == ["a.pem"]
    write_whole(tmp_path / "a.pem", b"three", 0o644)
    assert stat.S_IMODE((tmp_path / "a.pem").stat().st_mode) == 0o644


def _manifest(tmp_path: Path, pki: Manifest) -> Path:  # noqa: F811
    dump_manifest(pki, pki.directory)
    return Path(pki.directory) / "pki.json"


def _group(tmp_path: Path, pki: Manifest) -> Path:  # noqa: F811
    g = tmp_path / "group"
    if not g.exists():
        _group_dir(pki, types.SimpleNamespace(url="http://127.0.0.1:9"), tmp_path)  # type: ignore[arg-type]
    dump_group_setup(load_group_setup(g), g)
    return g / "group.json"


def _operators(tmp_path: Path, pki: Manifest) -> Path:  # noqa: F811
    path = tmp_path / "operators.toml"
    add_operator(path, "carol", hash_secret(b"carol-secret-0001"), replace=path.exists())
    return path


def _registry(tmp_path: Path, pki: Manifest) -> Path:  # noqa: F811
    path = tmp_path / "registry.toml"
    registry_cli.write_atomic(path, b"# registry\n")
    return path


@pytest.mark.parametrize("write", [_manifest, _group, _operators, _registry])
def test_an_owner_writes_its_temporary_0600_and_sweeps_its_own_stale_ones(
    tmp_path: Path,
    pki: Manifest,  # noqa: F811
    write: Callable[[Path, Manifest], Path],
    file_modes: list[int],
) -> None:
    path = write(tmp_path, pki)  # where it writes
    stale = crashed(path)
    fresh = crashed(path, name=f".{path.name}.{os.getpid() + 2}.tmp", age=1)  # being written
    other = crashed(path.with_name("other.json"))  # another writer's
    file_modes.clear()
    write(tmp_path, pki)
    assert file_modes and set(file_modes) == {0o600}
    assert not stale.exists() and fresh.exists() and other.exists()


def test_a_ledger_worker_sweeps_its_own_stale_file_at_start(tmp_path: Path) -> None:
    mine = crashed(tmp_path / "x", name=".w0003-" + "a" * 32 + ".ledger.tmp")
    theirs = crashed(tmp_path / "x", name=".w0004-" + "b" * 32 + ".ledger.tmp")
    w = LedgerWriter.open(tmp_path, 3)
    try:
        assert not mine.exists() and theirs.exists()
    finally:
        w.close()


def test_the_store_entry_counts_sweep_their_stale_temporaries_at_start(tmp_path: Path) -> None:
    file = tmp_path / "store-entries.json"
    new, old = crashed(file), crashed(file, name=f"store-entries.json.{os.getpid() + 1}.tmp")
    EntryCounts(None, {}, tmp_path, min_interval=1.0)  # type: ignore[arg-type]
    assert not new.exists() and not old.exists()
