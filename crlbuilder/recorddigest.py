"""What a record said, kept beside its applied id: a record id reused with other content is refused.

A record id is applied at most once (`crlbuilder.apply`): a record read again under an applied id
is a replay (a builder killed between its commit and the file's removal, a stream published
again, a stream adopted, a message delivered twice) and is skipped. A record id the feed reuses
for another record must not be skipped the same way: a second revocation request under the id
of the first would leave its certificate good, with nothing said. So the store keeps, beside each
applied id, a digest of what the record said (`store.format.pack_applied`), and a record read
again under it is skipped when its digest is the same, refused and quarantined when it differs
(`reused`, `reason`; sans-I/O).

What is digested is the decoded record (`crlbuilder.model.Record`) encoded again, not the line
that carried it: a replay from a file, from the record stream (sealed or not: the payload
opened and decoded) or after ``stream adopt`` decodes to the same record, whatever the
whitespace or key order of its line. Fields left at their default are not encoded (the records'
``omit_defaults``), so a later release adding an optional field digests an older record the
same way. A time is an instant (the store keeps it as one, the rules count JST days from it),
so it is digested in UTC: a record written again with its times under another UTC offset
(``+09:00``, then ``Z``) decodes to an equal record and digests alike (`_in_utc`).

The digest is keyed (BLAKE2b, 16 bytes, a key derived from the facts key, `crlbuilder.seal`):
records carry the four facts (基本4情報, Act §7(1)(3)), and a plain hash of them in the store
would let whoever reads the store confirm a guess of a holder's facts. Every node of one record
stream holds the same facts key (their sealed facts are the same bytes), so every node digests
a record alike and refuses the same reuse.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Final

import msgspec

from crlbuilder.model import Record
from crlbuilder.store.format import APPLIED_DIGEST_SIZE

REASON: Final = "record id reused with other content"
"""The start of a reuse's quarantine reason (`reason`)."""

_encoder: Final = msgspec.json.Encoder()


class RecordDigest:
    """The keyed digest of a record's content (module docstring)."""

    __slots__ = ("_key",)

    def __init__(self, facts_key: bytes) -> None:
        self._key = hmac.new(facts_key, b"jpki-va record digest", hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "RecordDigest(<key not shown>)"

    def of(self, record: Record) -> bytes:
        """``APPLIED_DIGEST_SIZE`` bytes: the same for the same decoded record, on every node."""
        return hashlib.blake2b(
            _encoder.encode(_in_utc(record)), key=self._key, digest_size=APPLIED_DIGEST_SIZE
        ).digest()


def _in_utc(record: Record) -> Record:
    """``record`` with each of its times under UTC (the same instants): records compare equal
    whatever offset their times were written with, and must digest alike. The times are
    top-level fields of every record type (``FourFacts``, the one nested struct, has none)."""
    moved = {
        name: value.astimezone(UTC)
        for name in record.__struct_fields__
        if isinstance(value := getattr(record, name), datetime) and value.utcoffset()
    }
    return msgspec.structs.replace(record, **moved) if moved else record


def reused(held: bytes | None, digest: bytes) -> bool:
    """A record whose content digests to ``digest``, read under an id applied with ``held``
    (None: applied by a release before the digest, nothing to compare), is another record."""
    return held is not None and held != digest


def reason(digest: bytes) -> str:
    """The one-line quarantine reason of a reuse: no value of the record, only a short piece of
    its keyed digest, so that each other content under the id is quarantined once (the
    quarantine key is the id and the reason, `ingest.quarantine_key`) and a replay of it is not."""
    return (
        f"{REASON} ({digest[:4].hex()}): not applied, the id's first record stays; "
        "record ids must be unique (docs/records.md)"
    )
