"""The synthetic population: records of a simulated JPKI from 2016-01-01 to ``as_of``, with answers.

`synth` (``crlbuilder synth``) simulates holders one by one, independently, and
writes what the 機構 would have recorded about them, as JSON Lines of
`crlbuilder.model.Record`:

- issuance records (発行記録, Act §8, §16-7, §27, §35-7) of card certificates of
  both kinds and, for about 30% of holders from 2023-05-11, mobile certificates
  (移動端末設備用, Act §16-2, §35-2) naming the card certificate they were issued
  against; validity per Ord §13, §49 via `crlbuilder.rules.validity_end`;
  renewals within three months of the end (6th birthday), expiries, new cards;
  one valid certificate per holder and family at any time (二重発行の禁止, Act §6,
  §16-5, §25, §35-5);
- revocation requests and reports (失効申請等情報, Act §11, §16-10, §30, §35-10):
  renewal, loss, damage, key compromise, phone changes, undelivered cards;
- resident record changes (異動, Act §12, §31; Ord §20): address and name changes
  (revoke sign-card only), minor corrections (revoke nothing), deaths and
  ex-officio deletions (revoke both card certificates), domestic moves (転出届 then
  転入届 within 14 days and the address change), move-outs with no move-in (the
  deletion revokes the sign-card; the auth-card lapses 30 days after the planned
  date, Act §31(2), at 00:00 JST of planned_date + 31), moves abroad (国外転出届),
  including certificates issued between the notice and its planned date, which
  survive the deletion (Act §12(2), §31(2)) until a 戸籍の附票 deletion (§12(3), §31(3));
- recording errors (記録誤り等, Act §13, §16-11, §32, §35-11);
- one issuing-key compromise (発行者署名符号の漏えい等, Act §14) of ``sign-card-g1``
  at `COMPROMISE_AT`: every sign-card-g1 certificate still valid then loses
  effect, alone in its own record file; holders get new certificates from G2;
- the card-to-mobile cascade (Act §16-13, §35-13), which has no record of its own;
- consents (同意) to the demo signature verifiers (Act §18(3)).

Record files are time slices (`records/0001-2016.jsonl`, ...: one per calendar
year in JST, the compromise year cut at the compromise instant, the
``CaCompromise`` record alone in its own file). The builder applies files in
name order and lines in file order; within a slice each holder's records are in
chronological order. Holders are streamed in chunks, so memory stays bounded
whatever the population. The records hold the four facts (基本4情報, Act §7(1)(3)):
the output directory and ``records/`` are created mode 0700 and each record
file mode 0600, from their creation (no window in which others may read them).

A few hundred real certificates are issued for samples (``samples/``): every
family x issuer generation x case (good, expired, revoked in each category that
applies, never issued), picked by reservoir sampling. ``answers.jsonl`` says what
an OCSP client must be told about each, as of ``as_of``. OCSP speaks of
revocation, not validity: a certificate that expired without being revoked is
``good`` (RFC 6960 §2.2), and a certificate no issuance record names is ``unknown``.
Every revocation the simulation causes takes effect at or before ``as_of``: no
30-day lapse or move is left pending, so the answers hold whenever the records
are built. Holder keys are `crlbuilder.rules.holder_key` of synthetic 11-digit
resident codes under the demo secret in ``holder-key.secret``; the codes never
leave this module. Names and addresses are drawn from small built-in lists: no
real person is described.

Life events follow yearly rates (`_LIFE_RATES`: moves and address changes
dominate); the first few holders are showcase holders that each force one rare
scenario (a recording error on each family, a lapse, a move abroad, ...), so
that even a population of a thousand covers every family x category. Sample
certificates share one subject key (``samples/subject-key.pem``, mode 0600,
derived from the seed): only the CA's signature matters. Paths in
``answers.jsonl`` are relative to the output directory, and the issuers'
certificates are copied under ``samples/issuers/``.

Output is deterministic for a given PKI, ``seed`` and ``as_of`` (same bytes).
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import math
import os
import random
import shutil
import sys
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Final

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tqdm import tqdm

from crlbuilder import rules
from crlbuilder.demo import democli
from crlbuilder.demo.certprofile import build_ee_cert
from crlbuilder.demo.pki import write_private
from crlbuilder.facts import encode_birth_date
from crlbuilder.keys.signer import SignerError, load_signer
from crlbuilder.manifest import IssuerFiles, Manifest, ManifestError, load_manifest
from crlbuilder.model import (
    JPKI_FAMILIES,
    Answer,
    CaCompromise,
    Category,
    CertStatus,
    ChangeKind,
    CompromiseCause,
    Consent,
    DeletionCause,
    Fact,
    Family,
    FourFacts,
    Issuance,
    MinorCorrection,
    Reason,
    Record,
    RecordingError,
    RequestReason,
    ResidentChange,
    RevocationRequest,
    Sex,
)

__all__ = [
    "COMPROMISE_AT",
    "DEMO_HOLDER_SECRET",
    "MOBILE_START",
    "SIMULATION_START",
    "SynthError",
    "SynthSummary",
    "add_cli",
    "case_of",
    "deterministic_rsa_key",
    "run_synth",
    "synth",
]

DAY: Final = 86400
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
YEAR: Final = 365.2425 * DAY


def _epoch(d: datetime) -> int:
    return int(d.timestamp())


SIMULATION_START: Final = datetime(2016, 1, 1, tzinfo=rules.JST).astimezone(UTC)
"""The first day the population's cards were issued (個人番号カード: 2016-01)."""
MOBILE_START: Final = datetime(2023, 5, 11, tzinfo=rules.JST).astimezone(UTC)
"""Mobile certificates (移動端末設備用電子証明書) are issued from this day."""
COMPROMISE_AT: Final = datetime(2022, 10, 3, 1, 0, tzinfo=UTC)
"""The simulated issuing-key compromise of ``sign-card-g1`` (Act §14), 10:00 JST."""
COMPROMISED_FAMILY: Final = Family.SIGN_CARD

DEMO_HOLDER_SECRET: Final = hashlib.sha256(b"jpki-va demo holder key secret").hexdigest().encode()
"""The demo secret of `rules.holder_key`: the exact bytes of ``holder-key.secret``."""

MOBILE_SHARE: Final = 0.3
SIGN_SHARE: Final = 0.92
CHUNK: Final = 2000
"""Holders simulated between two writes of the slice buffers."""

CASE_30_DAYS: Final = "move-out-30-days"


def _cases(family: Family) -> tuple[str, ...]:
    """Good, expired, revoked under each category of the family, never issued. An auth card
    has the 30-days-after-the-planned-move-out lapse beside resident change (Act §31(2))."""
    revoked = [f"revoked:{c.value}" for c in Category if c.applies_to(family)]
    if family is Family.AUTH_CARD:
        revoked.insert(revoked.index("revoked:resident-change") + 1, f"revoked:{CASE_30_DAYS}")
    return ("good", "expired", *revoked, "never-issued")


CASES: Final[dict[Family, tuple[str, ...]]] = {f: _cases(f) for f in JPKI_FAMILIES}
"""Every sample case per family of the Act (ca-compromise occurs only for the compromised
generation); the population has no 特定利用者証明検証者証明符号 (those come from token requests)."""


class SynthError(Exception):
    """The population cannot be generated (bad arguments, output not empty, ...)."""


# ---------------------------------------------------------------------------
# Days (JST) as epoch seconds
# ---------------------------------------------------------------------------


