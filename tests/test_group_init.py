"""`crlbuilder group init` against a 機構 serving its `/ca/` routes (`responder.app.ca_routes`), in process.

The pins (``--ca-sha256``) cover every certificate the group will verify CRLs with: the CA
certificates and, after a compromise of an issuing key, the successor certificate whose key
signs that generation's CRLs from then on (Act §14); a refusal names the certificate.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from crlbuilder.group import init as group_init
from crlbuilder.group.answerkeys import KEYS_NAME, parse_jwks
from crlbuilder.group.setup import load_group_setup
from crlbuilder.manifest import Manifest
from responder.app import ca_routes
from tests.test_group_pull_http import RawServer, drip_head
from tests.test_group_relay import KIKOU_KEY, AnswerKey


@contextlib.contextmanager
def kikou(
    manifest: Manifest,
    tamper: Callable[[list[dict[str, Any]]], None] | None = None,
    keys: list[bytes] | None = None,
) -> Iterator[str]:
    """The 機構's public /ca/ routes and /v1/keys on loopback (``tamper``: changes its
    index's entries; ``keys[0]``: the JWKS served, changed by a test at will)."""
    served = keys if keys is not None else [KIKOU_KEY.jwks]
    routes = {k.decode(): bytes(v.body) for k, v in ca_routes(manifest).items()}
    if tamper is not None:
        doc = msgspec.json.decode(routes["/ca/index.json"])
        tamper(doc["issuers"])
        routes["/ca/index.json"] = msgspec.json.encode(doc)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = served[0] if self.path == "/v1/keys" else routes.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def index(url: str) -> list[dict[str, str]]:
    with urllib.request.urlopen(url + "/ca/index.json") as r:
        issuers: list[dict[str, str]] = msgspec.json.decode(r.read())["issuers"]
    return issuers


def init(pki: Path, url: str, out: Path, pins: list[str], *extra: str) -> int:
    p = argparse.ArgumentParser()
    group_init.add_cli(p.add_subparsers())
    args = p.parse_args([
        "init", "--out", str(out), "--authority", url, "--group-id", "g",
        "--token-file", str(pki / "parties" / "group-verifier.token"),
        "--responder-cert", str(pki / "tls" / "group-responder.pem"),
        "--responder-key", str(pki / "tls" / "group-responder.key"),
        "--name", "n", "--address", "a", "--representative", "r", "--office", "o",
        "--group-kind", "1", "--member-prefix", "m-", "--liability", "l", "--member-answer", "x",
        *(a for h in pins for a in ("--ca-sha256", h)), *extra,
    ])  # fmt: skip
    rc: int = args.func(args)
    return rc


