"""POST /v1/watch and GET /v1/changes in process: the changes feed (現況確認 at scale, Act
§18(1), §37(1)) through the /v1 dispatcher, over a `MemoryReader` and a `MemoryWatchSet`;
nothing here starts a process."""

from __future__ import annotations

import asyncio
import base64
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization

from crlbuilder.model import Category, Family, Reason
from crlbuilder.store import format as sf
from crlbuilder.store.memory import MemoryReader
from crlbuilder.store.reader import changes_start
from responder.config import ClusterConfig, LedgerConfig, ResponderConfig, WatchConfig
from responder.http import Request, Response
from responder.registry.vocabulary import Method, Service
from responder.signing import SigningPool
from responder.v1 import changes, cursor
from responder.v1.route import Context
from responder.v1.routes import THREAD_BYTES, Done, V1Api
from responder.v1.watchset import MemoryWatchSet
from tests.support.pki import Ca, make_ca, rsa_key
from tests.support.written import written
from tests.test_policy import NOW, SIG, USR, build, party_table
from tests.test_v1_status import AC, SC, Ledger, Quotas, record, registry

STORE_ID = b"S" * 16
HOLDER = b"h" * 32
REVOKED_AT = int(NOW) - 7200
COMMITTED = {3: int(NOW) - 9000, 5: int(NOW) - 3600, 6: int(NOW) - 600}
A, B, C, D, QUIET = 0x21, 0x22, 0x23, 0x24, 0x25
"""Serials: A, B, C lose effect (sign-card), D an auth-card one; QUIET stays good."""


@pytest.fixture(scope="module")
def cas() -> dict[int, Ca]:
    key = rsa_key()
    return {SC: make_ca("sign-card-g1 CA", key), AC: make_ca("auth-card-g1 CA", key)}


def _revoked(family: Family, category: Category = Category.REQUEST) -> sf.StatusRecord:
    return record(
        sf.STATE_REVOKED, family, revoked_at=REVOKED_AT, reason=Reason.KEY_COMPROMISE,
        category=category.code,
    )  # fmt: skip


def store(cas: dict[int, Ca], **kw: Any) -> MemoryReader:
    """Commit 3 revoked A; commit 5 revoked B and C; commit 6 revoked auth-card D."""
    fams = {SC: Family.SIGN_CARD, AC: Family.AUTH_CARD}
    fields: dict[str, Any] = {
        "issuer_table": [
            sf.IssuerMeta(
                index=i,
                id=f"{fams[i].value}-g1",
                family=fams[i],
                generation=1,
                cert_der=ca.cert.public_bytes(serialization.Encoding.DER),
            )
            for i, ca in cas.items()
        ],
        "status_records": {
            sf.status_key(SC, A): _revoked(Family.SIGN_CARD),
            sf.status_key(SC, B): _revoked(Family.SIGN_CARD, Category.RESIDENT_CHANGE),
            sf.status_key(SC, C): _revoked(Family.SIGN_CARD),
            sf.status_key(AC, D): _revoked(Family.AUTH_CARD),
            sf.status_key(SC, QUIET): record(sf.STATE_GOOD, Family.SIGN_CARD),
        },
        "lost": [
            (3, sf.status_key(SC, A)),
            (5, sf.status_key(SC, B)),
            (5, sf.status_key(SC, C)),
            (6, sf.status_key(AC, D)),
        ],
        "commit_times": dict(COMMITTED),
        "commit": 7,
        "last_committed_at": int(NOW) - 60,
        "ident": STORE_ID,
        "horizon": 2,
    }
    fields.update(kw)
    return MemoryReader(**fields)


def ref(index: int, serial: int) -> dict[str, str]:
    return {"issuer": {SC: "sign-card-g1", AC: "auth-card-g1"}[index], "serial": f"{serial:x}"}


def at(commit: int) -> str:
    """The cursor after every change of ``commit`` in the test store, as issued before
    cursors were bound to their party (version 1: still read, `cursor.unseal`)."""
    return cursor.encode(STORE_ID, changes_start(commit))


def after(commit: int) -> cursor.Position:
    """The position after every change of ``commit`` in the test store."""
    return cursor.Position(STORE_ID, changes_start(commit))


