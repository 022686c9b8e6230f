"""The spool holds record files (personal data: the four facts) until they are applied: the
demo makes it its owner's only, and the follow loop closes one it finds open to other users
(as the store's directory is narrowed to 0700), keeping the feeders' group (2770)."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import msgspec

from crlbuilder.build import Builder
from crlbuilder.demo.__main__ import make_spool
from crlbuilder.manifest import Manifest
from tests.support.builder import builder_config


def test_the_demo_spool_is_its_owners_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        (tmp_path / "a").mkdir()
        assert stat.S_IMODE(make_spool(tmp_path / "a").stat().st_mode) == 0o700
        (tmp_path / "b" / "spool").mkdir(parents=True, mode=0o755)  # an older demo's
        assert stat.S_IMODE(make_spool(tmp_path / "b").stat().st_mode) == 0o700
    finally:
        os.umask(old)


def test_the_follow_loop_closes_a_spool_open_to_others_and_says_so(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    cfg = builder_config(tmp_path, demo_pki[0])
    spool = tmp_path / "spool"
    spool.mkdir()
    spool.chmod(0o2775)
    log = io.StringIO()
    b = Builder(cfg, progress=False, log=log)
    try:
        b.follow(spool, 0.05, max_idle=0.1)
        b.follow(spool, 0.05, max_idle=0.1)  # closed now: no second warning
    finally:
        b.close()
    assert stat.S_IMODE(spool.stat().st_mode) == 0o2770
    warnings = [
        e["message"]
        for e in map(msgspec.json.decode, log.getvalue().splitlines())
        if e["event"] == "warning" and "spool" in e["message"]
    ]
    assert warnings == [f"spool {spool} was open to other users (mode 2775): narrowed to 2770 "
                        "(record files hold personal data until applied)"]  # fmt: skip
