"""XML signatures (XMLDSig), enveloped or detached, as government electronic applications use.

Canonicalisation, transforms, reference digests and the signature check are xmlsec1's
(the XML Security Library, through python-xmlsec on lxml); nothing here canonicalises by
hand. (signxml was tried first: lxml's inclusive canonicalisation of a sub-tree writes a
spurious ``xmlns=""`` on grandchildren of an element whose default namespace an
ancestor declares, so signxml rejects good signatures that use the default ds namespace,
as xmlsec1 and .NET write them; xmlsec1 canonicalises the node set in place.)

This module owns what the library leaves to its caller:

- the parser: no DTD (a DOCTYPE is ``malformed``: no entity can expand), no network, no
  huge trees;
- exactly one ds:Signature (none is ``malformed``, several ``unsupported``);
- the signer certificate: the certificate of KeyInfo/X509Data (when it holds a chain, the
  one that is no CA); its path is `path`'s business, so xmlsec is given that certificate's
  key and nothing else (no KeyInfo resolution, no trust store);
- references: ``""`` and ``#xpointer(/)`` (the whole document, enveloped), ``#id`` and
  ``#xpointer(id('id'))`` resolve inside the document (Id, ID and id attributes are
  registered as IDs, xml:id is one already; an id that occurs twice is ``malformed``: it
  invites signature wrapping); no other XPointer (XPath by another name); any other URI,
  without a fragment, only from the documents the request supplied (a detached
  signature over a file of an application package). The library's own I/O callbacks
  (files, HTTP) are removed once per process and replaced by one that reads only the
  current item's supplied documents: a URI not supplied is ``unsupported`` and never
  fetched, and the appliance makes no network access, ever;
- algorithms: RSA with SHA-256/384/512, digests SHA-256/384/512, and as reference
  transforms only the enveloped-signature transform and the canonicalisations (no XSLT,
  no XPath, no SHA-1);
- bounds: at most `MAX_REFERENCES` References and `MAX_TRANSFORMS` Transforms per
  Reference (each Reference digests, and may canonicalise, a whole document); at most
  `MAX_NAMESPACES` namespaces in scope at any element, `MAX_ATTRIBUTES` attributes on one
  and `MAX_DEPTH` levels of elements (canonicalisation's cost per element grows as the
  square of the first two, and as the third);
  and the canonicalisation work of a call's XML items together (`XmlBudget`, estimated by
  `work` before xmlsec1 runs): an item past it is ``unsupported`` and the batch goes on.
"""

from __future__ import annotations

import base64
import contextvars
import io
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from responder.validation.request import XmlItem
from responder.validation.signature import (
    MAX_CERTIFICATES,
    UNCHECKED,
    FormatError,
    SignatureOutcome,
    Signed,
    failed,
    load_certificate,
    malformed,
    proved,
    rsa_key,
    unsupported,
)

DS: Final = "http://www.w3.org/2000/09/xmldsig#"
_NS: Final = {"ds": DS}
_SIGNATURE_METHODS: Final = {
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": "sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": "sha384",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": "sha512",
}
_DIGEST_METHODS: Final = frozenset(
    {
        "http://www.w3.org/2001/04/xmlenc#sha256",
        "http://www.w3.org/2001/04/xmldsig-more#sha384",
        "http://www.w3.org/2001/04/xmlenc#sha512",
    }
)
_C14N: Final = (
    xmlsec.constants.TransformInclC14N,
    xmlsec.constants.TransformInclC14NWithComments,
    xmlsec.constants.TransformInclC14N11,
    xmlsec.constants.TransformInclC14N11WithComments,
    xmlsec.constants.TransformExclC14N,
    xmlsec.constants.TransformExclC14NWithComments,
)
_REFERENCE_TRANSFORMS: Final = (
    *_C14N,
    xmlsec.constants.TransformEnveloped,
    xmlsec.constants.TransformSha256,
    xmlsec.constants.TransformSha384,
    xmlsec.constants.TransformSha512,
)
_SIGNATURE_TRANSFORMS: Final = (
    *_C14N,
    xmlsec.constants.TransformRsaSha256,
    xmlsec.constants.TransformRsaSha384,
    xmlsec.constants.TransformRsaSha512,
)
_ID_ATTRIBUTES: Final = ("Id", "ID", "id")
_XML_ID: Final = "{http://www.w3.org/XML/1998/namespace}id"
"""xml:id: libxml2 makes it an ID while parsing, so a ``#`` reference resolves it too."""
MAX_REFERENCES: Final = 64
"""References per SignedInfo: each one digests (and may canonicalise) a whole document."""
MAX_TRANSFORMS: Final = 4
"""Transforms per Reference (enveloped-signature and one canonicalisation are two)."""
MAX_NAMESPACES: Final = 32
"""Namespaces in scope at any element (the default one counted). libxml2's inclusive
canonicalisation compares every namespace in scope at each element with those already
rendered: its cost per element grows as the square of this number (100 in scope over 500
empty elements, 8 KB, took 0.8 s). Application documents use a handful."""
MAX_DEPTH: Final = 64
"""Levels of elements, the root's being 1. Canonicalising a node set checks each node's
ancestors (inside the signed set? inside the enveloped signature?): 250 levels made each
element twenty times as costly as one. libxml2 itself stops at 256."""
WORK_PER_CALL: Final = 2_000_000_000
"""The canonicalisation work (`work`'s units) of one call's XML items together: about 4 s of
one core where it was measured; 770,000 elements of a plain document (3 MB of empty
elements, far more of text), or 20,000 at the depth and namespace bounds."""
_WORK_DEPTH: Final = 22
_WORK_NAMESPACES: Final = 112
"""An element at depth ``d`` with ``n`` namespaces in scope costs xmlsec1 about
``(22 + d) * (112 + n * n)`` units of 2 ns (measured over 50,000 empty elements at depths
1 and 60 with 1 and 30 namespaces in scope: 5.4, 19.6, 48.7 and 183 us per element)."""

