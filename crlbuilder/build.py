"""`crlbuilder build`: one build, or a follow loop over a spool directory.

A build reads the configured record sources, applies them to the store
(`apply.Applier`), writes the 30-day move-out lapses due by the build instant
(Act §31(2)), issues the queued 特定利用者証明検証者証明符号 and revokes those whose
party's approval no longer holds (Act §38-3, §38-2(6); `tokens`, from the registry),
pre-signs the OCSP answers of revoked serials (`presign`) and produces the CRL files
(`crl.publish`), then prints a closing summary. With
``--follow`` it then watches a spool directory: each ``*.jsonl`` file that
appears (written elsewhere and renamed in, so it is complete) is applied,
then removed (its records hold the four facts in clear; with
``input.spool_keep_seconds`` it is kept that long in ``done/``, mode 0700),
and followed by the same lapse, token, pre-sign and CRL steps; a token request queued,
or a change of the registry (a token's approval may have ended), while it is idle runs
those steps at its next scan.

Time: the builder reads one clock (`Builder.clock`, the system clock unless a
test injects another). A build ``as_of`` an instant runs as if the clock read
that instant, and is refused when it is earlier than the store's last commit:
a store never goes back in time (its CRLs and OCSP answers would be dated
before what it already published). The follow loop keeps a timer on the
earliest pending 30-day lapse (異動等失効情報, Act §31(2)) and writes it when it
falls due, not at the next periodic refresh: the certificate loses effect when
that record is written (Act §34(1)(2)), so the delay between the due instant
and the answer "revoked" is the loop's wake-up, not a refresh cycle. It keeps one on
the retention agenda too (`apply.next_erasure`): a revocation record is erased at 00:00
JST after its period's last day (Ord §70(1)(iii), `crlbuilder.periods`), not up to a
refresh cycle later.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

import msgspec
from cryptography import x509
from tqdm import tqdm

from crlbuilder import release
from crlbuilder.apply import (
    Applier,
    CrlBase,
    Summary,
    epoch,
    from_epoch,
    next_erasure,
    next_lapse,
    register_issuers,
)
from crlbuilder.config import BuilderConfig, facts_key
from crlbuilder.crl.publish import AHEAD_AT_MOST, CrlPublisher, crl_signing, wait_past
from crlbuilder.ingest import Located, Quarantine, Rejected, list_sources, read_file, read_open
from crlbuilder.keys.signer import SignerError, load_signer
from crlbuilder.lifecycle import StopRequest
from crlbuilder.manifest import Manifest, load_manifest, ocsp_signer_files
from crlbuilder.model import Record
from crlbuilder.ocsp.delegate import delegate_problem, nocheck_missing
from crlbuilder.options import ConfigError
from crlbuilder.presign import LEAD_FACTOR, Presigner, PresignResult, walk_lead
from crlbuilder.signing_retry import SigningRetry
from crlbuilder.spoolfile import SETTLE_SECONDS, Look, Settling, look, open_seen, unchanged
from crlbuilder.spoolwatch import SUFFIX, SpoolWatch
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.writer import Commit
from crlbuilder.tokens import TokenIssuer, TokenReport
from crlbuilder.verifiers import ConsentVerifiers, RegistryReadError, Verifiers

if TYPE_CHECKING:  # imported where the record stream is applied: a build from files uses no NATS
    from crlbuilder.stream import Consumer, Delivered

Clock = Callable[[], datetime]
"""Where the builder reads the time: an aware UTC instant."""


def system_clock() -> datetime:
    return datetime.now(UTC)


class AsOfError(ValueError):
    """A build instant earlier than the store's last commit: refused, nothing written."""


class StreamRefused(Exception):
    """The builder stopped applying the record stream, nothing of the batch written: the
    message says why and the way out (also kept in the store for /readyz and the metric,
    `META_STREAM_REFUSED`)."""


class StreamReplaced(StreamRefused):
    """The record stream is not the one the store was filled from (deleted and made again
    under its name): its sequences are another stream's, so the store cannot resume in it."""


class StreamTruncated(StreamRefused):
    """The record stream no longer holds the message after the store's last sequence (purged,
    or limits put on it): JetStream would deliver from its first message on, and the records in
    between would be passed over without a word, this store differing from the others'."""


class SpoolBusy(Exception):
    """Another follow loop holds the spool's lock (`_lock_spool`): one builder per spool."""


class NewerRelease(StreamRefused):
    """A batch holds a message published by a newer release than this builder's
    (`crlbuilder.release`): applying it by this release's rules would write other bytes than
    the nodes already upgraded."""


def issuer_table(manifest: Manifest) -> list[sf.IssuerMeta]:
    """The manifest's issuer generations as the store records them."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    out = []
    for i in manifest.all_issuers():
        cert = x509.load_pem_x509_certificate(manifest.path(i.cert).read_bytes())
        out.append(
            sf.IssuerMeta(
                index=i.index, id=i.id, family=i.family, generation=i.generation,
                cert_der=cert.public_bytes(Encoding.DER),
            )
        )  # fmt: skip
    return out


def count_lines(paths: Iterable[Path]) -> int:
    n = 0
    for p in paths:
        with p.open("rb") as f:
            while chunk := f.read(1 << 20):
                n += chunk.count(b"\n")
    return n


@dataclass
class BuildReport:
    """The closing summary of a build (printed as JSON, also returned to tests)."""

    summary: Summary
    lapses: int = 0
    presigned: int = 0
    presign_kept: int = 0
    presign_walked: int = 0
    """Issuers whose pre-signing read CRL entries (`crlbuilder.presign`: a full run, begun,
    gone on with or ended)."""
    presign_walking: int = 0
    """Issuers whose full pre-signing run was cut by ``presign_seconds``: it goes on."""
    presign_skipped: list[str] = field(default_factory=list)
    """Issuers nothing was pre-signed for: their delegate's certificate is not valid at the
    run's instant (`crlbuilder.presign.PresignResult.skipped`; a ``warning`` event says why)."""
    crls: list[dict[str, object]] = field(default_factory=list)
    crls_pruned: int = 0
    crls_withheld: list[str] = field(default_factory=list)
    """Compromised issuers without a successor: nothing was signed for them."""
    tokens: TokenReport = field(default_factory=TokenReport)
    """特定利用者証明検証者証明符号 issued and revoked, requests dropped (Act §38-3)."""
    seconds: dict[str, float] = field(default_factory=dict)
    build: int = 0
    crl_files: list[sf.CrlFileEntry] = field(default_factory=list)
    """The CRL files produced (what a signer of several nodes ships, `crl.shipping`)."""

    def as_dict(self) -> dict[str, object]:
        d = self.summary.as_dict()
        d.update(
            build=self.build,
            lapses_applied=self.lapses,
            ocsp_presigned=self.presigned,
            ocsp_kept=self.presign_kept,
            ocsp_walked=self.presign_walked,
            ocsp_walking=self.presign_walking,
            ocsp_skipped=self.presign_skipped,
            crls=self.crls,
            crls_pruned=self.crls_pruned,
            crls_withheld=self.crls_withheld,
            tokens_issued=self.tokens.issued,
            tokens_revoked=self.tokens.revoked,
            tokens_revoked_by=self.tokens.revoked_by,
            tokens_dropped=self.tokens.dropped,
            seconds={k: round(v, 3) for k, v in self.seconds.items()},
        )
        return d


