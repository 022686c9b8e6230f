"""Producing the CRL files (失効情報ファイル, Act §16, §16-15, §35, §35-15) from the store, and keeping them.

For each issuer generation, each run produces a full CRL when none exists yet, the
last full one is older than ``full_every_seconds`` or would pass its nextUpdate before
the next run (`full_lapsing`), or, without deltas, lists entries erased since (below),
and a delta CRL listing what was revoked since the last full one (RFC 5280 §5.2.4,
deltaCRLIndicator; full CRLs point at the delta with freshestCRL). Full and
delta CRLs share one CRL number sequence per issuer, and an issuer's CRLs never share a
thisUpdate with its last ones (`dated_after`, `wait_past`): the served validators order
them by it (`responder.crlfiles`). A full CRL lists every
revocation whose record is still within its retention period (政令で定める期間,
configuration per family and legal category since the Cabinet order is outside
our texts); a record past it is left out once its certificate has expired
(`crlbuilder.apply.past_retention`, the rule by which the store erases it,
Ord §70(1)(iii)).

An erasure takes its entries off the CRL at once, not at the next full CRL's cycle: the
erasure keeps, in the store, the entries the issuer's last full CRL lists
(`store.format.DB_ERASED`), and the next run (the one that follows the erasure's commit:
`build`, each turn of `build --follow`, the stream signer's refresh after the tick that
erased) takes them off. With delta CRLs, the delta lists each one with reasonCode
removeFromCRL (8), on the same base (RFC 5280 §5.2.4, §5.3.1: removeFromCRL only in a
delta, for an entry its base or an earlier delta on it lists; the certificate has expired
by then, `due_instant`),
until the next full CRL, which lists none of them;
without deltas, a new full CRL is issued at once (the next CRL number; thisUpdate now,
and the full CRL cycle counted from it). A full CRL never carries removeFromCRL.

Files: ``DIR/<issuer>.crl`` and ``DIR/<issuer>-delta.crl`` are the current
ones (replaced atomically; the certificates' CRL distribution points name
them); every produced CRL is also kept as ``DIR/archive/<issuer>/<number>-
{full,delta}.crl`` with an index entry in the store, until its own retention
(``keep_days`` days from the day after the day it was made, これを作成した日から:
`crlbuilder.periods.kept_until`) passes.

After a compromise of a generation's key (発行者署名符号の漏えい等, Act §14,
§16-12, §33, §35-12; the store's issuer table says so) that key signs nothing
more. The generation's CRLs go on, under its own name and at its own
distribution points (its records stay within their retention, Act §16), signed
by the successor generation's CA key that the manifest names, certified for
that name by the successor certificate (`crlbuilder.successor`, `keys successor`);
the authorityKeyIdentifier is then the successor's, and the first CRL after the
change of key is a full one (a delta is signed by the key of its base). With no
successor in the manifest nothing is signed for the generation
(`PublishResult.withheld`): its last CRL runs out and the responder answers
``tryLater`` rather than anything signed by the compromised key.

Partitioning: one full CRL of 1,000,000 entries encodes and signs in about two
seconds (bench/README.md), so the sign CRL is not partitioned: no
issuingDistributionPoint, one distribution point per issuer generation.
"""

from __future__ import annotations

import hashlib
import heapq
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from crlbuilder.apply import past_retention
from crlbuilder.config import DEFAULT_RETENTION_DAYS, CrlSection
from crlbuilder.crl.encode import REMOVE_FROM_CRL, encode_crl, write_crl_file
from crlbuilder.keys.signer import Signer, load_signer
from crlbuilder.manifest import IssuerFiles, Manifest
from crlbuilder.model import Category
from crlbuilder.periods import day_end, first_kept_at, kept_until
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.reader import StoreReader, lost_since
from crlbuilder.store.writer import Commit


@dataclass
class PublishResult:
    produced: list[sf.CrlFileEntry] = field(default_factory=list)
    pruned: int = 0
    withheld: list[str] = field(default_factory=list)
    """Compromised issuers with no successor in the manifest: no CRL was signed for them."""


