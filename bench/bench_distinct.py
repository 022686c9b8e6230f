"""The responder under realistic load: many distinct requests, against nginx serving the same answers.

    python -m bench.bench_distinct --store-dir DIR --requests 100000 --seconds 8 \\
        --out bench/results/distinct.json

What is measured is the responder's OCSP service (失効情報の提供, Act §18(1), §37(1))
when relying parties ask about many different certificates, not one repeated.
``DIR`` holds what `bench.bench_build` makes (``pki/``, ``store/``, ``crl/``); the
store's size is whatever was built there (the issue's target is 1,000,000 holders:
``python -m bench.bench_build --holders 1000000 --dir DIR``; the run records how many
certificates the store held).

1. The request set: ``--requests`` distinct OCSP requests (one SHA-1 CertID each, built
   with cryptography), drawn at random from every issuer in the store (every family and
   generation, in the store's proportions): ``--revoked-share`` of revoked serials,
   ``--unknown-share`` of serials the store does not know (random, checked absent), the
   rest good (not revoked, not expired); ``--nonce-share`` of them carry a fresh random
   16-byte nonce (RFC 9654) drawn by wrk for every request (so each costs a signature).
2. The answers: the responder (1 worker) is asked every request once by GET, so that its
   good-answer cache holds them (``--good-cache-entries`` is set to hold the set; the
   default of 20,000 would make most good answers fresh signatures). Each answer is
   checked (a successful OCSP response about that serial with the status the store
   gives) and written as a static file for nginx at the request's GET path.
3. The loads, ``wrk -t1 -c32`` keep-alive, each request in turn (Lua scripts reading the
   set; the requests are formatted once, up front, so wrk's own cost per request is the
   same for every server):
   - nginx (one worker, ``open_file_cache``, ``sendfile off``, access log off) serving the
     answers at the same GET paths (``try_files $request_uri``: the percent-encoded path
     is the file's name);
   - the responder, 1 and 2 workers: the same GETs; the same requests by POST; one
     request repeated by POST (the single-request case of `bench.bench_responder`); and,
     with ``--nonce-share`` above 0, the POSTs with that share of nonces;
   - with ``--sign-load``, POSTs that all carry a nonce (each a fresh RSA signature),
     2 workers, against cryptography's raw RSA signing rate in 2 processes right before
     and after (issue 17, item 3).
   Each worker keeps its own good-answer cache, so with 2 workers both must have signed
   every good answer once: ``--warm-passes`` passes over the set warm them, and the fresh
   signatures made during each measured load (``jpkiva_fresh_signatures_total``) are
   recorded beside it, as they cost 50 times a cached answer.

Per load: requests/s (indicative on a shared machine), latency, bytes per answer, and
the CPU time of the server's processes per answer (user + system from /proc, steadier
than req/s when other work shares the cores). Every server listens on 127.0.0.1 only and
is stopped by its PID; wrk runs are bounded by ``--seconds``.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import random
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.x509 import ocsp

from bench.bench_responder import (
    NO_PROBE,
    NONCE_BYTES,
    PARTY,
    cpu_by_process,
    free_port,
    fresh_until,
    halt_poll_ns,
    ocsp_request,
    raw_sign_rate,
    run_wrk,
)
from bench.procs import BenchError, started
from crlbuilder.manifest import load_manifest
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store

ROOT: Final = Path(__file__).resolve().parent.parent
BIN: Final = Path(sys.executable).parent
OCSP_REQUEST: Final = "application/ocsp-request"
NONCE_MARK: Final = bytes(range(0xA0, 0xA0 + NONCE_BYTES))
"""Placeholder nonce in a request template; wrk replaces it with random bytes each time."""
LAPSE_MARGIN: Final = 3600
"""A good sample's pending 30-day lapse, if any, must be this far ahead (else tryLater)."""


@dataclass(frozen=True)
class Pick:
    """One request of the set: which certificate, and what the store says of it."""

    issuer_index: int
    serial: int
    expect: str
    """"good", "revoked" or "unknown"."""
    nonce: bool