class Api:
    def __init__(
        self,
        reader: MemoryReader,
        tmp: Path,
        *,
        nats: str = "",
        secret_file: Path | None = None,
        **watch: int,
    ) -> None:
        self.ledger = Ledger()
        self.reader = reader
        self.registry = registry()
        config = ResponderConfig(
            ledger=LedgerConfig(dir=tmp / "ledger"),
            watch=WatchConfig(secret_file=secret_file, **watch),  # type: ignore[arg-type]
            cluster=ClusterConfig(nats=nats),
        )  # fmt: skip
        self.config = config
        self.watchset = MemoryWatchSet()
        changes.setup(config).watchset = self.watchset  # the env both routes share
        self.api = V1Api(
            (changes.WATCH_ROUTE, changes.CHANGES_ROUTE), config, store=reader, quota=Quotas(),
            ledger=self.ledger, signer=None,
        )  # fmt: skip

    def _send(self, req: Request) -> tuple[Response, Any]:
        resp = written(self.api.handle(req, self.registry, NOW))
        return resp, msgspec.json.decode(bytes(resp.body))

    def watch(self, party: str = "sig", **body: object) -> tuple[Response, Any]:
        headers = {
            b"content-type": b"application/json",
            b"authorization": f"Bearer {party}".encode(),
        }
        req = Request(
            b"POST", b"/v1/watch", headers, msgspec.json.encode(body), ("127.0.0.1", 1), None,
            b"1.1", True, 1,
        )  # fmt: skip
        return self._send(req)

    def key(self) -> bytes:
        """The cursors' key (`WatchEnv.cursor_key`: from the watch secret under tmp)."""
        key = changes.setup(self.config).cursor_key()
        assert key is not None
        return key

    def generation(self, party: str) -> bytes:
        """The party's list generation as a read sees it now (`changes._Receivable`: the
        families it may not receive folded in)."""
        ctx = Context(self.registry.parties[party], self.reader, NOW)
        issuers = changes._issuers(self.reader, ctx)
        return changes._receivable(self.watchset, issuers).generation(party)

    def read(self, text: str, party: str = "sig") -> cursor.Bound:
        """Where a cursor of an answer reads from and its counted mark (it is bound to
        ``party``); whether its watch list generation is the list's is asserted."""
        got = cursor.unseal(self.key(), party, text)
        assert isinstance(got, cursor.Bound) and got.bound, got
        assert got.gen == self.generation(party)
        if isinstance(got.position, cursor.Position):  # anchored in the store as it is
            assert got.anchors == (
                cursor.anchor(self.reader, got.position),
                cursor.anchor(self.reader, got.mark),
            ), got
        return got._replace(gen=bytes(cursor.GEN_BYTES), anchors=None)

    def sealed(self, start: bytes, mark: bytes | None = None, party: str = "sig") -> str:
        """A bound cursor of the test store at ``start``, counted up to ``mark`` (or it), of
        the party's watch list as it is now, anchored in the store as it is now."""
        here = cursor.Position(STORE_ID, start)
        upto = cursor.Position(STORE_ID, mark) if mark is not None else here
        gen = self.generation(party)  # of the list as it is now
        anchors = (cursor.anchor(self.reader, here), cursor.anchor(self.reader, upto))
        return cursor.seal(self.key(), party, cursor.Bound(here, upto, gen=gen, anchors=anchors))

    def changes(self, query: str, party: str = "sig") -> tuple[Response, Any]:
        headers = {b"authorization": f"Bearer {party}".encode()}
        target = b"/v1/changes" + (b"?" + query.encode() if query else b"")
        req = Request(b"GET", target, headers, b"", ("127.0.0.1", 1), None, b"1.1", True, 1)
        return self._send(req)


