"""`responder registry ...`: the admin commands over the registry file, and their audit log.

    responder registry init --pki DIR --out FILE [--force [--discard-parties N]]  demo parties
    responder registry add --registry FILE --id ID ...       register a party (届出 + 取決め)
    responder registry update --registry FILE --id ID ...    change it, rotate credentials
    responder registry suspend|resume|end --registry FILE --id ID ...
    responder registry show|list|check|export --registry FILE
    responder registry import --registry FILE --from OTHER [--replace]
    responder registry verify-audit --registry FILE
    responder registry audit-hash --registry FILE < VALUE      an auditor's check of a name
    responder registry migrate --registry FILE --details DETAILS [--drop ID ...]

Every change is made under an exclusive lock (``FILE.lock``), checked in full
by `Registry.build` before anything is written (a refused change leaves the
file as it was), appended to the audit log, then written atomically (temporary
file, fsync, rename; mode 0600). Comments in the file are not kept: the file
is rewritten in its normalized form.

A delegation of the whole verification work to a certified contractor (Ord §29, §60,
`responder.registry.delegation`) is set with ``add|update --delegated-to ID`` (on both
verifier titles, their own ``certified_until`` removed) and ``--filed-by ID`` (the contractor
filed the notification, Ord §29(3), §60(1)), and ended with ``update --no-delegation``; a
principal added with it gets no agreement of its own unless an agreement flag asks for one
(it is served under its contractor's), an agreement made for it defaults to the side its
contractor's does not cover (the rest is deemed by law, Ord §29(4), §60(2)), and ``update
--drop-agreement`` removes one. `show` and `list` name the contractor; like every change, it
is checked, audited and, with ``--nats``, put in the shared registry. `end` of a contractor
is refused while a principal naming it would outlive it (end or move the principal first, or
``end --with-principals``: the contractor and those principals in one change).

A party's state changes through its own command only: its suspensions (提供の停止) through
`suspend` and `resume` (which cancels only a suspension not begun), its end of provision
through `end` (an end still to come may be set again; in effect, it is final). `update
--from FILE` keeps both (the file is a form of the notification and agreement); an `update`
or `import --replace` whose entry states other suspensions or another end is refused, so
an older export cannot put a suspended or ended party back in service.

No command dates a party's state in the past: a suspension's start, a resumption, an end of
provision or a credential's window set or moved to more than `pastinstants.ALLOWANCE` (60 s)
before now is refused, since the ledger (帳簿, Act §40) counted what the party received then;
``--correction REASON`` (update, suspend, resume, end, import) takes it as a correction of a
wrong record, and the audit log keeps the reason with the change.

The audit log (``FILE`` with suffix ``.audit.jsonl`` unless ``--audit``) has
one JSON object per change and party: ``seq``, ``at`` (UTC), ``actor``
(``--actor``, default the OS user), ``action``, ``party``, ``before``,
``after``, ``registry_sha256`` (the registry file this change wrote) and
``prev``, the SHA-256 of the previous line (64 zeros first): rewriting or
removing a line breaks the chain, and a registry edited outside these
commands no longer matches the last record; `verify-audit` checks both. The
file is opened O_WRONLY|O_APPEND and never rewritten. The audit keeps no
personal data: the name, address, representative and office appear as
``hmac-sha256:<hex>``, keyed with the audit key (``FILE`` with suffix ``.audit.secret`` unless
``--audit-key``; 0600, drawn when absent, refused when group or others may read it; each line's
``key_id`` names it), enough to tell that they changed, or, for whoever holds the key, to
check a claimed value (`audit-hash`); lines written before the key hold ``sha256:<hex>`` and
stay so (`responder.registry.auditkey`).

Migration of the old flat format (``titles = [...]``, refused when loaded,
see `responder.registry`): `migrate` rewrites every old entry in the current
format, audited like any change (action ``migrate``). It keeps what the old
entry holds (id, name, titles, credentials) and invents nothing it lacks: the
notification (届出), the title details (category, certification) and the
agreement (取決め) come from ``--details``, a TOML file of ``[[party]]`` tables
with those fields (``name`` and further ``credential`` tables optional), one
per old entry; a 署名確認者 (member of a group) needs none (its group notifies and
agrees for it). A party without details is refused (the command lists what is
missing) unless ``--drop ID`` leaves it out of the registry: no party is served
without a notification and an agreement. The titles given must be the old
entry's titles (change them afterwards with `update`).

A file read by ``add|update|import --from FILE`` names certificates relative to FILE's
directory; ``export --out FILE`` writes them relative to FILE's (absolute when not below
it). ``init --force`` over a registry holding parties the demo PKI has not is refused unless
``--discard-parties N`` counts them.

Workers see a change within a second through `Registry.reload_if_changed`
(one stat per second), or at once on SIGHUP.

Exit codes: 0 done, 1 verify-audit found a broken chain or a changed registry,
2 bad usage, an invalid registry, or a refused change.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import secrets
import stat
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec

from crlbuilder import atomicfile
from crlbuilder.model import Family
from crlbuilder.options import run_command
from crlbuilder.rules import JST
from responder.registry.audit import (
    AuditError,
    append_audit,
    audit_path_for,
    check_appendable,
    redacted,
    verify_audit,
)
from responder.registry.auditkey import AuditKey, AuditKeyError, key_path_for, load_key
from responder.registry.cliargs import add_cli as _add_cli
from responder.registry.delegation import SIDE, contractor_of
from responder.registry.lookup import (
    Registry,
)
from responder.registry.party import (
    CredentialInfo,
    Party,
    PartyState,
)
from responder.registry.pastinstants import ALLOWANCE, past_instants
from responder.registry.schema import (
    AnyEntry,
    LegacyPartyEntry,
    MtlsCredential,
    PartyEntry,
    RegistryError,
    RegistryFile,
    SignedRequestCredential,
    dump_registry,
    entry_to_builtins,
    parse_registry,
)
from responder.registry.vocabulary import (
    SERVICE_FAMILIES,
    SERVICE_METHODS,
    AuthMethod,
    Method,
    Service,
    Title,
    title_services,
)

if TYPE_CHECKING:  # imported when a command uses NATS (--nats, sync): not for the others
    from responder.registry.shared import SharedRegistry

_T = TypeVar("_T")

HEADER: Final = (
    "Registry of parties (jpki-va). Change it with `responder registry ...`:\n"
    "every change is checked, audited and written atomically; comments are not kept."
)


class CommandError(Exception):
    """A refused command; the message says why."""


clock: Callable[[], float] = time.time
"""The time the commands take as now (seconds since the epoch); tests set their own."""


# --- writing the registry -----------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive lock for read-modify-write of ``path`` (a ``.lock`` file beside it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


KEPT_MODE: Final = 0o640
"""The most of a replaced registry file's mode a write keeps: its owner's read and write, its
group's read (the service account's group reads the file root writes: docs/operations.md,
"Layout"), nothing for others."""


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, durably (`atomicfile.write_whole`), keeping the replaced
    file's owner, group and mode (at most `KEPT_MODE`); a new file is 0600. A change made as
    root to a file the responder reads through its group (root:jpki-va 0640) left it root's
    0600: unreadable to the service, the change never in force, and the next start refused.
    The temporary of an earlier write that crashed is swept first."""
    atomicfile.sweep_own(path, now=time.time())
    mode, owner = 0o600, None
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode):
            mode, owner = stat.S_IMODE(st.st_mode) & KEPT_MODE | 0o600, (st.st_uid, st.st_gid)
    atomicfile.write_whole(path, data, mode, sync_dir=True, owner=owner)