def pick_set(
    store: Store, n: int, revoked: float, unknown: float, nonce: float, seed: int
) -> tuple[list[Pick], dict[str, Any]]:
    """``n`` distinct (issuer, serial) picks over every issuer, in the store's proportions."""
    rng = random.Random(seed)
    now = int(time.time())
    good: list[bytes] = []
    rev: list[bytes] = []
    with store.read() as r:
        compromised = {m.index for m in r.issuers() if m.compromised_at}
        for key, st in r.statuses():
            if st.state == sf.STATE_REVOKED:
                rev.append(bytes(key))
            elif st.state != sf.STATE_ERASED and st.not_after > now + LAPSE_MARGIN:
                lapse = r.lapse_due(st)
                if not lapse or lapse > now + LAPSE_MARGIN:
                    good.append(bytes(key))
        issuers = sorted(m.index for m in r.issuers())
        total = r.count(sf.DB_STATUS)
        n_rev = round(n * revoked)
        n_unknown = round(n * unknown)
        n_good = n - n_rev - n_unknown
        if n_rev > len(rev) or n_good > len(good):
            raise BenchError(
                f"the store has {len(rev)} revoked and {len(good)} good certificates: too few "
                f"for {n_rev} revoked and {n_good} good distinct requests"
            )
        keys = [(k, "revoked") for k in rng.sample(rev, n_rev)]
        keys += [(k, "good") for k in rng.sample(good, n_good)]
        unknowns: set[tuple[int, int]] = set()
        while len(unknowns) < n_unknown:
            index = rng.choice(issuers)
            serial = rng.getrandbits(63) | (1 << 62)
            if r.status(sf.status_key(index, serial)) is None:
                unknowns.add((index, serial))
    picks = [Pick(*sf.split_status_key(k), expect, False) for k, expect in keys] + [
        Pick(i, s, "unknown", False) for i, s in sorted(unknowns)
    ]
    rng.shuffle(picks)
    n_nonce = round(n * nonce)
    picks = [
        Pick(p.issuer_index, p.serial, p.expect, True) if i < n_nonce else p
        for i, p in enumerate(picks)
    ]
    rng.shuffle(picks)
    by_issuer: dict[int, int] = {}
    for p in picks:
        by_issuer[p.issuer_index] = by_issuer.get(p.issuer_index, 0) + 1
    info = {
        "store_certificates": total,
        "store_revoked": len(rev),
        "store_good_pickable": len(good),
        "requests": n,
        "revoked": n_rev,
        "good": n_good,
        "unknown": n_unknown,
        "with_nonce": n_nonce,
        "by_issuer_index": {str(k): v for k, v in sorted(by_issuer.items())},
        "compromised_issuers": sorted(compromised),
        "seed": seed,
    }
    return picks, info


def get_path(der: bytes) -> str:
    """The RFC 6960 appendix A.1 GET path of a request: standard base64, percent-encoded."""
    return "/ocsp/" + urllib.parse.quote(base64.b64encode(der).decode(), safe="")


@dataclass
class Req:
    pick: Pick
    der: bytes
    """The request without a nonce (the answer nginx serves, the one cached)."""
    path: str
    head: bytes = b""
    tail: bytes = b""
    """With a nonce: the DER around the 16 nonce bytes."""


def build_requests(picks: list[Pick], certs: dict[int, x509.Certificate]) -> list[Req]:
    out = []
    for p in picks:
        der = ocsp_request(certs[p.issuer_index], p.serial)
        req = Req(p, der, get_path(der))
        if p.nonce:
            t = ocsp_request(certs[p.issuer_index], p.serial, NONCE_MARK)
            at = t.index(NONCE_MARK)
            req.head, req.tail = t[:at], t[at + NONCE_BYTES :]
        out.append(req)
    return out


# --- wrk scripts -------------------------------------------------------------------------------

LUA_B64: Final = r"""
local b64c = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64url(s)
  local out, n = {}, #s
  for i = 1, n, 3 do
    local a, b, c = s:byte(i, i + 2)
    local v = a * 65536 + (b or 0) * 256 + (c or 0)
    local q = {}
    for j = 1, 4 do
      local k = math.floor(v / 2 ^ (6 * (4 - j))) % 64 + 1
      q[j] = b64c:sub(k, k)
    end
    if not b then q[3] = "=" end
    if not c then q[4] = "=" end
    out[#out + 1] = table.concat(q)
  end
  return (table.concat(out):gsub("[+/=]", function(ch) return string.format("%%%02X", ch:byte()) end))
end
"""


