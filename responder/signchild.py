"""A signing process of a worker (署名装置 kept apart from the event loop): its program and its pipe's frames.

``python -m responder.signchild --pki DIR`` (or ``--group FILE`` on a group appliance,
団体署名検証者, Act §20(1)) loads the same OCSP signers the worker answers with
(`responder.ocsp.load_issuers` / `load_group_issuers`: PEM keys, mode 0600, or its own
PKCS#11 session, Ord §73, §74) and then signs what the worker sends on its stdin, one
job at a time, writing each signature to its stdout. `responder.procsigning` is the
worker's side: it keeps the fair queue, builds the to-be-signed bytes
(tbsResponseData) and assembles the answer, so this process holds nothing but keys.

Frames (little-endian), worker to child: `JOB` (job id, the signer's id, the length of
the to-be-signed bytes) and the bytes. Child to worker: `RESULT` (job id, status,
signing time in microseconds, payload length) and the payload: the signature
(`OK`), the reason a token is out of reach (`UNAVAILABLE`: the answer is tryLater,
RFC 6960 §2.3), or the name of the error (`FAILED`). Its first frame has job id
`HELLO`: `OK` once every key is loaded, else `FAILED` with the loader's message
(it names files, never a key or a PIN) and the process exits.

The process ends at end of input (the worker closed the pipe) or with its worker
(``PR_SET_PDEATHSIG``); SIGINT is the master's to handle.
"""

from __future__ import annotations

import argparse
import os
import signal
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from crlbuilder.keys.signer import Signer

__all__ = [
    "FAILED",
    "HELLO",
    "JOB",
    "OK",
    "RESULT",
    "UNAVAILABLE",
    "child_command",
    "main",
]

JOB: Final = struct.Struct("<I8sI")
"""Worker to child: job id, signer id (`ResponseSigner.signer_id`), length of the bytes to sign."""
RESULT: Final = struct.Struct("<IBII")
"""Child to worker: job id, status, microseconds spent signing, payload length."""
OK: Final = 0
FAILED: Final = 1
UNAVAILABLE: Final = 2
HELLO: Final = 0xFFFFFFFF
"""The job id of the child's first frame: its keys are loaded (`OK`) or not (`FAILED`)."""
_READ: Final = 1 << 16


def child_command(*, pki: Path | None, group: Path | None, log_level: str = "info") -> list[str]:
    """The command line of a signing process for a worker answering from ``pki`` (the 機構's
    PKI manifest) or ``group`` (a group appliance's ``group.json``), logging at
    ``log_level`` as the worker does (JSON lines on the stderr it shares with it)."""
    if (pki is None) == (group is None):
        raise ValueError("a signing process needs either the PKI directory or group.json")
    where = ["--group", str(group)] if group is not None else ["--pki", str(pki)]
    return [sys.executable, "-m", "responder.signchild", *where, "--log-level", log_level]


def load_signers(pki: Path | None, group: Path | None) -> dict[bytes, Signer]:
    """Every signer the worker may ask for, by signer id: each issuer's delegated OCSP
    signer and its successor's (after a compromise of its CA key), or the group's key."""
    from responder.ocsp import load_group_issuers, load_issuers

    if group is not None:
        from crlbuilder.group.setup import load_group_setup

        views = load_group_issuers(load_group_setup(group), outage_ok=True)
    else:
        from crlbuilder.manifest import load_manifest

        assert pki is not None
        views = load_issuers(load_manifest(pki), outage_ok=True)
    out: dict[bytes, Signer] = {}
    for v in views:
        for rs in (v.signer, v.successor):
            if rs is not None:
                out[rs.signer_id] = rs.signer
    return out


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _frame(job_id: int, status: int, micros: int, payload: bytes) -> bytes:
    return RESULT.pack(job_id, status, micros, len(payload)) + payload


def serve(signers: dict[bytes, Signer], rfd: int, wfd: int) -> None:
    """Sign every job read from ``rfd`` and write its result to ``wfd``, until end of input."""
    from crlbuilder.keys.pkcs11 import TokenUnavailable

    buf = bytearray()
    head = JOB.size
    while True:
        chunk = os.read(rfd, _READ)
        if not chunk:
            return
        buf += chunk
        pos = 0
        while len(buf) - pos >= head:
            job_id, signer_id, n = JOB.unpack_from(buf, pos)
            if len(buf) - pos - head < n:
                break
            tbs = bytes(buf[pos + head : pos + head + n])
            pos += head + n
            signer = signers.get(signer_id)
            t0 = time.perf_counter()
            status, payload = OK, b""
            try:
                if signer is None:
                    raise LookupError("no such signer")
                payload = signer.sign(tbs)
            except TokenUnavailable as exc:  # its message names the token, never the PIN
                status, payload = UNAVAILABLE, str(exc).encode()[:1024]
            except Exception as exc:
                status, payload = FAILED, type(exc).__name__.encode()
            micros = min(int((time.perf_counter() - t0) * 1e6), 0xFFFFFFFF)
            _write_all(wfd, _frame(job_id, status, micros, payload))
        del buf[:pos]


def main(argv: Sequence[str] | None = None) -> int:
    from crlbuilder.lifecycle import die_with_parent, no_core_dumps

    # it holds the OCSP keys and PINs: exec'd by its worker, it starts dumpable again
    no_core_dumps()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the master turns Ctrl-C into SIGTERM
    die_with_parent(signal.SIGTERM)
    p = argparse.ArgumentParser(prog="responder.signchild", description=__doc__.split("\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--pki", type=Path)
    where.add_argument("--group", type=Path)
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    from responder.server import configure_logging

    configure_logging(args.log_level)  # PKCS#11 sessions opened, a token gone: as a worker's
    rfd, wfd = sys.stdin.fileno(), sys.stdout.fileno()
    try:
        signers = load_signers(args.pki, args.group)
    except Exception as exc:  # SignerError and its kin name the file, never the key
        from crlbuilder.group.setup import GroupSetupError
        from crlbuilder.keys.signer import SignerError
        from crlbuilder.manifest import ManifestError

        known = SignerError | ManifestError | GroupSetupError | OSError
        why = str(exc) if isinstance(exc, known) else ""
        _write_all(wfd, _frame(HELLO, FAILED, 0, (why or type(exc).__name__).encode()[:1024]))
        return 1
    _write_all(wfd, _frame(HELLO, OK, 0, b""))
    try:
        serve(signers, rfd, wfd)
    except BrokenPipeError:  # the worker is gone
        pass
    finally:
        if "crlbuilder.keys.pkcs11" in sys.modules:
            from crlbuilder.keys.pkcs11 import close_all

            close_all()  # the signing sessions end, with their counts (Ord §73(3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
