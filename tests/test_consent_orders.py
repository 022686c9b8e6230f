"""Rules 9 over every read order: a holder's consent (同意, Act §18(3)) to a verifier ends as
the holder's latest word says, whatever order the grants and withdrawals are read in.

For every multiset of three or four records (grant or withdrawal, recordedAt among a few
instants, so that some are equal) and every distinct order of it, one verifier of its own: the
consent kept must be the latest grant's recordedAt when a grant is the latest word (a withdrawal
winning a tie), else none; the withdrawal kept must be the latest withdrawal's recordedAt when a
withdrawal is the latest word, else none (`crlbuilder.apply._consent_by_latest`,
`crlbuilder.consentkept`). No erasure runs, so no grant is refused as read too late.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from crlbuilder.verifiers import Verifiers
from tests.test_apply import H1, World, issuance, ts, two_holders, world
from tests.test_consent_expiry import at

__all__ = ["world"]

Said = tuple[bool, int]
"""(granted, day recorded) of one consent record."""


def _multisets(size: int, days: tuple[int, ...]) -> Iterator[tuple[Said, ...]]:
    kinds = [(g, d) for g in (True, False) for d in days]
    yield from itertools.combinations_with_replacement(kinds, size)


def _orders(records: tuple[Said, ...]) -> list[tuple[Said, ...]]:
    return sorted(set(itertools.permutations(records)))


def expected(records: tuple[Said, ...]) -> tuple[int | None, int | None]:
    """(consent kept, withdrawal kept) as the holder's latest word says."""
    latest = max(d for _, d in records)
    if any(not g and d == latest for g, d in records):  # a tie is the withdrawal's
        return None, at(latest)
    return at(latest), None


def _cases() -> list[tuple[Said, ...]]:
    cases = [o for ms in _multisets(3, (11, 12, 13)) for o in _orders(ms)]
    cases += [o for ms in _multisets(4, (11, 12, 13)) for o in _orders(ms)]
    cases += [o for ms in _multisets(4, (11, 12, 13, 14)) if len({d for _, d in ms}) == 4
              for o in _orders(ms)]  # fmt: skip
    return cases


def _records(holder: str, cases: list[tuple[Said, ...]]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for n, order in enumerate(cases):
        for k, (granted, day) in enumerate(order):
            out.append({"type": "consent", "id": f"o{n}-{k}", "recorded_at": ts(day),
                        "holder": holder, "verifier": f"v{n}", "granted": granted})  # fmt: skip
    return out


def _check(w: World, holder: str, cases: list[tuple[Said, ...]]) -> None:
    bad = []
    with w.store.read() as r:
        h = bytes.fromhex(holder)
        for n, order in enumerate(cases):
            got = r.consent(h, f"v{n}"), r.withdrawal(h, f"v{n}")
            want = expected(order)
            if got != want:
                bad.append((order, got, want))
    assert bad == []


@pytest.mark.parametrize("batch_size", [1000, 3])
def test_every_read_order_ends_as_the_latest_word_says(world: World, batch_size: int) -> None:
    """Each order in one file, in one batch or cut every three records (a later batch reads
    what an earlier one committed)."""
    cases = _cases()
    assert len(cases) > 1000
    world.verifiers = Verifiers(eligible=frozenset(f"v{n}" for n in range(len(cases))))
    two_holders(world)
    ap = world.apply(_records(H1, cases), batch_size=batch_size)
    assert (ap.summary.quarantined, ap.summary.late) == (0, 0)
    _check(world, H1, cases)


def test_every_read_order_of_a_holder_with_auth_certificates_only(world: World) -> None:
    """A holder with an auth-card certificate only may consent ahead of a sign certificate
    (`Applier._consent`): the same orders end the same."""
    holder = "33" * 32
    cases = [o for ms in _multisets(3, (11, 12)) for o in _orders(ms)]
    world.verifiers = Verifiers(eligible=frozenset(f"v{n}" for n in range(len(cases))))
    world.apply([issuance(301, "auth-card-g1", holder, 0, not_after=ts(300))])
    ap = world.apply(_records(holder, cases))
    assert ap.summary.quarantined == 0
    _check(world, holder, cases)


@pytest.mark.parametrize("family", ["sign-card-g1", "auth-card-g1"])
def test_a_withdrawal_read_before_any_certificate_of_its_holder_still_outranks_an_older_grant(
    world: World, family: str
) -> None:
    """Every order of a holder's issuance (day 0), grant (day 5) and withdrawal (day 10): the
    holder's latest word is the withdrawal, so no order may leave a consent. A withdrawal read
    before the issuance is kept all the same (a withdrawal always applies, docs/records.md); a
    grant read before it is refused (no certificate of the holder: a consent is for a holder the
    store knows) and leaves nothing, which the withdrawal outranks anyway."""
    holder = "44" * 32
    records = {
        "i": issuance(401, family, holder, 0, not_after=ts(300)),
        "g": {"type": "consent", "id": "g", "recorded_at": ts(5), "holder": holder,
              "verifier": "bank", "granted": True},
        "w": {"type": "consent", "id": "w", "recorded_at": ts(10), "holder": holder,
              "verifier": "bank", "granted": False},
    }  # fmt: skip
    got = {}
    for n, order in enumerate(itertools.permutations("igw")):
        h = f"{n + 5:02x}" * 32  # a holder of its own per order
        batch = [{**records[k], "id": f"{records[k]['id']}-{n}", "holder": h} for k in order]
        for rec in batch:
            if rec["type"] == "issuance":
                rec["serial"] = 500 + n
        for rec in batch:  # one record per batch: each read after the one before committed
            world.apply([rec])
        with world.store.read() as r:
            got["".join(order)] = (
                r.consent(bytes.fromhex(h), "bank"),
                r.withdrawal(bytes.fromhex(h), "bank"),
            )
    assert got == {"".join(o): (None, at(10)) for o in itertools.permutations("igw")}
