"""`crlbuilder import-crl`: the 機構's CRL files (失効情報ファイル) into a group appliance's store.

This module owns that import: what it does and checks, in the order it checks it, is the
command's description, `crlbuilder.crl.importcli`'s docstring (``crlbuilder import-crl
--help``), which builds the command's flags without importing this module.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import itertools
import json
import math
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Final, NoReturn

import msgspec
from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from crlbuilder.apply import merged_issuers
from crlbuilder.build import issuer_table
from crlbuilder.config import DEFAULT_CHANGES_KEEP_DAYS
from crlbuilder.crl import importcli
from crlbuilder.crl.importcli import FETCH_MIN_RATE, FETCH_TIMEOUT
from crlbuilder.crl.parse import CrlError, ParsedCrl, parse_crl, verify_crl_signature
from crlbuilder.deadlinehttp import BodyRefused, Deadline, loopback_host, opener, read_body
from crlbuilder.group.setup import GroupSetup, GroupSetupError, load_group_setup
from crlbuilder.manifest import Manifest, ManifestError, load_manifest
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.reader import StoreReader
from crlbuilder.store.writer import Commit
from crlbuilder.tokenfile import TokenFileError, read_token_file

__all__ = [
    "CLOCK_SKEW",
    "FETCH_MIN_RATE",
    "FETCH_TIMEOUT",
    "MAX_CRL_BYTES",
    "REMOVE_FROM_CRL",
    "BaseAhead",
    "CrlImporter",
    "ImportRefused",
    "ImportResult",
    "KnownIssuer",
    "add_cli",
    "check_store_mode",
    "cut_at_deadline",
    "group_issuers",
    "identify_issuer",
    "known_issuer",
    "known_issuers",
    "read_source",
    "run_import",
    "source_label",
]

CLOCK_SKEW: Final = 300
"""Seconds a CRL's thisUpdate may lie ahead of our clock (the 機構's clock may run a little fast)."""

MAX_CRL_BYTES: Final = 2 << 30
"""The largest CRL accepted (2 GiB): far above millions of entries (~35 bytes each)."""

REMOVE_FROM_CRL: Final = 8
"""RFC 5280 §5.3.1 removeFromCRL: in a delta CRL, the entry leaves the CRL."""

_CHUNK: Final = 65_536
"""Entries written per `putmulti` call on a first import."""

_ZERO_SERIAL: Final = bytes(sf.SERIAL_BYTES)


class ImportRefused(Exception):
    """A CRL (or a store) that cannot be imported; the store is left unchanged."""


class BaseAhead(ImportRefused):
    """A delta CRL based on a full CRL newer than the one imported: fetch the full CRL first."""


class _Unsorted(Exception):
    """The CRL's entries are not in ascending serial order: sort them and start again."""


# ---------------------------------------------------------------------------
# Issuers
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KnownIssuer:
    """An issuing CA generation of the manifest, with what it takes to recognise its CRLs."""

    meta: sf.IssuerMeta
    cert: x509.Certificate
    subject_der: bytes
    """The certificate's subject Name, byte for byte: a CRL issued by it names exactly this."""
    key_id: bytes | None
    """subjectKeyIdentifier, matched against a CRL's authorityKeyIdentifier."""
    key_sha256: str
    """Hex SHA-256 of its public key (SubjectPublicKeyInfo DER, as `crl.publish.key_id`):
    recorded as the issuer's `CrlState.base_signer` by a full CRL it verified."""
    own: bool
    """The generation's own CA certificate (False: its successor certificate)."""


def known_issuers(manifest: Manifest) -> list[KnownIssuer]:
    """Every issuer generation of the manifest (`build.issuer_table`), ready for matching.

    A generation with a successor certificate (its name, the successor's key: who signs
    its CRLs after a compromise of its key, `crlbuilder.crl.publish`) is known by both.
    """
    out: list[KnownIssuer] = []
    successors = {i.id: i.successor_cert for i in manifest.issuers if i.successor_cert}
    for meta in issuer_table(manifest):
        if not meta.family.is_jpki:  # the token issuer (Act §38-3): the 機構's own, not imported
            continue
        ders = [meta.cert_der]
        if meta.id in successors:
            pem = manifest.path(successors[meta.id]).read_bytes()
            ders.append(x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER))
        out.extend(known_issuer(meta, der) for der in ders)
    return out


def group_issuers(setup: GroupSetup) -> list[KnownIssuer]:
    """The issuers of a group appliance's ``group.json`` (`crlbuilder.group.setup`: the CA
    certificates the group received, and a successor certificate after a compromise)."""
    out = []
    for i in setup.issuers:
        cert = x509.load_pem_x509_certificate(setup.path(i.cert).read_bytes())
        der = cert.public_bytes(Encoding.DER)
        meta = sf.IssuerMeta(
            index=i.index, id=i.id, family=i.family, generation=i.generation, cert_der=der
        )
        out.append(known_issuer(meta, der))
        if i.successor_cert:  # its CRLs since a compromise of its key (Act §14)
            succ = x509.load_pem_x509_certificate(setup.path(i.successor_cert).read_bytes())
            out.append(known_issuer(meta, succ.public_bytes(Encoding.DER)))
    return out


