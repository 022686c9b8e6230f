"""`responder registry add|update|show|list` with a delegation (Ord §29, §60): set, shown,
audited, cleared, and refused with the registry unchanged when the law does not allow it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from responder.registry.lookup import Registry
from responder.registry.schema import PartyEntry, UserVerifierTitle
from responder.registry.vocabulary import Service, Title
from tests.test_registrycli import act, audit_lines, reg, run

__all__ = ["reg"]  # the fixture, used by name

CONTRACTOR = "both-verifier"
"""A demo party, 署名検証者 and 利用者証明検証者, made a contractor certified under item 6."""

PRINCIPAL = [
    "--name", "テスト市", "--address", "どこか一丁目1", "--office", "どこか二丁目2",
    "--start", "2024-04-01", "--title", "signature-verifier", "--title", "user-verifier",
    "--category", "6", "--delegated-to", CONTRACTOR, "--filed-by", CONTRACTOR, "--new-token",
]  # fmt: skip


def certify(reg: Path) -> None:
    assert act(reg, "update", CONTRACTOR, "--category", "6", "--certified-until", "2099-12-31") == 0


def entry(reg: Path, pid: str) -> PartyEntry:
    e = Registry.load(reg).file.find(pid)
    assert isinstance(e, PartyEntry)
    return e


def test_a_principal_is_added_without_an_agreement_and_shown_with_its_contractor(
    reg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certify(reg)
    assert act(reg, "add", "city-1", *PRINCIPAL) == 0
    e = entry(reg, "city-1")
    assert e.agreement is None  # served under the contractor's (Ord §29(4), §60(2))
    assert e.notification is not None and e.notification.filed_by == CONTRACTOR
    assert [getattr(t, "delegated_to", None) for t in e.title] == [CONTRACTOR, CONTRACTOR]
    assert all(getattr(t, "certified_until", None) is None for t in e.title)
    party = Registry.load(reg).parties["city-1"]
    assert (party.contractor, party.agreement_holder) == (CONTRACTOR, CONTRACTOR)
    last = audit_lines(reg)[-1]
    assert (last["action"], last["party"]) == ("add", "city-1")
    after = last["after"]
    assert isinstance(after, dict)
    assert after["title"][0]["delegated_to"] == CONTRACTOR
    assert after["notification"]["filed_by"] == CONTRACTOR
    capsys.readouterr()

    assert act(reg, "show", "city-1", "--format", "json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["contractor"], shown["agreement_of"]) == (CONTRACTOR, CONTRACTOR)
    assert act(reg, "show", CONTRACTOR) == 0
    assert "contractor for (電子署名等確認業務委託者, Ord §29): city-1" in capsys.readouterr().out
    assert act(reg, "show", "city-1") == 0
    text = capsys.readouterr().out
    assert f"# contractor (電子署名等確認業務受託者, Ord §29): {CONTRACTOR}" in text
    assert "delegated_to" in text
    assert run("list", "--registry", str(reg), "--format", "json") == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["city-1"]["contractor"] == CONTRACTOR and rows["sig-verifier"]["contractor"] is None
    assert run("list", "--registry", str(reg)) == 0
    assert f"contractor {CONTRACTOR}" in capsys.readouterr().out


def test_a_delegation_is_cleared_and_set_again(
    reg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certify(reg)
    assert act(reg, "add", "city-1", *PRINCIPAL) == 0
    before = reg.read_bytes()
    # its own certification and agreement are needed once it delegates no more
    assert act(reg, "update", "city-1", "--no-delegation") == 2
    assert reg.read_bytes() == before
    assert act(reg, "update", "city-1", "--no-delegation", "--certified-until", "2099-12-31",
               "--liability", "its own terms") == 0  # fmt: skip
    e = entry(reg, "city-1")
    assert e.agreement is not None and "auth-revocation-info" in e.agreement.services
    assert e.notification is not None and e.notification.filed_by is None
    assert all(getattr(t, "delegated_to", None) is None for t in e.title)
    assert Registry.load(reg).parties["city-1"].contractor is None
    # delegated again: the contractor's agreement is deemed its own on both sides (Ord
    # §29(4), §60(2)), so its own agreement, which covers them, counts no more: said until
    # dropped
    capsys.readouterr()
    assert act(reg, "update", "city-1", "--delegated-to", CONTRACTOR) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "--drop-agreement" in err
    assert "party 'city-1': agreement.services: " in err
    e = entry(reg, "city-1")
    assert all(getattr(t, "certified_until", 0) is None for t in e.title)
    assert Registry.load(reg).parties["city-1"].agreement_holder == CONTRACTOR
    assert act(reg, "update", "city-1", "--drop-agreement") == 0
    assert "warning" not in capsys.readouterr().err
    # nor may it make one: there is no side left for it
    assert act(reg, "update", "city-1", "--liability", "its own terms") == 2
    assert "no agreement of its own to make" in capsys.readouterr().err
    last = [(line["action"], line["party"]) for line in audit_lines(reg)[-4:]]
    assert last == [("add", "city-1")] + [("update", "city-1")] * 3


def test_a_delegation_the_law_does_not_allow_is_refused_unchanged(
    reg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = reg.read_bytes()
    # the demo contractor is of category 4: not certified under item 6 (Ord §29(1))
    assert act(reg, "add", "city-1", *PRINCIPAL) == 2
    assert "is not certified under Act §17(1) item 6" in capsys.readouterr().err
    assert reg.read_bytes() == before
    certify(reg)
    before = reg.read_bytes()
    assert act(reg, "update", "sig-verifier", "--filed-by", CONTRACTOR) == 2
    assert "notification.filed_by: only a contractor" in capsys.readouterr().err
    assert act(reg, "update", "sig-verifier", "--delegated-to", CONTRACTOR) == 2
    assert "only a party deemed certified under Act §17(1) item 6" in capsys.readouterr().err
    assert act(reg, "update", "member-1", "--delegated-to", CONTRACTOR) == 2
    assert "holds neither" in capsys.readouterr().err
    assert reg.read_bytes() == before


def test_a_user_verifier_principal_of_a_sign_only_contractor_needs_its_own_agreement(
    reg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ord §60(2): only a contractor that is a 利用者証明検証者 itself has its agreement deemed
    the principal's for that title: the principal's own agreement covers that side only, the
    contractor's is deemed its own on the sign side (Ord §29(4))."""
    assert act(reg, "update", "sig-verifier", "--category", "6", "--certified-until",
               "2099-12-31") == 0  # fmt: skip
    flags = [f.replace(CONTRACTOR, "sig-verifier") for f in PRINCIPAL]
    assert act(reg, "add", "city-2", *flags) == 2
    assert "'sig-verifier' is not a 利用者証明検証者" in capsys.readouterr().err
    assert act(reg, "add", "city-2", *flags, "--liability", "its own terms") == 0
    party = Registry.load(reg).parties["city-2"]
    assert party.contractor == "sig-verifier" and party.agreement_holder == "sig-verifier"
    e = entry(reg, "city-2")
    assert e.agreement is not None
    assert set(e.agreement.services) == {"auth-revocation-info", "auth-crl-file",
                                         "corresponding-auth-serial"}  # fmt: skip
    assert "sign-revocation-info" in party.grants and "auth-revocation-info" in party.grants
    capsys.readouterr()
    assert act(reg, "show", "city-2") == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert (
        "agreement that counts: its contractor's, deemed its own for signature-verifier "
        "(Ord §29(4), §60(2)): sig-verifier, its own for the rest"
    ) in shown
    assert act(reg, "show", "city-2", "--format", "json") == 0
    assert json.loads(capsys.readouterr().out)["deemed"] == ["signature-verifier"]
    assert any(isinstance(t, UserVerifierTitle) and t.delegated_to for t in e.title)


