"""The registry file: its model, the checks that refuse bad input, credentials, reloading."""

from __future__ import annotations

import hashlib
import os
import re
import time
import tomllib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crlbuilder.manifest import Manifest
from crlbuilder.model import Family
from crlbuilder.rules import JST
from responder.registry.demo import registry_from_manifest
from responder.registry.lookup import SETTLE, LastGoodRegistry, Registry
from responder.registry.party import PartyState
from responder.registry.schema import (
    LegacyPartyEntry,
    RegistryError,
    dump_registry,
    parse_registry,
    toml_dumps,
)
from responder.registry.vocabulary import AuthMethod, Service

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC).timestamp()


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def verifier(pid: str, **over: Any) -> dict[str, Any]:
    """A valid 署名検証者 + 利用者証明検証者 [[party]] with one token."""
    t: dict[str, Any] = {
        "id": pid,
        "name": f"Verifier {pid}",
        "notification": {
            "address": "addr",
            "representative": "rep",
            "office": "office",
            "start": date(2024, 4, 1),
        },
        "title": [
            {"kind": "signature-verifier", "category": 4},
            {"kind": "user-verifier", "category": 4},
        ],
        "agreement": {
            "services": [
                "sign-revocation-info",
                "sign-crl-file",
                "corresponding-serial",
                "auth-revocation-info",
            ],
            "families": ["sign-card", "sign-mobile", "auth-card", "auth-mobile"],
            "methods": ["ocsp", "crl-file", "json"],
            "crl_cycle_seconds": 3600,
            "requests_per_second": 100,
            "liability": "as agreed",
        },
        "credential": [{"kind": "token", "label": "t1", "token_sha256": sha(f"token-{pid}")}],
    }
    t.update(over)
    return t


def group(pid: str = "grp", **over: Any) -> dict[str, Any]:
    t = verifier(pid)
    t["title"] = [
        {
            "kind": "group-signature-verifier",
            "group_kind": 1,
            "members": ["m-a"],
            "member_prefix": "mx-",
        }
    ]
    t["agreement"] = {
        "services": ["sign-revocation-info", "sign-crl-file", "sign-record-info"],
        "families": ["sign-card", "sign-mobile"],
        "methods": ["ocsp", "crl-file", "json"],
        "liability": "as agreed",
        "member_answer": "OCSP relay",
    }
    t.update(over)
    return t


def member(pid: str, grp: str = "grp") -> dict[str, Any]:
    return {
        "id": pid,
        "name": f"Member {pid}",
        "title": [{"kind": "signature-confirmer", "group": grp}],
        "credential": [{"kind": "token", "token_sha256": sha(f"token-{pid}")}],
    }


def text(*parties: dict[str, Any]) -> str:
    return toml_dumps({"version": 2, "party": list(parties)})


def build(src: str, base: Path = Path(), now: float = NOW) -> Registry:
    return Registry.build(
        parse_registry(src, source="reg.toml"), base=base, source="reg.toml", now=now
    )


def refused(src: str, base: Path = Path()) -> str:
    with pytest.raises(RegistryError) as e:
        build(src, base)
    return str(e.value)


# --- the demo registry ----------------------------------------------------------------


def test_demo_registry_grants_what_the_titles_allow(
    demo_pki: tuple[Path, Manifest], tmp_path: Path
) -> None:
    pki, manifest = demo_pki
    out = tmp_path / "registry.toml"
    out.write_text(registry_from_manifest(manifest, out))
    reg = Registry.load(out)
    assert reg.warnings == ()
    p = reg.parties
    sign, auth = {Family.SIGN_CARD, Family.SIGN_MOBILE}, {Family.AUTH_CARD, Family.AUTH_MOBILE}
    assert p["sig-verifier"].families == sign and p["auth-verifier"].families == auth
    assert p["both-verifier"].families == sign | auth
    assert Service.CORRESPONDING_SERIAL in p["both-verifier"].grants
    assert Service.CORRESPONDING_SERIAL not in p["sig-verifier"].grants
    assert not {
        s for s in p["auth-verifier"].grants if s.value.startswith(("sign", "corresponding-s"))
    }
    assert set(p["group-verifier"].grants) == {
        Service.SIGN_REVOCATION_INFO,
        Service.SIGN_CRL_FILE,
        Service.SIGN_RECORD_INFO,
        Service.VALIDATION,  # for its members' confirmations (Act §20(1), §21(1))
    }
    assert Service.VALIDATION in p["sig-verifier"].grants  # Act §19(1)
    assert Service.VALIDATION not in p["auth-verifier"].grants
    for m in ("member-1", "member-2"):
        assert (
            p[m].grants == {}
            and p[m].group == "group-verifier"
            and not p[m].may_receive(Family.SIGN_CARD)
        )
    for party in manifest.parties:
        token = (pki / "parties" / f"{party.id}.token").read_text().strip().encode()
        assert reg.by_token(token) is p[party.id]
        der = (pki / "parties" / f"{party.id}.pem").read_bytes()
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        cert = x509.load_pem_x509_certificate(der)
        assert reg.by_certificate(cert.public_bytes(Encoding.DER)) is p[party.id]
        assert p[party.id].auth == set(AuthMethod)
    assert {x.id for x in reg.signing_parties()} == {x.id for x in manifest.parties}
    assert p["sig-verifier"].may_receive(Family.SIGN_MOBILE)
    assert not p["sig-verifier"].may_receive(Family.AUTH_CARD)


