"""Key ceremonies (鍵の儀式): `crlbuilder keys ...`, each approved by two operators and logged.

The issuing keys (発行者署名符号) and the delegated OCSP signers' keys are made and managed
in the token (Ord §73(4): 専用の電子計算機 that keeps them from leaking) by several people
(Ord §74(3): 複数の者による作成及び管理), every operation recorded (Ord §73(3): 動作を記録する
機能) in the hash-chained operation log (`crlbuilder.keys.oplog`)::

    crlbuilder keys add-operator --operators FILE --name NAME --secret file:/path|env:VAR
                             --log FILE (--anchor SEQ:SHA256 | --new-log)
                             [--approval ... x2 | --replace --current-secret file:/path|env:VAR
                              | --reset --approval ... x2]
    crlbuilder keys new-ca    --key URI --family F --generation N --out CERT     [approvals]
    crlbuilder keys new-ocsp  --key URI --ca-key REF --ca-cert CERT --out CERT  [approvals]
    crlbuilder keys rollover  --pki DIR --family F --ca-key URI --ocsp-key URI  [approvals]
    crlbuilder keys retire    --key URI --cert CERT --pki DIR | --no-pki        [approvals]
    crlbuilder keys successor --pki DIR --issuer ID --successor ID              [approvals]
    crlbuilder keys inventory --key URI                                         [approvals]
    crlbuilder keys destroy   --key URI --spki SHA256 [--label L] [--id HEX]
                              --pki DIR | --no-pki                              [approvals]
    crlbuilder keys verify-log --log FILE [--anchor SEQ:SHA256] [--operators FILE]
                               [--token URI ...] [--json]

    approvals: --log FILE --anchor SEQ:SHA256 --operators FILE
               --approval NAME:file:/path --approval NAME:env:VAR

A ceremony is checked before anything is done: two approvals by distinct operators of the
operators file, each with the right secret (`crlbuilder.keys.approval`); otherwise it is
refused, nothing is done, and the refusal is logged (``ceremony-refused``, with the names
given and the reason). An approved ceremony logs each operation with both operators' names
and the SHA-256 of its canonical description (what they approved), then prints the log's
new head (``SEQ:SHA256``) for the operators to write into the ceremony record. The next
ceremony is given that head (``--anchor``) and refuses a log that does not extend it: a log
whose tail was cut off, rewritten, or replaced by another (a new bootstrap in a new log) is
not acted on, nor one holding a ceremony line after that head (one the record does not hold:
an older head given, a ceremony interrupted, or a line written in by hand). A ceremony that
fails part-way prints its head too. Only ``add-operator --new-log`` starts a log, where none
is recorded yet (no log, or only signing sessions and refusals); a refusal never creates
one. Every ceremony holds an exclusive lock on ``FILE.lock`` beside the operators file from
its check to its last write: two enrolments cannot both pass, and of two ceremonies started
together with one head, the second waits and is refused.

Every token a ceremony uses (its ``pkcs11:`` keys) is compared, before anything is done,
with what the log says it holds (`crlbuilder.keys.inventory`: its last ``token-inventory``
line, the keys made and destroyed since): a key no ceremony made (one made with the PIN
alone) or one missing is refused. At its end the ceremony records what the log accounts for
(a ``token-inventory`` line: fingerprints, labels, ids). ``inventory`` records the token as
two operators found it, the differences examined; ``destroy`` takes out a key that has no
certificate, named by its fingerprint (`crlbuilder.keys.destruction`). The operators file
names its log (`crlbuilder.keys.logname`): a ceremony given another log, or ``--new-log``
anywhere but at that log's path, is refused and writes nothing.

Keys are generated in the token (non-extractable, sensitive; `crlbuilder.keys.pkcs11`);
certificates follow the PKI's own profiles (`crlbuilder.demo.pki`: the self-signed issuing
CA, the delegated OCSP signer) and are signed by the key in the token (or a CA key in a PEM
file, through `load_signer`). The manifest (``pki.json``) is replaced atomically.

Every certificate a ceremony will write is checked first (free, and its directory writable)
before any key is made. A ceremony that fails after that takes back what it made, last first:
its certificates and the directories made for them are removed, and its keys destroyed in the
token (each logged ``key-destroyed``, reason ``undone: ...``); a rollover's keys are the
cluster's once the manifest names them.

``retire`` destroys a key named by its certificate; ``destroy`` one that has none (made
outside a ceremony, a second object of one key pair, one a failed ceremony left), named by
its SPKI fingerprint as the token inventory lists it (`crlbuilder.keys.destruction`), so the
token matches the log again without ``keys inventory``.

Exit codes: 0 done, 1 verify-log found the log broken, 2 refused or bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from crlbuilder import atomicfile
from crlbuilder import successor as succ
from crlbuilder.auditlog import Anchor, ChainError
from crlbuilder.demo.pki import (
    CA_LIFETIME,
    ca_builder,
    ca_subject,
    issuer_id,
    issuer_index,
    ocsp_signer_builder,
)
from crlbuilder.keys import (
    certsign,
    destruction,
    enrolments,
    inventory,
    logname,
    oplog,
    since,
)
from crlbuilder.keys import pkcs11 as p11
from crlbuilder.keys.approval import (
    Approval,
    ApprovalError,
    add_operator,
    check_approvals,
    check_enrolment,
    check_secret_unshared,
    fingerprint,
    fingerprints,
    hash_secret,
    load_log_name,
    load_operators,
    operators_locked,
    parse_approval,
    read_secret,
    valid_name,
)
from crlbuilder.keys.signer import (
    Signer,
    SignerError,
    load_certificate,
    load_signer,
)
from crlbuilder.manifest import (
    IssuerFiles,
    Manifest,
    ManifestError,
    dump_manifest,
    load_manifest,
)
from crlbuilder.model import Family

__all__ = ["COMMANDS", "CeremonyError", "run", "sign_certificate"]

PROG: Final = "crlbuilder keys"


class CeremonyError(Exception):
    """A ceremony cannot be done; the message says why (nothing was changed)."""


# --- certificates signed in the token ---------------------------------------------------


def sign_certificate(
    builder: x509.CertificateBuilder, signer: Signer, issuer: x509.Certificate | None = None
) -> x509.Certificate:
    """Sign ``builder``'s certificate with ``signer`` (`keys.certsign`) and check it against
    ``issuer`` (itself when None: self-signed)."""
    signed = certsign.sign_certificate(builder, signer.sign)
    try:
        signed.verify_directly_issued_by(issuer or signed)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise CeremonyError(f"the certificate does not verify with its issuer: {e}") from None
    return signed


def _self_signed(key_ref: str, builder: x509.CertificateBuilder) -> x509.Certificate:
    """A self-signed certificate of a key in the token (the builder carries its public key)."""
    uri = p11.parse_key_uri(key_ref)
    draft = certsign.draft_certificate(builder)
    return sign_certificate(
        builder, p11.Pkcs11Signer(uri, draft, uri.read_pin(), p11.module_path())
    )


def _check_out(path: Path) -> None:
    """Refuse an output certificate that exists or cannot be written, before any key is made:
    a key whose certificate cannot be written would stay in the token, named by nothing.

    Its nearest existing ancestor must be a directory where this process can create a file
    (probed with a temporary file, removed at once: permissions, read-only mounts)."""
    if path.exists() or path.is_symlink():
        raise CeremonyError(f"{path} exists; a ceremony never overwrites a certificate")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise CeremonyError(f"{path}: {parent} is not a directory")
    probe = atomicfile.tmp_path(parent / path.name)
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    except OSError as e:
        raise CeremonyError(f"{path}: cannot write in {parent} ({e.strerror})") from None
    probe.unlink()


def _write_cert(
    args: argparse.Namespace, path: Path, cert: x509.Certificate
) -> dict[str, str | int]:
    """Write the certificate whole (never over one), noting what it made for `_undo`."""
    missing = [d for d in (path.parent, *path.parent.parents) if not d.exists()]
    for d in reversed(missing):
        d.mkdir()
        _made(args).append(("dir", str(d)))
    try:
        atomicfile.write_new(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    except FileExistsError:
        raise CeremonyError(f"{path} exists; a ceremony never overwrites a certificate") from None
    _made(args).append(("file", str(path)))
    return _cert_detail(path, cert)


def _made(args: argparse.Namespace) -> list[tuple[str, str]]:
    """What this ceremony made so far (keys, files, directories), for `_undo` on a failure."""
    made: list[tuple[str, str]] | None = getattr(args, "made", None)
    if made is None:
        made = args.made = []
    return made


def _undo(args: argparse.Namespace, reason: str) -> None:
    """Remove what a ceremony that failed part-way made, last first: its certificates and
    directories, and its keys from the token (each destruction in the operation log)."""
    made = _made(args)
    while made:
        kind, what = made.pop()
        try:
            if kind == "key":
                p11.close_all()  # its signers' cached handles go with it
                p11.destroy_key(what)
                _record(args.log, "key-destroyed", key=what, credentials=args.approved_by,
                        ceremony=args.approved_ceremony,
                        detail={"ceremony": args.ceremony, "reason": f"undone: {reason}"})  # fmt: skip
            elif kind == "file":
                Path(what).unlink(missing_ok=True)
            else:
                Path(what).rmdir()
        except (CeremonyError, SignerError, OSError) as e:
            print(f"{PROG} {args.ceremony}: could not undo {kind} {oplog.key_name(what)}: {e}",
                  file=sys.stderr)  # fmt: skip


def _cert_detail(path: Path, cert: x509.Certificate) -> dict[str, str | int]:
    return {
        "cert": str(path),
        "serial": f"{cert.serial_number:x}",
        "subject": cert.subject.rfc4514_string(),
        "cert_sha256": hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
    }


# --- approvals --------------------------------------------------------------------------


def _describe(args: argparse.Namespace, fields: tuple[str, ...]) -> tuple[dict[str, str], str]:
    """The ceremony's canonical description (command and its arguments, key references
    without PIN sources) and its SHA-256: what the operators approve, recorded in each line."""
    desc = {"ceremony": args.ceremony} | {
        f: oplog.key_name(str(getattr(args, f))) for f in fields if getattr(args, f) is not None
    }
    return desc, hashlib.sha256(msgspec.json.encode(desc, order="sorted")).hexdigest()


Approvers = dict[str, str]
"""Who authorised a ceremony: each approver's name to their credential's `fingerprint`, as of
the operators file read for the check (recorded in each of its lines: `OpRecord.credentials`)."""


Rule = Callable[[argparse.Namespace, list[Approval], enrolments.Ledger], Approvers]
"""Who may authorise a ceremony, given its approvals and the operation log's account of the
operators (`_two_operators`, `_enrolment`)."""


def _two_operators(
    args: argparse.Namespace, approvals: list[Approval], seen: enrolments.Ledger
) -> Approvers:
    """A ceremony's rule: two distinct enrolled operators (`check_approvals`), each with the
    credential the operation log enrolled for them (`_accounted`)."""
    operators = load_operators(args.operators)
    return _accounted(seen, fingerprints(operators, check_approvals(operators, approvals)))


class _NotItsLog(ApprovalError):
    """The log given is not the operators file's (`keys.logname`): refused, and not written
    to (a mistyped --log is not a log to record a refusal in, nor to start)."""


def _log_path(args: argparse.Namespace) -> str:
    """The operation log's absolute path, as an operators file names it."""
    return str(args.log.resolve())


