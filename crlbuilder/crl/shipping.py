"""CRL files (失効情報ファイル) signed once and shipped to every node through a JetStream object store.

Several nodes serve the same CRLs, and only one holds the CA keys (or the HSM): the
signer (``crl.enabled``, its keys in its manifest) produces each CRL as a single node
does (`crlbuilder.crl.publish`) and then ships it (`ship`): every file produced goes
into the object store bucket under its archive path, then one small object per issuer,
``latest/<issuer id>``, names the issuer's CRL state and the files of its last run, with
the current full CRL when that run made only a delta on it (`Shipment`). Files first,
pointer last: a node never reads a pointer to a file that is not there yet; and a node that
missed a run (down, its fetch failing) still gets the full CRL its new delta is on, which
it reads only when it does not serve it already.

The other nodes (``crl.enabled = false``: no CA key, their builder only applies
records and pre-signs OCSP answers, which every node still signs with its delegated
OCSP signer) fetch (`Fetcher.fetch`): for each issuer whose pointer changed and names a
CRL number above the one in their store, each file is read, checked (its SHA-256 and
size as shipped, its CRL number, kind, base, thisUpdate and nextUpdate, and its signature:
issued by the issuer's CA
certificate, or by the successor certificate after a compromise, from the node's own
manifest; the pointer's CRL state must be its files' (`_check_state`: a node promises
freshness from it); a file that fails is refused whole and nothing is written), placed in the CRL
directory exactly as the signer placed it (archive file, current file replaced by a
rename), and indexed in the store with the issuer's CRL state in one transaction that
moves no commit (`keep_shipment`; it also forgets the erased entries the shipped full CRL no
longer lists, `store.format.DB_ERASED`, so that a node promoted to signer takes off what
its base still lists). So `/crl/...`, the store gauges and the freshness the responder
promises (`StoreReader.promised_next_update`) are the same on every node, and a node
never needs a CA key. A pointer whose CRL number is below the node's own is not taken (a
`ShippingError` says so): a node is never taken back to an older CRL.

A signer, before it signs, goes on after the numbers already shipped (`continue_numbering`,
`Fetcher.shipped_numbers`): a signer whose store and directory know less (rebuilt, restored
from an older snapshot, another machine) would otherwise sign CRL numbers already shipped,
with other contents (RFC 5280 §5.2.3), that no node takes.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec
import nats.errors
import nats.js.errors
from cryptography import x509
from nats.js.api import ObjectInfo, ObjectStoreConfig
from nats.js.object_store import ObjectStore

from crlbuilder.crl.parse import CrlError, parse_crl, verify_crl_signature
from crlbuilder.crl.publish import place_crl, prune_crls
from crlbuilder.jetstream import Cluster, ClusterError, replicas_for
from crlbuilder.manifest import Manifest
from crlbuilder.objectread import ObjectReadError, read_object
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.writer import Commit

LATEST: Final = "latest/"

READ_TIMEOUT: Final = 10.0
"""Seconds a fetcher waits for an answer of the bucket: an object's description, or the next
chunk of an object (`crlbuilder.objectread`). The signer replaces ``latest/<issuer>`` at each
run, and the object store purges the old chunks: a read that took the description just before
gets none. Past this the fetch raises `ClusterError` (its subscription ended) and the loop's
next turn reads the new pointer."""


class Shipment(msgspec.Struct, frozen=True, kw_only=True):
    """``latest/<issuer>``: the issuer's CRL state and the files of its signer's last run."""

    issuer: str
    state: sf.CrlState
    files: list[sf.CrlFileEntry]


class ShippingError(Exception):
    """A shipped CRL that does not check out; nothing of it was written."""


def _bucket(
    cluster: Cluster, bucket: str, replicas: int, *, create: bool = True
) -> ObjectStore | None:
    """The bucket; made when missing and ``create`` (the signer, its writer), else None (a
    reader's credential may not create it: deploy/nats/jpki-va-auth.conf)."""

    async def go() -> ObjectStore | None:
        try:
            return await cluster.js.object_store(bucket)
        except nats.js.errors.BucketNotFoundError:
            if not create:
                return None
            cfg = ObjectStoreConfig(
                bucket=bucket, replicas=replicas_for(cluster.cluster_size(), replicas)
            )
            return await cluster.js.create_object_store(bucket, config=cfg)

    try:
        return cluster.run(go())
    except (nats.errors.Error, TimeoutError) as e:
        raise ClusterError(f"object store {bucket}: {e}") from None


def ship(
    cluster: Cluster,
    bucket: str,
    store: Store,
    directory: Path,
    produced: list[sf.CrlFileEntry],
    *,
    replicas: int = 0,
) -> int:
    """Put the CRL files just produced, then each issuer's pointer; returns files shipped.

    A pointer names the issuer's current full CRL too when its run made only a delta (the
    file shipped by the run that made it): a node that missed that run's pointer (down, its
    fetch failing meanwhile) takes the delta's base with it, not a delta whose BaseCRLNumber
    is no full CRL it serves (a relying party could not apply it, RFC 5280 §5.2.4)."""
    if not produced:
        return 0
    obs = _bucket(cluster, bucket, replicas)
    assert obs is not None  # made when missing
    by_issuer: dict[str, list[sf.CrlFileEntry]] = defaultdict(list)
    for e in produced:
        by_issuer[e.issuer].append(e)
    with store.read() as r:
        index = {i.id: i.index for i in r.issuers()}
        states = {iid: r.crl_state(index[iid]) for iid in by_issuer}
        bases = {
            iid: next(
                (
                    e
                    for e in r.latest_crls(index[iid])
                    if not e.delta and e.number == st.base_number
                ),
                None,
            )
            for iid, st in states.items()
        }

    async def go() -> None:
        for iid, files in by_issuer.items():
            for e in files:
                await obs.put(e.path, (directory / e.path).read_bytes())
            base = bases[iid]
            listed = files if base is None or base in files else [base, *files]
            pointer = Shipment(issuer=iid, state=states[iid], files=listed)
            await obs.put(LATEST + iid, msgspec.json.encode(pointer))

    try:
        cluster.run(go())
    except (nats.errors.Error, TimeoutError) as e:
        raise ClusterError(f"shipping CRLs to {bucket}: {e}") from None
    return len(produced)


def keep_shipment(store: Store, issuer_index: int, shipment: Shipment) -> None:
    """Index a shipment's files, placed already, and take its CRL state, in one transaction
    that moves no commit. The entries this node's erasures kept for the signer's next CRL
    (`store.format.DB_ERASED`) that the shipped full CRL no longer lists (erased by the commit
    it reflects or before) go, as on the signer (`crlbuilder.crl.publish`): promoted to
    signer, this node takes off only what its base still lists."""
    with Commit(store) as c:
        for f in shipment.files:
            c.put_crl_file(issuer_index, f)
        c.put_crl_state(issuer_index, shipment.state)
        if shipment.state.base_number:
            c.drop_erased(issuer_index, shipment.state.base_commit)


def continue_numbering(store: Store, shipped: dict[str, int]) -> list[str]:
    """Before a signer signs (`crlbuilder.cli`): each issuer whose CRL number shipped
    (``shipped``, `Fetcher.shipped_numbers`) is above its store's (the signer's store rebuilt
    from the stream, or restored from an older snapshot, on a machine whose CRL directory is
    not the old signer's) takes that number, so its next CRL goes on after it (RFC 5280
    §5.2.3: a CRL number never repeats, nor goes back), and names no base, so that CRL is a
    full one (its store does not know what the full CRLs shipped since reflect). Returns the
    issuers taken on; in one transaction that moves no commit, as `keep_shipment`."""
    with store.read() as r:
        behind = [
            (i.id, i.index, st)
            for i in r.issuers()
            if (st := r.crl_state(i.index)).number < shipped.get(i.id, 0)
        ]
    if not behind:
        return []
    with Commit(store) as c:
        for iid, index, st in behind:
            c.put_crl_state(index, msgspec.structs.replace(st, number=shipped[iid], base_number=0))
    return [iid for iid, _, _ in behind]


def _check_state(shipment: Shipment) -> None:
    """The pointer's CRL state says what its files (checked against the signed CRLs) say: its
    number the last file's, its thisUpdate and nextUpdate those of the last run's files. A node
    takes the state as its own, and the freshness it promises from it (OCSP answers until that
    nextUpdate, `StoreReader.promised_next_update`): a pointer promising more than the CRLs
    signed is refused."""
    st = shipment.state
    last = [f for f in shipment.files if f.this_update == st.this_update]
    if (
        not last
        or st.number != max(f.number for f in shipment.files)
        or st.next_update != min(f.next_update for f in last)
        or (st.base_number and st.base_number not in {f.number for f in shipment.files}
            and not any(f.base_number == st.base_number for f in last))
    ):  # fmt: skip
        raise ShippingError(f"{shipment.issuer}: the pointer's CRL state is not its files'")


@dataclass
class Fetcher:
    """A node without CA keys: fetches the signer's latest CRLs into its directory and store."""

    cluster: Cluster
    bucket: str
    store: Store
    manifest: Manifest
    directory: Path
    replicas: int = 0
    timeout: float = READ_TIMEOUT
    """Seconds one read of the bucket may take (`READ_TIMEOUT`)."""
    seen: dict[str, str] = field(default_factory=dict)
    """Per issuer: the digest of the pointer last handled (unchanged pointers are not read)."""
    keep_days: int = field(kw_only=True)
    """This node's ``crl.keep_days``: a fetched file is kept at least that long from the day
    after it was made, as on the signer (`crlbuilder.crl.publish.prune_crls`)."""

    def fetch(self, now: int) -> list[sf.CrlFileEntry]:
        """Fetch every issuer's newer CRLs; returns the files placed. A shipment that does not
        check out raises `ShippingError` after the others were handled."""
        obs = _bucket(self.cluster, self.bucket, self.replicas, create=False)
        if obs is None:  # the signer shipped nothing yet: nothing to fetch
            return []
        with self.store.read() as r:
            issuers = {i.id: i for i in r.issuers()}
            local = {i.id: r.crl_state(i.index).number for i in issuers.values()}
        placed: list[sf.CrlFileEntry] = []
        errors: list[str] = []
        for iid, meta in issuers.items():
            shipment = self._pointer(obs, iid)
            if shipment is None or shipment.state.number == local[iid]:
                continue
            if shipment.state.number < local[iid]:  # never taken back to an older CRL
                errors.append(
                    f"{iid}: the signer's last CRL number ({shipment.state.number}) is below "
                    f"this node's ({local[iid]}): its CRLs are not taken"
                )
                continue
            with self.store.read() as r:  # the full CRL this node serves already, if listed
                held = [e for e in r.latest_crls(meta.index) if not e.delta]
            files = [
                f
                for f in shipment.files
                if f not in held or not (self.directory / f.path).is_file()
            ]
            try:
                ders = [self._file(obs, f, meta) for f in files]
                _check_state(shipment)
            except ShippingError as err:
                errors.append(str(err))
                continue
            for f, der in zip(files, ders, strict=True):  # a full CRL before its delta
                place_crl(self.directory, iid, f.number, f.delta, der)
            keep_shipment(self.store, meta.index, shipment)
            placed.extend(files)
        prune_crls(self.store, self.directory, now, self.keep_days)
        if errors:
            raise ShippingError("; ".join(errors))
        return placed

    def shipped_numbers(self) -> dict[str, int]:
        """Per issuer of the store, the highest CRL number shipped (``latest/<issuer>``) whose
        file checks out as `fetch` checks it (its digest, its number, the issuer's signature):
        what a signer goes on after (`continue_numbering`). An issuer with nothing shipped is
        not named; a pointer or a file that does not check out raises `ShippingError`."""
        obs = _bucket(self.cluster, self.bucket, self.replicas, create=False)
        if obs is None:
            return {}
        with self.store.read() as r:
            issuers = {i.id: i for i in r.issuers()}
        numbers: dict[str, int] = {}
        for iid, meta in issuers.items():
            shipment = self._pointer(obs, iid)
            if shipment is None or not shipment.files:
                continue
            last = max(shipment.files, key=lambda f: f.number)
            # signed by the generation's own key or its successor's: the store may know of a
            # compromise the last CRL shipped predates (both signed its CRLs at some time)
            self._file(obs, last, meta, any_signer=True)
            numbers[iid] = last.number
        return numbers

    def _pointer(self, obs: ObjectStore, iid: str) -> Shipment | None:
        async def info() -> str | None:
            try:
                i = await obs.get_info(LATEST + iid)
            except nats.js.errors.ObjectNotFoundError:
                return None
            return str(i.digest)

        try:
            digest = self.cluster.run(info(), timeout=self.timeout)
            if digest is None or self.seen.get(iid) == digest:
                return None
            read, raw = self.cluster.run(self._read(obs, LATEST + iid))
        except (nats.errors.Error, TimeoutError, ObjectReadError) as e:
            raise ClusterError(
                f"object store {self.bucket}: {self._why(e, LATEST + iid)}"
            ) from None
        self.seen[iid] = str(read.digest)  # a pointer replaced since `info` is the one read
        try:
            shipment = msgspec.json.decode(raw, type=Shipment)
        except msgspec.DecodeError as e:
            raise ShippingError(f"{LATEST}{iid}: not a shipment ({e})") from None
        if shipment.issuer != iid or any(f.issuer != iid for f in shipment.files):
            raise ShippingError(f"{LATEST}{iid}: names another issuer")
        return shipment

    def _file(
        self, obs: ObjectStore, e: sf.CrlFileEntry, meta: sf.IssuerMeta, *, any_signer: bool = False
    ) -> bytes:
        """One shipped file, checked against its entry and its issuer's certificate (with
        ``any_signer``, the generation's own certificate or its successor's, either)."""
        expected = (
            Path("archive") / e.issuer / f"{e.number:08d}-{'delta' if e.delta else 'full'}.crl"
        )
        if Path(e.path) != expected:
            raise ShippingError(f"{e.issuer} CRL {e.number}: unexpected path {e.path!r}")

        try:
            _, der = self.cluster.run(self._read(obs, e.path))
        except nats.js.errors.ObjectNotFoundError:
            raise ShippingError(f"{e.issuer} CRL {e.number}: file not in the bucket") from None
        except (nats.errors.Error, TimeoutError, ObjectReadError) as err:
            raise ClusterError(f"object store {self.bucket}: {self._why(err, e.path)}") from None
        if len(der) != e.size or hashlib.sha256(der).hexdigest() != e.sha256:
            raise ShippingError(f"{e.issuer} CRL {e.number}: bytes differ from the shipment")
        try:
            parsed = parse_crl(der)
            if parsed.number != e.number or (parsed.delta_base is not None) != e.delta:
                raise CrlError("its number or kind is not the shipment's")
            if (
                int(parsed.this_update.timestamp()) != e.this_update
                or parsed.next_update is None
                or int(parsed.next_update.timestamp()) != e.next_update
                or (parsed.delta_base or 0) != e.base_number
            ):  # the freshness a node promises comes from them (`StoreReader.promised_next_update`)
                raise CrlError("its thisUpdate, nextUpdate or base is not the shipment's")
            certs = self._signer_certs(meta) if any_signer else [self._signer_cert(meta)]
            for i, cert in enumerate(certs):
                try:
                    verify_crl_signature(parsed, cert)
                    break
                except CrlError:
                    if i == len(certs) - 1:
                        raise
        except CrlError as err:
            raise ShippingError(f"{e.issuer} CRL {e.number}: {err}") from None
        return der

    def _read(self, obs: ObjectStore, name: str) -> Coroutine[Any, Any, tuple[ObjectInfo, bytes]]:
        return read_object(self.cluster.js, obs, self.bucket, name, idle=self.timeout)

    def _why(self, e: Exception, name: str) -> str:
        """The error's message, or for the bound of `Cluster.run` (which has none) what it was."""
        return str(e) or f"{name}: no answer within {self.timeout:g} s"

    def _signer_certs(self, meta: sf.IssuerMeta) -> list[x509.Certificate]:
        """Every certificate a CRL of ``meta`` was ever signed under: its own CA certificate
        and, when the manifest names one, the successor certificate."""
        files = self.manifest.issuer(meta.id)
        rels = [files.cert, *([files.successor_cert] if files.successor_cert else [])]
        return [x509.load_pem_x509_certificate(self.manifest.path(r).read_bytes()) for r in rels]

    def _signer_cert(self, meta: sf.IssuerMeta) -> x509.Certificate:
        """The certificate a CRL of ``meta`` verifies with: its own CA certificate, or after a
        compromise the successor certificate (this generation's name, the successor's key)."""
        files = self.manifest.issuer(meta.id)
        rel = files.successor_cert if meta.compromised_at and files.successor_cert else files.cert
        return x509.load_pem_x509_certificate(self.manifest.path(rel).read_bytes())
