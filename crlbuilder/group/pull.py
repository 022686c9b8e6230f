"""`crlbuilder group pull [--follow]`: the 機構's CRL files into a group appliance's store.

A group signature verifier (団体署名検証者, Act §17(5)) answers its members from the
signature CRL files the 機構 provides to it (Act §18(2), §20(1)), fetched with the
group's own credential at the agreed cycle (提供の周期, Ord §33(2)). One pass, for
every issuer of ``group.json`` (`crlbuilder.group.setup`):

1. ``HEAD`` the full CRL's URL: an ETag equal to the last one imported means the file
   has not changed, nothing to fetch (a HEAD provides nothing: the 機構 counts no
   download and uses no cycle for it); else ``GET`` it with ``Authorization: Bearer``
   (counted in the 機構's ledger against the group, 帳簿 Act §40) and import it
   (`crlbuilder.crl.importer`: signature against the CA certificate the group received,
   order, freshness; applied in one write transaction);
2. the same for the delta CRL (a 404 there: the 機構 publishes no delta CRL). A delta
   based on a full CRL newer than the one imported (the 機構 published a new full CRL
   between the two fetches) makes the pass fetch the full CRL again, once.

"This full CRL is the one I have" and "this delta is already applied" are nothing to
do (``already-imported`` / ``unchanged``), never errors. A CRL that fails verification,
goes backwards or is past its nextUpdate is refused and the store keeps the last good
data, the log line saying why; the responder then answers from that data, and says
``tryLater`` (and raises ``jpkiva_stale_issuer``, alert JpkiVaIssuerStale) once its
nextUpdate passes. A 機構 that cannot be reached (refused connection, timeout, 5xx,
429) is retried with a doubling backoff (1 s up to the cycle; a Retry-After is
honoured); the responder reads the store on its own and is never held by a pull (LMDB
readers do not wait for the writer).

``--follow`` repeats the pass: a cycle after the end of a clean pass (so two downloads
of one file are never less than a cycle apart), sooner after a failure (the backoff).
Log lines are JSON on stderr: ``group-pull`` per file (issuer id, full or delta,
status, CRL number, counts, why refused), ``group-pass`` per pass, ``group-stale``
when an issuer's data passes its nextUpdate; never the token, never a serial.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final, Literal

from crlbuilder.crl.importer import (
    MAX_CRL_BYTES,
    BaseAhead,
    CrlImporter,
    ImportRefused,
    group_issuers,
    source_label,
)
from crlbuilder.group.setup import GroupIssuer, GroupSetup, GroupSetupError, load_group_setup
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store

__all__ = [
    "FetchFailed",
    "GroupFeed",
    "Outcome",
    "add_cli",
    "fetch",
    "group_issuers",
    "read_token",
    "run_pull",
]

BACKOFF_START: Final = 1.0
"""The first retry after a failed pass, in seconds; it doubles up to the cycle."""

Kind = Literal["full", "delta"]
Status = Literal["imported", "already-imported", "unchanged", "absent", "refused", "unreachable"]


class FetchFailed(Exception):
    """The 機構's appliance did not deliver (network, timeout, HTTP error): try again later."""

    def __init__(self, reason: str, *, status: int = 0, retry_after: float = 0.0) -> None:
        super().__init__(reason)
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Fetched:
    body: bytes
    etag: str | None


