"""The public announcement of issuing-key compromises (公表): ``/announcements``, open to anyone.

When the key of an issuing CA generation leaks, is lost or damaged
(発行者署名符号の漏えい等, Act §14, §16-12, §33, §35-12), every certificate it
signed loses effect, and the 機構 must announce it without delay (遅滞なく公表):
Act §15(3) (sign-card), §16-14(3) (sign-mobile), §34(3) (auth-card),
§35-14(3) (auth-mobile), by Internet or other means (Ord §23, §58). crlbuilder
writes one `crlbuilder.store.format.Announcement` per compromised generation in
the same transaction as the compromise; this module publishes them:

    GET /announcements        an HTML page, Japanese with English, no script, no external asset
    GET /announcements.json   the same records, machine-readable
    GET /announcements.atom   an Atom feed (RFC 4287), one entry per compromise

Like the yearly report (``/reports/``) the routes need no credentials: the
announcement is public by law and holds no personal data (an issuer
generation, an instant, counts and articles; never a serial or a holder).

Cost: the store is read only through `crlbuilder.store.reader.StoreReader.announcements`;
the rendered bytes are cached per store commit (the only writes that can add
an announcement), so a request costs one LMDB read of the commit number and a
dictionary lookup however often it is asked. `render` and `parse_path` are
pure; `serve` is the thin layer the app calls.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Final, Literal
from xml.sax.saxutils import escape as xml_escape

import msgspec

from crlbuilder.rules import JST
from crlbuilder.store import format as sf
from crlbuilder.store.reader import ReadSource
from responder.http import Response
from responder.report import FAMILY_JA

__all__ = ["CONTENT_TYPES", "Format", "parse_path", "render", "serve"]

Format = Literal["html", "json", "atom"]
CONTENT_TYPES: Final[dict[str, bytes]] = {
    "html": b"text/html; charset=utf-8",
    "json": b"application/json",
    "atom": b"application/atom+xml; charset=utf-8",
}
_PATHS: Final[dict[bytes, Format]] = {
    b"/announcements": "html",
    b"/announcements/": "html",
    b"/announcements.html": "html",
    b"/announcements.json": "json",
    b"/announcements.atom": "atom",
}
_HEADERS: Final = ((b"cache-control", b"public, max-age=60"),)
_NOT_FOUND: Final = Response(404, b"not found\n", b"text/plain; charset=utf-8")
FEED_ID: Final = "urn:jpki-va:announcements"

FAMILY_EN: Final[dict[str, str]] = {
    "sign-card": "signature certificates for the My Number card",
    "sign-mobile": "signature certificates for smartphones",
    "auth-card": "user authentication certificates for the My Number card",
    "auth-mobile": "user authentication certificates for smartphones",
}


_CASCADE_ARTICLE: Final[dict[str, str]] = {
    "sign-mobile": "Act §16-14(1)(4)",
    "auth-mobile": "Act §35-14(1)(4)",
}
"""Where the Act makes a mobile certificate lose effect with its holder's card certificate."""
_HOLDER_JA: Final[dict[str, str]] = {"sign-mobile": "署名利用者", "auth-mobile": "利用者証明利用者"}
"""The Act's word for the holder (署名利用者, 利用者証明利用者: Act §2(4), §2(5))."""


def parse_path(path: bytes) -> Format | None:
    """The format a path asks for, or None when it is not an announcement route."""
    return _PATHS.get(path)


def _jst(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, JST).isoformat()