def test_watched_losses_after_the_cursor_with_category_and_article(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    api = Api(store(cas), tmp_path)
    resp, got = api.watch(add=[ref(SC, A), ref(SC, B), ref(SC, QUIET)])
    assert resp.status == 200, got
    assert got == {
        "added": 3,
        "already": 0,
        "removed": 0,
        "absent": 0,
        "watching": 3,
        "refused": [],
    }
    assert api.ledger.counted == []  # registering says nothing of a status: not a provision
    resp, got = api.changes(f"cursor={at(3)}")
    assert resp.status == 200, got
    (change,) = got["changes"]  # A was before the cursor, C is not watched, QUIET never lost
    assert change == {
        "issuer": "sign-card-g1", "serial": f"{B:X}", "commit": 5,
        "committedAt": msgspec.json.decode(msgspec.json.encode(changes._at(COMMITTED[5]))),
        "status": "revoked", "family": "sign-card",
        "revokedAt": msgspec.json.decode(msgspec.json.encode(changes._at(REVOKED_AT))),
        "reason": "keyCompromise", "category": "resident-change",
        "article": Category.RESIDENT_CHANGE.articles[Family.SIGN_CARD],
    }  # fmt: skip
    assert api.read(got["cursor"]).position == after(7) and got["more"] is False
    assert got["store"]["commit"] == 7
    # 帳簿 (Act §40): one provision per change delivered, under its family's service
    assert api.ledger.counted == [("sig", Service.SIGN_REVOCATION_INFO, Method.JSON, 1)]
    resp, got = api.changes(f"cursor={got['cursor']}")
    assert got["changes"] == [] and api.read(got["cursor"]).position == after(7)
    assert len(api.ledger.counted) == 1  # a read that delivers nothing provides nothing


def test_a_party_without_a_cursor_gets_the_current_one_and_no_change(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    api = Api(store(cas), tmp_path)
    api.watch(add=[ref(SC, A)])
    resp, got = api.changes("")
    assert resp.status == 200 and got["changes"] == []
    assert api.read(got["cursor"]) == cursor.Bound(after(7), after(7))
    assert api.ledger.counted == []


def test_families_the_party_may_not_receive_are_refused_per_entry_act_37_1(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    api = Api(store(cas), tmp_path)
    resp, got = api.watch(add=[ref(SC, A), ref(AC, D)])
    assert resp.status == 200
    assert got["added"] == 1 and got["watching"] == 1
    assert got["refused"] == [{"index": 1, "rule": "unauthorized_service", "article": "Act §37(1)"}]
    assert api.watchset.lists == {"sig": {sf.status_key(SC, A)}}
    # a change of a family the agreement no longer covers is not delivered either
    api.watchset.lists["sig"].add(sf.status_key(AC, D))
    resp, got = api.changes(f"cursor={at(2)}")
    assert [c["serial"] for c in got["changes"]] == [f"{A:X}"]
    assert api.ledger.counted == [("sig", Service.SIGN_REVOCATION_INFO, Method.JSON, 1)]
    # a party holding both titles gets both, each counted under its own service
    resp, got = api.watch("both", add=[ref(SC, C), ref(AC, D)])
    assert got["added"] == 2 and got["refused"] == []
    resp, got = api.changes(f"cursor={at(2)}", party="both")
    assert [(c["family"], c["article"]) for c in got["changes"]] == [
        ("sign-card", "Act §11"), ("auth-card", "Act §30"),
    ]  # fmt: skip
    assert set(api.ledger.counted[1:]) == {
        ("both", Service.SIGN_REVOCATION_INFO, Method.JSON, 1),
        ("both", Service.AUTH_REVOCATION_INFO, Method.JSON, 1),
    }


def test_a_family_suspended_is_passed_over_and_every_answer_says_so(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """During an auth-only suspension (Act §37(4)) the cursor moves past the auth changes:
    they are never delivered after the party is resumed, so the answer must say which
    families it passed over, or the party goes on believing a revoked certificate good."""
    api = Api(store(cas), tmp_path)
    api.watch("both", add=[ref(SC, C), ref(AC, D)])
    since = datetime(2025, 1, 1, tzinfo=UTC)
    suspended = {"article": "Act §37(4)(1)", "since": since, "reason": "test"}
    api.registry = build(party_table("both", {SIG, USR}, suspension=[suspended]))
    resp, got = api.changes(f"cursor={at(2)}", party="both")
    assert resp.status == 200, got
    assert [c["family"] for c in got["changes"]] == ["sign-card"]  # D (auth-card) withheld
    assert got["passedOver"] == [
        {"family": "auth-card", "rule": "suspended", "article": "Act §37(4)(1)"}
    ]
    assert api.ledger.counted == [("both", Service.SIGN_REVOCATION_INFO, Method.JSON, 1)]
    # resumed: nothing passed over; D is not delivered again (the cursor is past it)
    api.registry = registry()
    resp, got = api.changes(f"cursor={got['cursor']}", party="both")
    assert got["changes"] == [] and got["passedOver"] == []
    # a family the agreement never covered is not passed over: it is not the party's
    resp, got = api.changes(f"cursor={at(2)}")
    assert got["passedOver"] == []


def test_a_change_passed_over_then_delivered_from_an_older_cursor_is_counted(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """A change passed over during a suspension (提供の停止, Act §18(6)) was never delivered:
    the counted mark of a read made then moves past it (to the auth change after it, which
    was delivered), but covers only what that read could deliver. Once resumed, the party
    reads from its older cursor (it kept it): the sign change comes for the first time and is
    one provision (帳簿, Act §40; 件数, Ord §71(4)). It went uncounted: the node's mark, made
    during the suspension, covered it."""
    api = Api(store(cas), tmp_path)
    api.watch("both", add=[ref(SC, C), ref(AC, D)])  # C lost effect in commit 5, D in 6
    since = datetime(2025, 1, 1, tzinfo=UTC)
    suspended = {"article": "Act §18(6)(1)", "since": since, "reason": "test"}
    api.registry = build(party_table("both", {SIG, USR}, suspension=[suspended]))
    start = api.sealed(changes_start(2), party="both")
    resp, got = api.changes(f"cursor={start}", party="both")
    assert resp.status == 200, got
    assert [c["serial"] for c in got["changes"]] == [f"{D:X}"]  # C (sign-card) passed over
    assert [p["family"] for p in got["passedOver"]] == ["sign-card"]
    assert api.ledger.counted == [("both", Service.AUTH_REVOCATION_INFO, Method.JSON, 1)]
    api.registry = registry()  # resumed
    resp, got = api.changes(f"cursor={start}", party="both")
    assert [c["serial"] for c in got["changes"]] == [f"{C:X}", f"{D:X}"]
    sign = [c for c in api.ledger.counted if c[1] is Service.SIGN_REVOCATION_INFO]
    assert sign == [("both", Service.SIGN_REVOCATION_INFO, Method.JSON, 1)], api.ledger.counted


def test_a_change_left_out_by_the_agreement_then_taken_in_again_is_counted_when_delivered(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """The same for an agreement (取決め) amended to leave out the sign service of a party
    holding both titles, then amended back: the sign change skipped meanwhile (not passed
    over: the agreement did not cover it then) is a first provision when delivered from the
    older cursor the party kept."""
    api = Api(store(cas), tmp_path)
    api.watch("both", add=[ref(SC, C), ref(AC, D)])
    api.registry = build(party_table("both", {SIG, USR}, services=["auth-revocation-info"]))
    start = api.sealed(changes_start(2), party="both")
    resp, got = api.changes(f"cursor={start}", party="both")
    assert resp.status == 200, got
    assert [c["serial"] for c in got["changes"]] == [f"{D:X}"] and got["passedOver"] == []
    api.registry = registry()  # amended back
    _, got = api.changes(f"cursor={start}", party="both")
    assert [c["serial"] for c in got["changes"]] == [f"{C:X}", f"{D:X}"]
    sign = [c for c in api.ledger.counted if c[1] is Service.SIGN_REVOCATION_INFO]
    assert sign == [("both", Service.SIGN_REVOCATION_INFO, Method.JSON, 1)], api.ledger.counted


def test_a_change_of_a_title_lost_then_regained_is_counted_when_delivered(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """The same for a party that lost its 署名検証者 title (its notification withdrawn) and
    was notified again: the sign change skipped meanwhile is a first provision when
    delivered from the older cursor it kept."""
    api = Api(store(cas), tmp_path)
    api.watch("both", add=[ref(SC, C), ref(AC, D)])
    api.registry = build(party_table("both", {USR}))
    start = api.sealed(changes_start(2), party="both")
    resp, got = api.changes(f"cursor={start}", party="both")
    assert resp.status == 200, got
    assert [c["serial"] for c in got["changes"]] == [f"{D:X}"] and got["passedOver"] == []
    api.registry = registry()  # notified again
    _, got = api.changes(f"cursor={start}", party="both")
    assert [c["serial"] for c in got["changes"]] == [f"{C:X}", f"{D:X}"]
    sign = [c for c in api.ledger.counted if c[1] is Service.SIGN_REVOCATION_INFO]
    assert sign == [("both", Service.SIGN_REVOCATION_INFO, Method.JSON, 1)], api.ledger.counted


def test_limit_stops_inside_a_commit_and_the_next_read_goes_on_without_loss_or_repeat(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    api = Api(store(cas), tmp_path)
    api.watch(add=[ref(SC, A), ref(SC, B), ref(SC, C)])
    seen: list[str] = []
    query = f"cursor={at(2)}&limit=2"
    _, got = api.changes(query)
    seen += [c["serial"] for c in got["changes"]]
    assert got["more"] is True and len(seen) == 2  # A (commit 3) and B (commit 5)
    _, got = api.changes(f"cursor={got['cursor']}&limit=2")
    seen += [c["serial"] for c in got["changes"]]
    assert got["more"] is False and api.read(got["cursor"]).position == after(7)
    assert seen == [f"{A:X}", f"{B:X}", f"{C:X}"]


def test_scan_limit_bounds_a_read_after_a_mass_revocation(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    api = Api(store(cas), tmp_path, scan_limit=2)
    api.watch(add=[ref(SC, C)])
    _, got = api.changes(f"cursor={at(2)}")
    assert got["changes"] == [] and got["more"] is True  # A and B examined, neither watched
    _, got = api.changes(f"cursor={got['cursor']}")
    assert [c["serial"] for c in got["changes"]] == [f"{C:X}"] and got["more"] is True
    _, got = api.changes(f"cursor={got['cursor']}")
    assert got["changes"] == [] and got["more"] is False
    assert api.read(got["cursor"]).position == after(7)


def test_a_change_whose_record_was_erased_is_no_longer_provided_ord_70(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """A revocation record past its retention is erased (Ord §70(1)(iii)) and no longer
    provided (Act §18(1): 保存期間が経過していない records only): the feed entry of its loss of
    effect (kept for ``store.changes_keep_days``, which need not be shorter than a retention
    period) no longer delivers it, nor counts it in the 帳簿. Erased with its time kept
    (``crl.erased_answer = "revoked"``), it is delivered as ``POST /v1/status`` answers it."""
    base = store(cas)
    erased = dict(base.status_records)
    erased[sf.status_key(SC, A)] = record(sf.STATE_ERASED, Family.SIGN_CARD)  # no time kept
    erased[sf.status_key(SC, B)] = record(
        sf.STATE_ERASED, Family.SIGN_CARD, revoked_at=REVOKED_AT
    )  # the time kept
    api = Api(store(cas, status_records=erased), tmp_path)
    api.watch(add=[ref(SC, A), ref(SC, B), ref(SC, C)])
    resp, got = api.changes(f"cursor={at(2)}")
    assert resp.status == 200, got
    assert [(c["serial"], c["status"]) for c in got["changes"]] == [
        (f"{B:X}", "revoked"), (f"{C:X}", "revoked"),
    ]  # fmt: skip
    b = got["changes"][0]
    assert "reason" not in b and "category" not in b and "article" not in b
    assert api.read(got["cursor"]).position == after(7) and got["more"] is False
    assert api.ledger.counted == [("sig", Service.SIGN_REVOCATION_INFO, Method.JSON, 2)]
    # nothing of A is delivered from an older cursor either
    resp, got = api.changes(f"cursor={at(2)}")
    assert f"{A:X}" not in [c["serial"] for c in got["changes"]]


def test_removed_certificates_are_no_longer_delivered(cas: dict[int, Ca], tmp_path: Path) -> None:
    api = Api(store(cas), tmp_path)
    api.watch(add=[ref(SC, B), ref(SC, C)])
    _, got = api.watch(remove=[ref(SC, B), ref(SC, QUIET)])
    assert (got["removed"], got["absent"], got["watching"]) == (1, 1, 1)
    _, got = api.changes(f"cursor={at(2)}")
    assert [c["serial"] for c in got["changes"]] == [f"{C:X}"]


@pytest.mark.parametrize(
    ("reader", "status", "rule"),
    [
        ({"ident": b"T" * 16}, 410, "cursor_expired"),  # another store, or one rebuilt
        ({"horizon": 4}, 410, "cursor_expired"),  # older than the feed's retention
        ({"commit": 2}, 409, "cursor_ahead"),  # a store restored from an older copy
    ],
)
def test_a_cursor_that_cannot_be_served_says_how_to_resynchronise(
    cas: dict[int, Ca], tmp_path: Path, reader: dict[str, Any], status: int, rule: str
) -> None:
    api = Api(store(cas, **reader), tmp_path)
    api.watch(add=[ref(SC, A), ref(SC, B)])
    resp, got = api.changes(f"cursor={at(3)}")
    assert resp.status == status and got["rule"] == rule and got["field"] == "$.cursor"
    assert "POST /v1/status" in got["detail"] and "GET /v1/changes" in got["detail"]
    assert api.ledger.counted == []


def test_a_cursor_at_the_horizon_is_still_served(cas: dict[int, Ca], tmp_path: Path) -> None:
    api = Api(store(cas, horizon=3), tmp_path)
    api.watch(add=[ref(SC, A), ref(SC, B)])
    resp, got = api.changes(f"cursor={at(3)}")
    assert resp.status == 200 and [c["serial"] for c in got["changes"]] == [f"{B:X}"]
    inside = cursor.encode(STORE_ID, sf.change_key(3, sf.status_key(SC, A)) + b"\x00")
    resp, got = api.changes(f"cursor={inside}")  # inside commit 3, now pruned: refused
    assert resp.status == 410


@pytest.mark.parametrize(
    ("start", "why"),
    [
        (bytes(4), "the boundary before commit 0"),
        (sf.change_key(5, sf.status_key(SC, B)) + b"\x01", "inside, not ending in 0x00"),
        (sf.change_key(5, sf.status_key(SC, A)) + b"\x00", "A lost effect at 3, not 5"),
        (sf.change_key(5, sf.status_key(SC, QUIET)) + b"\x00", "QUIET never lost effect"),
    ],
)
def test_a_cursor_this_service_cannot_have_issued_is_400_not_a_resync(
    cas: dict[int, Ca], tmp_path: Path, start: bytes, why: str
) -> None:
    """An altered cursor of this very store is not told to re-read everything (410 says
    "older than the changes kept"): it is bad input naming the query parameter."""
    api = Api(store(cas), tmp_path)
    api.watch(add=[ref(SC, A), ref(SC, B), ref(SC, C)])
    resp, got = api.changes(f"cursor={cursor.encode(STORE_ID, start)}")
    assert resp.status == 400, why
    assert got["rule"] == "bad_input" and got["field"] == "$.cursor"
    assert "cursor was not issued by this service" in got["detail"]
    assert "older than" not in got["detail"] and api.ledger.counted == []
    # the genuine cursor inside commit 5 (after B) is served: C follows
    genuine = cursor.encode(STORE_ID, sf.change_key(5, sf.status_key(SC, B)) + b"\x00")
    resp, got = api.changes(f"cursor={genuine}")
    assert resp.status == 200 and [c["serial"] for c in got["changes"]] == [f"{C:X}"]


@pytest.mark.parametrize(
    "query",
    [
        "cursor=not-a-cursor",
        "cursor=" + base64.urlsafe_b64encode(b"\x02" + b"S" * 20).decode().rstrip("="),
        "limit=0",
        "limit=10001",
        "since=1",
    ],
)
def test_bad_queries_are_400_naming_the_field(
    cas: dict[int, Ca], tmp_path: Path, query: str
) -> None:
    api = Api(store(cas), tmp_path)
    resp, got = api.changes(query)
    assert resp.status == 400 and got["rule"] == "bad_input" and got["field"].startswith("$")
    assert api.ledger.counted == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "$"),
        ({"add": [ref(SC, A)] * 5000, "remove": [ref(SC, B)] * 5001}, "$"),
        ({"add": [ref(SC, A)] * 10_001}, "$.add"),
        ({"add": [ref(SC, A), {"issuer": "sign-card-g9", "serial": "01"}]}, "$.add[1].issuer"),
        ({"add": [{"issuer": "sign-card-g1"}]}, "$.add[0]"),
        ({"add": [{"issuer": "sign-card-g1", "serial": "1" * 41}]}, "$.add[0].serial"),
        ({"add": [ref(SC, A), {"issuer": "sign-card-g1", "serial": "0x1f"}]}, "$.add[1].serial"),
        ({"remove": [{"issuer": "sign-card-g1", "serial": " 1f"}]}, "$.remove[0].serial"),
        ({"add": [{"issuer": "sign-card-g1", "serial": "zz"}]}, "$.add[0].serial"),
        ({"add": [ref(SC, A), {"issuer": "sign-card-g1", "serial": "1f\n"}]}, "$.add[1].serial"),
        ({"add": [{"issuer": "sign-card-g1", "serial": ""}]}, "$.add[0].serial"),
        ({"remove": [{"certificate": "not base64!"}]}, "$.remove[0].certificate"),
        ({"add": [ref(SC, A)], "clear": True}, "$"),
    ],
)
def test_bad_batches_are_400_and_change_nothing(
    cas: dict[int, Ca], tmp_path: Path, body: dict[str, Any], field: str
) -> None:
    api = Api(store(cas), tmp_path)
    resp, got = api.watch(**body)
    assert resp.status == 400 and got["rule"] == "bad_input" and got["field"] == field, got
    assert api.watchset.lists == {} and api.ledger.counted == []


def test_a_batch_past_the_bound_is_409_and_changes_nothing(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    api = Api(store(cas), tmp_path, max_per_party=2)
    api.watch(add=[ref(SC, A)])
    resp, got = api.watch(add=[ref(SC, B), ref(SC, C)])
    assert resp.status == 409 and got["rule"] == "watch_full" and got["field"] == "$.add"
    assert api.watchset.lists == {"sig": {sf.status_key(SC, A)}}
    resp, got = api.watch(add=[ref(SC, B), ref(SC, A)])  # one new, one already: fits
    assert (resp.status, got["added"], got["already"], got["watching"]) == (200, 1, 1, 2)


def test_a_certificate_given_whole_is_watched_by_its_issuer_and_serial(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    api = Api(store(cas), tmp_path)
    der = cas[SC].issue("holder", rsa_key(), serial=B).public_bytes(serialization.Encoding.DER)
    resp, got = api.watch(add=[{"certificate": base64.b64encode(der).decode()}])
    assert resp.status == 200 and got["added"] == 1
    assert api.watchset.lists == {"sig": {sf.status_key(SC, B)}}


def test_every_batch_is_applied_in_the_batch_thread_not_on_the_event_loop(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """On one node too, a batch is resolved and written in the worker's batch thread (the
    loop serves OCSP and the other connections meanwhile): the dispatcher gives a future, and
    the lists are written from another thread; a small one as well, since the lists' write
    lock it takes may be held by a large batch for ~100 ms."""
    api = Api(store(cas), tmp_path)
    pool: SigningPool[Done] = SigningPool(1, 1)
    api.api.pool = pool
    threads: list[int] = []
    update = api.watchset.update

    def recorded(*a: Any, **kw: Any) -> Any:
        threads.append(threading.get_ident())
        return update(*a, **kw)

    api.watchset.update = recorded  # type: ignore[method-assign]
    headers = {b"content-type": b"application/json", b"authorization": b"Bearer sig"}
    big = msgspec.json.encode({"add": [ref(SC, 0x1000 + n) for n in range(2000)]})
    assert len(big) >= THREAD_BYTES

    small = msgspec.json.encode({"add": [ref(SC, A)]})

    async def run(body: bytes) -> Response:
        got = api.api.handle(
            Request(b"POST", b"/v1/watch", headers, body, ("127.0.0.1", 1), None, b"1.1", True, 1),
            api.registry, NOW,
        )  # fmt: skip
        assert not isinstance(got, Response)  # off the loop: answered when the thread is done
        return await got

    try:
        resp, resp_small = asyncio.run(run(big)), asyncio.run(run(small))
    finally:
        pool.close()
    got = msgspec.json.decode(bytes(resp.body))
    assert resp.status == 200 and (got["added"], got["watching"]) == (2000, 2000), got
    got = msgspec.json.decode(bytes(resp_small.body))
    assert resp_small.status == 200 and (got["added"], got["watching"]) == (1, 2001), got
    assert len(threads) == 2 and threading.get_ident() not in threads
    assert api.ledger.counted == []  # registering provides nothing


def test_every_read_is_made_in_the_batch_thread_not_on_the_event_loop(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """On one node too, a read walks the feed and probes the list in the worker's batch
    thread: a read of ``[watch] scan_limit`` entries (50,000 by default, after a mass
    revocation) delivering 10,000 changes held the event loop 737 ms (bench_v1_changes), and
    one party reading page after page kept OCSP and every other connection of the worker
    waiting; in the batch thread its reads queue per party (``fair_share``). The count and
    the mark stay on the loop, as the answer is written."""
    api = Api(store(cas), tmp_path)
    assert api.watch(add=[ref(SC, A), ref(SC, B)])[0].status == 200
    pool: SigningPool[Done] = SigningPool(1, 1)
    api.api.pool = pool
    threads: list[int] = []
    watched = api.watchset.watched

    def recorded(*a: Any, **kw: Any) -> Any:
        threads.append(threading.get_ident())
        return watched(*a, **kw)

    api.watchset.watched = recorded  # type: ignore[method-assign]
    headers = {b"authorization": b"Bearer sig"}
    target = f"/v1/changes?cursor={api.sealed(changes_start(2))}".encode()

    async def run() -> Response:
        got = api.api.handle(
            Request(b"GET", target, headers, b"", ("127.0.0.1", 1), None, b"1.1", True, 1),
            api.registry, NOW,
        )  # fmt: skip
        assert not isinstance(got, Response)  # off the loop: answered when the thread is done
        return written(await got)

    try:
        resp = asyncio.run(run())
    finally:
        pool.close()
    got = msgspec.json.decode(bytes(resp.body))
    assert resp.status == 200, got
    assert [c["serial"] for c in got["changes"]] == [f"{A:X}", f"{B:X}"]
    assert threads and threading.get_ident() not in threads
    assert api.ledger.counted == [("sig", Service.SIGN_REVOCATION_INFO, Method.JSON, 2)]


def test_unauthenticated_and_parties_without_the_services_are_refused_before_anything(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    api = Api(store(cas), tmp_path)
    resp, got = api.watch("nobody", add=[ref(SC, A)])
    assert resp.status == 401
    resp, got = api.changes(f"cursor={at(2)}", party="m-1")  # a 署名確認者: its group answers
    assert resp.status == 403 and got["article"] == "Act §20(1)"
    assert api.watchset.lists == {} and api.ledger.counted == []


def test_a_cursor_has_one_spelling_and_names_its_store_and_position() -> None:
    inside = sf.change_key(5, sf.status_key(SC, B)) + b"\x00"
    for start in (changes_start(7), inside):
        text = cursor.encode(STORE_ID, start)
        assert len(text) <= cursor.MAX_CURSOR_CHARS and "=" not in text
        assert cursor.decode(text) == cursor.Position(STORE_ID, start)
    text = cursor.encode(STORE_ID, changes_start(7))
    assert cursor.decode(text + "=") is None  # padded: not ours
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    long = cursor.encode(STORE_ID, inside)  # 44 bytes: the last character has 2 spare bits
    stray = long[:-1] + alphabet[alphabet.index(long[-1]) | 1]
    assert stray != long and cursor.decode(stray) is None  # the same bytes, another spelling
    assert cursor.decode(text[:-2]) is None  # cut short
    assert (
        cursor.decode(cursor.encode(STORE_ID, changes_start(7) + b"\x00")) is None
    )  # no such length
    assert cursor.encode(b"", changes_start(7)) == cursor.encode(bytes(16), changes_start(7))


def test_a_node_of_several_shares_its_lists_and_reads_only_stream_positions(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """On a node of several the lists are the watch stream's (`responder.v1.watchlog`; in
    process: tests/test_v1_watchrepl.py) and both routes wait on it in the batch thread; a
    store that does not name its record stream (a builder of an earlier version) would issue
    cursors of its own commits, which the other nodes number otherwise: 503, nothing counted."""
    api = Api(store(cas), tmp_path, nats="nats://127.0.0.1:1")
    env = next(e for e in changes._ENVS.values() if e.watchset is api.watchset)
    assert env.stream is not None and changes.CHANGES_ROUTE.blocking is not None
    assert changes.CHANGES_ROUTE.blocking(env) and changes.WATCH_ROUTE.blocking(env)  # type: ignore[misc]
    resp, got = api.changes(f"cursor={at(3)}")
    assert resp.status == 503 and "does not name the record stream" in got["detail"], got
    assert api.watchset.lists == {} and api.ledger.counted == []
    resp, got = api.changes("", party="nobody")  # authentication comes first
    assert resp.status == 401, got