def known_issuer(meta: sf.IssuerMeta, der: bytes) -> KnownIssuer:
    """``meta``'s generation recognised by the certificate ``der`` (its own CA certificate,
    or a successor certificate bearing its name)."""
    cert = x509.load_der_x509_certificate(der)
    subject_der: bytes = asn1_x509.Certificate.load(der)["tbs_certificate"]["subject"].dump()
    try:
        key_id: bytes | None = cert.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value.digest
    except x509.ExtensionNotFound:
        key_id = None
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return KnownIssuer(
        meta=meta, cert=cert, subject_der=subject_der, key_id=key_id,
        key_sha256=hashlib.sha256(spki).hexdigest(), own=der == meta.cert_der,
    )  # fmt: skip


def identify_issuer(
    parsed: ParsedCrl, issuers: Iterable[KnownIssuer], expect: str | None = None
) -> KnownIssuer:
    """The issuer whose certificate issued and signed ``parsed``, or ImportRefused.

    Candidates are the issuers whose subject equals the CRL's issuer Name (by
    bytes, else as names) and, when the CRL has an authorityKeyIdentifier, whose
    subjectKeyIdentifier equals it; the one whose key verifies the signature
    (`verify_crl_signature`) wins. ``expect``, an issuer id (the file was fetched from
    its URL): its certificates are tried first, and the first that verifies wins.

    Without ``expect``, a CRL that verifies as two generations' is refused: generations of
    one family may share a CA name (told apart by their keys, DOMAIN.md), and a
    generation's successor certificate carries its name with the successor's key, so the
    successor's own CRLs verify as the generation's too. Taken for the first one listed,
    such a CRL replaced that generation's revoked set: every serial of it ``good``.
    """
    issuers = list(issuers)
    candidates = [i for i in issuers if i.subject_der == parsed.issuer_der]
    if not candidates:
        try:
            name = parsed.issuer
        except CrlError as e:
            raise ImportRefused(f"the CRL's issuer name cannot be read: {e}") from None
        candidates = [i for i in issuers if i.cert.subject == name]
    if parsed.authority_key_id is not None:
        candidates = [
            i for i in candidates if i.key_id is None or i.key_id == parsed.authority_key_id
        ]
    if not candidates:
        raise ImportRefused(
            f"unknown issuer: no issuer certificate in the PKI manifest has this CRL's issuer "
            f"name{' and key identifier' if parsed.authority_key_id is not None else ''} "
            f"({_issuer_text(parsed)})"
        )
    if expect is not None:
        candidates.sort(key=lambda i: i.meta.id != expect)  # stable: the expected first
    found: KnownIssuer | None = None
    errors = []
    for candidate in candidates:
        if found is not None and candidate.meta.index == found.meta.index:
            continue  # the same generation, by its other certificate
        try:
            verify_crl_signature(parsed, candidate.cert)
        except CrlError as e:
            errors.append(f"{candidate.meta.id}: {e}")
            continue
        if expect is not None:
            return candidate
        if found is not None:
            raise ImportRefused(
                f"ambiguous issuer: the CRL verifies as {found.meta.id}'s and as "
                f"{candidate.meta.id}'s (one issuer name, one key): name the issuer whose "
                "URL it came from (import-crl --issuer; group pull does)"
            )
        found = candidate
    if found is not None:
        return found
    raise ImportRefused("bad signature: " + "; ".join(errors))


def _issuer_text(parsed: ParsedCrl) -> str:
    """The issuer Name for a message (a CA's name: no personal data)."""
    try:
        return parsed.issuer.rfc4514_string()
    except CrlError:
        return "unreadable name"


# ---------------------------------------------------------------------------
# Checks that need no store
# ---------------------------------------------------------------------------


