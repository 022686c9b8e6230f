"""The responder's issuers (its ``pki.json`` or ``group.json``) read against the store's
issuer table: OCSP reads a status by the issuer's index, so an index under which the store
records another issuer (a group's store made by ``import-crl --pki`` with the 機構's
indexes and served with ``group.json``'s, a manifest edited after the store was built, which
the builder then refuses to update) holds none of this issuer's data. Its answers are
``tryLater``, never another issuer's ``good``. A real LMDB store, filled by the real
`CrlImporter`.
"""

from __future__ import annotations

import dataclasses

import msgspec

from crlbuilder.ocsp.response import ResponseStatus
from crlbuilder.store.lmdbstore import Store
from responder.flow import STALE, OcspFlow, Refusal, Signing
from tests.support.signing import Jpki
from tests.test_group_flow import REGISTRY
from tests.test_group_never_fed import (
    COMPROMISED,
    FED,
    NOW,
    UNFED,
    compromised_entry,
    import_crl,
    jpki,  # noqa: F401 (fixture)
    stale_gauge,
    store,  # noqa: F401 (fixture)
    views,
)
from tests.test_ocsp_flow import CONFIG, Creds, Quotas, request


def test_an_index_the_store_gives_another_issuer_answers_try_later(
    jpki: Jpki,  # noqa: F811
    store: Store,  # noqa: F811
) -> None:
    import_crl(jpki, store, UNFED, [compromised_entry()])  # sign-card: the serial revoked
    import_crl(jpki, store, FED)  # sign-mobile: nothing revoked
    now = int(NOW.timestamp())
    right = views(jpki)
    fl = OcspFlow(right.values(), Quotas(), CONFIG, group_id="g")
    got = fl.decide(request(right[UNFED], COMPROMISED), Creds("m-1"), now, store, REGISTRY)
    assert isinstance(got, Signing) and got.job.statuses == ("revoked",), got
    # the configuration swaps the two indexes: sign-card's serial read in sign-mobile's data
    swapped = {
        UNFED: dataclasses.replace(right[UNFED], index=jpki.metas[FED].index),
        FED: dataclasses.replace(right[FED], index=jpki.metas[UNFED].index),
    }
    fl = OcspFlow(swapped.values(), Quotas(), CONFIG, group_id="g")
    for family in (UNFED, FED):
        got = fl.decide(request(swapped[family], COMPROMISED), Creds("m-1"), now, store, REGISTRY)
        assert isinstance(got, Refusal), (family, got)
        assert (got.status, got.rule) == (ResponseStatus.TRY_LATER, STALE)
    sign_card, sign_mobile = jpki.metas[UNFED], jpki.metas[FED]
    assert fl.foreign() == {sign_mobile.index: sign_mobile.id, sign_card.index: sign_card.id}


def test_the_stale_gauge_is_1_for_an_index_the_store_gives_another_issuer(
    jpki: Jpki,  # noqa: F811
    store: Store,  # noqa: F811
) -> None:
    """JpkiVaIssuerStale fires for it: the answers are tryLater, and the other issuer's
    freshness is not this one's."""
    import_crl(jpki, store, UNFED, [compromised_entry()])
    import_crl(jpki, store, FED)
    assert stale_gauge(store, jpki, (FED, UNFED)) == {FED: 0, UNFED: 0}
    card, mobile = jpki.metas[UNFED], jpki.metas[FED]
    swapped = Jpki(
        cas=jpki.cas,
        metas={
            UNFED: msgspec.structs.replace(card, index=mobile.index),
            FED: msgspec.structs.replace(mobile, index=card.index),
        },
    )
    assert stale_gauge(store, swapped, (FED, UNFED)) == {FED: 1, UNFED: 1}
