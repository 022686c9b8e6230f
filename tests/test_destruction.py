"""Which key a ``keys destroy`` ceremony destroys, and whether it may
(`crlbuilder.keys.destruction`), and the log's account of it (`crlbuilder.keys.inventory`),
sans-I/O."""

from __future__ import annotations

import pytest

from crlbuilder.keys import destruction, inventory
from crlbuilder.keys.oplog import OpRecord
from crlbuilder.keys.pkcs11 import TokenKey


def line(seq: int, event: str, label: str, **detail: str | int) -> OpRecord:
    return OpRecord(seq=seq, at="2026-12-06T00:00:00+00:00", event=event,
                    key=f"pkcs11:token=t;object={label};type=private", detail=dict(detail),
                    prev="0" * 64)  # fmt: skip


CA = TokenKey("a" * 64, "ca-g1", "01")
COPY = TokenKey("a" * 64, "ca-g1-copy", "")
SAME = TokenKey("a" * 64, "ca-g1", "02")  # the CA key pair again, under its label
STRAY = TokenKey("b" * 64, "ca-g1", "")  # another key under the CA key's label
LOG = [
    line(1, "key-generated", "ca-g1", spki_sha256=CA.fingerprint),
    line(2, "certificate-issued", "ca-g1", cert_sha256="c" * 64),
]


def test_the_fingerprint_names_one_object_or_the_ceremony_is_refused() -> None:
    assert destruction.choose([CA, STRAY], STRAY.fingerprint) == STRAY
    assert "holds no private key" in str(destruction.choose([CA], "d" * 64))
    two = destruction.choose([CA, COPY], CA.fingerprint)
    assert isinstance(two, str) and "name one with --label or --id" in two
    assert destruction.choose([CA, COPY], CA.fingerprint, label="ca-g1-copy") == COPY
    assert destruction.choose([CA, SAME], CA.fingerprint, id_hex="02") == SAME
    assert "has the --label/--id" in str(destruction.choose([CA], CA.fingerprint, "x"))
    twins = destruction.choose([COPY, COPY], CA.fingerprint)
    assert "cannot be told apart" in str(twins)


def test_a_key_a_certificate_of_the_log_names_goes_through_retire() -> None:
    assert "keys retire --cert" in str(destruction.in_use(LOG, "t", [CA], CA))
    assert destruction.in_use(LOG, "u", [CA], CA) is None  # another token
    assert destruction.in_use(LOG, "t", [CA, STRAY], STRAY) is None  # its label, not its key
    # a second object of it goes, the one under its label stays; not the other way round
    assert destruction.in_use(LOG, "t", [CA, COPY], COPY) is None
    assert destruction.in_use(LOG, "t", [CA, COPY], CA) is not None
    assert destruction.in_use(LOG, "t", [CA, SAME], SAME) is None
    made_only = LOG[:1]  # a failed ceremony's key: no certificate
    assert destruction.in_use(made_only, "t", [CA], CA) is None
    retired = [*LOG, line(3, "key-destroyed", "ca-g1", cert_sha256="c" * 64)]
    assert destruction.in_use(retired, "t", [CA], CA) is None


def test_a_key_in_use_is_not_left_only_in_an_object_no_signer_loads() -> None:
    """Two objects of the CA key under its label (told apart by id), one imported so that
    it can leave the token: the signer refuses that one (Ord §73(4)), so destroying the
    other would leave the CA with no key it can sign with; the leakable one may go."""
    leaky = TokenKey(SAME.fingerprint, SAME.label, SAME.id_hex, leakable=True)
    assert leaky == SAME  # the inventory compares and records no attribute
    refused = destruction.in_use(LOG, "t", [CA, leaky], CA)
    assert refused is not None and "destroy those (--id), not this one" in refused
    assert destruction.in_use(LOG, "t", [CA, leaky], leaky) is None
    both = TokenKey(CA.fingerprint, CA.label, CA.id_hex, leakable=True)
    assert destruction.in_use(LOG, "t", [both, leaky], both) is None  # neither is loaded
    assert destruction.in_use(LOG, "t", [CA, SAME], CA) is None


def test_the_token_without_the_key_must_hold_what_the_log_says() -> None:
    want = {CA.fingerprint: "ca-g1"}
    assert not destruction.left_differing(want, [CA, STRAY], STRAY)
    assert not destruction.left_differing(want, [CA, COPY], COPY)
    assert not destruction.left_differing(want, [CA], CA)  # the log's own key goes
    other = TokenKey("e" * 64, "mallory", "")
    diff = destruction.left_differing(want, [CA, STRAY, other], STRAY)
    assert diff.unexpected == [(other.fingerprint, "mallory")]
    assert destruction.left_differing({"f" * 64: "gone", **want}, [CA, STRAY], STRAY).missing
    assert not destruction.left_differing(None, [CA, STRAY, other], STRAY)  # a baseline


def test_a_key_destroyed_by_fingerprint_leaves_a_key_of_the_same_label_in_the_account() -> None:
    start = {CA.fingerprint: "ca-g1"}
    stray_gone = line(5, "key-destroyed", "ca-g1", spki_sha256=STRAY.fingerprint, objects_left=0)
    assert inventory.fold([stray_gone], "t", start) == start
    copy_gone = line(5, "key-destroyed", "ca-g1-copy", spki_sha256=CA.fingerprint, objects_left=1)
    assert inventory.fold([copy_gone], "t", start) == start
    ca_gone = line(5, "key-destroyed", "ca-g1", spki_sha256=CA.fingerprint, objects_left=0)
    assert inventory.fold([ca_gone], "t", start) == {}
    assert inventory.fold([line(5, "key-destroyed", "ca-g1")], "t", start) == {}  # by label


@pytest.mark.parametrize(
    ("text", "ok"),
    [("AB" * 32, True), (":".join(["ab"] * 32), True), ("other-" + "0" * 64, True),
     ("ab" * 31, False), ("pin-4711", False), ("zz" * 32, False)],
)  # fmt: skip
def test_the_fingerprint_is_given_as_the_inventory_lists_it(text: str, ok: bool) -> None:
    if ok:
        assert destruction.parse_fingerprint(text) == text.lower().replace(":", "")
    else:
        with pytest.raises(ValueError, match="64 hex digits") as e:
            destruction.parse_fingerprint(text)
        assert text not in str(e.value)  # it may be the PIN typed in its place