class Builder:
    """One store, one manifest, one configuration: builds and follow loops."""

    def __init__(
        self,
        cfg: BuilderConfig,
        *,
        progress: bool = True,
        log: IO[str] = sys.stderr,
        clock: Clock = system_clock,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.presign_full = False
        """The next pre-signing run reads every CRL entry (`crlbuilder.presign`), then this
        goes back to False (``crlbuilder build --presign-full``)."""
        self.presign_seconds: float | None = None
        """A bound on each pre-signing run's reading of every CRL entry (the follow loops set
        it from ``ocsp.presign_slice_seconds``): a walk cut goes on at the next run."""
        self.progress = progress
        self.log = log
        self._presigner: Presigner | None = None
        self.spool_settle = SETTLE_SECONDS
        self._settling = Settling()
        """The spool's files seen being written in place, and since when (`_whole_files`)."""
        """How long a spool file cut mid-line is left unchanged before it is taken
        (`crlbuilder.spoolfile`)."""
        self.hold_undelivered = False
        """A quarantine or notices file that cannot be written (a full disk) is said in a
        ``warning`` event and its lines left staged in the store (`Applier.undelivered`), not
        raised: a follow loop goes on applying records (the start-up build of ``--follow``
        too), and delivers them at its next turn. False: raised (a one-shot build fails)."""
        self._undelivered_said: set[str] = set()
        """The files said not to be written, once each until a delivery goes through."""
        self._undelivered_pending = False
        """A delivery failed since the last one that went through (`_redeliver`)."""
        self._overdue: set[str] = set()
        """Issuers whose walk in progress was said to leave answers past their nextUpdate."""
        self._skipped: dict[str, str] = {}
        """Issuers said to be skipped by pre-signing, and why (their delegate not valid)."""
        self.manifest = load_manifest(cfg.pki.manifest)
        self.key = facts_key(cfg)
        self.store = Store.open(
            cfg.store.path, readonly=False, map_size=cfg.store.map_size_gib << 30
        )
        self.registry: ConsentVerifiers | None = None
        self._stream: Consumer | None = None
        """The record stream being applied (`consume`): tokens then go through it."""
        self._republished = False
        """This `consume`'s signer published the tokens its store held from before the token
        records (`TokenIssuer.republish_held`)."""
        self._published = 0
        """Token records this builder published on the stream since `consume`'s last look: a
        one-shot run applies them before it returns."""
        self._revoking: dict[int, datetime] = {}
        """The token revocations this signer published and has not yet applied, by serial:
        their first instant, published again by a refresh before they come back
        (`TokenIssuer.revoking`)."""
        self._registry_stamp: tuple[int, int] | None = None
        try:
            self._check_before_writing()
            # every check passed: only now is anything written
            with Commit(self.store) as c:
                if release.stamps(c.written_by()):
                    c.put_written_by(str(release.CURRENT))
            register_issuers(self.store, issuer_table(self.manifest))
        except BaseException:
            if self.store.created:  # a store this refused run made: not left behind
                self.store.discard()
            self.store.close()
            raise
        self.quarantine = Quarantine(Path(cfg.input.quarantine))
        Path(cfg.input.notices).parent.mkdir(parents=True, exist_ok=True)
        if self.registry is not None:
            self.registry_moved()  # the file as read now: a later change is a move
        else:
            self.emit({"event": "warning", "message": "no input.registry: consent grants "
                       "are quarantined, not stored (Act §18(3))"})  # fmt: skip

    def _check_before_writing(self) -> None:
        """What refuses a build, all before it writes anything (the issuer table included):
        a store a newer release wrote (`release.store_refusal`), a group appliance's store, a key that cannot sign (`check_signers`), an unreadable
        registry. Raises; the store is then as it was."""
        cfg = self.cfg
        with self.store.read() as r:
            crl_import = r.crl_import()
            why = release.store_refusal(r.written_by())
        if why is not None:
            raise sf.StoreFormatError(f"{cfg.store.path}: {why}")
        if crl_import:
            raise sf.StoreFormatError(
                f"{cfg.store.path}: this store was built by `crlbuilder import-crl` (a group appliance); "
                "records cannot be applied to it"
            )
        self.check_signers()
        if cfg.input.registry:
            try:
                self.registry = ConsentVerifiers(Path(cfg.input.registry))
            except RegistryReadError as e:
                raise ConfigError("<configuration>", "input.registry", str(e)) from None

    def close(self) -> None:
        if self._presigner is not None:
            self._presigner.close()
            self._presigner = None
        self.store.close()

    def _verifiers(self) -> Verifiers | None:
        """The registry as it is now; a file broken meanwhile keeps the last good reading."""
        if self.registry is None:
            return None
        try:
            return self.registry.current()
        except RegistryReadError as e:
            self.emit({"event": "warning", "message": f"{e}; consents checked against the "
                       "registry as last read"})  # fmt: skip
            return self.registry.last_good

    def _applier(
        self, bar: tqdm[Any] | None, clock: Clock | None = None, *, published: bool | None = None
    ) -> Applier:
        applier = self._new_applier(bar, clock, published=published)
        if self.hold_undelivered:
            applier.undelivered = self._undelivered
        return applier

    def _undelivered(self, e: OSError) -> None:
        """A quarantine or notices file that could not be written: said once (until one goes
        through), its lines left staged in the store."""
        self._undelivered_pending = True
        where = str(e.filename) if e.filename is not None else "an output file"
        if where not in self._undelivered_said:
            self._undelivered_said.add(where)
            self.emit({"event": "warning", "message": (
                f"{where}: cannot be written ({e.strerror or e}): its lines stay staged in the "
                "store and are written once it can be; records go on being applied")})  # fmt: skip

    def _redeliver(self) -> None:
        """Deliver the lines a failed delivery left staged (`_undelivered`)."""
        self._undelivered_pending = False
        self._applier(None).deliver()
        if not self._undelivered_pending:
            self._undelivered_said.clear()

    def _new_applier(
        self, bar: tqdm[Any] | None, clock: Clock | None = None, *, published: bool | None = None
    ) -> Applier:
        return Applier(
            self.store,
            published=published,
            token_records=self._stream is not None,
            verifiers=self._verifiers(),
            facts_key=self.key,
            quarantine=self.quarantine,
            notices_path=Path(self.cfg.input.notices),
            batch_size=self.cfg.input.batch_size,
            on_progress=bar.update if bar is not None else None,
            clock=clock or self.clock,
        )

    def check_signers(self) -> None:
        """Open every key this builder will sign with and match it to its certificate.

        The CA keys of CRL signing (or a compromised generation's successor) and the
        delegated OCSP signers of pre-signing, each a PEM file or a PKCS#11 URI: a wrong
        PIN, a missing token or key label, or a key that is not its certificate's raises
        `SignerError` naming the key now, before anything is applied or signed; so does a
        delegate its generation's CA key did not issue, or one without id-kp-OCSPSigning or
        whose key usage forbids signing (`crlbuilder.ocsp.delegate`: every answer it signed would fail at the client). Keys of
        generations that sign nothing any more (compromised without a successor) are not
        opened: they may have been destroyed in the token.
        """
        with self.store.read() as r:
            compromised = {i.id for i in r.issuers() if i.compromised_at}
        m = self.manifest
        for issuer in m.all_issuers():
            hit = issuer.id in compromised
            if self.cfg.crl.enabled:
                crl_signing(m, issuer, hit)
            files = ocsp_signer_files(m, issuer, hit) if self.cfg.ocsp.presign else None
            if files is not None:
                signer = load_signer(m.key_ref(files[0]), m.path(files[1]))
                if not hit:  # its own delegate (a successor's is a Trusted Responder's)
                    ca = x509.load_pem_x509_certificate(m.path(issuer.cert).read_bytes())
                    problem = delegate_problem(ca, signer.certificate)
                    if problem is not None:
                        raise SignerError(
                            f"{m.path(files[1])}: {issuer.id}'s OCSP signer: {problem}"
                        )
                    if (note := nocheck_missing(ca, signer.certificate)) is not None:
                        self.emit({"event": "warning", "message": (
                            f"{m.path(files[1])}: {issuer.id}'s OCSP signer: {note}")})  # fmt: skip

    def check_as_of(self, as_of: datetime) -> None:
        """Refuse a build instant earlier than the store's last commit (`AsOfError`): its
        records' and lapses' commits and its pre-signed answers' producedAt, or its CRLs'
        thisUpdate by `AHEAD_AT_MOST` seconds or more. A CRL may stand a few seconds after the
        instant of the run that made it (`dated_after`: a second run at one pinned instant,
        as the rerun after a killed build, dates its CRLs a second after the first's), and a
        run at that instant dates its own CRLs after it again; an instant further back would
        date them before it."""
        t = epoch(as_of)
        with self.store.read() as r:
            last = r.committed_at()
            crls = 0
            for i in r.issuers():
                last = max(last, r.ocsp_state(i.index).produced_at)
                crls = max(crls, r.crl_state(i.index).this_update)
        if t < last or crls - t >= AHEAD_AT_MOST:
            shown = from_epoch(last if t < last else crls).isoformat()
            what = "" if t < last else ", the thisUpdate of its CRLs"
            raise AsOfError(
                f"--as-of {as_of.astimezone(UTC).isoformat()} is earlier than the store's last "
                f"commit ({shown}{what}): a build cannot go back in time (its "
                "CRLs, OCSP answers and 30-day lapses would be dated before what the store "
                "already published); nothing was written"
            )

    def build(self, paths: list[Path], as_of: datetime | None = None) -> BuildReport:
        """Apply ``paths`` then run the post-commit steps, as of ``as_of`` (default: the clock).

        A given ``as_of`` pins the build's clock: commits, lapses and thisUpdate are
        dated as of that instant. Raises `AsOfError`, writing nothing, when it is
        earlier than the store's last commit.
        """
        clock: Clock = self.clock if as_of is None else (lambda: as_of)
        self.check_as_of(clock())
        t0 = time.monotonic()
        bar: tqdm[Any] | None = None
        if self.progress:
            bar = tqdm(
                total=count_lines(paths), unit="rec", unit_scale=True, desc="apply", file=self.log
            )
        applier = self._applier(bar, clock)
        try:
            applier.run(_chain(paths))
        finally:
            if bar is not None:
                bar.close()
        report = BuildReport(summary=applier.summary)
        report.seconds["apply"] = time.monotonic() - t0
        self.after_commit(applier, report, clock())
        return report

    def after_commit(
        self, applier: Applier, report: BuildReport, as_of: datetime, *, time_writes: bool = True
    ) -> None:
        """Lapses due by ``as_of`` and erasures (unless ``time_writes`` is False: a node of the
        record stream writes them by the stream's time), tokens, pre-signed answers, CRLs, and
        the build number with the run's promise (`store.format.META_VOUCHED`: ``as_of`` plus
        ``ocsp.validity_seconds``; on a node of the record stream by its own clock, as its
        answers: it vouches for this node's builder). The token issuer's key failing
        (`SignerError`) is raised only after the rest: it never holds back the Act's CRLs and
        answers; the delegates' or the CA keys' failing does, the promise with them (renewed
        by the retry that succeeds)."""
        now = epoch(as_of)
        if time_writes:
            t = time.monotonic()
            report.lapses = applier.sweep_lapses(as_of)
            report.seconds["lapses"] = time.monotonic() - t
            t = time.monotonic()  # Ord §70(1)(iii): erase what passed its retention, before CRLs
            self._erase(applier, as_of)
            report.seconds["erase"] = time.monotonic() - t
        t = time.monotonic()  # before pre-signing and CRLs: a revoked token is in both
        report.tokens = self.run_tokens(as_of)
        report.seconds["tokens"] = time.monotonic() - t
        self.presign(report, now)
        if self.cfg.crl.enabled:
            t = time.monotonic()
            pub = CrlPublisher(self.store, self.manifest, self.cfg.crl).run(self.crl_instant(now))
            report.crls = [
                {
                    "issuer": e.issuer,
                    "number": e.number,
                    "delta": e.delta,
                    "entries": e.entries,
                    "bytes": e.size,
                }
                for e in pub.produced
            ]
            report.crl_files = pub.produced
            report.crls_pruned = pub.pruned
            report.crls_withheld = pub.withheld
            report.seconds["crl"] = time.monotonic() - t
        with Commit(self.store) as c:
            c.prune_changes(now - self.cfg.store.changes_keep_days * 86_400)
            # what this run vouches for: until the nextUpdate it gives the answers it signs
            # (the promise of an issuer no CRL and no stored answer carries one for,
            # `ReaderRules.promised_next_update`), renewed by the next run (`refresh_every`)
            report.build = c.bump_build(now + self.cfg.ocsp.validity_seconds)
        if report.tokens.signing_failed is not None:  # after the CRLs and answers it held up
            raise report.tokens.signing_failed

    def crl_instant(self, now: int) -> int:
        """The instant a CRL run at ``now`` dates its CRLs by: after the second of the last
        CRLs signed (`crlbuilder.crl.publish.wait_past`: this waits out the rest of that second
        on the builder's own clock), so that two CRLs of one file never share a thisUpdate."""
        with self.store.read() as r:
            last = max((r.crl_state(i.index).this_update for i in r.issuers()), default=0)
        return wait_past(last, now, lambda: self.clock().timestamp(), time.sleep)

    def presign(self, report: BuildReport, now: int) -> None:
        """Pre-signs the answers of revoked serials (`crlbuilder.presign`), bounded by
        ``presign_seconds``; the counts and seconds go to ``report``. The pre-signer (the
        delegates' keys, its signing processes) is kept for the next run, made again when a
        compromise changed who signs."""
        if not self.cfg.ocsp.presign:
            return
        t = time.monotonic()
        if self._presigner is not None and self._presigner.stale():
            self._presigner.close()
            self._presigner = None
        if self._presigner is None:
            self._presigner = Presigner(
                self.store, self.manifest,
                validity_seconds=self.cfg.ocsp.validity_seconds,
                refresh_before_seconds=self.cfg.ocsp.refresh_before_seconds,
                workers=self.cfg.ocsp.sign_workers,
            )  # fmt: skip
        ps = self._presigner.run(now, full=self.presign_full, seconds=self.presign_seconds)
        self.presign_full = False  # asked once: the follow loop's runs go on from the feed
        report.presigned, report.presign_kept = ps.signed, ps.kept
        report.presign_walked, report.presign_walking = ps.walked, ps.walking
        report.presign_skipped = sorted(ps.skipped)
        report.seconds["presign"] = time.monotonic() - t
        self._walk_warnings(ps)
        self._skip_warnings(ps)

    def _skip_warnings(self, ps: PresignResult) -> None:
        """A ``warning`` event when pre-signing skips an issuer whose delegate's certificate is
        not valid now (once, until the reason changes or it signs again)."""
        for iid, problem in sorted(ps.skipped.items()):
            if self._skipped.get(iid) != problem:
                self.emit({"event": "warning", "message": (
                    f"issuer {iid}: its delegated OCSP signer was not used: {problem}; no "
                    "answer was pre-signed for it (its stored ones are served until their "
                    "nextUpdate, then the responder answers tryLater for the issuer); "
                    "install a delegate certificate valid now with its key (docs/operations.md, "
                    "'OCSP signer renewal')")})  # fmt: skip
        self._skipped = dict(ps.skipped)

    def _walk_warnings(self, ps: PresignResult) -> None:
        """A ``warning`` event when a walk leaves answers past their nextUpdate (once per walk),
        and when a walk took so long that the next one starts as soon as it ended."""
        for iid, since in ps.overdue.items():
            if iid not in self._overdue:
                self._overdue.add(iid)
                self.emit({"event": "warning", "message": (
                    f"issuer {iid}: stored OCSP answers reached their nextUpdate before the "
                    f"re-signing walk begun {since} s ago read them; the responder signs them "
                    "on demand until it does (a walk longer than its lead, or a builder that "
                    f"was stopped: the next walk starts {LEAD_FACTOR:g} times this one's "
                    "duration before the answers fall due)")})  # fmt: skip
        validity = self.cfg.ocsp.validity_seconds
        for iid, took in ps.ended.items():
            self._overdue.discard(iid)
            if took * (1 + LEAD_FACTOR) >= validity:
                self.emit({"event": "warning", "message": (
                    f"issuer {iid}: re-signing its stored OCSP answers took {took} s; with "
                    f"ocsp.validity_seconds = {validity} the next walk starts as soon as this "
                    f"one ended (each starts {LEAD_FACTOR:g} times the last one's duration "
                    "before the answers fall due): raise ocsp.validity_seconds or give the "
                    "signing more cores (ocsp.sign_workers)")})  # fmt: skip

    def presign_step(self, report: BuildReport | None = None) -> BuildReport:
        """A follow loop's turn with nothing else to do while a walk goes on: pre-signing alone
        (no lapse, CRL or build number: none of them waits on it), counted in ``report`` (a
        new one by default: the caller's stays filled as far as it got when signing fails)."""
        report = report or BuildReport(summary=Summary())
        self.presign(report, epoch(self.clock()))
        return report

    def walks_in_progress(self) -> bool:
        """Whether a full pre-signing run was cut and goes on (`sf.OcspState.walk`)."""
        if not self.cfg.ocsp.presign:
            return False
        with self.store.read() as r:
            return any(r.ocsp_state(i.index).walk is not None for i in r.issuers())

    def token_issuer(self, verifiers: Verifiers, clock: Clock) -> TokenIssuer:
        t = self.cfg.tokens
        return TokenIssuer(
            self.store,
            self.manifest,
            requests=Path(t.requests) if t.requests else None,
            issued=Path(t.issued) if t.issued else None,
            validity_days=t.validity_days,
            verifiers=verifiers,
            clock=clock,
            publish=self._publish if self._stream is not None else None,
            revoking=self._revoking,
        )

    def _publish(self, records: list[Record]) -> None:
        """Publish token records on the stream being applied, counted (`_published`)."""
        assert self._stream is not None
        self._stream.publish_records(records)
        self._published += len(records)

    def issues_tokens(self) -> bool:
        """This builder issues and revokes tokens: it holds the token issuer, and on the record
        stream it is the signer (``crl.enabled``), whose token records every node applies; the
        other nodes only apply them (their own clock never revokes a token)."""
        if self.manifest.token_issuer is None:
            return False
        return self._stream is None or self.cfg.crl.enabled

    def run_tokens(self, as_of: datetime) -> TokenReport:
        """Issue the queued tokens and revoke the withdrawn ones (`crlbuilder.tokens`), as of
        ``as_of``; nothing without a registry (it says who is approved), nothing on a node of
        the record stream but the signer (`issues_tokens`)."""
        verifiers = self._verifiers()
        if verifiers is None or not self.issues_tokens():
            return TokenReport()
        issuer = self.token_issuer(verifiers, lambda: as_of)
        failed: SignerError | None = None
        if self._stream is not None and not self._republished:
            try:
                _, missing = issuer.republish_held()
            except SignerError as e:  # its revocations are signed: again at the next refresh
                failed, missing = e, 0
            else:
                self._republished = True
            if missing:
                self.emit({"event": "warning", "message": (
                    f"{missing} token(s) held from before the token records have no certificate "
                    "file in tokens.issued with their recorded times: not published as issued, "
                    "so the other nodes answer unknown for them until their party asks again "
                    "(the token is then signed again and published)")})  # fmt: skip
        report = issuer.run(epoch(as_of))
        report.signing_failed = report.signing_failed or failed
        return report

    def registry_moved(self) -> bool:
        """The registry file changed since the last look (a token's approval may have ended:
        the follow loop then runs the post-commit steps, revoking it at once)."""
        if self.registry is None or not self.issues_tokens():
            return False
        try:
            st = os.stat(self.registry.path)
        except OSError:
            return False
        stamp = (st.st_size, st.st_mtime_ns)
        moved = self._registry_stamp is not None and stamp != self._registry_stamp
        self._registry_stamp = stamp
        return moved

    def next_approval_end(self, after: datetime) -> datetime | None:
        """The earliest instant after ``after`` at which a 特定利用者証明検証者's approval stops
        being in force (its revocation's instant, Act §38-2(6), or the end of its period), to
        the next whole second (builds are dated in whole seconds): the follow loop revokes
        the party's tokens then, not only when the registry file next changes."""
        if not self.issues_tokens():
            return None
        verifiers = self._verifiers()
        if verifiers is None:
            return None
        start = math.floor(after.timestamp())  # the last build was dated in whole seconds
        ends = [e for a in verifiers.approvals.values() if start < (e := a.end()) < math.inf]
        return from_epoch(math.ceil(min(ends))) if ends else None

    def tokens_pending(self) -> bool:
        """A token request is queued (the follow loop then runs the post-commit steps)."""
        t = self.cfg.tokens
        if not (t.requests and t.issued) or self.registry is None:
            return False
        if not self.issues_tokens():  # another node's queue: its loop would refresh for ever
            return False
        return any(Path(self.cfg.tokens.requests).glob("*.json"))

    def _erase(self, applier: Applier, as_of: datetime, *, stream: bool = False) -> int:
        """Erase what passed its retention by ``as_of`` (Ord §70(1)(iii)); ``stream``: at a
        tick of the record stream (its lateness bound from the stream's first 1.6 message)."""
        return applier.erase_past_retention(
            epoch(as_of),
            self.cfg.crl.retention_period_days,
            keep_time=self.cfg.crl.erased_answer == "revoked",
            agenda=True,
            # the next CRL takes off what the last full one (or a delta on it) lists. Also on a
            # node without CA keys (crl.enabled = false) that fetches the signer's CRLs and
            # state (`crlbuilder.crl.shipping`): promoted to signer, it continues that base
            crls=CrlBase(deltas=self.cfg.crl.delta, cycle_seconds=self.cfg.crl.cycle_seconds),
            stream=stream,
        )

    def follow(self, spool: Path, interval: float, *, max_idle: float | None = None) -> None:
        """Apply each file that appears in ``spool`` until SIGTERM/SIGINT (or ``max_idle`` s of nothing).

        Between files the loop waits ``interval`` seconds (a file renamed into ``spool``
        ends the wait at once: `crlbuilder.spoolwatch`), or less when the earliest
        pending 30-day lapse (Act §31(2)) falls due sooner: it then writes that lapse
        at once (`after_commit`), dated when written (Act §34(1)(2)); or when a revocation
        record's retention ends sooner (`next_erasure`): it then erases it (and whatever else
        is due) at once, event ``retention``. Pre-signing that reads
        every CRL entry is cut into runs of ``ocsp.presign_slice_seconds``, the next file
        applied between two of them; with no file waiting they follow one another.

        One loop per spool: it holds the spool's lock (`_SpoolLock`); another process's loop
        holding it raises `SpoolBusy`, nothing read. SIGTERM ends it after the batch being
        committed (event ``stopped``), the file left in the spool to be taken up there
        (`_take_up`).
        """
        lock = _SpoolLock(spool)
        lock.take()  # before anything is read: raises SpoolBusy
        held, self.hold_undelivered = self.hold_undelivered, True
        try:
            self._follow(spool, interval, max_idle, lock)
        finally:
            self.hold_undelivered = held
            lock.close()

    def _follow(
        self, spool: Path, interval: float, max_idle: float | None, lock: _SpoolLock
    ) -> None:
        done = spool / "done"
        keep = self.cfg.input.spool_keep_seconds
        if keep or done.exists():
            _private_dir(done)
        closed = _close_to_others(spool)
        if closed:
            self.emit({"event": "warning", "message": closed})
        stop = StopRequest.install()
        watch = SpoolWatch(spool, lambda m: self.emit({"event": "warning", "message": m}))
        self.presign_seconds = self.cfg.ocsp.presign_slice_seconds or None
        walking = self.walks_in_progress()
        idle_since = last_refresh = time.monotonic()
        due = next_lapse(self.store)
        erasure = self.next_erasure()
        approval_end = self.next_approval_end(self.clock())
        gone = False
        warned: set[str] = set()
        """Files said to be written in place (`_warn_in_place`), once each."""
        retry = SigningRetry(self.emit)  # a token gone: records applied, signing retried
        signed = retry.run

        def idle_step(event: str, now: datetime, **fields: object) -> None:
            """What follows a commit, run with no file read (a lapse due, an erasure due, a
            refresh), reported as ``event``; its summary counts the erasures."""
            nonlocal last_refresh, walking, due, erasure
            applier = self._applier(None)
            report = BuildReport(summary=applier.summary)
            signed(event, partial(self.after_commit, applier, report, now))
            self.emit({"event": event, **fields, **report.as_dict()})
            last_refresh, walking = time.monotonic(), report.presign_walking > 0
            due, erasure = next_lapse(self.store), self.next_erasure()

        try:
            while not stop.requested:
                if done.is_dir():
                    prune_done(done, keep, time.time())
                try:
                    lock.take()  # the spool was missing: locked once it is there
                    files = self._whole_files(spool, warned)
                    gone = False
                except FileNotFoundError:  # removed while the loop runs: said once, waited for
                    if not gone:
                        self.emit({"event": "warning", "message": (
                            f"{spool}: the spool directory is gone; nothing is applied until "
                            "it is there again")})  # fmt: skip
                    files, gone = [], True
                if not files:
                    if self._undelivered_pending:  # a full disk freed: the lines staged go out
                        self._redeliver()
                    now = self.clock()
                    if due is not None and due <= now:
                        idle_step("lapse", now, due=due)
                        continue
                    if erasure is not None and erasure <= now:  # Ord §70(1)(iii), at 00:00 JST
                        idle_step("retention", now, due=epoch(erasure))
                        continue
                    if (
                        max_idle is not None
                        and not walking  # pre-signing going on is not idle
                        and time.monotonic() - idle_since > max_idle
                    ):
                        return
                    if (
                        (self.tokens_pending() and not retry.waiting())
                        or self.registry_moved()
                        or (approval_end is not None and approval_end <= now)
                        or (time.monotonic() - last_refresh > self.refresh_every())
                        or retry.due()
                    ):
                        idle_step("refresh", now)
                        approval_end = self.next_approval_end(now)
                    if walking:  # nothing waits (refreshes first: CRLs must not go stale)
                        report = BuildReport(summary=Summary())
                        if signed("pre-signing", partial(self.presign_step, report)):
                            self.emit({"event": "presign", **report.as_dict()})
                        walking = report.presign_walking > 0  # failed: none until the retry
                        continue
                    wait = interval
                    for at in (due, erasure, approval_end):
                        if at is not None:
                            wait = min(wait, max(0.0, (at - self.clock()).total_seconds()))
                    watch.wait(retry.wait(wait))  # a file renamed into the spool ends it at once
                    continue
                for p, seen in files:
                    try:
                        f = open_seen(p, seen)
                    except OSError:
                        f = None  # unreadable now: said by the next look
                    if f is None:  # another file (or none) under its name: looked at again
                        break
                    with f:
                        t0 = time.monotonic()
                        applier = self._applier(None)
                        start = self._take_up(applier, p.name, f)
                        applier.run(
                            read_open(f, str(p), start_line=start, limit=seen.size),
                            stop=lambda: stop.requested,
                        )
                        if applier.stopped:  # SIGTERM between two batches: taken up at the
                            self.emit({"event": "stopped", "file": p.name,  # next start
                                       **applier.summary.as_dict()})  # fmt: skip
                            break
                        committed = time.monotonic() - t0
                        committed_at = time.time()
                        try:
                            grew = not unchanged(seen, look(p))
                        except OSError as e:  # made unreadable meanwhile: left where it is
                            self._warn_unreadable(p, warned, e)
                            grew = True
                        if grew:  # read again next turn, before any file after it
                            self._warn_in_place(p, warned)
                        else:
                            self._consumed(p, done, f)
                            warned.discard(p.name)  # a file of that name later is another
                    report = BuildReport(summary=applier.summary)
                    report.seconds["apply"] = committed
                    # committed: a signing outage leaves the CRLs and answers to the retry
                    signed(p.name, partial(self.after_commit, applier, report, self.clock()))
                    self.emit(
                        {
                            "event": "spool-file",
                            "file": p.name,
                            "committed_at_unix": committed_at,
                            **report.as_dict(),
                        }
                    )
                    last_refresh, walking = time.monotonic(), report.presign_walking > 0
                    if stop.requested or grew:
                        break
                due, erasure = next_lapse(self.store), self.next_erasure()
                idle_since = time.monotonic()
        finally:
            watch.close()
            self.presign_seconds = None
            stop.restore()

    def consume(
        self,
        consumer: Consumer,
        *,
        follow: bool = False,
        max_idle: float | None = None,
        tail_wait: float = 5.0,
        interval: float = 1.0,
        tick_every: float = 0.0,
        ship: Callable[[BuildReport], object] | None = None,
        fetch_crls: Callable[[], object] | None = None,
        stall_after: float = 10.0,
    ) -> int:
        """Apply the record stream (`crlbuilder.stream`) from where the store stands; returns
        the last stream sequence committed.

        One write transaction per batch as the stream cuts it (`Batcher`), acknowledged only
        once committed, preceded by the lapses and erasures the stream's time makes due
        (`_stream_batch`). Pre-signing and CRLs (which move no commit) run when the node has
        caught up with the stream, and at least every ``refresh_every`` while it has not.
        Without ``follow`` it returns once caught up; with it, it goes on until SIGTERM/SIGINT
        (or ``max_idle`` seconds with no record to read: ticks that write nothing, the CRL
        signer's own among them, are no work), refreshing answers and CRLs like the
        spool loop (at once, as it does, for a token request queued, a registry changed or
        an approval's end reached: Act §38-3, §38-2(6)), and, with ``tick_every``, publishing ticks that often and when a lapse
        or an erasure past retention falls due (`next_lapse`, `next_erasure`). CRLs between nodes (`crl.shipping`): the signer's ``ship`` gets each
        refresh's report (the CRLs it produced); a node without CA keys calls ``fetch_crls``
        at every turn of the loop. A consumer that delivers nothing for ``stall_after``
        seconds while the stream holds more is opened again from the last commit.

        Tokens (Act §38-3) go through the stream: the signer (``crl.enabled``) publishes each
        token it issues or revokes as a record (`crlbuilder.model.TokenIssued`,
        `TokenRevoked`) and records it, as every other node does, when the record comes back;
        the other nodes never issue or revoke one by their own clock (`issues_tokens`). A
        one-shot run (not ``follow``) applies the token records it published before it returns,
        so its store and CRLs hold them, as a build from files does.
        """
        self._stream, self._republished, self._published = consumer, False, 0
        try:
            return self._consume(
                consumer, follow=follow, max_idle=max_idle, tail_wait=tail_wait,
                interval=interval, tick_every=tick_every, ship=ship, fetch_crls=fetch_crls,
                stall_after=stall_after,
            )  # fmt: skip
        finally:
            self._stream = None

    def _consume(
        self,
        consumer: Consumer,
        *,
        follow: bool = False,
        max_idle: float | None = None,
        tail_wait: float = 5.0,
        interval: float = 1.0,
        tick_every: float = 0.0,
        ship: Callable[[BuildReport], object] | None = None,
        fetch_crls: Callable[[], object] | None = None,
        stall_after: float = 10.0,
    ) -> int:
        """`consume`'s loop (``self._stream`` set)."""
        from crlbuilder.jetstream import ClusterError
        from crlbuilder.stream import MAX_BATCH, Batcher
        from crlbuilder.stream import refusal as stream_refusal

        with self.store.read() as r:
            after = r.stream_seq()
            refused = bool(r.stream_refused())  # by an earlier run: cleared by the next commit
        stop = StopRequest.install()
        if follow:  # cut pre-signing that reads every CRL entry into runs, as the spool loop
            self.presign_seconds = self.cfg.ocsp.presign_slice_seconds or None
        while True:
            try:
                consumer.open(after)
                self._mark_feed(consumer.feed_id())
                self._check_held(consumer, after)
                break
            except StreamRefused:
                stop.restore()
                self.presign_seconds = None
                raise
            except ClusterError as e:
                # a follower started while the cluster elects, or with a server down: it
                # waits for the cluster rather than leave its node behind for good
                if not follow or stop.requested:
                    stop.restore()
                    self.presign_seconds = None
                    if not follow:
                        raise
                    return after  # stopped while waiting: nothing was read
                self.emit({"event": "warning", "message": str(e)})
                time.sleep(interval)
        batcher = Batcher(after, MAX_BATCH)
        fetch_n = min(self.cfg.input.batch_size, 1000)
        applier = self._applier(None, published=True)
        applier.deliver()  # what a killed builder staged and did not deliver
        report = BuildReport(summary=applier.summary)
        dirty = False
        walking = self.walks_in_progress()
        refreshes = 0
        t0 = last_read = idle_since = last_refresh = last_tick = time.monotonic()
        last_head = 0.0

        def commit(batch: list[Delivered]) -> None:
            nonlocal dirty, refused
            reason = stream_refusal(batch)  # before anything of the batch is written
            if reason is not None:
                self._refuse(reason)
                raise NewerRelease(reason)
            before = applier.summary.commits
            self._stream_batch(applier, batch)
            consumer.ack(batch[-1])
            if refused:  # applying again (this node upgraded): /readyz no longer says why not
                with Commit(self.store) as c:
                    c.put_stream_refused("")
                refused = False
            dirty |= applier.summary.commits != before  # a tick that changed nothing: no refresh

        retry = SigningRetry(self.emit)  # a token gone: records applied, signing retried

        def refresh(event: str) -> None:
            nonlocal applier, report, dirty, last_refresh, refreshes, walking
            refreshes += 1
            report.seconds["apply"] = time.monotonic() - t0
            step = partial(self.after_commit, applier, report, self.clock(), time_writes=False)
            if follow:  # committed and acknowledged: a signing outage leaves the CRLs and
                retry.run(event, step)  # answers to the retry (ships what it made, if any)
            else:  # a one-shot run that could not sign fails
                step()
            walking = report.presign_walking > 0  # failed: none until the retry
            if ship is not None:
                ship(report)
            with self.store.read() as r:
                seq = r.stream_seq()
            self.emit({"event": event, "stream_seq": seq, **report.as_dict()})
            applier = self._applier(None, published=True)
            report = BuildReport(summary=applier.summary)
            dirty = False
            last_refresh = time.monotonic()

        last_fetch_crls = 0.0
        own_round = False  # a one-shot run's turn for the token records it published
        approval_end = self.next_approval_end(self.clock())

        def tokens_due() -> bool:
            """A token request queued, the registry changed (an approval may have ended) or an
            approval's end reached (Act §38-3, §38-2(6)): refreshed at once, as the spool
            loop does, not at the next periodic refresh (half an hour or more)."""
            nonlocal approval_end
            now = self.clock()
            due = (self.tokens_pending() and not retry.waiting()) or self.registry_moved()
            if due or (approval_end is not None and approval_end <= now):
                approval_end = self.next_approval_end(now)
                return True
            return False

        def turn() -> bool:
            """One turn of the loop; True when the loop is done."""
            nonlocal \
                last_tick, \
                last_head, \
                last_read, \
                idle_since, \
                last_fetch_crls, \
                walking, \
                own_round
            if tick_every and follow:
                # a tick as soon as a lapse or an erasure falls due: every node writes it at
                # that tick, not up to tick_every later (one a second at most: while the
                # stream's clock is behind this node's, the tick writes nothing and is repeated)
                dues = [t for t in (next_lapse(self.store), self.next_erasure()) if t is not None]
                since = time.monotonic() - last_tick
                time_due = bool(dues) and min(dues) <= self.clock() and since >= 1.0
                if since >= tick_every or time_due:
                    consumer.tick(self.clock())
                    last_tick = time.monotonic()
            if fetch_crls is not None and time.monotonic() - last_fetch_crls >= 1.0:
                fetch_crls()
                last_fetch_crls = time.monotonic()
            got = consumer.fetch(fetch_n, interval if follow else min(interval, 0.5))
            now = time.monotonic()
            commits = applier.summary.commits
            for d in got:
                held = batcher.items[-1].seq if batcher.items else batcher.after
                if d.seq > held + 1 and consumer.first_seq() > held + 1:
                    # a gap the stream's first message moved past: purged while this node
                    # caught up (a compaction), not messages deleted alone inside the stream;
                    # the consumer moved on to the first, the records between never applied
                    self._check_held(consumer, batcher.after)
                if (batch := batcher.add(d)) is not None:
                    commit(batch)
            if any(d.item is not None for d in got) or applier.summary.commits != commits:
                idle_since = now  # a record, or a tick that wrote (a lapse, an erasure): work
            if now - last_head >= 1.0:
                if got:
                    head = got[-1].seq + got[-1].pending
                else:  # nothing delivered: is the stream still the one the store follows?
                    head, feed = consumer.head()  # (its sequences may not even go back)
                    self._mark_feed(feed)  # StreamReplaced when it was made again
                with Commit(self.store) as c:
                    c.put_stream_head(head, int(time.time()))
                last_head = now
                if not got and head > batcher.after and now - last_read >= stall_after:
                    # the stream holds records past the last commit and the consumer has
                    # delivered none for a while: after a server of the cluster came back,
                    # a pull consumer can stay silent; open it again where the store stands
                    self.emit({"event": "warning", "message": (
                        f"consumer delivered nothing for {now - last_read:.0f} s with the "
                        f"stream at {head}, the store at {batcher.after}: opened again")})  # fmt: skip
                    batcher.items.clear()
                    consumer.open(batcher.after)
                    self._mark_feed(consumer.feed_id())  # the stream made again meanwhile?
                    self._check_held(consumer, batcher.after)
                    last_read = now
            if got:
                last_read = now
            elif batcher.items and now - last_read >= tail_wait:
                commit(batcher.cut())  # a publisher stopped before marking its end
            caught_up = not batcher.items and (not got or got[-1].pending == 0)
            if dirty and (caught_up or now - last_refresh > self.refresh_every()):
                refresh("stream")
            if not caught_up:
                return False
            if not follow:
                # a one-shot run returns with the token records it published applied, as a
                # build from files has its tokens in its store and CRLs (once: a record that
                # comes back refused is not published and awaited for ever)
                if refreshes == 0:
                    refresh("stream")
                if self._published and not own_round:
                    own_round, self._published = True, 0
                    return False
                return True
            if (
                time.monotonic() - last_refresh > self.refresh_every()
                or retry.due()
                or tokens_due()
                or (refreshes == 0 and self.promise_runs_out())
            ):
                refresh("refresh")
                return False
            if walking:  # caught up: the cut pre-signing goes on
                step = BuildReport(summary=Summary())
                if retry.run("pre-signing", partial(self.presign_step, step)):
                    self.emit({"event": "presign", **step.as_dict()})
                walking = step.presign_walking > 0  # failed: none until the retry
                return False
            return max_idle is not None and time.monotonic() - idle_since > max_idle

        try:
            while not stop.requested:
                try:
                    if turn():
                        break
                except ClusterError as e:
                    if not follow:
                        raise
                    # the client reconnects to another server; the store says where to resume
                    self.emit({"event": "warning", "message": str(e)})
                    time.sleep(interval)
        finally:
            stop.restore()
            self.presign_seconds = None  # the last refresh below finishes what is cut
        if dirty or refreshes == 0:
            try:
                refresh("stream")
            except ClusterError as e:
                if not follow:
                    raise
                # stopped while the cluster is away (its CRLs not shipped): said as in the
                # loop, not the run's error; what the store holds is committed and the CRL
                # files are written here, but not in the bucket: the other nodes have them with
                # the next CRLs this signer ships (made by its next change or schedule)
                self.emit({"event": "warning", "message": str(e)})
        with self.store.read() as r:
            return r.stream_seq()

    def _mark_feed(self, feed: bytes) -> None:
        """Name the record stream that fills the store (`META_FEED_ID`, `Commit.name_feed`), so
        that a changes cursor names this stream's positions (`responder.v1.feedpos`). A store
        named first after it applied part of the stream (a builder of an earlier version)
        serves the cursors from there on only: its earlier commits name no batch.

        Another stream than the one named (deleted and made again under its name) is refused,
        nothing of it written, the refusal kept for /readyz (`StreamReplaced`,
        `META_STREAM_REFUSED`): it numbers from 1 again, so resuming at the store's
        sequence + 1 would pass the new stream's records up to it, revocations never applied.
        The node keeps its store by adopting the new stream (`crlbuilder.streamadopt`). A store named
        that has applied nothing of its stream yet takes the new one; an adopted one before its
        first batch (sequence 0, its history applied) does not: the stream made again once
        more is adopted again, its checks made again (every record on it)."""
        with self.store.read() as r:
            was, seq = r.feed_id(), r.stream_seq()
            held = seq or r.count(sf.DB_APPLIED)  # adopted: sequence 0, its history applied
        if was == feed:
            return
        if was and held:
            reason = (
                f"the record stream {self.cfg.stream.name} is not the one this store was filled "
                f"from (deleted and made again?): the store stands at sequence {seq} of the "
                "old one; keep the store: once every record file is republished, run "
                "crlbuilder stream adopt with this builder stopped (docs/operations.md, "
                "'A record stream made again')"
            )
            self._refuse(reason)
            raise StreamReplaced(reason)
        with Commit(self.store) as c:
            c.name_feed(feed)

    def _check_held(self, consumer: Consumer, after: int) -> None:
        """Refuse a stream that no longer holds sequence ``after`` + 1 (`StreamTruncated`,
        kept for /readyz): a consumer started there would begin at the stream's first message,
        past records this store never applied (a node started from an old snapshot, or empty,
        after the stream was purged or given limits). Messages deleted one by one inside the
        stream (the runbook's way out of a refused message) leave its first sequence alone.
        Checked when the consumer opens and at a gap in what it delivers: a purge while the
        node catches up (`crlbuilder.recordcompact` past its position) moves its consumer on
        to the stream's new first message."""
        first = consumer.first_seq()
        if first <= after + 1:
            return
        reason = (
            f"the record stream {self.cfg.stream.name} no longer holds sequence {after + 1} "
            f"(its first is {first}: purged, or limits put on it), which this store needs next: "
            f"the records before {first} would be passed over; start this node from a snapshot "
            f"put after sequence {first - 1} (crlbuilder snapshot get into a new store), and "
            "keep every record on the stream (docs/operations.md, 'Several nodes')"
        )
        self._refuse(reason)
        raise StreamTruncated(reason)

    def _refuse(self, reason: str) -> None:
        """Keep why the stream is not applied where /readyz and the metric read it (node state,
        `META_STREAM_REFUSED`; nothing of the stream is written)."""
        with Commit(self.store) as c:
            c.put_stream_refused(reason)

    def _stream_batch(self, applier: Applier, batch: list[Delivered]) -> None:
        """One batch of the stream, dated by the stream (see `crlbuilder.stream`).

        As of the time JetStream stored its last message: the lapses due by then, at a tick
        the erasures past retention, then the batch's records with its last sequence, in
        its own transaction. The first two are idempotent as of that instant, so a kill
        before the batch's commit repeats them as no-ops and every node writes the same
        commits at the same positions. Each of these commits is marked with the batch
        (`store.format.StreamGroup`: the stream sequence before it and its last), so the
        changes feed is read by stream position on every node (`responder.v1.feedpos`).
        """
        from crlbuilder.stream import rules7_from, rules8_from, rules9_from, token_signatures

        at = batch[-1].at
        applier.clock = lambda: at
        with self.store.read() as r:
            base = r.stream_seq()
        applier.group = sf.StreamGroup(base, batch[-1].seq)  # every commit below is of it
        try:
            due = next_lapse(self.store)
            if due is not None and due <= at:
                applier.sweep_lapses(at)
            if any(d.item is None for d in batch):
                self._erase(applier, at, stream=True)
            items = [d.item for d in batch if d.item is not None]
            applier.commit(
                items, stream_seq=batch[-1].seq, token_signatures=token_signatures(batch),
                rules7=rules7_from(batch), rules8=rules8_from(batch), rules9=rules9_from(batch),
            )  # fmt: skip
        finally:
            applier.group = None

    def _take_up(self, applier: Applier, name: str, f: BinaryIO) -> int:
        """The line of the spool file ``f`` (named ``name``) after which its reading goes on:
        the last one a batch committed when this very file was being applied (a loop killed
        before removing it), else 0. Each batch's transaction records its last line
        (`store.format.SpoolAt`): read again from its first line, the file's records applied
        are duplicates, but the refused ones would be judged again against what its later
        lines added (a revocation read before its certificate's issuance, refused, quarantined,
        then applied after all), unlike in a loop never killed."""
        st = os.fstat(f.fileno())
        ident = (st.st_dev, st.st_ino, st.st_ctime_ns, st.st_mtime_ns, st.st_size)
        with self.store.read() as r:
            at = r.spool_at()

        def keep(c: Commit, last: Located | Rejected) -> None:
            c.put_spool_at(sf.SpoolAt(name=name, file=ident, line=last.line))

        applier.on_batch = keep
        return at.line if at is not None and (at.name, at.file) == (name, ident) else 0

    def _whole_files(self, spool: Path, warned: set[str]) -> list[tuple[Path, Look]]:
        """The spool's ``*.jsonl`` files in name order, up to the first one still being written
        (`crlbuilder.spoolfile`), each with what was seen of it; raises FileNotFoundError when
        the spool is gone. A symbolic link (not followed: nothing is read, chmod-ed or moved
        through it), a directory, FIFO, socket or device under a record file's name, and a file
        the builder may not read are left where they are, said once each, and do not hold back
        the files after them."""
        out: list[tuple[Path, Look]] = []
        files = sorted(p for p in spool.iterdir() if p.suffix == SUFFIX)
        self._settling.keep_only({p.name for p in files})
        for p in files:
            try:
                mode = p.lstat().st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(mode):
                self._warn_once(p, warned, "a symbolic link, not applied: rename record files "
                                "into the spool (docs/operations.md)")  # fmt: skip
                continue
            if not stat.S_ISREG(mode):
                self._warn_once(p, warned, "not a regular file (a directory, FIFO, socket or "
                                "device), not applied: rename record files into the spool "
                                "(docs/operations.md)")  # fmt: skip
                continue
            try:
                seen = look(p)
            except OSError as e:
                self._warn_unreadable(p, warned, e)
                continue
            if seen is None:
                continue
            if not self._settling.whole(
                p.name, seen, now=time.monotonic(), settle=self.spool_settle
            ):
                self._warn_in_place(p, warned)
                break
            out.append((p, seen))
        return out

    def _warn_unreadable(self, p: Path, warned: set[str], e: OSError) -> None:
        """Say once that the spool file ``p`` cannot be read (it is left where it is)."""
        self._warn_once(p, warned, f"cannot be read ({e.strerror}), not applied: the builder's "
                        "user reads the spool's files (docs/operations.md)")  # fmt: skip

    def _warn_in_place(self, p: Path, warned: set[str]) -> None:
        """Say once per file that it is being written in the spool, not renamed in whole."""
        self._warn_once(p, warned, "still being written in the spool (its last line has no "
                        "line end), taken when whole; write record files under another name "
                        "and rename them in (docs/operations.md)")  # fmt: skip

    def _warn_once(self, p: Path, warned: set[str], why: str) -> None:
        """A ``warning`` event naming the spool file ``p`` (its name only), once per name."""
        if p.name not in warned:
            warned.add(p.name)
            self.emit({"event": "warning", "message": f"{p.name}: {why}"})

    def _consumed(self, p: Path, done: Path, f: BinaryIO) -> None:
        """An applied spool file, its records committed: removed, or kept in ``done/`` (0700).
        ``f``: the file as read (`spoolfile.open_seen`), narrowed through its descriptor, never
        through the name (a link put there meanwhile would narrow its target). Gone already
        (removed by hand, or by another process) is no error: there is nothing to remove."""
        if not self.cfg.input.spool_keep_seconds:
            p.unlink(missing_ok=True)
            return
        try:  # moved first: narrowing it in the spool would change its ctime, and a loop
            p.rename(done / p.name)  # killed before the move would read it again from its
        except FileNotFoundError:  # first line (`_take_up` knows it by its ctime)
            return
        with contextlib.suppress(PermissionError):  # a feeder's file: done/ (0700) keeps others out
            os.fchmod(f.fileno(), 0o600)
        moved_in = time.time()  # the clock prune_done reads, not the file system's stamp
        os.utime(f.fileno(), (moved_in, moved_in))

    def next_erasure(self) -> datetime | None:
        """When the next revocation record may pass its retention (`apply.next_erasure`): the
        follow loop erases it then, not at its next file or refresh."""
        return next_erasure(self.store, self.cfg.crl.retention_period_days)

    def promise_runs_out(self) -> bool:
        """Whether an issuer's promised nextUpdate (`ReaderRules.promised_next_update`: its
        CRL's, its stored answers', the last run's `store.format.META_VOUCHED`) is past or falls
        before the next periodic refresh: a node of the record stream started after a long stop,
        caught up with nothing to apply, refreshes at once rather than leave those issuers
        ``tryLater`` until ``refresh_every`` has passed. No promise at all (0: a store no run of
        this release wrote) is none to renew."""
        horizon = epoch(self.clock()) + self.refresh_every()
        with self.store.read() as r:
            return any(0 < r.promised_next_update(i.index) <= horizon for i in r.issuers())

    def refresh_every(self) -> float:
        """Idle follow loops re-sign answers and re-issue CRLs at half the shortest cycle,
        so the responder never reaches a nextUpdate while the builder runs: a CRL's, a stored
        answer's, or the run's own promise (`store.format.META_VOUCHED`, ``ocsp.validity_seconds``
        ahead, renewed at least twice within it: the cycles below are all shorter). For the stored
        answers that is the shorter of their validity less the longest lead of a walk
        (`crlbuilder.presign.walk_lead`) and that lead: the answers fall due at an instant
        set by the walk that signed them (perhaps another process's), and a look every half
        lead lands in the first half of the lead before it, whatever the phase."""
        lead = self.cfg.ocsp.refresh_before_seconds
        if self.cfg.ocsp.presign:
            with self.store.read() as r:
                lead = max([walk_lead(r.ocsp_state(i.index), lead) for i in r.issuers()] or [lead])
        cycles = [self.cfg.ocsp.validity_seconds - lead]
        if lead > 0:  # 0: re-signed when they expire (the configuration's choice)
            cycles.append(lead)
        if self.cfg.crl.enabled:
            cycles.append(
                self.cfg.crl.delta_cycle_seconds
                if self.cfg.crl.delta
                else self.cfg.crl.cycle_seconds
            )
        return max(1.0, min(cycles) / 2)

    def emit(self, obj: dict[str, object]) -> None:
        self.log.write(msgspec.json.encode(obj).decode() + "\n")
        self.log.flush()


class _SpoolLock:
    """An exclusive ``flock`` on the spool directory, held while a loop follows it (closing the
    descriptor releases it, a kill too): two builders of two stores on one spool took turns at
    its files, each file applied to one store and removed before the other read it."""

    def __init__(self, spool: Path) -> None:
        self.spool = spool
        self.fd: int | None = None

    def take(self) -> None:
        """Take the lock unless held already or the spool is missing (the loop waits for it);
        raises `SpoolBusy` when another process holds it."""
        if self.fd is not None:
            return
        try:
            fd = os.open(self.spool, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolBusy(
                f"{self.spool}: another builder follows this spool (it holds the spool's lock): "
                "one builder per spool, each file is applied to one store only; stop the other "
                "first"
            ) from None
        self.fd = fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _private_dir(path: Path) -> None:
    """A directory of personal data: mode 0700 from creation; an older, wider one is narrowed."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        path.chmod(0o700)


def _close_to_others(spool: Path) -> str | None:
    """Take away other users' access to the spool, as the store's directory is narrowed to
    0700: a record file dropped there holds personal data (the four facts) until applied.
    The owner's and the group's bits are kept (installed 2770: the feeders' group drops the
    files). Returns a warning to emit, or None when it was closed already."""
    try:
        mode = stat.S_IMODE(spool.stat().st_mode)
    except OSError:
        return None  # no spool: SpoolWatch and the loop say so
    if not mode & 0o007:
        return None
    try:
        spool.chmod(mode & ~0o007)
    except OSError as e:
        return (
            f"spool {spool} is open to other users (mode {mode:04o}) and could not be "
            f"narrowed ({e.strerror}): record files hold personal data; make it 2770 or 0700"
        )
    return (
        f"spool {spool} was open to other users (mode {mode:04o}): narrowed to "
        f"{mode & ~0o007:04o} (record files hold personal data until applied)"
    )


def prune_done(done: Path, keep_seconds: int, now: float) -> int:
    """Remove the applied spool files kept longer than ``keep_seconds`` (by the time they were
    moved in, which `Builder._consumed` stamps as their mtime from the builder's clock, the
    one ``now`` comes from); returns how many."""
    removed = 0
    for f in done.iterdir():
        try:
            # keep_seconds 0 (the default) keeps nothing, whatever the clocks say: a file
            # stamped ahead of ``now`` (the clock stepped back) is removed too
            if f.is_file() and (keep_seconds <= 0 or now - f.stat().st_mtime >= keep_seconds):
                f.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed


def _chain(paths: list[Path]) -> Iterator[Located | Rejected]:
    for p in paths:
        yield from read_file(p)


def sources(cfg: BuilderConfig) -> list[Path]:
    return list_sources(cfg.input.paths)
