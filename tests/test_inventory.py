"""The token's key inventory against the operation log (`crlbuilder.keys.inventory`), sans-I/O."""

from __future__ import annotations

from crlbuilder.keys import inventory
from crlbuilder.keys.inventory import Difference
from crlbuilder.keys.oplog import OpRecord
from crlbuilder.keys.pkcs11 import TokenKey


def line(seq: int, event: str, key: str = "", **detail: str | int) -> OpRecord:
    return OpRecord(seq=seq, at="2026-12-06T00:00:00+00:00", event=event, key=key,
                    detail=dict(detail), prev="0" * 64)  # fmt: skip


def key(token: str, label: str) -> str:
    return f"pkcs11:token={token};object={label};type=private"


def inv(seq: int, token: str, *keys: TokenKey) -> OpRecord:
    detail = inventory.record_detail(token, keys, baseline=False)
    return OpRecord(seq=seq, at="2026-12-06T00:00:00+00:00", event=inventory.INVENTORY_EVENT,
                    key=f"pkcs11:token={token}", detail=detail, prev="0" * 64)  # fmt: skip


A, B, C = (
    TokenKey("a" * 64, "ca-g1", "01"),
    TokenKey("b" * 64, "ocsp-g1", ""),
    TokenKey("c" * 64, "ca-g2", ""),
)


def test_no_inventory_of_the_token_is_no_expectation() -> None:
    recs = [line(1, "key-generated", key("t", "ca-g1"), spki_sha256=A.fingerprint)]
    assert inventory.expected(recs, "t") is None
    assert inventory.made_by_the_log(recs, "t") == {A.fingerprint: "ca-g1"}


def test_the_last_inventory_then_the_keys_made_and_destroyed_after_it() -> None:
    recs = [
        inv(1, "t", A, B),
        line(2, "key-generated", key("t", "ca-g2"), spki_sha256=C.fingerprint),
        line(3, "key-generated", key("u", "ca-g9"), spki_sha256="d" * 64),  # another token
        line(4, "key-destroyed", key("t", "ocsp-g1")),
        inv(5, "u"),
    ]
    want = inventory.expected(recs, "t")
    assert want == {A.fingerprint: "ca-g1", C.fingerprint: "ca-g2"}
    assert not inventory.compare(want, [A, C])
    assert inventory.expected(recs, "u") == {}


def test_a_key_too_many_too_few_or_twice_is_a_difference() -> None:
    want = {A.fingerprint: "ca-g1", B.fingerprint: "ocsp-g1"}
    diff = inventory.compare(want, [A, C])
    assert diff.unexpected == [(C.fingerprint, "ca-g2")] and diff.missing == [
        (B.fingerprint, "ocsp-g1")
    ]
    text = diff.describe("t")
    assert "holds 1 key(s) no ceremony of the log made: 'ca-g2'" in text
    assert "lacks 1 key(s) the log says it holds: 'ocsp-g1'" in text
    twice = inventory.compare(want, [A, B, TokenKey(A.fingerprint, "copy", "")])
    assert twice.unexpected == [(A.fingerprint, "copy")] and not twice.missing


def test_an_inventory_line_holds_labels_ids_and_fingerprints_only() -> None:
    detail = inventory.record_detail("t", [A, B], baseline=True)
    assert detail["token"] == "t" and detail["private_keys"] == 2 and "baseline" in detail
    assert detail[f"key:{A.fingerprint}"] == "ca-g1" and detail[f"id:{A.fingerprint}"] == "01"
    assert f"id:{B.fingerprint}" not in detail
    assert inventory.recorded(inv(1, "t", A, B)) == {
        A.fingerprint: "ca-g1",
        B.fingerprint: "ocsp-g1",
    }


def test_a_key_reference_names_its_token_and_label() -> None:
    assert inventory.token_of("pkcs11:token=jpki%20va;object=ca-g1;type=private") == (
        "jpki va",
        "ca-g1",
    )
    assert inventory.token_of("pkcs11:token=t") is None
    assert inventory.token_of("/etc/jpki-va/pki/ca.key") is None


def test_a_line_recording_a_difference_holds_the_keys_the_log_accounts_for() -> None:
    """At a ceremony's end, a key made (C) and one destroyed (B) meanwhile by no line: the
    line's keys are those the log accounts for (A, B), so the next comparison finds both
    again; the difference is in the line, not accepted, beside what two operators accepted
    at the check (keys inventory)."""
    held = {A.fingerprint: "ca-g1", B.fingerprint: "ocsp-g1"}
    diff = inventory.compare(held, [A, C])
    examined = Difference([(B.fingerprint, "ocsp-g1")], [])
    detail = inventory.record_detail(
        "t", [A, C], baseline=False, accepted=examined, differs=(diff, held)
    )
    assert "differs" in detail and "accepted" in detail and detail["private_keys"] == 2
    assert detail[f"differs_unexpected:{C.fingerprint}"] == "ca-g2"
    assert detail[f"differs_missing:{B.fingerprint}"] == "ocsp-g1"
    assert detail[f"unexpected:{B.fingerprint}"] == "ocsp-g1"
    rec = OpRecord(seq=1, at="2026-12-06T00:00:00+00:00", event=inventory.INVENTORY_EVENT,
                   key="pkcs11:token=t", detail=detail, prev="0" * 64)  # fmt: skip
    assert inventory.recorded(rec) == held
    again = inventory.compare(inventory.expected([rec], "t") or {}, [A, C])
    assert again == diff
    same = inventory.record_detail("t", [A, B], baseline=False, differs=(Difference([], []), held))
    assert "differs" not in same and inventory.recorded(
        OpRecord(seq=1, at="x", event=inventory.INVENTORY_EVENT, key="", detail=same,
                 prev="0" * 64)) == held  # fmt: skip