@dataclass
class Outcome:
    """What a committed change did: the new registry and the parties it touched."""

    registry: Registry
    changed: list[str]


def change(
    path: Path,
    mutate: Callable[[RegistryFile], RegistryFile],
    *,
    action: str,
    actor: str,
    audit: Path | None = None,
    now: float | None = None,
    must_exist: bool = True,
    check_current: bool = True,
    shared: SharedRegistry | None = None,
    key_file: Path | None = None,
    correction: str | None = None,
) -> Outcome:
    """Apply ``mutate`` to the registry at ``path``: check, audit, write. Raises CommandError
    (nothing written) when the current file or the result does not pass `Registry.build`.

    With ``shared`` (several nodes, `responder.registry.shared`): the bucket's newest registry
    is first taken into ``path`` (audited as ``replicate``), and the result goes to the bucket,
    compare-and-set on that revision, before it is audited and written here; a bucket that
    moved meanwhile refuses the change, nothing written anywhere.

    The audit log's personal fields are hashed with the key in ``key_file`` (default: beside
    the registry, `key_path_for`), drawn when absent. An instant the change sets more than
    `ALLOWANCE` seconds in the past (`responder.registry.pastinstants`) is refused unless
    ``correction`` gives the reason, which the audit log keeps; a ``correction`` for a change
    that sets none is refused too."""
    try:
        return _change(path, mutate, action=action, actor=actor, audit=audit, now=now,
                       must_exist=must_exist, check_current=check_current, shared=shared,
                       key_file=key_file, correction=correction)  # fmt: skip
    except OSError as e:  # the lock file or the directory cannot be made: nothing written
        raise CommandError(f"refused, {path} unchanged: {_os_error(e)}") from None
    finally:
        if shared is not None:
            shared.close()


def _change(
    path: Path,
    mutate: Callable[[RegistryFile], RegistryFile],
    *,
    action: str,
    actor: str,
    audit: Path | None,
    now: float | None,
    must_exist: bool,
    check_current: bool,
    shared: SharedRegistry | None,
    key_file: Path | None,
    correction: str | None,
) -> Outcome:
    t = clock() if now is None else now
    audit = audit or audit_path_for(path)
    with _locked(path):
        key = _audit_key(path, key_file)
        revision = 0
        if shared is not None:
            newest = _shared_call(shared.get)
            if newest is not None:
                revision = newest.revision
                replicate(path, newest.data, audit=audit, origin=f"{shared.bucket}#{revision}",
                          key=key)  # fmt: skip
        current, before_reg = _read(path, t, must_exist=must_exist, check=check_current)
        after = mutate(_copy(current))
        if action != "init":  # `registry init --force` replaces the (demo) registry whole
            _check_state_kept(current, after, action, path, t)
            _check_past(current, after, path, t, correction)
        text = dump_registry(after, header=HEADER)
        try:
            after_reg = Registry.build(
                parse_registry(text, source=str(path)), base=path.parent, source=str(path), now=t
            )
        except RegistryError as e:
            raise CommandError(f"refused, {path} unchanged:\n{e}") from None
        records = _diff(current, after, key)
        if not records:
            return Outcome(after_reg, [])
        checked_at = clock() if now is None else now  # after mutate's "now"
        _check_credentials(before_reg, after_reg, [r["party"] for r in records], checked_at)
        data = text.encode()
        if shared is not None:
            # the audit log first: refused after the bucket took it, the change would be on
            # every other node while this one said "unchanged" and no log recorded it
            try:
                check_appendable(audit)
            except (AuditError, OSError) as e:
                raise CommandError(f"refused, {path} unchanged: audit log: {e}") from None
            _shared_call(lambda: shared.put(data, revision))
        try:
            append_audit(
                audit,
                records,
                registry_sha256=hashlib.sha256(data).hexdigest(),
                actor=actor,
                action=action,
                key=key,
                correction=correction,
            )
        except (AuditError, OSError) as e:
            raise CommandError(f"refused, {path} unchanged: audit log: {e}") from None
        try:
            write_atomic(path, data)
        except OSError as e:
            raise CommandError(
                f"{path} unchanged: {_os_error(e)}; the audit log {audit} already records the "
                f"change (`responder registry verify-audit --registry {path}` shows it); "
                "run the command again once the file can be written"
            ) from None
        return Outcome(after_reg, [r["party"] for r in records])


def _audit_key(registry: Path, key_file: Path | None) -> AuditKey:
    """The audit key (drawn when absent); CommandError, nothing written, when it will not do."""
    try:
        return load_key(key_file or key_path_for(registry), create=True)
    except AuditKeyError as e:
        raise CommandError(f"refused, {registry} unchanged: {e}") from None


def _check_past(
    before: RegistryFile, after: RegistryFile, path: Path, now: float, correction: str | None
) -> None:
    """Refuse instants set in the past (`responder.registry.pastinstants`) unless this is a
    correction of the record; and a correction that corrects nothing."""
    found = past_instants(before, after, now)
    if found and correction is None:
        raise CommandError(
            f"refused, {path} unchanged: an instant more than {ALLOWANCE:g} s in the past "
            "would rewrite what the ledger (帳簿, Act §40) already counted for the party:\n"
            + "\n".join(p.describe(now) for p in found)
            + "\ngive an instant from now on (or none: now); to correct a wrong record, "
            "add --correction REASON (kept in the audit log)"
        )
    if not found and correction is not None:
        raise CommandError(
            f"refused, {path} unchanged: --correction is for a change that sets an instant in "
            "the past, and this one sets none"
        )


def _os_error(e: OSError) -> str:
    """An OSError as one line naming its file (no traceback, no errno number)."""
    what = e.strerror or type(e).__name__
    return f"{e.filename}: {what}" if e.filename else what


def _shared_call(fn: Callable[[], _T]) -> _T:
    from crlbuilder.jetstream import ClusterError
    from responder.registry.shared import Conflict

    try:
        return fn()
    except Conflict as e:
        raise CommandError(f"refused: {e}") from None
    except ClusterError as e:
        raise CommandError(f"refused, nothing written: {e}") from None


def _open_shared(source: str, bucket: str, *, create: bool = True) -> SharedRegistry:
    """The shared registry at ``source``; CommandError when ``source`` or ``bucket`` cannot be
    one (`ClusterError` when it cannot be reached now, or, not ``create``, the bucket is not
    made yet: the caller's to judge)."""
    from responder.registry.shared import SharedRegistry

    try:
        return SharedRegistry(source, bucket, create=create)
    except ValueError as e:
        raise CommandError(str(e)) from None


def replicate(path: Path, data: bytes, *, audit: Path, origin: str, key: AuditKey) -> list[str]:
    """Make ``path`` the registry ``data`` another node wrote (the caller holds the lock):
    checked in full, audited here as ``replicate`` (actor: ``origin``), written atomically.
    Returns the parties that changed ([] when ``path`` already holds it). A registry that does
    not pass `Registry.build` here raises CommandError and ``path`` keeps what it had."""
    try:
        if path.read_bytes() == data:
            return []
    except FileNotFoundError:
        pass
    current, _ = _read(path, clock(), must_exist=False, check=False, blank_ok=True)
    try:
        incoming = parse_registry(data.decode("utf-8"), source=origin)
        Registry.build(incoming, base=path.parent, source=origin, now=clock())
    except (RegistryError, UnicodeDecodeError) as e:
        raise CommandError(
            f"the shared registry ({origin}) does not load here; {path} kept:\n{e}"
        ) from None
    records = _diff(current, incoming, key)
    if records:
        append_audit(
            audit, records, registry_sha256=hashlib.sha256(data).hexdigest(), actor=origin,
            action="replicate", key=key,
        )  # fmt: skip
    write_atomic(path, data)
    return [r["party"] for r in records]