def _ledger(args: argparse.Namespace) -> enrolments.Ledger:
    """The operation log's account of the operators (`enrolments.ledger`), if the log is the
    one the operators hold: it extends ``--anchor``, the head written into the last ceremony
    record (not cut off, rewritten or replaced by another log), and records no ceremony after
    that head (`oplog.first_ceremony`: one the record does not hold, such as an enrolment
    written in by hand, would otherwise count), or, with ``--new-log``, it
    records no ceremony yet (none, or only signing sessions and refusals:
    `oplog.NO_CEREMONY_EVENTS`). ApprovalError otherwise, or if its chain does not hold
    (what it says cannot be relied on), or `_NotItsLog` if the operators file names another
    log (`keys.logname`: checked first)."""
    new_log = getattr(args, "new_log", False)
    wrong = logname.refusal(
        load_log_name(args.operators),
        _log_path(args),
        oplog.genesis(args.log),
        new_log=new_log,
        renames=args.ceremony == "add-operator",  # it names the path it is recorded at
    )
    if wrong is not None:
        raise _NotItsLog(wrong)
    try:
        records = oplog.read_oplog(args.log, None if new_log else args.anchor)
    except (ChainError, OSError) as e:
        raise ApprovalError(f"operation log {args.log}: {e}") from None
    args.records = records  # what the token inventory is compared with (`_check_tokens`)
    if new_log:
        done = oplog.first_ceremony(records)
        if done is not None:
            raise ApprovalError(
                f"operation log {args.log} records ceremonies (line {done.seq}: "
                f"{done.event}): --new-log starts a log only where none is recorded; give "
                "--anchor SEQ:SHA256, the head in the last ceremony record"
            )
    elif (later := oplog.first_ceremony(records, args.anchor.seq)) is not None:
        raise ApprovalError(
            f"operation log {args.log}: line {later.seq} ({later.event}) after the head given "
            f"(--anchor {args.anchor.seq}:...) records a ceremony the ceremony record does not "
            "hold (a later head, a ceremony interrupted, or a line written by hand): give the "
            "head the last ceremony printed; if the record lacks it, examine the lines after "
            "it (verify-log --operators) and write the head into the record first"
        )
    return enrolments.ledger(records)