def lua_distinct(
    path: Path,
    reqs: list[Req],
    method: str,
    token: str,
    *,
    nonces: bool,
    single: bool = False,
    done: Path | None = None,
) -> Path:
    """A wrk script: each request of the set in turn, by ``method``, formatted once up front.

    With ``nonces``, requests picked for a nonce get new random bytes each time (formatted
    per request); otherwise they are sent as picked without one. ``single``: only the first.
    ``done``: stop after one pass over the set (as many answers as requests) and create it.
    """
    data = path.with_suffix(".bin")
    with data.open("wb") as f:
        for r in reqs[:1] if single else reqs:
            fresh = nonces and r.pick.nonce
            parts = (
                (r.head, r.tail) if fresh else (r.der if method == "POST" else r.path.encode(), b"")
            )
            f.write(b"N" if fresh else b"F")
            for part in parts:
                f.write(len(part).to_bytes(2, "big") + part)
    auth = f"Bearer {token}"
    post_headers = f'{{["Content-Type"] = "{OCSP_REQUEST}", ["Authorization"] = "{auth}"}}'
    get_headers = f'{{["Authorization"] = "{auth}"}}'
    lines = [
        NO_PROBE,
        LUA_B64,
        f'local method = "{method}"',
        f"local ph, gh = {post_headers}, {get_headers}",
        f'local f = assert(io.open("{data}", "rb")); local s = f:read("*a"); f:close()',
        "local reqs, n = {}, 0",
        "function init(args)",  # wrk.host is known here (format adds Host), not at load time
        "  local p = 1",
        "  local function take() local len = s:byte(p) * 256 + s:byte(p + 1); "
        "local v = s:sub(p + 2, p + 1 + len); p = p + 2 + len; return v end",
        "  while p <= #s do",
        "    local kind = s:sub(p, p); p = p + 1",
        "    local a, b = take(), take()",
        "    n = n + 1",
        '    if kind == "N" then reqs[n] = {a, b}',
        '    elseif method == "POST" then reqs[n] = wrk.format("POST", "/ocsp", ph, a)',
        '    else reqs[n] = wrk.format("GET", a, gh) end',
        "  end",
        "end",
        "local r, c, i = math.random, string.char, 0",
        "math.randomseed(os.time())",
        "function request()",
        "  i = i % n + 1",
        "  local q = reqs[i]",
        '  if type(q) == "string" then return q end',
        "  local der = q[1] .. c(r(0,255),r(0,255),r(0,255),r(0,255),r(0,255),r(0,255),r(0,255),"
        "r(0,255),r(0,255),r(0,255),r(0,255),r(0,255),r(0,255),r(0,255),r(0,255),r(0,255)) .. q[2]",
        '  if method == "POST" then return wrk.format("POST", "/ocsp", ph, der) end',
        '  return wrk.format("GET", "/ocsp/" .. b64url(der), gh)',
        "end",
    ]
    if done is not None:
        lines += [
            "local got = 0",
            "function response(status, headers, body)",
            "  got = got + 1",
            f'  if got == n then local d = io.open("{done}", "w"); d:close(); wrk.thread:stop() end',
            "end",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- servers ------------------------------------------------------------------------------------


@dataclass
class Ctx:
    work: Path
    store_dir: Path
    registry: Path
    token: str
    seconds: float
    connections: int
    responder: list[str]
    cache_entries: int
    sign_threads: int = 0
    signing: str = ""
    """The responder's ``--signing`` (empty: its default)."""
    sign_processes: int = 0


@contextmanager
def responder(ctx: Ctx, workers: int) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    """`responder serve` (metrics and ledger on, access log off): (base URL, metrics URL, process)."""
    run = Path(tempfile.mkdtemp(dir=ctx.work, prefix=f"responder-w{workers}-"))
    d = ctx.store_dir
    args = [
        *ctx.responder, "serve", "--store", str(d / "store"), "--pki", str(d / "pki"),
        "--registry", str(ctx.registry), "--crl-dir", str(d / "crl"), "--host", "127.0.0.1",
        "--port", "0", "--workers", str(workers), "--log-level", "warning", "--access-log", "off",
        "--ledger-dir", str(run / "ledger"), "--metrics-dir", str(run / "metrics"),
        "--metrics-port", "0", "--good-cache-entries", str(ctx.cache_entries),
    ]  # fmt: skip
    if ctx.sign_threads:
        args += ["--sign-threads", str(ctx.sign_threads)]
    if ctx.signing:
        args += ["--signing", ctx.signing]
    if ctx.sign_processes:
        args += ["--sign-processes", str(ctx.sign_processes)]
    with started(args, log=run / "stderr.log") as proc:
        text = _wait_text(proc, r"listening on (\S+)\s+metrics on (\S+)", 60)
        m = re.search(r"listening on (\S+)\s+metrics on (\S+)", text)
        assert m is not None
        yield m.group(1), m.group(2), proc


def _wait_text(proc: subprocess.Popen[bytes], pattern: str, timeout: float) -> str:
    assert proc.stdout is not None
    buf = b""
    deadline = time.monotonic() + timeout
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        try:
            chunk = os.read(proc.stdout.fileno(), 4096)
        except BlockingIOError:
            chunk = None
        if chunk == b"":
            raise BenchError("the responder exited before it was ready")
        if chunk:
            buf += chunk
            if re.search(pattern, buf.decode(errors="replace")):
                return buf.decode(errors="replace")
        else:
            time.sleep(0.05)
    raise BenchError(f"no {pattern!r} from the responder within {timeout} s")


def fresh_signatures(metrics_url: str) -> float:
    """``jpkiva_fresh_signatures_total`` summed over the workers (the admin listener).

    Workers flush their counts every second and render at most once a second: read after
    both have passed."""
    time.sleep(2.2)
    u = urllib.parse.urlsplit(metrics_url)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 80, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return sum(
        float(m.group(1))
        for m in re.finditer(
            r"^jpkiva_fresh_signatures_total(?:\{[^}]*\})? ([\d.e+]+)$", text, re.M
        )
    )


_STATUS: Final = {
    ocsp.OCSPCertStatus.GOOD: "good",
    ocsp.OCSPCertStatus.REVOKED: "revoked",
    ocsp.OCSPCertStatus.UNKNOWN: "unknown",
}


def check_answer(der: bytes, pick: Pick) -> None:
    resp = ocsp.load_der_ocsp_response(der)
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise BenchError(f"{pick.expect} request: responseStatus {resp.response_status.name}")
    if resp.serial_number != pick.serial:
        raise BenchError("an answer about another serial")
    got = _STATUS[resp.certificate_status]
    if got != pick.expect:
        raise BenchError(
            f"serial of issuer {pick.issuer_index}: {got}, the store says {pick.expect}"
        )


def fetch_all(base: str, reqs: list[Req], token: str, threads: int = 4) -> list[bytes]:
    """Every request's answer by GET (keep-alive, a few connections), each checked."""
    u = urllib.parse.urlsplit(base)
    out: list[bytes] = [b""] * len(reqs)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 80, timeout=30)
        try:
            for i in range(k, len(reqs), threads):
                conn.request("GET", reqs[i].path, headers={"Authorization": f"Bearer {token}"})
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    raise BenchError(f"GET: HTTP {resp.status}")
                check_answer(body, reqs[i].pick)
                out[i] = body
        except BaseException as e:  # reported by the caller
            errors.append(e)
        finally:
            conn.close()

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise BenchError(f"fetching the answers: {errors[0]}")
    return out


