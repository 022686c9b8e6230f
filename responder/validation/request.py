"""What a verifier sends to POST /v1/verify: a batch of signatures in three formats (msgspec).

One item is one signature to validate (Act §19(1), §21(1)), tagged by ``format``:

- ``pkcs1``: a raw PKCS#1 v1.5 signature value, what the card's JPKI application returns,
  with the signer certificate and either the signed ``data`` or its ``digest`` and ``hash``;
- ``cms``: a CMS / PKCS#7 SignedData (RFC 5652), attached, or detached with ``content``;
  the signer certificate travels inside;
- ``xmldsig``: an XML document carrying one XML signature (XMLDSig), enveloped, or
  detached: a reference to another document by URI is resolved only from ``documents``
  (URI -> the document's bytes); nothing is ever fetched.

Binary values are base64 (RFC 4648 §4, padded) in JSON. Decoding is strict
(``forbid_unknown_fields``) and bounded: at most `MAX_ITEMS` items; the body as a whole is
bounded by the route's body limit (413 above it). A value that decodes but is not what it
claims (garbage DER, a digest of the wrong length, an unknown hash) is not a 400: it is
that item's ``malformed`` or ``unsupported`` result.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

MAX_ITEMS: Final = 1000
"""Signatures per call."""
MAX_DOCUMENTS: Final = 16
"""Detached documents per XML item."""
_CERT_MAX: Final = 12 * 1024
_SIG_MAX: Final = 1024
"""Octets of an RSA signature up to 8192-bit keys."""

Certificate = Annotated[
    bytes, msgspec.Meta(min_length=1, max_length=_CERT_MAX, description="DER, base64")
]
SignatureValue = Annotated[
    bytes,
    msgspec.Meta(min_length=1, max_length=_SIG_MAX, description="the signature value, base64"),
]
Document = Annotated[bytes, msgspec.Meta(description="the signed bytes, base64")]
HashName = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=16, pattern=r"^[a-z0-9-]+$",
        description="sha256, sha384 or sha512",
    ),
]  # fmt: skip
Uri = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class _Item(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel", tag_field="format"):  # fmt: skip
    """Every item is tagged by ``format``."""


class Pkcs1Item(_Item, tag="pkcs1", frozen=True):
    """A raw RSASSA-PKCS1-v1_5 signature (RFC 8017 §8.2) with its certificate.

    Give ``data`` (the signed bytes), or ``digest`` with ``hash`` (what was signed is the
    DigestInfo of that digest); ``hash`` defaults to sha256 with ``data``.
    """

    certificate: Certificate
    signature: SignatureValue
    data: Document | None = None
    digest: Annotated[bytes, msgspec.Meta(min_length=1, max_length=64)] | None = None
    hash: HashName | None = None


class CmsItem(_Item, tag="cms", frozen=True):
    """A CMS SignedData (RFC 5652 §5), DER or BER, in a ContentInfo; ``content`` when detached."""

    cms: Annotated[bytes, msgspec.Meta(min_length=1, description="ContentInfo, base64")]
    content: Document | None = None


class XmlItem(_Item, tag="xmldsig", frozen=True):
    """An XML document with one ds:Signature; ``documents`` resolves detached references by URI."""

    xml: Annotated[bytes, msgspec.Meta(min_length=1, description="the XML document, base64")]
    documents: Annotated[dict[Uri, Document], msgspec.Meta(max_length=MAX_DOCUMENTS)] = {}


Item = Pkcs1Item | CmsItem | XmlItem


class VerifyRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):  # fmt: skip
    """POST /v1/verify: up to `MAX_ITEMS` signatures."""

    items: Annotated[list[Item], msgspec.Meta(min_length=1, max_length=MAX_ITEMS)]
