"""`make demo`: the main job on embedded demo data, from nothing to a serving responder.

Steps, each skipped when its output is already there: a demo PKI
(`crlbuilder pki init`), a facts key, a synthetic population (`crlbuilder
synth`), a build (`crlbuilder build`), a registry of the demo parties; then
`crlbuilder build --follow` keeps the store and CRLs fresh (and applies any
file dropped into the spool directory) while `responder serve` answers on
127.0.0.1:8080, /metrics on 127.0.0.1:9482 (with the facts key, so that /v1/record-info can open the four
facts). Beside it a group's appliance (団体署名検証者 ``group-verifier``, Act
§17(5)) is set up from what the group received (`crlbuilder group init`: the 機構's
/ca/, its token, its own relay responder key), fed over HTTP by `crlbuilder group pull
--follow`, and answers its two members on 127.0.0.1:8081, /metrics on 127.0.0.1:9481
(``--no-group``: none). A usual port found in use (another demo, another service) gives
way to a free one (`crlbuilder.demo.ports`; ``--port``, ``--metrics-port``, ``--group-port``,
``--group-metrics-port`` choose, 0 for any free one); the demo prints where everything
listens. It prints ready-to-paste `openssl ocsp` commands for a good, a revoked and an unknown
certificate, `curl` commands for 特定署名用電子証明書記録情報 (Act §18(3)) and the
corresponding serials (Act §18(4), §18(5)) of holders of the population, and a member's
command to its group (``-VAfile group.pem``), and runs until Ctrl-C, which stops every
child cleanly. ``--no-serve`` stops after the build and says what it made.

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
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

import msgspec

from crlbuilder.demo.children import Child, start, stopped_message
from crlbuilder.demo.ports import USUAL, PortTaken, choose, in_use
from crlbuilder.demo.softhsm import OPLOG_NAME
from crlbuilder.keys.oplog import OPLOG_ENV
from crlbuilder.manifest import load_manifest
from crlbuilder.model import Answer, Category, CertStatus, Family
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.reader import StoreReader
from crlbuilder.validity import expired_at

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


def responder_flags(d: Path, port: int, metrics_port: int) -> list[str]:
    """`responder serve`'s flags for the demo under ``d``: every file it reads or writes
    (store, PKI, registry, CRLs, facts key, ledger and watch lists, token queues) under ``d``,
    whatever directory the demo runs in, so that two demo directories share nothing; its
    two ports (0: a free one)."""
    return [
        "--config", str(ROOT / "config" / "responder.toml"),
        "--store", str(d / "store"), "--pki", str(d / "pki"), "--registry", str(d / "registry.toml"),
        "--crl-dir", str(d / "crl"), "--port", str(port), "--metrics-port", str(metrics_port),
        "--facts-key-file", str(d / "facts.key"),
        "--ledger-dir", str(d / "ledger"),
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


CONSENTING: Final = ("sig-verifier", "both-verifier", "group-verifier")
"""The demo parties a consent may name (署名検証者等, Act §18(3)), as `crlbuilder.demo.synth` writes."""


def _curl(d: Path, url: str, path: str, party: str, body: dict[str, object]) -> str:
    token = (d / "pki" / "parties" / f"{party}.token").read_text().strip()
    return (
        f"curl -s {url}{path} -H 'Authorization: Bearer {token}' "
        f"-H 'Content-Type: application/json' -d {shlex.quote(msgspec.json.encode(body).decode())}"
    )


def _in_effect(r: StoreReader, holder: bytes, family: Family, now: float) -> bool:
    return any(
        st is not None and not st.revoked and not expired_at(st.not_after, now)
        for st in map(r.status, r.holder_certs(holder, family))
    )


def v1_commands(d: Path, url: str) -> list[tuple[str, str]]:
    """`curl` commands for /v1/record-info (a card certificate revoked by a resident change,
    異動, whose holder consented and holds a new one) and /v1/corresponding (that new card
    certificate's mobile and auth counterparts), found in the demo store."""
    now = time.time()
    store = Store.open(d / "store", readonly=True)
    found: tuple[str, str | None, str, int] | None = None
    current: tuple[str, int] | None = None
    try:
        with store.read() as r:
            for meta in (m for m in r.issuers() if m.family is Family.SIGN_CARD):
                for key, st in r.statuses(meta.index):
                    if st.state != sf.STATE_REVOKED or st.category != Category.RESIDENT_CHANGE.code:
                        continue
                    party = next((p for p in CONSENTING if r.consent(st.holder, p)), None)
                    if party is None or not _in_effect(r, st.holder, Family.SIGN_CARD, now):
                        continue
                    if not _in_effect(r, st.holder, Family.SIGN_MOBILE, now):
                        continue
                    other = next((p for p in CONSENTING if not r.consent(st.holder, p)), None)
                    found = (party, other, meta.id, sf.split_status_key(key)[1])
                    ids = {m.index: m.id for m in r.issuers()}
                    for k in r.holder_certs(st.holder, Family.SIGN_CARD):
                        cur = r.status(k)
                        if (
                            cur is not None
                            and not cur.revoked
                            and not expired_at(cur.not_after, now)
                        ):
                            index, serial = sf.split_status_key(k)
                            current = (ids[index], serial)
                    break
                if found:
                    break
    finally:
        store.close()
    if found is None or current is None:
        return []
    party, other, issuer, serial = found
    asked = {"issuer": issuer, "serial": f"{serial:X}"}
    now_card = {"issuer": current[0], "serial": f"{current[1]:X}"}
    out = [
        (f"record info (Act §18(3)) after a resident change, as {party} (the holder consented)",
         _curl(d, url, "/v1/record-info", party, {"certificate": asked})),
    ]  # fmt: skip
    if other is not None:
        out.append((f"the same as {other}, to which the holder did not consent: not-provided",
                    _curl(d, url, "/v1/record-info", other, {"certificate": asked})))  # fmt: skip
    return [
        *out,
        ("the mobile sign serial of that holder's card certificate (Act §18(4)(1))",
         _curl(d, url, "/v1/corresponding", "sig-verifier",
               {"certificate": now_card, "counterpart": "sign-mobile"})),
        ("its card auth serial (Act §18(5)(2): a party holding both titles only)",
         _curl(d, url, "/v1/corresponding", "both-verifier",
               {"certificate": now_card, "counterpart": "auth-card"})),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m crlbuilder.demo", description=__doc__)
    p.add_argument("--dir", type=Path, default=Path("var/demo"))
    p.add_argument("--holders", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=1)
    for name, what in (
        ("port", "the responder's port"),
        ("metrics_port", "its /metrics port"),
        ("group_port", "the group appliance's port"),
        ("group_metrics_port", "its /metrics port"),
    ):
        p.add_argument(
            "--" + name.replace("_", "-"), type=_port, default=None,
            help=f"{what} (default: {USUAL[name]}, or a free one when it is in use; 0: a free one)",
        )  # fmt: skip
    p.add_argument("--no-serve", action="store_true", help="stop after the build")
    p.add_argument("--no-group", action="store_true", help="no group appliance beside it")
    p.add_argument(
        "--keys", choices=("pem", "softhsm"), default="pem",
        help="signing keys in PEM files (default) or in a SoftHSM2 token under DIR/pki/softhsm",
    )  # fmt: skip
    args = p.parse_args(argv)
    asked: dict[str, int | None] = {name: getattr(args, name) for name in USUAL}
    if args.no_group:
        asked = {k: v for k, v in asked.items() if not k.startswith("group_")}
    if not args.no_serve:  # a port asked for and taken: refused before the long preparation
        try:
            for name, port in asked.items():
                if port is not None:
                    choose(name, port, in_use)
        except PortTaken as exc:
            raise SystemExit(str(exc)) from None
    d: Path = args.dir
    d.mkdir(parents=True, exist_ok=True)
    use_keys(d, args.keys)
    prepare(d, args.holders, args.seed, args.keys)
    if args.no_serve:
        print(f"\nmade under {d}: pki/ (CAs, OCSP signers, parties), population/ (records, samples,"
              " answers.jsonl), store/ (LMDB), crl/ (CRL files), registry.toml")  # fmt: skip
        return 0
    return serve(d, asked)


def _port(text: str) -> int:
    """A TCP port option's value: 0 to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port (0 to 65535): {text!r}")
    return port


def _ports(names: tuple[str, str], asked: dict[str, int | None]) -> tuple[int, int]:
    """The two ports of one responder (public, metrics), each noted when not the usual."""
    out = []
    for name in names:
        try:
            port, note = choose(name, asked.get(name), in_use)
        except PortTaken as exc:
            raise SystemExit(str(exc)) from None
        if note:
            print(f"demo: {note}", flush=True)
        out.append(port)
    return out[0], out[1]


def _listening(server: subprocess.Popen[str]) -> tuple[str, str] | None:
    """The URLs a starting `responder serve` prints on its stdout: (public, admin /metrics);
    None when it stopped before (its reason is on stderr)."""
    assert server.stdout is not None
    public = ""
    for line in server.stdout:
        if line.startswith("listening on ") and not public:
            public = line.split()[-1]
        elif line.startswith("metrics on ") and public:
            return public, line.split()[-1] + "/metrics"
    return None


GROUP = "group-verifier"
"""The demo PKI's 団体署名検証者 and its members (`crlbuilder.demo.pki.DEMO_PARTIES`)."""
MEMBERS = ("member-1", "member-2")


def start_group(
    d: Path, kikou_url: str, ports: tuple[int, int], children: list[Child]
) -> tuple[str, str]:
    """The group's appliance beside the 機構's: ``crlbuilder group init`` (once, from what the
    group received: the 機構's /ca/, its token, the relay responder key), its two members
    registered, one pull, then ``group pull --follow`` and ``responder serve`` in group mode
    on ``ports`` (public, metrics; 0: a free one, whatever its configuration says). Its
    public and /metrics URLs."""
    g, pki = d / "group", d / "pki"
    m = load_manifest(pki)  # the relay responder's key: a PEM file, or in the token (softhsm)
    if not (g / "group.json").exists():
        _run(
            _tool("crlbuilder"), "group", "init", "--out", str(g), "--authority", kikou_url,
            "--group-id", GROUP, "--token-file", str(pki / "parties" / f"{GROUP}.token"),
            "--cycle", "10", "--responder-cert", str(m.path(m.group_responder_cert)),
            "--responder-key", m.key_ref(m.group_responder_key),
            "--port", str(USUAL["group_port"]), "--metrics-port", str(USUAL["group_metrics_port"]),
            "--name", "デモ団体署名検証者 (demo group signature verifier)",
            "--address", "demo address (架空の住所)", "--representative", "demo representative",
            "--office", "demo office (架空の事務所)", "--start", "2016-01-01", "--group-kind", "1",
            "--member-prefix", "member-", "--liability", "demo: no liability",
            "--member-answer", "OCSP answers signed by the group's own responder key",
        )  # fmt: skip
        for member in MEMBERS:
            token = (pki / "parties" / f"{member}.token").read_text().strip()
            _run(
                _tool("responder"), "registry", "add", "--registry", str(g / "registry.toml"),
                "--id", member, "--name", f"デモ署名確認者 ({member})",
                "--title", "signature-confirmer", "--group", GROUP, "--group-kind", "1",
                "--token-sha256", hashlib.sha256(token.encode()).hexdigest(),
                "--mtls-cert", str(pki / "parties" / f"{member}.pem"),
            )  # fmt: skip
    else:  # a demo directory made before: its group pins the 機構's answer keys anew (one
        # set up before the relay checked answers pins none, and every relayed answer is 502)
        _run(_tool("crlbuilder"), "group", "keys", "--group", str(g))
    _run(_tool("crlbuilder"), "group", "pull", "--group", str(g))
    children.append(
        start(
            "the group's feed (crlbuilder group pull --follow)",
            [_tool("crlbuilder"), "group", "pull", "--group", str(g), "--follow"],
            keep_stderr=True,
        )
    )
    server = start(
        "the group's responder (responder serve)",
        [_tool("responder"), "serve", "--config", str(g / "responder.toml"),
         "--port", str(ports[0]), "--metrics-port", str(ports[1])],
        keep_stderr=False, stdout=subprocess.PIPE,
    )  # fmt: skip
    children.append(server)
    urls = _listening(server.proc)
    if urls is None:
        raise SystemExit("demo: the group's responder did not start (its reason is above)")
    return urls


def member_commands(d: Path, group_url: str) -> list[tuple[str, str]]:
    """A member's `openssl ocsp` to its group, trusting the group's responder (-VAfile)."""
    token = (d / "pki" / "parties" / "member-1.token").read_text().strip()
    pop = (d / "population").resolve()
    out = []
    picked: dict[CertStatus, Answer] = {}
    for line in (d / "population" / "answers.jsonl").read_bytes().splitlines():
        a = msgspec.json.decode(line, type=Answer)
        wanted = a.status is CertStatus.REVOKED or a.case == "good"
        if a.family.value == "sign-card" and wanted and a.status not in picked:
            picked[a.status] = a
    for a in [picked[s] for s in (CertStatus.GOOD, CertStatus.REVOKED) if s in picked]:
        status = a.status.value
        cmd = (
            f"openssl ocsp -url {group_url}/ocsp -header Authorization='Bearer {token}' "
            f"-issuer {pop / a.issuer_cert} -cert {pop / a.cert} "
            f"-VAfile {(d / 'group' / 'group.pem').resolve()} -resp_text -no_nonce"
        )
        out.append((f"member-1 asks its group: {status} ({a.family.value}, {a.case})", cmd))
    revoked = picked.get(CertStatus.REVOKED)
    if revoked is not None:  # the relay of 特定署名用電子証明書記録情報 (Act §20(4),(5))
        body = json.dumps(
            {"certificate": {"issuer": revoked.issuer, "serial": f"{revoked.serial:X}"}}
        )
        out.append((
            "member-1 asks its group for 特定署名用電子証明書記録情報 (Act §21(4)) of that revoked"
            " certificate: the 機構's signed answer, passed on unchanged",
            f"curl -s {group_url}/v1/record-info -H 'Authorization: Bearer {token}' "
            f"-H 'Content-Type: application/json' -d '{body}'",
        ))  # fmt: skip
    return out


def make_spool(d: Path) -> Path:
    """The demo's spool, its owner's only (0700; one an older demo made 0755 is narrowed):
    a record file dropped there holds personal data until the follow loop applies it."""
    spool = d / "spool"
    spool.mkdir(mode=0o700, exist_ok=True)
    spool.chmod(0o700)
    return spool


def serve(d: Path, asked: dict[str, int | None]) -> int:
    """Run the follow loop, the responder and (when ``asked`` has the group's ports, None
    for the usual) the group appliance until Ctrl-C; print the commands and where each
    listens."""
    make_spool(d)
    (d / "tokens" / "requests").mkdir(parents=True, exist_ok=True, mode=0o700)
    follow = start(
        "the builder (crlbuilder build --follow)",
        [_tool("crlbuilder"), "build", *_builder_flags(d), "--input", str(d / "spool"), "--follow", "--no-progress"],
        keep_stderr=True,
    )  # fmt: skip
    children: list[Child] = [follow]
    stop = False
    stopped: Child | None = None  # a child that stopped on its own

    def _stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        port, metrics_port = _ports(("port", "metrics_port"), asked)
        server = start(
            "the responder (responder serve)",
            [_tool("responder"), "serve", *responder_flags(d, port, metrics_port)],
            keep_stderr=False, stdout=subprocess.PIPE,
        )  # fmt: skip
        children.append(server)
        urls = _listening(server.proc)
        if urls is None:
            print("demo: the responder did not start (its reason is above)", file=sys.stderr)
            return 1
        url = urls[0]
        where = [("responder (機構)", *urls)]
        print(f"\nresponder listening on {url}, /metrics on {urls[1]}  (crlbuilder --follow keeps"
              f" it fresh; drop record files into {d / 'spool'})\n")  # fmt: skip
        for what, cmd in commands(d, url) + v1_commands(d, url):
            print(f"# {what}\n{cmd}\n")
        if "group_port" in asked:
            group = start_group(
                d, url, _ports(("group_port", "group_metrics_port"), asked), children
            )
            where.append(("group appliance (団体署名検証者 group-verifier)", *group))
            print(f"group appliance (団体署名検証者 group-verifier, fed from {url} by "
                  f"`crlbuilder group pull --follow`) listening on {group[0]}\n")  # fmt: skip
            for what, cmd in member_commands(d, group[0]):
                print(f"# {what}\n{cmd}\n")
        print("the demo listens on:")
        for what, public, metrics in where:
            print(f"  {public:<24} {what}, its /metrics on {metrics}")
        print("its processes:")
        for c in children:
            print(f"  pid {c.proc.pid:<8} {c.name}")
        print("Ctrl-C stops everything.", flush=True)
        while not stop and stopped is None:
            time.sleep(0.2)
            stopped = next((c for c in children if c.proc.poll() is not None), None)
        if stopped is not None and not stop:  # not Ctrl-C: one of them stopped on its own
            code = stopped.proc.returncode
            kept = stopped.proc.stderr is not None
            print(stopped_message(stopped.name, code, stopped.last_lines(), kept=kept),
                  file=sys.stderr, flush=True)  # fmt: skip
            return 1
    finally:
        for c in children:
            if c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
        for c in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(timeout=15)
            if c.proc.poll() is None:
                os.kill(c.proc.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
