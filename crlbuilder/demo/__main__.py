"""`make demo`: the main job on embedded demo data, from nothing to a serving responder.

Steps, each skipped when its output is already there: a demo PKI
(`crlbuilder pki init`), a facts key, a synthetic population (`crlbuilder
synth`), a build (`crlbuilder build`), a registry of the demo parties; then
`crlbuilder build --follow` keeps the store and CRLs fresh (and applies any
file dropped into the spool directory) while `responder serve` answers on
127.0.0.1:8080. It prints ready-to-paste `openssl ocsp` commands for a good, a
revoked and an unknown certificate, and runs until Ctrl-C, which stops both
children cleanly. ``--no-serve`` stops after the build and says what it made.

The demo's ``specified-verifier`` party may ask for its 特定利用者証明検証者証明符号 (Act
§38-3): POST /v1/token queues the request under ``tokens/requests``, the follow loop
issues it into ``tokens/issued`` (the README shows the ``openssl req`` and ``curl`` lines).

``--keys softhsm`` (``make demo KEYS=softhsm``) keeps every signing key in a SoftHSM2
token instead of PEM files (Ord §73(4), §74(3): keys on dedicated equipment): ``pki init
--keys softhsm`` makes the token under ``pki/softhsm`` and generates the CA, OCSP signer
and relay keys inside it; every child then runs with ``SOFTHSM2_CONF`` pointing there.
The printed commands are the same either way.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from crlbuilder.demo.softhsm import OPLOG_NAME
from crlbuilder.keys.oplog import OPLOG_ENV
from crlbuilder.manifest import load_manifest
from crlbuilder.model import Answer, CertStatus
from crlbuilder.store.lmdbstore import Store

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> None:
    print("$ " + " ".join(shlex.quote(a) for a in args), flush=True)
    subprocess.run(args, check=True)


def _tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def use_keys(d: Path, keys: str) -> None:
    """Refuse a demo directory made with other keys; point this process and its children at
    the SoftHSM2 token when the keys are there (`crlbuilder.demo.softhsm`)."""
    conf = d / "pki" / "softhsm" / "softhsm2.conf"
    if (d / "pki" / "pki.json").exists() and conf.exists() != (keys == "softhsm"):
        made = "softhsm" if conf.exists() else "pem"
        raise SystemExit(
            f"demo: {d} was made with --keys {made}; use that, or another --dir "
            f"(make demo KEYS={keys} DEMO=var/demo-{keys})"
        )
    if keys == "softhsm":  # the token, and its operation log for every signing session
        os.environ["SOFTHSM2_CONF"] = str(conf.resolve())
        os.environ[OPLOG_ENV] = str(conf.resolve().parent / OPLOG_NAME)


def prepare(d: Path, holders: int, seed: int, keys: str = "pem") -> None:
    """PKI, facts key, population and build under ``d`` (each only once)."""
    pki, pop = d / "pki", d / "population"
    if not (pki / "pki.json").exists():
        _run(_tool("crlbuilder"), "pki", "init", "--out", str(pki), "--keys", keys)
    if not (d / "facts.key").exists():
        _run(_tool("crlbuilder"), "facts-key", "--out", str(d / "facts.key"))
    stamp = pop / ".holders"
    if not stamp.exists() or stamp.read_text().strip() != f"{holders} {seed}":
        _run(
            _tool("crlbuilder"), "synth", "--pki", str(pki), "--holders", str(holders),
            "--out", str(pop), "--seed", str(seed), "--force",
        )  # fmt: skip
        stamp.write_text(f"{holders} {seed}\n")
    if not (d / "registry.toml").exists():
        _run(
            _tool("responder"),
            "registry",
            "init",
            "--pki",
            str(pki),
            "--out",
            str(d / "registry.toml"),
        )
    _run(_tool("crlbuilder"), "build", *_builder_flags(d))


def _builder_flags(d: Path) -> list[str]:
    return [
        "--config", str(ROOT / "config" / "builder.toml"),
        "--store", str(d / "store"), "--pki", str(d / "pki"),
        "--input", str(d / "population" / "records"), "--spool", str(d / "spool"),
        "--facts-key-file", str(d / "facts.key"),
        "--quarantine", str(d / "build" / "quarantine.jsonl"),
        "--notices", str(d / "build" / "notices.jsonl"), "--crl-dir", str(d / "crl"),
        "--registry", str(d / "registry.toml"),
        "--token-requests", str(d / "tokens" / "requests"),
        "--token-issued", str(d / "tokens" / "issued"),
    ]  # fmt: skip


def samples(d: Path) -> dict[str, Answer]:
    """One good, one revoked and one unknown sample certificate of the population."""
    out: dict[str, Answer] = {}
    for line in (d / "population" / "answers.jsonl").read_bytes().splitlines():
        a = msgspec.json.decode(line, type=Answer)
        key = a.status.value
        if key not in out and (a.status is not CertStatus.GOOD or a.case == "good"):
            out[key] = a
    return out


def trusted_responders(d: Path) -> dict[str, Path]:
    """Issuer id -> the delegate certificate a client must trust for its answers: after a
    compromise of the issuer's key (発行者署名符号の漏えい等) the successor's delegate signs them,
    a Trusted Responder in RFC 6960 §4.2.2.2's terms (docs/operations.md)."""
    manifest = load_manifest(d / "pki")
    store = Store.open(d / "store", readonly=True)
    try:
        with store.read() as r:
            compromised = {i.id for i in r.issuers() if i.compromised_at}
    finally:
        store.close()
    out = {}
    for i in manifest.issuers:
        if i.id in compromised and i.successor:
            out[i.id] = manifest.path(manifest.issuer(i.successor).ocsp_cert)
    return out