MAX_ATTRIBUTES: Final = 256
"""Attributes of one element. libxml2's canonicalisation sorts an element's attributes by
inserting each into a sorted list, at a cost that grows as the square of their number: one
element with 50,000 attributes (530 KB) took 11 s of a core, within every other bound.
Application documents use a handful."""
_WORK_ATTRIBUTE: Final = 400
_WORK_ATTRIBUTE_PAIR: Final = 3
"""An element with ``a`` attributes costs xmlsec1 about ``400 * a + 3 * a * a`` units more
(measured over 1,000 elements of 16, 64 and 256 attributes and 200 of 1,024: 13, 65, 425
and 5,900 us per element)."""

_OCTETS_PER_UNIT: Final = 2
"""A Reference to a supplied document digests it: about 1 ns per octet (64 References to
one 8 MiB document took 0.5 s), half a unit."""


@dataclass(slots=True)
class XmlBudget:
    """What is left of one call's canonicalisation work (`WORK_PER_CALL`)."""

    left: int = WORK_PER_CALL


_TRANSFORM_URIS: Final = frozenset(t.href for t in (*_C14N, xmlsec.constants.TransformEnveloped))
_ID: Final = r"[^'\"^()\s]+"
"""An Id in a reference: no quote (xmlsec1 wraps a bare name in ``xpointer(id('...'))``, so
a quote would end the literal and add XPath), no XPointer escape or parenthesis."""
_SAME_DOCUMENT: Final = re.compile(rf"#{_ID}|#xpointer\(/\)|#xpointer\(id\('{_ID}'\)\)")
"""The same-document references of XMLDSig §4.3.3.3: a bare name, ``xpointer(/)`` and
``xpointer(id('...'))``; any other XPointer is an XPath expression libxml2 would evaluate
(its cost grows as a power of the document's size): refused, as XPath transforms are."""

_WHOLE_DOCUMENT: Final = frozenset({"", "#xpointer(/)"})
"""The references that sign the document the signature is in, as a whole."""

_NONE: Final[Mapping[str, bytes]] = MappingProxyType({})
_documents: contextvars.ContextVar[Mapping[str, bytes]] = contextvars.ContextVar(
    "xmldsig_documents", default=_NONE
)
"""The supplied documents of the item being verified: all the I/O xmlsec may do."""
_io_lock: Final = threading.Lock()
_io_installed = False


def _install_io() -> None:
    """Replace xmlsec's I/O callbacks (files, HTTP) by the supplied documents, once."""
    global _io_installed
    with _io_lock:
        if _io_installed:
            return
        xmlsec.cleanup_callbacks()
        xmlsec.register_callbacks(_match, _open, _read, _close)
        _io_installed = True


def _match(uri: bytes) -> bool:
    return uri.decode("utf-8", "replace") in _documents.get()


def _open(uri: bytes) -> io.BytesIO:
    return io.BytesIO(_documents.get()[uri.decode("utf-8", "replace")])


def _read(stream: io.BytesIO, buffer: memoryview) -> int:
    return stream.readinto(buffer)


def _close(stream: io.BytesIO) -> None:
    stream.close()


def _parser() -> etree.XMLParser:
    """A parser that expands no entity, loads no DTD and touches no network."""
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
        huge_tree=False,
    )  # fmt: skip


def check_xmldsig(item: XmlItem, budget: XmlBudget | None = None) -> Signed:
    """The signature check of one ``xmldsig`` item, within ``budget`` (the call's; None: a
    budget of its own): read, then proved."""
    return proved(read_xmldsig(item, budget))


