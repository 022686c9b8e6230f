"""Tests of crlbuilder.demo.synth: the synthetic population, its records, samples and answers.

The answers are checked against an independent replay of the records through
crlbuilder.rules (the `Replay` below): the same legal effects computed from
the records alone, as a builder would, must give every sample's expected status.
"""

from __future__ import annotations

import argparse
import filecmp
import itertools
import os
import random
import stat
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from crlbuilder import rules
from crlbuilder.demo import synth
from crlbuilder.demo.certprofile import facts_of
from crlbuilder.demo.pki import init_pki
from crlbuilder.ingest import decode_line
from crlbuilder.manifest import Manifest
from crlbuilder.model import (
    Answer,
    CaCompromise,
    Category,
    CertStatus,
    ChangeKind,
    Consent,
    Family,
    FourFacts,
    Issuance,
    Reason,
    Record,
    RecordingError,
    ResidentChange,
    RevocationRequest,
)

AS_OF = datetime(2026, 10, 1, 3, 0, tzinfo=UTC)
HOLDERS = 1000
SEED = 42


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return init_pki(tmp_path_factory.mktemp("pki") / "p", key_size=2048)


@pytest.fixture(scope="module")
def run(pki: Manifest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, synth.SynthSummary]:
    out = tmp_path_factory.mktemp("synth") / "a"
    summary = synth.synth(pki, out, holders=HOLDERS, seed=SEED, as_of=AS_OF, samples=300)
    return out, summary


