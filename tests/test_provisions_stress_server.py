"""件数 (provisions_per_day) under concurrency on the real server: many connections over
both workers, mixed routes (OCSP of several CertIDs, /v1/status batches small and threaded,
CRL downloads the cycle or the per-second quota refuses after the provision was taken);
what the clients received, the ledger and the gauge agree, and the bound holds.

``AQ_BOUND``, ``AQ_THREADS``, ``AQ_ROUNDS``, ``AQ_QPS`` (0: no per-second quota) make it
heavier by hand (the acceptance run: 4,000 with 16 threads of 120 rounds: 4,000 received,
4,000 counted); the suite's run is small."""

from __future__ import annotations

import json
import os
import random
import threading
import urllib.error
import urllib.request
from datetime import date, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.x509 import ocsp

from crlbuilder.model import Family
from crlbuilder.ocsp.response import issuer_hashes
from crlbuilder.rules import JST
from responder.ledger import Ledger
from tests.conftest import Built, run_tool
from tests.support.harness import Server, start_server
from tests.test_ocspreq import a_request
from tests.test_v1_server import by_serial, ledger_totals

PARTY = "both-verifier"
BOUND = int(os.environ.get("AQ_BOUND", "300"))
THREADS = int(os.environ.get("AQ_THREADS", "8"))
ROUNDS = int(os.environ.get("AQ_ROUNDS", "40"))


def _call(s: Server, method: str, path: str, body: bytes | None, ctype: str) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {s.token(PARTY)}"}
    if body is not None:
        headers["Content-Type"] = ctype
    req = urllib.request.Request(f"{s.url}{path}", data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()


def _per_day(directory: Path) -> dict[date, int]:
    """The party's provisions in the ledger per Japan day (the bound's day), any day near."""
    ledger = Ledger.open(directory)
    try:
        ledger.collect()
        today = datetime.now(JST).date()
        out: dict[date, int] = {}
        for r in ledger.rows(today - timedelta(days=1), today + timedelta(days=1), party=PARTY):
            out[r.day] = out.get(r.day, 0) + r.count
        return out
    finally:
        ledger.close()


def test_provisions_bound_holds_under_mixed_concurrent_load(built: Built, tmp_path: Path) -> None:
    registry = tmp_path / "registry.toml"
    run_tool("responder", "registry", "init", "--pki", str(built.pki), "--out", str(registry))
    run_tool("responder", "registry", "update", "--registry", str(registry), "--id", PARTY,
             "--provisions-per-day", str(BOUND), "--crl-cycle", "3600",
             "--quota-per-second", os.environ.get("AQ_QPS", "60"), "--actor", "test")  # fmt: skip
    sign = [a for a in built.answers if a.family is Family.SIGN_CARD]
    by_issuer: dict[str, list[int]] = {}
    for a in sign:
        by_issuer.setdefault(a.issuer_cert, []).append(a.serial)
    issuer_cert, serials = max(by_issuer.items(), key=lambda kv: len(kv[1]))
    issuer = x509.load_pem_x509_certificate((built.population / issuer_cert).read_bytes())
    name_hash, key_hash = issuer_hashes(issuer, "sha1")

    def ocsp_body(k: int) -> bytes:
        return a_request([{"hash_algorithm": {"algorithm": "sha1"},
                           "issuer_name_hash": name_hash, "issuer_key_hash": key_hash,
                           "serial_number": random.choice(serials) + 7 * i}
                          for i in range(k)])  # fmt: skip

    pool = [a for a in built.answers if a.family is not Family.SPECIFIED_VERIFIER_TOKEN]
    # the 失効情報ファイル only: the token issuer's CRL (Act §38-3) is no provision
    crls = sorted(
        p.name for p in built.crl_dir.glob("*.crl") if p.name.startswith(("sign-", "auth-"))
    )
    assert len(crls) >= 4, crls
    received = [0] * THREADS
    outcomes: list[dict[str, int]] = [{} for _ in range(THREADS)]
    errors: list[str] = []
    with start_server(built, tmp_path) as s:

        def client(t: int) -> None:
            rnd = random.Random(t)
            for _ in range(ROUNDS):
                pick = rnd.random()
                try:
                    if pick < 0.4:
                        k = rnd.randint(1, 4)
                        code, raw = _call(s, "POST", "/ocsp", ocsp_body(k),
                                          "application/ocsp-request")  # fmt: skip
                        st = ocsp.load_der_ocsp_response(raw).response_status.name
                        key = f"ocsp-{st}"
                        if st == "SUCCESSFUL":
                            received[t] += k
                            outcomes[t]["n-ocsp"] = outcomes[t].get("n-ocsp", 0) + k
                    elif pick < 0.8:
                        k = rnd.choice((1, 3, 10, 25, 700 if rnd.random() < 0.3 else 5))
                        entries = [by_serial(rnd.choice(pool)) for _ in range(k)]
                        body = json.dumps({"entries": entries}).encode()
                        code, raw = _call(s, "POST", "/v1/status", body, "application/json")
                        key = f"v1-{code}-{json.loads(raw).get('rule', '')}"
                        if code == 200:
                            ans = json.loads(raw)["entries"]
                            received[t] += len(ans)
                            outcomes[t]["n-v1"] = outcomes[t].get("n-v1", 0) + len(ans)
                            if len(ans) != k or any(
                                "result" not in x and "status" not in x for x in ans
                            ):
                                errors.append(json.dumps(ans)[:300])
                    else:
                        code, raw = _call(s, "GET", f"/crl/{rnd.choice(crls)}", None, "")
                        key = (
                            f"crl-{code}-{json.loads(raw).get('title', '') if code == 429 else ''}"
                        )
                        if code == 200:
                            received[t] += 1
                            outcomes[t]["n-crl"] = outcomes[t].get("n-crl", 0) + 1
                    outcomes[t][key] = outcomes[t].get(key, 0) + 1
                except Exception as e:  # reported below: no client may fail
                    errors.append(repr(e))

        threads = [threading.Thread(target=client, args=(t,)) for t in range(THREADS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=300)
        remaining = {
            dict(labels)["party"]: value
            for (name, labels), value in s.scrape().items()
            if name == "jpkiva_provisions_remaining"
        }
        totals = ledger_totals(s.d / "ledger")
        per_day = _per_day(s.d / "ledger")
    merged: dict[str, int] = {}
    for o in outcomes:
        for k, v in o.items():
            merged[k] = merged.get(k, 0) + v
    counted = sum(n for (party, _svc, _m), n in totals.items() if party == PARTY)
    got = sum(received)
    seen = (sorted(merged.items()), got, counted, remaining)
    assert not errors, errors[:3]
    assert got == counted, seen  # 帳簿 (Act §40): what was provided, no more, no less
    # reserve then check: never past the bound, on each Japan day the run touched
    assert sum(per_day.values()) == counted and max(per_day.values()) <= BOUND, (per_day, seen)
    if len(per_day) == 1:  # (a run across 00:00 JST leaves the new day's count in the gauge)
        assert remaining == {PARTY: float(BOUND - counted)}, seen
    assert merged.get("crl-429-cycle", 0) > 0, seen  # the give-back path ran