def _check_crl(parsed: ParsedCrl, *, as_of: datetime, force: bool, clock_skew: int) -> None:
    """Number, times and scope: what makes a CRL unusable whatever the store holds."""
    if parsed.number is None:
        raise ImportRefused("the CRL has no cRLNumber (RFC 5280 §5.2.3): its order is unknown")
    if parsed.next_update is None:
        raise ImportRefused(
            "the CRL has no nextUpdate (RFC 5280 §5.1.2.5): its freshness is unbounded"
        )
    if parsed.delta_base is not None and parsed.delta_base >= parsed.number:
        raise ImportRefused(
            f"delta CRL {parsed.number} is based on CRL {parsed.delta_base}, not below its own "
            "number (RFC 5280 §5.2.4): the CRL is malformed"
        )
    if parsed.next_update <= parsed.this_update:
        raise ImportRefused(
            f"nextUpdate {parsed.next_update.isoformat()} is not after thisUpdate "
            f"{parsed.this_update.isoformat()} (RFC 5280 §5.1.2.5): the CRL is malformed"
        )
    if parsed.this_update > as_of + timedelta(seconds=clock_skew):
        raise ImportRefused(
            f"thisUpdate {parsed.this_update.isoformat()} is in the future "
            f"(now {as_of.isoformat()}, allowed skew {clock_skew} s)"
        )
    if parsed.next_update <= as_of and not force:
        raise ImportRefused(
            f"expired: nextUpdate {parsed.next_update.isoformat()} has passed "
            f"(now {as_of.isoformat()}); --force imports it anyway"
        )
    if parsed.idp_der is not None:
        try:
            idp = asn1_crl.IssuingDistributionPoint.load(parsed.idp_der).native
        except ValueError as e:
            raise ImportRefused(f"unreadable issuingDistributionPoint: {e}") from None
        for scope in (
            "only_some_reasons",
            "indirect_crl",
            "only_contains_ca_certs",
            "only_contains_attribute_certs",
        ):
            if idp.get(scope):
                raise ImportRefused(
                    f"the CRL's issuingDistributionPoint sets {scope}: it does not list "
                    "every revoked end-entity certificate of the issuer"
                )


# ---------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def source_label(source: str) -> str:
    """``source`` as logs show it: a URL without credentials, query or fragment."""
    if not _is_url(source):
        return source
    u = urllib.parse.urlsplit(source)
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{u.port}" if u.port else host
    return urllib.parse.urlunsplit((u.scheme, netloc, u.path, "", ""))


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) URLs only (urllib would also follow one to ftp:)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if not _is_url(newurl):
            raise urllib.error.HTTPError(
                req.full_url, code, f"redirect to a non-http(s) URL refused ({msg})", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def cut_at_deadline(deadline: Deadline, min_rate: int) -> str:
    """What a fetch cut by its deadline says (`read_source`, ``group pull``'s `fetch`): sizes
    and times only, nothing personal."""
    return (
        f"not received whole within its deadline ({deadline.allowed:.0f} s: "
        f"{deadline.seconds:g} s and {deadline.received} bytes received at the least rate "
        f"of {min_rate} bytes a second): cut, nothing imported, the store unchanged"
    )


def read_source(
    source: str,
    *,
    token: str | None = None,
    timeout: float = FETCH_TIMEOUT,
    min_rate: int = FETCH_MIN_RATE,
    max_bytes: int = MAX_CRL_BYTES,
) -> bytes:
    """The bytes of one CRL: a file, or an http(s) URL fetched with urllib (redirects to
    http(s) URLs followed).

    The whole fetch, redirects included, from the first connection to the last byte, must
    be over within ``timeout`` seconds plus one second for every ``min_rate`` bytes received
    (`crlbuilder.deadlinehttp`): a server that drips its answer is cut as soon as it falls
    behind that rate. ``token`` is sent as ``Authorization: Bearer`` to that URL only (never
    forwarded on a redirect, never logged), and never over plain http to a host other than
    loopback. The body is read by `crlbuilder.deadlinehttp.read_body`, as ``group pull``'s:
    refused at its Content-Length when that announces more than ``max_bytes`` (nothing read),
    as soon as more arrived otherwise, and never taken cut short of its Content-Length.
    Raises ImportRefused on any failure.
    """
    if not _is_url(source):
        try:
            size = Path(source).stat().st_size
            if size > max_bytes:
                raise ImportRefused(f"{size} bytes, more than the {max_bytes} accepted")
            return Path(source).read_bytes()
        except OSError as e:
            raise ImportRefused(f"cannot read: {e.strerror}") from None
    url = urllib.parse.urlsplit(source)
    if token is not None and url.scheme == "http" and not loopback_host(url.hostname):
        raise ImportRefused(
            "refusing to send the bearer token over plain http to a non-loopback host"
        )
    req = urllib.request.Request(source, headers={"Accept": "application/pkix-crl"})  # noqa: S310
    if token is not None:
        req.add_unredirected_header("Authorization", f"Bearer {token}")
    deadline = Deadline(timeout, per_byte=1.0 / min_rate)
    try:
        with opener(deadline, _HttpOnlyRedirects()).open(req) as resp:
            return read_body(resp, max_bytes)
    except BodyRefused as e:  # announced or sent over max_bytes, or cut short
        raise ImportRefused(str(e)) from None
    except urllib.error.HTTPError as e:
        raise ImportRefused(f"HTTP {e.code} {e.reason}") from None
    except (OSError, ValueError, http.client.HTTPException) as e:  # a bad status line, a cut body
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        if deadline.passed or isinstance(reason, TimeoutError):
            raise ImportRefused(cut_at_deadline(deadline, min_rate)) from None
        if isinstance(e, urllib.error.URLError):
            raise ImportRefused(f"cannot fetch: {e.reason}") from None
        raise ImportRefused(f"cannot fetch: {type(e).__name__}: {e}") from None


# ---------------------------------------------------------------------------
# The import
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class ImportResult:
    """What one CRL did to the store (the per-source summary line; no personal data)."""

    source: str
    issuer: str
    number: int
    delta: bool
    base_number: int | None
    """The delta CRL's BaseCRLNumber; None for a full CRL."""
    entries: int = 0
    """Entries listed in the CRL."""
    added: int = 0
    updated: int = 0
    """Listed before and now, with another revocation time or reason."""
    removed: int = 0
    unchanged: int = 0
    already_imported: bool = False
    commit: int = 0
    """The commit sequence of the import's transaction (0: nothing committed)."""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "event": "crl-import",
            "status": "already-imported" if self.already_imported else "imported",
            "source": self.source,
            "issuer": self.issuer,
            "number": self.number,
            "delta": self.delta,
            "base_number": self.base_number,
            "entries": self.entries,
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "commit": self.commit,
            "seconds": round(self.seconds, 3),
        }


