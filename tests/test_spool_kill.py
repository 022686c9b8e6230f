"""A follow loop killed (SIGKILL) while it applies a spool file loses nothing and decides nothing
differently: started again, it ends with the store and the quarantine of a loop never killed.

The builder runs in a child process (`_CHILD`) that kills itself at a chosen point: after the
``n``-th batch of the file committed (the file still in the spool), once the file is removed
(before its CRLs and answers), or, kept in ``done/``, once it is narrowed to 0600. The file is applied in batches of 10 lines and is built so that
the order of its lines matters: line 3 asks to revoke a certificate whose issuance is line 40
(refused, "unknown serial": quarantined, the certificate good), and line 5 is no JSON. A real
``crlbuilder build --follow`` process killed at random moments while a larger file applies
proves the same of the whole command.
"""

from __future__ import annotations

import io
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from crlbuilder.apply import Applier
from crlbuilder.build import Builder
from crlbuilder.config import BuilderConfig, write_facts_key
from crlbuilder.ingest import Located, Rejected
from crlbuilder.manifest import Manifest
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from tests.conftest import BIN, Built
from tests.support.builder import as_of_the_clock, builder_config
from tests.support.store import Dump, dump_store

_CHILD = """
import os, signal, sys
from pathlib import Path
import msgspec
from crlbuilder import build
from crlbuilder.apply import Applier
from crlbuilder.build import Builder
from crlbuilder.config import BuilderConfig, write_facts_key

cfg = msgspec.json.decode(sys.argv[1].encode(), type=BuilderConfig)
point, nth = sys.argv[2], int(sys.argv[3])
real_commit, real_consumed, calls = Applier.commit, Builder._consumed, [0]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def commit(self, items, **kw):
    real_commit(self, items, **kw)
    if point == "batch" and items and items[0].source.endswith("feed.jsonl"):
        calls[0] += 1
        if calls[0] == nth:
            die()

def consumed(self, *args):
    real_consumed(self, *args)
    if point == "removed":
        die()

real_fchmod = os.fchmod

def fchmod(fd, mode):
    real_fchmod(fd, mode)
    if point == "narrowed":
        die()

Applier.commit, Builder._consumed, os.fchmod = commit, consumed, fchmod
if point == "narrowed":
    cfg.input.spool_keep_seconds = 3600
b = Builder(cfg, progress=False, log=open(os.devnull, "w"))
b.follow(Path(cfg.input.spool), 0.05, max_idle=0.3)
b.close()
"""


def _line(i: int) -> bytes:
    if i == 3:  # the revocation of line 40's certificate, read before its issuance
        return msgspec.json.encode(
            {"type": "revocation-request", "id": "k-rev", "recorded_at": "2026-02-01T09:00:00+09:00",
             "serial": 9040, "issuer": "auth-card-g1", "reason": "loss"}
        )  # fmt: skip
    if i == 5:
        return b"{not json"
    return msgspec.json.encode(
        {"type": "issuance", "id": f"k-{i}", "recorded_at": "2026-01-05T09:00:00+09:00",
         "serial": 9000 + i, "family": "auth-card", "issuer": "auth-card-g1",
         "not_before": "2026-01-05T09:00:00+09:00", "not_after": "2030-01-05T09:00:00+09:00",
         "holder": f"{i + 100:064x}"}
    )  # fmt: skip


_FEED = b"".join(_line(i) + b"\n" for i in range(1, 51))


def _config(tmp: Path, pki: Path, key: Path | None) -> BuilderConfig:
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = builder_config(tmp, pki)
    if key is not None:
        cfg.keys.facts_key_file = str(key)  # the same facts key: the same record digests
    cfg.input.batch_size = 10
    cfg.crl.enabled = False
    cfg.ocsp.presign = False
    Path(cfg.input.spool).mkdir(mode=0o700)
    (Path(cfg.input.spool) / "feed.jsonl").write_bytes(_FEED)
    return cfg


def _run(cfg: BuilderConfig, point: str = "", nth: int = 0) -> int:
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, msgspec.json.encode(cfg).decode(), point, str(nth)],
        timeout=120, check=False, capture_output=True, text=True,
    )  # fmt: skip
    assert child.returncode in (0, -signal.SIGKILL), child.stderr[-3000:]
    return child.returncode


