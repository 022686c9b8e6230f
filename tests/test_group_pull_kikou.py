"""`crlbuilder group pull` against the real 機構 responder enforcing the agreed cycle (提供の周期).

The 機構 (`responder serve` on the built store) serves its CRL files with the group
``group-verifier``'s agreement limiting each file to one download an hour (``--crl-cycle
3600``, Ord §33(2)). README's step 3 (a one-off pull, then ``--follow``) and any restart
within the hour: the pull asks with the ETags its store kept at the import (If-None-Match),
the 機構 answers 304, nothing is downloaded or counted twice in its ledger (帳簿, Act §40),
and no pass fails. A file the 機構 changes within the hour is refused 429: the pull logs the
agreed cycle and the time of its next try, not an unreachable 機構. The second pull runs
under the seccomp rules of deploy/systemd/jpki-va-group-pull.service (`tests.test_deploy`):
the unit lets it reach the 機構.
"""

from __future__ import annotations

import ctypes.util
import json
import shutil
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

import pytest

from crlbuilder.rules import JST
from responder.ledger import Ledger
from tests.conftest import BIN, Built, run_tool
from tests.support.harness import start_server
from tests.support.procs import started
from tests.support.wait import until
from tests.test_deploy import GROUP_PULL_UNIT, _sandboxed
from tests.test_group_appliance import GROUP, init_args

pytestmark = [pytest.mark.integration, pytest.mark.real_clock]

CYCLE: Final = 3600


def _lines(text: str, event: str) -> list[dict[str, object]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            obj = json.loads(line)
            if obj.get("event") == event:
                out.append(obj)
    return out


def _pull(group: Path, *, sandboxed: bool = False) -> list[dict[str, object]]:
    """A one-off `crlbuilder group pull` (under the pull unit's seccomp rules when
    ``sandboxed``, where libseccomp is): its exit code 0, its ``group-pull`` lines."""
    argv = [str(BIN / "crlbuilder"), "group", "pull", "--group", str(group)]
    if sandboxed and ctypes.util.find_library("seccomp") is not None:
        argv = _sandboxed(GROUP_PULL_UNIT, *argv)
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    return _lines(done.stderr, "group-pull")


def _downloads(ledger: Path) -> int:
    """The group's CRL file downloads the 機構's ledger counts (today and yesterday, JST)."""

    today = datetime.now(JST).date()
    with Ledger.open(ledger) as led:
        led.collect()
        totals = led.totals(today - timedelta(days=1), today, by=("party", "service", "method"))
    return totals.get((GROUP, "sign-crl-file", "crl-file"), 0)


def test_restarts_within_the_cycle_get_304_and_a_429_is_the_cycle(
    built: Built, tmp_path: Path
) -> None:
    d = tmp_path / "kikou"
    d.mkdir()
    registry = d / "registry.toml"
    run_tool("responder", "registry", "init", "--pki", str(built.pki), "--out", str(registry))
    run_tool(
        "responder", "registry", "update", "--registry", str(registry), "--id", GROUP,
        "--crl-cycle", str(CYCLE),
    )  # fmt: skip
    crl = tmp_path / "crl"
    shutil.copytree(built.crl_dir, crl)  # the session's files stay as built
    with start_server(built, d, extra=("--crl-dir", str(crl))) as kikou:
        group = tmp_path / "g"
        run_tool("crlbuilder", *init_args(built, kikou.url, group, cycle=CYCLE))

        first = _pull(group)
        imported = [p for p in first if p["status"] == "imported"]
        assert imported and {p["status"] for p in first} <= {"imported", "absent"}, first
        until(lambda: _downloads(d / "ledger") == len(imported), timeout=10, interval=0.5)

        # README step 3's one-off pull done: a second one-off pull, then --follow
        again = _pull(group, sandboxed=True)
        assert [p["status"] for p in again] == [
            "unchanged" if p["status"] == "imported" else "absent" for p in first
        ], again
        log = tmp_path / "follow.log"
        args = [str(BIN / "crlbuilder"), "group", "pull", "--group", str(group), "--follow"]
        with started(args, log=log):
            until(lambda: _lines(log.read_text(), "group-pass"), timeout=30, interval=0.2)
        text = log.read_text()
        (pass_,) = _lines(text, "group-pass")
        assert pass_["status"] == "ok" and pass_["next_in"] == CYCLE, text
        followed = _lines(text, "group-pull")
        assert [p["status"] for p in followed] == [p["status"] for p in again], text
        # none of it was a download: the 機構's ledger counts each file once
        time.sleep(2.5)  # its workers flush every second
        assert _downloads(d / "ledger") == len(imported)

        # the 機構 publishes a file anew within the hour (other bytes: a new ETag, which comes
        # from the CRL itself; the group is refused before it downloads them, so another
        # whole CRL's bytes stand in for the new one)
        full = next(p for p in first if p["kind"] == "full" and p["status"] == "imported")
        path = crl / f"{full['issuer']}.crl"
        other = next(f for f in sorted(crl.glob("*.crl")) if f.read_bytes() != path.read_bytes())
        tmp = path.with_name(".new.crl.tmp")
        tmp.write_bytes(other.read_bytes())
        tmp.replace(path)  # published by rename, as the builder does
        limited = [p for p in _pull(group) if p["issuer"] == full["issuer"]]
        assert limited[0]["kind"] == "full" and limited[0]["status"] == "limited", limited
        detail = str(limited[0]["detail"])
        retry = limited[0]["retry_after"]
        assert isinstance(retry, float) and 0 < retry <= CYCLE, limited
        assert detail.startswith("the agreed cycle (取決め") and "; next try at 20" in detail
        assert all(p["status"] != "unreachable" for p in limited)
        time.sleep(2.5)
        assert _downloads(d / "ledger") == len(imported)  # a 429 is no download either