def _epoch(t: datetime) -> int:
    return int(t.timestamp())


def check_store_mode(path: Path, r: StoreReader) -> None:
    """Refuse a store built from issuance records (no ``mode``, but statuses or applied records)."""
    if r.crl_import():
        return
    if r.count(sf.DB_STATUS) or r.count(sf.DB_APPLIED):
        raise ImportRefused(
            f"{path}: this store was built from issuance records by `crlbuilder build`; "
            "CRLs are imported only into a store of their own (use another --store)"
        )


class CrlImporter:
    """Imports CRLs into one store for the issuers of one PKI manifest (module docstring)."""

    def __init__(
        self,
        store: Store,
        manifest: Manifest | Sequence[KnownIssuer],
        *,
        force: bool = False,
        clock_skew: int = CLOCK_SKEW,
        changes_keep_days: int = DEFAULT_CHANGES_KEEP_DAYS,
    ) -> None:
        """Check that ``store`` may take CRLs and the issuers; nothing is written here.

        ``manifest`` is the 機構's PKI manifest (`known_issuers`), or the issuers a group
        appliance knows from the CA certificates the 機構 published (`crlbuilder.group.setup`).

        The issuer table is configuration, checked here (`apply.merged_issuers`: an index
        naming another issuer in the store is refused, as is a records-built store) and
        recorded by the first import's own transaction: a run whose every CRL is refused
        leaves the store as it was.
        """
        self.store = store
        self.force = force
        self.clock_skew = clock_skew
        self.changes_keep = changes_keep_days * 86_400
        """Seconds the changes feed keeps a loss of effect (pruned by each import's commit)."""
        self.issuers = known_issuers(manifest) if isinstance(manifest, Manifest) else list(manifest)
        self._metas = list({i.meta.index: i.meta for i in self.issuers}.values())
        """The issuer table this importer records (each generation once)."""
        with store.read() as r:
            check_store_mode(store.path, r)
            self._issuer_table(r)

    def _issuer_table(self, r: StoreReader) -> list[sf.IssuerMeta] | None:
        """The issuer table to record beside what ``r`` holds, None when it holds it."""
        try:
            return merged_issuers(r.issuers(), self._metas)
        except sf.StoreFormatError as e:
            raise ImportRefused(str(e)) from None

    # --- entry points ---------------------------------------------------------

    def import_source(
        self,
        source: str,
        *,
        as_of: datetime,
        token: str | None = None,
        timeout: float = FETCH_TIMEOUT,
        min_rate: int = FETCH_MIN_RATE,
        expect: str | None = None,
    ) -> ImportResult:
        """Fetch or read ``source`` and import it (`import_der`; ``expect`` as there;
        ``timeout`` and ``min_rate`` as `read_source`'s)."""
        t0 = time.monotonic()
        der = read_source(source, token=token, timeout=timeout, min_rate=min_rate)
        result = self.import_der(der, as_of=as_of, source=source_label(source), expect=expect)
        result.seconds = time.monotonic() - t0
        return result

    def import_der(
        self,
        der: bytes,
        *,
        as_of: datetime,
        source: str = "-",
        expect: str | None = None,
        etag: str | None = None,
    ) -> ImportResult:
        """Import one DER CRL in one write transaction; ImportRefused leaves the store unchanged.

        ``as_of`` (timezone-aware) is the current time for the thisUpdate and
        nextUpdate checks; ``source`` names the CRL in the result. ``expect``, an issuer
        id: a CRL of any other known issuer is refused before anything is written (a file
        fetched from that issuer's URL). ``etag``, the HTTP validator the file was served
        with (`crlbuilder.group.pull`): kept with the CRL's number in the issuer's
        `CrlState` (``pulled_full`` / ``pulled_delta``), in the import's own transaction, also
        when the CRL was already imported (a transaction of that alone, no new commit).
        """
        if as_of.tzinfo is None:
            raise ValueError("as_of must be a timezone-aware datetime")
        t0 = time.monotonic()
        try:
            parsed = parse_crl(der)
        except CrlError as e:
            raise ImportRefused(f"not a usable CRL: {e}") from None
        issuer = identify_issuer(parsed, self.issuers, expect)
        if expect is not None and issuer.meta.id != expect:
            raise ImportRefused(f"the CRL at this URL is {issuer.meta.id}'s, not {expect}'s")
        _check_crl(parsed, as_of=as_of, force=self.force, clock_skew=self.clock_skew)
        number = parsed.number
        assert number is not None

        def fresh() -> ImportResult:
            return ImportResult(
                source=source, issuer=issuer.meta.id, number=number,
                delta=parsed.is_delta, base_number=parsed.delta_base,
            )  # fmt: skip

        pulled = sf.PulledFile(etag=etag, number=number) if etag is not None else None
        result = fresh()
        try:
            self._commit(parsed, issuer, result, parsed.entries(), as_of, pulled)
        except _Unsorted:
            result = fresh()
            try:
                ordered = sorted(parsed.entries())
            except CrlError as e:
                raise ImportRefused(f"bad CRL entry: {e}") from None
            self._commit(parsed, issuer, result, iter(ordered), as_of, pulled)
        result.seconds = time.monotonic() - t0
        return result

    # --- the write transaction --------------------------------------------------

    def _commit(
        self,
        parsed: ParsedCrl,
        issuer: KnownIssuer,
        result: ImportResult,
        entries: Iterator[tuple[int, int, int]],
        as_of: datetime,
        pulled: sf.PulledFile | None = None,
    ) -> None:
        """Check the CRL against the stored state and apply it; commit, or abort and raise.

        The commit is dated ``as_of``, the import's own clock (`Commit`). ``pulled``: the
        file's validator, recorded in the issuer's state (`import_der`)."""
        store = self.store
        index = issuer.meta.index
        number = result.number
        with Commit(store, lambda: as_of) as c:
            check_store_mode(store.path, c)
            state = c.crl_state(index)
            imported_before = state != sf.CrlState()  # an imported CRL has a thisUpdate
            _check_signer(issuer, state, result)
            if not self._due(parsed, state, imported_before, result):
                if pulled is not None:  # the file is one the store holds: keep its validator
                    c.put_crl_state(index, _with_pulled(state, parsed.is_delta, pulled))
                return
            scope = _scope(parsed)
            _check_scope(scope, state, result)
            table = self._issuer_table(c)
            if table is not None:
                c.put_issuers(table)
            try:
                if parsed.is_delta:
                    self._apply_delta(c, issuer, entries, result)
                else:
                    self._apply_full(c, issuer, entries, result)
            except CrlError as e:
                raise ImportRefused(f"bad CRL entry: {e}") from None
            this_update = _epoch(parsed.this_update)
            assert parsed.next_update is not None
            next_update = _epoch(parsed.next_update)
            if parsed.is_delta:
                state.number = number
                state.this_update = this_update
                # RFC 5280 §6.3.3: the full CRL stays usable until its own nextUpdate.
                state.next_update = max(state.next_update, next_update)
            else:
                state = sf.CrlState(
                    number=number, base_number=number, base_commit=c.seq,
                    base_this_update=this_update, this_update=this_update,
                    next_update=next_update, base_signer=issuer.key_sha256,
                    pulled_delta=state.pulled_delta,  # a delta numbered below: still held
                    base_scope=scope,
                )  # fmt: skip
            if pulled is not None:
                state = _with_pulled(state, parsed.is_delta, pulled)
            c.put_crl_state(index, state)
            c.mark_crl_import()
            c.prune_changes(_epoch(as_of) - self.changes_keep)
            result.commit = c.seq

    @staticmethod
    def _due(
        parsed: ParsedCrl, state: sf.CrlState, imported_before: bool, result: ImportResult
    ) -> bool:
        """Whether the CRL moves the issuer forward; False when already imported; else refuse."""
        number = result.number
        if parsed.is_delta:
            assert parsed.delta_base is not None
            if not imported_before:
                raise ImportRefused(
                    f"delta CRL {number} of {result.issuer}: no full CRL of this issuer "
                    "imported yet (import a full CRL first)"
                )
            if state.base_number < parsed.delta_base:
                raise BaseAhead(
                    f"delta CRL {number} of {result.issuer} applies to full CRL "
                    f"{parsed.delta_base} or later (RFC 5280 §5.2.4), but the last full CRL "
                    f"imported is {state.base_number}"
                )
            if number == state.number:
                result.already_imported = True
                return False
            if number < state.number:
                raise _backwards(result, state)
            return True
        if not imported_before:
            return True
        if number == state.base_number:
            # The full CRL the issuer's state rests on, fetched again (a job that fetches the
            # full and the delta CRL every cycle): the deltas imported since (state.number
            # past it) already carry everything it says. Nothing to do, not "backwards".
            result.already_imported = True
            return False
        # A full CRL numbered like the last delta imported carries the same information
        # (RFC 5280 §5.2.3) and becomes the base for later deltas.
        if number < state.number:
            raise _backwards(result, state)
        return True

    def _apply_full(
        self,
        c: Commit,
        issuer: KnownIssuer,
        entries: Iterator[tuple[int, int, int]],
        result: ImportResult,
    ) -> None:
        """Make the issuer's revoked set exactly the CRL's entries: a merge walk of the
        stored range against the CRL's ascending entries."""
        # The state before this transaction, read beside it (py-lmdb uses MDB_NOTLS):
        # the merge walk reads the old range while the write transaction changes it.
        keys = _full_keys(sf.issuer_prefix(issuer.meta.index), entries)
        with self.store.read() as before:
            old = before.revocations(issuer.meta.index)
            current = next(old, None)
            if current is None:
                self._append_all(c, issuer, keys, result)
                return
            self._merge(c, issuer, keys, result, old, current)

    @staticmethod
    def _merge(
        c: Commit,
        issuer: KnownIssuer,
        keys: Iterator[tuple[bytes, int, int]],
        result: ImportResult,
        old: Iterator[tuple[bytes, sf.RevokedEntry]],
        current: tuple[bytes, sf.RevokedEntry] | None,
    ) -> None:
        """The stored range (``old``, from ``current``) walked against the CRL's keys."""
        family = issuer.meta.family.code
        listed, unlist = c.list_revoked, c.unlist
        added = updated = removed = unchanged = 0
        for key, at, reason in keys:
            while current is not None and current[0] < key:
                unlist(current[0])
                removed += 1
                current = next(old, None)
            if current is not None and current[0] == key:
                stored = current[1]
                current = next(old, None)
                if stored.revoked_at == at and stored.reason == reason:
                    unchanged += 1
                    continue
                updated += 1
            else:
                added += 1
            listed(key, family, at, reason)
        while current is not None:
            unlist(current[0])
            removed += 1
            current = next(old, None)
        result.added, result.updated, result.removed, result.unchanged = (
            added, updated, removed, unchanged,
        )  # fmt: skip
        result.entries = added + updated + unchanged

    @staticmethod
    def _append_all(
        c: Commit, issuer: KnownIssuer, keys: Iterator[tuple[bytes, int, int]], result: ImportResult
    ) -> None:
        """First import of an issuer (nothing stored): written in ascending chunks
        (`Commit.list_revoked_sorted`)."""
        count = 0
        while chunk := list(itertools.islice(keys, _CHUNK)):
            c.list_revoked_sorted(issuer.meta.index, issuer.meta.family.code, chunk)
            count += len(chunk)
        result.added = result.entries = count

    def _apply_delta(
        self,
        c: Commit,
        issuer: KnownIssuer,
        entries: Iterator[tuple[int, int, int]],
        result: ImportResult,
    ) -> None:
        """Add or update the delta's entries; removeFromCRL (8) deletes one (RFC 5280 §5.2.4).

        A serial listed twice is refused, as in a full CRL: applied entry by entry, the last
        listing won, so a delta listing a revoked serial and then removeFromCRL for it
        unlisted it (answered ``good``). A delta CRL is small: its serials are kept in a set."""
        prefix = sf.issuer_prefix(issuer.meta.index)
        family = issuer.meta.family.code
        seen: set[bytes] = set()
        for serial, at, reason in entries:
            key = prefix + _serial_bytes(serial)
            if key in seen:
                raise ImportRefused("the delta CRL lists one serial twice")
            seen.add(key)
            result.entries += 1
            stored = c.revoked_entry(key)
            if reason == REMOVE_FROM_CRL:
                if stored is None:
                    result.unchanged += 1
                    continue
                c.unlist(key)
                result.removed += 1
                continue
            if stored is not None:
                if stored.revoked_at == at and stored.reason == reason:
                    result.unchanged += 1
                    continue
                result.updated += 1
            else:
                result.added += 1
            c.list_revoked(key, family, at, reason)