def _state(cfg: BuilderConfig) -> tuple[Dump, list[bytes]]:
    """The store's records (not its times, commit numbers nor the loop's own place in a file),
    and the quarantine's lines."""
    dump = dump_store(
        Path(cfg.store.path),
        skip=(sf.DB_CRLS, sf.DB_RESPONSES, sf.DB_CHANGES, sf.DB_OUTBOX),
        meta=(),
    )
    for name in ("status", "revoked"):  # a status's version is its commit's number
        dump[name] = [(k, v[4:]) if name == "status" else (k, v) for k, v in dump[name]]
    q = Path(cfg.input.quarantine)
    return dump, q.read_bytes().splitlines() if q.exists() else []


def _revoked(cfg: BuilderConfig, serial: int) -> bool:
    s = Store.open(Path(cfg.store.path), readonly=True)
    try:
        with s.read() as r:
            index = next(m.index for m in r.issuers() if m.id == "auth-card-g1")
            st = r.status(sf.status_key(index, serial))
            assert st is not None
            return st.revoked
    finally:
        s.close()


@pytest.fixture(scope="module")
def reference(
    tmp_path_factory: pytest.TempPathFactory, demo_pki: tuple[Path, Manifest]
) -> tuple[BuilderConfig, tuple[Dump, list[bytes]]]:
    cfg = _config(tmp_path_factory.mktemp("never-killed"), demo_pki[0], None)
    assert _run(cfg) == 0
    assert not (Path(cfg.input.spool) / "feed.jsonl").exists()
    assert not _revoked(cfg, 9040)  # its revocation was read before it: refused
    return cfg, _state(cfg)


@pytest.mark.integration  # builder processes killed
@pytest.mark.parametrize(
    ("point", "nth"),
    [("batch", 1), ("batch", 4), ("batch", 5), ("removed", 0), ("narrowed", 0)],
    ids=[
        "after-batch-1",
        "after-batch-4",
        "after-the-last-batch",
        "after-the-removal",
        "kept-after-its-narrowing",
    ],
)
def test_a_loop_killed_while_a_file_applies_ends_as_one_never_killed(
    tmp_path: Path,
    demo_pki: tuple[Path, Manifest],
    reference: tuple[BuilderConfig, tuple[Dump, list[bytes]]],
    point: str,
    nth: int,
) -> None:
    """Each record applied once, each refusal quarantined once, and the refusals of the
    batches committed before the kill stay refusals: before, the file read again from its first
    line judged them again against what its later lines had added (the revocation of line 3
    then found line 40's certificate and revoked it, while the quarantine said it was refused)."""
    cfg = _config(tmp_path, demo_pki[0], Path(reference[0].keys.facts_key_file))
    assert _run(cfg, point, nth) == -signal.SIGKILL
    assert _run(cfg) == 0
    assert not (Path(cfg.input.spool) / "feed.jsonl").exists()
    assert not _revoked(cfg, 9040)
    assert _state(cfg) == reference[1]