def _read(
    path: Path, now: float, *, must_exist: bool, check: bool, blank_ok: bool = False
) -> tuple[RegistryFile, Registry | None]:
    """The registry at ``path`` as it stands (and, with ``check``, built). A file of nothing
    but white space (truncated, or created and not yet written) is refused unless
    ``blank_ok`` (a replication, which puts the whole shared registry in its place): read as
    a registry of no party, a change made on it wrote a valid registry of the changed party
    alone, which the workers and the builder took (every other party refused, its tokens
    revoked), where they keep their last good registry over the blank file
    (`Registry.load`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if must_exist:
            raise CommandError(
                f"{path}: no such registry (create it with `registry add` or `registry init`)"
            ) from None
        return RegistryFile(), None
    except (OSError, UnicodeDecodeError) as e:
        raise CommandError(f"{path}: cannot read: {e}") from None
    if not text.strip() and not blank_ok:
        raise CommandError(
            f"refused, {path} unchanged: empty: not a registry (truncated, or not yet "
            "written), so which parties it held cannot be told; restore it from a backup (or "
            "`registry sync` from the cluster), or move it aside to start a new one"
        )
    try:
        data = parse_registry(text, source=str(path))
        reg = Registry.build(data, base=path.parent, source=str(path), now=now) if check else None
    except RegistryError as e:
        if check:
            raise CommandError(
                f"the registry as it stands is invalid; fix it first:\n{e}"
            ) from None
        return RegistryFile(), None
    return data, reg


def _copy(data: RegistryFile) -> RegistryFile:
    return RegistryFile(parties=list(data.parties), version=data.version)


def _diff(before: RegistryFile, after: RegistryFile, key: AuditKey) -> list[dict[str, Any]]:
    old = {p.id: p for p in before.parties}
    new = {p.id: p for p in after.parties}
    out: list[dict[str, Any]] = []
    for pid in [*old, *(i for i in new if i not in old)]:
        b, a = old.get(pid), new.get(pid)
        if b is not None and a is not None and entry_to_builtins(b) == entry_to_builtins(a):
            continue
        out.append({"party": pid, "before": redacted(b, key), "after": redacted(a, key)})
    return out


_STATE_ACTIONS: Final = {"suspension": ("suspend", "resume"), "ended": ("end",)}
"""The party state each command may change: suspensions (提供の停止, Act §18(6),(7), §37(4))
only `suspend` and `resume`; the end of provision only `end` (final once in effect)."""


def _check_state_kept(
    before: RegistryFile, after: RegistryFile, action: str, path: Path, now: float
) -> None:
    """Refuse a change that would lift a suspension or undo the end of provision other than by
    the command that does it (an `update --from` or `import --replace` of an older entry);
    `end` sets an end, or moves one that has not taken effect at ``now``."""
    new = {p.id: p for p in after.parties}
    problems: list[str] = []
    for b in before.parties:
        a = new.get(b.id)
        if not isinstance(b, PartyEntry) or not isinstance(a, PartyEntry):
            continue
        if a.suspension != b.suspension and action not in _STATE_ACTIONS["suspension"]:
            problems.append(
                f"party {b.id!r}: its suspensions (提供の停止) change through `registry suspend` "
                "and `registry resume` only"
            )
        in_effect = b.ended is not None and b.ended.at.timestamp() <= now
        if a.ended != b.ended and (action not in _STATE_ACTIONS["ended"] or in_effect):
            problems.append(
                f"party {b.id!r}: the end of provision (ended) is set by `registry end` and is final"
            )
    if problems:
        raise CommandError(f"refused, {path} unchanged:\n" + "\n".join(problems))


def _check_credentials(
    before: Registry | None, after: Registry, changed: list[str], now: float
) -> None:
    """Refuse a credential added already expired, or a changed party left with expired ones only."""
    problems: list[str] = []
    for pid in changed:
        party = after.parties.get(pid)
        if party is None or party.end <= now or not party.credentials:
            continue
        old = before.parties.get(pid) if before is not None else None
        known = {_cred_id(c) for c in old.credentials} if old is not None else set()
        for c in party.credentials:
            if _cred_id(c) not in known and c.not_after <= now:
                problems.append(f"party {pid!r}: credential {c.label!r} has already expired")
        mine = {_cred_id(c): c.not_after for c in party.credentials}
        touched = old is None or mine != {_cred_id(c): c.not_after for c in old.credentials}
        if touched and all(c.not_after <= now for c in party.credentials):
            problems.append(
                f"party {pid!r}: every credential would be expired: it could not authenticate"
            )
    if problems:
        raise CommandError(f"refused, {after.source} unchanged:\n" + "\n".join(problems))


def _cred_id(c: CredentialInfo) -> tuple[str, bytes]:
    return (c.kind.value, c.key)


# --- building entries from flags ------------------------------------------------------------


def _now_jst(now: float) -> datetime:
    return datetime.fromtimestamp(now, JST)


def _csv(values: list[str] | None) -> list[str]:
    return [v for chunk in values or [] for v in chunk.split(",") if v]


_VERIFIER_KINDS: Final = (Title.SIGNATURE_VERIFIER.value, Title.USER_VERIFIER.value)


def _title_fields(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """The title detail flags that apply to a title of ``kind``."""
    out: dict[str, Any] = {}
    if kind in _VERIFIER_KINDS:
        if args.category is not None:
            out["category"] = args.category
        if args.certified_until is not None:
            out["certified_until"] = args.certified_until
    elif kind == Title.GROUP_SIGNATURE_VERIFIER.value:
        if args.group_kind is not None:
            out["group_kind"] = args.group_kind
        if args.members is not None:
            out["members"] = _csv(args.members)
        if args.member_prefix is not None:
            out["member_prefix"] = args.member_prefix
    elif kind == Title.SIGNATURE_CONFIRMER.value:
        if args.group is not None:
            out["group"] = args.group
        if args.group_kind is not None:  # the member's item: its group's (Act §17(5), §21(1))
            out["item"] = args.group_kind
    elif kind == Title.SPECIFIED_USER_VERIFIER.value:
        if args.approved is not None:
            out["approved"] = args.approved
        if args.approval is not None:
            out["approval"] = args.approval
        if args.approved_until is not None:
            out["approved_until"] = args.approved_until
        if args.approval_revoked is not None:
            out["revoked"] = args.approval_revoked
    return out


def _cert_ref(cert: Path, registry: Path) -> str:
    p = cert.resolve()
    try:
        return str(p.relative_to(registry.parent.resolve()))
    except ValueError:
        return str(p)


def _apply_flags(
    base: dict[str, Any],
    args: argparse.Namespace,
    *,
    registry: Path,
    new: bool,
    data: RegistryFile | None = None,
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``base`` (a party as builtins) with the command line's changes; and the fresh tokens
    to print once, as (label, token). ``data``: the registry it goes into (a contractor it
    delegates to is read there)."""
    d = dict(base)
    d["id"] = args.id
    if args.name is not None:
        d["name"] = args.name
    # notification (届出)
    notif_flags = {
        "address": args.address,
        "representative": args.representative,
        "office": args.office,
        "start": args.start,
        "notified": args.notified,
        "filed_by": args.filed_by,
    }
    if any(v is not None for v in notif_flags.values()):
        notif = dict(d.get("notification") or {})
        notif.update({k: v for k, v in notif_flags.items() if v is not None})
        if notif.get("filed_by") == "":  # --filed-by '': the party filed it itself
            del notif["filed_by"]
        d["notification"] = notif
    # titles
    if args.title:
        old = {t["kind"]: t for t in d.get("title", [])}
        d["title"] = [{**old.get(k, {}), "kind": k, **_title_fields(args, k)} for k in args.title]
    else:
        d["title"] = [{**t, **_title_fields(args, t["kind"])} for t in d.get("title", [])]
    _delegation(d, args)
    kinds = frozenset(Title(t["kind"]) for t in d["title"] if t["kind"] in {x.value for x in Title})
    deemed = _deemed_services(d, kinds, data)
    # agreement (取決め)
    member_only = kinds == {Title.SIGNATURE_CONFIRMER}
    delegating = any(t.get("delegated_to") for t in d["title"])
    has_own = d.get("agreement") is not None
    fresh = new or not has_own  # an agreement made now: its lists default to what titles allow
    agree_flags = {
        "services": args.service,
        "families": args.family,
        "methods": args.method,
        "crl_cycle_seconds": args.crl_cycle,
        "liability": args.liability,
        "member_answer": args.member_answer,
        "concluded": args.concluded,
    }
    agreement_flags = (
        any(v is not None for v in agree_flags.values())
        or args.quota_per_second is not None
        or args.quota_per_day is not None
        or args.provisions_per_day is not None
    )
    if args.drop_agreement:
        if agreement_flags:
            raise CommandError("--drop-agreement removes the agreement: give no agreement flag")
        d.pop("agreement", None)
    # a principal without an agreement of its own is served under its contractor's (Ord
    # §29(4), §60(2)): none is made for it unless an agreement flag asks for one
    elif not member_only and (
        (new and not delegating) or agreement_flags or (args.title and has_own)
    ):
        agreement = dict(d.get("agreement") or {})
        agreement.update({k: v for k, v in agree_flags.items() if v is not None})
        for key, value in (
            ("requests_per_second", args.quota_per_second),
            ("requests_per_day", args.quota_per_day),
            ("provisions_per_day", args.provisions_per_day),
        ):
            if value == 0:
                agreement.pop(key, None)
            elif value is not None:
                agreement[key] = value
        allowed = title_services(kinds) - deemed
        if deemed and not allowed:
            raise CommandError(
                f"party {args.id!r}: its contractor's agreement is deemed its own on every side "
                "it delegates (Ord §29(4), §60(2)): it has no agreement of its own to make; give "
                "no agreement flag"
            )
        known = {x.value for x in Service}
        if args.service is None and fresh:
            agreement["services"] = [x.value for x in Service if x in allowed]
        elif args.service is None and args.title:  # keep what the new titles still allow
            agreement["services"] = [
                x for x in agreement.get("services", []) if x in known and Service(x) in allowed
            ]
        services = [Service(x) for x in agreement.get("services", []) if x in known]
        fams: set[Family] = set().union(*(SERVICE_FAMILIES[x] for x in services))
        meths: set[Method] = set().union(*(SERVICE_METHODS[x] for x in services))
        if args.family is None and (fresh or args.service is not None):
            agreement["families"] = [f.value for f in Family if f in fams]
        elif args.family is None and args.title:
            agreement["families"] = [
                f for f in agreement.get("families", []) if f in {x.value for x in fams}
            ]
        if args.method is None and (fresh or args.service is not None):
            agreement["methods"] = [m.value for m in Method if m in meths]
        elif args.method is None and args.title:
            agreement["methods"] = [
                m for m in agreement.get("methods", []) if m in {x.value for x in meths}
            ]
        d["agreement"] = agreement
    elif member_only and (args.quota_per_second is not None or args.quota_per_day is not None):
        # a member has no agreement: the group's bound on it is the group-member arrangement
        # (Ord §33(4)), on its signature-confirmer title (`responder.memberbound`)
        for title in d["title"]:
            if title["kind"] != Title.SIGNATURE_CONFIRMER.value:
                continue
            for key, value in (
                ("requests_per_second", args.quota_per_second),
                ("requests_per_day", args.quota_per_day),
            ):
                if value == 0:
                    title.pop(key, None)
                elif value is not None:
                    title[key] = value
    if member_only and args.provisions_per_day is not None:
        raise CommandError(
            f"party {args.id!r}: a 署名確認者 has no provisions per day (件数): its group "
            "agreed them with the 機構; --quota-per-second and --quota-per-day bound it on the "
            "group's appliance"
        )
    # credentials
    creds = [dict(c) for c in d.get("credential", [])]
    for label in args.remove_credential or []:
        if not any(c.get("label") == label for c in creds):
            raise CommandError(f"party {args.id!r}: no credential labelled {label!r}")
        creds = [c for c in creds if c.get("label") != label]
    for label in args.expire_credential or []:
        hit = [c for c in creds if c.get("label") == label]
        if not hit:
            raise CommandError(f"party {args.id!r}: no credential labelled {label!r}")
        hit[0]["not_after"] = args.at or _now_jst(clock())
    added: list[dict[str, Any]] = []
    tokens: list[tuple[str, str]] = []
    for _ in range(args.new_token):
        token = secrets.token_urlsafe(32)
        added.append({"kind": "token", "token_sha256": hashlib.sha256(token.encode()).hexdigest()})
        tokens.append(("", token))
    added += [{"kind": "token", "token_sha256": h.lower()} for h in args.token_sha256 or []]
    added += [{"kind": "mtls", "cert": _cert_ref(p, registry)} for p in args.mtls_cert or []]
    added += [
        {"kind": "signed-request", "cert": _cert_ref(p, registry)}
        for p in args.signed_request_cert or []
    ]
    if args.label is not None and len(added) != 1:
        raise CommandError("--label names exactly one credential added by this command")
    used = {c.get("label") for c in creds}
    for i, c in enumerate(added):
        if args.not_before is not None:
            c["not_before"] = args.not_before
        if args.not_after is not None:
            c["not_after"] = args.not_after
        label = args.label
        if label is None:
            n = 1
            while f"{c['kind']}-{n}" in used:
                n += 1
            label = f"{c['kind']}-{n}"
        c["label"] = label
        used.add(label)
        if c["kind"] == "token" and i < len(tokens):
            tokens[i] = (label, tokens[i][1])
    d["credential"] = creds + added
    return d, tokens