def _jday(t: int) -> date:
    """The JST calendar day of an epoch second."""
    return date.fromordinal((t + rules.JST_OFFSET) // DAY + _EPOCH_ORDINAL)


def _day_start(d: date) -> int:
    """00:00:00 JST of ``d`` in epoch seconds (= `rules.start_of_day_utc`)."""
    return (d.toordinal() - _EPOCH_ORDINAL) * DAY - rules.JST_OFFSET


def _day_end(d: date) -> int:
    """23:59:59 JST of ``d`` in epoch seconds (= `rules.end_of_day_utc`): a notAfter."""
    return _day_start(d) + DAY - 1


def _utc(t: int) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _between(rng: random.Random, lo: int, hi: int) -> int:
    """An int in [lo, hi): ``randrange`` is several times slower and this runs 10**8 times."""
    return lo + int(rng.random() * (hi - lo))


def _pick(rng: random.Random, seq: tuple[str, ...]) -> str:
    return seq[int(rng.random() * len(seq))]


# ---------------------------------------------------------------------------
# Synthetic people (no real person: small built-in lists)
# ---------------------------------------------------------------------------

_SURNAMES: Final = (
    ("佐藤", None),
    ("鈴木", None),
    ("高橋", None),
    ("田中", None),
    ("伊藤", None),
    ("渡辺", None),
    ("山本", None),
    ("中村", None),
    ("小林", None),
    ("加藤", None),
    ("吉田", None),
    ("山田", None),
    ("佐々木", None),
    ("山口", None),
    ("松本", None),
    ("井上", None),
    ("木村", None),
    ("林", None),
    ("清水", None),
    ("森", None),
    ("髙橋", "高橋"),
    ("𠮷田", "吉田"),
    ("齋藤", "斎藤"),
    ("濵田", "浜田"),
)
"""(surname, substitute-character form or None): a few use uncommon characters (.2 name_alt)."""
_GIVEN: Final = {
    Sex.MALE: ("太郎", "健太", "翔太", "大輔", "拓也", "誠", "浩二", "隆", "蓮", "悠真", "一郎"),
    Sex.FEMALE: ("花子", "陽子", "美咲", "由美", "恵子", "愛", "結衣", "さくら", "真由美", "葵"),
    Sex.UNKNOWN: ("光", "薫", "翼", "渚"),
}
_PLACES: Final = (
    ("東京都", "千代田区"),
    ("東京都", "世田谷区"),
    ("東京都", "八王子市"),
    ("大阪府", "大阪市北区"),
    ("神奈川県", "横浜市中区"),
    ("愛知県", "名古屋市中区"),
    ("北海道", "札幌市中央区"),
    ("福岡県", "福岡市博多区"),
    ("京都府", "京都市左京区"),
    ("宮城県", "仙台市青葉区"),
    ("広島県", "広島市中区"),
    ("新潟県", "新潟市中央区"),
    ("沖縄県", "那覇市"),
    ("長野県", "松本市"),
)
_TOWNS: Final = (
    ("本町", None),
    ("中央", None),
    ("緑町", None),
    ("桜木町", None),
    ("旭町", None),
    ("栄町", None),
    ("若葉", None),
    ("東雲", None),
    ("富士見", None),
    ("青葉台", None),
    ("髙砂町", "高砂町"),
)
_CHOME: Final = ("一", "二", "三", "四", "五", "六")
_BUILDINGS: Final = ("コーポ若葉", "メゾン桜", "ハイツ旭", "グランドパレス中央", "サンハイム")


@dataclass(slots=True)
class _Person:
    """The four facts of one synthetic holder, as they stand now."""

    surname: int
    given: str
    sex: Sex
    birth: date
    place: int
    town: int
    block: str
    building: str | None
    cache: FourFacts | None = None
    """The facts last built; reset by every change."""

    def facts(self) -> FourFacts:
        if self.cache is None:
            self.cache = self._build()
        return self.cache

    def _build(self) -> FourFacts:
        surname, surname_alt = _SURNAMES[self.surname]
        town, town_alt = _TOWNS[self.town]
        pref, city = _PLACES[self.place]
        tail = self.block + (f"　{self.building}" if self.building else "")
        return FourFacts(
            name=f"{surname}　{self.given}",
            name_alt=f"{surname_alt}　{self.given}" if surname_alt else None,
            sex=self.sex,
            birth_date=encode_birth_date(self.birth),
            address=f"{pref}{city}{town}{tail}",
            address_alt=f"{pref}{city}{town_alt}{tail}" if town_alt else None,
        )


def _new_address(p: _Person, rng: random.Random, *, same_city: bool) -> None:
    if not same_city:
        p.place = _between(rng, 0, len(_PLACES))
    p.town = _between(rng, 0, len(_TOWNS))
    p.block = f"{_pick(rng, _CHOME)}丁目{_between(rng, 1, 30)}番{_between(rng, 1, 25)}号"
    p.cache = None
    p.building = (
        f"{_pick(rng, _BUILDINGS)}{_between(rng, 1, 9)}0{_between(rng, 1, 9)}号室"
        if rng.random() < 0.4
        else None
    )


def _new_person(rng: random.Random) -> _Person:
    r = rng.random()
    sex = Sex.MALE if r < 0.495 else Sex.FEMALE if r < 0.99 else Sex.UNKNOWN
    birth = date.fromordinal(
        _between(rng, date(1935, 1, 1).toordinal(), date(2000, 12, 31).toordinal())
    )
    p = _Person(
        surname=_between(rng, 0, len(_SURNAMES)),
        given=_pick(rng, _GIVEN[sex]),
        sex=sex,
        birth=birth,
        place=0,
        town=0,
        block="",
        building=None,
    )
    _new_address(p, rng, same_city=False)
    return p


def _resident_code(index: int) -> str:
    """A synthetic 11-digit resident record code (住民票コード): 10 digits and a check digit.

    An affine bijection of the holder index modulo 10**10 keeps codes unique and
    random-looking; the check digit is the body modulo 11, modulo 10 (not the real scheme).
    """
    body = (7_919_876_543 * index + 1_234_567_891) % 10**10
    return f"{body:010d}{body % 11 % 10}"


# ---------------------------------------------------------------------------
# Serial numbers: a keyed bijection of a per-issuer counter
# ---------------------------------------------------------------------------

_M62: Final = (1 << 62) - 1
_NEVER_ISSUED_BASE: Final = 1 << 61
"""Counters from here on are never used for issuance: the never-issued samples."""


def _mix62(x: int, key: int) -> int:
    """A bijection of [0, 2**62): add, xorshift, multiply by odd constants (all invertible)."""
    x = (x + key) & _M62
    x ^= x >> 29
    x = (x * 0x2545F4914F6CDD1D) & _M62
    x ^= x >> 32
    x = (x * 0x9E3779B97F4A7C15) & _M62
    x ^= x >> 29
    return x


def _serial_of(counter: int, key: int) -> int:
    """A random-looking, positive serial of exactly 8 octets: 2**62 | mix(counter)."""
    return (1 << 62) | _mix62(counter, key)


# ---------------------------------------------------------------------------
# The simulation of one holder
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Iss:
    files: IssuerFiles
    start: int
    """The issuer's CA notBefore: the generation issues from here until the next's."""
    key: int
    """Key of the serial bijection."""


# Families as small ints inside the simulation (Enum hashing is slow at 10**7 holders).
_SC, _SM, _AC, _AM = 0, 1, 2, 3
_FAMILIES: Final = (Family.SIGN_CARD, Family.SIGN_MOBILE, Family.AUTH_CARD, Family.AUTH_MOBILE)
_FI: Final = {f: i for i, f in enumerate(_FAMILIES)}
_IS_MOBILE: Final = (False, True, False, True)
_IS_SIGN: Final = (True, True, False, False)
_CARD_OF: Final = (_SC, _SC, _AC, _AC)
_MOBILE_OF: Final = (_SM, _SM, _AM, _AM)
_COMPROMISED_FI: Final = _FI[COMPROMISED_FAMILY]


@dataclass(slots=True)
class _Cert:
    fi: int
    issuer: _Iss
    serial: int
    nb: int
    na: int
    last_day: date
    facts: FourFacts | None
    card_serial: int | None
    renewal: bool
    revoked_at: int | None = None
    category: Category | None = None
    reason: Reason | None = None
    detail: str | None = None

    @property
    def family(self) -> Family:
        return _FAMILIES[self.fi]

    def valid(self, t: int) -> bool:
        """Valid at t: issued, not revoked, not expired (notAfter > t: rules 6's reading of
        `rules.in_effect_at`, so the population holds no revocation record dated in a
        notAfter's own second, which rules 7 would apply and rules 6 not)."""
        return self.revoked_at is None and self.nb <= t < self.na


# Event kinds (heap entries: (time, seq, kind, arg)).
_NEW_CARD: Final = 1
_CARD_RENEW: Final = 2
_RENEW: Final = 3
_REISSUE: Final = 4
_MOBILE: Final = 5
_COMPROMISE: Final = 6
_LIFE: Final = 7
_MOVE_IN: Final = 8
_DELETION: Final = 9
_LAPSE: Final = 10
_WITHDRAW: Final = 11
_WINDOW_ISSUE: Final = 12
_KOSEKI: Final = 13
_VOLUNTARY: Final = frozenset({_NEW_CARD, _CARD_RENEW, _RENEW, _REISSUE, _MOBILE, _LIFE})
"""Events a holder in the middle of a move defers, and an ended holder drops."""

# Life events and their yearly rates.
_RELOCATE = "relocate"
_MOVE = "move"
_RENAME = "rename"
_FACT_SEX = "fact-sex"
_FACT_BIRTH = "fact-birth"
_MINOR = "minor"
_LOSS = "loss"
_DAMAGE = "damage"
_UNUSABLE = "unusable"
_KEYCOMP = "key-compromise"
_STOP_SIGN = "stop-sign"
_RECERR = "recording-error"
_PHONE_LOST = "phone-lost"
_PHONE_CHANGE = "phone-change"
_VANISH = "vanish"
_ABROAD = "abroad"
_ABROAD_WINDOW = "abroad-window"
_EX_OFFICIO = "ex-officio"
_CONSENT = "consent"
_DEATH = "death"

_LIFE_RATES: Final = (
    (_RELOCATE, 0.025),
    (_MOVE, 0.03),
    (_RENAME, 0.006),
    (_FACT_SEX, 0.0002),
    (_FACT_BIRTH, 0.0003),
    (_MINOR, 0.012),
    (_LOSS, 0.012),
    (_DAMAGE, 0.004),
    (_UNUSABLE, 0.002),
    (_KEYCOMP, 0.001),
    (_STOP_SIGN, 0.003),
    (_RECERR, 0.0015),
    (_PHONE_LOST, 0.03),
    (_PHONE_CHANGE, 0.05),
    (_VANISH, 0.002),
    (_ABROAD, 0.0015),
    (_ABROAD_WINDOW, 0.001),
    (_EX_OFFICIO, 0.0004),
    (_CONSENT, 0.01),
)
_LIFE_TOTAL: Final = sum(r for _, r in _LIFE_RATES)
_LIFE_KINDS: Final = tuple(k for k, _ in _LIFE_RATES)
_LIFE_CUMULATIVE: Final = tuple(
    sum(r for _, r in _LIFE_RATES[: i + 1]) / _LIFE_TOTAL for i in range(len(_LIFE_RATES))
)

# Showcase holders: the first holders each force one rare scenario on the first
# certificate of a family issued at or after a time, so that even a small
# population covers every family x category (the rest keep realistic rates).
_SHOWCASE: Final[tuple[tuple[str, Family, datetime], ...]] = (
    (_RECERR, Family.SIGN_CARD, SIMULATION_START),
    (_RECERR, Family.SIGN_CARD, datetime(2021, 4, 1, tzinfo=UTC)),
    (_RECERR, Family.AUTH_CARD, SIMULATION_START),
    (_RECERR, Family.SIGN_MOBILE, MOBILE_START),
    (_RECERR, Family.AUTH_MOBILE, MOBILE_START),
    (_PHONE_LOST, Family.AUTH_MOBILE, MOBILE_START),
    (_PHONE_CHANGE, Family.SIGN_MOBILE, MOBILE_START),
    (_LOSS, Family.SIGN_MOBILE, MOBILE_START),
    (_MOVE, Family.SIGN_MOBILE, MOBILE_START),
    (_VANISH, Family.AUTH_MOBILE, MOBILE_START),
    (_VANISH, Family.AUTH_CARD, SIMULATION_START),
    (_ABROAD, Family.AUTH_CARD, SIMULATION_START),
    (_ABROAD_WINDOW, Family.AUTH_CARD, SIMULATION_START),
    (_DEATH, Family.AUTH_MOBILE, MOBILE_START),
    (_EX_OFFICIO, Family.AUTH_CARD, SIMULATION_START),
    (_KEYCOMP, Family.SIGN_CARD, datetime(2021, 4, 1, tzinfo=UTC)),
    (_DAMAGE, Family.SIGN_CARD, SIMULATION_START),
    (_RENAME, Family.SIGN_CARD, SIMULATION_START),
)


class _Holder:
    """One simulated holder: facts, current certificates, scheduled events, emitted records."""

    __slots__ = (
        "all_certs",
        "busy_until",
        "card_expiry",
        "card_ok",
        "compromised",
        "cur",
        "ended",
        "force",
        "forced",
        "heap",
        "index",
        "key",
        "last",
        "mobile_user",
        "n",
        "person",
        "records",
        "seq",
        "sign_user",
    )

    def __init__(self, index: int, key: str, person: _Person) -> None:
        self.index = index
        self.key = key
        self.person = person
        self.cur: list[_Cert | None] = [None, None, None, None]
        self.all_certs: list[_Cert] = []
        self.records: list[tuple[int, Record]] = []
        self.heap: list[tuple[int, int, int, Any]] = []
        self.seq = 0
        self.n = 0
        self.last = 0
        self.busy_until = 0
        self.ended = False
        self.card_ok = False
        self.card_expiry: date | None = None
        self.compromised = False
        self.mobile_user = False
        self.sign_user = True
        self.force: tuple[str, int, int] | None = None
        """A showcase holder's scenario: (life event, family, not before), armed until it happens."""
        self.forced: tuple[str, int, int] | None = None

    def push(self, t: int, kind: int, arg: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, arg))

    def next_id(self) -> str:
        self.n += 1
        return f"r{self.index}-{self.n}"