def _accounted(
    seen: enrolments.Ledger, approvers: Approvers, replacing: str | None = None
) -> Approvers:
    """``approvers``, or ApprovalError when the operators file holds a credential for one of
    them that the log did not enrol (`enrolments.approval_refusal`): a hash written in by
    hand, copied from another operator or put back would otherwise let one person approve
    as two, seen only at the next verify-log --operators, after the key was made."""
    refusal = enrolments.approval_refusal(seen, approvers, replacing) if approvers else None
    if refusal is not None:
        raise ApprovalError(refusal)
    return approvers


def _approved(
    args: argparse.Namespace,
    desc_sha: str,
    key: str,
    rule: Rule = _two_operators,
    subject: dict[str, str | int] | None = None,
) -> Approvers:
    """Who authorised the ceremony under ``rule`` (default: two operators' approvals), on the
    operation log the operators hold (`_ledger`, read first), or CeremonyError after logging
    the refusal (with ``subject``: what it was about) in the log, if there is one (a refusal
    never creates the log: only ``--new-log`` does); kept in ``args.approved_by`` for the
    lines of a ceremony that fails part-way."""
    # only what has an approval's shape names someone in the log: the text of one that has
    # not (no NAME:, or a source neither file:/path nor env:VAR) may be a secret typed in
    # its place, a colon in it or not, and no part of it is written
    names = [n for n in map(_approver_name, args.approval or []) if n is not None]
    try:
        seen = _ledger(args)
        approvals: list[Approval] = [parse_approval(a) for a in args.approval or []]
        args.approved_by = rule(args, approvals, seen)
        args.tokens = _check_tokens(args)
        _hold_interrupts()
        args.approved_ceremony = desc_sha
        return dict(args.approved_by)
    except _NotItsLog as e:
        raise CeremonyError(f"refused, nothing done (not recorded in {args.log}): {e}") from None
    except ApprovalError as e:
        reason = str(e)
    if not args.log.exists():
        raise CeremonyError(f"refused, nothing done (no operation log to record it): {reason}")
    _record(
        args.log,
        "ceremony-refused",
        key=key,
        operators=names,
        ceremony=desc_sha,
        detail={"ceremony": args.ceremony, "reason": reason} | (subject or {}),
    )
    raise CeremonyError(f"refused, nothing done: {reason}")


def _approver_name(text: str) -> str | None:
    """The operator an ``--approval`` names, for the refusal's line: its NAME where the text
    is NAME:file:/path or NAME:env:VAR with a well-formed name, else None."""
    name, _, source = text.partition(":")
    kind, _, where = source.partition(":")
    shaped = kind in ("file", "env") and bool(where)
    return name if shaped and valid_name(name) else None


def _token_refs(args: argparse.Namespace) -> dict[str, str]:
    """The tokens a ceremony uses: each token's label to the first of its key references
    (``--key``, ``--ca-key``, ``--ocsp-key``; a PEM key file is no token's)."""
    tokens: dict[str, str] = {}
    for field in ("key", "ca_key", "ocsp_key"):
        ref = getattr(args, field, None)
        if isinstance(ref, str) and p11.is_pkcs11_uri(ref):
            try:
                tokens.setdefault(p11.parse_key_uri(ref).token, ref)
            except SignerError as e:
                raise ApprovalError(str(e)) from None
    return tokens


def _check_tokens(args: argparse.Namespace) -> dict[str, str]:
    """Before anything is done: each token the ceremony uses holds the keys the operation log
    says it holds (`keys.inventory`: its last inventory line, the keys made and destroyed
    since), or ApprovalError naming the keys that differ (made or destroyed outside a
    ceremony, say with the PIN alone). A token not inventoried yet in this log is noted in
    ``args.baseline``: its first inventory is recorded at the end. The tokens, for `_done`."""
    tokens = _token_refs(args)
    if not tokens and args.ceremony in ("inventory", "destroy"):  # else "done", nothing done
        raise ApprovalError(
            f"--key names no token: keys {args.ceremony} needs the pkcs11: URI of a key in "
            "the token (pkcs11:token=LABEL;object=KEY;type=private?pin-source=...)"
        )
    args.baseline, args.accepted, args.found, args.twice = set(), {}, {}, {}
    for label, ref in tokens.items():
        try:
            _, keys = p11.token_keys(ref)
        except SignerError as e:
            raise ApprovalError(f"the keys of token {label!r} cannot be listed: {e}") from None
        # what the log accounts for from here: the token as found (as the log says, a
        # baseline, or a difference two operators accept), then this ceremony's own lines
        args.found[label] = {k.fingerprint: k.label for k in keys}
        # a second object of one key pair there already: named at every check, not "made
        # while the ceremony ran" at its end
        args.twice[label] = inventory.compare(args.found[label], keys).unexpected
        want = inventory.expected(args.records, label)
        if args.ceremony == "destroy":
            args.target = _destroy_target(args, label, keys, want)
            args.keys_found = {label: keys}
        if want is None:
            args.baseline.add(label)
            continue
        if args.ceremony == "destroy":
            continue  # compared without the key it destroys (`_destroy_target`)
        diff = inventory.compare(want, keys)
        if diff and args.ceremony == "inventory":  # what two operators examine and accept
            args.accepted[label] = diff
        elif diff:
            raise ApprovalError(
                f"{diff.describe(label)}: made or destroyed outside a ceremony? nothing done; "
                "examine the token and the log (verify-log --token) with the security officer"
            )
    return tokens


def _destroy_target(
    args: argparse.Namespace, label: str, keys: list[p11.TokenKey], want: dict[str, str] | None
) -> p11.TokenKey:
    """keys destroy's check (`keys.destruction`): the one private key object its --spki (and
    --label / --id) names in the token, not a key a certificate of the log names, and a
    token that, without it, holds what the log says (less that key): the token the ceremony
    leaves matches the log. ApprovalError otherwise (refused, nothing done)."""
    target = destruction.choose(keys, args.spki, args.label, args.id)
    if isinstance(target, str):
        raise ApprovalError(f"token {label!r}: {target}")
    used = destruction.in_use(args.records, label, keys, target, args.manifest_keys)
    if used is not None:
        raise ApprovalError(f"token {label!r}: {used}")
    diff = destruction.left_differing(want, keys, target)
    if diff:
        raise ApprovalError(
            f"{diff.describe(label)}, besides the key to destroy: nothing done; examine the "
            "token and the log (verify-log --token) with the security officer, record the "
            "other differences (keys inventory), then destroy"
        )
    return target