def _check_signer(issuer: KnownIssuer, state: sf.CrlState, result: ImportResult) -> None:
    """Refuse a CRL signed by the generation's own key once one signed by its successor's
    was imported (the last full CRL's `CrlState.base_signer`).

    From a compromise of a generation's key on (発行者署名符号の漏えい等, Act §14) the 機構
    signs the generation's CRLs with the successor's key only, and the compromised key
    signs nothing (docs/operations.md, "CA key compromise"); whoever holds it can still
    sign a CRL under the generation's name that verifies with its own certificate. A
    successor certificate may be known before any compromise (made in advance): until a
    CRL verifies with it, the generation's own key is its signer. A store written before
    `base_signer` was recorded by imports holds none: the latch starts at the next full
    CRL signed by the successor."""
    if issuer.own and state.base_signer and state.base_signer != issuer.key_sha256:
        raise ImportRefused(
            f"{'delta CRL' if result.delta else 'CRL'} {result.number} of {result.issuer} is "
            "signed by the generation's own key, compromised: its CRLs have been signed by "
            "its successor's key since (Act §14; the compromised key signs nothing)"
        )


def _scope(parsed: ParsedCrl) -> str:
    """The CRL's scope as `CrlState.base_scope` records it: hex SHA-256 of its
    issuingDistributionPoint's DER, "" when it has none."""
    return "" if parsed.idp_der is None else hashlib.sha256(parsed.idp_der).hexdigest()