def commands(d: Path, url: str) -> list[tuple[str, str]]:
    token = (d / "pki" / "parties" / "both-verifier.token").read_text().strip()
    trusted = trusted_responders(d)
    out = []
    for status, a in sorted(samples(d).items()):
        pop = (d / "population").resolve()
        va = f" -VAfile {trusted[a.issuer]}" if a.issuer in trusted else ""
        cmd = (
            f"openssl ocsp -url {url}/ocsp -header Authorization='Bearer {token}' "
            f"-issuer {pop / a.issuer_cert} -cert {pop / a.cert} "
            f"-CAfile {pop / a.issuer_cert}{va} -resp_text -no_nonce"
        )
        what = f"{status} ({a.family.value}, {a.case})"
        out.append((what, cmd))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m crlbuilder.demo", description=__doc__)
    p.add_argument("--dir", type=Path, default=Path("var/demo"))
    p.add_argument("--holders", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--no-serve", action="store_true", help="stop after the build")
    p.add_argument(
        "--keys", choices=("pem", "softhsm"), default="pem",
        help="signing keys in PEM files (default) or in a SoftHSM2 token under DIR/pki/softhsm",
    )  # fmt: skip
    args = p.parse_args(argv)
    d: Path = args.dir
    d.mkdir(parents=True, exist_ok=True)
    use_keys(d, args.keys)
    prepare(d, args.holders, args.seed, args.keys)
    if args.no_serve:
        print(f"\nmade under {d}: pki/ (CAs, OCSP signers, parties), population/ (records, samples,"
              " answers.jsonl), store/ (LMDB), crl/ (CRL files), registry.toml")  # fmt: skip
        return 0
    return serve(d, args.port)


def serve(d: Path, port: int) -> int:
    (d / "spool").mkdir(exist_ok=True)
    (d / "tokens" / "requests").mkdir(parents=True, exist_ok=True, mode=0o700)
    follow = subprocess.Popen(
        [_tool("crlbuilder"), "build", *_builder_flags(d), "--input", str(d / "spool"), "--follow", "--no-progress"],
        stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    server = subprocess.Popen(
        [
            _tool("responder"), "serve", "--config", str(ROOT / "config" / "responder.toml"),
            "--store", str(d / "store"), "--pki", str(d / "pki"), "--registry", str(d / "registry.toml"),
            "--crl-dir", str(d / "crl"), "--port", str(port),
            "--token-requests", str(d / "tokens" / "requests"),
            "--token-issued", str(d / "tokens" / "issued"),
        ],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    children: list[subprocess.Popen[str]] = [server, follow]
    stop = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.startswith("listening on"):
            print("demo: the responder did not start", file=sys.stderr)
            return 1
        url = line.split()[-1]
        print(f"\nresponder {line.strip()}  (crlbuilder --follow keeps it fresh; drop record files"
              f" into {d / 'spool'})\n")  # fmt: skip
        for what, cmd in commands(d, url):
            print(f"# {what}\n{cmd}\n")
        print("Ctrl-C stops everything.", flush=True)
        while not stop and all(c.poll() is None for c in children):
            time.sleep(0.2)
    finally:
        for c in children:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)
        for c in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.wait(timeout=15)
            if c.poll() is None:
                os.kill(c.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
