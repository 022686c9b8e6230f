"""Harness of `test_order_permutations`: one holder's records applied in every arrival order.

Each arrival order gets its own holder (and serials) in one store, so that one `Applier` run
applies them all: the rules read and write one holder's state only. The outcome of an order
is what each certificate of its holder ends as (revoked or not, category, revocation instant)
and which records were refused; it is compared with the outcome of the records applied in the
order they were made (`made_order`).

Records arrive in stages (`Run.clocks`): a record arrives in the first stage whose clock has
reached its ``recorded_at`` (never before it is recorded), in the order's sequence; each stage
is one builder run at that clock, then its sweep of due lapses (`Applier.sweep_lapses`).

Where an order may differ because of a limit docs/records.md documents ("Arrival order: what
stands as it was written"), `limits` names it, with the way it may differ.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import msgspec

from crlbuilder import rules
from crlbuilder.apply import Applier
from crlbuilder.ingest import read_file
from crlbuilder.model import Category
from crlbuilder.store import format as sf
from tests.support.store import Dump, dump_store
from tests.test_apply import FACTS, INDEX, KEY, T0, World, ts
from tests.test_lapse_time import FakeClock

SIGN = "sign-card-g2"
AUTH = "auth-card-g1"

TAKES: dict[str, frozenset[str]] = {
    "F": frozenset("S"),
    "D:death": frozenset("SA"),
    "D:ex-officio": frozenset("SA"),
    "D:move-out": frozenset("S"),
    "D:abroad-move-out": frozenset("S"),
}
"""The card families (``S`` sign, ``A`` auth) a change takes at once (Act §12(1)(2), §31(1))."""

FAMILY: dict[str, str] = {"S": "S", "A": "A", "B": "A"}
"""The card family of each issuance kind: ``B`` is a second auth-card certificate (its own
serial), issued once the first lost effect (Act §25)."""


def day(d: float) -> datetime:
    return T0 + timedelta(days=d)


@dataclass(frozen=True)
class Rec:
    """One record of a scenario. ``made``: the day the act was made (a notice's ``notified_at``,
    else its ``recorded_at``), the order the law judges by; ``recorded``: its ``recorded_at``."""

    kind: str
    """``S``, ``A``, ``B`` (issuances; ``B`` a second auth-card one), ``O``, ``OA`` (move-out notices), ``I`` (move-in notice), ``F``
    (fact change), ``D:<cause>`` (record deletion)."""
    made: float
    recorded: float
    planned: float | None = None

    @property
    def name(self) -> str:
        to = f">{self.planned:g}" if self.planned is not None else ""
        late = f"~{self.recorded:g}" if self.recorded - self.made > 1 else ""
        return f"{self.kind}@{self.made:g}{to}{late}"

    @property
    def issuance(self) -> bool:
        return self.kind in FAMILY

    @property
    def notice(self) -> bool:
        return self.kind in ("O", "OA", "I")

    @property
    def due(self) -> datetime | None:
        """A move-out notice's lapse instant (Act §31(2))."""
        if self.planned is None:
            return None
        return rules.move_out_lapse(day(self.planned).date())

    def body(self, holder: str, base: int) -> dict[str, object]:
        head = {"recorded_at": ts(self.recorded), "holder": holder}
        if self.kind == "S":
            return {"type": "issuance", **head, "serial": base + 1, "family": "sign-card",
                    "issuer": SIGN, "not_before": ts(self.made),
                    "not_after": ts(self.made + 900), "facts": FACTS}  # fmt: skip
        if self.kind in ("A", "B"):
            serial = base + (2 if self.kind == "A" else 3)
            return {"type": "issuance", **head, "serial": serial, "family": "auth-card",
                    "issuer": AUTH, "not_before": ts(self.made),
                    "not_after": ts(self.made + 1400)}  # fmt: skip
        change: dict[str, object] = {"type": "resident-change", **head}
        if self.notice:
            change["notified_at"] = ts(self.made)
        if self.kind == "I":
            return {**change, "change": "move-in-notice"}
        if self.kind in ("O", "OA"):
            assert self.planned is not None
            return {**change, "change": "move-out-notice", "abroad": self.kind == "OA",
                    "planned_date": day(self.planned).date().isoformat()}  # fmt: skip
        if self.kind == "F":
            return {**change, "change": "fact-change", "fact": "address"}
        return {**change, "change": "record-deletion", "cause": self.kind.split(":", 1)[1]}


def sign(d: float) -> Rec:
    """A sign-card issuance (validity short of any auth-card bound, Ord §13(2))."""
    return Rec("S", d, d)


def auth(d: float) -> Rec:
    return Rec("A", d, d)


def second_auth(d: float) -> Rec:
    """A second auth-card issuance (``B``), made when the first (``A``) lost effect (Act §25)."""
    return Rec("B", d, d)