def test_the_help_cites_the_ordinance(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("add", "update"):
        with pytest.raises(SystemExit):
            run(command, "--help")
        out = capsys.readouterr().out
        assert "--delegated-to" in out and "Ord §29, §60" in " ".join(out.split())
        assert "--filed-by" in out and "§29(3), §60(1)" in out
    with pytest.raises(SystemExit):
        run("update", "--help")
    out = " ".join(capsys.readouterr().out.split())
    assert "--no-delegation" in out and "--drop-agreement" in out
    assert "less what its contractor's agreement covers, Ord §29(4), §60(2)" in out
    with pytest.raises(SystemExit):
        run("end", "--help")
    out = " ".join(capsys.readouterr().out.split())
    assert "a contractor's (電子署名等確認業務受託者, Ord §29) is refused while a principal" in out


def test_a_contractor_is_ended_only_after_its_principals(
    reg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`registry end` of a contractor a principal still rests on is refused, naming the
    principal, the field and the way out, nothing written nor audited; once the principal is
    ended (or moved), the contractor ends. A contractor's re-categorisation is refused the
    same way, naming the principal."""
    certify(reg)
    assert act(reg, "add", "city-1", *PRINCIPAL) == 0
    capsys.readouterr()
    before, lines = reg.read_bytes(), len(audit_lines(reg))
    assert act(reg, "end", CONTRACTOR, "--reason", "withdrawn") == 2
    err = capsys.readouterr().err
    assert f"party 'city-1': ended: its contractor {CONTRACTOR!r} ends at" in err
    assert "registry end city-1" in err and "--no-delegation" in err
    assert act(reg, "update", CONTRACTOR, "--category", "5") == 2
    assert "party 'city-1': title.delegated_to:" in capsys.readouterr().err
    assert reg.read_bytes() == before and len(audit_lines(reg)) == lines
    assert act(reg, "end", "city-1", "--reason", "withdrawn") == 0
    assert act(reg, "end", CONTRACTOR, "--reason", "withdrawn") == 0
    last = [(line["action"], line["party"]) for line in audit_lines(reg)[-2:]]
    assert last == [("end", "city-1"), ("end", CONTRACTOR)]


def test_a_contractor_takes_up_the_title_its_principal_agreed_itself(
    reg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 署名検証者-only contractor becomes a 利用者証明検証者 too: its agreement is then its
    principal's on the auth side (Ord §60(2)). The change is taken with a warning naming the
    principal's own auth services, which the principal then drops: no dead end (refused, the
    contractor's change would wait for the drop, which its still needed agreement refuses)."""
    assert act(reg, "update", "sig-verifier", "--category", "6", "--certified-until",
               "2099-12-31") == 0  # fmt: skip
    flags = [f.replace(CONTRACTOR, "sig-verifier") for f in PRINCIPAL]
    assert act(reg, "add", "city-2", *flags, "--liability", "its own terms") == 0
    assert act(reg, "update", "city-2", "--drop-agreement") == 2  # still needed for auth
    capsys.readouterr()
    assert act(reg, "update", "sig-verifier", "--title", "signature-verifier", "--title",
               "user-verifier", "--category", "6", "--certified-until", "2099-12-31",
               "--service", "sign-revocation-info", "--service", "auth-revocation-info",
               "--method", "ocsp") == 0  # fmt: skip
    err = " ".join(capsys.readouterr().err.split())
    assert "warning: " in err and "party 'city-2': agreement.services: auth-crl-file" in err
    city = Registry.load(reg).parties["city-2"]
    assert city.deemed == {Title.SIGNATURE_VERIFIER, Title.USER_VERIFIER}
    assert set(city.grants) == {Service.SIGN_REVOCATION_INFO, Service.AUTH_REVOCATION_INFO}
    assert act(reg, "update", "city-2", "--drop-agreement") == 0
    assert "warning" not in capsys.readouterr().err


def test_a_contractor_is_ended_with_its_principals_in_one_change(
    reg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`registry end --with-principals`: the contractor and each principal that would outlive
    it end at the same instant, in one change, each audited, the principals under Ord §29(1);
    a party that is no contractor is told to give no --with-principals."""
    certify(reg)
    assert act(reg, "add", "city-1", *PRINCIPAL) == 0
    assert act(reg, "end", "sig-verifier", "--reason", "withdrawn", "--with-principals") == 2
    assert "give no --with-principals" in capsys.readouterr().err
    assert act(reg, "end", CONTRACTOR, "--reason", "withdrawn", "--with-principals") == 0
    out = capsys.readouterr().out
    assert f"ended: {CONTRACTOR}, city-1" in out or f"ended: city-1, {CONTRACTOR}" in out
    c, p = entry(reg, CONTRACTOR), entry(reg, "city-1")
    assert c.ended is not None and p.ended is not None and c.ended.at == p.ended.at
    assert p.ended.article == "Ord §29(1)" and c.ended.article is None
    last = {(line["action"], line["party"]) for line in audit_lines(reg)[-2:]}
    assert last == {("end", CONTRACTOR), ("end", "city-1")}