def read_xmldsig(item: XmlItem, budget: XmlBudget | None = None) -> Signed:
    """One ``xmldsig`` item read, bounded and its work taken from ``budget``; xmlsec1's
    check (the references' canonicalisation and digests, the RSA operation) left pending
    (`Signed.proof`). The proof parses the document again rather than keep the tree: a
    call's items are all read before any is proved."""
    cert: x509.Certificate | None = None
    try:
        root = _parse(item.xml)
        call = budget if budget is not None else XmlBudget()
        tree = work(root, call.left)
        signature = _one_signature(root)
        cert = _signer_certificate(signature)
        name, references = _algorithms(signature)
        _resolvable(references, item.documents)
        _spend(call, _references_work(tree, references, item.documents))
    except FormatError as e:
        return failed(e, cert)
    del root, signature
    signer = cert

    def proof() -> tuple[SignatureOutcome, str]:
        rsa_key(signer)
        root = _parse(item.xml)
        signature = _one_signature(root)
        ctx = _context(root, signer)
        _install_io()
        token = _documents.set(item.documents)
        try:
            ctx.verify(signature)
        except xmlsec.VerificationError:
            return (
                SignatureOutcome.MISMATCH,
                "the signature or a reference's digest does not verify (the signed data was changed, or another key signed it)",
            )
        except xmlsec.Error:
            return SignatureOutcome.MALFORMED, "the XML signature cannot be processed"
        finally:
            _documents.reset(token)
        detail = "the signature and every reference verify"
        if not any(r in _WHOLE_DOCUMENT for r in references):
            detail += (
                "; it signs only what the references name, not the whole document: read the "
                "signed content by those references"
            )
        return SignatureOutcome.VALID, detail

    return Signed(
        SignatureOutcome.NOT_CHECKED, UNCHECKED, cert, hash=name,
        attached=not any(_external(r) for r in references), references=tuple(references),
        proof=proof,
    )  # fmt: skip


def _parse(xml: bytes) -> etree._Element:
    try:
        root = etree.fromstring(xml, _parser())
    except etree.XMLSyntaxError:
        raise malformed("xml is not a well-formed XML document") from None
    docinfo: Any = root.getroottree().docinfo  # lxml-stubs lack ``doctype``
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise malformed("xml has a DOCTYPE: DTDs are refused")
    return root


def work(root: etree._Element, limit: int | None = None) -> int:
    """The canonicalisation work of the tree (units of about 2 ns, `_WORK_NAMESPACES`);
    refuses a tree past `MAX_NAMESPACES`, `MAX_ATTRIBUTES` or `MAX_DEPTH`, or past ``limit`` (what is left of
    the call's budget: the pass stops there), before xmlsec1 sees it."""
    depth = 0
    total = 0
    for event, node in etree.iterwalk(root, events=("start", "end")):
        if event == "end":
            depth -= 1
            continue
        depth += 1
        if depth > MAX_DEPTH:
            raise unsupported(f"xml nests elements deeper than {MAX_DEPTH} levels")
        namespaces = len(node.nsmap)
        attributes = len(node.attrib)
        total += (_WORK_DEPTH + depth) * (_WORK_NAMESPACES + namespaces * namespaces)
        total += attributes * (_WORK_ATTRIBUTE + _WORK_ATTRIBUTE_PAIR * attributes)
        if namespaces > MAX_NAMESPACES:
            raise unsupported(
                f"an element of xml has more than {MAX_NAMESPACES} namespaces in scope"
            )
        if attributes > MAX_ATTRIBUTES:
            raise unsupported(f"an element of xml has more than {MAX_ATTRIBUTES} attributes")
        if limit is not None and total > limit:
            raise unsupported(
                "the call's XML canonicalisation work is spent: send fewer or smaller XML items per call"
            )
    return total


def _references_work(tree: int, references: list[str], documents: Mapping[str, bytes]) -> int:
    """What verifying the references costs: each same-document one canonicalises the tree
    again (``tree``, `work`'s), each other one digests its supplied document again
    (`_OCTETS_PER_UNIT`); at least one pass over the tree (the parse and the IDs)."""
    same = sum(1 for uri in references if not _external(uri))
    octets = sum(len(documents[uri]) for uri in references if _external(uri))
    return tree * max(1, same) + octets // _OCTETS_PER_UNIT


def _spend(budget: XmlBudget, cost: int) -> None:
    if cost > budget.left:
        raise unsupported(
            "the call's XML canonicalisation work is spent: send fewer or smaller XML items per call"
        )
    budget.left -= cost


