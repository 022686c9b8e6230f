"""crlbuilder.der: the length octets every encoder writes and the TLV header every parser reads."""

from __future__ import annotations

import pytest
from asn1crypto import parser as a_parser
from hypothesis import example, given
from hypothesis import strategies as st

from crlbuilder.crl.parse import CrlError, parse_crl
from crlbuilder.der import DerError, der_header, der_length
from crlbuilder.ocsp.request import RequestError, parse_request


@given(st.integers(0, 2**32 - 1))
@example(0x7F)
@example(0x80)
@example(0xFF)
@example(0x100)
@example(8191)
@example(8192)
def test_length_octets_read_back(n: int) -> None:
    """What der_length writes, der_header reads back (the content is not read: only ``end``)."""
    head = b"\x04" + der_length(n)
    assert der_header(head, 0, len(head) + n) == (0x04, len(head), len(head) + n)
    assert len(der_length(n)) == (1 if n < 0x80 else 2 + (n.bit_length() - 1) // 8)


@given(st.integers(0, 30), st.booleans(), st.binary(max_size=300), st.binary(max_size=4))
def test_header_agrees_with_asn1crypto(
    number: int, constructed: bool, content: bytes, after: bytes
) -> None:
    tlv = bytes((number | (0x20 if constructed else 0),)) + der_length(len(content)) + content
    d = b"\x00" + tlv + after
    tag, start, stop = der_header(d, 1, len(d))
    parsed = a_parser.parse(tlv, strict=True)
    assert tag == tlv[0] and parsed[2] == number
    assert d[start:stop] == parsed[4] == content
    assert d[1:start] == parsed[3]  # the header octets


@given(st.binary(max_size=12))
def test_random_bytes_give_a_header_or_der_error(d: bytes) -> None:
    try:
        tag, start, stop = der_header(d, 0, len(d))
    except DerError as exc:
        assert exc.offset == 0 and str(exc) == f"{exc.reason} at offset 0"
        return
    assert 2 <= start <= stop <= len(d) and tag == d[0]


REFUSED = {
    "empty": (b"", "truncated"),
    "one octet": (b"\x30", "truncated"),
    "content past the end": (b"\x04\x05abc", "truncated"),
    "length octets past the end": (b"\x04\x82\x01", "truncated"),
    "high tag number form": (b"\x1f\x01\x00", "multi-byte tag"),
    "indefinite length": (b"\x30\x80\x00\x00", "indefinite length"),
    "five length octets": (b"\x30\x85" + b"\x00" * 5, "length of more than 4 octets"),
    "long form below 128": (b"\x30\x81\x10" + b"\x00" * 16, "non-minimal length"),
    "leading zero octet": (b"\x30\x82\x00\x80" + b"\x00" * 128, "non-minimal length"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_not_der_is_refused_with_a_fixed_reason(name: str) -> None:
    d, reason = REFUSED[name]
    with pytest.raises(DerError) as err:
        der_header(d, 0, len(d))
    assert err.value.reason == reason and err.value.offset == 0


def test_end_bounds_the_content_not_the_buffer() -> None:
    d = b"\x30\x03\x04\x01\x00" + b"\x00" * 8  # an inner TLV of 3 octets, more bytes after
    assert der_header(d, 2, 5) == (0x04, 4, 5)
    with pytest.raises(DerError, match="truncated at offset 2"):
        der_header(d, 2, 4)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_both_parsers_refuse_a_bad_header_for_the_same_reason(name: str) -> None:
    """The CRL reader and the OCSP request reader take their headers from der_header."""
    d, reason = REFUSED[name]
    with pytest.raises(RequestError) as refused:
        parse_request(d, max_certids=1)
    assert refused.value.reason == reason
    with pytest.raises(CrlError, match=f"bad DER: {reason} at offset 0"):
        parse_crl(d)