def _utc(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Item(msgspec.Struct, kw_only=True):
    issuer: str
    family: str
    generation: int
    at: str
    """RFC 3339, Japan time."""
    certificates: int
    cascaded: int
    articles: list[str]


def to_json(items: list[sf.Announcement]) -> bytes:
    body = {
        "title": "発行者署名符号の漏えい等の公表 / Announcements of issuing-key compromise",
        "announcements": [
            _Item(
                issuer=a.issuer, family=a.family.value, generation=a.generation, at=_jst(a.at),
                certificates=a.certificates, cascaded=a.cascaded, articles=a.articles,
            )
            for a in items
        ],
    }  # fmt: skip
    return msgspec.json.encode(body)


def _sentence_ja(a: sf.Announcement) -> str:
    when = datetime.fromtimestamp(a.at, JST).strftime("%Y年%m月%d日 %H時%M分")
    text = (
        f"{when}（日本時間）、{FAMILY_JA[a.family.value]}の発行者署名符号（{a.issuer}、"
        f"第{a.generation}世代）の漏えい等に係る情報を記録しました。"
        f"この符号で電子署名を行った電子証明書{a.certificates:,}件は、同時刻に効力を失いました。"
    )
    if a.cascaded:
        mobile = a.family.mobile_family
        text += (
            f"これに伴い、同じ{_HOLDER_JA[mobile.value]}の{FAMILY_JA[mobile.value]}{a.cascaded:,}件も効力を失いました"
            f"（{_CASCADE_ARTICLE[mobile.value]}）。"
        )
    return text


def _sentence_en(a: sf.Announcement) -> str:
    when = datetime.fromtimestamp(a.at, JST).strftime("%Y-%m-%d %H:%M")
    text = (
        f"At {when} Japan time, a compromise of the issuing key of the "
        f"{FAMILY_EN[a.family.value]} (issuer {a.issuer}, generation {a.generation}) was recorded. "
        f"The {a.certificates:,} certificates signed with that key lost effect at that instant."
    )
    if a.cascaded:
        mobile = a.family.mobile_family
        text += (
            f" {a.cascaded:,} {FAMILY_EN[mobile.value]} of the same holders lost effect with"
            f" them ({_CASCADE_ARTICLE[mobile.value]})."
        )
    return text


def to_html(items: list[sf.Announcement]) -> bytes:
    e = html.escape
    rows = []
    for a in items:
        rows.append(
            "<article>"
            f"<h2>{e(FAMILY_JA[a.family.value])} — {e(a.issuer)}</h2>"
            f'<p lang="ja">{e(_sentence_ja(a))}</p>'
            f'<p lang="en">{e(_sentence_en(a))}</p>'
            "<dl>"
            f'<dt>記録日時 / Recorded at</dt><dd><time datetime="{e(_jst(a.at))}">'
            f"{e(_jst(a.at))}</time></dd>"
            f"<dt>効力を失った電子証明書 / Certificates that lost effect</dt>"
            f"<dd>{a.certificates:,}</dd>"
            f"<dt>根拠 / Articles</dt><dd>{e(', '.join(a.articles))}</dd>"
            "</dl></article>"
        )
    if not rows:
        rows.append(
            '<p lang="ja">公表すべき発行者署名符号の漏えい等はありません。</p>'
            '<p lang="en">No issuing-key compromise has been recorded.</p>'
        )
    page = (
        '<!DOCTYPE html>\n<html lang="ja"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>発行者署名符号の漏えい等の公表 / Announcements of issuing-key compromise</title>"
        '<link rel="alternate" type="application/atom+xml" href="/announcements.atom">'
        '<link rel="alternate" type="application/json" href="/announcements.json">'
        "<style>body{font-family:sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem}"
        "article{border-top:1px solid #888;padding-top:.5rem}dt{font-weight:bold}</style>"
        "</head><body>"
        "<h1>発行者署名符号の漏えい等の公表<br><small>Announcements of issuing-key compromise"
        "</small></h1>"
        '<p lang="ja">公的個人認証法第15条第3項、第16条の14第3項、第34条第3項及び第35条の14第3項の'
        "規定による公表です。</p>"
        '<p lang="en">Published under Act §15(3), §16-14(3), §34(3) and §35-14(3) '
        "(Ordinance §23, §58).</p>" + "".join(rows) + "</body></html>\n"
    )
    return page.encode()


def to_atom(items: list[sf.Announcement]) -> bytes:
    x = xml_escape
    updated = _utc(max((a.at for a in items), default=0))
    entries = []
    for a in sorted(items, key=lambda a: (-a.at, a.issuer)):
        entries.append(
            "<entry>"
            f"<id>{FEED_ID}:{x(a.issuer)}:{a.at}</id>"
            f"<title>{x(a.issuer)}: 発行者署名符号の漏えい等 / issuing-key compromise</title>"
            f"<updated>{_utc(a.at)}</updated>"
            '<link rel="alternate" type="text/html" href="/announcements"/>'
            f'<content type="text">{x(_sentence_ja(a))}\n{x(_sentence_en(a))}\n'
            f"{x(', '.join(a.articles))}</content>"
            "</entry>"
        )
    feed = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="ja">'
        f"<id>{FEED_ID}</id>"
        "<title>発行者署名符号の漏えい等の公表 / Announcements of issuing-key compromise</title>"
        f"<updated>{updated}</updated>"
        "<author><name>地方公共団体情報システム機構 (J-LIS)</name></author>"
        '<link rel="self" href="/announcements.atom"/>' + "".join(entries) + "</feed>\n"
    )
    return feed.encode()


def render(items: list[sf.Announcement], fmt: Format) -> bytes:
    if fmt == "json":
        return to_json(items)
    if fmt == "atom":
        return to_atom(items)
    return to_html(items)


_cache: dict[tuple[int, Format], tuple[ReadSource, int, Response]] = {}
"""(id of the store, format) -> (the store, commit, response): one worker's rendered pages.
The entry keeps its store and is used only for that very object, so an id reused by
another store (after the first is closed and freed) never gets its pages."""


def serve(store: ReadSource, path: bytes) -> Response:
    """The response to ``GET path``: the cached page of the store's current commit."""
    fmt = parse_path(path)
    if fmt is None:
        return _NOT_FOUND
    with store.read() as r:
        commit = r.generation().commit
        key = (id(store), fmt)
        hit = _cache.get(key)
        if hit is not None and hit[0] is store and hit[1] == commit:
            return hit[2]
        response = Response(200, render(r.announcements(), fmt), CONTENT_TYPES[fmt], _HEADERS)
    if len(_cache) > 16:  # stores of closed apps (tests): the live one re-renders once
        _cache.clear()
    _cache[key] = (store, commit, response)
    return response
