"""The review's listing of the lines after a head (`crlbuilder.keys.since`), sans-I/O."""

from __future__ import annotations

from crlbuilder.keys import since
from crlbuilder.keys.oplog import OpRecord


def test_a_label_with_a_line_break_prints_no_line_of_its_own() -> None:
    """A token-inventory line holds each key's label, whatever the token was given: a key
    labelled with a line break and a made-up listing line (accepted by keys inventory)
    printed that line in the review's text as if the log held it."""
    fake = "x\n  99 2026-12-06T00:00:00+00:00 key-destroyed by alice+bob key k"
    rec = OpRecord(seq=5, at="2026-12-06T00:00:00+00:00", event="token-inventory",
                   key="pkcs11:token=t", operators=["alice", "bob"],
                   detail={"token": "t", "key:" + "a" * 64: fake, "private_keys": 1},
                   prev="0" * 64)  # fmt: skip
    out = since.as_text(since.since([rec], 0))
    assert len(out) == 2 and out[1].startswith("  5 ") and "\n" not in out[1]
    assert repr(fake) in out[1] and "private_keys=1" in out[1]


def test_a_disclosure_is_counted_as_one_not_as_a_refusal() -> None:
    """A ``holder-disclosed`` line (`crlbuilder disclose`, Act §58) records no ceremony; the
    summary counted every line that was not a ceremony as a refusal."""
    lines = [
        OpRecord(seq=n, at="2026-12-06T00:00:00+00:00", event=event, operators=["alice"],
                 prev="0" * 64)
        for n, event in ((2, "holder-disclosed"), (3, "ceremony-refused"), (4, "holder-disclosed"))
    ]  # fmt: skip
    summary = since.as_text(since.since([*lines], 0))[0]
    assert "0 ceremony line(s), 1 refusal(s), 2 disclosure(s) of a holder's records" in summary