def _record_inventories(args: argparse.Namespace) -> None:
    """At the end of a ceremony: each token's keys, one ``token-inventory`` line each (the
    next ceremony compares the token with it). The line records the keys the log accounts
    for: those found at the check plus the ones this ceremony's lines made, less those they
    destroyed (`inventory.fold`). A key made or destroyed in the token meanwhile by no line
    (with the PIN, while the ceremony ran) is recorded as a difference not accepted, and said
    on stderr: the next ceremony is refused until two operators record it (keys inventory).
    The first in the log for a token also says, on stderr and in the line, which of its keys
    no line of the log made and which the log's lines made that it lacks (to examine and note
    in the record). A token that cannot be listed now is said on stderr; the ceremony stays
    done (the next one compares the token with the keys made and destroyed since the last
    line)."""
    tokens: dict[str, str] = getattr(args, "tokens", {})
    if not tokens:
        return
    try:
        now = oplog.read_oplog(args.log)
    except (ChainError, OSError) as e:
        with contextlib.suppress(OSError):
            print(f"{PROG} {args.ceremony}: token inventory not recorded: {e}", file=sys.stderr)
        return
    ours = now[len(args.records) :]  # this ceremony's lines (and signing sessions)
    for label, ref in tokens.items():
        first = label in args.baseline
        try:
            _, keys = p11.token_keys(ref)
            held = inventory.fold(ours, label, args.found[label])
            changed = inventory.compare(held, keys).without(args.twice[label])
            detail = inventory.record_detail(
                label, keys, baseline=first, accepted=args.accepted.get(label),
                differs=(changed, held),
            )  # fmt: skip
            if first:
                detail |= _baseline_notes(args, now, label, held, args.twice[label])
            _record(
                args.log,
                inventory.INVENTORY_EVENT,
                key=f"pkcs11:token={label}",
                credentials=args.approved_by,
                ceremony=args.approved_ceremony,
                detail=detail,
            )
        except (SignerError, CeremonyError) as e:
            with contextlib.suppress(OSError):
                print(f"{PROG} {args.ceremony}: token inventory not recorded: {e}",
                      file=sys.stderr)  # fmt: skip
            continue
        if changed:
            with contextlib.suppress(OSError):
                print(
                    f"{PROG} {args.ceremony}: WARNING {changed.describe(label)}, changed while "
                    "the ceremony ran, by no line of the log: not taken into its inventory; the "
                    "next ceremony on it is refused until the security officer and two "
                    "operators examine it (verify-log --token, then keys inventory)",
                    file=sys.stderr,
                )


def _baseline_notes(
    args: argparse.Namespace,
    records: list[oplog.OpRecord],
    label: str,
    found: dict[str, str],
    twice: list[tuple[str, str]],
) -> dict[str, str | int]:
    """A token's first inventory in the log (the baseline: as found at the check, with the
    keys this ceremony made and less those it destroyed) against what the log's own
    ``key-generated`` / ``key-destroyed`` lines, this ceremony's included, leave in it: the keys no
    line made (``baseline_unaccounted:FP``: from ``pki init``, from before this version, or
    made outside a ceremony) and those the lines made that it lacks
    (``baseline_missing:FP``: destroyed outside a ceremony, or replaced by a key under the
    same label), into the line, and one WARNING line on stderr for the ceremony record, which
    also names any second object of one key pair (``twice``: refused at every check)."""
    made = inventory.made_by_the_log(records, label)
    unaccounted = sorted((fp, lb) for fp, lb in found.items() if fp not in made)
    missing = sorted((fp, lb) for fp, lb in made.items() if fp not in found)
    notes: dict[str, str | int] = {}
    for fp, lb in unaccounted:
        notes["baseline_unaccounted:" + fp] = lb
    for fp, lb in missing:
        notes["baseline_missing:" + fp] = lb
    if unaccounted or missing or twice:
        said = []
        if unaccounted:
            said.append(f"{len(unaccounted)} made by no line of it: "
                        + ", ".join(repr(lb) for _, lb in unaccounted))  # fmt: skip
        if missing:
            said.append(f"{len(missing)} made by a line of it and not there: "
                        + ", ".join(f"{lb!r} (spki {fp[:16]}...)" for fp, lb in missing))  # fmt: skip
        if twice:
            said.append(f"{len(twice)} second object(s) of a key pair it holds (refused at every "
                        "check until destroyed): " + ", ".join(repr(lb) for _, lb in twice))  # fmt: skip
        with contextlib.suppress(OSError):
            print(
                f"{PROG} {args.ceremony}: WARNING token {label!r}: first inventory in this "
                f"log, taken as found ({len(args.found[label])} private key(s)); "
                + "; ".join(said)
                + ": examine each with the security officer and note it in the ceremony "
                "record (the line records them)",
                file=sys.stderr,
            )
    return notes


_INTERRUPTS: Final = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


def _hold_interrupts() -> None:
    """From its approval to its end, a ceremony is not interrupted (Ctrl-C, SIGTERM, a closed
    terminal): one stopped half-way left a key in the token with no line in the log, nothing
    undone and no head printed. The signals wait (`_release_interrupts`); SIGKILL and a
    power cut cannot, and the docs say what to do then."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)


def _release_interrupts(args: argparse.Namespace) -> None:
    """Take the interrupts held during the ceremony (one line saying so), and let them through
    again."""
    held = signal.sigpending() & _INTERRUPTS
    for sig in held:
        signal.sigtimedwait([sig], 0)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _INTERRUPTS)
    if held:
        names = ", ".join(sorted(signal.Signals(s).name for s in held))
        with contextlib.suppress(OSError):  # a hangup: the terminal may be gone
            print(
                f"{PROG} {args.ceremony}: {names} held until the ceremony ended (a ceremony is "
                "not interrupted half-way)",
                file=sys.stderr,
            )


def _record(log: Path, event: str, **kw: Any) -> Anchor:
    """One line of the operation log; an approved line's ``operators`` are its
    ``credentials``' names (`Approvers`), unless given."""
    credentials = kw.get("credentials")
    if credentials is not None:
        kw.setdefault("operators", list(credentials))
    try:
        return oplog.record(log, event, **kw)
    except (ChainError, OSError) as e:
        raise CeremonyError(f"operation log {log}: {e}") from None


# --- the ceremonies ---------------------------------------------------------------------


def _generate(
    args: argparse.Namespace, key: str, ops: Approvers, desc_sha: str
) -> rsa.RSAPublicKey:
    public = p11.generate_rsa_key(key, args.bits)
    _made(args).append(("key", key))
    spki = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _record(
        args.log,
        "key-generated",
        key=key,
        credentials=ops,
        ceremony=desc_sha,
        detail={"bits": args.bits, "spki_sha256": hashlib.sha256(spki).hexdigest()},
    )
    return public


def _new_ca(
    args: argparse.Namespace,
    key: str,
    family: Family,
    generation: int,
    out: Path,
    ops: Approvers,
    desc_sha: str,
    now: datetime,
) -> x509.Certificate:
    _check_out(out)
    public = _generate(args, key, ops, desc_sha)
    builder = ca_builder(public, ca_subject(family, generation), now, now + CA_LIFETIME)
    cert = _self_signed(key, builder)
    _record(
        args.log,
        "certificate-issued",
        key=key,
        credentials=ops,
        ceremony=desc_sha,
        detail=_write_cert(args, out, cert) | {"issuer": "self"},
    )
    return cert


