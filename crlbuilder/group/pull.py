"""`crlbuilder group pull [--follow]`: the 機構's CRL files into a group appliance's store.

This module does it; how a pass goes, what it refuses and retries and what it logs is the
command's description, `crlbuilder.group.pullcli`'s docstring (``crlbuilder group pull
--help``), which builds the command's flags without importing this module.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any, Final, Literal

import msgspec

from crlbuilder.crl.importer import (
    MAX_CRL_BYTES,
    BaseAhead,
    CrlImporter,
    ImportRefused,
    cut_at_deadline,
    group_issuers,
    source_label,
)
from crlbuilder.deadlinehttp import (
    BodyRefused,
    Deadline,
    NoRedirects,
    Stopped,
    loopback_host,
    opener,
    read_body,
)
from crlbuilder.group import pullcli
from crlbuilder.group.pullcli import MIN_RATE, TIMEOUT
from crlbuilder.group.setup import GroupIssuer, GroupSetup, GroupSetupError, load_group_setup
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.tokenfile import TokenFileError, read_token_file

__all__ = [
    "MIN_RATE",
    "TIMEOUT",
    "FetchFailed",
    "GroupFeed",
    "Outcome",
    "add_cli",
    "delay_seconds",
    "fetch",
    "group_issuers",
    "read_token",
    "run_pull",
]


_READ_CHUNK: Final = 1 << 20
"""The most bytes one socket read of a body returns (`crlbuilder.deadlinehttp.read_body`)."""

BACKOFF_START: Final = 1.0
"""The first retry after a failed pass, in seconds; it doubles up to the cycle."""

Kind = Literal["full", "delta"]
Status = Literal[
    "imported",
    "already-imported",
    "unchanged",
    "absent",
    "limited",
    "refused",
    "unreachable",
    "stopped",
]
LIMITS: Final = {
    "cycle": "the agreed cycle (取決め, 提供の周期 Ord §33(2)) limits downloads",
    "quota": "the agreed quota (取決め) limits downloads",
}
"""What a 429's problem rule (`responder.policy.Rule`) says, for the log line."""