def _loopback(host: str | None) -> bool:
    return host in ("localhost", "127.0.0.1", "::1") or bool(host and host.startswith("127."))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """The CRL URLs are fixed by the agreement: a redirect is an error, never followed."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER: Final = urllib.request.build_opener(_NoRedirects)


def fetch(
    url: str, token: str, *, method: Literal["GET", "HEAD"] = "GET", timeout: float = 30.0
) -> Fetched:
    """One request to the 機構's appliance with the group's bearer token; FetchFailed if not 200.

    The token goes to http(s) URLs only, never over plain http to a host other than
    loopback, and is never logged."""
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https"):
        raise FetchFailed(f"{source_label(url)}: not an http(s) URL")
    if u.scheme == "http" and not _loopback(u.hostname):
        raise FetchFailed(
            "refusing to send the bearer token over plain http to a non-loopback host"
        )
    req = urllib.request.Request(  # noqa: S310 (http(s) checked above)
        url,
        method=method,
        headers={"Accept": "application/pkix-crl", "Authorization": f"Bearer {token}"},
    )
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            body: bytes = resp.read(MAX_CRL_BYTES + 1) if method == "GET" else b""
            etag = resp.headers.get("ETag")
    except urllib.error.HTTPError as e:
        retry = e.headers.get("Retry-After") if e.headers is not None else None
        raise FetchFailed(
            f"HTTP {e.code} {e.reason}",
            status=e.code,
            retry_after=float(retry) if retry and retry.isdigit() else 0.0,
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        raise FetchFailed(f"cannot fetch: {reason}") from None
    if len(body) > MAX_CRL_BYTES:
        raise FetchFailed(f"more than the {MAX_CRL_BYTES} bytes accepted")
    return Fetched(body, etag)


@dataclass(slots=True)
class Outcome:
    """What one file did in a pass (one ``group-pull`` log line; no personal data)."""

    issuer: str
    kind: Kind
    status: Status
    number: int = 0
    commit: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    detail: str = ""
    retry_after: float = 0.0
    seconds: float = 0.0
    base_ahead: bool = False
    """A delta CRL based on a newer full CRL than the one imported (`BaseAhead`)."""

    @property
    def failed(self) -> bool:
        return self.status in ("refused", "unreachable")

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "event": "group-pull", "issuer": self.issuer, "kind": self.kind,
            "status": self.status, "seconds": round(self.seconds, 3),
        }  # fmt: skip
        if self.number:
            d["number"] = self.number
        if self.status == "imported":
            d.update(commit=self.commit, added=self.added, updated=self.updated)
            d["removed"] = self.removed
        if self.detail:
            d["error" if self.failed else "detail"] = self.detail
        return d


@dataclass
class GroupFeed:
    """The group's pull: one `pass_once` fetches and imports every issuer's CRL files."""

    setup: GroupSetup
    store: Store
    timeout: float = 30.0
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    log: IO[str] = field(default_factory=lambda: sys.stderr)
    _etags: dict[str, str] = field(default_factory=dict)
    _stale: set[str] = field(default_factory=set)
    importer: CrlImporter = field(init=False)

    def __post_init__(self) -> None:
        self.importer = CrlImporter(self.store, group_issuers(self.setup))

    def token(self) -> str:
        """The group's bearer token, read at each pass (a rotated token is taken up)."""
        return read_token(self.setup)

    def fed(self) -> list[GroupIssuer]:
        """The issuers whose CRL files the group receives: the signature families only (Act
        §18(2), §20(1)); the others' CA certificates only let members' requests about them be
        recognised, and refused."""
        return [i for i in self.setup.issuers if i.family.is_sign]

    def pass_once(self) -> list[Outcome]:
        """Every issuer's full then delta CRL (module docstring); one log line per file."""
        token = self.token()
        out: list[Outcome] = []
        for issuer in self.fed():
            full = self._file(issuer, "full", token)
            delta = self._file(issuer, "delta", token)
            if delta.base_ahead:  # a new full CRL was published between the two fetches
                self._etags.pop(issuer.crl_url, None)
                full = self._file(issuer, "full", token)
                delta = self._file(issuer, "delta", token)
            out += (full, delta)
            for o in (full, delta):
                self._emit(o.as_dict())
        self._publish()
        self._check_stale()
        return out

    def _publish(self) -> None:
        """A new store is staged until its first CRL is imported, then put in its place
        (`Store.open_staged`): never an empty one in the meantime."""
        if self.store.staged_for is None:
            return
        with self.store.read() as r:
            if not r.crl_import():  # marked by the first import's commit
                return
        self.store = self.store.publish()
        self.importer = CrlImporter(self.store, group_issuers(self.setup))

    def _file(self, issuer: GroupIssuer, kind: Kind, token: str) -> Outcome:
        url = issuer.crl_url if kind == "full" else issuer.delta_crl_url
        t0 = time.monotonic()
        o = Outcome(issuer.id, kind, "unreachable")
        try:
            last = self._etags.get(url)
            if last is not None:
                head = fetch(url, token, method="HEAD", timeout=self.timeout)
                if head.etag == last:
                    o.status = "unchanged"
                    return o
            got = fetch(url, token, timeout=self.timeout)
            result = self.importer.import_der(
                got.body, as_of=self.clock(), source=issuer.id, expect=issuer.id
            )
        except FetchFailed as e:
            if kind == "delta" and e.status == 404:
                o.status, o.detail = "absent", "no delta CRL published"
            else:
                o.detail, o.retry_after = str(e), e.retry_after
            return o
        except BaseAhead as e:
            o.status, o.detail, o.base_ahead = "refused", str(e), True
            return o
        except ImportRefused as e:
            o.status, o.detail = "refused", str(e)
            return o
        finally:
            o.seconds = time.monotonic() - t0
        if got.etag is not None:
            self._etags[url] = got.etag
        o.number = result.number
        if result.already_imported:
            o.status = "already-imported"
            return o
        o.status = "imported"
        o.commit, o.added, o.updated, o.removed = (
            result.commit, result.added, result.updated, result.removed,
        )  # fmt: skip
        return o

    def _check_stale(self) -> None:
        """Say once when an issuer's data passes the nextUpdate it promised (and when it is
        fresh again): the responder answers tryLater for it meanwhile."""
        now = int(self.clock().timestamp())
        with self.store.read() as r:
            for issuer in self.fed():
                until = r.promised_next_update(issuer.index)
                stale = until == 0 or until <= now
                if stale and issuer.id not in self._stale:
                    self._stale.add(issuer.id)
                    self._emit(
                        {"event": "group-stale", "issuer": issuer.id, "next_update": until,
                         "answers": "tryLater until a fresh CRL is imported"}
                    )  # fmt: skip
                elif not stale and issuer.id in self._stale:
                    self._stale.discard(issuer.id)
                    self._emit({"event": "group-fresh", "issuer": issuer.id, "next_update": until})

    def follow(self, stop: threading.Event, *, max_passes: int | None = None) -> int:
        """Passes until ``stop`` is set (or ``max_passes``): a cycle after a clean pass, a
        doubling backoff after a failed one. Returns the passes made."""
        cycle = float(self.setup.cycle_seconds)
        backoff = 0.0
        passes = 0
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                outcomes = self.pass_once()
            except GroupSetupError as e:
                self._emit({"event": "group-pass", "status": "failed", "error": str(e)})
                outcomes = [Outcome("-", "full", "unreachable", detail=str(e))]
            passes += 1
            failed = [o for o in outcomes if o.failed]
            if failed:
                backoff = min(cycle, backoff * 2 if backoff else BACKOFF_START)
                wait = max(backoff, *(o.retry_after for o in failed))
            else:
                backoff = 0.0
                wait = cycle
            self._emit(
                {"event": "group-pass", "status": "failed" if failed else "ok",
                 "failed": len(failed), "seconds": round(time.monotonic() - t0, 3),
                 "next_in": round(wait, 3)}
            )  # fmt: skip
            if max_passes is not None and passes >= max_passes:
                break
            stop.wait(wait)
        return passes

    def _emit(self, line: dict[str, object]) -> None:
        print(json.dumps(line, ensure_ascii=False), file=self.log, flush=True)


