"""The public announcement of an issuing-key compromise (公表, Act §15(3), §16-14(3), §34(3),
§35-14(3); Ord §23, §58): recorded with the compromise, published by the responder without
credentials, as HTML, JSON and Atom, with no personal data."""

from __future__ import annotations

import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import msgspec
import pytest

from crlbuilder.model import Family
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from responder import announce
from tests.conftest import Built
from tests.support.harness import start_server
from tests.test_apply import H1, H2, World, holder_set, issuance, rid, ts

ATOM = "{http://www.w3.org/2005/Atom}"


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def announcements(store: Store) -> list[sf.Announcement]:
    with store.read() as r:
        return r.announcements()


def compromise(issuer: str, day: float = 100) -> dict[str, object]:
    return {"type": "ca-compromise", "id": rid(), "recorded_at": ts(day), "issuer": issuer}


def test_act_15_3_announcement_recorded_in_the_compromise_transaction(world: World) -> None:
    world.apply(
        [
            *holder_set(H1),
            issuance(300, "sign-card-g2", H2),
            issuance(200, "sign-card-g1", "55" * 32, day=-1),
        ]
    )
    world.apply([{"type": "revocation-request", "id": rid(), "recorded_at": ts(50),
                  "issuer": "sign-card-g1", "serial": 200, "reason": "loss"}])  # fmt: skip
    g1_answer, g2_answer = sf.status_key(1, 200), sf.status_key(2, 300)
    with world.store.env.begin(write=True) as txn:  # answers stored before the compromise
        for key in (g1_answer, g2_answer):
            txn.put(key, b"x" * 40, db=world.store.dbs[sf.DB_RESPONSES])
    rec = compromise("sign-card-g1")
    world.apply([rec])
    assert world.quarantined() == [] and world.status("sign-card-g1", 200).revoked
    with world.store.env.begin() as txn:
        # revoked before, but its answer came from the compromised key's delegate (Act §14)
        assert txn.get(g1_answer, db=world.store.dbs[sf.DB_RESPONSES]) is None
        assert txn.get(g2_answer, db=world.store.dbs[sf.DB_RESPONSES]) is not None
    [a] = announcements(world.store)
    with world.store.env.begin() as txn:
        raw = txn.get(str(rec["id"]).encode(), db=world.store.dbs[sf.DB_APPLIED])
        applied = sf.unpack_applied(raw).seq
    with world.store.read() as r:
        commit = r.generation().commit
    assert a.commit == applied == commit  # one transaction: the compromise and its announcement
    assert (a.issuer, a.family, a.generation) == ("sign-card-g1", Family.SIGN_CARD, 1)
    assert a.certificates == 1 and a.cascaded == 1  # the card cert, and its mobile by cascade
    assert a.articles == ["Act §15(3)", "Ord §23"]
    # a second record of the same compromise announces nothing new
    world.apply([compromise("sign-card-g1", 101)])
    assert announcements(world.store) == [a]


@pytest.mark.parametrize(
    ("issuer", "articles"),
    [
        ("auth-card-g1", ["Act §34(3)", "Ord §58"]),
        ("sign-mobile-g1", ["Act §16-14(3)"]),
        ("auth-mobile-g1", ["Act §35-14(3)"]),
    ],
)
def test_announcement_cites_the_family_articles(
    world: World, issuer: str, articles: list[str]
) -> None:
    world.apply(holder_set(H1))
    world.apply([compromise(issuer)])
    [a] = announcements(world.store)
    assert a.issuer == issuer and a.articles == articles and a.certificates == 1


