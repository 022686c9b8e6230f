"""特定利用者証明検証者証明符号 (Act §38-3): the builder issues the tokens and revokes them.

A 特定利用者証明検証者 (a 利用者証明検証者 approved by the ministers, 認可, Act §38-2(1),(4))
may ask the 機構 for a code showing that status (Act §38-3(1)); the 機構 provides it (§38-3(2))
under an agreement (取決め, §38-3(3)). jpki-va's token is an X.509 certificate of the
party's key (from its CSR), issued by a dedicated issuer generation of its own (the
manifest's ``token_issuer``, family ``verifier-token``) with the certificate policy
`crlbuilder.tokenrequest.TOKEN_POLICY_OID`, valid within the approval period.

Who does what (workers never hold a CA key; the responder never writes the store):

- the responder checks the request (authentication, agreement, title, approval in force,
  the CSR) and queues it as a file (`crlbuilder.tokenrequest`);
- the builder, which holds the token issuer's CA key like every CA key (a PEM file or a
  ``pkcs11:`` URI, `crlbuilder.keys.signer.load_signer`; Ord §73, §74), runs `TokenIssuer`
  at every build and every follow-loop turn that finds a request: `TokenIssuer.issue`
  checks each request again against the registry as it is now (`crlbuilder.verifiers`)
  and, for a new token, that its CSR names its party and no other
  (`crlbuilder.tokenrequest.binding_refusal`: a request queued by an older responder
  without it is dropped with the reason, and the party's next POST is told what to add),
  signs the certificate, writes it whole to the issued directory (``<id>.pem``, which the
  responder reads) and then commits its status record (good; holder: a digest of the
  party id, `crlbuilder.tokenrequest.token_holder`) in the store. The file is written
  before the commit: a builder killed between the two finds the request still queued and
  signs the same certificate again (same serial, same times: RSASSA-PKCS1-v1_5 is
  deterministic), so nothing answers "unknown" for a token a party holds for longer than
  that. A token whose file was lost after its commit is signed again, when its party asks
  again, with the times its status record holds: the same certificate the party holds,
  whatever the registry or ``tokens.validity_days`` say now. A request the registry no
  longer supports is dropped and reported; the party's
  next request is refused by the responder with the reason;
- `TokenIssuer.revoke_withdrawn`, at every build, revokes each good, unexpired token whose
  party is no longer an approved 特定利用者証明検証者 by the registry, for one of the causes
  `crlbuilder.verifiers.TokenEnd` names, each with its article: the approval was revoked
  (取消し, Act §38-2(6)), its period ended (``approved_until``, §38-2(1)), the party's
  provision ended (no longer a 利用者証明検証者, §36(2)) or it left the registry (§38-2(4));
  the build's report counts them by cause (``tokens_revoked_by``). Not when the agreement
  (取決め, §38-3(3)) stops naming the token: it governs the 機構's provision of the code
  (§38-3(2)), which then stops (the responder's 403), while the code held still shows what
  it says, the approval (§38-3(1), §38-2(4)); no article makes it lose effect with the
  agreement (§38-2(6) lists the approval's revocations, none about it). Category
  `Category.APPROVAL_WITHDRAWN` whatever the cause (the store and the ``token-revoked``
  record keep no cause: its citation is the one every cause shares, Act §38-3(1)), reason
  privilegeWithdrawn, dated when the build writes it (never earlier: the token loses its
  meaning then, and an OCSP answer given before said "good" rightly). The token's
  revocation then reaches its CRLs and OCSP answers like any other (its own delegated OCSP
  signer signs them).

On the record stream (a cluster: `Builder.consume`), only the signer's builder (``crl.enabled``)
runs this, and it commits nothing itself: ``publish`` puts each issuance and revocation on
the stream as a record (`crlbuilder.model.TokenIssued`, `TokenRevoked`: the times, the
holder digest and the certificate itself, the revocation's instant and the token issuer's
signature over it), which every node, the signer too, applies (`crlbuilder.apply`; an
issuance only with a certificate the token issuer signed that says what the record says,
`crlbuilder.tokencert`, a revocation only with the token issuer's signature over what it says,
`crlbuilder.tokenrevocation`: so on the stream revoking needs the key too), so every node answers OCSP for
a token alike and their stores stay byte-equal. A record published again before it came back
is the same record (no id with other content): a request asked again publishes the
certificate already written, as it is, recorded at its notBefore, and a revocation keeps its
first instant (`TokenIssuer.revoking`). `TokenIssuer.republish_held` publishes once the tokens the signer's store held
from before (a release that committed them there only).

The token's profile: subject ``CN=<party id>, O=jpki-va 特定利用者証明検証者, C=JP`` and a
subjectAltName URI ``urn:jpki-va:party:<id>``; the CSR's public key (its subject is not
copied: the 機構 says who the party is, from its registry); keyUsage digitalSignature;
certificatePolicies the token policy; CRL distribution point and AIA OCSP of its issuer;
notBefore the request's time (not before the approval's first day), notAfter the earliest
of the approval period's end, an end of the approval already set ahead (its revocation's
instant or the party's provision end, ``registry end --at``: the token does not outlive
what is already known), ``tokens.validity_days`` later, and the issuer's own notAfter.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import msgspec
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from crlbuilder import tokenrevocation
from crlbuilder.atomicfile import write_whole
from crlbuilder.keys.certsign import sign_certificate
from crlbuilder.keys.signer import Signer, SignerError, load_signer
from crlbuilder.manifest import IssuerFiles, Manifest
from crlbuilder.model import Category, Family, Record, TokenIssued, TokenRevoked
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.writer import Commit
from crlbuilder.tokenrequest import (
    TOKEN_POLICY_OID,
    TokenRequest,
    binding_refusal,
    csr_parties,
    issued_path,
    read_request,
    request_id,
    sweep_tmp,
    token_holder,
    token_serial,
)
from crlbuilder.validity import expired_at
from crlbuilder.verifiers import TokenEnd, Verifiers

TOKEN_ORGANIZATION: Final = "jpki-va 特定利用者証明検証者"


@dataclass
class TokenReport:
    """What one run did: tokens issued and revoked, requests dropped (with why)."""

    issued: int = 0
    revoked: int = 0
    revoked_by: dict[str, int] = field(default_factory=dict)
    """The tokens revoked, by cause and its article (``"approval-revoked (Act §38-2(6))"``,
    `crlbuilder.verifiers.TokenEnd`)."""
    dropped: list[dict[str, str]] = field(default_factory=list)
    signing_failed: SignerError | None = None
    """The token issuer's key could not sign (the requests left stay queued): the caller
    finishes its other work (CRLs, answers) and then raises it."""


def token_validity(
    req: TokenRequest,
    *,
    issuer_cert: x509.Certificate,
    approval_window: tuple[int, int | None],
    validity: timedelta,
    approval_end: float = math.inf,
) -> tuple[datetime, datetime]:
    """The token's notBefore and notAfter (the module docstring); notAfter may come before
    notBefore when the issuer's certificate has expired (`TokenIssuer` refuses that).

    ``approval_end`` is when the approval is already known to stop, whatever the reason
    (`crlbuilder.verifiers.TokenApproval.end`: a revocation or a provision end set ahead):
    the token ends the second before it, as before its period's end."""
    start, end = approval_window
    not_before = max(req.requested_at.astimezone(UTC), datetime.fromtimestamp(start, UTC))
    not_after = min(not_before + validity, issuer_cert.not_valid_after_utc)
    ends = min(math.inf if end is None else end, approval_end)
    if ends < math.inf:
        last = datetime.fromtimestamp(ends, UTC).replace(microsecond=0) - timedelta(seconds=1)
        if last.timestamp() + 1 < ends:  # a fractional end: its whole second is still before it
            last += timedelta(seconds=1)
        not_after = min(not_after, last)
    return not_before, not_after