def _one_signature(root: etree._Element) -> etree._Element:
    found = root.findall(".//ds:Signature", _NS)
    if root.tag == f"{{{DS}}}Signature":
        found.insert(0, root)
    if not found:
        raise malformed("xml has no ds:Signature")
    if len(found) > 1:
        raise unsupported("xml has several ds:Signature elements: send one signature per item")
    return found[0]


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _signer_certificate(signature: etree._Element) -> x509.Certificate:
    texts = signature.findall("ds:KeyInfo/ds:X509Data/ds:X509Certificate", _NS)
    if not texts:
        raise malformed("the signature has no KeyInfo/X509Data/X509Certificate")
    if len(texts) > MAX_CERTIFICATES:
        raise unsupported(f"the KeyInfo carries more than {MAX_CERTIFICATES} certificates")
    certs: list[x509.Certificate] = []
    for t in texts:
        try:
            der = base64.b64decode("".join((t.text or "").split()), validate=True)
        except ValueError:
            raise malformed("an X509Certificate is not base64") from None
        certs.append(load_certificate(der, "an X509Certificate"))
    leaves = certs if len(certs) == 1 else [c for c in certs if not _is_ca(c)]
    if len(leaves) != 1:
        raise malformed("X509Data must hold exactly one end-entity certificate")
    return leaves[0]


def _algorithms(signature: etree._Element) -> tuple[str, list[str]]:
    method = signature.find("ds:SignedInfo/ds:SignatureMethod", _NS)
    name = _SIGNATURE_METHODS.get(method.get("Algorithm", "") if method is not None else "")
    if name is None:
        raise unsupported("the SignatureMethod is not RSA with SHA-256, SHA-384 or SHA-512")
    refs = signature.findall("ds:SignedInfo/ds:Reference", _NS)
    if not refs:
        raise malformed("the SignedInfo has no Reference")
    if len(refs) > MAX_REFERENCES:
        raise unsupported(f"the SignedInfo has more than {MAX_REFERENCES} References")
    uris = []
    for r in refs:
        uri = r.get("URI")
        if uri is None:
            raise unsupported("a Reference without URI")
        if uri.startswith("#") and not _SAME_DOCUMENT.fullmatch(uri):
            raise unsupported(
                "a Reference URI is an XPointer other than xpointer(/) or xpointer(id(...))"
            )
        if _external(uri) and "#" in uri:
            raise unsupported("a Reference URI to another document has a fragment")
        transforms = r.findall("ds:Transforms/ds:Transform", _NS)
        if len(transforms) > MAX_TRANSFORMS:
            raise unsupported(f"a Reference has more than {MAX_TRANSFORMS} Transforms")
        if any(t.get("Algorithm") not in _TRANSFORM_URIS for t in transforms):
            raise unsupported(
                "a Reference's Transform is not enveloped-signature or a canonicalisation"
            )
        digest = r.find("ds:DigestMethod", _NS)
        if digest is None or digest.get("Algorithm") not in _DIGEST_METHODS:
            raise unsupported("a Reference's DigestMethod is not SHA-256, SHA-384 or SHA-512")
        uris.append(uri)
    return name, uris


def _external(uri: str) -> bool:
    return uri != "" and not uri.startswith("#")


def _resolvable(references: list[str], documents: Mapping[str, bytes]) -> None:
    for uri in references:
        if _external(uri) and uri not in documents:
            raise unsupported(
                "a Reference names a document by URI that the request does not supply "
                "(documents): it is never fetched"
            )
    if not set(documents) <= set(references):
        # the answer names each supplied document by its digest (``received``): one the
        # signature does not cover would stand in a signed answer beside its verdict
        raise malformed("a supplied document (documents) is named by no Reference")


def _context(root: etree._Element, cert: x509.Certificate) -> xmlsec.SignatureContext:
    ctx = xmlsec.SignatureContext()
    seen: set[str] = set()
    elements = [node for node in root.iter() if isinstance(node.tag, str)]
    for attr in (_XML_ID, *_ID_ATTRIBUTES):
        for node in elements:
            value = node.get(attr)
            if value is None:
                continue
            if value in seen:
                raise malformed("an Id value occurs twice in the document")
            seen.add(value)
            if attr != _XML_ID:  # libxml2 registered xml:id while parsing
                try:
                    ctx.register_id(node, attr)
                except xmlsec.Error:
                    raise malformed("an Id attribute cannot be registered as an ID") from None
    for t in _REFERENCE_TRANSFORMS:
        ctx.enable_reference_transform(t)
    for t in _SIGNATURE_TRANSFORMS:
        ctx.enable_signature_transform(t)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    try:
        ctx.key = xmlsec.Key.from_memory(pem, xmlsec.constants.KeyDataFormatCertPem)
    except xmlsec.Error:
        raise unsupported("xmlsec cannot use the signer certificate's key") from None
    return ctx