class FetchFailed(Exception):
    """The 機構's appliance did not deliver (network, timeout, HTTP error): try again later."""

    def __init__(
        self,
        reason: str,
        *,
        status: int = 0,
        retry_after: float = 0.0,
        rule: str = "",
        stopped: bool = False,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.retry_after = retry_after
        self.rule = rule
        """The problem's rule of a refusal (``cycle``, ``quota`` ...), "" when none was said."""
        self.stopped = stopped
        """Given up because the pull is stopping (``stop`` set: SIGTERM), not the 機構's doing."""


@dataclass(frozen=True, slots=True)
class Fetched:
    body: bytes
    etag: str | None
    not_modified: bool = False
    """A 304 to ``If-None-Match``: the file is the one asked about, no body."""


class _Problem(msgspec.Struct):
    title: str = ""


def _rule(body: bytes) -> str:
    """The rule an RFC 9457 problem names (``title``), "" when the body is none."""
    try:
        return msgspec.json.decode(body, type=_Problem).title
    except msgspec.DecodeError:
        return ""


def fetch(
    url: str,
    token: str,
    *,
    method: Literal["GET", "HEAD"] = "GET",
    timeout: float = TIMEOUT,
    min_rate: int = MIN_RATE,
    if_none_match: str | None = None,
    stop: threading.Event | None = None,
) -> Fetched:
    """One request to the 機構's appliance with the group's bearer token; FetchFailed if not
    200 (or 304 to ``if_none_match``, an ETag: `Fetched.not_modified`).

    The whole exchange (connect, TLS handshake, the request, the status and header lines,
    the body) must be over within ``timeout`` seconds plus one second for every
    ``min_rate`` bytes received (`crlbuilder.deadlinehttp`): a 2 GiB CRL on a link at
    least that fast arrives whole, while a server that drips any part of its answer is cut
    as soon as it falls behind the rate, instead of holding the pass, and every other
    issuer's file behind it, for ever (a timeout per socket operation alone never fired).
    Whatever the server sends (a bad status line, a header line too long, a chunked body cut
    short), the only exception is FetchFailed. The body is read by
    `crlbuilder.deadlinehttp.read_body`: at most `MAX_CRL_BYTES` (refused at its
    Content-Length when that announces more, nothing read), never taken cut short of its
    Content-Length. Once ``stop`` is set (SIGTERM to ``--follow``) the exchange is given up
    within `crlbuilder.deadlinehttp.SLICE` seconds, the bytes received dropped (a download is
    held in memory only: no partial file, nothing imported): FetchFailed ``stopped``. The
    token goes to http(s) URLs only, never over plain http to a host other than loopback,
    and is never logged."""
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https"):
        raise FetchFailed(f"{source_label(url)}: not an http(s) URL")
    if u.scheme == "http" and not loopback_host(u.hostname):
        raise FetchFailed(
            "refusing to send the bearer token over plain http to a non-loopback host"
        )
    headers = {"Accept": "application/pkix-crl", "Authorization": f"Bearer {token}"}
    if if_none_match is not None:
        headers["If-None-Match"] = if_none_match
    req = urllib.request.Request(url, method=method, headers=headers)  # noqa: S310 (checked)
    deadline = Deadline(timeout, per_byte=1.0 / min_rate, stop=stop)
    try:
        with opener(deadline, NoRedirects()).open(req) as resp:  # the agreement's URLs only
            body = read_body(resp, MAX_CRL_BYTES, chunk=_READ_CHUNK) if method == "GET" else b""
            etag = resp.headers.get("ETag")
    except Stopped:
        raise FetchFailed(
            f"given up as the pull stops, {deadline.received} bytes received: nothing "
            "imported, the store unchanged (the next run asks again)",
            stopped=True,
        ) from None
    except BodyRefused as e:
        raise FetchFailed(str(e)) from None
    except urllib.error.HTTPError as e:
        if e.code == 304 and if_none_match is not None:
            return Fetched(b"", e.headers.get("ETag") or if_none_match, not_modified=True)
        retry = e.headers.get("Retry-After") if e.headers is not None else None
        try:
            problem = e.read(4096) if e.code == 429 else b""
        except (OSError, ValueError, http.client.HTTPException, Stopped):
            problem = b""  # a 429 whose problem body is cut short (or given up): still a 429
        raise FetchFailed(
            f"HTTP {e.code} {e.reason}",
            status=e.code,
            retry_after=delay_seconds(retry),
            rule=_rule(problem),
        ) from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        if deadline.passed or isinstance(reason, TimeoutError):
            raise FetchFailed(cut_at_deadline(deadline, min_rate)) from None
        raise FetchFailed(f"cannot fetch: {type(e).__name__}: {reason}") from None
    return Fetched(body, etag)


def delay_seconds(value: str | None) -> float:
    """A Retry-After's delay-seconds (RFC 9110 §10.2.3: ASCII digits), 0.0 when it is none
    (absent, an HTTP-date, ``²``, which `str.isdigit` takes for a digit and `float` refuses);
    at most 10**15 (the caller bounds it by the cycle: `GroupFeed`)."""
    if not value or not value.isascii() or not value.isdigit():
        return 0.0
    return float(value) if len(value) <= 15 else 1e15


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
    got: Fetched | None = field(default=None, repr=False)
    """That delta CRL's file, imported once the full CRL is (a download is not repeated)."""

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
        if self.status == "limited":
            d["retry_after"] = self.retry_after
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
    timeout: float = TIMEOUT
    min_rate: int = MIN_RATE
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    log: IO[str] = field(default_factory=lambda: sys.stderr)
    stop: threading.Event | None = None
    """Set (SIGTERM, `follow`'s ``stop``): the file being downloaded is given up within
    `crlbuilder.deadlinehttp.SLICE` seconds (``stopped``: nothing of it kept, the next run asks
    for it again) and the pass ends there, no other file asked; one being imported is imported
    first (its one write transaction). Before, the pass went on with every other issuer's files
    (each up to its deadline: past the unit's stop timeout), then the download in flight was
    still waited for (a 2 GiB file: up to 2,048 s)."""
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
            if self.stop is not None and self.stop.is_set():  # stopping: no issuer more
                break
            full = self._file(issuer, "full", token)
            if full.status == "stopped":  # its download given up: no other file asked
                out.append(full)
                self._emit(full.as_dict())
                break
            delta = self._file(issuer, "delta", token)
            if delta.base_ahead:  # a new full CRL was published between the two fetches
                if full.status != "limited":  # asked without its ETag: the delta says it is new
                    full = self._file(issuer, "full", token, validate=False)
                if full.status == "limited":  # its base waits for the full CRL's cycle
                    delta = Outcome(
                        issuer.id, "delta", "limited", retry_after=full.retry_after,
                        detail=f"based on a full CRL not downloaded yet: {full.detail}",
                    )  # fmt: skip
                else:  # the delta already downloaded, on its base now: not downloaded twice
                    delta = self._file(issuer, "delta", token, got=delta.got)
            out += (full, delta)
            for o in (full, delta):
                self._emit(o.as_dict())
        self._check_stale()
        return out

    def _publish(self) -> None:
        """A new store is staged until its first CRL is imported, then put in its place
        (`Store.open_staged`) at once, before any other file is fetched: never an empty one
        in the meantime, and a pull killed later in its pass leaves what it imported where the
        next run finds it. Killed between the import's commit and this rename, the staged store
        holding the import is put in place by the next run (`Store.open_staged`), not swept:
        downloaded again, the file would be refused within the agreed cycle (no store for up
        to a cycle)."""
        if self.store.staged_for is None:
            return
        with self.store.read() as r:
            if not r.crl_import():  # marked by the first import's commit
                return
        self.store = self.store.publish()
        self.importer = CrlImporter(self.store, group_issuers(self.setup))

    def _file(
        self,
        issuer: GroupIssuer,
        kind: Kind,
        token: str,
        got: Fetched | None = None,
        *,
        validate: bool = True,
    ) -> Outcome:
        """Fetch (unless ``got``, the file downloaded already; with the ETag the store keeps
        for it when ``validate``) and import one file."""
        url = issuer.crl_url if kind == "full" else issuer.delta_crl_url
        t0 = time.monotonic()
        o = Outcome(issuer.id, kind, "unreachable")
        try:
            if got is None:
                last = self.pulled(issuer, kind) if validate else None
                etag = last.etag if last is not None else None
                got = fetch(
                    url, token, timeout=self.timeout, min_rate=self.min_rate,
                    if_none_match=etag, stop=self.stop,
                )  # fmt: skip
                if last is not None and (got.not_modified or got.etag == etag):
                    o.status, o.number = "unchanged", last.number
                    return o
            result = self.importer.import_der(
                got.body, as_of=self.clock(), source=issuer.id, expect=issuer.id, etag=got.etag
            )
        except FetchFailed as e:
            # never more than the cycle: the 機構 never holds a group off longer (Ord §33(2)),
            # and a Retry-After of centuries overflowed the next try's date and the wait
            e.retry_after = min(e.retry_after, float(self.setup.cycle_seconds))
            if e.stopped:
                o.status, o.detail = "stopped", str(e)
            elif kind == "delta" and e.status == 404:
                o.status, o.detail = "absent", "no delta CRL published"
            elif e.status == 429:
                o.status, o.retry_after = "limited", e.retry_after
                at = self.clock() + timedelta(seconds=e.retry_after)
                limit = LIMITS.get(e.rule, "the agreement (取決め) limits downloads")
                o.detail = f"{limit}; next try at {at.isoformat(timespec='seconds')}"
            else:
                o.detail, o.retry_after = str(e), e.retry_after
            return o
        except BaseAhead as e:
            o.status, o.detail, o.base_ahead, o.got = "refused", str(e), True, got
            return o
        except ImportRefused as e:
            o.status, o.detail = "refused", str(e)
            return o
        finally:
            o.seconds = time.monotonic() - t0
        o.number = result.number
        if result.already_imported:
            o.status = "already-imported"
            return o
        o.status = "imported"
        o.commit, o.added, o.updated, o.removed = (
            result.commit, result.added, result.updated, result.removed,
        )  # fmt: skip
        self._publish()  # in place now, not at the pass's end: a kill meanwhile loses nothing
        return o

    def pulled(self, issuer: GroupIssuer, kind: Kind) -> sf.PulledFile | None:
        """The file last imported from ``issuer``'s ``kind`` URL, as the store keeps it
        (`crlbuilder.store.format.CrlState`): None when the store does not hold its CRL
        (its number above the issuer's), or holds none."""
        with self.store.read() as r:
            state = r.crl_state(issuer.index)
        last = state.pulled_full if kind == "full" else state.pulled_delta
        return last if last is not None and 0 < last.number <= state.number else None

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
        self.stop = stop  # a pass in progress gives up its download and ends
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
            limited = [o.retry_after for o in outcomes if o.status == "limited"]
            if failed:  # every retry_after is at most the cycle (`_file`)
                backoff = min(cycle, backoff * 2 if backoff else BACKOFF_START)
                wait = max(backoff, *(o.retry_after for o in failed), *limited)
            else:
                backoff = 0.0
                # a limited file: when the 機構 said it may be downloaded (never before 1 s)
                wait = min(cycle, max(BACKOFF_START, *limited)) if limited else cycle
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
    """The group's bearer token from its file (`crlbuilder.tokenfile`: a regular file, 0600),
    or GroupSetupError."""
    try:
        return read_token_file(setup.path(setup.token_file))
    except TokenFileError as e:
        raise GroupSetupError(str(e)) from None


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def add_cli(subparsers: Any) -> None:
    """The command's flags (`crlbuilder.group.pullcli.add_cli`), run by `run_pull`."""
    pullcli.add_cli(subparsers, run_pull)


def run_pull(args: argparse.Namespace) -> int:
    """0: every file imported, unchanged or limited (by the agreement: asked again at the
    next pass); 1: one refused or unreachable, or a write the store could not take (its disk
    full: one line, ``--follow`` ends too, its unit restarts it); 2: bad setup.

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
        feed = GroupFeed(setup, store, timeout=args.timeout, min_rate=args.min_rate)
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
            if args.follow:  # stopped (SIGTERM) before its first import: a stop, no failure
                print(f"{prog}: stopped before any CRL was imported: no store made at {place}",
                      file=sys.stderr)  # fmt: skip
                return 0
            print(f"{prog}: error: no CRL imported: no store made at {place}", file=sys.stderr)
            return rc or 1
        return rc
    except sf.StoreFormatError as e:  # the new store could not be put in its place
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except sf.StoreWriteError as e:  # its disk or map full: the store at its last commit
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
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