def _deemed_services(
    d: dict[str, Any], kinds: frozenset[Title], data: RegistryFile | None
) -> frozenset[Service]:
    """The services the party's contractor's agreement covers for it, deemed its own (Ord
    §29(4), §60(2)): the sides of its delegated titles whose kind the contractor holds. Its
    own agreement, if any, covers only the rest (`responder.registry.delegation`)."""
    cid = next((t["delegated_to"] for t in d["title"] if t.get("delegated_to")), None)
    c = data.find(cid) if data is not None and cid is not None else None
    if not isinstance(c, PartyEntry):
        return frozenset()
    held = {t.TITLE for t in c.title}
    return frozenset().union(*(SIDE[k] for k in kinds & held if k in SIDE))


def _delegation(d: dict[str, Any], args: argparse.Namespace) -> None:
    """``--delegated-to`` and ``--no-delegation`` on the party's verifier titles (in place):
    the contractor is named on every 署名検証者 and 利用者証明検証者 title (the whole work goes
    to one contractor, Ord §29(1)), whose certification the titles then rest on instead of
    their own (``certified_until`` removed unless given); ended, the titles name none and
    the notification no contractor that filed it (``filed_by``)."""
    if args.delegated_to is not None and args.no_delegation:
        raise CommandError("--delegated-to and --no-delegation contradict each other")
    verifiers = [t for t in d["title"] if t.get("kind") in _VERIFIER_KINDS]
    if args.delegated_to is not None:
        if not verifiers:
            raise CommandError(
                f"party {args.id!r}: --delegated-to is set on signature-verifier and "
                "user-verifier titles, and the party holds neither"
            )
        for t in verifiers:
            t["delegated_to"] = args.delegated_to
            if args.certified_until is None:
                t.pop("certified_until", None)
    elif args.no_delegation:
        for t in verifiers:
            t.pop("delegated_to", None)
        notif = d.get("notification")
        if isinstance(notif, dict) and args.filed_by is None:
            d["notification"] = {k: v for k, v in notif.items() if k != "filed_by"}