def spot_check(
    base: str,
    reqs: list[Req],
    answers: list[bytes],
    token: str,
    *,
    post: bool,
    exact: str,
    n: int = 200,
) -> None:
    """``n`` random requests of the set after a load: a correct answer (``exact``: which
    expectations must also be the identical bytes)."""
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 80, timeout=30)
    rng = random.Random(2)
    try:
        for i in rng.sample(range(len(reqs)), min(n, len(reqs))):
            r = reqs[i]
            if post:
                conn.request(
                    "POST",
                    "/ocsp",
                    body=r.der,
                    headers={"Content-Type": OCSP_REQUEST, "Authorization": f"Bearer {token}"},
                )
            else:
                conn.request("GET", r.path, headers={"Authorization": f"Bearer {token}"})
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise BenchError(f"after the load: HTTP {resp.status}")
            check_answer(body, r.pick)
            if r.pick.expect in exact and body != answers[i]:
                raise BenchError(f"after the load: a {r.pick.expect} answer is not the same bytes")
    finally:
        conn.close()


NGINX_CONF: Final = """\
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile off;
    tcp_nopush off;
    open_file_cache max={cache} inactive=600s;
    open_file_cache_valid 600s;
    open_file_cache_errors on;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 60s;
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/www;
        location /ocsp/ {{
            default_type application/ocsp-response;
            try_files $request_uri =404;
        }}
    }}
}}
"""