def test_dump_parse_round_trip(demo_pki: tuple[Path, Manifest], tmp_path: Path) -> None:
    _, manifest = demo_pki
    first = parse_registry(registry_from_manifest(manifest, tmp_path / "r.toml"), source="a")
    again = parse_registry(dump_registry(first), source="b")
    assert again == first
    src = text(verifier("v"), group(), member("m-a"), member("mx-1"))
    assert dump_registry(parse_registry(src, source="c")) == dump_registry(
        parse_registry(dump_registry(parse_registry(src, source="c")), source="d")
    )


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_any_text_survives_toml(value: str) -> None:
    doc = {"a": value, "b": [value, "x"], "t": {"k": value}}
    assert tomllib.loads(toml_dumps(doc)) == doc


# --- bad input ------------------------------------------------------------------------------

BAD: list[tuple[str, str, list[str]]] = [
    (
        "unknown field",
        text(verifier("v", nickname="x")),
        ["party 'v'", "unknown field `nickname`"],
    ),
    (
        "unknown agreement field",
        text(verifier("v", agreement={**verifier("v")["agreement"], "discount": 3})),
        ["party 'v'", "`discount`", "agreement"],
    ),
    ("unknown top-level field", "version = 2\nowner = 'x'\n", ["owner"]),
    (
        "missing office",
        text(verifier("v", notification={"address": "a", "start": date(2024, 1, 1)})),
        ["party 'v'", "`office`", "notification"],
    ),
    (
        "missing notification",
        text({k: v for k, v in verifier("v").items() if k != "notification"}),
        ["party 'v'", "notification: required"],
    ),
    (
        "missing liability",
        text(
            verifier(
                "v",
                agreement={k: v for k, v in verifier("v")["agreement"].items() if k != "liability"},
            )
        ),
        ["party 'v'", "`liability`"],
    ),
    (
        "bad service name",
        text(verifier("v", agreement={**verifier("v")["agreement"], "services": ["everything"]})),
        ["party 'v'", "agreement.services[0]"],
    ),
    ("id twice", text(verifier("v"), verifier("v")), ["party 'v'", "listed twice"]),
    (
        "token on two parties",
        text(verifier("a"), verifier("b", credential=verifier("a")["credential"])),
        ["party 'b'", "credential[0]", "also party 'a'"],
    ),
    (
        "user verifier asks sign info",
        text(
            verifier(
                "u",
                title=[{"kind": "user-verifier", "category": 4}],
                agreement={
                    **verifier("u")["agreement"],
                    "services": ["auth-revocation-info", "sign-revocation-info"],
                },
            )
        ),
        [
            "party 'u'",
            "agreement.services",
            "sign-revocation-info",
            "利用者証明検証者 never receives sign",
        ],
    ),
    (
        "corresponding-serial without both titles",
        text(
            verifier(
                "s",
                title=[{"kind": "signature-verifier", "category": 4}],
                agreement={
                    **verifier("s")["agreement"],
                    "services": ["sign-revocation-info", "corresponding-serial"],
                    "families": ["sign-card", "sign-mobile"],
                },
            )
        ),
        ["party 's'", "agreement.services", "Act §18(5)"],
    ),
    (
        "group asks corresponding-sign-serial",
        text(
            group(
                agreement={
                    **group()["agreement"],
                    "services": ["sign-revocation-info", "corresponding-sign-serial"],
                    "methods": ["ocsp", "json"],
                }
            )
        ),
        ["party 'grp'", "Act §18(4)"],
    ),
    (
        "member outside the range",
        text(group(), member("m-b")),
        ["party 'm-b'", "title[0].group", "outside the member range"],
    ),
    (
        "member of a non-group",
        text(verifier("v"), member("m-a", grp="v")),
        ["party 'm-a'", "not a registered 団体署名検証者"],
    ),
    (
        "group without a range",
        text(group(title=[{"kind": "group-signature-verifier", "group_kind": 2}])),
        ["party 'grp'", "Ord §32(4)"],
    ),
    (
        "group without representative",
        text(group(notification={"address": "a", "office": "o", "start": date(2024, 1, 1)})),
        ["party 'grp'", "notification.representative", "Ord §32(1)"],
    ),
    (
        "group without member answer",
        text(
            group(agreement={k: v for k, v in group()["agreement"].items() if k != "member_answer"})
        ),
        ["party 'grp'", "agreement.member_answer", "Ord §33(4)"],
    ),
    (
        "member with an agreement",
        text(group(), {**member("m-a"), "agreement": verifier("x")["agreement"]}),
        ["party 'm-a'", "agreement"],
    ),
    (
        "specified without user-verifier",
        text(
            verifier(
                "s",
                title=[
                    {"kind": "signature-verifier", "category": 4},
                    {"kind": "specified-user-verifier", "approved": date(2024, 1, 1)},
                ],
                agreement={
                    **verifier("s")["agreement"],
                    "services": ["sign-revocation-info"],
                    "families": ["sign-card"],
                    "methods": ["ocsp"],
                },
            )
        ),
        ["party 's'", "Act §38-2(1)"],
    ),
    (
        "category 6 without certified_until",
        text(
            verifier(
                "v",
                title=[
                    {"kind": "signature-verifier", "category": 6},
                    {"kind": "user-verifier", "category": 4},
                ],
            )
        ),
        ["party 'v'", "title[0].certified_until", "Act §17(2)"],
    ),
    (
        "category 7",
        text(
            verifier(
                "v",
                title=[
                    {"kind": "signature-verifier", "category": 7},
                    {"kind": "user-verifier", "category": 4},
                ],
            )
        ),
        ["party 'v'", "title[0].category"],
    ),
    (
        "family nobody receives",
        text(
            verifier(
                "v",
                agreement={
                    **verifier("v")["agreement"],
                    "services": ["sign-revocation-info"],
                    "families": ["sign-card", "auth-card"],
                    "methods": ["ocsp"],
                },
            )
        ),
        ["party 'v'", "agreement.families", "auth-card"],
    ),
    (
        "crl service without crl method",
        text(verifier("v", agreement={**verifier("v")["agreement"], "methods": ["ocsp", "json"]})),
        ["party 'v'", "agreement.methods", "sign-crl-file"],
    ),
    (
        "bad suspension article",
        text(
            verifier(
                "v",
                suspension=[
                    {"article": "Act §99", "since": datetime(2025, 1, 1, tzinfo=JST), "reason": "r"}
                ],
            )
        ),
        ["party 'v'", "suspension[0].article"],
    ),
    (
        "§18(7) on a non-group",
        text(
            verifier(
                "v",
                suspension=[
                    {
                        "article": "Act §18(7)(1)",
                        "since": datetime(2025, 1, 1, tzinfo=JST),
                        "reason": "r",
                    }
                ],
            )
        ),
        ["party 'v'", "suspension[0].article", "group-signature-verifier"],
    ),
    (
        "carry-over without the other title",
        text(
            group(
                suspension=[
                    {
                        "article": "Act §18(6)(1)",
                        "since": datetime(2025, 1, 1, tzinfo=JST),
                        "reason": "r",
                        "carry_over": True,
                    }
                ]
            )
        ),
        ["party 'grp'", "suspension[0].carry_over"],
    ),
    (
        # item 6's ground is the other title's suspension: a party without it has none
        "§18(6)(6) without the user-verifier title",
        text(
            group(
                suspension=[
                    {
                        "article": "Act §18(6)(6)",
                        "since": datetime(2025, 1, 1, tzinfo=JST),
                        "reason": "r",
                    }
                ],
            )
        ),
        ["party 'grp'", "suspension[0].article", "Act §18(6)(6)", "user-verifier"],
    ),
    (
        # §18(7) suspends the group's provision only; services are not kept per title, so on
        # a party that is a 署名検証者 too it would stop that provision as well
        "§18(7) on a party that is a signature verifier too",
        text(
            group(
                title=[
                    *group()["title"],
                    {"kind": "signature-verifier", "category": 4},
                ],
                suspension=[
                    {
                        "article": "Act §18(7)(1)",
                        "since": datetime(2025, 1, 1, tzinfo=JST),
                        "reason": "r",
                    }
                ],
            )
        ),
        ["party 'grp'", "suspension[0].article", "Act §18(7)(1)", "a party of its own"],
    ),
    (
        "naive datetime",
        text(
            verifier(
                "v",
                suspension=[
                    {"article": "Act §18(6)(1)", "since": datetime(2025, 1, 1), "reason": "r"}
                ],
            )
        ),
        ["party 'v'", "suspension[0].since", "timezone"],
    ),
    (
        "empty credential window",
        text(
            verifier(
                "v",
                credential=[
                    {
                        "kind": "token",
                        "token_sha256": sha("x"),
                        "not_before": datetime(2025, 2, 1, tzinfo=JST),
                        "not_after": datetime(2025, 1, 1, tzinfo=JST),
                    }
                ],
            )
        ),
        ["party 'v'", "credential[0]", "window is empty"],
    ),
    (
        "same token twice in a party",
        text(
            verifier(
                "v",
                credential=[
                    {"kind": "token", "token_sha256": sha("x")},
                    {"kind": "token", "token_sha256": sha("x")},
                ],
            )
        ),
        ["party 'v'", "credential[1]", "listed twice"],
    ),
    (
        "missing cert file",
        text(verifier("v", credential=[{"kind": "mtls", "cert": "nope.pem"}])),
        ["party 'v'", "credential[0].cert", "nope.pem"],
    ),
    (
        "a terminal escape in a name (printed by `registry list`)",
        text(verifier("v", name="Bank\x1b[2J")),
        ["party 'v'", "name: ", "U+001B"],
    ),
    (
        "a blank name",
        text(verifier("v", name="  \u3000 ")),
        ["party 'v'", "name: ", "blank"],
    ),
    (
        "a bidi override in the office (shows another text than it holds)",
        text(verifier("v", notification={**verifier("v")["notification"], "office": "a\u202eb"})),
        ["party 'v'", "notification.office: ", "U+202E"],
    ),
    (
        "a line break in the representative's name",
        text(
            verifier("v", notification={**verifier("v")["notification"], "representative": "r\nx"})
        ),
        ["party 'v'", "notification.representative: ", "U+000A"],
    ),
    (
        "a line feed in the article of an end (a refusal names it)",
        text(
            verifier(
                "v",
                ended={
                    "at": datetime(2025, 1, 1, tzinfo=JST),
                    "reason": "r",
                    "article": "Act §17(3)\nx",
                },
            )
        ),
        ["party 'v'", "ended.article: ", "U+000A"],
    ),
    (
        "a NUL in a suspension's reason",
        text(
            verifier(
                "v",
                suspension=[
                    {
                        "article": "Act §37(4)(1)",
                        "since": datetime(2025, 1, 1, tzinfo=JST),
                        "reason": "a\0",
                    }
                ],
            )
        ),
        ["party 'v'", "suspension[0].reason: ", "U+0000"],
    ),
]


