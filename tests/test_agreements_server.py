"""Parties and agreements against the real server: the allow/deny matrix, suspension, quotas,
the CRL cycle, the ledger under SIGKILL, and the published report."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from cryptography.x509 import ocsp

from crlbuilder.model import JPKI_FAMILIES, Answer, CertStatus, Family
from crlbuilder.rules import JST
from responder.ledger import Ledger
from tests.conftest import Built, run_tool
from tests.support.harness import Server, request_for, start_server, status_of
from tests.support.wait import until
from tests.test_v1_server import by_serial, ledger_totals, v1

PARTIES = ("sig-verifier", "auth-verifier", "both-verifier", "group-verifier", "member-1")
ALLOWED: dict[str, set[Family]] = {
    "sig-verifier": {Family.SIGN_CARD, Family.SIGN_MOBILE},
    "auth-verifier": {Family.AUTH_CARD, Family.AUTH_MOBILE},
    "both-verifier": set(Family),
    "group-verifier": {Family.SIGN_CARD, Family.SIGN_MOBILE},
    "member-1": set(),  # a 署名確認者 is answered by its group only (Act §20(1))
}
"""What each demo title may receive, written from the Act (§18(1), §18(2), §37(1), §37(2), §20(1))."""


def crl_get(s: Server, name: str, party: str) -> int:
    req = urllib.request.Request(
        f"{s.url}/crl/{name}", headers={"Authorization": f"Bearer {s.token(party)}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as e:
        assert e.headers["Content-Type"] == "application/problem+json" or e.code == 404
        return int(e.code)


def v1_status(s: Server, a: Answer, party: str) -> tuple[int, dict[str, object]]:
    """POST /v1/status with ``a`` as the one entry: the HTTP status and that entry's answer."""
    body = json.dumps({"entries": [{"issuer": a.issuer, "serial": f"{a.serial:x}"}]}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {s.token(party)}"}
    req = urllib.request.Request(f"{s.url}/v1/status", data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status), json.loads(r.read())["entries"][0]
    except urllib.error.HTTPError as e:
        assert e.headers["Content-Type"] == "application/problem+json"
        return int(e.code), json.loads(e.read())


def v1_watch(s: Server, a: Answer, party: str) -> tuple[int, dict[str, object]]:
    """POST /v1/watch adding ``a``: the HTTP status and the answer (or problem)."""
    body = json.dumps({"add": [{"issuer": a.issuer, "serial": f"{a.serial:x}"}]}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {s.token(party)}"}
    req = urllib.request.Request(f"{s.url}/v1/watch", data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            answer: dict[str, object] = json.loads(r.read())
            return int(r.status), answer
    except urllib.error.HTTPError as e:
        assert e.headers["Content-Type"] == "application/problem+json"
        return int(e.code), json.loads(e.read())


def registry_cmd(s: Server, *args: str) -> None:
    run_tool("responder", "registry", *args, "--registry", str(s.registry), "--actor", "test")


def test_matrix_of_titles_families_and_methods(built: Built, tmp_path: Path) -> None:
    with start_server(built, tmp_path) as s:
        for fam in JPKI_FAMILIES:  # tokens (Act §38-3): tests/test_token_server.py
            a = next(x for x in built.answers if x.family is fam and x.status is CertStatus.GOOD)
            body = request_for(s, a)
            for party in PARTIES:
                allowed = fam in ALLOWED[party]
                got = status_of(s.post(body, token=s.token(party)))
                want = (
                    ocsp.OCSPResponseStatus.SUCCESSFUL
                    if allowed
                    else ocsp.OCSPResponseStatus.UNAUTHORIZED
                )
                assert got is want, (party, fam, "ocsp")
                code = crl_get(s, f"{a.issuer}.crl", party)
                assert code == (200 if allowed else 403), (party, fam, "crl-file")
                # the JSON batch status (method json): a family the party may not receive
                # is refused per entry; a party receiving neither revocation service, per call
                code, entry = v1_status(s, a, party)
                if not ALLOWED[party]:
                    assert code == 403, (party, fam, "json")
                else:
                    assert code == 200, (party, fam, "json")
                    assert (entry["status"] != "refused") is allowed, (party, fam, "json")
                # the changes feed's watch list: the same families, refused per entry
                code, watched = v1_watch(s, a, party)
                if not ALLOWED[party]:
                    assert code == 403, (party, fam, "watch")
                else:
                    assert code == 200, (party, fam, "watch")
                    assert (watched["refused"] == []) is allowed, (party, fam, "watch")


RECORD_INFO: dict[str, set[Family]] = {
    "sig-verifier": {Family.SIGN_CARD, Family.SIGN_MOBILE},
    "auth-verifier": set(),  # never sign information by that title
    "both-verifier": {Family.SIGN_CARD, Family.SIGN_MOBILE},
    "group-verifier": {Family.SIGN_CARD, Family.SIGN_MOBILE},  # for its members (§20(4))
    "member-1": set(),  # asks through its group (§21(4))
}
"""Who may receive 特定署名用電子証明書記録情報, about which family (Act §18(3): 署名検証者等, sign only)."""
_SIGN_PAIR = {"sig-verifier", "both-verifier"}  # §18(4): a 署名検証者, not a group
_CARD_PAIR = {"both-verifier"}  # §18(5): a 署名検証者 that is also a 利用者証明検証者
_AUTH_PAIR = {"auth-verifier", "both-verifier"}  # §37(3): a 利用者証明検証者
CORRESPONDING: dict[tuple[Family, Family], set[str]] = {
    (Family.SIGN_CARD, Family.SIGN_MOBILE): _SIGN_PAIR,
    (Family.SIGN_MOBILE, Family.SIGN_CARD): _SIGN_PAIR,
    (Family.AUTH_CARD, Family.SIGN_CARD): _CARD_PAIR,
    (Family.SIGN_CARD, Family.AUTH_CARD): _CARD_PAIR,
    (Family.AUTH_CARD, Family.AUTH_MOBILE): _AUTH_PAIR,
    (Family.AUTH_MOBILE, Family.AUTH_CARD): _AUTH_PAIR,
}
"""Who may receive each corresponding serial (Act §18(4), §18(5), §37(3))."""


def test_matrix_of_titles_for_record_info_and_corresponding_serials(
    built: Built, tmp_path: Path
) -> None:
    extra = ("--facts-key-file", str(built.facts_key))
    with start_server(built, tmp_path, extra=extra) as s:
        for fam in JPKI_FAMILIES:  # a certificate that lost effect, as Act §19(5) asks
            a = next(x for x in built.answers if x.family is fam and x.status is CertStatus.REVOKED)
            for party in PARTIES:
                code, _, got = v1(s, "/v1/record-info", {"certificate": by_serial(a)}, party)
                assert code == (200 if fam in RECORD_INFO[party] else 403), (party, fam, got)
        for (asked, want), who in CORRESPONDING.items():
            a = next(x for x in built.answers if x.family is asked and x.status is CertStatus.GOOD)
            body = {"certificate": by_serial(a), "counterpart": want.value}
            for party in PARTIES:
                code, _, got = v1(s, "/v1/corresponding", body, party)
                assert code == (200 if party in who else 403), (party, asked, want, got)


@pytest.mark.real_clock  # registry changes reach workers by their timed watch
def test_suspension_and_resumption_within_a_second(built: Built, tmp_path: Path) -> None:
    with start_server(built, tmp_path) as s:
        a = next(x for x in built.answers if x.family is Family.SIGN_CARD)
        body = request_for(s, a)
        token = s.token("sig-verifier")
        assert status_of(s.post(body, token=token)) is ocsp.OCSPResponseStatus.SUCCESSFUL
        registry_cmd(
            s, "suspend", "--id", "sig-verifier", "--article", "Act §18(6)(1)", "--reason", "test"
        )
        t0 = time.monotonic()
        until(
            lambda: status_of(s.post(body, token=token)) is ocsp.OCSPResponseStatus.UNAUTHORIZED,
            timeout=1.5, what="suspension in effect within a second", interval=0.02,
        )  # fmt: skip
        # one second after the change every worker has it: many requests, all refused
        time.sleep(max(0.0, t0 + 1.1 - time.monotonic()))
        assert all(
            status_of(s.post(body, token=token)) is ocsp.OCSPResponseStatus.UNAUTHORIZED
            for _ in range(20)
        )
        assert crl_get(s, f"{a.issuer}.crl", "sig-verifier") == 403
        registry_cmd(s, "resume", "--id", "sig-verifier")
        until(
            lambda: status_of(s.post(body, token=token)) is ocsp.OCSPResponseStatus.SUCCESSFUL,
            timeout=1.5, what="resumption in effect within a second", interval=0.02,
        )  # fmt: skip
        audit = (s.registry.parent / "registry.audit.jsonl").read_text()
        assert '"action":"suspend"' in audit.replace(
            " ", ""
        ) and '"action":"resume"' in audit.replace(" ", "")


def _quota_remaining(s: Server) -> dict[str, float]:
    """``jpkiva_quota_remaining`` by party, from the admin listener."""
    return {
        dict(labels)["party"]: value
        for (name, labels), value in s.scrape().items()
        if name == "jpkiva_quota_remaining"
    }


@pytest.mark.real_clock  # registry changes reach workers by their timed watch
def test_quota_and_cycle_across_workers(built: Built, tmp_path: Path) -> None:
    with start_server(built, tmp_path) as s:
        registry_cmd(
            s, "update", "--id", "auth-verifier", "--quota-per-day", "30", "--crl-cycle", "3600"
        )
        time.sleep(1.2)  # the workers pick the change up within a second
        a = next(x for x in built.answers if x.family is Family.AUTH_CARD)
        body = request_for(s, a)
        token = s.token("auth-verifier")
        results = [status_of(s.post(body, token=token)) for _ in range(10)]
        # what the party has left today over both workers (the dashboard's gauge); parties
        # without a daily quota have no series
        assert _quota_remaining(s) == {"auth-verifier": 20.0}
        results += [status_of(s.post(body, token=token)) for _ in range(30)]
        ok = results.count(ocsp.OCSPResponseStatus.SUCCESSFUL)
        assert 30 <= ok <= 30 + 1  # documented bound: workers - 1 over the quota
        assert results.count(ocsp.OCSPResponseStatus.TRY_LATER) == 40 - ok
        assert _quota_remaining(s) == {"auth-verifier": 0.0}
        # the CRL cycle (周期): one download per hour, whichever worker answers
        registry_cmd(s, "update", "--id", "auth-verifier", "--quota-per-day", "100000")
        time.sleep(1.2)
        assert crl_get(s, "auth-card-g1.crl", "auth-verifier") == 200
        assert [crl_get(s, "auth-card-g1.crl", "auth-verifier") for _ in range(6)] == [429] * 6
        # per file (issue 9.10): the same generation's delta CRL has a cycle of its own
        assert crl_get(s, "auth-card-g1-delta.crl", "auth-verifier") == 200
        # another party is not affected
        assert crl_get(s, "auth-card-g1.crl", "both-verifier") == 200


def test_ledger_equals_what_clients_received_after_sigkill(built: Built, tmp_path: Path) -> None:
    """帳簿 (Act §40): a worker killed with SIGKILL under load loses no counted request."""
    with start_server(built, tmp_path) as s:
        a = next(
            x
            for x in built.answers
            if x.family is Family.SIGN_CARD and x.status is CertStatus.REVOKED
        )
        body = request_for(s, a)
        token = s.token("sig-verifier")
        received = [0] * 6
        stop = threading.Event()

        def client(i: int) -> None:
            while not stop.is_set():
                try:
                    if status_of(s.post(body, token=token)) is ocsp.OCSPResponseStatus.SUCCESSFUL:
                        received[i] += 1
                except (OSError, urllib.error.URLError, ValueError):
                    pass  # the connection went down with the killed worker

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(received))]
        first = datetime.now(JST).date()  # the ledger's days are JST days
        for t in threads:
            t.start()
        time.sleep(1.5)
        children = Path(f"/proc/{s.pid}/task/{s.pid}/children").read_text().split()
        os.kill(int(children[0]), signal.SIGKILL)
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        time.sleep(
            1.2
        )  # the surviving workers' once-a-second flush is irrelevant: counts live in mmap
        ledger = Ledger.open(tmp_path / "ledger")
        try:
            ledger.collect()
            # every day the clients ran on: at 23:59 JST on a month's last day, the counts of
            # two months (this month's first day to today lost the first one's)
            counted = sum(
                r.count
                for r in ledger.rows(first, datetime.now(JST).date())
                if r.party == "sig-verifier"
            )
        finally:
            ledger.close()
        got = sum(received)
        assert got > 100
        # counted before the bytes are sent: a killed worker may have counted answers it then
        # could not send (at most one per connection it held), never the reverse
        assert got <= counted <= got + len(received), (got, counted)


@pytest.mark.real_clock  # worker 0's collection timer is a timed wait
def test_report_published_without_authentication(built: Built, tmp_path: Path) -> None:
    """Read-only: the report is as of worker 0's last collection (every 0.5 s here), which
    it says; a request for it collects nothing itself."""
    with start_server(built, tmp_path, extra=("--ledger-collect-interval", "0.5")) as s:
        a = next(x for x in built.answers if x.family is Family.AUTH_CARD)
        years = {datetime.now(JST).year}  # the report's years are JST years
        for _ in range(3):
            s.post(request_for(s, a), token=s.token("auth-verifier"))
        years.add(year := datetime.now(JST).year)  # both, when 00:00 JST of 1 January passed

        def published() -> str:
            text = ""
            for y in sorted(years):
                with urllib.request.urlopen(f"{s.url}/reports/{y}.json", timeout=30) as r:
                    doc = msgspec.json.decode(r.read())
                    assert doc["as_of"]["scope"] == "node", doc["as_of"]
                    text += msgspec.json.encode(doc).decode()
            return text if "auth-verifier" in text else ""

        text = until(published, 20, "the next collection's counts in the report", interval=0.2)
        assert str(a.serial) not in text
        with urllib.request.urlopen(f"{s.url}/reports/{year}", timeout=30) as r:
            html = r.read().decode()
        assert "<svg" in html and "報告書" in html
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{s.url}/reports/not-a-year", timeout=10)


@pytest.mark.real_clock  # worker 0's merge timer is a timed wait
def test_ledger_merged_periodically(built: Built, tmp_path: Path) -> None:
    """Worker 0 merges every worker's counts into ledger.sqlite3 on its own, every collect_interval."""
    with start_server(built, tmp_path, extra=("--ledger-collect-interval", "0.5")) as s:
        a = next(x for x in built.answers if x.family is Family.AUTH_CARD)
        body = request_for(s, a)
        for _ in range(10):
            assert (
                status_of(s.post(body, token=s.token("auth-verifier")))
                is ocsp.OCSPResponseStatus.SUCCESSFUL
            )

        def merged() -> int:
            ledger = Ledger.open(tmp_path / "ledger")  # opened, not collected: what worker 0 merged
            try:
                today = datetime.now(JST).date()  # the ledger's days are JST days
                days = (today - timedelta(days=1), today)  # counted at 23:59 JST, polled at 00:00
                return sum(r.count for r in ledger.rows(*days) if r.party == "auth-verifier")
            finally:
                ledger.close()

        until(lambda: merged() >= 10, what="10 requests merged into the ledger", interval=0.5)
        assert merged() == 10


VALIDATION: dict[str, str] = {
    "sig-verifier": "answered",  # Act §19(1)
    "auth-verifier": "refused",  # never sign information by that title
    "both-verifier": "answered",
    "group-verifier": "answered",  # for its members (§20(1), §21(1))
    "member-1": "refused",  # answered by its group, not by the 機構 (§20(1))
}
"""Who may use POST /v1/verify (the validation service) at the 機構's appliance."""


def test_matrix_of_titles_for_signature_validation(built: Built, tmp_path: Path) -> None:
    """Per title and family: the call is refused (403) or each item answered; a sign
    certificate's signature is ``ok``, an auth certificate's ``not-a-sign-certificate``."""
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.support.signing import pkcs1

    key = serialization.load_pem_private_key(
        (built.population / "samples" / "subject-key.pem").read_bytes(), None
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    items = []
    for fam in JPKI_FAMILIES:
        a = next(x for x in built.answers if x.family is fam and x.case == "good")
        cert = x509.load_pem_x509_certificate((built.population / a.cert).read_bytes())
        items.append({
            "format": "pkcs1", "signature": base64.b64encode(pkcs1(b"doc", key)).decode(),
            "certificate": base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode(),
            "data": base64.b64encode(b"doc").decode(),
        })  # fmt: skip
    want = ["ok" if f.is_sign else "not-a-sign-certificate" for f in JPKI_FAMILIES]
    with start_server(built, tmp_path) as s:
        for party, expect in VALIDATION.items():
            code, _, got = v1(s, "/v1/verify", {"items": items}, party)
            if expect == "refused":
                assert code == 403, (party, got)
            else:
                assert code == 200 and [r["result"] for r in got["results"]] == want, (party, got)


def _v1_batch(s: Server, answers: list[Answer], party: str) -> tuple[int, dict[str, object]]:
    """POST /v1/status with ``answers`` as entries: the HTTP status and the answer or problem."""
    body = json.dumps({"entries": [by_serial(a) for a in answers]}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {s.token(party)}"}
    req = urllib.request.Request(f"{s.url}/v1/status", data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status), json.loads(r.read())
    except urllib.error.HTTPError as e:
        assert e.headers["Content-Type"] == "application/problem+json"
        return int(e.code), json.loads(e.read())


def test_provisions_per_day_shared_by_both_workers(built: Built, tmp_path: Path) -> None:
    """件数 (provisions_per_day): every worker takes from one count; a batch that would pass
    it is refused whole and counted nowhere; the gauge and the ledger agree."""
    run_tool("responder", "registry", "init", "--pki", str(built.pki), "--out",
             str(tmp_path / "registry.toml"))  # fmt: skip
    run_tool("responder", "registry", "update", "--registry", str(tmp_path / "registry.toml"),
             "--id", "auth-verifier", "--provisions-per-day", "25", "--actor", "test")  # fmt: skip
    auth = [x for x in built.answers if x.family is Family.AUTH_CARD]
    with start_server(built, tmp_path) as s:
        # 20 calls of one entry each, new connections: spread over both workers
        assert [_v1_batch(s, auth[:1], "auth-verifier")[0] for _ in range(20)] == [200] * 20
        code, problem = _v1_batch(s, (auth * 10)[:10], "auth-verifier")
        assert code == 429 and problem["rule"] == "quota" and problem["remaining"] == 5
        code, got = _v1_batch(s, (auth * 5)[:5], "auth-verifier")
        assert code == 200 and len(got["entries"]) == 5  # type: ignore[arg-type]
        assert _v1_batch(s, auth[:1], "auth-verifier")[0] == 429
        remaining = {
            dict(labels)["party"]: value
            for (name, labels), value in s.scrape().items()
            if name == "jpkiva_provisions_remaining"
        }
        assert remaining == {"auth-verifier": 0.0}
        totals = ledger_totals(s.d / "ledger")
        assert totals[("auth-verifier", "auth-revocation-info", "json")] == 25