def _new_ocsp(
    args: argparse.Namespace,
    key: str,
    ca: Signer,
    ca_key: str,
    family: Family,
    generation: int,
    out: Path,
    ops: Approvers,
    desc_sha: str,
    now: datetime,
) -> x509.Certificate:
    _check_out(out)
    public = _generate(args, key, ops, desc_sha)
    builder = ocsp_signer_builder(ca.certificate, public, family, generation, now)
    cert = sign_certificate(builder, ca, ca.certificate)
    _record(
        args.log,
        "certificate-issued",
        key=key,
        credentials=ops,
        ceremony=desc_sha,
        detail=_write_cert(args, out, cert) | {"issuer_key": oplog.key_name(ca_key)},
    )
    return cert


def _family_generation(cert: x509.Certificate) -> tuple[Family, int]:
    """The family and generation a CA certificate names (``JPKI sign-card CA G2``)."""
    cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    parts = str(cn[0].value).split() if cn else []
    if len(parts) >= 4 and parts[0] == "JPKI" and parts[2] == "CA" and parts[3][1:].isdigit():
        try:
            return Family(parts[1]), int(parts[3][1:])
        except ValueError:
            pass
    raise CeremonyError("the CA certificate does not name a JPKI family and generation")


def cmd_new_ca(args: argparse.Namespace) -> int:
    desc, sha = _describe(args, ("key", "family", "generation", "out", "bits"))
    # a generation the manifest cannot hold (its store code: `issuer_index`) is a usage
    # error, before the approvals: its key would be made, and its certificate, for nothing
    try:
        issuer_index(Family(args.family), args.generation)
    except ValueError as e:
        raise CeremonyError(f"--generation {args.generation}: {e}") from None
    _check_out(args.out)
    ops = _approved(args, sha, args.key)
    now = datetime.now(UTC).replace(microsecond=0)
    _new_ca(args, args.key, Family(args.family), args.generation, args.out, ops, sha, now)
    return _done(args, desc)


def cmd_new_ocsp(args: argparse.Namespace) -> int:
    desc, sha = _describe(args, ("key", "ca_key", "ca_cert", "out", "bits"))
    _check_out(args.out)
    ops = _approved(args, sha, args.key)
    ca = load_signer(args.ca_key, args.ca_cert)
    family, generation = _family_generation(ca.certificate)
    now = datetime.now(UTC).replace(microsecond=0)
    _new_ocsp(args, args.key, ca, args.ca_key, family, generation, args.out, ops, sha, now)
    return _done(args, desc)


def cmd_rollover(args: argparse.Namespace) -> int:
    desc, sha = _describe(args, ("pki", "family", "ca_key", "ocsp_key", "bits"))
    # what the ceremony will add is settled before the approvals: a bad --pki, or a family
    # out of generation numbers, is a usage error (nothing to approve)
    manifest = load_manifest(args.pki)
    family = Family(args.family)
    generation = max((i.generation for i in manifest.issuers_of(family)), default=0) + 1
    iid = issuer_id(family, generation)
    try:
        index = issuer_index(family, generation)
    except ValueError as e:
        raise CeremonyError(f"{iid}: {e}") from None
    if any(i.id == iid or i.index == index for i in manifest.issuers):
        raise CeremonyError(f"{iid} (index {index}) is already in the manifest")
    files = IssuerFiles(
        id=iid,
        family=family,
        generation=generation,
        index=index,
        cert=f"ca/{iid}.pem",
        key=args.ca_key,
        ocsp_cert=f"ocsp/{iid}.pem",
        ocsp_key=args.ocsp_key,
        crl_url=f"{manifest.base_url}/crl/{iid}.crl",
        delta_crl_url=f"{manifest.base_url}/crl/{iid}-delta.crl",
        ocsp_url=f"{manifest.base_url}/ocsp",
        live=True,
    )
    # one key however spelt (attributes reordered, percent-encoded): its token and label
    ca_object = _token_object(args.ca_key)
    same = ca_object is not None and ca_object == _token_object(args.ocsp_key)
    if same or oplog.key_name(args.ca_key) == oplog.key_name(args.ocsp_key):
        raise CeremonyError("--ca-key and --ocsp-key name one key: a delegate has its own")
    for cert_path in (manifest.path(files.cert), manifest.path(files.ocsp_cert)):
        _check_out(cert_path)
    ops = _approved(args, sha, args.ca_key)
    # both labels free before either key is made: a rollover refused half-way would leave a
    # CA key and its certificate that no manifest names, and refuse the next attempt
    for ref in (args.ca_key, args.ocsp_key):
        p11.refuse_used_label(ref)
    now = datetime.now(UTC).replace(microsecond=0)
    ca_path, ocsp_path = manifest.path(files.cert), manifest.path(files.ocsp_cert)
    _new_ca(args, args.ca_key, family, generation, ca_path, ops, sha, now)
    ca = load_signer(args.ca_key, ca_path)
    _new_ocsp(args, args.ocsp_key, ca, args.ca_key, family, generation, ocsp_path, ops, sha, now)
    manifest.issuers.append(files)
    dump_manifest(manifest, manifest.directory)
    _made(args).clear()  # the manifest names them now: they are the cluster's, not undone
    load_manifest(manifest.directory)  # what the builder and the responder will read
    _record(
        args.log,
        "rollover",
        key=args.ca_key,
        credentials=ops,
        ceremony=sha,
        detail={"issuer": iid, "manifest": str(Path(manifest.directory) / "pki.json")},
    )
    return _done(args, desc)


def cmd_retire(args: argparse.Namespace) -> int:
    desc, sha = _describe(args, ("key", "cert", "pki", "no_pki"))
    cert = load_certificate(args.cert)  # the certificate is kept; it names what is retired
    if args.pki is not None:
        _refuse_manifest_key(args, cert)
    ops = _approved(args, sha, args.key)
    signer = load_signer(args.key, args.cert)  # the key is the certificate's, and there
    del signer
    p11.close_all()
    p11.destroy_key(args.key)
    _record(
        args.log,
        "key-destroyed",
        key=args.key,
        credentials=ops,
        ceremony=sha,
        detail=_cert_detail(args.cert, cert),
    )
    return _done(args, desc)


def _manifest_pairs(manifest: Manifest) -> list[tuple[str, str, str]]:
    """Every key the manifest signs with: (what signs with it, its reference, its certificate)
    (each issuer's CA and OCSP signer key, the answer key, the group relay's responder key,
    the client CA's and the TLS server's key)."""
    pairs = [(i.id, i.key, i.cert) for i in manifest.all_issuers()]
    pairs += [(f"{i.id}'s OCSP signer", i.ocsp_key, i.ocsp_cert) for i in manifest.all_issuers()]
    if manifest.answer_key:
        pairs.append(("the answer signer", manifest.answer_key, manifest.answer_cert))
    # the group relay's responder key may be a PKCS#11 URI too (`crlbuilder.manifest`), and
    # nothing keeps the other key fields from being one
    pairs += [
        ("the group relay", manifest.group_responder_key, manifest.group_responder_cert),
        ("the client CA", manifest.client_ca_key, manifest.client_ca),
        ("the TLS server", manifest.server_key, manifest.server_cert),
    ]
    return pairs