class SuccessorError(Exception):
    """A successor certificate that cannot stand for the compromised generation's CA."""


def crl_signing(
    manifest: Manifest, issuer: IssuerFiles, compromised: bool
) -> tuple[x509.Certificate, Signer] | None:
    """The certificate naming a CRL's issuer and the signer of ``issuer``'s CRLs.

    Before a compromise: the generation's own CA certificate and key. After one
    (発行者署名符号の漏えい等, Act §14, §16-12, §33, §35-12) the compromised key signs
    nothing: the successor generation's CA key signs, under the compromised
    generation's name, certified by the successor certificate; None when the
    manifest names no successor (nothing may sign that generation's CRLs).
    """
    if not compromised:
        signer = load_signer(manifest.key_ref(issuer.key), manifest.path(issuer.cert))
        return signer.certificate, signer
    if not issuer.successor:
        return None
    successor = manifest.issuer(issuer.successor)
    signer = load_signer(manifest.key_ref(successor.key), manifest.path(issuer.successor_cert))
    own = x509.load_pem_x509_certificate(manifest.path(issuer.cert).read_bytes())
    cert = signer.certificate
    if cert.subject.public_bytes() != own.subject.public_bytes():
        raise SuccessorError(f"{issuer.successor_cert}: its subject is not {issuer.id}'s CA name")
    return cert, signer


def key_id(signer: Signer) -> str:
    """Hex SHA-256 of the signer's public key (SubjectPublicKeyInfo DER)."""
    spki = signer.certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