def _to_entry(data: dict[str, Any], source: str) -> PartyEntry:
    try:
        return msgspec.convert(data, PartyEntry)
    except msgspec.ValidationError as e:
        raise CommandError(
            f"refused, {source} unchanged: party {data.get('id')!r}: {str(e).replace('`$.', '`')}"
        ) from None


def _party_from_file(path: Path, party_id: str | None, registry: Path) -> dict[str, Any]:
    """The one [[party]] of a TOML file (or its top-level table), as builtins; its credentials'
    certificate paths, relative to the file's directory (as `import` reads them), made
    relative to ``registry``'s (or absolute)."""
    data = parse_registry_or_table(path)
    if party_id is not None and data.get("id") not in (None, party_id):
        raise CommandError(f"{path}: describes party {data.get('id')!r}, not {party_id!r}")
    creds = data.get("credential")
    if isinstance(creds, list):
        data["credential"] = [
            {**c, "cert": _cert_ref(path.parent / c["cert"], registry)}
            if isinstance(c, dict) and isinstance(c.get("cert"), str) and c["cert"]
            else c
            for c in creds
        ]
    return data


def _read_toml(path: Path) -> dict[str, Any]:
    """The tables of the TOML file ``path``; CommandError when unreadable or not TOML."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise CommandError(f"{path}: cannot read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise CommandError(f"{path}: not valid TOML: {e}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise CommandError(f"{path}: not valid here: nested too deeply") from None


def parse_registry_or_table(path: Path) -> dict[str, Any]:
    raw = _read_toml(path)
    parties = raw.get("party")
    if isinstance(parties, list):
        if len(parties) != 1 or not isinstance(parties[0], dict):
            raise CommandError(f"{path}: expected exactly one [[party]]")
        return dict(parties[0])
    return dict(raw)


# --- the commands --------------------------------------------------------------------------


def _registry_path(args: argparse.Namespace) -> Path:
    path: Path | None = args.registry or (
        Path(os.environ["JPKI_VA_REGISTRY"]) if os.environ.get("JPKI_VA_REGISTRY") else None
    )
    if path is None:
        raise CommandError("--registry is required (or set JPKI_VA_REGISTRY)")
    return path


def _report(outcome: Outcome, path: Path, what: str) -> None:
    if outcome.changed:
        print(f"{path}: {what}: {', '.join(outcome.changed)}")
    else:
        print(f"{path}: no change")
    for w in outcome.registry.warnings:
        print(f"warning: {w}", file=sys.stderr)


def cmd_add(args: argparse.Namespace) -> int:
    path = _registry_path(args)
    tokens: list[tuple[str, str]] = []

    def mutate(data: RegistryFile) -> RegistryFile:
        nonlocal tokens
        if data.find(args.id) is not None:
            raise CommandError(f"party {args.id!r} is already registered (use `registry update`)")
        base = _party_from_file(args.from_file, args.id, path) if args.from_file else {}
        d, tokens = _apply_flags(base, args, registry=path, new=True, data=data)
        data.parties.append(_to_entry(d, str(path)))
        return data

    outcome = change(
        path, mutate, action="add", actor=args.actor, audit=args.audit, must_exist=False,
        shared=_shared(args), key_file=args.audit_key,
    )  # fmt: skip
    _report(outcome, path, "added")
    _print_tokens(args.id, tokens)
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    path = _registry_path(args)
    tokens: list[tuple[str, str]] = []

    def mutate(data: RegistryFile) -> RegistryFile:
        nonlocal tokens
        existing = _existing(data, args.id)
        base = entry_to_builtins(existing)
        if args.from_file:  # a form of the notification and agreement: the state stays
            state = {k: base[k] for k in _STATE_ACTIONS if k in base}
            base = {**state, **_party_from_file(args.from_file, args.id, path)}
        d, tokens = _apply_flags(base, args, registry=path, new=False, data=data)
        data.parties[data.parties.index(existing)] = _to_entry(d, str(path))
        return data

    outcome = change(
        path, mutate, action="update", actor=args.actor, audit=args.audit, shared=_shared(args),
        key_file=args.audit_key, correction=args.correction,
    )  # fmt: skip
    _report(outcome, path, "updated")
    _print_tokens(args.id, tokens)
    return 0


def _print_tokens(pid: str, tokens: list[tuple[str, str]]) -> None:
    for label, token in tokens:
        print(f"{pid}: new bearer token {label!r} (shown once; only its SHA-256 is stored):")
        print(token)


def _existing(data: RegistryFile, pid: str) -> PartyEntry:
    entry = data.find(pid)
    if entry is None:
        raise CommandError(f"no party {pid!r}")
    if isinstance(entry, LegacyPartyEntry):
        raise CommandError(
            f"party {pid!r} is in the old flat format (no notification or agreement): migrate the registry first (`registry migrate`)"
        )
    return entry


def _edit_party(
    args: argparse.Namespace,
    action: str,
    done: str,
    edit: Callable[[PartyEntry, dict[str, Any]], None],
) -> int:
    """Change party ``args.id``: ``edit`` gets its entry and rewrites its builtins in place;
    the result is checked in full, written and audited as ``action``, reported as ``done``."""
    path = _registry_path(args)

    def mutate(data: RegistryFile) -> RegistryFile:
        e = _existing(data, args.id)
        d = entry_to_builtins(e)
        edit(e, d)
        data.parties[data.parties.index(e)] = _to_entry(d, str(path))
        return data

    outcome = change(
        path, mutate, action=action, actor=args.actor, audit=args.audit, shared=_shared(args),
        key_file=args.audit_key, correction=args.correction,
    )  # fmt: skip
    _report(outcome, path, done)
    return 0


def cmd_suspend(args: argparse.Namespace) -> int:
    def edit(e: PartyEntry, d: dict[str, Any]) -> None:
        if e.ended is not None:
            raise CommandError(f"party {args.id!r} has ended")
        susp: dict[str, Any] = {
            "article": args.article,
            "since": args.since or _now_jst(clock()),
            "reason": args.reason,
        }
        if args.carry_over:
            susp["carry_over"] = True
        d["suspension"] = [*d.get("suspension", []), susp]

    return _edit_party(args, "suspend", "suspended", edit)


def cmd_resume(args: argparse.Namespace) -> int:
    def edit(_: PartyEntry, d: dict[str, Any]) -> None:
        now = _now_jst(clock())
        at = args.at or now
        hits = 0
        kept: list[dict[str, Any]] = []
        for s in d.get("suspension", []):
            in_force = s.get("until") is None or s["until"] > at
            if in_force and args.article in (None, s["article"]):
                hits += 1
                if s["since"] > now and s["since"] >= at:  # not begun: cancelled (audited)
                    continue
                if s["since"] >= at:  # begun: lifting it before it began would erase it
                    raise CommandError(
                        f"party {args.id!r}: the suspension under {s['article']} is in force "
                        f"since {s['since'].isoformat()}: --at before it began would erase it"
                    )
                s["until"] = at
            kept.append(s)
        d["suspension"] = kept
        if not hits:
            raise CommandError(
                f"party {args.id!r}: no suspension in force{' under ' + args.article if args.article else ''}"
            )

    return _edit_party(args, "resume", "resumed", edit)


def cmd_end(args: argparse.Namespace) -> int:
    """End a party; with ``--with-principals``, a contractor and, in the same change, each
    principal naming it that would outlive it (Ord §29(1): their deemed certification ends
    with the contractor's provision), under "Ord §29(1)"."""
    path = _registry_path(args)

    def mutate(data: RegistryFile) -> RegistryFile:
        now = _now_jst(clock())
        at = args.at or now
        e = _existing(data, args.id)
        if e.ended is not None and e.ended.at <= now:  # one still to come may be moved
            raise CommandError(f"party {args.id!r} has already ended (final)")
        ends = [
            (
                e,
                {"at": at, "reason": args.reason}
                | ({"article": args.article} if args.article else {}),
            )
        ]
        if args.with_principals:
            principals = [
                p for p in data.parties
                if isinstance(p, PartyEntry) and contractor_of(p) == args.id
                and (p.ended is None or p.ended.at > at)
            ]  # fmt: skip
            if not principals:
                raise CommandError(
                    f"party {args.id!r} is no contractor of a party that outlives it: give no --with-principals"
                )
            ends += [
                (p, {"at": at, "reason": args.reason, "article": "Ord §29(1)"}) for p in principals
            ]
        for entry, ended in ends:
            d = entry_to_builtins(entry)
            d["ended"] = ended
            data.parties[data.parties.index(entry)] = _to_entry(d, str(path))
        return data

    outcome = change(
        path, mutate, action="end", actor=args.actor, audit=args.audit, shared=_shared(args),
        key_file=args.audit_key, correction=args.correction,
    )  # fmt: skip
    _report(outcome, path, "ended")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    path = _registry_path(args)
    src: Path = args.from_file
    try:
        incoming = parse_registry(src.read_text(encoding="utf-8"), source=str(src))
    except (OSError, UnicodeDecodeError) as e:
        raise CommandError(f"{src}: cannot read: {e}") from None
    except RegistryError as e:
        raise CommandError(f"refused, {path} unchanged:\n{e}") from None
    moved = [_rebase(p, src.parent, path) for p in incoming.parties]

    def mutate(data: RegistryFile) -> RegistryFile:
        for p in moved:
            old = data.find(p.id)
            if old is None:
                data.parties.append(p)
            elif args.replace:
                data.parties[data.parties.index(old)] = p
            else:
                raise CommandError(f"party {p.id!r} is already registered (use --replace)")
        return data

    _report(
        change(
            path,
            mutate,
            action="import",
            actor=args.actor,
            audit=args.audit,
            must_exist=False,
            shared=_shared(args),
            key_file=args.audit_key,
            correction=args.correction,
        ),
        path,
        "imported",
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    path = _registry_path(args)
    details = _details(args.details) if args.details else {}
    drop: set[str] = set(args.drop or ())

    def mutate(data: RegistryFile) -> RegistryFile:
        old = {p.id: p for p in data.parties if isinstance(p, LegacyPartyEntry)}
        unknown = sorted((drop | set(details)) - old.keys())
        if unknown:
            raise CommandError(
                f"refused, {path} unchanged: not an old-format party of this registry: {', '.join(unknown)}"
            )
        missing: list[str] = []
        out: list[AnyEntry] = []
        for p in data.parties:
            if not isinstance(p, LegacyPartyEntry):
                out.append(p)
            elif p.id not in drop:
                entry = _migrated(p, details.get(p.id), str(path), missing)
                if entry is not None:
                    out.append(entry)
        if missing:
            raise CommandError(
                f"refused, {path} unchanged: the old format lacks what a party needs to be served "
                "(届出 and 取決め, Act §17(1),(4), §36(1),(2)); give it in --details, or --drop the party:\n"
                + "\n".join(missing)
            )
        data.parties = out
        return data

    outcome = change(
        path, mutate, action="migrate", actor=args.actor, audit=args.audit, check_current=False,
        shared=_shared(args), key_file=args.audit_key,
    )  # fmt: skip
    _report(outcome, path, "migrated")
    return 0


def _details(path: Path) -> dict[str, dict[str, Any]]:
    """The ``[[party]]`` tables of a --details file, by id."""
    raw = _read_toml(path)
    parties = raw.get("party")
    if not isinstance(parties, list) or not all(
        isinstance(p, dict) and isinstance(p.get("id"), str) for p in parties
    ):
        raise CommandError(f"{path}: expected [[party]] tables, each with an id")
    out: dict[str, dict[str, Any]] = {}
    for p in parties:
        if p["id"] in out:
            raise CommandError(f"{path}: party {p['id']!r} is given twice")
        out[p["id"]] = dict(p)
    return out


def _legacy_credentials(e: LegacyPartyEntry) -> list[dict[str, Any]]:
    """The old entry's credentials in the current form, labelled as `registry add` would."""
    creds: list[dict[str, Any]] = []
    if AuthMethod.TOKEN in e.auth:
        creds += [{"kind": "token", "token_sha256": h} for h in e.tokens_sha256]
    for method, kind in ((AuthMethod.MTLS, "mtls"), (AuthMethod.SIGNED_REQUEST, "signed-request")):
        if method in e.auth:
            creds += [{"kind": kind, "cert": c} for c in e.certs]
    counts: dict[str, int] = {}
    for c in creds:
        counts[c["kind"]] = counts.get(c["kind"], 0) + 1
        c["label"] = f"{c['kind']}-{counts[c['kind']]}"
    return creds


def _migrated(
    e: LegacyPartyEntry, given: dict[str, Any] | None, source: str, missing: list[str]
) -> PartyEntry | None:
    """``e`` in the current format, completed by ``given``; None (and a line in ``missing``)
    when what the old entry lacks is not given."""
    creds = _legacy_credentials(e)
    if set(e.titles) == {Title.SIGNATURE_CONFIRMER} and given is None:
        if e.group is None:
            missing.append(f"party {e.id!r}: a signature-confirmer needs its group")
            return None
        return _to_entry(
            {
                "id": e.id,
                "name": e.name,
                "title": [{"kind": "signature-confirmer", "group": e.group}],
                "credential": creds,
            },
            source,
        )
    if given is None:
        missing.append(f"party {e.id!r}: notification, title and agreement")
        return None
    need = [f for f in ("notification", "title", "agreement") if f not in given]
    if need and set(e.titles) != {Title.SIGNATURE_CONFIRMER}:
        missing.append(f"party {e.id!r}: {', '.join(need)}")
        return None
    d = {"name": e.name, **given, "id": e.id}
    d["credential"] = creds + list(given.get("credential", []))
    entry = _to_entry(d, source)
    if {t.TITLE for t in entry.title} != set(e.titles):
        raise CommandError(
            f"refused, {source} unchanged: party {e.id!r}: the titles given "
            f"({', '.join(sorted(t.TITLE.value for t in entry.title))}) are not the old entry's "
            f"({', '.join(sorted(t.value for t in e.titles))}): migrate first, change them with `registry update`"
        )
    return entry


def _rebase(entry: AnyEntry, src_dir: Path, registry: Path) -> AnyEntry:
    """Certificate paths of an imported entry, made relative to the registry's directory."""
    if isinstance(entry, LegacyPartyEntry):
        return msgspec.structs.replace(
            entry, certs=[_cert_ref(src_dir / c, registry) for c in entry.certs]
        )
    creds = [
        msgspec.structs.replace(c, cert=_cert_ref(src_dir / c.cert, registry))
        if isinstance(c, MtlsCredential | SignedRequestCredential)
        else c
        for c in entry.credential
    ]
    return msgspec.structs.replace(entry, credential=creds)


def _load(args: argparse.Namespace) -> tuple[Path, Registry]:
    path = _registry_path(args)
    try:
        return path, Registry.load(path)
    except RegistryError as e:
        raise CommandError(str(e)) from None


def cmd_show(args: argparse.Namespace) -> int:
    _, reg = _load(args)
    entry = reg.file.find(args.id)
    party = reg.parties.get(args.id)
    if entry is None or party is None:
        raise CommandError(f"no party {args.id!r}")
    now = clock()
    principals = sorted(p.id for p in reg.parties.values() if p.contractor == party.id)
    if args.format == "json":
        out = {
            "state": _state(party, now),
            **_delegation_view(party),
            "principals": principals,
            "entry": msgspec.to_builtins(entry),
        }
        print(msgspec.json.format(msgspec.json.encode(out)).decode())
    else:
        print(f"# state now: {_state(party, now)}")
        if party.contractor is not None:
            kinds = sorted(t.value for t in party.deemed)
            agreement = (
                f"its contractor's, deemed its own for {' and '.join(kinds)} (Ord §29(4), "
                f"§60(2)): {party.agreement_holder}"
                + (
                    ", its own for the rest"
                    if isinstance(entry, PartyEntry) and entry.agreement is not None
                    else ""
                )
                if party.agreement_holder is not None
                else "its own"
            )
            print(f"# contractor (電子署名等確認業務受託者, Ord §29): {party.contractor}")
            print(f"# agreement that counts: {agreement}")
        if principals:
            print(f"# contractor for (電子署名等確認業務委託者, Ord §29): {', '.join(principals)}")
        print(dump_registry(RegistryFile(parties=[entry])).split("\n", 2)[2].strip("\n"))
    return 0


def _delegation_view(party: Party) -> dict[str, str | list[str] | None]:
    """Whom the party delegates its work to (Ord §29) and whose agreement counts for it
    (``deemed``: the titles whose agreement is its contractor's, Ord §29(4), §60(2))."""
    return {
        "contractor": party.contractor,
        "agreement_of": party.agreement_holder or party.id,
        "deemed": sorted(t.value for t in party.deemed),
    }


def _state(party: Party, now: float) -> str:
    """The party's state now; a suspended one's with the articles it is suspended under."""
    state = party.state(now)
    name: str = state.value
    if state is not PartyState.SUSPENDED:
        return name
    articles = sorted({s.article for s in party.suspensions if s.since <= now < s.until})
    return f"{name} ({', '.join(articles)})"


def cmd_list(args: argparse.Namespace) -> int:
    _, reg = _load(args)
    now = clock()
    rows: list[dict[str, Any]] = []
    for p in reg.parties.values():
        valid = sum(c.valid_at(now) for c in p.credentials)
        rows.append(
            {
                "id": p.id,
                "state": _state(p, now),
                "titles": sorted(t.value for t in p.titles),
                "services": sorted(s.value for s in p.grants),
                "credentials_valid": valid,
                "credentials": len(p.credentials),
                **_delegation_view(p),
            }
        )
    if args.format == "json":
        print(msgspec.json.format(msgspec.json.encode(rows)).decode())
    else:
        for r in rows:
            print(
                f"{r['id']:<24} {r['state']:<28} {'+'.join(r['titles']):<44} "
                f"services {len(r['services'])}, credentials {r['credentials_valid']}/{r['credentials']} valid"
                + (f", contractor {r['contractor']}" if r["contractor"] else "")
            )
    for w in reg.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    path, reg = _load(args)
    for w in reg.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"{path}: {len(reg.parties)} parties, valid")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    path, reg = _load(args)
    parties = reg.file.parties
    if args.out is not None:  # its certificate paths relative to the file written, as read back
        parties = [_rebase(p, path.parent, args.out) for p in parties]
    if args.format == "json":
        data = (
            msgspec.json.format(msgspec.json.encode([msgspec.to_builtins(p) for p in parties]))
            + b"\n"
        )
    else:
        data = dump_registry(RegistryFile(parties=parties, version=reg.file.version),
                             header=HEADER).encode()  # fmt: skip
    if args.out is None:
        sys.stdout.write(data.decode())
    else:
        try:
            write_atomic(args.out, data)
        except OSError as e:
            raise CommandError(f"{args.out}: cannot write the export ({e.strerror})") from None
        print(f"{args.out}: {len(reg.parties)} parties", file=sys.stderr)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from crlbuilder.manifest import ManifestError, load_manifest
    from responder.registry.demo import registry_from_manifest

    try:
        manifest = load_manifest(args.pki)
    except ManifestError as e:
        raise CommandError(str(e)) from None
    out: Path = args.out
    if out.exists() and not args.force:
        raise CommandError(f"{out} exists (use --force to replace it)")
    if args.discard_parties is not None and not args.force:
        raise CommandError("--discard-parties goes with --force")
    text = registry_from_manifest(manifest, out)
    demo = parse_registry(text, source=str(out))
    if out.exists():
        try:  # the check in mutate below reads the file as `change` does, which takes a
            # broken one as empty; a blank one `change` refuses itself
            parse_registry(out.read_text(encoding="utf-8"), source=str(out))
        except (OSError, UnicodeDecodeError, RegistryError) as e:
            raise CommandError(
                f"refused, {out} unchanged: it does not read as a registry, so which parties "
                f"--force would discard cannot be told; move it aside first ({e})"
            ) from None

    def mutate(current: RegistryFile) -> RegistryFile:
        _check_discarded(current, demo, args.discard_parties, out)
        return demo

    change(
        out,
        mutate,
        action="init",
        actor=args.actor,
        audit=args.audit,
        must_exist=False,
        check_current=False,
        key_file=args.audit_key,
    )
    print(f"{out}: {len(manifest.parties)} parties")
    return 0


def _check_discarded(
    current: RegistryFile, demo: RegistryFile, discard: int | None, out: Path
) -> None:
    """Refuse `init --force` over a registry holding parties the demo set has not (a
    production registry) unless ``--discard-parties`` names exactly how many it discards."""
    ids = {p.id for p in demo.parties}
    extra = [p.id for p in current.parties if p.id not in ids]
    if extra and discard != len(extra):
        shown = ", ".join(extra[:10]) + (f" and {len(extra) - 10} more" if len(extra) > 10 else "")
        raise CommandError(
            f"refused, {out} unchanged: it holds {len(extra)} parties the demo PKI has not "
            f"({shown}); --force would discard them with their agreements and state: if that "
            f"is meant, add --discard-parties {len(extra)}"
        )
    if not extra and discard not in (None, 0):
        raise CommandError(
            f"refused, {out} unchanged: --discard-parties {discard}, but it holds no party the "
            "demo PKI has not"
        )


_SYNC_RETRY: Final = 1.0
"""Seconds between `cmd_sync`'s attempts while the cluster cannot be reached or read."""
_SYNC_RELOAD: Final = 5.0
"""Seconds between `registry sync --follow`'s tries of a revision that did not load on this
node (a credential's certificate file not copied here yet): it is taken once it loads, not
left until the next change while this node serves the registry before it."""


def cmd_sync(args: argparse.Namespace) -> int:
    """Take the shared registry into this node's file; with ``--follow``, every change of it,
    until SIGTERM/SIGINT, waiting for a cluster that cannot be reached at its start or later."""
    from crlbuilder.jetstream import ClusterError, CredentialError, wait_for_cluster
    from crlbuilder.lifecycle import StopRequest
    from responder.registry import syncstamp
    from responder.registry.shared import Shared

    path = _registry_path(args)
    audit = args.audit or audit_path_for(path)
    if not args.nats:
        raise CommandError("--nats is required (or set JPKI_VA_NATS)")
    key = _audit_key(path, args.audit_key)
    if args.follow:  # it runs until stopped: a cluster not up yet is waited for
        try:
            waited = wait_for_cluster(
                lambda: _open_shared(args.nats, args.bucket, create=False),
                interval=_SYNC_RETRY,
                warn=lambda message: print(f"responder registry sync: {message}",
                                           file=sys.stderr, flush=True),
            )  # fmt: skip
        except CredentialError as e:  # a seed file that will not do: waiting will not help
            raise CommandError(f"cannot reach the shared registry: {e}") from None
        if waited is None:
            return 0  # stopped while waiting: nothing read
        shared = waited
    else:
        try:
            shared = _open_shared(args.nats, args.bucket, create=False)
        except ClusterError as e:
            raise CommandError(f"cannot reach the shared registry: {e}") from None
    stop = StopRequest.install()
    failed: Shared | None = None  # the newest revision that did not load here, tried again
    failed_at = 0.0
    failed_said = ""
    stamped = 0.0  # the last confirmation stamped (`syncstamp`)
    stamp_said = ""
    try:
        while not stop.requested:
            try:
                got = shared.next(0.5 if args.follow else 2.0)
            except ClusterError as e:
                if not args.follow:
                    raise CommandError(f"cannot read the shared registry: {e}") from None
                # a server of the cluster gone: the client reconnects to another
                print(f"responder registry sync: cannot read the shared registry now, "
                      f"trying again in {_SYNC_RETRY:g} s: {e}", file=sys.stderr, flush=True)  # fmt: skip
                time.sleep(_SYNC_RETRY)
                continue
            if args.follow and failed is None and shared.confirmed > stamped:
                stamped = shared.confirmed
                try:  # the file holds the newest revision: the node's gauge says since when
                    syncstamp.touch(path, stamped)
                    stamp_said = ""
                except OSError as e:  # tried at the next confirmation, said once per cause
                    said = f"cannot stamp {syncstamp.stamp_path(path)}: {e.strerror}"
                    if said != stamp_said:
                        print(f"responder registry sync: {said}", file=sys.stderr, flush=True)
                        stamp_said = said
            if got is None and failed is not None:
                if time.monotonic() - failed_at < _SYNC_RELOAD:
                    continue
                got = failed  # what it lacked here (a certificate file) may be there now
            if got is not None:
                with _locked(path):
                    try:
                        changed = replicate(path, got.data, audit=audit, key=key,
                                            origin=f"{shared.bucket}#{got.revision}")  # fmt: skip
                    except CommandError as e:
                        if not args.follow:
                            raise
                        failed, failed_at = got, time.monotonic()
                        if str(e) != failed_said:  # once per cause, not every try
                            failed_said = str(e)
                            print(f"responder registry sync: {e}\n(tried again every "
                                  f"{_SYNC_RELOAD:g} s, and at the next change)",
                                  file=sys.stderr, flush=True)  # fmt: skip
                        continue
                failed, failed_said = None, ""
                if changed:
                    print(f"{path}: replicated revision {got.revision}: {', '.join(changed)}",
                          flush=True)  # fmt: skip
            elif not args.follow:
                break
    finally:
        stop.restore()
        shared.close()
    return 0


def cmd_verify_audit(args: argparse.Namespace) -> int:
    registry: Path | None = args.registry
    audit: Path | None = args.audit or (audit_path_for(registry) if registry else None)
    if audit is None:
        raise CommandError("give --audit or --registry")
    if not audit.is_file():  # said as what it is, not as "0 records, chain BROKEN"
        print(f"responder registry verify-audit: error: {audit}: no audit log here (every "
              "audited change writes it beside the registry; --audit names another): nothing "
              "verified", file=sys.stderr)  # fmt: skip
        return 1
    report = verify_audit(audit, registry)
    for p in report.problems:
        print(p, file=sys.stderr)
    state = "BROKEN" if report.problems else "intact"
    print(f"{audit}: {report.records} records, chain {state}, head {report.head}")
    if report.keys:  # which key an auditor needs for which lines (`audit-hash`)
        kinds = [f"{n} unkeyed (sha256:)" if k is None else f"{n} under audit key {k}"
                 for k, n in report.keys.items()]  # fmt: skip
        print(f"personal fields: {', '.join(kinds)}; corrections of the record: "
              f"{report.corrections}")  # fmt: skip
    return 1 if report.problems else 0


def cmd_audit_hash(args: argparse.Namespace) -> int:
    path: Path | None = args.audit_key or (key_path_for(args.registry) if args.registry else None)
    if path is None:
        raise CommandError("give --audit-key or --registry")
    try:
        key = load_key(path, create=False)
    except AuditKeyError as e:
        raise CommandError(str(e)) from None
    value = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not value:
        raise CommandError("no value on standard input")
    print(key.pseudonym(value))
    print(f"(audit key {key.key_id}: the lines whose key_id is this one)", file=sys.stderr)
    return 0


def _shared(args: argparse.Namespace) -> SharedRegistry | None:
    """The shared registry named by ``--nats``, or None (a single node)."""
    source = getattr(args, "nats", None)
    if not source:
        return None
    return _shared_call(lambda: _open_shared(source, args.bucket))


COMMANDS: Final[dict[str, Callable[[argparse.Namespace], int]]] = {
    "init": cmd_init,
    "add": cmd_add,
    "update": cmd_update,
    "suspend": cmd_suspend,
    "resume": cmd_resume,
    "end": cmd_end,
    "import": cmd_import,
    "migrate": cmd_migrate,
    "export": cmd_export,
    "show": cmd_show,
    "list": cmd_list,
    "check": cmd_check,
    "sync": cmd_sync,
    "verify-audit": cmd_verify_audit,
    "audit-hash": cmd_audit_hash,
}
"""Each action of the parser (`responder.registry.cliargs`) and the function that does it."""


def run(args: argparse.Namespace) -> int:
    """Run the action ``args.registry_command`` names: its exit code; a CommandError printed
    and turned into exit code 2."""
    try:
        return COMMANDS[args.registry_command](args)
    except CommandError as e:
        print(f"responder registry {args.registry_command}: error: {e}", file=sys.stderr)
        return 2


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``registry`` and its actions to ``responder``'s top-level subparsers, run here
    (`run`). `responder.cli` adds them with `responder.registry.cliargs.add_cli` and a function
    that imports this module when a registry action runs: its other commands start without it."""
    return _add_cli(subparsers, run)


def main(argv: list[str] | None = None) -> int:
    """``responder registry ...`` on its own (what `responder.cli` wires in)."""
    parser = argparse.ArgumentParser(prog="responder")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_cli(sub)
    return run_command(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