def test_renderings_carry_no_personal_data(world: World) -> None:
    world.apply(holder_set(H1))
    world.apply([compromise("sign-card-g1"), compromise("auth-card-g1", 120)])
    items = announcements(world.store)
    assert [a.issuer for a in items] == ["sign-card-g1", "auth-card-g1"]
    doc = msgspec.json.decode(announce.render(items, "json"))
    assert [x["issuer"] for x in doc["announcements"]] == ["sign-card-g1", "auth-card-g1"]
    assert doc["announcements"][0]["at"].endswith("+09:00")
    page = announce.render(items, "html").decode()
    assert "発行者署名符号" in page and "issuing-key compromise" in page and "Ord §58" in page
    feed = ET.fromstring(announce.render(items, "atom"))
    entries = feed.findall(f"{ATOM}entry")
    assert len(entries) == 2 and feed.findtext(f"{ATOM}id") == announce.FEED_ID
    # an issuer generation, an instant, counts and articles: never a holder or a serial
    assert set(doc["announcements"][0]) == {
        "issuer", "family", "generation", "at", "certificates", "cascaded", "articles",
    }  # fmt: skip
    for fmt in ("json", "html", "atom"):
        body = announce.render(items, fmt).decode()
        assert H1 not in body and "試験" not in body and "serial" not in body.lower()


def test_rendered_once_per_store_commit(world: World) -> None:
    world.apply(holder_set(H1))
    first = announce.serve(world.store, b"/announcements.json")
    assert msgspec.json.decode(first.body)["announcements"] == []
    assert announce.serve(world.store, b"/announcements.json") is first  # cached bytes
    world.apply([compromise("sign-card-g1")])
    after = announce.serve(world.store, b"/announcements.json")
    assert after is not first
    assert [x["issuer"] for x in msgspec.json.decode(after.body)["announcements"]] == [
        "sign-card-g1"
    ]
    assert announce.serve(world.store, b"/announcements.xml").status == 404


def test_published_by_the_real_server_without_credentials(built: Built, tmp_path: Path) -> None:
    """The demo population's compromise of sign-card-g1, served to anyone."""
    with start_server(built, tmp_path) as s:

        def get(path: str, method: str = "GET") -> tuple[int, bytes, str]:
            req = urllib.request.Request(s.url + path, method=method)
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, r.read(), r.headers["content-type"]
            except urllib.error.HTTPError as e:
                return e.code, e.read(), e.headers["content-type"]

        status, body, ctype = get("/announcements.json")
        assert status == 200 and ctype == "application/json"
        [a] = msgspec.json.decode(body)["announcements"]
        cats = built.summary["revocations_by_category"]
        assert isinstance(cats, dict)
        assert a["issuer"] == "sign-card-g1" and a["certificates"] == cats["ca-compromise"] > 0
        assert a["articles"] == ["Act §15(3)", "Ord §23"]
        status, body, ctype = get("/announcements")
        assert status == 200 and ctype.startswith("text/html") and "sign-card-g1" in body.decode()
        status, body, ctype = get("/announcements.atom")
        assert status == 200 and ctype.startswith("application/atom+xml")
        assert len(ET.fromstring(body).findall(f"{ATOM}entry")) == 1
        assert get("/announcements.json", "POST")[0] == 405
        assert get("/announcements.csv")[0] == 404


@pytest.mark.parametrize(
    ("issuer", "mobile_ja", "mobile_en", "article"),
    [
        (
            "sign-card-g1",
            "移動端末設備用署名用電子証明書",
            "signature certificates for smartphones",
            "§16-14(1)(4)",
        ),
        (
            "auth-card-g1",
            "移動端末設備用利用者証明用電子証明書",
            "user authentication certificates for smartphones",
            "§35-14(1)(4)",
        ),
    ],
)
def test_the_cascade_names_the_mobile_family_of_the_act(
    world: World, issuer: str, mobile_ja: str, mobile_en: str, article: str
) -> None:
    """The mobile certificates that lose effect with a card's (Act §16-14(1)(4), §35-14(1)(4))
    are named by the Act's term for their family, not a "移動端末設備用電子証明書" that the
    Act does not know and that does not say whether signature or user authentication."""
    world.apply(holder_set(H1))
    world.apply([compromise(issuer)])
    [a] = announcements(world.store)
    assert a.cascaded == 1
    page = announce.render([a], "html").decode()
    assert f"{mobile_ja}1件も効力を失いました" in page
    assert mobile_en in page and article in page