class CrlPublisher:
    """Produces, indexes and prunes the CRL files of every issuer in a manifest."""

    def __init__(self, store: Store, manifest: Manifest, cfg: CrlSection) -> None:
        self.store = store
        self.manifest = manifest
        self.cfg = cfg
        self.dir = Path(cfg.directory)

    def run(self, now: int) -> PublishResult:
        result = PublishResult()
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.store.read() as r:
            compromised = {i.id for i in r.issuers() if i.compromised_at}
        for issuer in self.manifest.all_issuers():
            signing = crl_signing(self.manifest, issuer, issuer.id in compromised)
            if signing is None:
                result.withheld.append(issuer.id)
                continue
            result.produced.extend(self._issuer(issuer, now, *signing))
        result.pruned = self._prune(now)
        return result

    def _issuer(
        self, issuer: IssuerFiles, now: int, cert: x509.Certificate, signer: Signer
    ) -> list[sf.CrlFileEntry]:
        with self.store.read() as r:
            state = r.crl_state(issuer.index)
            erased = taken_off(r.erased_listed(issuer.index), state.base_commit)
        # a store rebuilt (or restored) behind what this directory already published goes on
        # after it: CRL numbers only grow (RFC 5280 §5.2.3), and no archived CRL is overwritten
        state.number = max(state.number, published_number(self.dir, issuer.id))
        at = dated_after(now, state.this_update)  # the CRLs' thisUpdate: after the last ones'
        signer_key = key_id(signer)
        full_due = (
            not state.base_number
            or now - state.base_this_update >= self.cfg.full_every_seconds
            or full_lapsing(state.base_this_update, now, self.cfg)
            or state.base_signer != signer_key
            # entries erased past their retention that it lists: without deltas to take them
            # off, a full CRL without them now (Ord §70(1)(iii): no longer provided)
            or bool(erased and not self.cfg.delta)
        )
        out: list[sf.CrlFileEntry] = []
        retention = {
            c.code: self.cfg.retention_period_days(issuer.family, c)
            for c in Category
            if c.applies_to(issuer.family)
        }
        with self.store.read() as r:
            commit = r.generation().commit
            if full_due:
                state.number += 1
                entry = self._produce(
                    issuer, cert, signer, r, state.number, at, None, retention, since_commit=None
                )
                erased = []  # the new base lists none of them: its deltas take nothing off
                out.append(entry)
                state.base_number, state.base_commit, state.base_this_update = (
                    state.number,
                    commit,
                    at,
                )
                state.base_signer = signer_key
            if self.cfg.delta:
                state.number += 1
                out.append(
                    self._produce(
                        issuer, cert, signer, r, state.number, at, state.base_number, retention,
                        since_commit=state.base_commit, removed=erased,
                    )
                )  # fmt: skip
        if not out:  # no deltas, and the full CRL is neither due nor lapsing: nothing new
            return out
        state.this_update = at
        state.next_update = min(e.next_update for e in out)
        with Commit(self.store) as c:
            for e in out:
                c.put_crl_file(issuer.index, e)
            c.put_crl_state(issuer.index, state)
            if full_due:  # erased by the commit the new full CRL reflects: not on it
                c.drop_erased(issuer.index, state.base_commit)
        return out

    def _entries(
        self,
        r: StoreReader,
        issuer: IssuerFiles,
        now: int,
        retention: dict[int, int],
        since_commit: int | None,
    ) -> Iterator[tuple[int, int, int]]:
        """(serial, revokedAt, reason) of the CRL's entries: every CRL entry of the issuer
        within retention (``retention``: days per category code), or for a delta those
        written after ``since_commit``."""
        # recorded before its cutoff, an entry's period has ended by ``now`` (first_kept_at)
        cutoff = {code: first_kept_at(now + 1, days) for code, days in retention.items()}
        other = first_kept_at(now + 1, DEFAULT_RETENTION_DAYS)
        for key, e in crl_candidates(r, issuer.index, since_commit):
            if e.recorded_at < cutoff.get(e.category, other):  # rare: look up the expiry
                days = retention.get(e.category, DEFAULT_RETENTION_DAYS)
                st = r.status(key)
                if st is None or past_retention(e.recorded_at, st.not_after, now, days):
                    continue
            if since_commit is not None and e.commit <= since_commit:
                continue
            yield int.from_bytes(key[2:], "big"), e.revoked_at, e.reason

    def _produce(
        self,
        issuer: IssuerFiles,
        cert: x509.Certificate,
        signer: Signer,
        r: StoreReader,
        number: int,
        now: int,
        delta_base: int | None,
        retention: dict[int, int],
        since_commit: int | None,
        removed: Sequence[tuple[bytes, int]] = (),
    ) -> sf.CrlFileEntry:
        delta = delta_base is not None
        cycle = self.cfg.delta_cycle_seconds if delta else self.cfg.cycle_seconds
        listed = self._entries(r, issuer, now, retention, since_commit)
        counted = _Counted(with_removals(listed, removed, r) if delta else listed)
        der = encode_crl(
            issuer=cert,
            signer=signer,
            number=number,
            this_update=datetime.fromtimestamp(now, UTC),
            next_update=datetime.fromtimestamp(now + cycle, UTC),
            entries=counted,
            delta_base=delta_base,
            freshest_crl_url=None if delta else (issuer.delta_crl_url if self.cfg.delta else None),
        )
        rel = place_crl(self.dir, issuer.id, number, delta, der)
        return sf.CrlFileEntry(
            issuer=issuer.id, number=number, delta=delta, base_number=delta_base or 0,
            path=str(rel), this_update=now, next_update=now + cycle, entries=counted.n,
            size=len(der), sha256=hashlib.sha256(der).hexdigest(),
            keep_until=kept_until(now, self.cfg.keep_days),
        )  # fmt: skip

    def _prune(self, now: int) -> int:
        return prune_crls(self.store, self.dir, now, self.cfg.keep_days)


def taken_off(erased: list[tuple[bytes, int, int]], base_commit: int) -> list[tuple[bytes, int]]:
    """(status key, erased at) of the entries erased past their retention since the last full
    CRL (``base_commit``) that it or a delta on it lists (`store.format.DB_ERASED`, kept by the
    erasure only for those: `crlbuilder.apply.listed_since_base`): what the next CRL must take
    off."""
    return [(key, at) for key, commit, at in erased if commit > base_commit]


