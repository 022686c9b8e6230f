"""The four facts' sealing: the bytes it writes are those of its first definition."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crlbuilder.model import FourFacts, Sex
from crlbuilder.seal import FactsCipher, _facts_encoder
from crlbuilder.store.memory import MemoryReader
from responder.v1.recordinfo import open_facts

KEY = bytes(range(32))
FACTS = FourFacts(
    name="山田 太郎", birth_date="319800102", sex=Sex.MALE, address="東京都千代田区千代田1-1"
)


def reference_seal(key: bytes, status_key: bytes, facts: FourFacts) -> bytes:
    """`FactsCipher.seal` as first written (hmac.new for both keys and the nonce)."""
    aead = AESGCM(hmac.new(key, b"jpki-va facts aead", hashlib.sha256).digest())
    nonce_key = hmac.new(key, b"jpki-va facts nonce", hashlib.sha256).digest()
    nonce = hmac.new(nonce_key, status_key, hashlib.sha256).digest()[:12]
    return nonce + aead.encrypt(nonce, _facts_encoder.encode(facts), status_key)


def test_seal_writes_the_reference_bytes_and_opens() -> None:
    cipher = FactsCipher(KEY)
    for serial in (1, 2, 0x5010E63061F54256, 2**159 - 1):
        status_key = (11).to_bytes(2, "big") + serial.to_bytes(20, "big")
        sealed = cipher.seal(status_key, FACTS)
        assert sealed == reference_seal(KEY, status_key, FACTS)
        assert cipher.open(status_key, sealed) == FACTS


def test_sealed_facts_cut_short_do_not_open_whatever_their_length() -> None:
    """A sealed value cut short (a damaged store) is `InvalidTag`, which the record-info
    route answers 503 for, at every length: under 8 bytes it was AESGCM's `ValueError` (a
    nonce too short), an HTTP 500 out of the route."""
    cipher = FactsCipher(KEY)
    status_key = (11).to_bytes(2, "big") + (5).to_bytes(20, "big")
    sealed = cipher.seal(status_key, FACTS)
    for n in range(len(sealed)):
        with pytest.raises(InvalidTag):
            cipher.open(status_key, sealed[:n])
    store = MemoryReader(facts={status_key: sealed[:5]})
    assert open_facts(cipher, store, status_key) is None
