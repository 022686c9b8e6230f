"""Load test of the HTTP layer alone against nginx, same bytes, same client, same run.

``python -m bench.bench_http --seconds 10`` starts `responder.server.serve` with
one worker and an app that answers every request with fixed bytes (the cost
of the I/O layer without any OCSP work), then nginx (one worker) serving the
same bytes from a static file, and loads each with ``wrk -t1 -c32`` doing
keep-alive POSTs of a ~100-byte ``application/ocsp-request`` body. It prints
req/s for both and the ratio.

nginx answers 405 to a POST on a static file, so its location turns the 405
into an internal redirect that serves the file (``error_page 405 =200 $uri``):
one internal redirect per request, which costs nginx a little; it is tuned as
DESIGN.md says (``open_file_cache``, ``sendfile off``, access log off).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.procs import stop, wait_line
from responder.config import ResponderConfig, load_config
from responder.http import Request, Response
from responder.server import serve

REQUEST_BODY = bytes.fromhex(
    "3064306230603049300906052b0e03021a05000414"
    "a5b4c3d2e1f0a5b4c3d2e1f0a5b4c3d2e1f0a5b4"
    "0414b4c3d2e1f0a5b4c3d2e1f0a5b4c3d2e1f0a5b4c3"
    "021100c0ffee00c0ffee00c0ffee00c0ffeea2113010"
    "300e06092b0601050507300102040100"
)
"""An OCSP request's shape (one CertID, a nonce), 102 bytes; the server does not parse it."""


class FixedApp:
    """Every request gets the same pre-built `Response`."""

    def __init__(self, config: ResponderConfig, index: int) -> None:
        size = int(os.environ.get("BENCH_RESPONSE_BYTES", "1500"))
        self.response = Response(200, _answer(size), b"application/ocsp-response")

    def handle(self, req: Request) -> Response:
        return self.response


def _answer(size: int) -> bytes:
    return bytes((i * 7 + 3) & 0xFF for i in range(size))


def _lua(path: Path) -> Path:
    body = "".join(f"\\{b}" for b in REQUEST_BODY)
    path.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = "{body}"\n'
        'wrk.headers["Content-Type"] = "application/ocsp-request"\n'
    )
    return path


def _wrk(url: str, lua: Path, seconds: int, connections: int) -> tuple[float, str]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua), url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise RuntimeError("wrk printed no Requests/sec:\n" + out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
    return float(match.group(1)), errors.group(0) if errors else ""


def run_responder(tmp: Path, lua: Path, seconds: int, connections: int) -> tuple[float, str]:
    config = tmp / "responder.toml"
    config.write_text('[server]\nport = 0\nworkers = 1\n[log]\nlevel = "warning"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_http", "--serve", str(config)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        url = wait_line(proc, r"listening on (\S+)", 20)
        return _wrk(url + "/ocsp", lua, seconds, connections)
    finally:
        stop(proc)


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile off;
    open_file_cache max=16 inactive=60s;
    open_file_cache_valid 60s;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/www;
        location = /ocsp {{
            default_type application/ocsp-response;
            error_page 405 =200 $uri;
        }}
    }}
}}
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_nginx(tmp: Path, lua: Path, seconds: int, connections: int, size: int) -> tuple[float, str]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    www = tmp / "www"
    www.mkdir()
    (www / "ocsp").write_bytes(_answer(size))
    for p in (tmp, www):
        p.chmod(0o755)
    port = _free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port))
    if os.geteuid() == 0:
        conf.write_text("user root;\n" + conf.read_text())
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp)], stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                import urllib.request

                with urllib.request.urlopen(url + "/ocsp", timeout=1) as resp:
                    if resp.read() == _answer(size):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("nginx did not start")
            time.sleep(0.1)
        return _wrk(url + "/ocsp", lua, seconds, connections)
    finally:
        stop(proc, signal.SIGQUIT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--response-bytes", type=int, default=1500)
    parser.add_argument("--skip-nginx", action="store_true")
    parser.add_argument("--serve", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ["BENCH_RESPONSE_BYTES"] = str(args.response_bytes)
    if args.serve:
        return serve(load_config(Path(args.serve), {}), FixedApp)
    with tempfile.TemporaryDirectory(prefix="bench-http-") as name:
        tmp = Path(name)
        lua = _lua(tmp / "post.lua")
        ours, ours_err = run_responder(tmp, lua, args.seconds, args.connections)
        print(f"responder (1 worker, fixed bytes): {ours:10.0f} req/s {ours_err}")
        if args.skip_nginx:
            return 0
        ref, ref_err = run_nginx(tmp, lua, args.seconds, args.connections, args.response_bytes)
        print(f"nginx (1 worker, static file):     {ref:10.0f} req/s {ref_err}")
        print(f"ratio responder/nginx: {ours / ref:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