def token_certificate(
    req: TokenRequest,
    *,
    issuer: IssuerFiles,
    issuer_cert: x509.Certificate,
    approval_window: tuple[int, int | None],
    validity: timedelta,
    signer: Signer,
    approval_end: float = math.inf,
    times: tuple[datetime, datetime] | None = None,
) -> x509.Certificate:
    """The token certificate of ``req`` (the module docstring's profile), signed by ``signer``;
    ``times`` (notBefore, notAfter) when they are already fixed (a token signed again)."""
    csr = x509.load_der_x509_csr(req.csr)
    not_before, not_after = times or token_validity(
        req, issuer_cert=issuer_cert, approval_window=approval_window, validity=validity,
        approval_end=approval_end,
    )  # fmt: skip
    public_key = csr.public_key()
    ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, TOKEN_ORGANIZATION),
                    x509.NameAttribute(NameOID.COMMON_NAME, req.party),
                ]
            )
        )
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(token_serial(req.id))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.CertificatePolicies([x509.PolicyInformation(TOKEN_POLICY_OID, None)]),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"urn:jpki-va:party:{req.party}")]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier(issuer.crl_url)], None, None, None
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(issuer.ocsp_url),
                    )
                ]
            ),
            critical=False,
        )
    )
    return sign_certificate(builder, signer.sign)