def _spki_sha256(cert: x509.Certificate) -> str:
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def _token_object(ref: str) -> tuple[str, str] | None:
    """A pkcs11: reference's (token, object label) as parsed (None: no URI, or none that
    parses): two spellings of one URI (attributes reordered, percent-encoded, type=private
    given or not) name one key."""
    if not p11.is_pkcs11_uri(ref):
        return None
    try:
        uri = p11.parse_key_uri(ref)
    except SignerError:
        return None
    return uri.token, uri.label


def _refuse_manifest_key(args: argparse.Namespace, cert: x509.Certificate) -> None:
    """keys retire --pki: CeremonyError (a usage error, before the approvals) when the
    manifest still signs with the key: one of its keys is the one --key names (token and
    label as parsed, however the URI is spelt), or one of its certificates has --cert's public
    key (the key, whatever the manifest calls it). A certificate the manifest names that
    cannot be read refuses too: nothing is destroyed that cannot be checked."""
    manifest = load_manifest(args.pki)
    target, spki = _token_object(args.key), _spki_sha256(cert)
    for who, ref, cert_rel in _manifest_pairs(manifest):
        same = target is not None and _token_object(ref) == target
        if not same and cert_rel:
            same = _spki_sha256(load_certificate(manifest.path(cert_rel))) == spki
        if same:
            raise CeremonyError(
                f"{who} in the manifest still signs with this key: take it out first"
            )


def _manifest_keys(args: argparse.Namespace) -> dict[str, str]:
    """keys destroy --pki: the keys of --key's token the manifest signs with (each issuer's CA
    and OCSP signer key, the answer key, the group relay's responder key, the client CA's
    and the TLS server's key), label to the SHA-256 of its certificate's public key
    (SubjectPublicKeyInfo): read before the approvals; a manifest or certificate that cannot
    be read is a usage error (CeremonyError, nothing to approve)."""
    manifest = load_manifest(args.pki)
    try:
        token = p11.parse_key_uri(args.key).token if p11.is_pkcs11_uri(args.key) else None
    except SignerError:
        return {}  # refused with the approvals (`_token_refs`), logged there
    named: dict[str, str] = {}
    for _, ref, cert in _manifest_pairs(manifest):
        if not p11.is_pkcs11_uri(ref):
            continue
        try:
            uri = p11.parse_key_uri(ref)
        except SignerError as e:
            raise CeremonyError(f"{args.pki}: {e}") from None
        if uri.token != token:
            continue
        named[uri.label] = _spki_sha256(load_certificate(manifest.path(cert)))
    return named


def cmd_destroy(args: argparse.Namespace) -> int:
    """Destroy a private key that has no certificate, named by what the token inventory
    shows (`keys.destruction`: its SPKI fingerprint, and its label or id where one key pair
    is stored twice), and its public key: a key made outside a ceremony, a second object of
    one key pair, a key a failed ceremony could not take back. One ``key-destroyed`` line
    (fingerprint, label, id, nothing secret); the token then matches the log, so the next
    ceremony on it goes on with no ``keys inventory``."""
    desc, sha = _describe(args, ("key", "spki", "label", "id", "pki", "no_pki"))
    args.manifest_keys = _manifest_keys(args) if args.pki is not None else None
    # a --key that is no pkcs11: URI is refused (it names no token) and not written into the
    # log: it may be the PIN itself, typed in place of the URI
    _approved(args, sha, args.key if p11.is_pkcs11_uri(args.key) else "")
    target: p11.TokenKey = args.target
    [token] = args.tokens
    p11.close_all()  # this process's signers' cached handles go with it
    left, publics = p11.destroy_token_key(args.key, target)
    # the token as found, less the key: what its (baseline) inventory at the end starts from
    rest = destruction.remaining(args.keys_found[token], target)
    args.found[token] = {k.fingerprint: k.label for k in rest}
    args.twice[token] = inventory.compare(args.found[token], rest).unexpected
    _record(
        args.log,
        "key-destroyed",
        key=f"pkcs11:token={quote(token, safe='')};object={quote(target.label, safe='')};"
        "type=private",
        credentials=args.approved_by,
        ceremony=sha,
        detail={
            "spki_sha256": target.fingerprint,
            "label": target.label,
            "id": target.id_hex,
            "objects_left": left,
            "public_keys_destroyed": publics,
            "reason": "no certificate: named by its fingerprint (keys destroy)",
        },
    )
    with contextlib.suppress(OSError):
        print(
            f"token {token!r}: private key {target.label!r} (spki {target.fingerprint}, id "
            f"{target.id_hex or '-'}) destroyed, {publics} public key object(s) with it"
            + (f"; {left} other object(s) of the key pair stay" if left else "")
        )
    return _done(args, desc)


def cmd_successor(args: argparse.Namespace) -> int:
    """The successor certificate of a generation (`crlbuilder.successor`): signed by
    the successor generation's CA key, written beside the CA certificates, named in the
    manifest. No key is made; the certificate is taken back if the manifest is not written."""
    desc, sha = _describe(args, ("pki", "issuer", "successor"))
    manifest = load_manifest(args.pki)
    try:
        plan = succ.plan(manifest, args.issuer, args.successor)
    except succ.SuccessorPlanError as e:
        raise CeremonyError(str(e)) from None
    out = manifest.path(plan.cert)
    _check_out(out)
    args.ca_key = manifest.key_ref(plan.successor.key)  # what a ceremony-failed line names
    ops = _approved(args, sha, args.ca_key)
    try:
        cert = succ.issue(manifest, plan)
    except succ.SuccessorPlanError as e:
        raise CeremonyError(str(e)) from None
    _record(
        args.log,
        "certificate-issued",
        key=manifest.key_ref(plan.successor.key),
        credentials=ops,
        ceremony=sha,
        detail=_write_cert(args, out, cert)
        | {"issuer_key": oplog.key_name(manifest.key_ref(plan.successor.key))},
    )
    dump_manifest(succ.named(manifest, plan), manifest.directory)
    _made(args).clear()  # the manifest names it now: relying parties are told to install it
    load_manifest(manifest.directory)  # what the builder and the responder will read
    _record(
        args.log,
        "successor-named",
        key=manifest.key_ref(plan.successor.key),
        credentials=ops,
        ceremony=sha,
        detail={
            "issuer": plan.issuer.id,
            "successor": plan.successor.id,
            "successor_cert": plan.cert,
            "manifest": str(Path(manifest.directory) / "pki.json"),
        },
    )
    return _done(args, desc)


