"""`crlbuilder group pull` killed (SIGKILL) mid-pass, then run again: nothing it received is lost.

A real pull process against a 機構 played by a local HTTP server (`tests.test_group_pull.Kikou`)
that enforces the agreed cycle the way the 機構's responder does (`responder.app`: a 304 to the
ETag the group holds, a 429 ``cycle`` to a second download of a file within the cycle).
"""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from crlbuilder.group.setup import dump_group_setup, load_group_setup
from crlbuilder.manifest import Manifest
from tests.conftest import BIN
from tests.support.grouppull import crl_number, pulling, staged_left, stop_with_sigterm, wait_asked
from tests.test_crlimport import G1, G2, make_crl, pki  # noqa: F401 (its PKI fixture)
from tests.test_group_pull import (  # noqa: F401 (its fixture)
    Kikou,
    _group_dir,
    cert_sha256,
    group_issuer,
    kikou,
)

pytestmark = [pytest.mark.integration, pytest.mark.real_clock]  # the held answer's timed wait


def test_a_first_pull_killed_after_its_first_import_keeps_what_it_imported(
    kikou: Kikou,  # noqa: F811
    pki: Manifest,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The first pull of a group (no store yet) stages its store and put it in place only at
    the end of its pass, after every issuer's files: killed after it had imported a full CRL
    (here while it waits for the delta, as for another issuer's 2 GiB file), the next run swept
    the staged store away and downloaded the file again, which the 機構 refuses within the
    agreed cycle (429 ``cycle``, Ord §33(2)): no store at all for up to a cycle, and a download
    counted twice. Now the store is in its place as soon as its first CRL is imported: the run
    after the kill finds it, asks with its ETag, and the 機構 answers 304."""
    g = _group_dir(pki, kikou, tmp_path)
    full = make_crl(pki, G1, 10, [(5, 1, 1)], this_update=datetime.now(UTC) - timedelta(minutes=1))
    kikou.files["/f.crl"] = ('"f10"', full)
    kikou.held.add("/d.crl")
    with pulling(g):  # SIGKILLed on the way out, whatever it is doing then
        wait_asked(kikou.gets, "/d.crl")
        assert kikou.gets() == ["/f.crl", "/d.crl"]  # the full CRL is imported, committed
    kikou.held.clear()
    kikou.released.set()
    kikou.limited["/f.crl"] = 3600  # downloaded a moment ago: the cycle refuses another
    with pulling(g) as second:
        _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert '"status": "unchanged"' in err, err  # asked with the ETag: 304, nothing counted
    assert kikou.gets("/f.crl") == ["/f.crl", "/f.crl"]
    assert crl_number(g) == 10  # what the responder reads
    assert not staged_left(g)  # no staged store left


def test_sigterm_ends_follow_after_the_issuer_it_is_fetching(
    kikou: Kikou,  # noqa: F811
    pki: Manifest,  # noqa: F811
    tmp_path: Path,
) -> None:
    """SIGTERM (`systemctl stop`) set the loop's stop but the pass went on with every other
    file (each up to its deadline: 30 s + its bytes' time by default) before it was looked
    at, past the unit's 120 s stop timeout with a few slow files (then SIGKILL). The pass
    ends after the issuer in flight now: here G1 (its delta cut at its 4 s), not G2's two
    files (4 s each) after it."""
    g = _group_dir(pki, kikou, tmp_path)
    setup = load_group_setup(g)
    setup.issuers.append(
        msgspec.structs.replace(
            group_issuer(pki, G2, 2, kikou.url, "2"),
            sha256=cert_sha256(Path(group_issuer(pki, G2, 2, kikou.url, "2").cert)),
        )
    )
    dump_group_setup(setup, g)
    now = datetime.now(UTC) - timedelta(minutes=1)
    kikou.files["/f.crl"] = ('"f10"', make_crl(pki, G1, 10, [(5, 1, 1)], this_update=now))
    kikou.held |= {"/d.crl", "/f2.crl", "/d2.crl"}
    with pulling(g, "--follow", "--timeout", "4") as follow:
        wait_asked(kikou.gets, "/d.crl")
        assert "/d.crl" in kikou.gets()
        err, took = stop_with_sigterm(follow)
    assert follow.returncode == 0, err
    assert kikou.gets() == ["/f.crl", "/d.crl"], err  # G2's files not asked
    assert took < 8, took


def test_a_second_pull_while_the_first_stages_the_store_is_refused(
    kikou: Kikou,  # noqa: F811
    pki: Manifest,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Two pulls on one store are refused once the store is in place (its writer's lock);
    before, while the first one staged it (its first file still downloading), a second one
    (a one-off `group pull` beside the unit's `--follow`) staged one of its own: both
    downloaded every file (each counted by the 機構, the second refused 429 within the
    cycle) and the second to finish could not put its store in place. Refused at once now,
    naming the other writer, nothing asked of the 機構."""
    g = _group_dir(pki, kikou, tmp_path)
    kikou.held.add("/f.crl")
    with pulling(g):  # SIGKILLed on the way out
        wait_asked(kikou.gets, "/f.crl")
        assert kikou.gets() == ["/f.crl"]
        second = subprocess.run(
            [str(BIN / "crlbuilder"), "group", "pull", "--group", str(g), "--timeout", "3"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert second.returncode == 2, second.stderr
    assert "another process is writing this store" in second.stderr, second.stderr
    assert kikou.gets() == ["/f.crl"]  # the first one's only


def test_sigterm_gives_up_the_download_in_flight_and_the_next_run_takes_it(
    kikou: Kikou,  # noqa: F811
    pki: Manifest,  # noqa: F811
    tmp_path: Path,
) -> None:
    """SIGTERM ended the pass after the issuer in flight, but the file being downloaded was
    still waited for, up to its deadline (30 s + 1 s a MiB by default: a 2 GiB CRL, 2,078 s,
    far past the unit's 120 s stop timeout, then SIGKILL). The download is given up within a
    slice now (``stopped``), nothing of it kept (no store made, no staged store, no partial
    file), no other file asked; the next run downloads it whole."""
    g = _group_dir(pki, kikou, tmp_path)
    now = datetime.now(UTC) - timedelta(minutes=1)
    kikou.files["/f.crl"] = ('"f10"', make_crl(pki, G1, 10, [(5, 1, 1)], this_update=now))
    kikou.stalled.add("/f.crl")  # half its body, then 20 s of nothing
    with pulling(g, "--follow") as follow:
        wait_asked(kikou.gets, "/f.crl")
        assert kikou.gets() == ["/f.crl"]
        time.sleep(0.5)  # its head and half its body read
        err, took = stop_with_sigterm(follow)
    assert follow.returncode == 0, err
    assert took < 3, (took, err)
    assert '"status": "stopped"' in err, err
    assert kikou.gets() == ["/f.crl"], err  # not the delta, nothing after it
    assert not (g / "store" / "data.mdb").exists()
    assert not staged_left(g)  # no staged store left
    kikou.stalled.clear()
    with pulling(g) as second:
        _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert crl_number(g) == 10
