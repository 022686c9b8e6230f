"""When a sign certificate's sealed four facts (基本4情報) leave the store (sans-I/O).

The store keeps the facts of a sign certificate (``holders``, sealed: `crlbuilder.seal`) only to
answer 特定署名用電子証明書記録情報 (Act §18(3)): the facts recorded in the holder's sign
certificate "that has not lost effect" (第十五条第一項又は第十六条の十四第一項の規定により効力を
失っていないものに限る). A certificate loses effect by a record (revoked: §15(1)(1)-(4),
§16-14(1)(1)-(4)) or when its validity period elapses (§15(1)(5), §16-14(1)(5)), and never
regains it, so from then on nothing reads its facts (`responder.v1.recordinfo` opens only those
of the holder's certificate in effect now):

- a revoked certificate's facts go in the commit that revokes it (`store.writer.Commit.revoke`);
- an expired one's go at the first erasure past retention (`crlbuilder.apply.Applier
  .erase_past_retention`: every build, the follow loop's timer, a record stream's ticks, each
  dated by its own instant) at or after `erasable_at`: the second after notAfter (RFC 5280
  §4.1.2.5: notAfter's own second is still inside the period, `crlbuilder.validity`).

Found without reading every certificate at each erasure: the scan that makes the retention
agenda (`crlbuilder.retention`) reads every sealed entry once and lists each under its status
key at its instant; a certificate added later is listed by the commit that adds it
(`store.writer.Commit.add_certificate`; on an agenda an earlier release made to a horizon, only
when due before it). A key taken off the agenda is checked again (`erasable_at` of its status
then).

No rule, answer, lateness bound or digest reads a certificate's facts once it lost effect, so
erasing them writes other bytes than an earlier release only in ``holders`` and the agenda, and
decides nothing differently (docs/store.md, `crlbuilder.release`: no ``RULES`` bump).
"""

from __future__ import annotations

from crlbuilder.store.format import STATE_GOOD


def erasable_at(state: int | None, not_after: int) -> int:
    """The instant (epoch seconds) from which the sealed facts of a certificate in ``state``
    (`store.format.STATE_GOOD`, revoked, erased; None: no status record) ending at
    ``not_after`` are erased: the second after notAfter for a good one, at once (0) for one
    that lost effect by a record, or for facts with no certificate at all."""
    if state is None or state != STATE_GOOD:
        return 0
    return not_after + 1
