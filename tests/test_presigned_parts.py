"""A pre-signed answer stored as its parts (`crlbuilder.store.format.pack_response_parts`) is
sent as the bytes the builder signed, byte for byte.

The builder signs `ResponseSigner.presigned_data` and stores the signature, the times and a
check; the responder rebuilds the DER with the same encoder from the key, the status record
and the signer's and issuer's constants (`responder.flow.presigned_der`). Here, for every issuer
of the demo PKI with the delegate that signs its answers, every CRLReason, several time and
serial shapes: the rebuilt answer is the one the earlier layout stored (the DER stem and the
signer's ``certs``), it verifies with cryptography's OCSP loader, and an answer stored in the
earlier layout is still sent as stored. A value whose parts do not rebuild the answer signed
(a byte of its signature, its times or the status record changed) is refused as store damage.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import ocsp
from hypothesis import given, settings
from hypothesis import strategies as st

from crlbuilder.keys.signer import Signer, load_signer
from crlbuilder.manifest import Manifest, ocsp_signer_files
from crlbuilder.model import CertStatus, Family
from crlbuilder.ocsp.request import CertId, parse_request
from crlbuilder.ocsp.response import (
    ResponseSigner,
    SingleAnswer,
    _gt,
    cert_id_der,
    issuer_hashes,
)
from crlbuilder.store import format as sf
from crlbuilder.store.reader import decode_answer
from responder.flow import PresignedUnusable, presigned_der

REASONS = (0, 1, 2, 3, 4, 5, 6, 8, 9, 10)
"""Every RFC 5280 CRLReason a status record holds (7 is unused; 0 is left out of the DER)."""
T = 1_780_000_000
"""A fixed instant (2026-05-28T20:26:40Z): nothing here reads the clock."""
SHAPES = [
    # (revocationTime, thisUpdate, nextUpdate, serial)
    (T - 86_400, T, T + 86_400, 0x1234_5678_9ABC),
    (0, T, T + 1, 1),  # the epoch; a one-second answer; the smallest serial
    (946_684_799, 946_684_800, 2_524_607_999, 0x7F),  # 1999/2000, nextUpdate 2049-12-31
    (2_524_608_000, 2_524_608_000, 253_402_300_799, 0x80),  # 2050 (UTCTime ends), 9999-12-31
    (951_782_400, 951_868_800, 4_107_542_400, (1 << 159) | 1),  # a leap day; a leading 00
    (T - 1, T, T + 7 * 86_400, (1 << 160) - 1),  # the largest serial of 20 octets
]


def _signers(
    manifest: Manifest,
) -> list[tuple[str, Family, ResponseSigner, Signer, x509.Certificate]]:
    """Every issuer with the delegate that signs its answers (its own, or its successor's
    after a compromise), its signing key and its CA certificate."""
    out = []
    for issuer in manifest.all_issuers():
        for compromised in (False, True):
            files = ocsp_signer_files(manifest, issuer, compromised)
            if files is None:
                continue
            key, cert = files
            signer = load_signer(manifest.key_ref(key), manifest.path(cert))
            ca = x509.load_pem_x509_certificate(manifest.path(issuer.cert).read_bytes())
            out.append((issuer.id, issuer.family, ResponseSigner(signer), signer, ca))
    return out


def _earlier_layout(
    rs: ResponseSigner,
    signer: Signer,
    cert_id: bytes,
    revoked_at: int,
    reason: int,
    this_update: int,
    next_update: int,
) -> tuple[bytes, bytes]:
    """(the DER stem the pre-signer stored before the parts, its signature): its own code."""
    data = rs.response_data(
        [SingleAnswer(cert_id, CertStatus.REVOKED, revoked_at, reason)],
        produced_at=this_update, this_update=this_update, next_update=next_update,
    )  # fmt: skip
    sig = signer.sign(data)
    der = rs.assemble(data, sig)
    return der[: len(der) - len(rs.certs_suffix)], sig


def _asked(ca: x509.Certificate, serial: int) -> CertId:
    """The SHA-1 CertID of a request made by cryptography for ``serial`` of ``ca`` (hashAlgorithm
    parameters NULL, as OpenSSL, Java and cryptography send it)."""
    name_hash, key_hash = issuer_hashes(ca, "sha1")
    req = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        name_hash, key_hash, serial, hashes.SHA1()
    ).build()  # fmt: skip
    (cid,) = parse_request(req.public_bytes(serialization.Encoding.DER), max_certids=1).cert_ids
    return cid


def _status(version: int, reason: int, revoked_at: int, family: Family) -> sf.StatusRecord:
    return sf.StatusRecord(
        version, sf.STATE_REVOKED, 1, reason, family.code, 0, 0, revoked_at, bytes(32)
    )


def _verified(der: bytes, rs: ResponseSigner, serial: int, reason: int) -> None:
    resp = ocsp.load_der_ocsp_response(der)
    assert resp.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert resp.serial_number == serial
    assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED
    got = resp.revocation_reason
    assert (got.value if got is not None else None) == (None if reason == 0 else x509.ReasonFlags(
        {1: "keyCompromise", 2: "cACompromise", 3: "affiliationChanged", 4: "superseded",
         5: "cessationOfOperation", 6: "certificateHold", 8: "removeFromCRL",
         9: "privilegeWithdrawn", 10: "aACompromise"}[reason]).value)  # fmt: skip
    public = rs.signer.certificate.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    assert resp.signature_hash_algorithm is not None
    public.verify(resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(),
                  resp.signature_hash_algorithm)  # fmt: skip


def _cases() -> list[tuple[int, tuple[int, int, int, int]]]:
    """Every reason with the first shape, and every shape with a reason of its own."""
    return [(r, SHAPES[0]) for r in REASONS] + [
        (REASONS[(i * 3) % len(REASONS)], s) for i, s in enumerate(SHAPES[1:])
    ]


def test_the_rebuilt_answer_is_the_earlier_layouts_for_every_issuer_reason_and_time(
    demo_pki: tuple[Path, Manifest],
) -> None:
    """Parts stored, decoded, rebuilt: the bytes the earlier layout stored and sent (its stem
    and the signer's certs), signed over the very bytes the builder now signs, and verified."""
    _, manifest = demo_pki
    signers = _signers(manifest)
    assert {f for _, f, *_ in signers} == set(Family)  # every family, the verifiers' tokens too
    version = 7
    for issuer_id, family, rs, signer, ca in signers:
        for reason, (revoked_at, this_update, next_update, serial) in _cases():
            where = (issuer_id, reason, revoked_at, this_update, next_update, serial)
            cid = _asked(ca, serial)
            assert cid.der == cert_id_der("sha1", *issuer_hashes(ca, "sha1"), serial)
            stem, sig = _earlier_layout(
                rs, signer, cid.der, revoked_at, reason, this_update, next_update
            )
            data = rs.presigned_data(cid.der, revoked_at, reason, this_update, next_update)
            assert signer.sign(data) == sig, where  # the builder signs the same bytes
            value = sf.pack_response_parts(
                version, this_update, next_update, rs.signer_id, sf.response_check(data, sig), sig
            )
            assert len(value) == sf.RESPONSE_HEAD_BYTES + 1 + 4 + len(sig) < len(stem), where
            st = _status(version, reason, revoked_at, family)
            answer = decode_answer(value)
            assert answer.parts and answer.signature == sig
            der = presigned_der(answer, st, cid, rs)
            assert der == stem + rs.certs_suffix, where
            _verified(der, rs, serial, reason)
            # the earlier layout's value: still sent as stored
            old = decode_answer(sf.pack_response(version, this_update, next_update,
                                                 rs.signer_id, stem))  # fmt: skip
            assert not old.parts
            assert presigned_der(old, st, cid, rs) == der, where


def _first_parts(
    manifest: Manifest, version: int, reason: int
) -> tuple[Family, ResponseSigner, CertId, int, bytes]:
    """The first signer's answer of the first shape signed and packed as its parts: (family,
    response signer, CertID asked, revocationTime, the ``responses`` value)."""
    _, family, rs, signer, ca = _signers(manifest)[0]
    revoked_at, this_update, next_update, serial = SHAPES[0]
    cid = _asked(ca, serial)
    data = rs.presigned_data(cid.der, revoked_at, reason, this_update, next_update)
    sig = signer.sign(data)
    value = sf.pack_response_parts(
        version, this_update, next_update, rs.signer_id, sf.response_check(data, sig), sig
    )
    return family, rs, cid, revoked_at, value


def test_a_certid_of_the_other_form_is_not_answered_from_the_parts(
    demo_pki: tuple[Path, Manifest],
) -> None:
    """The builder signs the CertID with NULL hashAlgorithm parameters: one asked with them
    absent (RFC 5754 §2) gets no rebuilt answer (it would not echo the CertID asked), as it
    got no stored stem: it is signed afresh."""
    _, manifest = demo_pki
    family, rs, cid, revoked_at, value = _first_parts(manifest, 1, 1)
    answer = decode_answer(value)
    absent = cid.der.replace(b"\x30\x09\x06\x05\x2b\x0e\x03\x02\x1a\x05\x00",
                             b"\x30\x07\x06\x05\x2b\x0e\x03\x02\x1a")  # fmt: skip
    absent = b"\x30" + bytes((len(absent) - 4,)) + absent[2:]
    other = cid._replace(der=absent)
    st = _status(1, 1, revoked_at, family)
    assert presigned_der(answer, st, cid, rs) is not None
    assert presigned_der(answer, st, other, rs) is None


def test_parts_that_do_not_rebuild_the_signed_answer_are_never_sent(
    demo_pki: tuple[Path, Manifest],
) -> None:
    """A byte of the signature, of the times or of the check changed, or a status record that
    says another revocationTime or reason under the same version: the rebuilt bytes would not
    verify. `PresignedUnusable` (the flow signs afresh), never an answer; a tagged value too
    short for its parts is refused when read (`StoreCorrupt`)."""
    _, manifest = demo_pki
    family, rs, cid, revoked_at, value = _first_parts(manifest, 3, 4)
    st = _status(3, 4, revoked_at, family)
    assert presigned_der(decode_answer(value), st, cid, rs) is not None
    head = sf.RESPONSE_HEAD_BYTES
    damaged = [
        value[:-1] + bytes((value[-1] ^ 1,)),  # the signature's last byte
        value[:5] + bytes((value[5] ^ 1,)) + value[6:],  # thisUpdate
        value[:13] + bytes((value[13] ^ 0x40,)) + value[14:],  # nextUpdate
        value[: head + 1] + bytes((value[head + 1] ^ 1,)) + value[head + 2 :],  # the check
        value[:-1],  # the signature cut short
    ]
    for bad in damaged:
        with pytest.raises(PresignedUnusable):
            presigned_der(decode_answer(bad), st, cid, rs)
    for other in (st._replace(reason=5), st._replace(revoked_at=revoked_at + 1)):
        with pytest.raises(PresignedUnusable):
            presigned_der(decode_answer(value), other, cid, rs)
    with pytest.raises(sf.StoreCorrupt, match="a responses value of 33 bytes"):
        decode_answer(value[: head + 5])


def test_a_stem_that_would_read_as_parts_is_not_written() -> None:
    """The tag that tells the layouts apart: a stem is DER (0x30); one beginning with the parts'
    tag would be read as parts, so it is refused, as parts without a signature or check are."""
    with pytest.raises(ValueError, match="SEQUENCE"):
        sf.pack_response(1, 2, 3, bytes(8), b"\x01" + bytes(40))
    with pytest.raises(ValueError, match="4-byte check"):
        sf.pack_response_parts(1, 2, 3, bytes(8), bytes(4), b"")
    with pytest.raises(ValueError, match="4-byte check"):
        sf.pack_response_parts(1, 2, 3, bytes(8), bytes(3), b"sig")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(0, 253_402_300_799), st.sampled_from(
    [0, 59, 86_399, 86_400, 951_782_400, 951_868_799, 2_524_607_999, 253_402_300_799]
)))  # fmt: skip
def test_generalized_time_is_gmtimes_every_second(epoch: int) -> None:
    """The GeneralizedTime of every answer (`_gt`: the date of its day cached, then the time of
    day) is what ``time.gmtime`` says of the second, through 9999-12-31T23:59:59Z."""
    t = time.gmtime(epoch)
    assert _gt(epoch) == b"\x18\x0f%04d%02d%02d%02d%02d%02dZ" % (
        t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
    )  # fmt: skip