def read_records(out: Path) -> list[tuple[str, Record]]:
    recs = []
    for path in sorted((out / "records").glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            recs.append((path.name, decode_line(line)))
    return recs


def read_answers(out: Path) -> list[Answer]:
    return [
        msgspec.json.decode(line, type=Answer)
        for line in (out / "answers.jsonl").read_bytes().splitlines()
    ]


# ---------------------------------------------------------------------------
# An independent replay of the records through crlbuilder.rules
# ---------------------------------------------------------------------------


@dataclass
class Cert:
    rec: Issuance
    revoked_at: datetime | None = None
    category: Category | None = None
    reason: Reason | None = None

    def valid(self, t: datetime) -> bool:
        return self.revoked_at is None and self.rec.not_before <= t < self.rec.not_after


@dataclass
class Holder:
    certs: dict[Family, list[Cert]] = field(default_factory=dict)
    notice: rules.MoveOutNotice | None = None


class Replay:
    """Applies records in order, as the law says, and checks the population's invariants."""

    def __init__(self, as_of: datetime) -> None:
        self.as_of = as_of
        self.certs: dict[tuple[str, int], Cert] = {}
        self.holders: dict[str, Holder] = {}
        self.lapses: list[datetime] = []

    def revoke(self, h: Holder, c: Cert, at: datetime, category: Category, reason: Reason) -> None:
        assert c.valid(at), f"revoking a certificate not valid then: {c.rec.id}"
        c.revoked_at, c.category, c.reason = at, category, reason
        step = rules.cascade(c.rec.family, category)
        if step is not None:
            mobile_family, cat, rsn = step
            for m in h.certs.get(mobile_family, []):
                if m.valid(at):
                    assert m.rec.card_serial == c.rec.serial
                    m.revoked_at, m.category, m.reason = at, cat, rsn

    def lapse(self, h: Holder, until: datetime) -> None:
        """Act §31(2): a pending move-out notice revokes the auth-card cert 30 days on."""
        if h.notice is None:
            return
        at = rules.move_out_lapse(h.notice.planned_date)
        if at > until:
            return
        for c in h.certs.get(Family.AUTH_CARD, []):
            if c.valid(at) and rules.lapse_revokes(
                h.notice, issued_at=c.rec.not_before, as_of=until
            ):
                self.revoke(h, c, at, Category.RESIDENT_CHANGE, Reason.AFFILIATION_CHANGED)
                self.lapses.append(at)

    def target(self, issuer: str, serial: int, at: datetime) -> tuple[Holder, Cert]:
        c = self.certs[(issuer, serial)]
        assert c.valid(at), "a record targets a revoked or expired certificate"
        return self.holders[c.rec.holder], c

    def apply(self, rec: Record) -> None:
        at = rec.recorded_at
        assert at.utcoffset() == timedelta(0)
        holder_key = getattr(rec, "holder", None)
        if holder_key is None and isinstance(rec, RevocationRequest | RecordingError):
            holder_key = self.certs[(rec.issuer, rec.serial)].rec.holder
        if holder_key is not None:
            self.lapse(self.holders.setdefault(holder_key, Holder()), at)
        match rec:
            case Issuance():
                assert (rec.issuer, rec.serial) not in self.certs, "serial reused"
                h = self.holders.setdefault(rec.holder, Holder())
                same = h.certs.setdefault(rec.family, [])
                held = [rules.HeldCert(c.rec.serial, c.rec.not_after, c.revoked_at) for c in same]
                assert rules.double_issuance(held, rec.not_before) is None, "double issuance"
                assert rec.not_before == at
                if rec.family.is_mobile:
                    cards = [c for c in h.certs[rec.family.card_family] if c.valid(at)]
                    assert [c.rec.serial for c in cards] == [rec.card_serial]
                    assert rec.not_after <= cards[0].rec.not_after
                c = Cert(rec)
                same.append(c)
                self.certs[(rec.issuer, rec.serial)] = c
            case RevocationRequest():
                h, c = self.target(rec.issuer, rec.serial, at)
                category, reason = rules.request_revocation(rec.reason)
                self.revoke(h, c, at, category, reason)
            case RecordingError():
                h, c = self.target(rec.issuer, rec.serial, at)
                self.revoke(h, c, at, Category.RECORDING_ERROR, Reason.AFFILIATION_CHANGED)
            case CaCompromise():
                for c in list(self.certs.values()):
                    if c.valid(at) and rules.compromise_revokes(
                        cert_issuer=c.rec.issuer,
                        compromised_issuer=rec.issuer,
                        not_after=c.rec.not_after,
                        at=at,
                    ):
                        self.revoke(
                            self.holders[c.rec.holder],
                            c,
                            at,
                            Category.CA_COMPROMISE,
                            Reason.CA_COMPROMISE,
                        )
            case ResidentChange():
                assert rec.holder is not None
                h = self.holders.setdefault(rec.holder, Holder())
                if rec.change is ChangeKind.MOVE_OUT_NOTICE:
                    assert rec.planned_date is not None
                    h.notice = rules.MoveOutNotice(at, rec.planned_date, rec.abroad)
                elif rec.change is ChangeKind.MOVE_IN_NOTICE:
                    h.notice = None
                for family in (Family.SIGN_CARD, Family.AUTH_CARD):
                    for c in h.certs.get(family, []):
                        if c.valid(at) and rules.resident_change_revokes(
                            family, rec, issued_at=c.rec.not_before, notice=h.notice
                        ):
                            self.revoke(
                                h, c, at, Category.RESIDENT_CHANGE, Reason.AFFILIATION_CHANGED
                            )
            case Consent():
                pass

    def finish(self) -> None:
        for h in self.holders.values():
            self.lapse(h, self.as_of)


@pytest.fixture(scope="module")
def replay(run: tuple[Path, synth.SynthSummary]) -> Replay:
    out, _ = run
    r = Replay(AS_OF)
    for _, rec in read_records(out):
        assert rec.recorded_at <= AS_OF
        r.apply(rec)
    r.finish()
    return r


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


def test_same_seed_same_bytes(
    pki: Manifest, run: tuple[Path, synth.SynthSummary], tmp_path: Path
) -> None:
    out, summary = run
    again = synth.synth(pki, tmp_path / "b", holders=HOLDERS, seed=SEED, as_of=AS_OF, samples=300)
    assert again == summary
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(
        p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file()
    )
    for rel in files:
        assert filecmp.cmp(out / rel, tmp_path / "b" / rel, shallow=False), rel
    other = synth.synth(pki, tmp_path / "c", holders=50, seed=SEED + 1, as_of=AS_OF, samples=10)
    assert other.records != summary.records


def test_every_record_decodes_with_unique_ids(run: tuple[Path, synth.SynthSummary]) -> None:
    out, summary = run
    recs = read_records(out)
    assert len(recs) == summary.records
    ids = [r.id for _, r in recs]
    assert len(ids) == len(set(ids))
    counts = Counter(type(r).__name__ for _, r in recs)
    for kind in ("Issuance", "RevocationRequest", "ResidentChange", "RecordingError", "Consent"):
        assert counts[kind] > 0, kind
    assert counts["CaCompromise"] == 1
    for _, r in recs:
        assert r.recorded_at.tzinfo is not None and r.recorded_at.utcoffset() == timedelta(0)
    kinds = {r.change for _, r in recs if isinstance(r, ResidentChange)}
    assert kinds == set(ChangeKind)


def test_slices_and_the_compromise_order(run: tuple[Path, synth.SynthSummary]) -> None:
    out, summary = run
    names = [p.name for p in sorted((out / "records").glob("*.jsonl"))]
    assert names == [Path(f).name for f in summary.record_files]
    assert names[0] == "0001-2016.jsonl"
    cc = [n for n in names if "ca-compromise" in n]
    assert cc == ["0008-2022-ca-compromise-sign-card-g1.jsonl"]
    lines = (out / "records" / cc[0]).read_bytes().splitlines()
    assert len(lines) == 1
    compromise = decode_line(lines[0])
    assert isinstance(compromise, CaCompromise) and compromise.issuer == "sign-card-g1"
    assert compromise.recorded_at == synth.COMPROMISE_AT
    before = True
    per_holder_last: dict[str, datetime] = {}
    for name, rec in read_records(out):
        if name == cc[0]:
            before = False
            continue
        assert (rec.recorded_at < compromise.recorded_at) == before
        if isinstance(rec, Issuance) and rec.issuer == "sign-card-g1":
            assert before
        holder = getattr(rec, "holder", None)
        if holder is not None:
            assert per_holder_last.get(holder, rec.recorded_at) <= rec.recorded_at
            per_holder_last[holder] = rec.recorded_at
    assert summary.compromised_issuer == "sign-card-g1"


def test_answers_match_a_replay_through_the_rules(
    run: tuple[Path, synth.SynthSummary], replay: Replay
) -> None:
    out, summary = run
    answers = read_answers(out)
    assert len(answers) == summary.samples
    assert 200 <= len(answers) <= 300
    for a in answers:
        c = replay.certs.get((a.issuer, a.serial))
        if a.case == "never-issued":
            assert c is None and a.status is CertStatus.UNKNOWN
            continue
        assert c is not None, a.case
        if c.revoked_at is not None:
            assert a.status is CertStatus.REVOKED
            assert (a.category, a.reason, a.revoked_at) == (c.category, c.reason, c.revoked_at)
            assert a.case.startswith("revoked:")
        else:
            assert a.status is CertStatus.GOOD
            assert a.category is None and a.revoked_at is None
            expired = c.rec.not_after <= AS_OF
            assert a.case == ("expired" if expired else "good")
    # the population as a whole agrees too
    revoked = Counter(c.category.value for c in replay.certs.values() if c.category is not None)
    sim = Counter(summary.revocations_by_category)
    sim["resident-change"] += sim.pop("move-out-30-days", 0)
    assert revoked == sim


def test_every_family_and_applicable_case_is_covered(run: tuple[Path, synth.SynthSummary]) -> None:
    out, _ = run
    answers = read_answers(out)
    seen = {(a.family, a.case) for a in answers}
    for family, cases in synth.CASES.items():
        for case in cases:
            if case == "revoked:ca-compromise" and family is not Family.SIGN_CARD:
                continue
            assert (family, case) in seen, (family.value, case)
    categories = {(a.family, a.category) for a in answers if a.category is not None}
    for category in Category:
        for family in Category(category).articles:
            if category is Category.CA_COMPROMISE and family is not Family.SIGN_CARD:
                continue
            if not family.is_jpki:  # a token's category: no token in the population
                continue
            assert (family, category) in categories, (family.value, category.value)
    issuers = {(a.issuer, a.case) for a in answers}
    for issuer in ("sign-card-g1", "sign-card-g2"):
        for case in ("revoked:request", "revoked:resident-change", "expired", "never-issued"):
            assert (issuer, case) in issuers
    assert ("sign-card-g1", "revoked:ca-compromise") in issuers
    assert ("sign-card-g2", "good") in issuers


def test_30_day_rule_instants(run: tuple[Path, synth.SynthSummary], replay: Replay) -> None:
    out, _ = run
    lapsed = [a for a in read_answers(out) if a.case == "revoked:move-out-30-days"]
    assert lapsed and replay.lapses
    for a in lapsed:
        assert a.family is Family.AUTH_CARD
        assert a.category is Category.RESIDENT_CHANGE and a.reason is Reason.AFFILIATION_CHANGED
        assert a.revoked_at is not None and a.revoked_at in replay.lapses
        jst = a.revoked_at.astimezone(rules.JST)
        assert (jst.hour, jst.minute, jst.second) == (0, 0, 0)


def test_one_valid_certificate_per_family(replay: Replay) -> None:
    for h in replay.holders.values():
        for certs in h.certs.values():
            spans = sorted(
                (c.rec.not_before, min(c.rec.not_after, c.revoked_at or c.rec.not_after))
                for c in certs
            )
            for (_, end), (start, _) in itertools.pairwise(spans):
                assert end < start


def test_samples_are_real_certificates_of_their_issuer(
    run: tuple[Path, synth.SynthSummary], replay: Replay
) -> None:
    out, _ = run
    key_path = out / "samples" / "subject-key.pem"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    subject = serialization.load_pem_private_key(key_path.read_bytes(), None)
    assert isinstance(subject, rsa.RSAPrivateKey)
    for a in read_answers(out):
        cert = x509.load_pem_x509_certificate((out / a.cert).read_bytes())
        issuer = x509.load_pem_x509_certificate((out / a.issuer_cert).read_bytes())
        cert.verify_directly_issued_by(issuer)
        assert cert.serial_number == a.serial
        assert cert.public_key().public_numbers() == subject.public_key().public_numbers()
        facts = facts_of(cert)
        assert (facts is not None) == a.family.is_sign
        c = replay.certs.get((a.issuer, a.serial))
        if c is not None:
            assert facts == c.rec.facts
            assert cert.not_valid_before_utc == c.rec.not_before
            assert cert.not_valid_after_utc == c.rec.not_after


def test_secret_and_no_resident_codes_in_output(run: tuple[Path, synth.SynthSummary]) -> None:
    out, _ = run
    secret = out / "holder-key.secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert secret.read_bytes() == synth.DEMO_HOLDER_SECRET
    codes = [synth._resident_code(i) for i in range(0, HOLDERS, 97)]
    assert len(set(codes)) == len(codes) and all(len(c) == 11 for c in codes)
    blob = b"".join(p.read_bytes() for p in (out / "records").glob("*.jsonl"))
    for code in codes:
        assert code.encode() not in blob
    holders = {r.holder for _, r in read_records(out) if isinstance(r, Issuance)}
    assert rules.holder_key(synth.DEMO_HOLDER_SECRET, codes[0]) in holders


def test_facts_are_synthetic_and_well_formed(run: tuple[Path, synth.SynthSummary]) -> None:
    out, _ = run
    facts = [r.facts for _, r in read_records(out) if isinstance(r, Issuance) and r.facts]
    assert facts
    for f in facts:
        msgspec.convert(msgspec.to_builtins(f), type=FourFacts)  # patterns hold
        assert "　" in f.name
    assert any(f.name_alt for f in facts) and any(f.address_alt for f in facts)


def test_serials_are_unique_random_looking_8_octets() -> None:
    key = 0x1234_5678_9ABC
    serials = [synth._serial_of(n, key) for n in range(100_000)]
    assert len(set(serials)) == len(serials)
    assert all(2**62 <= s < 2**63 for s in serials)
    never = {synth._serial_of(synth._NEVER_ISSUED_BASE + n, key) for n in range(1000)}
    assert not never & set(serials)
    assert sorted(serials[:100]) != serials[:100]
    rng = random.Random(1)
    for _ in range(2000):  # a bijection: distinct inputs, distinct outputs
        a, b = rng.getrandbits(62), rng.getrandbits(62)
        assert (synth._mix62(a, key) == synth._mix62(b, key)) == (a == b)


def test_day_helpers_match_the_rules() -> None:
    for d in (date(2016, 1, 1), date(2024, 2, 29), date(2026, 12, 31)):
        assert synth._utc(synth._day_start(d)) == rules.start_of_day_utc(d)
        assert synth._utc(synth._day_end(d)) == rules.end_of_day_utc(d)
        assert synth._jday(synth._day_start(d)) == d
        assert synth._jday(synth._day_end(d)) == d


def test_deterministic_rsa_key() -> None:
    a = synth.deterministic_rsa_key(5, 2048)
    b = synth.deterministic_rsa_key(5, 2048)
    c = synth.deterministic_rsa_key(6, 2048)
    assert a.key_size == 2048
    assert a.private_numbers() == b.private_numbers()
    assert a.public_key().public_numbers() != c.public_key().public_numbers()
    sig = a.sign(b"data", padding.PKCS1v15(), hashes.SHA256())
    b.public_key().verify(sig, b"data", padding.PKCS1v15(), hashes.SHA256())


def test_no_compromise_before_its_instant(pki: Manifest, tmp_path: Path) -> None:
    as_of = synth.COMPROMISE_AT - timedelta(days=1)
    s = synth.synth(pki, tmp_path / "early", holders=200, seed=3, as_of=as_of, samples=40)
    assert s.compromised_issuer is None and "ca-compromise" not in s.records_by_type
    assert not any("ca-compromise" in f for f in s.record_files)
    r = Replay(as_of)
    for _, rec in read_records(tmp_path / "early"):
        assert rec.recorded_at <= as_of
        r.apply(rec)
    r.finish()
    for a in read_answers(tmp_path / "early"):
        if a.case != "never-issued":  # no mobile certificate before 2023-05-11
            assert a.family in (Family.SIGN_CARD, Family.AUTH_CARD)
        assert a.case != "revoked:ca-compromise"


def test_cli_and_refusal(pki: Manifest, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="crlbuilder")
    synth.add_cli(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "cli"
    argv = ["synth", "--pki", pki.directory, "--holders", "60", "--out", str(out)]
    argv += ["--seed", "9", "--as-of", "2025-01-01T00:00:00Z", "--samples", "20", "--no-progress"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    assert "60 holders" in capsys.readouterr().out
    first = (out / "answers.jsonl").read_bytes()
    assert args.func(args) == 2
    assert "not empty" in capsys.readouterr().err
    args = parser.parse_args([*argv, "--force"])
    assert args.func(args) == 0
    assert (out / "answers.jsonl").read_bytes() == first
    with pytest.raises(SystemExit):
        parser.parse_args(
            ["synth", "--pki", "x", "--holders", "1", "--out", "y", "--as-of", "2025-01-01"]
        )
    nope = ["synth", "--pki", str(tmp_path / "nope"), "--holders", "1", "--out", str(tmp_path)]
    missing = parser.parse_args([*nope, "--no-progress"])
    assert missing.func(missing) == 2
    assert "cannot read the PKI manifest" in capsys.readouterr().err
    with pytest.raises(synth.SynthError, match="timezone"):
        synth.synth(pki, tmp_path / "n", holders=1, seed=1, as_of=datetime(2025, 1, 1))


def test_reservoir_is_uniform() -> None:
    rng = random.Random(7)
    counts = Counter[int]()
    trials, n, cap = 3000, 60, 6
    for _ in range(trials):
        r = synth._Reservoir(cap)
        certs = [object() for _ in range(n)]
        for c in certs:
            r.offer(c, rng)  # type: ignore[arg-type]
        assert len(r.items) == cap and len({id(c) for c in r.items}) == cap
        counts.update(certs.index(c) for c in r.items)
    expected = trials * cap / n  # 300
    assert all(0.75 * expected < counts[i] < 1.25 * expected for i in range(n)), counts
    early = sum(counts[i] for i in range(n // 2))
    assert abs(early / (trials * cap) - 0.5) < 0.03


def test_record_files_with_the_four_facts_are_private_from_creation(
    pki: Manifest, tmp_path: Path
) -> None:
    """Act §44/§45 at rest: records/ 0700, each record file 0600, even under umask 000 and
    over an earlier output whose files were world-readable (--force)."""
    out = tmp_path / "pop"
    old = os.umask(0)
    try:
        synth.synth(pki, out, holders=30, seed=2, as_of=datetime(2026, 3, 1, tzinfo=UTC), samples=0)
        for f in (out / "records").glob("*.jsonl"):
            f.chmod(0o644)
        (out / "records").chmod(0o755)
        out.chmod(0o755)
        synth.synth(pki, out, holders=30, seed=2, as_of=datetime(2026, 3, 1, tzinfo=UTC),
                    samples=0, force=True)  # fmt: skip
        fresh = tmp_path / "fresh"
        synth.synth(pki, fresh, holders=30, seed=2, as_of=datetime(2026, 3, 1, tzinfo=UTC),
                    samples=0)  # fmt: skip
    finally:
        os.umask(old)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    for d in (out, fresh):
        files = list((d / "records").glob("*.jsonl"))
        assert files and any(b'"facts"' in f.read_bytes() for f in files)
        assert stat.S_IMODE((d / "records").stat().st_mode) == 0o700
        assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}