@pytest.mark.integration  # real builder processes, killed at random moments
def test_the_command_killed_at_random_while_a_large_file_applies_loses_nothing(
    built: Built, tmp_path: Path
) -> None:
    """``crlbuilder build --follow`` applying 20,000 records in batches of 500, killed (SIGKILL)
    at a random moment, three times, then left to finish: every record applied, once."""
    shutil.copytree(built.store, tmp_path / "store")
    args = as_of_the_clock(built.builder_args(store=tmp_path / "store", crl_dir=tmp_path / "crl"))
    spool = tmp_path / "store-spool"  # builder_args's --spool
    spool.mkdir()
    n = 20_000
    feed = b"".join(_big(i) for i in range(n))
    (spool / ".big.part").write_bytes(feed)
    (spool / ".big.part").rename(spool / "big.jsonl")
    cmd = [str(BIN / "crlbuilder"), "build", *args, "--batch-size", "500", "--follow"]
    rng = random.Random(17)
    cut: list[bool] = []
    store = tmp_path / "store"
    for _ in range(3):
        before = _applied_big(store)
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while _applied_big(store) == before and time.monotonic() < deadline:
            time.sleep(0.05)  # its start-up build done, the file being applied
        time.sleep(rng.uniform(0.0, 0.5))
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
        cut.append(_applied_big(store) < n)
    assert any(cut), "no kill landed while the file applied"
    out = subprocess.run(
        [*cmd, "--max-idle", "1"], capture_output=True, text=True, timeout=600, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert not (spool / "big.jsonl").exists()
    assert _applied_big(store) == n


def _applied_big(store: Path) -> int:
    """How many of the large file's records the store holds applied (0 before any)."""
    try:
        s = Store.open(store, readonly=True)
    except sf.StoreFormatError:
        return 0
    try:
        with s.env.begin() as txn:
            cur = txn.cursor(db=s.dbs[sf.DB_APPLIED])
            return sum(1 for k in cur.iternext(values=False) if bytes(k).startswith(b"big-"))
    finally:
        s.close()


@pytest.mark.integration  # builder processes, one with a file size limit
def test_a_full_disk_under_the_store_is_one_clear_line_and_loses_nothing(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """The store's disk fills while a spool file applies (a file size limit stands in for it:
    LMDB's pages cannot be written past it). Before: a traceback, ``lmdb.Error: mdb_txn_commit:
    Input/output error``. Now one line naming the store and what to look at, exit 1; what was
    committed stays, and the builder started again with room applies the rest, once."""
    root = Path(__file__).resolve().parents[1]
    key = tmp_path / "facts.key"
    write_facts_key(key)
    (tmp_path / "records").mkdir()
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    cmd = [
        str(BIN / "crlbuilder"), "build", "--config", str(root / "config" / "builder.toml"),
        "--store", str(tmp_path / "store"), "--pki", str(demo_pki[0]),
        "--input", str(tmp_path / "records"), "--facts-key-file", str(key),
        "--quarantine", str(tmp_path / "quarantine.jsonl"),
        "--notices", str(tmp_path / "notices.jsonl"), "--crl-dir", str(tmp_path / "crl"),
        "--spool", str(spool), "--no-progress", "--batch-size", "500",
        "--follow", "--max-idle", "0.5",
    ]  # fmt: skip
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert first.returncode == 0, first.stderr[-3000:]
    n = 5000
    (spool / "big.jsonl").write_bytes(b"".join(_big(i) for i in range(n)))
    room = (tmp_path / "store" / "data.mdb").stat().st_size + (64 << 10)

    def full_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (room, room))

    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, check=False, preexec_fn=full_disk
    )
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert f"crlbuilder build: error: {tmp_path / 'store'}: the store could not be written (" in (
        out.stderr
    )
    assert (spool / "big.jsonl").exists() and _applied_big(tmp_path / "store") < n
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not (spool / "big.jsonl").exists() and _applied_big(tmp_path / "store") == n


def _big(i: int) -> bytes:
    return msgspec.json.encode(
        {"type": "issuance", "id": f"big-{i}", "recorded_at": "2026-01-05T09:00:00+09:00",
         "serial": 7_000_000 + i, "family": "auth-card", "issuer": "auth-card-g1",
         "not_before": "2026-01-05T09:00:00+09:00", "not_after": "2030-01-05T09:00:00+09:00",
         "holder": f"{i + 10**9:064x}"}
    ) + b"\n"  # fmt: skip


def test_sigterm_while_a_file_applies_stops_after_the_batch_and_the_file_is_taken_up(
    tmp_path: Path,
    demo_pki: tuple[Path, Manifest],
    reference: tuple[BuilderConfig, tuple[Dump, list[bytes]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM (systemctl stop) arrives while the second batch of the file applies. Before, the
    loop stopped only after the whole file (a file of millions of records outlasts systemd's
    TimeoutStopSec, then SIGKILL). Now it stops after the batch being committed, the file left
    in the spool, and the next loop takes it up there: the same store as a loop never stopped."""
    cfg = _config(tmp_path, demo_pki[0], Path(reference[0].keys.facts_key_file))
    real, calls = Applier.commit, [0]

    def commit(self: Applier, items: list[Located | Rejected], **kw: Any) -> None:
        real(self, items, **kw)
        if items and items[0].source.endswith("feed.jsonl"):
            calls[0] += 1
            if calls[0] == 2:
                os.kill(os.getpid(), signal.SIGTERM)  # the loop's StopRequest takes it

    monkeypatch.setattr(Applier, "commit", commit)
    log = io.StringIO()
    b = Builder(cfg, progress=False, log=log)
    try:
        b.follow(Path(cfg.input.spool), 0.05, max_idle=0.3)
        assert calls[0] == 2 and (Path(cfg.input.spool) / "feed.jsonl").exists()
        stopped = [e for e in map(msgspec.json.decode, log.getvalue().splitlines())
                   if e["event"] == "stopped"]  # fmt: skip
        assert [(e["file"], e["records_read"]) for e in stopped] == [("feed.jsonl", 20)]
        b.follow(Path(cfg.input.spool), 0.05, max_idle=0.3)
    finally:
        b.close()
    assert calls[0] == 5  # the three batches left, none read twice
    assert not (Path(cfg.input.spool) / "feed.jsonl").exists()
    assert _state(cfg) == reference[1]