@contextmanager
def nginx(
    ctx: Ctx, reqs: list[Req], answers: list[bytes]
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """nginx serving each answer as a static file named by its percent-encoded GET path."""
    tmp = ctx.work / "nginx"
    www = tmp / "www" / "ocsp"
    www.mkdir(parents=True)
    for r, a in zip(reqs, answers, strict=True):
        (www / r.path.removeprefix("/ocsp/")).write_bytes(a)
    for p in (tmp, tmp / "www", www):
        p.chmod(0o755)
    port = free_port()
    # each cached file holds a descriptor: the cache is bounded by this process's limit
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    conf = tmp / "nginx.conf"
    conf.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + NGINX_CONF.format(tmp=tmp, port=port, nofile=nofile, cache=nofile // 2)
    )
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    with started(
        [exe, "-c", str(conf), "-p", str(tmp)], sig=signal.SIGQUIT, log=tmp / "stderr.log"
    ) as proc:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                spot_check(
                    base, reqs, answers, ctx.token, post=False, exact="good revoked unknown", n=5
                )
                break
            except (OSError, BenchError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield base, proc


def measure(
    name: str, base: str, lua: Path, ctx: Ctx, pid: int, metrics_url: str | None = None
) -> dict[str, Any]:
    """One wrk load; the row: wrk's figures, the server's CPU per answer, fresh signatures."""
    sig0 = fresh_signatures(metrics_url) if metrics_url else 0.0
    cpu0 = cpu_by_process(pid)
    r = run_wrk(base + "/ocsp", lua, ctx.seconds, ctx.connections)
    cpu1 = cpu_by_process(pid)
    r.cpu_seconds_by_process = [round(cpu1[p] - cpu0.get(p, 0.0), 2) for p in cpu1]
    r.cpu_us_per_answer = round(sum(r.cpu_seconds_by_process) * 1e6 / max(r.requests, 1), 1)
    signed = int(fresh_signatures(metrics_url) - sig0) if metrics_url else 0
    errs = sum(r.socket_errors.values())
    print(
        f"  {name:<40} {r.rps:>8.0f} req/s  p50 {r.latency_us.get('50', 0):>6.0f} us"
        f"  p99 {r.latency_us.get('99', 0):>6.0f} us  {r.bytes_per_answer:>5.0f} B/answer"
        f"  CPU {r.cpu_us_per_answer:>5.1f} us/answer  fresh signatures {signed}"
        f"  non2xx {r.non_2xx} socket errors {errs}",
        flush=True,
    )
    return {**asdict(r), "fresh_signatures": signed}


def warm(ctx: Ctx, base: str, reqs: list[Req], metrics_url: str, max_passes: int) -> list[int]:
    """Passes over the whole set by GET until a pass makes almost no fresh signature: each
    worker has then signed and cached every good answer (it keeps its own cache)."""
    out: list[int] = []
    for k in range(max_passes):
        done = ctx.work / f"warm{k}.done"
        lua = lua_distinct(
            ctx.work / f"warm{k}.lua", reqs, "GET", ctx.token, nonces=False, done=done
        )
        s0 = fresh_signatures(metrics_url)
        run_wrk(base + "/ocsp", lua, 600, ctx.connections, until=done)
        out.append(int(fresh_signatures(metrics_url) - s0))
        print(f"  warm-up pass {k + 1}: {out[-1]} fresh signatures", flush=True)
        if out[-1] <= len(reqs) // 2000:
            break
    return out


def bench_workers(
    ctx: Ctx,
    workers: int,
    reqs: list[Req],
    answers: list[bytes],
    nonce_share: float,
    warm_passes: int,
) -> dict[str, Any]:
    """The responder with ``workers``: distinct GET, distinct POST, single POST (and nonces)."""
    out: dict[str, Any] = {}
    with responder(ctx, workers) as (base, metrics_url, proc):
        if workers == 1:
            t0 = time.monotonic()
            fetched = fetch_all(base, reqs, ctx.token)
            out["fetch_seconds"] = round(time.monotonic() - t0, 1)
            for i, (a, b) in enumerate(zip(answers, fetched, strict=True)):
                if not a:
                    answers[i] = b
            # one untimed pass of the set by wrk, as the 2-worker case warms up: the first
            # load right after a store was built measured 69 µs of CPU per answer where the
            # same load a minute later took 45-48 (2026-12-05)
            out["warm_fresh_signatures"] = warm(ctx, base, reqs, metrics_url, 1)
        else:
            out["warm_fresh_signatures"] = warm(ctx, base, reqs, metrics_url, warm_passes)
        w = f"responder w={workers}"
        loads = {
            "get_distinct": ("GET", False, False),
            "post_distinct": ("POST", False, False),
            "post_single": ("POST", False, True),
        }
        if nonce_share > 0:
            loads["post_distinct_nonce"] = ("POST", True, False)
        for name, (method, nonces, single) in loads.items():
            lua = lua_distinct(
                ctx.work / f"{name}-w{workers}.lua",
                reqs,
                method,
                ctx.token,
                nonces=nonces,
                single=single,
            )
            out[name] = measure(f"{w} {name}", base, lua, ctx, proc.pid, metrics_url)
        spot_check(base, reqs, answers, ctx.token, post=False, exact="revoked")
        spot_check(base, reqs, answers, ctx.token, post=True, exact="revoked")
    return out


def bench_signing(ctx: Ctx, reqs: list[Req], key_path: Path, workers: int = 2) -> dict[str, Any]:
    """Every request with a nonce (a fresh signature each), ``workers`` workers, against raw
    RSA in 2 processes."""
    lua = lua_distinct(ctx.work / "sign.lua", reqs, "POST", ctx.token, nonces=True)
    with responder(ctx, workers) as (base, metrics_url, proc):
        spot_check(base, reqs, [b""] * len(reqs), ctx.token, post=True, exact="", n=20)
        raw_before = raw_sign_rate(key_path, ctx.seconds / 2)
        row = measure(
            f"responder w={workers} post_distinct all nonces", base, lua, ctx, proc.pid,
            metrics_url,
        )  # fmt: skip
        raw_after = raw_sign_rate(key_path, ctx.seconds / 2)
    raw, raw_cpu = max(raw_before, raw_after)
    ratio = row["rps"] / raw
    print(
        f"  raw RSA signing, 2 processes: {raw:.0f}/s ({raw_cpu * 1e6:.0f} us CPU each); "
        f"fresh answers / raw {ratio:.2f}",
        flush=True,
    )
    return {
        "responder": row,
        "raw_rsa_signs_per_s_2_processes": round(raw),
        "raw_before_after": [round(raw_before[0]), round(raw_after[0])],
        "raw_cpu_us_per_signature": round(raw_cpu * 1e6, 1),
        "ratio": round(ratio, 3),
    }


def prepare_store(d: Path, holders: int) -> dict[str, Any]:
    """Make ``d`` a store of ``holders`` holders (synth + build, as `bench.bench_build` does)
    unless it holds one already; then a refresh build (no records) so its CRLs and stored
    answers are current. Returns what was done, with seconds."""
    from bench.bench_build import _flags
    from bench.bench_build import run as run_cmd

    cb = str(BIN / "crlbuilder")
    done: dict[str, Any] = {}
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "store" / "data.mdb").exists():
        as_of = datetime.now(UTC).replace(microsecond=0).isoformat()
        if not (d / "pki" / "pki.json").exists():
            run_cmd(cb, "pki", "init", "--out", str(d / "pki"))
        if not (d / "facts.key").exists():
            run_cmd(cb, "facts-key", "--out", str(d / "facts.key"))
        if not (d / "registry.toml").exists():
            run_cmd(str(BIN / "responder"), "registry", "init", "--pki", str(d / "pki"),
                    "--out", str(d / "registry.toml"))  # fmt: skip
        secs, _, _ = run_cmd(cb, "synth", "--pki", str(d / "pki"), "--holders", str(holders),
                             "--out", str(d / "pop"), "--seed", "1", "--as-of", as_of, "--force")  # fmt: skip
        done["synth_seconds"] = round(secs, 1)
        secs, _, _ = run_cmd(
            cb, "build", *_flags(d), "--input", str(d / "pop" / "records"), "--as-of", as_of
        )
        done["build_seconds"] = round(secs, 1)
    (d / "empty").mkdir(exist_ok=True)
    secs, _, _ = run_cmd(cb, "build", *_flags(d), "--input", str(d / "empty"),
                         "--delta-cycle-seconds", "43200")  # fmt: skip
    done["refresh_seconds"] = round(secs, 1)
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store-dir", type=Path, required=True, help="pki/, store/, crl/ (bench_build)")
    p.add_argument(
        "--holders",
        type=int,
        default=0,
        help="make the store first when --store-dir has none (synth + build of this many "
        "holders, then a refresh build each run); 0: use the store as it is",
    )
    p.add_argument("--requests", type=int, default=100_000, help="distinct requests in the set")
    p.add_argument("--revoked-share", type=float, default=0.20)
    p.add_argument("--unknown-share", type=float, default=0.05)
    p.add_argument("--nonce-share", type=float, default=0.0, help="share of requests with a nonce")
    p.add_argument("--seconds", type=int, default=8, help="length of each measured load")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--workers", default="1,2", help="responder worker counts to run")
    p.add_argument("--warm-passes", type=int, default=8, help="at most, with 2 workers")
    p.add_argument("--sign-load", action="store_true", help="also the all-nonce load vs raw RSA")
    p.add_argument(
        "--only-sign-load", action="store_true", help="only the all-nonce load (no cache needed)"
    )
    p.add_argument("--sign-threads", type=int, default=0, help="responder's [ocsp] sign_threads")
    p.add_argument(
        "--signing", default="", help="responder's [ocsp] signing (threads, loop, processes)"
    )
    p.add_argument(
        "--sign-processes", type=int, default=0, help="responder's [ocsp] sign_processes"
    )
    p.add_argument(
        "--sign-load-workers",
        default="2",
        help="worker counts of the all-nonce load (the results' signing, signing_w1, ...)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "distinct.json")
    p.add_argument("--responder", default=str(BIN / "responder"))
    p.add_argument("--keep-work", action="store_true")
    args = p.parse_args(argv)
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"bench_distinct: {tool} is not installed")
    d: Path = args.store_dir.resolve()
    prepared = prepare_store(d, args.holders) if args.holders else {}
    os.sync()  # what the build just wrote goes to disk before anything is measured
    manifest = load_manifest(d / "pki")
    store = Store.open(d / "store", readonly=True)
    try:
        until = fresh_until(store)
        if until and until < time.time() + 1800:
            raise SystemExit(
                f"bench_distinct: the store is fresh only until {datetime.fromtimestamp(until, UTC)}: "
                "run `crlbuilder build` on it first (the responder rightly answers tryLater after)"
            )
        t0 = time.monotonic()
        picks, info = pick_set(
            store,
            args.requests,
            args.revoked_share,
            args.unknown_share,
            args.nonce_share,
            args.seed,
        )
        with store.read() as r:
            certs = {m.index: x509.load_der_x509_certificate(m.cert_der) for m in r.issuers()}
    finally:
        store.close()
    reqs = build_requests(picks, certs)
    print(
        f"request set: {info['requests']} distinct ({info['revoked']} revoked, {info['good']} good, "
        f"{info['unknown']} unknown, {info['with_nonce']} with a nonce) over "
        f"{len(info['by_issuer_index'])} issuers of a store of {info['store_certificates']} "
        f"certificates ({time.monotonic() - t0:.1f} s)",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="bench-distinct-"))
    started_at = datetime.now(UTC).replace(microsecond=0)
    load0 = round(os.getloadavg()[0], 2)
    try:
        registry = work / "registry.toml"
        subprocess.run(
            [*shlex.split(args.responder), "registry", "init", "--pki", str(d / "pki"), "--out", str(registry)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        ctx = Ctx(
            work=work,
            store_dir=d,
            registry=registry,
            token=(d / "pki" / "parties" / f"{PARTY}.token").read_text().strip(),
            seconds=args.seconds,
            connections=args.connections,
            responder=shlex.split(args.responder),
            cache_entries=args.requests + 1000,
            sign_threads=args.sign_threads,
            signing=args.signing,
            sign_processes=args.sign_processes,
        )
        answers: list[bytes] = [b""] * len(reqs)
        results: dict[str, Any] = {}
        workers = [int(w) for w in args.workers.split(",")]
        if 1 not in workers:
            workers.insert(0, 1)  # the answers nginx serves are fetched from one worker
        for w in [] if args.only_sign_load else workers:
            print(f"responder, {w} worker(s):", flush=True)
            results[f"responder_w{w}"] = bench_workers(
                ctx, w, reqs, answers, args.nonce_share, args.warm_passes
            )
        if not args.only_sign_load:
            print("nginx, 1 worker, the same answers as static files at the same GET paths:")
            with nginx(ctx, reqs, answers) as (base, proc):
                lua = lua_distinct(work / "nginx.lua", reqs, "GET", ctx.token, nonces=False)
                results["nginx"] = {
                    "get_distinct": measure("nginx get_distinct", base, lua, ctx, proc.pid)
                }
                spot_check(base, reqs, answers, ctx.token, post=False, exact="good revoked unknown")
        if args.sign_load or args.only_sign_load:
            print("fresh signing (every request with a nonce):", flush=True)
            issuer = next(i for i in manifest.issuers if i.index == reqs[0].pick.issuer_index)
            all_nonce = build_requests(
                [Pick(r.pick.issuer_index, r.pick.serial, r.pick.expect, True) for r in reqs], certs
            )
            for w in (int(x) for x in args.sign_load_workers.split(",")):
                results["signing" if w == 2 else f"signing_w{w}"] = bench_signing(
                    ctx, all_nonce, manifest.path(issuer.ocsp_key), w
                )
    finally:
        if args.keep_work:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report = summarize(results, info, args, started_at, load0)
    report["store_prepared"] = prepared
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def summarize(
    results: dict[str, Any],
    info: dict[str, Any],
    args: argparse.Namespace,
    started_at: datetime,
    load0: float,
) -> dict[str, Any]:
    ratios: dict[str, Any] = {}
    for key, res in results.items():
        if not key.startswith("responder_w"):
            continue
        ng = results["nginx"]["get_distinct"]
        ratios[key] = {
            "get_distinct_over_nginx": round(res["get_distinct"]["rps"] / ng["rps"], 3),
            "post_distinct_over_post_single": round(
                res["post_distinct"]["rps"] / res["post_single"]["rps"], 3
            ),
            "cpu_nginx_over_get_distinct": round(
                ng["cpu_us_per_answer"] / max(res["get_distinct"]["cpu_us_per_answer"], 0.1), 3
            ),
        }
        print(
            f"{key}: distinct GET / nginx {ratios[key]['get_distinct_over_nginx']:.2f}; "
            f"distinct POST / single POST {ratios[key]['post_distinct_over_post_single']:.2f}; "
            f"CPU per answer nginx / responder {ratios[key]['cpu_nginx_over_get_distinct']:.2f}"
        )
    return {
        "bench": "bench_distinct",
        "command": "python -m bench.bench_distinct " + " ".join(sys.argv[1:]),
        "started_at": started_at.isoformat(),
        "cores": os.cpu_count(),
        "halt_poll_ns": halt_poll_ns(),
        "load_average_at_start_and_end": [load0, round(os.getloadavg()[0], 2)],
        "set": info,
        "load": f"wrk -t1 -c{args.connections} -d{args.seconds}s keep-alive, each request of the "
        "set in turn, Authorization: Bearer (nginx ignores it)",
        "results": results,
        "ratios": ratios,
        "notes": [
            "nginx: one worker, open_file_cache, sendfile off, access log off; the answers "
            "fetched from the responder, one static file per percent-encoded GET path "
            "(try_files $request_uri)",
            "every worker keeps its own good-answer cache (--good-cache-entries set to hold the "
            "set); with 2 workers, warm-up passes until a pass signs almost nothing; "
            "fresh_signatures counts the signatures made during a measured load",
            "cpu_us_per_answer: user + system CPU of the server's processes per answer, from "
            "/proc; steadier than req/s on this shared machine",
        ],
    }


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"bench_distinct: {e}", file=sys.stderr)
        sys.exit(1)