def _check_scope(scope: str, state: sf.CrlState, result: ImportResult) -> None:
    """Refuse a CRL whose scope (issuingDistributionPoint) is not its issuer's last full CRL's.

    A delta CRL updates a complete CRL of the same scope only (RFC 5280 §5.2.4, §6.3.3).
    A full CRL replaces the issuer's revoked set: one scoped to a distribution point lists
    only the certificates naming it (RFC 5280 §5.2.5), so one put at the full CRL's URL
    (a partitioned CRL, another partition's) would unlist every serial outside it, each
    then answered ``good``. A full CRL that drops the issuingDistributionPoint covers
    every certificate of the issuer: taken. ``state.base_scope`` None (no full CRL, or a
    store written before it was recorded): nothing to compare with."""
    base = state.base_scope
    if base is None or scope == base or (not result.delta and scope == ""):
        return
    if result.delta:
        raise ImportRefused(
            f"delta CRL {result.number} of {result.issuer} has another scope "
            "(issuingDistributionPoint) than its full CRL: a delta CRL updates a full CRL "
            "of its own scope only (RFC 5280 §5.2.4)"
        )
    raise ImportRefused(
        f"CRL {result.number} of {result.issuer} has another scope (issuingDistributionPoint) "
        "than the last full CRL imported: a partition of the issuer's certificates (RFC 5280 "
        "§5.2.5) taken for the whole would unlist every serial outside it; if the 機構 changed "
        "the scope of its CRLs, import into a new store"
    )