def test_the_successor_certificate_is_pinned_too(
    demo_pki: tuple[Path, Manifest], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its key signs a compromised generation's CRLs: unpinned, whoever served the index could
    make the group accept CRLs of their own for that generation."""
    pki, manifest = demo_pki
    with kikou(manifest) as url:
        issuers = index(url)
        succ = [i for i in issuers if i.get("successor_sha256")]
        assert succ, "the demo PKI has a compromised generation with a successor"
        cas = [i["sha256"] for i in issuers]
        assert init(pki, url, tmp_path / "a", cas) == 1
        err = capsys.readouterr().err
        assert "not one of --ca-sha256" in err and f"{succ[0]['id']}'s successor" in err, err
        assert not (tmp_path / "a").exists()
        assert init(pki, url, tmp_path / "b", [*cas, *(i["successor_sha256"] for i in succ)]) == 0
        assert succ[0]["successor_sha256"] in capsys.readouterr().err  # printed to compare


def test_an_unpinned_certificate_is_named(
    demo_pki: tuple[Path, Manifest], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki, manifest = demo_pki
    with kikou(manifest) as url:
        issuers = index(url)
        pins = [i["sha256"] for i in issuers if i["id"] != "auth-card-g1"]
        pins += [i["successor_sha256"] for i in issuers if i.get("successor_sha256")]
        assert init(pki, url, tmp_path / "a", pins) == 1
        err = capsys.readouterr().err
        assert "auth-card-g1" in err and "not one of --ca-sha256" in err, err
        every = [*pins, *(i["sha256"] for i in issuers if i["id"] == "auth-card-g1")]
        assert init(pki, url, tmp_path / "b", [*every, "ab" * 32]) == 1
        err = capsys.readouterr().err
        assert "ab" * 32 in err and "no such certificate served" in err, err


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("crl", "@127.0.0.2:9/crl/x.crl"),  # https://va.example@elsewhere/...: another host
        ("delta_crl", "//127.0.0.2:9/x.crl"),
        ("id", "../../escaped-g1"),  # a file written outside ca/
    ],
)
def test_an_index_naming_another_host_or_a_path_outside_is_refused(
    demo_pki: tuple[Path, Manifest], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    field: str, value: str,
) -> None:  # fmt: skip
    """The index is public and unauthenticated: its paths become URLs the pull sends the
    group's token to, its ids file names. One naming another host or a path outside the
    directory is refused, nothing written."""

    def tamper(issuers: list[dict[str, Any]]) -> None:
        issuers[0][field] = value

    pki, manifest = demo_pki
    with kikou(manifest, tamper) as url:
        out = tmp_path / "d" / "a"
        assert init(pki, url, out, []) == 1
        err = capsys.readouterr().err
        assert "not a CA index" in err and f"$.issuers[0].{field}" in err, err
        assert not out.exists() and list(tmp_path.rglob("*.pem")) == []


def keys_cmd(group: Path, *extra: str) -> int:
    p = argparse.ArgumentParser()
    group_init.add_keys_cli(p.add_subparsers())
    args = p.parse_args(["keys", "--group", str(group), *extra])
    rc: int = args.func(args)
    return rc


def pinned(group: Path) -> set[str]:
    setup = load_group_setup(group)
    assert setup.answer_keys == KEYS_NAME
    assert (group / KEYS_NAME).stat().st_mode & 0o777 == 0o644
    return set(parse_jwks((group / KEYS_NAME).read_bytes()))


def test_init_pins_the_kikous_answer_keys_and_a_rotation_overlaps(
    demo_pki: tuple[Path, Manifest], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """init writes the 機構's /v1/keys beside group.json (and prints each kid to compare);
    ``group keys`` takes the next key while the 機構 publishes it beside the pinned one, keeps
    the old one while it is published, drops it once it is not; a set sharing no key with
    the pinned one is refused (nothing written) unless its kid was received out of band."""
    pki, manifest = demo_pki
    old, new, stranger = KIKOU_KEY, AnswerKey(), AnswerKey()
    served = [old.jwks]
    with kikou(manifest, keys=served) as url:
        group = tmp_path / "g"
        assert init(pki, url, group, []) == 0
        assert old.kid in capsys.readouterr().err  # printed to compare
        assert pinned(group) == {old.kid}
        both = json.loads(old.jwks)["keys"] + json.loads(new.jwks)["keys"]
        served[0] = json.dumps({"keys": both}).encode()  # the rollover: both published
        assert keys_cmd(group) == 0
        assert f"pinned the 機構's answer key {new.kid}" in capsys.readouterr().err
        assert pinned(group) == {old.kid, new.kid}  # the old one still valid
        served[0] = new.jwks  # the old one withdrawn
        assert keys_cmd(group) == 0
        assert f"dropped the 機構's answer key {old.kid}" in capsys.readouterr().err
        assert pinned(group) == {new.kid}
        served[0] = stranger.jwks  # no overlap: not on its own word
        before = (group / KEYS_NAME).read_bytes()
        assert keys_cmd(group) == 1
        assert "serves no key the group pinned" in capsys.readouterr().err
        assert (group / KEYS_NAME).read_bytes() == before
        assert keys_cmd(group, f"--answer-kid={new.kid}") == 1  # a kid not served
        assert "not served by the 機構" in capsys.readouterr().err
        assert keys_cmd(group, f"--answer-kid={stranger.kid}") == 0  # received out of band
        assert pinned(group) == {stranger.kid}


@pytest.mark.parametrize(
    ("jwks", "why"),
    [
        (b"<html>", "not a JWKS"),
        (b'{"keys": []}', "1 to 16 keys"),
        ("kid", "not its RFC 7638 thumbprint"),
        ("alg", "not an RSA RS256 signature key"),
    ],
)
def test_init_refuses_keys_that_are_not_the_kikous_answer_keys(
    demo_pki: tuple[Path, Manifest], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    jwks: bytes | str, why: str,
) -> None:  # fmt: skip
    pki, manifest = demo_pki
    if isinstance(jwks, str):  # one field of a good key changed
        doc = json.loads(KIKOU_KEY.jwks)
        doc["keys"][0][jwks] = {"kid": "x" * 43, "alg": "HS256"}[jwks]
        jwks = json.dumps(doc).encode()
    with kikou(manifest, keys=[jwks]) as url:
        assert init(pki, url, tmp_path / "g", []) == 1
        err = capsys.readouterr().err
        assert "/v1/keys" in err and why in err, err
        assert not (tmp_path / "g").exists()
    with kikou(manifest) as url:
        assert init(pki, url, tmp_path / "h", [], "--answer-kid", "y" * 43) == 1
        assert "not served by the 機構" in capsys.readouterr().err


def test_a_kikou_dripping_its_answer_is_cut_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`group init` and `group keys` ask the 機構's public routes (here ``/v1/keys``): a
    header byte every 0.1 s (6 s for the head) kept each read within urllib's 30 s timeout,
    and the command waited the head out. The whole request is cut at its deadline now (1 s
    here), nothing written."""
    monkeypatch.setattr(group_init, "TIMEOUT", 1.0, raising=False)
    server = RawServer(drip_head)
    try:
        t0 = time.monotonic()
        with pytest.raises(group_init.InitError, match="not received whole within 1 s"):
            group_init.fetch_answer_keys(server.url.rsplit("/", 2)[0])
        assert time.monotonic() - t0 < 2.0
    finally:
        server.close()


def test_a_broken_http_answer_is_refused_not_a_traceback() -> None:
    """A status line that is not HTTP: http.client's BadStatusLine is no OSError, and
    ``group init`` / ``group keys`` ended with its traceback."""
    server = RawServer(lambda conn: conn.sendall(b"HELLO\r\n\r\n"))
    try:
        with pytest.raises(group_init.InitError, match="cannot fetch"):
            group_init.fetch_answer_keys(server.url.rsplit("/", 2)[0])
    finally:
        server.close()


def test_a_redirect_is_not_followed_and_nothing_is_pinned(
    demo_pki: tuple[Path, Manifest], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """init and keys pin what the 機構's address serves (its CA certificates, its answer
    keys): urllib followed a redirect to any host, and init pinned that host's keys (the
    pull and the relay already refused redirects). Refused now, nothing written."""
    pki, manifest = demo_pki
    with kikou(manifest) as elsewhere:

        class Redirect(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(302)
                self.send_header("Location", elsewhere + self.path)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
        t = threading.Thread(target=server.serve_forever, daemon=True)
        t.start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}"
            with pytest.raises(group_init.InitError, match="a redirect: not followed"):
                group_init.fetch_answer_keys(url)
            assert init(pki, url, tmp_path / "g", []) == 1
            assert "a redirect: not followed" in capsys.readouterr().err
            assert not (tmp_path / "g").exists()
        finally:
            server.shutdown()
            server.server_close()


@pytest.mark.parametrize("url", ["http://va.example.invalid", "http://127.0.0.1.example.invalid"])
def test_init_refuses_a_kikou_over_plain_http_to_another_host(
    demo_pki: tuple[Path, Manifest], tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    """init fetched the CA certificates (what every CRL is verified with) and the answer keys
    in clear from such an address, and wrote a group whose every pull then refused to send
    the token there. Refused at once, nothing fetched or written; as the pull and the relay,
    plain http only to loopback."""
    pki, _ = demo_pki
    assert init(pki, url, tmp_path / "g", []) == 1
    err = capsys.readouterr().err
    assert "plain http to a host other than loopback" in err, err
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://127.0.0.1:8080", False),
        ("http://[::1]:8080", False),
        ("http://localhost:8080", False),
        ("https://va.example", False),
        ("http://127.0.0.1.example.invalid", True),
        ("http://127.example.invalid", True),
        ("http://va.example", True),
    ],
)
def test_the_relay_sends_the_token_over_plain_http_to_loopback_only(
    url: str, refused: bool
) -> None:
    from responder.relayclient import token_url_refusal

    assert (token_url_refusal(url) is not None) == refused


def test_keys_on_a_directory_that_is_no_group_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`crlbuilder group keys --group DIR` with no readable group.json exited 1 ("the work
    failed") where `group pull` exits 2 and the command's help says 2 for a bad
    configuration: a timer's failure looked like an unreachable 機構."""
    assert keys_cmd(tmp_path / "nowhere") == 2
    assert "cannot read the group setup" in capsys.readouterr().err
    (tmp_path / "group.json").write_text("{")
    assert keys_cmd(tmp_path) == 2
    assert "invalid group setup" in capsys.readouterr().err


def test_a_key_id_beginning_with_a_dash_is_taken_with_the_equals_form() -> None:
    """An RFC 7638 thumbprint is base64url: one in 64 begins with ``-``, which the parser
    takes for an option after a space (``--answer-kid -Ab…``: "expected one argument", the
    test above failed so once in 64 runs). The help and docs/operations.md say to write
    ``--answer-kid=KID``, which takes it (as the tests now write it)."""
    kid = "-" + "A" * 42
    p = argparse.ArgumentParser()
    group_init.add_keys_cli(p.add_subparsers())
    args = p.parse_args(["keys", "--group", "g", f"--answer-kid={kid}"])
    assert args.answer_kid == [kid]


@pytest.mark.parametrize("kind", ["mode-0644", "mode-0640", "fifo"])
def test_init_refuses_a_source_token_file_others_may_read_or_not_a_file(
    demo_pki: tuple[Path, Manifest], tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """``--token-file``, the operator's copy of the group's credential, was read whatever its
    mode (a token group or others could read was copied 0600 and left as it was) and a named
    pipe there held init in ``open`` for ever. Checked now as the group's own copy is
    (`crlbuilder.tokenfile`: a regular file, 0600 or stricter): refused before anything is
    fetched or written, the message naming the file and why, never the token."""
    pki, manifest = demo_pki
    source = tmp_path / "given.token"
    token = (pki / "parties" / "group-verifier.token").read_text()
    if kind == "fifo":
        os.mkfifo(source, 0o600)
    else:
        source.write_text(token)
        source.chmod(int(kind.removeprefix("mode-"), 8))
    fetched: list[str] = []
    with kikou(manifest) as url:
        real_get = group_init._get
        done: list[int] = []

        def run() -> None:
            done.append(init(pki, url, tmp_path / "g", [], "--token-file", str(source)))

        def spy(u: str, *a: Any, **k: Any) -> bytes:
            fetched.append(u)
            return real_get(u, *a, **k)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(group_init, "_get", spy)
            t = threading.Thread(target=run, daemon=True)
            t.start()
            t.join(20)
            if t.is_alive():  # unblock the open of the pipe, then fail
                with open(source, "wb"):
                    pass
                t.join(5)
                pytest.fail("group init hung on a named pipe as its token file")
    assert done == [1]
    err = capsys.readouterr().err
    assert str(source) in err, err
    expected = "not a regular file" if kind == "fifo" else f"mode {kind[-4:]} lets group or others"
    assert expected in err, err
    assert token.strip() not in err
    assert fetched == []  # nothing asked of the 機構
    assert not (tmp_path / "g").exists()