def move_out(made: float, planned: float, *, abroad: bool = False, lag: float = 0.5) -> Rec:
    return Rec("OA" if abroad else "O", made, made + lag, planned)


def move_in(made: float, lag: float = 0.5) -> Rec:
    return Rec("I", made, made + lag)


def deletion(d: float, cause: str) -> Rec:
    return Rec(f"D:{cause}", d, d)


def fact_change(d: float) -> Rec:
    return Rec("F", d, d)


Cert = tuple[bool, str, int]
"""A certificate's end: revoked, category, revocation instant (epoch seconds)."""


@dataclass(frozen=True)
class Outcome:
    certs: dict[str, Cert]
    """By issuance kind (``S``, ``A``, ``B``), each certificate the scenario issues and the store knows."""
    refused: tuple[str, ...]


def made_order(recs: Sequence[Rec]) -> tuple[int, ...]:
    """The order the records were made; an issuance made at a change's instant first (the change
    takes the certificates issued no later than it)."""
    return tuple(sorted(range(len(recs)), key=lambda i: (recs[i].made, not recs[i].issuance, i)))


@dataclass
class Run:
    """Every arrival order of ``recs`` (or ``orders``), the made order first, in one store."""

    world: World
    name: str
    recs: Sequence[Rec]
    clocks: Sequence[datetime]
    orders: list[tuple[int, ...]]
    batch_size: int = 1000
    paths: list[Path] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        world: World,
        name: str,
        recs: Sequence[Rec],
        clocks: Sequence[datetime],
        *,
        batch_size: int = 1000,
        orders: Sequence[tuple[int, ...]] | None = None,
    ) -> Run:
        """Every arrival order of ``recs``, or only ``orders`` (a scenario too long for all)."""
        assert len({r.name for r in recs}) == len(recs)
        assert all(day(r.recorded) <= clocks[-1] for r in recs)
        ref = made_order(recs)
        every = itertools.permutations(range(len(recs))) if orders is None else orders
        rest = [o for o in every if o != ref]
        return cls(world, name, recs, clocks, [ref, *rest], batch_size)

    def holder(self, k: int) -> str:
        return hashlib.sha256(f"{self.name}/{self.orders[k]}".encode()).hexdigest()

    def base(self, k: int) -> int:
        """The order's serials (base + 1 sign, base + 2 and 3 auth): its own, as its holder is."""
        return int(self.holder(k)[:15], 16) * 10

    def stage_of(self, r: Rec) -> int:
        return next(s for s, c in enumerate(self.clocks) if day(r.recorded) <= c)

    def apply(self) -> None:
        for stage, clock in enumerate(self.clocks):
            lines = []
            for k, order in enumerate(self.orders):
                holder = self.holder(k)
                for i in order:
                    r = self.recs[i]
                    if self.stage_of(r) == stage:
                        body = r.body(holder, self.base(k))
                        body["id"] = f"{holder[:16]}-{r.name}"
                        lines.append(msgspec.json.encode(body) + b"\n")
            path = self.world.tmp / f"{self.name}-{stage}.jsonl"
            path.write_bytes(b"".join(lines))
            self.paths.append(path)
            self.run(path, clock)

    def run(self, path: Path, clock: datetime) -> None:
        ap = Applier(self.world.store, facts_key=KEY, quarantine=self.world.quarantine,
                     batch_size=self.batch_size, clock=FakeClock(clock),
                     published=True)  # fmt: skip
        ap.run(read_file(path))
        ap.sweep_lapses(clock)

    def replay(self) -> None:
        """Every stage's input again, at the last clock (a builder restarted on old input)."""
        for path in self.paths:
            self.run(path, self.clocks[-1])

    def outcome(self, k: int, quarantined: list[dict[str, object]]) -> Outcome:
        base = self.base(k)
        certs: dict[str, Cert] = {}
        with self.world.store.read() as r:
            for issuer, off, tag in ((SIGN, 1, "S"), (AUTH, 2, "A"), (AUTH, 3, "B")):
                st = r.status(sf.status_key(INDEX[issuer], base + off))
                if st is not None:
                    cat = Category.from_code(st.category).value if st.category else ""
                    certs[tag] = (st.revoked, cat, st.revoked_at)
        prefix = self.holder(k)[:16] + "-"
        refused = tuple(
            sorted(
                str(q["id"]).removeprefix(prefix)
                for q in quarantined
                if str(q.get("id", "")).startswith(prefix)
            )
        )
        return Outcome(certs, refused)

    def outcomes(self) -> list[Outcome]:
        quarantined = self.world.quarantined()
        return [self.outcome(k, quarantined) for k in range(len(self.orders))]

    def label(self, k: int) -> str:
        return " ".join(self.recs[i].name for i in self.orders[k])

    # --- the documented limits ------------------------------------------------------------

    def triggers(self, order: Sequence[int], o: int) -> list[int]:
        """Arrival positions from which the lapse of move-out ``o`` may have been written (the
        record at that position and the later ones find it): a record after it made (or, not
        a notice, recorded) once the lapse was due, arriving at a clock past it
        (`Applier._lapse_if_due`); ``o`` itself, arriving after a move-out made once its lapse
        was due (`Applier._lapse_earlier`); a sweep (after the last record of a stage) whose
        clock is past it."""
        due = self.recs[o].due
        assert due is not None
        pos = {i: p for p, i in enumerate(order)}
        out = [
            pos[i]
            for i in order
            if pos[i] > pos[o]
            and day(self.recs[i].made) >= due
            and self.clocks[self.stage_of(self.recs[i])] >= due
        ]
        if any(
            r.due is not None and pos[i] < pos[o] and day(r.made) >= due
            for i, r in enumerate(self.recs)
        ):
            out.append(pos[o] + 1)
        for stage, clock in enumerate(self.clocks):
            arrived = [pos[i] for i in order if self.stage_of(self.recs[i]) <= stage]
            if clock >= due and pos[o] in arrived:
                out.append(max(arrived) + 1)
        return out

    def limits(self, k: int, tag: str, got: Cert, ref: Cert) -> set[str]:
        """The documented limits (docs/records.md) that explain certificate ``tag`` ending as
        ``got`` in arrival order ``k`` where the made order ends it as ``ref``."""
        order = self.orders[k]
        recs = self.recs
        pos = {i: p for p, i in enumerate(order)}
        issued = next(i for i, r in enumerate(recs) if r.kind == tag)
        why: set[str] = set()
        for o, out in enumerate(recs):
            if out.due is None or not (t := self.triggers(order, o)):
                continue
            first = min(t)
            notice = rules.MoveOutNotice(day(out.made), day(out.planned or 0).date(), False)
            # written before a notice that ended its clock in time arrived: it stands (Act
            # §34(1)(2)): the auth-card certificate is revoked by the lapse, when written
            if (
                FAMILY[tag] == "A"
                and got[:2] == (True, Category.RESIDENT_CHANGE.value)
                and got != ref
                and any(
                    n != o
                    and m.notice
                    and pos[n] >= first
                    and rules.ends_before_lapse(notice, day(m.made))
                    for n, m in enumerate(recs)
                )
            ):
                why.add("lapse-written-before-the-notice-that-ended-it")
        # only the latest `MAX_MOVE_INS` move-in notices made are kept: a move-out record read
        # after that many move-ins made after the notice that followed it (which may then be
        # dropped, with what it ended) is judged by those, and lapses
        follow = [
            (o, m)
            for o, out in enumerate(recs)
            if out.due is not None
            for m in recs
            if m is not out
            and m.notice
            and rules.ends_before_lapse(
                rules.MoveOutNotice(day(out.made), day(out.planned or 0).date(), False),
                day(m.made),
            )
        ]
        if (
            FAMILY[tag] == "A"
            and got[:2] == (True, Category.RESIDENT_CHANGE.value)
            and got != ref
            and any(
                sum(
                    j.kind == "I" and j.made > m.made and pos[i] < pos[o]
                    for i, j in enumerate(recs)
                )
                >= sf.MAX_MOVE_INS
                for o, m in follow
            )
        ):
            why.add("more-move-ins-than-kept")
        # a deletion on a 国外転出届 read when that notice was not the pending one (its record
        # not arrived, or another move-out's in its place): its window is unknown, and the
        # sign-card certificate issued in it is revoked (Act §12(2) would spare it)
        if tag == "S" and got[0] and not ref[0]:
            for d, gone in enumerate(recs):
                if gone.kind != "D:abroad-move-out":
                    continue
                for o, out in enumerate(recs):
                    if (
                        out.kind == "OA"
                        and out.made <= recs[issued].made <= (out.planned or 0)
                        and (
                            pos[o] > pos[d]
                            or any(
                                n != o and r.due is not None and pos[o] < pos[n] < pos[d]
                                for n, r in enumerate(recs)
                            )
                        )
                    ):
                        why.add("abroad-deletion-read-without-its-notice")
        # the first revocation written stands, with its instant: a change recorded earlier
        # whose record comes later does not re-date it (in this order or in the made order,
        # where a lapse written late may come first)
        takers = sum(
            1 for r in recs if FAMILY[tag] in TAKES.get(r.kind, "") and recs[issued].made <= r.made
        )
        if FAMILY[tag] == "A":
            takers += sum(1 for r in recs if r.due is not None and day(recs[issued].made) < r.due)
        if got[:2] == ref[:2] and got[0] and takers >= 2:
            why.add("revocation-not-redated")
        return why


def dump(world: World) -> Dump:
    return dump_store(world.store, meta=(), skip=[sf.DB_QUARANTINE])