def _with_pulled(state: sf.CrlState, delta: bool, pulled: sf.PulledFile) -> sf.CrlState:
    """``state`` with the validator of the full or delta CRL file just imported."""
    if delta:
        return msgspec.structs.replace(state, pulled_delta=pulled)
    return msgspec.structs.replace(state, pulled_full=pulled)


def _backwards(result: ImportResult, state: sf.CrlState) -> ImportRefused:
    kind = "delta CRL" if result.delta else "CRL"
    return ImportRefused(
        f"going backwards: {kind} {result.number} of {result.issuer} is older than "
        f"CRL {state.number}, the last imported"
    )


def _serial_refusal(serial: int) -> ImportRefused:
    if serial <= 0:
        return ImportRefused(f"a CRL entry has serial {serial}: serials are positive (RFC 5280)")
    return ImportRefused(
        f"a CRL entry's serial is longer than {sf.SERIAL_BYTES} octets (RFC 5280 §4.1.2.2)"
    )


def _serial_bytes(serial: int) -> bytes:
    if serial <= 0:
        raise _serial_refusal(serial)
    try:
        return serial.to_bytes(sf.SERIAL_BYTES, "big")
    except OverflowError:
        raise _serial_refusal(serial) from None


def _full_keys(
    prefix: bytes, entries: Iterator[tuple[int, int, int]]
) -> Iterator[tuple[bytes, int, int]]:
    """A full CRL's entries as (status key, revocation date, reason), checked to ascend
    (`_entry_problem` says why one cannot follow the one before)."""
    previous = prefix + _ZERO_SERIAL
    serial_bytes = sf.SERIAL_BYTES
    for serial, at, reason in entries:
        try:
            key = prefix + serial.to_bytes(serial_bytes, "big")
        except OverflowError:
            raise _serial_refusal(serial) from None
        if key <= previous or reason == REMOVE_FROM_CRL:
            _entry_problem(key, previous, serial, reason)
        previous = key
        yield key, at, reason