def read_token(setup: GroupSetup) -> str:
    """The group's bearer token from its file, or GroupSetupError."""
    path = setup.path(setup.token_file)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise GroupSetupError(f"{path}: cannot read the token file: {e}") from None
    if not token:
        raise GroupSetupError(f"{path}: the token file is empty")
    return token


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def add_cli(subparsers: Any) -> None:
    """Register ``pull`` on ``crlbuilder group``'s subparsers."""
    p = subparsers.add_parser(
        "pull",
        help="fetch, verify and import the 機構's CRL files (--follow: every cycle)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--group", type=Path, required=True, help="the group directory (group.json)")
    p.add_argument("--follow", action="store_true", help="repeat at the agreed cycle")
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per HTTP request (default %(default)s)"
    )
    p.set_defaults(func=run_pull)


def run_pull(args: argparse.Namespace) -> int:
    """0: every file imported or unchanged; 1: one refused or unreachable; 2: bad setup.

    The setup and the token are checked before the store is opened. A new store is staged
    beside its place and put there at the first CRL imported (`GroupFeed._publish`), so
    neither the responder nor an operator ever finds an empty one, however long the passes
    of ``--follow`` fail; a staged store that imported nothing is deleted at the end."""
    prog = "crlbuilder group pull"
    try:
        setup = load_group_setup(args.group)
        read_token(setup)
        place = setup.path(setup.store)
        if (place / "data.mdb").exists():
            store = Store.open(place, readonly=False)
        else:
            store = Store.open_staged(place)
    except (GroupSetupError, sf.StoreFormatError, OSError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    try:
        feed = GroupFeed(setup, store, timeout=args.timeout)
    except ImportRefused as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        _close(store)
        return 2
    try:
        if args.follow:
            stop = threading.Event()
            _stop_on_signals(stop)
            feed.follow(stop)
            rc = 0
        else:
            try:
                outcomes = feed.pass_once()
            except GroupSetupError as e:
                print(f"{prog}: error: {e}", file=sys.stderr)
                rc = 2
            else:
                rc = 1 if any(o.failed for o in outcomes) else 0
        if feed.store.staged_for is not None:  # nothing imported: never put in place
            print(f"{prog}: error: no CRL imported: no store made at {place}", file=sys.stderr)
            return rc or 1
        return rc
    except sf.StoreFormatError as e:  # the new store could not be put in its place
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    finally:
        _close(feed.store)


def _close(store: Store) -> None:
    """Close the store; a staged one (nothing imported) is deleted."""
    if store.staged_for is not None:
        store.discard()
    else:
        store.close()


def _stop_on_signals(stop: threading.Event) -> None:
    import signal

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