@pytest.mark.parametrize(("src", "needles"), [(b[1], b[2]) for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_refused_naming_file_party_field(src: str, needles: list[str]) -> None:
    message = refused(src)
    assert message.startswith("reg.toml"), message
    for needle in needles:
        assert needle in message, (needle, message)
    # no personal data in the message: the addresses and representatives above never appear
    assert "addr" not in message.replace("address", "") and "rep'" not in message


def test_several_lines_of_liability_text_are_kept() -> None:
    """Long texts (損害賠償に関する事項, Ord §31(3)) may hold line breaks and tabs."""
    t = verifier("v")
    t["agreement"]["liability"] = "第1条\tline one\n第2条 line two"
    assert build(text(t)).file.parties[0].agreement is not None


def test_the_same_certificate_on_two_parties_is_refused(demo_pki: tuple[Path, Manifest]) -> None:
    pki, _ = demo_pki
    cert = "parties/sig-verifier.pem"
    a = verifier("a", credential=[{"kind": "mtls", "cert": cert}])
    b = verifier("b", credential=[{"kind": "signed-request", "cert": cert}])
    message = refused(text(a, b), base=pki)
    assert "party 'b'" in message and "also party 'a'" in message
    # the same certificate twice in one party, for two kinds, is fine
    both = verifier(
        "a", credential=[{"kind": "mtls", "cert": cert}, {"kind": "signed-request", "cert": cert}]
    )
    reg = build(text(both), base=pki)
    assert reg.parties["a"].auth == {AuthMethod.MTLS, AuthMethod.SIGNED_REQUEST}


def test_not_a_certificate(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_bytes(b"not a certificate")
    message = refused(
        text(verifier("v", credential=[{"kind": "mtls", "cert": "junk.pem"}])), base=tmp_path
    )
    assert "party 'v'" in message and "junk.pem is not a certificate" in message


def test_registry_load_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text("version = 2\n[[party]\n")
    with pytest.raises(RegistryError, match=str(f)):
        Registry.load(f)
    with pytest.raises(RegistryError, match="cannot read"):
        Registry.load(tmp_path / "missing.toml")


@pytest.mark.parametrize("target", ["fifo", "/dev/zero"])
def test_a_registry_path_that_is_no_regular_file_is_refused_at_once(
    tmp_path: Path, target: str
) -> None:
    """The master and every worker look at the registry each second (`reload_if_changed`,
    `LastGoodRegistry.refresh`): a path replaced by a symbolic link to a named pipe held
    them in ``open`` for ever (the master's loop and each worker's, every request with it),
    one to /dev/zero was read without end. Refused at once, naming the file; the last good
    registry stays."""
    import threading

    good = tmp_path / "good.toml"
    good.write_text("version = 2\n", encoding="utf-8")
    where = Path(target)
    if target == "fifo":
        where = tmp_path / "pipe"
        os.mkfifo(where)
    link = tmp_path / "registry.toml"
    link.symlink_to(good)
    last_good = LastGoodRegistry(link, Registry.load(link))
    first = last_good.registry
    link.unlink()
    link.symlink_to(where)
    done = threading.Event()

    def refresh() -> None:
        last_good.refresh()
        done.set()

    threading.Thread(target=refresh, daemon=True).start()
    finished = done.wait(5)
    if not finished and target == "fifo":
        os.close(os.open(where, os.O_WRONLY | os.O_NONBLOCK))  # release the reader
    assert finished, "the registry's refresh still blocked after 5 s"
    assert last_good.registry is first
    assert last_good.error is not None and "not a regular file" in last_good.error
    assert str(link) in last_good.error


# --- credentials ------------------------------------------------------------------------------


def test_overlapping_tokens_rotate_without_downtime() -> None:
    jan, mar, may, jul = (datetime(2025, m, 1, tzinfo=JST) for m in (1, 3, 5, 7))
    creds = [
        {
            "kind": "token",
            "label": "old",
            "token_sha256": sha("old"),
            "not_before": jan,
            "not_after": may,
        },
        {
            "kind": "token",
            "label": "new",
            "token_sha256": sha("new"),
            "not_before": mar,
            "not_after": jul,
        },
    ]
    reg = build(text(verifier("v", credential=creds)))

    def at(month: int) -> float:
        return datetime(2025, month, 1, tzinfo=JST).timestamp()

    assert reg.by_token(b"old", at(2)) is not None and reg.by_token(b"new", at(2)) is None
    assert reg.by_token(b"old", at(4)) is reg.by_token(b"new", at(4)) is reg.parties["v"]
    assert reg.by_token(b"old", at(5)) is None and reg.by_token(b"new", at(6)) is not None
    assert reg.by_token(b"new", at(7)) is None and reg.by_token(b"other", at(4)) is None


def test_expired_credentials_warn_when_loading() -> None:
    old = datetime(2024, 1, 1, tzinfo=JST)
    creds = [{"kind": "token", "token_sha256": sha("x"), "not_after": old}]
    reg = build(text(verifier("v", credential=creds)))
    assert any("party 'v'" in w and "expired" in w for w in reg.warnings)
    assert reg.by_token(b"x", NOW) is None
    reg = build(text(verifier("v", credential=[])))
    assert any("no credential" in w for w in reg.warnings)


def test_certificate_credentials_follow_the_certificate_validity(
    demo_pki: tuple[Path, Manifest],
) -> None:
    pki, _ = demo_pki
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((pki / "parties/auth-verifier.pem").read_bytes())
    window_end = datetime(2099, 1, 1, tzinfo=JST)
    creds = [
        {"kind": "signed-request", "cert": "parties/auth-verifier.pem", "not_after": window_end}
    ]
    reg = build(text(verifier("v", credential=creds)), base=pki, now=time.time())
    (info,) = reg.parties["v"].credentials
    # the certificate ends first, through its notAfter's second (RFC 5280 §4.1.2.5: inclusive,
    # `crlbuilder.validity`; the credential's window is half-open, so it ends the second after).
    # It ended at the notAfter itself, refusing the party in a second its certificate is valid.
    end = cert.not_valid_after_utc.timestamp()
    assert info.not_after == end + 1
    assert info.not_before == cert.not_valid_before_utc.timestamp()
    assert info.valid_at(end) and info.valid_at(end + 0.5) and not info.valid_at(end + 1)
    assert reg.signing_keys(time.time()) and reg.signing_keys(end)
    assert not reg.signing_keys(end + 1)
    assert reg.parties["v"].cert_public_keys == (info.spki,)


# --- legacy format -------------------------------------------------------------------------------

LEGACY = f"""
[[party]]
id = "late-party"
name = "Late"
titles = ["user-verifier"]
tokens_sha256 = ["{sha("late")}"]
"""


def test_old_format_entries_are_refused_with_how_to_migrate() -> None:
    """Issue 9.11: an old flat entry received every service its titles allow, with no
    notification (届出) or agreement (取決め), and could not be suspended. It is parsed (so
    that `registry migrate` can read it) but refused when a registry is built, alone or
    appended to a new-format file, with a message naming the migration."""
    assert isinstance(parse_registry(LEGACY, source="reg.toml").parties[0], LegacyPartyEntry)
    for src in (LEGACY, text(verifier("v")) + LEGACY):
        msg = refused(src)
        assert "party 'late-party': titles:" in msg
        assert "responder registry migrate --registry reg.toml --details" in msg
        assert "no notification (届出) and no agreement (取決め)" in msg


# --- state -------------------------------------------------------------------------------------------


def test_state_is_derived_from_dates() -> None:
    t = verifier("v")
    t["notification"]["start"] = date(2025, 7, 1)
    p = build(text(t)).parties["v"]
    assert p.state(NOW) is PartyState.NOT_STARTED and not p.may_receive(Family.SIGN_CARD, NOW)
    later = datetime(2025, 7, 1, tzinfo=JST).timestamp()
    assert p.state(later) is PartyState.ACTIVE and p.may_receive(Family.SIGN_CARD, later)
    t = verifier(
        "v",
        suspension=[
            {"article": "Act §37(4)(1)", "since": datetime(2025, 5, 1, tzinfo=JST), "reason": "r"}
        ],
    )
    p = build(text(t)).parties["v"]
    assert p.state(NOW) is PartyState.SUSPENDED
    assert p.may_receive(Family.SIGN_CARD, NOW) and not p.may_receive(Family.AUTH_CARD, NOW)
    t = verifier("v", ended={"at": datetime(2025, 5, 1, tzinfo=JST), "reason": "withdrew"})
    p = build(text(t)).parties["v"]
    assert p.state(NOW) is PartyState.ENDED and not p.may_receive(Family.SIGN_CARD, NOW)


# --- reloading -----------------------------------------------------------------------------------------


def test_reload_if_changed(tmp_path: Path) -> None:
    """A file replaced whole is taken at the first look; one changed in place at a look
    `SETTLE` seconds (of ``now``, a monotonic clock) after the first that saw it as it is."""
    f = tmp_path / "registry.toml"
    f.write_text(text(verifier("v")))
    reg = Registry.load(f)
    assert reg.reload_if_changed(f) is None  # unchanged: one stat, nothing else
    tmp = tmp_path / "next.toml"
    tmp.write_text(text(verifier("v"), verifier("w")))
    os.replace(tmp, f)  # what the admin commands do
    new = reg.reload_if_changed(f)
    assert new is not None and set(new.parties) == {"v", "w"}
    assert new.reload_if_changed(f, now=0.0) is None
    f.write_text(text(verifier("v"), verifier("v")))  # broken: reported once, then quiet
    assert new.reload_if_changed(f, now=0.0) is None  # first seen: it may be mid-write
    with pytest.raises(RegistryError, match="listed twice"):
        new.reload_if_changed(f, now=SETTLE)
    assert new.reload_if_changed(f, now=SETTLE) is None
    with f.open("a") as out:  # an operator appends an old-format entry by hand
        out.write(LEGACY)
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert new.reload_if_changed(f, now=1.0) is None
    with pytest.raises(RegistryError):  # changed, still two 'v' parties: reported again
        new.reload_if_changed(f, now=1.0 + SETTLE)
    f.write_text(text(verifier("v")) + LEGACY)
    assert new.reload_if_changed(f, now=2.0) is None
    with pytest.raises(RegistryError, match="registry migrate"):  # the old format is refused
        new.reload_if_changed(f, now=2.0 + SETTLE)
    f.write_text(text(verifier("v"), verifier("late-party")))
    assert new.reload_if_changed(f, now=3.0) is None
    again = new.reload_if_changed(f, now=3.0 + SETTLE)
    assert again is not None and "late-party" in again.parties


def test_dates_are_japan_days() -> None:
    t = verifier("v")
    t["notification"]["start"] = date(2025, 6, 2)
    p = build(text(t)).parties["v"]
    assert p.start == datetime(2025, 6, 1, 15, tzinfo=UTC).timestamp()
    assert datetime.fromtimestamp(p.start, JST).date() == date(2025, 6, 2)
    assert timedelta(hours=9) == JST.utcoffset(None)


def test_the_documented_example_is_a_valid_registry() -> None:
    import responder.registry as module

    doc = module.__doc__ or ""
    example = doc[doc.index("    version = 2") : doc.index("Decisions recorded here")]
    src = "\n".join(line[4:] for line in example.splitlines())
    hexes = iter("0123456789")  # each party's token its own
    src = re.sub('"<hex>"', lambda _: f'"{next(hexes) * 64}"', src).replace('"..."', '"x"')
    reg = build(src)
    p = reg.parties["both-verifier"]
    assert p.state(NOW) is PartyState.SUSPENDED
    assert {s.article for s in p.suspensions} == {"Act §37(4)(1)", "Act §18(6)(6)"}
    # the principal: served under its contractor's agreement, stopped with it
    city = reg.parties["city-office"]
    assert (city.contractor, city.agreement_holder) == ("both-verifier", "both-verifier")
    assert set(city.grants) == set(p.grants) and city.state(NOW) is PartyState.SUSPENDED


def test_a_worker_takes_the_registry_the_master_loaded_without_loading_it_again(
    tmp_path: Path,
) -> None:
    """Start-up: each worker forked by the master serves the registry the master loaded
    and checked (the same object), and loads the file only when it changed since."""
    f = tmp_path / "registry.toml"
    f.write_text(text(verifier("v")))
    keeper = LastGoodRegistry(f, Registry.load(f))
    reg, error = keeper.for_worker(now=0.0)
    assert reg is keeper.registry and error is None
    f.write_text(text(verifier("v"), verifier("w")))  # in place: taken once seen settled
    reg, error = keeper.for_worker(now=1.0)
    assert reg is keeper.registry and set(reg.parties) == {"v"}
    reg, error = keeper.for_worker(now=1.0 + SETTLE)
    assert error is None and set(reg.parties) == {"v", "w"}


def test_last_good_registry_survives_a_broken_file(tmp_path: Path) -> None:
    """Issue 10.9: what the master keeps for workers (re)started while the file is broken:
    the last registry that loaded, not the first one, and why the file does not load."""
    f = tmp_path / "registry.toml"
    f.write_text(text(verifier("v")))
    keeper = LastGoodRegistry(f, Registry.load(f))
    f.write_text(text(verifier("v"), verifier("w")))
    keeper.refresh(now=0.0)
    keeper.refresh(now=SETTLE)  # changed in place: taken once seen settled
    assert keeper.error is None and set(keeper.registry.parties) == {"v", "w"}
    f.write_text(text(verifier("v"), verifier("w")) + "\n[[party]\n")
    keeper.refresh(now=1.0)
    keeper.refresh(now=1.0 + SETTLE)
    assert keeper.error is not None and str(f) in keeper.error
    assert set(keeper.registry.parties) == {"v", "w"}  # the last good one is kept
    reg, error = keeper.for_worker(now=2.0)
    assert reg is keeper.registry and error is not None and "not valid TOML" in error
    f.write_text(text(verifier("x")))
    keeper.refresh(now=3.0)
    keeper.refresh(now=3.0 + SETTLE)
    assert keeper.error is None and set(keeper.registry.parties) == {"x"}
    reg, error = keeper.for_worker(now=4.0)
    assert error is None and set(reg.parties) == {"x"}


UNSUPPORTED_KEY_CERT = b"""\
-----BEGIN CERTIFICATE-----
MIIBLDCB9qADAgECAhRMDzLdQ4+uk3qlrhSrHkY3lgPJhTAKBggqhkjOPQQDAjAQ
MQ4wDAYDVQQDDAV3ZWlyZDAgFw0yNjEyMDYyMDMzMTJaGA8yMTI2MTExMjIwMzMx
MlowEDEOMAwGA1UEAwwFd2VpcmQwMjAQBgcqhkjOPQIBBgUrgQQABgMeAARd6Jk2
mYLODG9v/zEAUjRkh2Qsg+LpOmQj3+jTo1MwUTAdBgNVHQ4EFgQUdAlL3C10pdfV
QhbDA3osAKM8n7YwHwYDVR0jBBgwFoAUdAlL3C10pdfVQhbDA3osAKM8n7YwDwYD
VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgMlADAiAg8Ah7G36PfObvq68Ah3OoUC
DwCQa/S+dNSbV5YeIVIuyA==
-----END CERTIFICATE-----
"""
"""A self-signed certificate on secp112r1, a curve `cryptography` does not load (made with
`openssl ecparam -name secp112r1`; valid until 2126)."""


def test_a_file_no_check_foresaw_is_refused_not_raised(tmp_path: Path) -> None:
    """Whatever a hand edit puts in the file, loading it raises RegistryError (naming the
    party and field) and nothing else: a worker's once-a-second reload, the master and the
    admin commands catch only that, and keep the registry in use. Before: a certificate
    whose key algorithm is not supported and a certificate path with a NUL escaped as
    UnsupportedAlgorithm and ValueError (a worker's registry-watch thread died of them: no
    later change, a suspension included, reached that worker)."""
    (tmp_path / "weird.pem").write_bytes(UNSUPPORTED_KEY_CERT)
    cases = {
        "weird.pem": verifier("v", credential=[{"kind": "mtls", "cert": "weird.pem"}]),
        "cannot read": verifier("v", credential=[{"kind": "mtls", "cert": "a\0b.pem"}]),
    }
    for needle, entry in cases.items():
        f = tmp_path / "registry.toml"
        f.write_text(text(entry))
        with pytest.raises(RegistryError) as e:
            Registry.load(f)
        assert "party 'v'" in str(e.value) and needle in str(e.value), str(e.value)


def test_a_certification_or_approval_until_the_last_day_loads() -> None:
    """A certification (認定, Act §17(2)) or an approval period (Act §38-2(1)) ending on the
    last day a date can hold: the first second after it is still a number (it was an
    OverflowError, escaping the reload like the cases above)."""
    t = verifier("v")
    t["title"] = [{"kind": "signature-verifier", "category": 5, "certified_until": date.max},
                  {"kind": "user-verifier", "category": 4},
                  {"kind": "specified-user-verifier", "approved": date(2024, 4, 1),
                   "approved_until": date.max}]  # fmt: skip
    t["agreement"]["services"].append("specified-verifier-token")
    p = build(text(t)).parties["v"]
    assert p.approval is not None and p.approval.in_force(NOW)
    last = datetime.combine(date.max, datetime.min.time(), tzinfo=JST).timestamp() + 86_400
    assert p.grants[Service.SIGN_REVOCATION_INFO].until == last == p.approval.until


def test_an_unforeseen_failure_while_checking_is_a_refused_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The net under the checks above: any exception while checking a file becomes a
    RegistryError naming the file, so a worker's reload keeps the registry in use."""
    from responder.registry import checks

    f = tmp_path / "registry.toml"
    f.write_text(text(verifier("v")))
    reg = Registry.load(f)

    def boom(self: object, data: object) -> None:
        raise ZeroDivisionError("no check foresaw this")

    monkeypatch.setattr(checks._Checker, "check", boom)
    f.write_text(text(verifier("v"), verifier("w")))
    assert reg.reload_if_changed(f, now=0.0) is None  # written in place: first seen
    with pytest.raises(RegistryError, match=r"cannot be checked \(ZeroDivisionError"):
        reg.reload_if_changed(f, now=SETTLE)
    assert (
        reg.reload_if_changed(f, now=SETTLE) is None
    )  # reported once; the registry in use is kept


def test_a_file_being_written_in_place_is_taken_once_it_has_settled(tmp_path: Path) -> None:
    """`cp new registry.toml` (or an editor saving in place) truncates the file and writes it
    again: a worker's reload in between read a shorter file that can be valid TOML, and took
    it: parties gone, a suspension (提供の停止) cut off the end lifted. A file changed in place
    is taken once it has not changed for `SETTLE` seconds; one replaced whole (a new file
    renamed over it, as the commands write) at once."""
    suspended = verifier("w")
    suspended["suspension"] = [{"article": "Act §37(4)(1)", "reason": "r",
                                "since": datetime(2025, 1, 1, tzinfo=JST)}]  # fmt: skip
    full = text(verifier("v"), suspended)
    f = tmp_path / "registry.toml"
    f.write_text(full)
    reg = Registry.load(f)
    f.write_text(full[: full.index("[[party.suspension]]")])  # half-way through the write
    assert reg.reload_if_changed(f, now=0.0) is None  # first seen: not taken
    assert reg.reload_if_changed(f, now=SETTLE / 10) is None  # not settled yet
    f.write_text(full.replace("Verifier v", "Verifier v2"))  # the write completes
    assert reg.reload_if_changed(f, now=SETTLE) is None  # changed since: first seen again
    assert reg.reload_if_changed(f, now=SETTLE + SETTLE / 10) is None
    new = reg.reload_if_changed(f, now=2 * SETTLE)
    assert new is not None and new.parties["v"].name == "Verifier v2"
    assert new.parties["w"].state(NOW) is PartyState.SUSPENDED
    # replaced whole: taken at once
    tmp = tmp_path / "next.toml"
    tmp.write_text(full)
    os.replace(tmp, f)
    again = new.reload_if_changed(f, now=0.0)  # at the first look, whatever the clock
    assert again is not None and again.parties["v"].name == "Verifier v"


def test_a_file_nested_too_deeply_is_refused(tmp_path: Path) -> None:
    """`tomllib` recurses once per nested array: a hand edit nesting 100,000 deep raised
    RecursionError out of the load (and out of a worker's registry watch)."""
    f = tmp_path / "registry.toml"
    f.write_text(text(verifier("v")) + "x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(RegistryError, match="nested too deeply"):
        Registry.load(f)


@pytest.mark.parametrize("article", ["Act §37(4)(１)", "Act §37(4)(٣)", "Act §37(4)(01)"])
def test_a_suspension_article_is_written_one_way_only(article: str) -> None:
    """A fullwidth or Arabic-Indic digit, or a leading zero, was read as the item (str.isdigit,
    int): the refusal then named an article no one wrote that way, and `registry resume
    --article 'Act §37(4)(1)'` found no such suspension in force."""
    t = verifier("v")
    t["suspension"] = [{"article": article, "since": datetime(2025, 1, 1, tzinfo=JST),
                        "reason": "r"}]  # fmt: skip
    assert "suspension[0].article" in refused(text(t))


@pytest.mark.parametrize("content", ["", " \n\t\n"], ids=["empty", "blank"])
def test_an_empty_registry_file_is_refused_and_the_last_good_one_kept(
    tmp_path: Path, content: str
) -> None:
    """A file of nothing but white space (truncated, or created and not yet written: no tool
    writes one without its version) was read as a registry of no party, and every call was
    refused 401 until it was fixed. It is refused as the builder refuses it
    (`crlbuilder.verifiers`): at a load, naming the file; on a reload, once, keeping the last
    good registry, whether truncated in place or replaced whole; taken again once written.
    A registry that says it names no party (``version = 2``) still loads."""
    f = tmp_path / "registry.toml"
    f.write_text(content)
    with pytest.raises(RegistryError, match=f"^{f}: empty: not a registry"):
        Registry.load(f)
    f.write_text("version = 2\n")
    assert Registry.load(f).parties == {}
    f.write_text(text(verifier("v")))
    keeper = LastGoodRegistry(f, Registry.load(f))
    f.write_text(content)  # truncated in place: taken, and refused, once settled
    keeper.refresh(now=0.0)
    keeper.refresh(now=SETTLE)
    assert keeper.error is not None and f"{f}: empty" in keeper.error
    assert set(keeper.registry.parties) == {"v"}
    reg, error = keeper.for_worker(now=1.0)
    assert set(reg.parties) == {"v"} and error == keeper.error
    whole = tmp_path / "next.toml"
    whole.write_text(text(verifier("w")))
    os.replace(whole, f)
    keeper.refresh(now=2.0)
    assert keeper.error is None and set(keeper.registry.parties) == {"w"}
    whole.write_text(content)
    os.replace(whole, f)  # replaced whole by an empty file: refused at once
    keeper.refresh(now=3.0)
    assert keeper.error is not None and "empty" in keeper.error
    assert set(keeper.registry.parties) == {"w"}
    f.write_text(text(verifier("x")))  # written at last
    keeper.refresh(now=4.0)
    keeper.refresh(now=4.0 + SETTLE)
    assert keeper.error is None and set(keeper.registry.parties) == {"x"}


@pytest.mark.parametrize(
    ("field", "entry"),
    [
        ("id", verifier("bank-a\n", name="Bank A")),
        (
            "token_sha256",
            verifier(
                "v",
                credential=[
                    {"kind": "token", "label": "t1", "token_sha256": sha("token-v") + "\n"}
                ],
            ),
        ),
        (
            "label",
            verifier(
                "v", credential=[{"kind": "token", "label": "t1\n", "token_sha256": sha("token-v")}]
            ),
        ),
    ],
    ids=["party-id", "token-hash", "credential-label"],
)
def test_an_id_hash_or_label_ending_in_a_line_feed_is_refused(
    field: str, entry: dict[str, Any]
) -> None:
    """Python's ``$`` matches before a final line feed too, and msgspec's patterns are Python's:
    ``"bank-a\\n"`` loaded as a party beside ``"bank-a"``, was answered, and the ledger (帳簿,
    Act §40), which takes a party id whole, refused to count what it was provided."""
    message = refused(text(entry, verifier("bank-a", name="Other")))
    assert field in message, message