def _entry_problem(key: bytes, previous: bytes, serial: int, reason: int) -> NoReturn:
    """Why a full CRL's entry cannot follow ``previous``: always raises.

    A full CRL cannot carry removeFromCRL (RFC 5280 §5.3.1) nor list a serial
    twice; a descending serial raises `_Unsorted` (the caller sorts and starts
    again: RFC 5280 does not order the entries).
    """
    if reason == REMOVE_FROM_CRL:
        raise ImportRefused("removeFromCRL (8) in a full CRL (RFC 5280 §5.3.1: delta CRLs only)")
    if serial <= 0:
        raise _serial_refusal(serial)
    if key == previous:
        raise ImportRefused("the CRL lists one serial twice")
    raise _Unsorted


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def add_cli(subparsers: Any) -> None:
    """Register ``import-crl`` on an argparse subparsers object, run by `run_import`
    (``args.func(args) -> int``); `crlbuilder.cli` adds it with `importcli.add_cli` and a
    function that imports this module when the command runs."""
    importcli.add_cli(subparsers, run_import)


def run_import(args: argparse.Namespace, *, log: IO[str] | None = None) -> int:
    """``crlbuilder import-crl``: 0 every source imported (or already), 1 one refused, 2 bad usage.

    A new store whose every CRL is refused is not left behind (`Store.discard`): an empty
    one would be taken for a store by the next run and by the responder."""
    out = log if log is not None else sys.stderr
    prog = "crlbuilder import-crl"
    # the flags first, then the issuers and the token: all before the store is opened (or created)
    if args.changes_keep_days < 1:
        print(f"{prog}: error: --changes-keep-days must be at least 1", file=out)
        return 2
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        print(f"{prog}: error: --timeout must be a number of seconds > 0", file=out)
        return 2
    issuers: Manifest | list[KnownIssuer]
    try:  # the issuers, and the store: the 機構's PKI manifest, or a group's group.json
        if args.group is not None:
            setup = load_group_setup(args.group)
            # the signature CRL files only, as the pull (Act §18(2), §20(1)): a group
            # receives no auth CRL file (Act §37(2) is a 利用者証明検証者's)
            issuers = [i for i in group_issuers(setup) if i.meta.family.is_sign]
            if args.store is None:
                args.store = setup.path(setup.store)
            if args.token_file is None:
                args.token_file = setup.path(setup.token_file)
        else:
            issuers = load_manifest(args.pki)
    except (GroupSetupError, ManifestError) as e:
        print(f"{prog}: error: {e}", file=out)
        return 2
    if args.store is None:
        print(f"{prog}: error: --store is required with --pki", file=out)
        return 2
    if args.issuer is not None:
        known = issuers if isinstance(issuers, list) else known_issuers(issuers)
        if args.issuer not in {i.meta.id for i in known}:
            what = "the group's signature issuers" if args.group is not None else "the PKI manifest"
            print(f"{prog}: error: --issuer {args.issuer}: not one of {what}", file=out)
            return 2
    token: str | None = None
    if args.token_file is not None:
        try:
            token = read_token_file(args.token_file)
        except TokenFileError as e:
            print(f"{prog}: error: {e}", file=out)
            return 2
    try:
        store = Store.open(args.store, readonly=False)
    except sf.StoreFormatError as e:
        print(f"{prog}: error: {e}", file=out)
        return 2
    try:
        try:
            importer = CrlImporter(
                store, issuers, force=args.force, changes_keep_days=args.changes_keep_days
            )
        except ImportRefused as e:
            if store.created:
                store.discard()
            print(f"{prog}: error: {e}", file=out)
            return 1
        as_of = args.as_of or datetime.now(UTC)
        rc = 0
        committed = False
        for source in args.sources:
            t0 = time.monotonic()
            try:
                result = importer.import_source(
                    source,
                    as_of=as_of,
                    token=token,
                    timeout=args.timeout,
                    min_rate=args.min_rate,
                    expect=args.issuer,
                )
            except ImportRefused as e:
                rc = 1
                print(f"{prog}: error: {source_label(source)}: {e}", file=out)
                line: dict[str, object] = {
                    "event": "crl-import", "status": "refused", "source": source_label(source),
                    "error": str(e), "seconds": round(time.monotonic() - t0, 3),
                }  # fmt: skip
            else:
                line = result.as_dict()
                committed |= result.commit > 0
                if result.already_imported:
                    print(
                        f"{prog}: {result.source}: CRL {result.number} of {result.issuer} "
                        "was already imported; nothing changed",
                        file=out,
                    )
            print(json.dumps(line, ensure_ascii=False), file=out)
            out.flush()
        if store.created and not committed:
            store.discard()
            print(f"{prog}: error: no CRL imported: no store made at {args.store}", file=out)
            return 1
        return rc
    finally:
        store.close()