class _Simulator:
    """Simulates holders one at a time; keeps only the per-issuer counters between holders."""

    def __init__(
        self,
        issuers: list[_Iss],
        *,
        seed: int,
        as_of: int,
        compromised: _Iss | None,
        verifiers: list[str],
        secret: bytes,
    ) -> None:
        self.rng = random.Random(seed)
        self.as_of = as_of
        self.compromised = compromised
        self.compromise_at = _epoch(COMPROMISE_AT) if compromised is not None else None
        self.verifiers = verifiers
        self.secret = secret
        self.counters: dict[str, int] = {i.files.id: 0 for i in issuers}
        self.by_family: dict[int, list[_Iss]] = {}
        for i in sorted(issuers, key=lambda i: (i.start, i.files.generation)):
            self.by_family.setdefault(_FI[i.files.family], []).append(i)
        self.starts = {f: [i.start for i in lst] for f, lst in self.by_family.items()}
        self.start = _epoch(SIMULATION_START)
        self.mobile_start = _epoch(MOBILE_START)
        self.type_counts: dict[type, int] = {}
        self.handlers: dict[int, Callable[[_Holder, int, Any], None]] = {
            _NEW_CARD: self.on_new_card,
            _CARD_RENEW: self.on_card_renew,
            _RENEW: self.on_renew,
            _REISSUE: self.on_reissue,
            _MOBILE: self.on_mobile,
            _COMPROMISE: self.on_compromise,
            _LIFE: self.on_life,
            _MOVE_IN: self.on_move_in,
            _DELETION: self.on_deletion,
            _LAPSE: self.on_lapse,
            _WITHDRAW: self.on_withdraw,
            _WINDOW_ISSUE: self.on_window_issue,
            _KOSEKI: self.on_koseki,
        }

    # -- helpers ---------------------------------------------------------------

    def issuer_at(self, family: int, t: int) -> _Iss | None:
        lst = self.by_family.get(family)
        if not lst:
            return None
        k = bisect_right(self.starts[family], t) - 1
        return lst[k] if k >= 0 else None

    def office(self, d: date) -> int:
        """A random second of office hours (09:00-17:00 JST) on day ``d``."""
        return _day_start(d) + 9 * 3600 + int(self.rng.random() * (8 * 3600))

    def later(self, t: int, lo_days: float, hi_days: float) -> int:
        """Some days after t, in office hours when that is still after t."""
        u = t + int(self.rng.uniform(lo_days, hi_days) * DAY)
        o = self.office(_jday(u))
        return o if o > t else u

    def chance(self, h: _Holder, p: float) -> bool:
        """True with probability p; always for showcase holders (their scenario must happen)."""
        return self.rng.random() < p or h.forced is not None

    def tick(self, h: _Holder, t: int) -> int:
        """The instant of the holder's next record: strictly after its last, never the compromise."""
        t = max(t, h.last + 1)
        if self.compromise_at is not None and t >= self.compromise_at and not h.compromised:
            self.apply_compromise(h)
            t = max(t, h.last + 1)
        if t == self.compromise_at:
            t += 1
        h.last = t
        return t

    def emit(self, h: _Holder, t: int, rec: Record) -> None:
        h.records.append((t, rec))
        kind = type(rec)
        self.type_counts[kind] = self.type_counts.get(kind, 0) + 1

    # -- certificates -----------------------------------------------------------

    def can_issue(self, h: _Holder, family: int, t: int) -> bool:
        """Act §6, §16-5, §25, §35-5: no valid certificate of the family at t (see `rules.double_issuance`)."""
        c = h.cur[family]
        return c is None or (c.revoked_at is not None and c.revoked_at <= t) or c.na < t

    def card_valid(self, h: _Holder, t: int) -> bool:
        return h.card_ok and h.card_expiry is not None and h.card_expiry >= _jday(t)

    def issue(self, h: _Holder, family: int, t: int, *, renewal: bool = False) -> _Cert | None:
        """Issue a certificate of ``family`` at t (already ticked) if the law allows it."""
        today = _jday(t)
        if (
            t > self.as_of
            or not self.can_issue(h, family, t)
            or not h.card_ok
            or h.card_expiry is None
            or h.card_expiry < today
        ):
            return None
        iss = self.issuer_at(family, t)
        if iss is None:
            return None
        card_cert: _Cert | None = None
        auth_end: date | None = None
        if _IS_MOBILE[family]:
            card_cert = h.cur[_CARD_OF[family]]
            if card_cert is None or not card_cert.valid(t):
                return None
        elif family == _SC:
            auth = h.cur[_AC]
            if auth is not None and auth.valid(t):
                auth_end = auth.last_day
        last_day = rules.validity_end(
            family=_FAMILIES[family],
            issued=today,
            birth_date=h.person.birth,
            renewal=renewal,
            card_expiry=h.card_expiry,
            auth_cert_end=auth_end,
            card_cert_end=card_cert.last_day if card_cert is not None else None,
        )
        na = _day_end(last_day)
        if na <= t:
            return None
        counter = self.counters[iss.files.id]
        self.counters[iss.files.id] = counter + 1
        cert = _Cert(
            fi=family,
            issuer=iss,
            serial=_serial_of(counter, iss.key),
            nb=t,
            na=na,
            last_day=last_day,
            facts=h.person.facts() if _IS_SIGN[family] else None,
            card_serial=card_cert.serial if card_cert is not None else None,
            renewal=renewal,
        )
        h.cur[family] = cert
        h.all_certs.append(cert)
        when = datetime.fromtimestamp(t, UTC)
        h.n += 1
        h.records.append(
            (
                t,
                Issuance(
                    id=f"r{h.index}-{h.n}",
                    recorded_at=when,
                    serial=cert.serial,
                    family=_FAMILIES[family],
                    issuer=iss.files.id,
                    not_before=when,
                    not_after=datetime.fromtimestamp(na, UTC),
                    holder=h.key,
                    facts=cert.facts,
                    card_serial=cert.card_serial,
                    renewal=renewal,
                ),
            )
        )
        self.type_counts[Issuance] = self.type_counts.get(Issuance, 0) + 1
        self.schedule_maintenance(h, cert)
        if h.force is not None and h.force[1] == family and t >= h.force[2]:
            h.push(self.later(t, 1, 20), _LIFE, (h.force[0], family))
            h.force = None
        return cert

    def schedule_maintenance(self, h: _Holder, cert: _Cert) -> None:
        """Renewal (within three months of the end, Ord §13(1), §49(1)) or a later reissue."""
        if _IS_MOBILE[cert.fi] or h.card_expiry is None:
            return
        if cert.last_day >= h.card_expiry:
            return  # ends with the card: the card renewal handles it
        if cert.fi == _SC:
            auth = h.cur[_AC]
            if auth is not None and auth.valid(cert.nb) and auth.last_day <= cert.last_day:
                return  # ends with the auth certificate: renewed together with it
        r = self.rng.random() if h.forced is None else 0.0  # showcase holders always renew
        if r < 0.75:
            t = self.office(cert.last_day - timedelta(days=_between(self.rng, 1, 85)))
            if t > cert.nb + DAY:
                h.push(t, _RENEW, cert.fi)
        elif r < 0.85:
            h.push(
                self.office(cert.last_day + timedelta(days=_between(self.rng, 1, 400))),
                _REISSUE,
                cert.fi,
            )

    def revoke(
        self,
        h: _Holder,
        cert: _Cert,
        t: int,
        category: Category,
        reason: Reason,
        detail: str | None = None,
    ) -> None:
        """The certificate loses effect at t; a card certificate takes its mobile one along (Act §16-13, §35-13)."""
        cert.revoked_at = t
        cert.category = category
        cert.reason = reason
        cert.detail = detail
        if not _IS_MOBILE[cert.fi]:
            mobile = h.cur[_MOBILE_OF[cert.fi]]
            if mobile is not None and mobile.valid(t) and mobile.card_serial == cert.serial:
                step = rules.cascade(cert.family, category)
                if step is not None:
                    _, cat, rsn = step
                    mobile.revoked_at = t
                    mobile.category = cat
                    mobile.reason = rsn

    def request(self, h: _Holder, cert: _Cert, t: int, reason: RequestReason) -> bool:
        """失効申請等情報 (Act §11, §16-10, §30, §35-10) for one certificate, if still valid then."""
        t = self.tick(h, t)
        if not cert.valid(t):
            return False
        self.emit(
            h,
            t,
            RevocationRequest(
                id=h.next_id(),
                recorded_at=_utc(t),
                serial=cert.serial,
                issuer=cert.issuer.files.id,
                reason=reason,
            ),
        )
        category, rsn = rules.request_revocation(reason)
        self.revoke(h, cert, t, category, rsn)
        return True

    def change(self, h: _Holder, t: int, kind: ChangeKind, **fields: Any) -> None:
        self.emit(
            h,
            t,
            ResidentChange(
                id=h.next_id(), recorded_at=_utc(t), holder=h.key, change=kind, **fields
            ),
        )

    def revoke_card_certs(self, h: _Holder, t: int, families: tuple[int, ...]) -> bool:
        """Resident-change revocation (Act §12, §31) of the valid card certificates named."""
        hit = False
        for f in families:
            c = h.cur[f]
            if c is not None and c.valid(t):
                self.revoke(h, c, t, Category.RESIDENT_CHANGE, Reason.AFFILIATION_CHANGED)
                hit = True
        return hit

    def valid(self, h: _Holder, family: int, t: int) -> _Cert | None:
        c = h.cur[family]
        return c if c is not None and c.valid(t) else None

    def apply_compromise(self, h: _Holder) -> None:
        """Act §14: the compromised generation's valid certificates lose effect at the compromise."""
        h.compromised = True
        assert self.compromise_at is not None and self.compromised is not None
        at = self.compromise_at
        c = h.cur[_COMPROMISED_FI]
        if (
            c is not None
            and c.valid(at)
            and rules.compromise_revokes(
                cert_issuer=c.issuer.files.id,
                compromised_issuer=self.compromised.files.id,
                not_after=_utc(c.na),
                at=COMPROMISE_AT,
            )
        ):
            self.revoke(h, c, at, Category.CA_COMPROMISE, Reason.CA_COMPROMISE)
            if self.chance(h, 0.9):
                h.push(self.later(at, 0.1, 90), _REISSUE, _COMPROMISED_FI)
        h.last = max(h.last, at)

    # -- one holder ---------------------------------------------------------------

    def holder(self, index: int) -> _Holder:
        rng = self.rng
        person = _new_person(rng)
        h = _Holder(index, rules.holder_key(self.secret, _resident_code(index)), person)
        h.mobile_user = rng.random() < MOBILE_SHARE
        h.sign_user = rng.random() < SIGN_SHARE
        span = self.as_of - DAY - self.start
        if span <= 0:
            return h
        showcase = index < len(_SHOWCASE)
        if showcase:
            kind, fam, after = _SHOWCASE[index]
            h.force = h.forced = (kind, _FI[fam], _epoch(after))
            h.mobile_user = h.sign_user = True
            t0 = self.start + int(rng.random() * min(span, 2 * YEAR))
        else:
            t0 = self.start + int(span * rng.random() ** 0.7)
        t0 = self.office(_jday(t0))
        h.push(t0, _NEW_CARD)
        t = float(t0) if not showcase else float(self.as_of)  # showcase: only the forced event
        while True:
            t += rng.expovariate(_LIFE_TOTAL) * YEAR
            if t > self.as_of:
                break
            u = rng.random()
            kind = _LIFE_KINDS[min(bisect_right(_LIFE_CUMULATIVE, u), len(_LIFE_KINDS) - 1)]
            h.push(max(self.office(_jday(int(t))), t0 + 60), _LIFE, kind)
        age = (_jday(t0) - person.birth).days / 365.25
        death_rate = min(0.2, 0.0005 * math.exp((age - 40) / 10))
        death = t0 + rng.expovariate(death_rate) * YEAR
        if death < self.as_of and not showcase:
            h.push(max(self.office(_jday(int(death))), t0 + 60), _LIFE, _DEATH)
        if h.mobile_user:
            h.push(self.later(max(t0, self.mobile_start), 0, 400), _MOBILE)
        if self.compromise_at is not None and self.compromise_at <= self.as_of:
            h.push(self.compromise_at, _COMPROMISE)
        self.run(h)
        return h

    def run(self, h: _Holder) -> None:
        handlers = self.handlers
        while h.heap:
            t, _, kind, arg = heapq.heappop(h.heap)
            if t > self.as_of:
                break
            if kind in _VOLUNTARY:
                if h.ended:
                    continue
                if h.busy_until > t:
                    h.push(self.later(h.busy_until, 0.05, 3), kind, arg)
                    continue
            handlers[kind](h, t, arg)

    # -- handlers -----------------------------------------------------------------

    def schedule_mobile(self, h: _Holder, t: int, p: float = 0.85) -> None:
        if h.mobile_user and self.chance(h, p):
            h.push(self.later(max(t, self.mobile_start), 0.01, 30), _MOBILE)

    def new_card_certs(
        self, h: _Holder, t: int, renewed: dict[int, _Cert], *, mobile: bool = True
    ) -> None:
        """Issue the card certificates of a new card at t: auth first (it caps the sign cert)."""
        for family in (_AC, _SC):
            if family == _SC and not h.sign_user:
                continue
            t = self.tick(h, t)
            old = renewed.get(family)
            renewal = old is not None and rules.is_renewal(old.last_day, _jday(t))
            self.issue(h, family, t, renewal=renewal)
        if mobile:
            self.schedule_mobile(h, t)

    def schedule_card(self, h: _Holder) -> None:
        assert h.card_expiry is not None
        r = self.rng.random() if h.forced is None else 0.0  # showcase holders always renew
        if r < 0.85:
            d = h.card_expiry - timedelta(days=_between(self.rng, 1, 85))
            h.push(self.office(d), _CARD_RENEW)
        elif r < 0.95:
            h.push(
                self.office(h.card_expiry + timedelta(days=_between(self.rng, 30, 700))), _NEW_CARD
            )

    def on_new_card(self, h: _Holder, t: int, arg: Any) -> None:
        if self.valid(h, _AC, t) or self.valid(h, _SC, t):
            return
        t = self.tick(h, t)
        h.card_ok = True
        h.card_expiry = rules.nth_birthday_after(h.person.birth, _jday(t), 10)
        if (
            h.forced is None and self.rng.random() < 0.004
        ):  # destroyed before delivery (J-LIS: unspecified)
            self.new_card_certs(h, t, {}, mobile=False)
            t2 = self.later(t, 1, 5)
            if t2 <= self.as_of:
                for f in (_SC, _AC):
                    c = h.cur[f]
                    if c is not None:
                        self.request(h, c, t2, RequestReason.UNDELIVERED)
            h.card_ok = False
            h.push(self.later(t2, 14, 40), _NEW_CARD)
            return
        self.new_card_certs(h, t, {})
        self.schedule_card(h)

    def on_card_renew(self, h: _Holder, t: int, arg: Any) -> None:
        """A new card within three months of the old one's expiry: old certificates renewed."""
        if not self.card_valid(h, t):
            return
        renewed: dict[int, _Cert] = {}
        for f in (_SC, _AC):
            c = h.cur[f]
            if c is not None and self.request(h, c, t, RequestReason.RENEWAL):
                renewed[f] = c
        t = self.tick(h, t)
        h.card_expiry = rules.nth_birthday_after(h.person.birth, _jday(t), 10)
        self.new_card_certs(h, t + 120, renewed)
        self.schedule_card(h)

    def on_renew(self, h: _Holder, t: int, family: int) -> None:
        """Ord §13(1), §49(1): revoke and reissue within the last three months (6th birthday).

        An auth-card renewal takes along a sign-card certificate that ends with it.
        """
        group = (_SC, _AC) if family == _AC else (family,)
        renewed: dict[int, _Cert] = {}
        for f in group:
            c = h.cur[f]
            if (
                c is not None
                and c.valid(t)
                and rules.is_renewal(c.last_day, _jday(t))
                and self.request(h, c, t, RequestReason.RENEWAL)
            ):
                renewed[f] = c
        t = self.tick(h, t + 120)
        if self.valid(h, family, t) is not None:
            return
        for f in (_AC, _SC):
            if f in group and (f in renewed or f == family):
                old = renewed.get(f)
                t = self.tick(h, t)
                renewal = old is not None and rules.is_renewal(old.last_day, _jday(t))
                self.issue(h, f, t, renewal=renewal)
        self.schedule_mobile(h, t)

    def on_reissue(self, h: _Holder, t: int, family: int) -> None:
        if family == _SC:
            h.sign_user = True
        if self.valid(h, family, t) is not None or not self.card_valid(h, t):
            return
        if self.issue(h, family, self.tick(h, t)) is not None:
            self.schedule_mobile(h, t)

    def on_mobile(self, h: _Holder, t: int, arg: Any) -> None:
        if not h.mobile_user or t < self.mobile_start:
            return
        for f in (_AM, _SM):
            if self.valid(h, _CARD_OF[f], t) is not None and self.valid(h, f, t) is None:
                # an auth-mobile one is applied for by a 署名利用者, signed with a sign-card
                # certificate in effect (Act §35-2(1), (3))
                if f == _AM and self.valid(h, _SC, t) is None:
                    continue
                self.issue(h, f, self.tick(h, t))

    def on_compromise(self, h: _Holder, t: int, arg: Any) -> None:
        if not h.compromised:
            self.apply_compromise(h)

    def on_withdraw(self, h: _Holder, t: int, verifier: str) -> None:
        t = self.tick(h, t)
        self.emit(
            h,
            t,
            Consent(
                id=h.next_id(), recorded_at=_utc(t), holder=h.key, verifier=verifier, granted=False
            ),
        )

    def on_life(self, h: _Holder, t: int, arg: str | tuple[str, int]) -> None:
        kind, target = arg if isinstance(arg, tuple) else (arg, None)
        rng = self.rng
        p = h.person
        if kind in (_RELOCATE, _RENAME, _FACT_SEX, _FACT_BIRTH):
            t = self.tick(h, t)
            if kind == _RELOCATE:
                _new_address(p, rng, same_city=True)
                fact = Fact.ADDRESS
            elif kind == _RENAME:
                p.surname = _between(rng, 0, len(_SURNAMES))
                fact = Fact.NAME
            elif kind == _FACT_SEX:
                p.sex = Sex.FEMALE if p.sex is Sex.MALE else Sex.MALE
                fact = Fact.SEX
            else:
                p.birth = p.birth + timedelta(days=rng.choice((-3, -2, -1, 1, 2, 3)))
                fact = Fact.BIRTH_DATE
            p.cache = None
            self.change(h, t, ChangeKind.FACT_CHANGE, fact=fact)
            if self.revoke_card_certs(h, t, (_SC,)):
                self.after_sign_loss(h, t)
        elif kind == _MINOR:
            t = self.tick(h, t)
            correction = rng.choice(list(MinorCorrection))
            if correction is MinorCorrection.BUILDING_NAME:
                p.building = (
                    f"{_pick(rng, _BUILDINGS)}{_between(rng, 1, 9)}0{_between(rng, 1, 9)}号室"
                )
                p.cache = None
            self.change(h, t, ChangeKind.MINOR_CORRECTION, correction=correction)
        elif kind == _MOVE:
            self.start_move(h, t)
        elif kind in (_DEATH, _EX_OFFICIO):
            t = self.tick(h, t)
            cause = DeletionCause.DEATH if kind == _DEATH else DeletionCause.EX_OFFICIO
            self.change(h, t, ChangeKind.RECORD_DELETION, cause=cause)
            self.revoke_card_certs(h, t, (_SC, _AC))
            h.ended = True
        elif kind in (_VANISH, _ABROAD, _ABROAD_WINDOW):
            self.start_move_out(h, t, kind, forced=target is not None)
        elif kind in (_LOSS, _DAMAGE, _UNUSABLE):
            reason = {_LOSS: RequestReason.LOSS, _DAMAGE: RequestReason.DAMAGE}.get(
                kind, RequestReason.UNUSABLE
            )
            any_cert = False
            for f in (_SC, _AC):
                c = h.cur[f]
                if c is not None and self.request(h, c, t, reason):
                    any_cert = True
            t = h.last
            if any_cert:
                h.card_ok = False
                if self.chance(h, 0.9):
                    h.push(self.later(t, 7, 45), _NEW_CARD)
        elif kind in (_KEYCOMP, _STOP_SIGN):
            c = self.valid(h, _SC, t)
            if c is not None:
                reason = (
                    RequestReason.KEY_COMPROMISE if kind == _KEYCOMP else RequestReason.APPLICATION
                )
                if not self.request(h, c, t, reason):
                    return
                t = h.last
                if kind == _KEYCOMP and self.chance(h, 0.8):
                    h.push(self.later(t, 0.5, 30), _REISSUE, _SC)
                elif kind == _STOP_SIGN:
                    h.sign_user = False
                    if rng.random() < 0.3:
                        h.push(self.later(t, 200, 1500), _REISSUE, _SC)
        elif kind == _RECERR:
            self.recording_error(h, t, target)
        elif kind in (_PHONE_LOST, _PHONE_CHANGE):
            reason = RequestReason.LOSS if kind == _PHONE_LOST else RequestReason.APPLICATION
            done = False
            for f in (_SM, _AM):
                c = h.cur[f]
                if c is not None and self.request(h, c, t, reason):
                    done = True
            t = h.last
            if done:
                if kind == _PHONE_CHANGE:
                    h.push(t + 600, _MOBILE)
                elif self.chance(h, 0.7):
                    h.push(self.later(t, 3, 60), _MOBILE)
        elif kind == _CONSENT and self.verifiers:
            t = self.tick(h, t)
            verifier = rng.choice(self.verifiers)
            self.emit(
                h,
                t,
                Consent(
                    id=h.next_id(),
                    recorded_at=_utc(t),
                    holder=h.key,
                    verifier=verifier,
                    granted=True,
                ),
            )
            if rng.random() < 0.25:
                h.push(self.later(t, 30, 900), _WITHDRAW, verifier)

    def after_sign_loss(self, h: _Holder, t: int) -> None:
        """After a resident change revoked the sign-card certificate: most holders get a new one."""
        if self.chance(h, 0.7):
            h.push(self.later(t, 0.05, 45), _REISSUE, _SC)

    def recording_error(self, h: _Holder, t: int, target: int | None) -> None:
        """記録誤り等 (Act §13, §16-11, §32, §35-11) on one valid certificate (``target``'s if given)."""
        t = self.tick(h, t)
        families = [f for f in range(4) if self.valid(h, f, t) is not None]
        if not families:
            return
        if target is not None and target not in families:
            h.force = h.forced  # the showcase certificate went away first: wait for the next
            return
        family = target if target is not None else families[_between(self.rng, 0, len(families))]
        cert = h.cur[family]
        assert cert is not None
        self.emit(
            h,
            t,
            RecordingError(
                id=h.next_id(), recorded_at=_utc(t), serial=cert.serial, issuer=cert.issuer.files.id
            ),
        )
        self.revoke(h, cert, t, Category.RECORDING_ERROR, Reason.AFFILIATION_CHANGED)
        if _IS_MOBILE[family]:
            h.push(self.later(t, 1, 20), _MOBILE)
        elif self.chance(h, 0.9):
            h.push(self.later(t, 1, 20), _REISSUE, family)

    # -- moves ----------------------------------------------------------------------

    def start_move(self, h: _Holder, t: int) -> None:
        """A domestic move (転出届 then 転入届 within 14 days, then the address change)."""
        d = _jday(t)
        planned = d + timedelta(days=_between(self.rng, 0, 15))
        t_in = self.office(planned + timedelta(days=_between(self.rng, 0, 14)))
        if t_in <= t + 3600 or t_in + 600 > self.as_of:
            return
        t = self.tick(h, t)
        self.change(h, t, ChangeKind.MOVE_OUT_NOTICE, planned_date=planned)
        h.busy_until = t_in + 600
        h.push(t_in, _MOVE_IN)

    def on_move_in(self, h: _Holder, t: int, arg: Any) -> None:
        t = self.tick(h, t)
        self.change(h, t, ChangeKind.MOVE_IN_NOTICE)
        t = self.tick(h, t + 60)
        _new_address(h.person, self.rng, same_city=False)
        self.change(h, t, ChangeKind.FACT_CHANGE, fact=Fact.ADDRESS)
        h.busy_until = 0
        if self.revoke_card_certs(h, t, (_SC,)):
            self.after_sign_loss(h, t)

    def start_move_out(self, h: _Holder, t: int, kind: str, *, forced: bool = False) -> None:
        """A move-out with no move-in: domestic (vanish) or abroad, with or without window certificates."""
        d = _jday(t)
        abroad = kind != _VANISH
        lo, hi = (10, 31) if kind == _ABROAD_WINDOW else (0, 15)
        planned = d + timedelta(days=_between(self.rng, lo, hi))
        t_del = self.office(planned)
        lapse = _epoch(rules.move_out_lapse(planned))
        if t_del <= t + 3600 or lapse > self.as_of:
            return
        if not (self.valid(h, _AC, t) or self.valid(h, _SC, t)):
            return
        t = self.tick(h, t)
        self.change(h, t, ChangeKind.MOVE_OUT_NOTICE, planned_date=planned, abroad=abroad)
        h.ended = True
        cause = DeletionCause.ABROAD_MOVE_OUT if abroad else DeletionCause.MOVE_OUT
        if kind == _ABROAD_WINDOW:
            window = self.office(d + timedelta(days=_between(self.rng, 1, (planned - d).days)))
            h.push(window, _WINDOW_ISSUE)
            h.push(t_del, _DELETION, (cause, True))
            hi = 1000 if not forced else max(31, min(1000, (self.as_of - t_del) // DAY - 1))
            koseki = self.later(t_del, 30, hi)
            if (forced or self.rng.random() < 0.5) and koseki <= self.as_of:
                h.push(koseki, _KOSEKI)
        else:
            h.push(t_del, _DELETION, (cause, False))
            h.push(lapse, _LAPSE)

    def on_window_issue(self, h: _Holder, t: int, arg: Any) -> None:
        """国外転出者: certificates issued between the 国外転出届 and its planned date (Act §12(2), §31(2))."""
        for f in (_SC, _AC):
            c = h.cur[f]
            if c is not None:
                self.request(h, c, t, RequestReason.APPLICATION)
        t = h.last
        if self.card_valid(h, t):
            for f in (_AC, _SC):
                self.issue(h, f, self.tick(h, t + 120))

    def on_deletion(self, h: _Holder, t: int, arg: tuple[DeletionCause, bool]) -> None:
        """住民票の消除 on a move-out: revokes the sign-card unless issued in the abroad window (Act §12(2))."""
        cause, window = arg
        t = self.tick(h, t)
        self.change(h, t, ChangeKind.RECORD_DELETION, cause=cause)
        if not window:  # window certificates survive; older ones were revoked by request
            self.revoke_card_certs(h, t, (_SC,))

    def on_lapse(self, h: _Holder, t: int, arg: Any) -> None:
        """Act §31(2): 30 days after the planned date with no 転入届 the auth-card loses effect.

        No record: time revokes it, at 00:00 JST of planned_date + 31 (`rules.move_out_lapse`).
        """
        if self.compromise_at is not None and t >= self.compromise_at and not h.compromised:
            self.apply_compromise(h)
        c = self.valid(h, _AC, t)
        if c is not None:
            self.revoke(h, c, t, Category.RESIDENT_CHANGE, Reason.AFFILIATION_CHANGED, CASE_30_DAYS)
        h.last = max(h.last, t)

    def on_koseki(self, h: _Holder, t: int, arg: Any) -> None:
        """戸籍の附票の消除 of a person living abroad (Act §12(3), §31(3)): both card certificates."""
        t = self.tick(h, t)
        self.change(h, t, ChangeKind.KOSEKI_ANNEX_DELETION)
        self.revoke_card_certs(h, t, (_SC, _AC))


# ---------------------------------------------------------------------------
# Cases and samples
# ---------------------------------------------------------------------------


def case_of(category: Category | None, detail: str | None, *, expired: bool) -> str:
    """The answer case of a certificate: ``good``, ``expired`` or ``revoked:<category or detail>``."""
    if category is not None:
        return f"revoked:{detail or category.value}"
    return "expired" if expired else "good"


def _cert_case(c: _Cert, as_of: int) -> str:
    return case_of(c.category, c.detail, expired=c.na <= as_of)


class _Reservoir:
    """Uniform reservoir sampling of at most ``cap`` certificates (Li's Algorithm L).

    Algorithm L draws how many items to skip, so a bucket seen millions of
    times costs a counter increment per item and a few random draws in all.
    """

    __slots__ = ("cap", "items", "next", "seen", "w")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.seen = 0
        self.items: list[_Cert] = []
        self.w = 1.0
        self.next = 0
        """The 1-based index of the next item that enters the reservoir once it is full."""

    def offer(self, c: _Cert, rng: random.Random) -> None:
        self.seen += 1
        if len(self.items) < self.cap:
            self.items.append(c)
            if len(self.items) == self.cap:
                self._skip(rng)
        elif self.seen == self.next:
            self.items[int(rng.random() * self.cap)] = c
            self._skip(rng)

    def _skip(self, rng: random.Random) -> None:
        self.w *= math.exp(math.log(1.0 - rng.random()) / self.cap)
        gap = (
            math.floor(math.log(1.0 - rng.random()) / math.log1p(-self.w))
            if 0.0 < self.w < 1.0
            else 0
        )
        self.next = self.seen + gap + 1


def _probable_prime(n: int, rng: random.Random, rounds: int = 40) -> bool:
    """Miller-Rabin with ``rounds`` bases from ``rng`` (error below 4**-rounds)."""
    if n < 2:
        return False
    for p in _SMALL_PRIMES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for _ in range(rounds):
        x = pow(rng.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


_SMALL_PRIMES: Final = tuple(
    p for p in range(3, 2000, 2) if all(p % q for q in range(3, int(p**0.5) + 1, 2))
)


def deterministic_rsa_key(seed: int, bits: int) -> rsa.RSAPrivateKey:
    """An RSA key pair derived from ``seed``: the one subject key of every sample certificate.

    cryptography generates keys only from the system's randomness, and the
    samples must be the same bytes for the same seed, so the primes are drawn
    here from a seeded generator (top two bits set, so the modulus has exactly
    ``bits`` bits; Miller-Rabin with 40 rounds) and the key is assembled and
    checked by cryptography (`RSAPrivateNumbers.private_key` validates it). Only
    for synthetic test subjects: never for a CA or a signer.
    """
    rng = random.Random(f"jpki-va sample subject key {seed} {bits}")
    half = bits // 2
    e = 65537

    def prime() -> int:
        while True:
            candidate = rng.getrandbits(half) | (3 << (half - 2)) | 1
            if candidate % e != 1 and _probable_prime(candidate, rng):
                return candidate

    while True:
        p, q = prime(), prime()
        if p == q:
            continue
        if p < q:
            p, q = q, p
        n = p * q
        if n.bit_length() != bits:
            continue
        lam = math.lcm(p - 1, q - 1)
        d = pow(e, -1, lam)
        numbers = rsa.RSAPrivateNumbers(
            p=p,
            q=q,
            d=d,
            dmp1=d % (p - 1),
            dmq1=d % (q - 1),
            iqmp=pow(q, -1, p),
            public_numbers=rsa.RSAPublicNumbers(e=e, n=n),
        )
        return numbers.private_key()


# ---------------------------------------------------------------------------
# Output: time-sliced record files
# ---------------------------------------------------------------------------


def _slices(as_of: int, compromise: tuple[int, str] | None) -> list[tuple[int, str]]:
    """(start instant, file name) of every record file, in order.

    One slice per JST calendar year; the compromise year is cut at the
    compromise instant, with the compromise record alone in a slice of its own.
    """
    first = _epoch(SIMULATION_START)
    out: list[tuple[int, str]] = []
    for year in range(_jday(first).year, _jday(as_of).year + 1):
        start = max(first, _day_start(date(year, 1, 1)))
        if compromise is not None and _jday(compromise[0]).year == year:
            at, issuer = compromise
            out.append((start, f"{year}-1"))
            out.append((at, f"{year}-ca-compromise-{issuer}"))
            out.append((at + 1, f"{year}-2"))
        else:
            out.append((start, f"{year}"))
    return [(start, f"{n:04d}-{label}.jsonl") for n, (start, label) in enumerate(out, start=1)]


def private_dir(path: Path) -> None:
    """A directory of personal data: mode 0700 from its creation (an existing one is narrowed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        path.chmod(0o700)


def _create_private(path: Path) -> IO[bytes]:
    """A new file of personal data (records with the four facts): mode 0600 from its creation."""
    path.unlink(missing_ok=True)
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


class _SliceWriter:
    """Buffers each slice's records and appends them to its file, chunk by chunk."""

    def __init__(self, directory: Path, slices: list[tuple[int, str]]) -> None:
        private_dir(directory)
        self.starts = [s for s, _ in slices]
        self.names = [n for _, n in slices]
        self.files: list[IO[bytes]] = [_create_private(directory / n) for n in self.names]
        self.buffers: list[list[Record]] = [[] for _ in slices]
        self.encoder = msgspec.json.Encoder()
        self.count = 0

    def add(self, t: int, rec: Record) -> None:
        self.buffers[bisect_right(self.starts, t) - 1].append(rec)
        self.count += 1

    def add_holder(self, records: list[tuple[int, Record]]) -> None:
        """One holder's records, in chronological order (so slices only move forward)."""
        starts = self.starts
        i = bisect_right(starts, records[0][0]) - 1
        buf = self.buffers[i]
        nxt = starts[i + 1] if i + 1 < len(starts) else None
        for t, rec in records:
            if nxt is not None and t >= nxt:
                i = bisect_right(starts, t) - 1
                buf = self.buffers[i]
                nxt = starts[i + 1] if i + 1 < len(starts) else None
            buf.append(rec)
        self.count += len(records)

    def flush(self) -> None:
        for f, buf in zip(self.files, self.buffers, strict=True):
            if buf:
                f.write(self.encoder.encode_lines(buf))
                buf.clear()

    def close(self) -> None:
        self.flush()
        for f in self.files:
            f.close()


# ---------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------


class SynthSummary(msgspec.Struct, kw_only=True):
    """What `synth` produced (also written as ``summary.json``)."""

    holders: int
    seed: int
    as_of: datetime
    records: int
    record_files: list[str]
    records_by_type: dict[str, int]
    issuances_by_issuer: dict[str, int]
    revocations_by_category: dict[str, int]
    """Simulated revocations, including cascades and 30-day lapses, which have no record."""
    cases: dict[str, int]
    """Certificates per ``<issuer> <case>`` as of ``as_of`` (whole population)."""
    samples: int
    compromised_issuer: str | None = None
    compromise_at: datetime | None = None


_OUTPUTS: Final = ("records", "samples", "answers.jsonl", "summary.json", "holder-key.secret")


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise SynthError(f"{out} exists and is not empty; refusing to overwrite (use --force)")
        for name in _OUTPUTS:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
    if not out.is_dir():
        private_dir(out)


def _issuers(pki: Manifest, seed: int) -> list[_Iss]:
    out = []
    for files in pki.issuers:
        cert = x509.load_pem_x509_certificate(pki.path(files.cert).read_bytes())
        digest = hashlib.sha256(f"jpki-va serials {seed} {files.id}".encode()).digest()
        out.append(
            _Iss(files, _epoch(cert.not_valid_before_utc), int.from_bytes(digest[:8]) & _M62)
        )
    return out


def _compromised(issuers: list[_Iss], as_of: int) -> _Iss | None:
    """The generation the simulation compromises: the oldest of `COMPROMISED_FAMILY`, if rolled over."""
    gens = sorted(
        (i for i in issuers if i.files.family is COMPROMISED_FAMILY),
        key=lambda i: i.files.generation,
    )
    at = _epoch(COMPROMISE_AT)
    if len(gens) < 2 or gens[1].start >= at or at > as_of:
        return None
    return gens[0]


def synth(
    pki: Manifest,
    out: Path,
    *,
    holders: int,
    seed: int,
    as_of: datetime,
    samples: int = 300,
    progress: bool = False,
    force: bool = False,
) -> SynthSummary:
    """Simulate ``holders`` holders from 2016-01-01 to ``as_of`` and write records, samples, answers.

    Writes under ``out``: ``records/NNNN-*.jsonl`` (the records, time-sliced),
    ``samples/`` (real certificates signed by the PKI's CAs, their issuers'
    certificates and the samples' subject key, mode 0600), ``answers.jsonl`` (one
    `model.Answer` per sample; paths relative to ``out``), ``holder-key.secret``
    (the demo holder-key secret, mode 0600: its exact bytes are the secret) and
    ``summary.json``. Refuses a non-empty ``out`` unless ``force`` (then only the
    files above are replaced).
    """
    if as_of.tzinfo is None:
        raise SynthError("as_of must carry a timezone")
    if as_of <= SIMULATION_START + timedelta(days=2):
        raise SynthError(f"as_of must be later than {SIMULATION_START:%Y-%m-%d}")
    if holders < 0 or samples < 0:
        raise SynthError("holders and samples must not be negative")
    if not pki.issuers:
        raise SynthError("the PKI has no issuers")
    as_of_s = int(as_of.timestamp())
    as_of = _utc(as_of_s)
    out = Path(out)
    _prepare_out(out, force)
    write_private(out / "holder-key.secret", DEMO_HOLDER_SECRET)

    issuers = _issuers(pki, seed)
    compromised = _compromised(issuers, as_of_s)
    verifiers = [
        p.id
        for p in pki.parties
        if "signature-verifier" in p.titles or "group-signature-verifier" in p.titles
    ]
    sim = _Simulator(
        issuers,
        seed=seed,
        as_of=as_of_s,
        compromised=compromised,
        verifiers=verifiers,
        secret=DEMO_HOLDER_SECRET,
    )
    compromise = (
        (sim.compromise_at, compromised.files.id) if compromised and sim.compromise_at else None
    )
    slices = _slices(as_of_s, compromise)
    writer = _SliceWriter(out / "records", slices)

    buckets = _bucket_plan(issuers, compromised, samples)
    sample_rng = random.Random(f"jpki-va samples {seed}")
    cases: dict[tuple[str, str], int] = {}
    try:
        if compromise is not None:
            writer.add(
                compromise[0],
                CaCompromise(
                    id=f"ca-compromise-{compromise[1]}",
                    recorded_at=_utc(compromise[0]),
                    issuer=compromise[1],
                    cause=CompromiseCause.LEAK,
                ),
            )
            sim.type_counts[CaCompromise] = 1
        with tqdm(
            total=holders, file=sys.stderr, disable=not progress, unit="holder", unit_scale=True
        ) as bar:
            for start in range(0, holders, CHUNK):
                stop = min(holders, start + CHUNK)
                for index in range(start, stop):
                    h = sim.holder(index)
                    if h.records:
                        writer.add_holder(h.records)
                    for c in h.all_certs:
                        key = (c.issuer.files.id, _cert_case(c, as_of_s))
                        cases[key] = cases.get(key, 0) + 1
                        bucket = buckets.get(key)
                        if bucket is not None:
                            bucket.offer(c, sample_rng)
                writer.flush()
                bar.update(stop - start)
    finally:
        writer.close()

    by_category: dict[str, int] = {}
    for (_, case), n in cases.items():
        if case.startswith("revoked:"):
            by_category[case[8:]] = by_category.get(case[8:], 0) + n
    n_samples = _write_samples(pki, out, issuers, buckets, seed=seed, as_of=as_of_s, rng=sample_rng)
    summary = SynthSummary(
        holders=holders,
        seed=seed,
        as_of=as_of,
        records=writer.count,
        record_files=[f"records/{n}" for n in writer.names],
        records_by_type=dict(sorted((_TYPE_TAGS[k], n) for k, n in sim.type_counts.items())),
        issuances_by_issuer=dict(sim.counters),
        revocations_by_category=dict(sorted(by_category.items())),
        cases={f"{i} {c}": n for (i, c), n in sorted(cases.items())},
        samples=n_samples,
        compromised_issuer=compromise[1] if compromise else None,
        compromise_at=_utc(compromise[0]) if compromise else None,
    )
    raw = msgspec.json.format(msgspec.json.encode(summary), indent=2)
    (out / "summary.json").write_bytes(raw + b"\n")
    return summary


_TYPE_TAGS: Final[dict[type, str]] = {
    Issuance: "issuance",
    RevocationRequest: "revocation-request",
    ResidentChange: "resident-change",
    RecordingError: "recording-error",
    CaCompromise: "ca-compromise",
    Consent: "consent",
}

_NEVER_ISSUED: Final = "never-issued"


def _applicable_cases(iss: _Iss, compromised: _Iss | None) -> list[str]:
    """The cases a generation can have: ca-compromise only for the compromised one."""
    cases = list(CASES[iss.files.family])
    if iss is not compromised:
        cases.remove("revoked:ca-compromise")
    return cases


def _bucket_plan(
    issuers: list[_Iss], compromised: _Iss | None, samples: int
) -> dict[tuple[str, str], _Reservoir]:
    """One reservoir per issuer x applicable case; never-issued samples are made, not drawn."""
    plan = [(i.files.id, case) for i in issuers for case in _applicable_cases(i, compromised)]
    cap = max(1, samples // max(1, len(plan))) if samples else 0
    return {key: _Reservoir(cap) for key in plan if key[1] != _NEVER_ISSUED and cap}


def _sample_never_issued(iss: _Iss, k: int, as_of: int, rng: random.Random) -> list[_Cert]:
    out = []
    for n in range(k):
        person = _new_person(rng)
        nb = as_of - 30 * DAY
        last = _jday(as_of) + timedelta(days=365)
        out.append(
            _Cert(
                fi=_FI[iss.files.family],
                issuer=iss,
                serial=_serial_of(_NEVER_ISSUED_BASE + n, iss.key),
                nb=nb,
                na=_day_end(last),
                last_day=last,
                facts=person.facts() if iss.files.family.is_sign else None,
                card_serial=None,
                renewal=False,
            )
        )
    return out


def _write_samples(
    pki: Manifest,
    out: Path,
    issuers: list[_Iss],
    buckets: dict[tuple[str, str], _Reservoir],
    *,
    seed: int,
    as_of: int,
    rng: random.Random,
) -> int:
    """Issue the sample certificates with the real CA keys and write answers.jsonl."""
    answers: list[Answer] = []
    sample_dir = out / "samples"
    sample_dir.mkdir(parents=True, exist_ok=True)
    cap = max((b.cap for b in buckets.values()), default=0)
    if cap == 0:
        (out / "answers.jsonl").write_bytes(b"")
        return 0
    subject = deterministic_rsa_key(seed, max(2048, pki.key_size))
    write_private(
        sample_dir / "subject-key.pem",
        subject.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    public = subject.public_key()
    for iss in issuers:
        files = iss.files
        ca_pem = pki.path(files.cert).read_bytes()
        ca_cert = x509.load_pem_x509_certificate(ca_pem)
        try:  # the CA key, a PEM file or a key in a PKCS#11 token
            ca_key = load_signer(pki.key_ref(files.key), pki.path(files.cert))
        except SignerError as e:
            raise SynthError(f"issuer {files.id}: {e}") from None
        issuer_rel = f"samples/issuers/{files.id}.pem"
        (out / issuer_rel).parent.mkdir(parents=True, exist_ok=True)
        (out / issuer_rel).write_bytes(ca_pem)
        for case in CASES[files.family]:
            if case == _NEVER_ISSUED:
                picked = _sample_never_issued(iss, cap, as_of, rng)
            else:
                bucket = buckets.get((files.id, case))
                picked = sorted(bucket.items, key=lambda c: c.serial) if bucket else []
            for c in picked:
                cert = build_ee_cert(
                    issuer_cert=ca_cert,
                    issuer_key=ca_key,
                    family=c.family,
                    serial=c.serial,
                    not_before=_utc(c.nb),
                    not_after=_utc(c.na),
                    public_key=public,
                    facts=c.facts,
                    issuer_files=files,
                )
                rel = f"samples/{files.id}/{case.replace(':', '-')}-{c.serial:016x}.pem"
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                (out / rel).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
                revoked = c.revoked_at is not None
                answers.append(
                    Answer(
                        cert=rel,
                        issuer_cert=issuer_rel,
                        family=c.family,
                        issuer=files.id,
                        serial=c.serial,
                        status=(
                            CertStatus.UNKNOWN
                            if case == _NEVER_ISSUED
                            else CertStatus.REVOKED
                            if revoked
                            else CertStatus.GOOD
                        ),
                        case=case,
                        category=c.category,
                        reason=c.reason,
                        revoked_at=_utc(c.revoked_at) if c.revoked_at is not None else None,
                    )
                )
    (out / "answers.jsonl").write_bytes(msgspec.json.Encoder().encode_lines(answers))
    return len(answers)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def add_cli(subparsers: Any) -> None:
    """``synth`` (`crlbuilder.demo.democli.add_synth_cli`), run by `run_synth`."""
    democli.add_synth_cli(subparsers, run_synth)


def run_synth(args: argparse.Namespace) -> int:
    """``crlbuilder synth``: run `synth` from parsed arguments and print a one-line summary."""
    as_of = args.as_of or datetime.now(UTC).replace(microsecond=0)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        pki = load_manifest(args.pki)
        summary = synth(
            pki,
            args.out,
            holders=args.holders,
            seed=args.seed,
            as_of=as_of,
            samples=args.samples,
            progress=progress,
            force=args.force,
        )
    except (SynthError, ManifestError, OSError) as e:
        print(f"crlbuilder synth: error: {e}", file=sys.stderr)
        return 2
    print(
        f"{args.out}: {summary.holders} holders, {summary.records} records in "
        f"{len(summary.record_files)} files, {summary.samples} samples, as of {summary.as_of:%Y-%m-%dT%H:%M:%SZ}"
    )
    return 0
