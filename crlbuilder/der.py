"""The DER primitives the hand-written codecs share: length octets and the TLV header reader.

CRL entry lists, CRL parsing, OCSP request parsing and the OCSP response hot
path write and walk their own framing (measured faster than a generic codec,
and tested byte for byte against cryptography and asn1crypto); they all take
their length octets from `der_length` (X.690 §8.1.3) and read every TLV header
with `der_header`, strict DER (X.690 §10.1) in one place.
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


class DerError(ValueError):
    """A TLV header that is not strict DER.

    ``reason`` is a fixed phrase (``truncated``, ``multi-byte tag``, ``indefinite
    length``, ``length of more than 4 octets``, ``non-minimal length``): it never
    quotes input bytes, so callers may log it and count it. ``offset`` is where
    the header starts. Each parser turns it into its own error (`CrlError`,
    `RequestError`).
    """

    __slots__ = ("offset", "reason")

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"{reason} at offset {offset}")
        self.reason = reason
        self.offset = offset


def der_header(d: bytes, p: int, end: int) -> tuple[int, int, int]:
    """Read the TLV header at ``d[p]``: (tag, content start, content end), within ``d[:end]``.

    Strict DER: a single-octet tag (X.690 §8.1.2.2; tag numbers of 31 and up
    are refused), a definite length in the fewest octets (§8.1.3, §10.1), at
    most four of them, and content that ends by ``end``. Raises `DerError`.
    """
    if p + 2 > end:
        raise DerError("truncated", p)
    tag = d[p]
    if tag & 0x1F == 0x1F:
        raise DerError("multi-byte tag", p)
    n = d[p + 1]
    i = p + 2
    if n >= 0x80:
        count = n & 0x7F
        if count == 0:
            raise DerError("indefinite length", p)
        if count > 4:
            raise DerError("length of more than 4 octets", p)
        if i + count > end:
            raise DerError("truncated", p)
        n = int.from_bytes(d[i : i + count], "big")
        if n < 0x80 or n >> (8 * (count - 1)) == 0:
            raise DerError("non-minimal length", p)
        i += count
    e = i + n
    if e > end:
        raise DerError("truncated", p)
    return tag, i, e