def with_removals(
    listed: Iterator[tuple[int, int, int]], removed: Sequence[tuple[bytes, int]], r: StoreReader
) -> Iterator[tuple[int, int, int]]:
    """A delta CRL's entries: ``listed`` (ascending serials) and, merged in serial order, one
    removeFromCRL (8) entry per erased entry its base or an earlier delta on it lists (RFC 5280
    §5.2.4, §5.3.1: the base and the delta then say together that the serial is no longer on
    the CRL, and so does a group's store that applied the earlier delta). Its
    revocationDate is the erasure's instant, not the revocation's: the erased record's time
    is no longer provided (`crl.erased_answer`), and a delta's reader takes the entry off
    whatever its date. A serial listed again since (not expected: an erased status is not
    revoked anew) keeps its listing."""
    off = [
        (int.from_bytes(key[2:], "big"), at, REMOVE_FROM_CRL)
        for key, at in removed
        if r.revoked_entry(key) is None
    ]
    return heapq.merge(listed, off, key=lambda e: e[0])


AHEAD_AT_MOST: Final = 5
"""Seconds a CRL's thisUpdate may be put after the clock's ``now`` (`dated_after`)."""


def dated_after(now: int, last: int) -> int:
    """The thisUpdate of an issuer's next CRLs at ``now``, its last ones dated ``last``: ``now``,
    or one second after ``last`` when ``now`` is not after it by at most `AHEAD_AT_MOST`
    seconds (two runs within one second: the follow loop refreshes after every batch it
    catches up with). Two CRLs of one file name (`place_crl`) then never share a thisUpdate:
    the validators `responder.crlfiles` serves them with (Last-Modified, the thisUpdate in the
    ETag that `responder.crlfiles.behind` orders by) tell the newer one, where the same second
    made an If-Modified-Since of the older one 304 for the newer and let a node behind take a
    party back to the older one. The builder waits out the second before it publishes
    (`wait_past`), so with its own clock the CRLs are dated ``now``; a clock set back further
    (or a pinned ``--as-of`` run long after) dates them ``now``, as before."""
    return last + 1 if 0 <= last - now < AHEAD_AT_MOST else now


WAIT_STEP: Final = 0.05
"""Seconds `wait_past` sleeps between two looks at the clock."""


def wait_past(
    last: int, now: int, clock: Callable[[], float], sleep: Callable[[float], None]
) -> int:
    """The instant a CRL run at ``now`` dates its CRLs by, the last ones dated ``last`` (the
    latest thisUpdate of any issuer): when ``now`` is not after ``last`` and ``clock`` (epoch
    seconds) is within `AHEAD_AT_MOST` of ``now`` (the builder's own clock, not a pinned
    ``--as-of`` far from it), ``sleep`` until ``clock`` passes ``last`` (about a second) and
    that second; else ``now`` (`dated_after` then decides)."""
    if now > last or last - now >= AHEAD_AT_MOST or abs(clock() - now) > AHEAD_AT_MOST:
        return now
    t = clock()
    while t < last + 1:
        sleep(min(WAIT_STEP, last + 1 - t))
        moved = clock()
        if moved <= t:  # a clock that does not move (a test's): as it is
            return now
        t = moved
    return int(t)


def refresh_lead(cfg: CrlSection) -> int:
    """Seconds within which the follow loop runs the publisher again: half the shortest CRL
    cycle it publishes (`crlbuilder.build.Builder.refresh_every` runs at most this far apart)."""
    return (cfg.delta_cycle_seconds if cfg.delta else cfg.cycle_seconds) // 2


def full_lapsing(base_this_update: int, now: int, cfg: CrlSection) -> bool:
    """Whether the current full CRL (thisUpdate ``base_this_update``) would pass its nextUpdate
    before the next run: a relying party refuses an expired CRL (RFC 5280 §6.3.3 (a)(2);
    ``openssl verify -crl_check``: "CRL has expired"), and a delta does not make up for an
    expired base. With ``full_every_seconds`` equal to the cycle (the default) the full CRL
    was otherwise re-signed only after it had expired."""
    return base_this_update + cfg.cycle_seconds - now <= refresh_lead(cfg)