def cmd_inventory(args: argparse.Namespace) -> int:
    """Record the token's keys as two operators found them (`keys.inventory`): the way on
    after a ceremony was refused because the token holds a key no ceremony made, or lacks
    one, once the security officer examined it (the differences go into the line), and an
    explicit first inventory of a token. Nothing in the token changes."""
    desc, sha = _describe(args, ("key",))
    # a --key that is no pkcs11: URI is refused (it names no token) and not written into the
    # log: it may be the PIN itself, typed in place of the URI
    _approved(args, sha, args.key if p11.is_pkcs11_uri(args.key) else "")
    for label, diff in args.accepted.items():
        with contextlib.suppress(OSError):
            print(f"{diff.describe(label)}: accepted as examined, recorded in the log")
    return _done(args, desc)


def _done(args: argparse.Namespace, desc: dict[str, str]) -> int:
    """The ceremony is done and logged: print the head. Output that cannot be written (the
    terminal closed, a closed pipe) changes nothing: the ceremony is not undone nor logged as
    failed, and `verify-log` shows the head."""
    _made(args).clear()
    oplog.end_all()
    _record_inventories(args)
    report = oplog.verify_oplog(args.log)
    with contextlib.suppress(OSError):
        print(f"{desc['ceremony']}: done; operation log {args.log} head {report.anchor}")
        print(
            "write the head above into the ceremony record: the next ceremony is given it "
            "(--anchor SEQ:SHA256)",
            flush=True,
        )
    return 0


def _enrolment(
    args: argparse.Namespace, approvals: list[Approval], seen: enrolments.Ledger
) -> Approvers:
    """add-operator's rule (`check_enrolment`): the current secret for --replace, two other
    operators' approvals for --reset and for a third operator and after (each credential the
    one the log enrolled: `_accounted`), none for the first two, unless the operation log
    says operators were enrolled before (`enrolments.bootstrap_refusal`: the file was
    emptied or edited)."""
    operators = load_operators(args.operators) if args.operators.exists() else {}
    current = read_secret(args.current_secret) if args.current_secret is not None else None
    names = check_enrolment(
        operators,
        args.name,
        approvals,
        replace=args.replace,
        current_secret=current,
        reset=args.reset,
    )
    # the secret to store, read once (`cmd_add_operator`): not another operator's
    check_secret_unshared(operators, args.name, args.new_secret)
    if names:  # approvals, or the current secret: the credentials the log enrolled
        replacing = args.name if args.replace else None
        return _accounted(seen, fingerprints(operators, names), replacing)
    # the bootstrap: the log is the memory the operators file lacks
    refusal = enrolments.bootstrap_refusal(seen, operators)
    if refusal is not None:
        raise ApprovalError(refusal)
    return {}


_CHANGES: Final = {  # add-operator's flag -> its event, who authorised it, what it did
    "replace": ("operator-secret-replaced", "current-secret", "secret replaced"),
    "reset": ("operator-secret-reset", "approvals", "secret reset (forgotten)"),
}


def cmd_add_operator(args: argparse.Namespace) -> int:
    """Enrol an operator, or replace their secret (--replace, with the current one) or reset
    it (--reset, forgotten: two other operators approve) (識別符号, Ord §74(2)), as
    `check_enrolment` allows, and record it in the operation log *before* the operators file
    changes: an operator is never in the file without their line (if the log cannot be
    written, nothing changes; if the file then cannot be written, a ``ceremony-failed`` line
    follows). The line names who authorised it, their credentials' fingerprints and the
    SHA-256 of the stored salted hash (to compare with the operators file: verify-log
    --operators), never the secret; a refusal is ``ceremony-refused``. The file then names
    the log (`keys.logname`): an older file is upgraded by its next add-operator."""
    desc, sha = _describe(args, ("operators", "name", "replace", "reset"))
    args.key = str(args.operators)  # what a ceremony-refused or -failed line names
    secret = read_secret(args.secret)  # a bad source is a usage error: nothing to approve
    args.new_secret = secret  # what `_enrolment` holds against the other operators' hashes
    ops = _approved(args, sha, args.key, _enrolment, {"operator": args.name})
    stored = hash_secret(secret)
    change = "replace" if args.replace else "reset" if args.reset else None
    if change is not None:
        event, authority, done = _CHANGES[change]
    else:
        event, authority = "operator-enrolled", "approvals" if ops else "bootstrap"
        done = f"enrolled ({authority})"
    _record(
        args.log,
        event,
        key=args.key,
        credentials=ops,
        ceremony=sha,
        detail={
            "operator": args.name,
            "authorised_by": authority,
            "credential_sha256": fingerprint(stored),
        },
    )
    genesis = oplog.genesis(args.log)  # the line above is there: the log has a first line
    named = None if genesis is None else logname.LogName(_log_path(args), genesis)
    add_operator(args.operators, args.name, stored, replace=change is not None, log=named)
    with contextlib.suppress(OSError):  # written and logged: output lost changes nothing
        print(f"{args.operators}: operator {args.name} {done} (salted scrypt hash only)")
    return _done(args, desc)


def cmd_verify_log(args: argparse.Namespace) -> int:
    """The chain (and its head against --anchor, then every line after it: `keys.since`, for
    the review); with --operators, the operators file against the log (`enrolments.review`):
    exit 1 for a broken chain or any problem. With --json, one JSON document on stdout."""
    report = oplog.verify_oplog(args.log, args.anchor)
    out: dict[str, Any] = {
        "log": str(args.log),
        "records": report.records,
        "head": str(report.anchor),
        "intact": not report.problems,
        "problems": list(report.problems),
    }
    text = [f"{args.log}: {report.records} records, chain "
            f"{'BROKEN' if report.problems else 'intact'}, head {report.anchor}"]  # fmt: skip
    text += [f"  {p}" for p in report.problems]
    failed = bool(report.problems)
    if args.anchor is not None and not report.problems:
        found = since.since(oplog.read_oplog(args.log), args.anchor.seq)
        out["anchor"] = str(args.anchor)
        out["since"] = since.as_json(found)
        text += since.as_text(found)
    if args.operators is not None:
        failed = _review_operators(args, report.problems, out, text) or failed
    if args.token:
        failed = _review_tokens(args, report.problems, out, text) or failed
    if args.json:
        print(msgspec.json.encode(out).decode())
    else:
        print("\n".join(text))
    return 1 if failed else 0


