"""The one DER primitive the hand-written encoders share: definite length octets (X.690 §8.1.3).

CRL entry lists, CRL parsing and the OCSP response hot path write their own
framing (measured faster than a generic encoder, and tested byte for byte
against cryptography and asn1crypto); they all take their length octets here.
"""

from __future__ import annotations

from typing import Final


def _encode(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(octets),)) + octets


_CACHED: Final = tuple(_encode(n) for n in range(8192))


def der_length(n: int) -> bytes:
    """The DER length octets of ``n`` content octets (short form below 128, long form above)."""
    return _CACHED[n] if n < 8192 else _encode(n)