def crl_candidates(
    r: StoreReader, issuer_index: int, since_commit: int | None
) -> Iterator[tuple[bytes, sf.RevokedEntry]]:
    """The CRL entries a CRL of one issuer may list, in key order (retention is the caller's):
    for a delta whose base commit the changes feed still reaches, those of the serials the
    feed names after it (every CRL entry is written with a loss of effect, in the same
    commit: `crlbuilder.store.writer`); else every one of the issuer (at 10,000,000 holders,
    16.4 million entries read for a delta of a few thousand)."""
    if since_commit is None or since_commit < r.changes_from():
        yield from r.revocations(issuer_index)
        return
    for key in lost_since(r, issuer_index, since_commit):
        e = r.revoked_entry(key)
        if e is not None:  # unlisted or erased since: on no CRL
            yield key, e


def published_number(directory: Path, issuer_id: str) -> int:
    """The highest CRL number kept in ``directory`` for ``issuer_id`` (its archive's
    ``<number>-{full,delta}.crl`` names, `place_crl`), 0 when none."""
    try:
        names = os.listdir(directory / "archive" / issuer_id)
    except FileNotFoundError:
        return 0
    numbers = [
        int(stem)
        for name in names
        for stem, _, kind in [name.partition("-")]
        if stem.isdigit() and kind in ("full.crl", "delta.crl")
    ]
    return max(numbers, default=0)


def place_crl(directory: Path, issuer_id: str, number: int, delta: bool, der: bytes) -> Path:
    """Write one CRL as ``archive/<issuer>/<number>-{full,delta}.crl`` and make it the current
    ``<issuer>[-delta].crl`` by a rename (never rewritten in place: `responder.crlfiles`);
    returns its path relative to ``directory``."""
    kind = "delta" if delta else "full"
    rel = Path("archive") / issuer_id / f"{number:08d}-{kind}.crl"
    (directory / rel).parent.mkdir(parents=True, exist_ok=True)
    write_crl_file(directory / rel, der)
    current = directory / (f"{issuer_id}-delta.crl" if delta else f"{issuer_id}.crl")
    tmp = current.with_suffix(".crl.tmp")
    tmp.unlink(missing_ok=True)
    os.link(directory / rel, tmp)
    os.replace(tmp, current)
    return rel


def prune_crls(store: Store, directory: Path, now: int, keep_days: int) -> int:
    """Delete archived CRLs past their own retention, and their index entries.

    A file is kept until the later of its stored ``keep_until`` taken to the end of its JST
    day (`periods.day_end`, Civil Code §141: an entry made by a builder that stored
    ``this_update + keep_days * 86400``) and ``keep_days`` (``crl.keep_days``) counted
    from the day after its ``this_update`` (`periods.kept_until`, 初日不算入): an entry
    stored at exactly 00:00 JST by that builder is already a day's end, a day before the
    end counted from its day. Never earlier than either."""
    with store.read() as r:
        gone = [(key, e) for key, e in r.crl_files() if crl_kept_until(e, keep_days) <= now]
    if not gone:
        return 0
    with Commit(store) as c:
        for key, e in gone:
            (directory / e.path).unlink(missing_ok=True)
            c.delete_crl_file(key)
    return len(gone)


def crl_kept_until(e: sf.CrlFileEntry, keep_days: int) -> int:
    """When a kept CRL file may be deleted (`prune_crls`)."""
    return max(day_end(e.keep_until), kept_until(e.this_update, keep_days))


class _Counted:
    """An iterator wrapper that counts what passed through (entries of a CRL)."""

    def __init__(self, it: Iterator[tuple[int, int, int]]) -> None:
        self._it = it
        self.n = 0

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        for x in self._it:
            self.n += 1
            yield x