def _review_tokens(
    args: argparse.Namespace, broken: list[str], out: dict[str, Any], text: list[str]
) -> bool:
    """verify-log --token: each token's private keys against what the log says it holds
    (`keys.inventory`), into ``out`` and ``text``; True for a difference, a token that
    cannot be listed, or a log whose chain does not hold (not compared)."""
    found: list[dict[str, Any]] = []
    out["tokens"] = found
    if broken:
        text.append("tokens: not compared (the log's chain does not hold)")
        return True
    records = oplog.read_oplog(args.log)
    failed = False
    for n, ref in enumerate(args.token, 1):
        if not p11.is_pkcs11_uri(ref):  # not shown: it may be the PIN, typed in its place
            why = f"--token number {n} is not a pkcs11: URI (not shown)"
            text.append(f"  PROBLEM token: {why}")
            found.append({"ref": "(not shown)", "problem": why})
            failed = True
            continue
        try:
            label, keys = p11.token_keys(ref)
        except SignerError as e:
            text.append(f"  PROBLEM token: cannot list its keys: {e}")
            found.append({"ref": oplog.key_name(ref), "problem": str(e)})
            failed = True
            continue
        want = inventory.expected(records, label)
        entry: dict[str, Any] = {
            "token": label,
            "keys": [
                {"label": k.label, "id": k.id_hex, "spki_sha256": k.fingerprint} for k in keys
            ],
        }
        found.append(entry)
        if want is None:
            entry["compared"] = False
            text.append(
                f"token {label!r}: {len(keys)} private key(s); not checked: no line of the log "
                "inventories it yet (its first ceremony takes them as found: examine each)"
            )
            text += [f"  {k.label!r} spki {k.fingerprint} id {k.id_hex or '-'}" for k in keys]
            continue
        diff = inventory.compare(want, keys)
        entry |= {
            "compared": True,
            "unexpected": [{"spki_sha256": fp, "label": lb} for fp, lb in diff.unexpected],
            "missing": [{"spki_sha256": fp, "label": lb} for fp, lb in diff.missing],
        }
        if diff:
            text.append(f"  PROBLEM {diff.describe(label)}")
            # each in full: what keys destroy --spki is given (its label and id: --label, --id)
            ids = {(k.fingerprint, k.label): k.id_hex for k in keys}
            text += [f"    unexpected {lb!r} spki {fp} id {ids.get((fp, lb)) or '-'}"
                     for fp, lb in diff.unexpected]  # fmt: skip
            text += [f"    missing {lb!r} spki {fp}" for fp, lb in diff.missing]
            failed = True
        else:
            text.append(f"token {label!r}: {len(keys)} private key(s), as the log records")
    return failed


def _review_operators(
    args: argparse.Namespace, broken: list[str], out: dict[str, Any], text: list[str]
) -> bool:
    """verify-log --operators: the file against the log, into ``out`` and ``text``; True for a
    problem (or a log whose chain does not hold: not compared)."""
    if broken:
        text.append(f"{args.operators}: not compared (the log's chain does not hold)")
        out["operators"] = {"compared": False}
        return True
    exists = args.operators.exists()  # none at all: every operator the log enrols is missing
    operators = load_operators(args.operators) if exists else {}
    found = enrolments.review(enrolments.ledger(oplog.read_oplog(args.log)), operators)
    problems, notes = list(found.problems), list(found.notes)
    named = load_log_name(args.operators)
    wrong = logname.refusal(  # a review of a copy (a backup) forks nothing
        named, _log_path(args), oplog.genesis(args.log), new_log=False, renames=True
    )
    if wrong is not None:
        problems.insert(0, wrong)
    elif named is None and exists:
        notes.append(
            "the operators file names no operation log (written by an earlier version): the "
            "next add-operator names this one"
        )
    if not exists:
        text.append(f"{args.operators}: no such file (compared as an empty operators file)")
    verdict = f"{len(problems)} problem(s)" if problems else "accounted for by the log"
    text.append(f"{args.operators}: operators and approvals {verdict}")
    text += [f"  PROBLEM {p}" for p in problems]
    text += [f"  not checked: {n}" for n in notes]
    out["operators"] = {
        "compared": True,
        "file": str(args.operators),
        "problems": problems,
        "not_checked": notes,
    }
    return bool(problems)


# --- running a ceremony (its flags: `crlbuilder.ceremonycli`) ---------------------------


def _operators_file(args: argparse.Namespace) -> Path:
    """What every ceremony locks (`_guarded`): its operators file."""
    path: Path = args.operators
    return path


def _guarded(
    func: Callable[[argparse.Namespace], int],
    exclusive: Callable[[argparse.Namespace], Path] | None = None,
) -> Callable[[argparse.Namespace], int]:
    """Run a ceremony: its log is where its signing sessions go; every refusal exits 2. With
    ``exclusive`` (every ceremony: its operators file), the whole of it, checks, writes and a
    failure's lines, under that file's lock (`operators_locked`): two enrolments cannot both
    pass a check the other's write would fail, and a second ceremony started meanwhile waits,
    then finds the first one's lines after the head it was given (`_ledger`: refused)."""

    def run(args: argparse.Namespace) -> int:
        if getattr(args, "log", None) is not None:
            oplog.configure(args.log)
        with contextlib.ExitStack() as held:
            try:
                if exclusive is not None:
                    held.enter_context(operators_locked(exclusive(args)))
                return func(args)
            except (CeremonyError, ApprovalError, SignerError, ManifestError, OSError) as e:
                return _failed(args, e)
            finally:
                oplog.end_all()
                _release_interrupts(args)

    return run


def _failed(args: argparse.Namespace, e: Exception) -> int:
    """A refusal or a failure: one line on stderr; an approved ceremony that failed part-way
    undoes what it made and logs ``ceremony-failed``; exit 2."""
    print(f"{PROG} {args.ceremony}: error: {e}", file=sys.stderr)
    # approved (a bootstrap enrolment by no one), then failed part-way
    if getattr(args, "approved_ceremony", None) is not None:
        _undo(args, str(e))
        with contextlib.suppress(CeremonyError):
            key = getattr(args, "key", None) or getattr(args, "ca_key", "")
            _record(args.log, "ceremony-failed", key=key,
                    credentials=args.approved_by,
                    ceremony=args.approved_ceremony,
                    detail={"ceremony": args.ceremony, "reason": str(e)})  # fmt: skip
            oplog.end_all()  # its signing sessions' lines before the head it prints
            head = oplog.verify_oplog(args.log).anchor
            print(
                f"{PROG} {args.ceremony}: failed; operation log {args.log} head {head}: write it "
                "into the ceremony record (the next ceremony is given it)",
                file=sys.stderr,
            )
    return 2


COMMANDS: Final[dict[str, Callable[[argparse.Namespace], int]]] = {
    "add-operator": _guarded(cmd_add_operator, _operators_file),
    "new-ca": _guarded(cmd_new_ca, _operators_file),
    "new-ocsp": _guarded(cmd_new_ocsp, _operators_file),
    "rollover": _guarded(cmd_rollover, _operators_file),
    "retire": _guarded(cmd_retire, _operators_file),
    "successor": _guarded(cmd_successor, _operators_file),
    "inventory": _guarded(cmd_inventory, _operators_file),
    "destroy": _guarded(cmd_destroy, _operators_file),
    "verify-log": _guarded(cmd_verify_log),
}
"""Each action of ``crlbuilder keys`` (its flags: `crlbuilder.ceremonycli`) and the function
that does it, guarded (`_guarded`)."""


def run(args: argparse.Namespace) -> int:
    """Run the ceremony ``args.ceremony`` names: its exit code."""
    return COMMANDS[args.ceremony](args)