def issued_record_id(issuer: str, serial: int) -> str:
    """The id of a token's `TokenIssued` record: one per token, so a record published again
    (before the first was applied, or by `TokenIssuer.republish_held`) is applied once."""
    return f"token-issued:{issuer}:{serial:x}"


def revoked_record_id(issuer: str, serial: int) -> str:
    """The id of a token's `TokenRevoked` record (a token is revoked once)."""
    return f"token-revoked:{issuer}:{serial:x}"


def issued_certificates(issued: Path) -> dict[int, x509.Certificate]:
    """The token certificates in the issued directory ``issued`` (``tokens.issued``), by serial
    (a file that does not parse is left out; the names are request ids, not serials)."""
    found: dict[int, x509.Certificate] = {}
    if not issued.is_dir():
        return found
    for path in sorted(issued.glob("*.pem")):
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            continue
        found[cert.serial_number] = cert
    return found


class TokenIssuer:
    """One build's work on tokens: issue the queued requests, revoke the withdrawn."""

    def __init__(
        self,
        store: Store,
        manifest: Manifest,
        *,
        requests: Path | None,
        issued: Path | None,
        validity_days: int,
        verifiers: Verifiers,
        clock: Callable[[], datetime],
        publish: Callable[[list[Record]], None] | None = None,
        revoking: dict[int, datetime] | None = None,
    ) -> None:
        """``publish``: on the record stream (the cluster's signer), the issuances and
        revocations are published as records (`TokenIssued`, `TokenRevoked`) that every node,
        this one included, applies from the stream, instead of being committed here.

        ``revoking``: the instant of each revocation published and not yet applied here, by
        serial, kept by the caller across its refreshes (each makes a new `TokenIssuer`), so a
        refresh that runs before the record came back publishes the same record again (the
        same ``at``), not one id with other content."""
        self.store = store
        self.publish = publish
        self.revoking: dict[int, datetime] = {} if revoking is None else revoking
        self.manifest = manifest
        self.issuer = manifest.token_issuer
        self.requests = requests
        self.issued = issued
        self.validity = timedelta(days=validity_days)
        self.verifiers = verifiers
        self.clock = clock
        self._signer: Signer | None = None

    def run(self, now: int) -> TokenReport:
        """Issue what is queued, then revoke what the registry no longer supports (also when
        the token issuer's key cannot sign: `TokenReport.signing_failed`)."""
        report = TokenReport()
        if self.issuer is None:
            return report
        for d in (self.requests, self.issued):
            if d is not None:  # what a crashed writer left (the files' own clock)
                sweep_tmp(d, now=time.time())
        try:
            self.issue(now, report)
        except SignerError as e:  # revoking needs no key in a store of its own: revoked still
            report.signing_failed = e  # (on the record stream it does: that fails the same way)
        self.revoke_withdrawn(now, report)
        return report

    def signer(self) -> Signer:
        """The token issuer's CA key (PEM file or ``pkcs11:`` URI), opened once."""
        if self._signer is None:
            assert self.issuer is not None
            m = self.manifest
            self._signer = load_signer(m.key_ref(self.issuer.key), m.path(self.issuer.cert))
        return self._signer

    def pending(self) -> list[Path]:
        """The queued request files, in name order (the ids are digests: no order of arrival)."""
        if self.requests is None or self.issuer is None or not self.requests.is_dir():
            return []
        return sorted(self.requests.glob("*.json"))

    def issue(self, now: int, report: TokenReport) -> None:
        """Sign and record each queued request the registry still supports (the docstring)."""
        assert self.issuer is not None
        if self.issued is None:
            return
        for path in self.pending():
            why = self._issue_one(path, now)
            if why is None:
                report.issued += 1
            elif why:
                report.dropped.append({"request": path.stem, "reason": why})
            path.unlink(missing_ok=True)

    def _issue_one(self, path: Path, now: int) -> str | None:
        """None: issued; "": already issued (a replay); else why the request was dropped."""
        assert self.issuer is not None and self.issued is not None
        try:
            req = read_request(path)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return "the request file cannot be read as a token request"
        if req.id != path.stem:
            return "the request file's name is not its id"
        approval = self.verifiers.approvals.get(req.party)
        if approval is None:
            return "the party is not a registered 特定利用者証明検証者 (Act §38-2(4), §38-3(1))"
        if not approval.in_force(now):
            return "the party's approval (認可) is not in force (Act §38-2(1),(6))"
        try:
            csr = x509.load_der_x509_csr(req.csr)
            spki = csr.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            csr_parties(csr)  # its requested extensions read (`binding_refusal` below)
        except (ValueError, UnsupportedAlgorithm):  # left queued, it would stop every build
            return "the request's CSR does not parse"
        if request_id(req.party, spki, approval.window) != req.id:
            return "the party's approval changed since the request: it must ask again"
        key = sf.status_key(self.issuer.index, token_serial(req.id))
        out = issued_path(self.issued, req.id)
        with self.store.read() as r:
            st = r.status(key)
        known = st is not None
        if known and out.exists():
            return ""
        signed = self._published(out, req.id) if self.publish is not None and not known else None
        if signed is not None and self.publish is not None:  # published, not applied: again
            self.publish([self._issued_record(req.party, signed)])
            return None
        if not known:  # a new token: its CSR must name its party (a stored one was issued)
            unbound = binding_refusal(csr_parties(csr), req.party)
            if unbound is not None:
                return unbound
        issuer_cert = self.signer().certificate
        if st is not None:  # its file lost: the certificate the party holds, signed again
            not_before = datetime.fromtimestamp(st.not_before, UTC)
            not_after = datetime.fromtimestamp(st.not_after, UTC)
        else:
            not_before, not_after = token_validity(
                req, issuer_cert=issuer_cert, approval_window=approval.window,
                validity=self.validity, approval_end=approval.end(),
            )  # fmt: skip
        if not_after <= not_before and issuer_cert.not_valid_after_utc > not_before:
            return (
                "the party's approval (認可) ends before the token could start: it must ask again"
            )
        if not_after <= not_before or expired_at(issuer_cert.not_valid_after_utc, now):
            # signing would fail (and fail every build after it): the request is dropped
            return (
                f"the token issuer {self.issuer.id}'s certificate has expired "
                f"({issuer_cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}): no token can be issued "
                "under it until the token issuer is rolled over"
            )
        cert = token_certificate(
            req,
            issuer=self.issuer,
            issuer_cert=issuer_cert,
            approval_window=approval.window,
            validity=self.validity,
            signer=self.signer(),
            times=(not_before, not_after),
        )
        self.issued.mkdir(parents=True, exist_ok=True)
        write_whole(out, cert.public_bytes(serialization.Encoding.PEM), 0o644)  # a certificate
        if known:
            if self.publish is not None and not self._applied(cert.serial_number):
                # held from a release before the token records, its file lost: published now
                # that its certificate is here again (`republish_held` could not)
                self.publish([self._issued_record(req.party, cert)])
            return ""
        if self.publish is not None:  # every node, this one too, records it from the stream
            self.publish([self._issued_record(req.party, cert)])
            return None
        record = sf.StatusRecord(
            version=0, state=sf.STATE_GOOD, category=0, reason=0,
            family=Family.SPECIFIED_VERIFIER_TOKEN.code,
            not_before=int(cert.not_valid_before_utc.timestamp()),
            not_after=int(cert.not_valid_after_utc.timestamp()),
            revoked_at=0, holder=token_holder(req.party),
        )  # fmt: skip
        with Commit(self.store, self.clock) as c:
            c.add_certificate(key, record, Family.SPECIFIED_VERIFIER_TOKEN, None)
        return None

    def _published(self, out: Path, rid: str) -> x509.Certificate | None:
        """The token file already written for ``rid`` (on the record stream, its record
        published and not yet applied here: the party asked again meanwhile, with another
        request time): that certificate is the token, published again as it is (not signed
        again: an ECDSA signature would differ); None: no such file."""
        try:
            cert = x509.load_pem_x509_certificate(out.read_bytes())
        except (OSError, ValueError):
            return None
        if cert.serial_number != token_serial(rid):
            return None
        return cert

    def _applied(self, serial: int) -> bool:
        """This store applied the token's `TokenIssued` record (from the stream)."""
        assert self.issuer is not None
        with self.store.read() as r:
            return r.applied(issued_record_id(self.issuer.id, serial)) is not None

    def _issued_record(self, party: str, cert: x509.Certificate) -> TokenIssued:
        """The `TokenIssued` record of ``party``'s token ``cert``, carrying the certificate
        (DER) that every node checks before recording it (`crlbuilder.tokencert`), recorded at
        its notBefore: a record published again (the party asking again before it was
        applied, `republish_held`) is the same record, never one id with other content."""
        assert self.issuer is not None
        return TokenIssued(
            id=issued_record_id(self.issuer.id, cert.serial_number),
            recorded_at=cert.not_valid_before_utc, serial=cert.serial_number,
            issuer=self.issuer.id, not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc, holder=token_holder(party).hex(),
            certificate=cert.public_bytes(serialization.Encoding.DER),
        )  # fmt: skip

    def _revoked_record(self, serial: int, at: datetime, holder: bytes) -> TokenRevoked:
        """The `TokenRevoked` record of token ``serial`` (held by ``holder``) at ``at``,
        signed by the token issuer's key (`crlbuilder.tokenrevocation`; deterministic: the
        same record when published again with the same instant). Raises `SignerError` when
        the key cannot sign."""
        assert self.issuer is not None
        signature = tokenrevocation.sign(
            self.signer(), issuer=self.issuer.id, serial=serial, at=at, holder=holder
        )
        return TokenRevoked(
            id=revoked_record_id(self.issuer.id, serial), recorded_at=at, serial=serial,
            issuer=self.issuer.id, at=at, signature=signature,
        )  # fmt: skip

    def republish_held(self) -> tuple[int, int]:
        """On the record stream: publish the records of the tokens this store holds that did
        not come from the stream (issued, or revoked, by a release before the token records,
        which committed them to the signer's store only), with the times the store holds, so
        every node records them as this one does: a node restored from an older snapshot has a
        token revoked since revoked at the signer's instant, and the others know the token at
        all. Records already applied here (from the stream) are not published again.

        A `TokenIssued` carries the token's certificate, taken from the issued directory (the
        store holds no public key to sign it again with). A held token whose file is missing
        there is not published as issued: the other nodes answer unknown for it until its party
        asks again (`issue` then signs it again, with the stored times, and publishes it); its
        revocation is published still (it reaches the nodes restored from a snapshot that hold
        the token; the others quarantine it as an unknown serial). Returns how many records it
        published and how many held tokens it could not publish for want of their file.
        A revocation is signed by the token issuer's key (`_revoked_record`): raises
        `SignerError`, publishing nothing, when that key cannot sign."""
        assert self.issuer is not None and self.publish is not None
        issuer = self.issuer.id
        certs = self._issued_files()
        out: list[Record] = []
        missing = 0
        with self.store.read() as r:
            for key, st in r.statuses(self.issuer.index):
                if st.erased:  # past retention: nothing left to say about it
                    continue
                serial = sf.split_status_key(key)[1]
                if r.applied(issued_record_id(issuer, serial)) is None:
                    cert = certs.get(serial)
                    nb = datetime.fromtimestamp(st.not_before, UTC)
                    na = datetime.fromtimestamp(st.not_after, UTC)
                    if cert is None or (cert.not_valid_before_utc, cert.not_valid_after_utc) != (
                        nb, na,
                    ):  # fmt: skip
                        missing += 1
                    else:
                        out.append(TokenIssued(
                            id=issued_record_id(issuer, serial), recorded_at=nb, serial=serial,
                            issuer=issuer, not_before=nb, not_after=na, holder=st.holder.hex(),
                            certificate=cert.public_bytes(serialization.Encoding.DER),
                        ))  # fmt: skip
                if st.revoked and r.applied(revoked_record_id(issuer, serial)) is None:
                    at = datetime.fromtimestamp(st.revoked_at, UTC)
                    out.append(self._revoked_record(serial, at, st.holder))
        self.publish(out)
        return len(out), missing

    def _issued_files(self) -> dict[int, x509.Certificate]:
        """The token certificates in the issued directory, by serial (`issued_certificates`)."""
        return {} if self.issued is None else issued_certificates(self.issued)

    def revoke_withdrawn(self, now: int, report: TokenReport) -> None:
        """Revoke the good, unexpired tokens of parties no longer approved (the docstring)."""
        assert self.issuer is not None
        ended = {
            token_holder(pid): approval.ended_by(now)
            for pid, approval in self.verifiers.approvals.items()
        }
        due: list[bytes] = []
        holders: list[bytes] = []
        with self.store.read() as r:
            for key, st in r.statuses(self.issuer.index):
                cause = ended.get(st.holder, TokenEnd.NOT_APPROVED)
                if not st.revoked and not expired_at(st.not_after, now) and cause is not None:
                    due.append(key)
                    by = f"{cause.value} ({cause.article})"
                    report.revoked_by[by] = report.revoked_by.get(by, 0) + 1
                    holders.append(st.holder)
        if self.publish is not None:  # dated here, once: every node revokes it at this instant
            serials = [sf.split_status_key(key)[1] for key in due]
            for gone in set(self.revoking) - set(serials):  # applied here (or no longer due)
                del self.revoking[gone]
            if not due:
                return
            first = datetime.fromtimestamp(now, UTC)
            ats = [self.revoking.setdefault(serial, first) for serial in serials]
            try:  # signed by the token issuer's key: every node checks it
                records: list[Record] = [
                    self._revoked_record(serial, at, holder)
                    for serial, at, holder in zip(serials, ats, holders, strict=True)
                ]
            except SignerError as e:  # kept in `revoking`: the next refresh, the same instant
                report.signing_failed = report.signing_failed or e
                return
            self.publish(records)
            report.revoked += len(due)
            return
        if not due:
            return
        category = Category.APPROVAL_WITHDRAWN
        with Commit(self.store, self.clock) as c:
            for key in due:
                cur = c.status(key)
                assert cur is not None
                c.revoke(
                    key, cur, category=category.code, reason=int(category.default_reason),
                    at=now, recorded_at=now,
                )  # fmt: skip
        report.revoked += len(due)
