"""The NATS servers' authorization for jpki-va, written from the list of its users: one NKey
user per process role and node, each allowed the subjects of its role *and its node* only.

nats-server 2.9's configuration file has no per-user subject templates (those are in JWT user
claims, operator mode only), so a permission bound to a node's name is written out for that
node: `authorization` turns a users file (``[[user]]`` tables: ``role``, ``key``, and for a
node's role ``node``, ``durable``) into the ``authorization { ... }`` block that the servers
include (deploy/nats/jpki-va-auth.conf is this module's output for deploy/nats/users.toml;
``crlbuilder nats-config`` writes it). What each role may do:

- a responder node publishes below its own ledger subject only,
  ``jpki.ledger.JPKI_LEDGER.<node>.>`` (one subject per counter, ``<node>.<file>.<slot>``;
  帳簿, Act §40): another node's credential cannot write entries under its name, and
  `responder.ledgerstream.gather` takes a message's node from its subject;
- the signer and each builder create, read, acknowledge and delete their own durable
  consumer of the record stream only (``durable``: the node's ``[stream] durable``; default
  ``node-`` and the node's name, as `crlbuilder.stream.default_durable`), never another
  node's, and no ephemeral consumer there: one node cannot delete, drain or acknowledge
  away another's records;
- a stream is created by the role that writes it: the record stream by the publisher (and
  the signer, which publishes its ticks), the CRL object store by the signer, the snapshot
  object store by the snapshot role, the registry bucket by the registry admin, the ledger
  stream by the responders, the watch streams by the responders and watch-compact (the pair
  is set up together); a reader finds a stream missing until its writer made it, and says so
  (`crlbuilder.jetstream.ensure_stream` with ``create=False``);
- no role may update or delete a stream; only the writer of an object store or the watch
  streams purges it, and the snapshot role the record stream, behind the snapshot it puts
  (`crlbuilder.recordcompact`: the state, message gets for the tail's times, the purge); a read of another stream uses consumers with a fresh random name
  (ephemeral), which it may create, read and delete.

- each user subscribes to its own inbox only, ``_INBOX_<role>`` or ``_INBOX_<role>_<node>``
  (`User.inbox`; where its replies, pull deliveries and object reads arrive): a process
  sets it as its ``JPKI_VA_NATS_INBOX`` (`crlbuilder.natsauth`), and no user reads another's
  replies (the ledger's counts, the registry, the records a builder pulls) nor learns the
  names of another's consumers there.

Pure: text in, text out; keys are public (``U...``) or a ``$VARIABLE`` the server resolves
from its environment.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["NatsConfigError", "User", "authorization", "parse_users"]

RECORDS: Final = "JPKI_RECORDS"
CRLS: Final = "OBJ_JPKI_CRLS"
SNAPSHOTS: Final = "OBJ_JPKI_SNAPSHOTS"
LEDGER: Final = "JPKI_LEDGER"
WATCH: Final = "JPKI_WATCH"
WATCH_SNAP: Final = "JPKI_WATCH_SNAP"
REGISTRY: Final = "KV_JPKI_REGISTRY"

ROLES: Final = (
    "publisher", "signer", "builder", "snapshot", "responder", "watch-compact", "registry-admin",
)  # fmt: skip
NODE_ROLES: Final = frozenset({"signer", "builder", "responder"})
"""Roles bound to a node's name (their ledger subject, their durable consumer)."""

_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KEY: Final = re.compile(r"U[A-Z2-7]{55}")
_VAR: Final = re.compile(r"\$[A-Z][A-Z0-9_]{0,63}")


class NatsConfigError(ValueError):
    """The users file cannot make an authorization; the message says where and why."""


@dataclass(frozen=True)
class User:
    """One NKey user: its role, its public key (or ``$VARIABLE``), and its node's names."""

    role: str
    key: str
    node: str = ""
    durable: str = ""

    @property
    def inbox(self) -> str:
        """Its inbox prefix (``JPKI_VA_NATS_INBOX``): its role's, and its node's for a node's
        role; it may subscribe below it only."""
        return f"_INBOX_{self.role}_{self.node}" if self.node else f"_INBOX_{self.role}"

    @property
    def consumer(self) -> str:
        """Its durable consumer of the record stream (signer and builder)."""
        return self.durable or f"node-{self.node}"


def parse_users(text: str, where: str = "users file") -> list[User]:
    """The ``[[user]]`` tables of a users file, checked (`NatsConfigError`, one line)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise NatsConfigError(f"{where}: not TOML ({e})") from None
    extra = sorted(set(doc) - {"user"})
    if extra:
        raise NatsConfigError(f"{where}: unknown table {extra[0]!r} (only [[user]])")
    raw = doc.get("user", [])
    if not isinstance(raw, list) or not raw:
        raise NatsConfigError(f"{where}: no [[user]]")
    users = [_user(t, f"{where}: user {i + 1}") for i, t in enumerate(raw)]
    _check_unique(users, where)
    return users


def _user(t: object, where: str) -> User:
    if not isinstance(t, dict):
        raise NatsConfigError(f"{where}: not a table")
    unknown = sorted(set(t) - {"role", "key", "node", "durable"})
    if unknown:
        raise NatsConfigError(f"{where}: unknown key {unknown[0]!r}")
    role, key = t.get("role"), t.get("key")
    node, durable = t.get("node", ""), t.get("durable", "")
    if role not in ROLES:
        raise NatsConfigError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
    if not isinstance(key, str) or not (_KEY.fullmatch(key) or _VAR.fullmatch(key)):
        raise NatsConfigError(
            f"{where}: key must be a user's public NKey (U..., 56 characters, as "
            "`crlbuilder nats-key` prints) or a $VARIABLE of the server's environment"
        )
    for name, value in (("node", node), ("durable", durable)):
        if not isinstance(value, str) or (value and not _NAME.fullmatch(value)):
            raise NatsConfigError(f"{where}: {name} must be 1 to 64 of A-Z a-z 0-9 _ -")
    if role in NODE_ROLES and not node:
        raise NatsConfigError(f"{where}: a {role} is one node's: give its node name")
    if role not in NODE_ROLES and (node or durable):
        raise NatsConfigError(f"{where}: a {role} is no node's: no node or durable")
    if durable and role == "responder":
        raise NatsConfigError(f"{where}: a responder has no durable consumer")
    if role == "builder" and len(f"node-{node}") > 64 and not durable:
        raise NatsConfigError(f"{where}: node-{node} is too long for a consumer: give durable")
    return User(role, key, node, durable)


def _check_unique(users: Sequence[User], where: str) -> None:
    seen_keys: set[str] = set()
    for u in users:
        if u.key in seen_keys:
            raise NatsConfigError(f"{where}: key {u.key} given to two users (one user, one key)")
        seen_keys.add(u.key)
    for role in ("responder",):
        nodes = [u.node for u in users if u.role == role]
        dup = next((n for n in nodes if nodes.count(n) > 1), None)
        if dup:
            raise NatsConfigError(f"{where}: two {role} users for node {dup}")
    consumers = [u.consumer for u in users if u.role in ("signer", "builder")]
    dup = next((c for c in consumers if consumers.count(c) > 1), None)
    if dup:
        raise NatsConfigError(f"{where}: two users with the durable consumer {dup}")


# -- permissions ---------------------------------------------------------------------------

_BASE: Final = ("$JS.API.INFO", "$JS.API.STREAM.NAMES")


def _read(stream: str, *, create: bool = False, purge: bool = False) -> list[str]:
    """Read ``stream`` through consumers of a fresh random name (ephemeral)."""
    out = [f"$JS.API.STREAM.INFO.{stream}"]
    if create:
        out.append(f"$JS.API.STREAM.CREATE.{stream}")
    out += [
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.*",
        f"$JS.API.CONSUMER.DELETE.{stream}.*",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.*",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]
    if purge:
        out.append(f"$JS.API.STREAM.PURGE.{stream}")
    return out


def _compact(stream: str) -> list[str]:
    """Purge ``stream`` behind a snapshot: its state, one message's sequence and time at a
    time (the tail it keeps), the purge; no consumer (nothing delivered), no create."""
    return [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.STREAM.PURGE.{stream}",
    ]


def _durable(stream: str, consumer: str, *, create: bool) -> list[str]:
    """Its own durable consumer of ``stream`` only (no ephemeral, no other node's)."""
    out = [f"$JS.API.STREAM.INFO.{stream}"]
    if create:
        out.append(f"$JS.API.STREAM.CREATE.{stream}")
    return [
        *out,
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{consumer}",
        f"$JS.API.CONSUMER.INFO.{stream}.{consumer}",
        f"$JS.API.CONSUMER.DELETE.{stream}.{consumer}",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
        f"$JS.ACK.{stream}.{consumer}.>",
    ]


def _allowed(u: User) -> tuple[str, list[str]]:
    """What ``u`` may publish, and the comment line that says who it is."""
    if u.role == "publisher":
        return "crlbuilder publish: records into the record stream, nothing read back", [
            f"$JS.API.STREAM.INFO.{RECORDS}", f"$JS.API.STREAM.CREATE.{RECORDS}", "jpki.records",
        ]  # fmt: skip
    if u.role == "signer":
        return (
            f"the signer node {u.node} (jpki-va-node-signer): applies the record stream by its "
            f"durable consumer {u.consumer}, publishes ticks and token records, ships CRLs; gets "
            "the latest snapshot into an empty store (its pod's bootstrap)",
            [*_durable(RECORDS, u.consumer, create=True), "jpki.records",
             *_read(CRLS, create=True, purge=True), "$O.JPKI_CRLS.>", *_read(SNAPSHOTS)],
        )  # fmt: skip
    if u.role == "builder":
        return (
            f"the builder of node {u.node} (jpki-va-node-builder, -bootstrap): applies the record "
            f"stream by its durable consumer {u.consumer}, fetches CRLs and snapshots; writes "
            "and creates nothing",
            [*_durable(RECORDS, u.consumer, create=False), *_read(CRLS), *_read(SNAPSHOTS)],
        )
    if u.role == "snapshot":
        return (
            "crlbuilder snapshot put, then stream compact (jpki-va-node-snapshot): the store "
            "snapshot new nodes start from, then the record stream purged behind it",
            [*_read(SNAPSHOTS, create=True, purge=True), "$O.JPKI_SNAPSHOTS.>",
             *_compact(RECORDS)],
        )  # fmt: skip
    if u.role == "responder":
        return (
            f"the responder of node {u.node} (serve, registry sync): its own ledger subject, the "
            "watch stream, reads the registry and the record stream's state",
            [f"$JS.API.STREAM.INFO.{RECORDS}", *_read(LEDGER, create=True),
             f"jpki.ledger.{LEDGER}.{u.node}.>", *_read(WATCH, create=True), "jpki.watch",
             *_read(WATCH_SNAP, create=True), *_read(REGISTRY)],
        )  # fmt: skip
    if u.role == "watch-compact":
        return "responder watch-compact: snapshots the watch lists, purges the watch stream behind them", [
            *_read(WATCH, create=True, purge=True), *_read(WATCH_SNAP, create=True, purge=True),
            "jpki.watchsnap.>",
        ]  # fmt: skip
    return "responder registry add|remove|... --nats: writes the shared registry", [
        *_read(REGISTRY, create=True), "$KV.JPKI_REGISTRY.registry",
    ]  # fmt: skip


HEADER: Final = """\
# nats-server authorization for jpki-va, written by `crlbuilder nats-config` from {source}:
# do not edit, edit that file and write this one again. One NKey user per role and node,
# each allowed the subjects of its role and node only (least privilege; crlbuilder/natsconfig.py
# says what each may do, docs/operations.md "NATS credentials" how to run it). Include it from
# the servers' configuration (`include ./jpki-va-auth.conf`) beside `jetstream {{}}`,
# `cluster {{}}` and `tls {{}}`. A key written $JPKI_NATS_... is resolved from the server's
# environment (nats-server refuses to start when it is not set). Subjects follow the default
# stream and bucket names. Answers come to each user's own inbox, the prefix its processes
# set as JPKI_VA_NATS_INBOX (written beside each user): no user reads another's.
"""


SHARED: Final = "_INBOX.>"
"""Every client's inbox under nats-py's default prefix: what releases before the per-user
inboxes let every user read, and clients that set no ``JPKI_VA_NATS_INBOX`` use."""


def authorization(
    users: Iterable[User], source: str = "deploy/nats/users.toml", *, shared_inbox: bool = False
) -> str:
    """The ``authorization`` block (with its header comment) for ``users``. ``shared_inbox``:
    each user may also read `SHARED`, for an upgrade's transition only (servers take the
    per-user inboxes before every process sets its own: old clients and new ones both work;
    written again without it once every process sets ``JPKI_VA_NATS_INBOX``)."""
    inboxes = (SHARED,) if shared_inbox else ()
    lines = [
        HEADER.format(source=source),
        "authorization {",
        "  default_permissions: {",
        '    publish: { allow: ["$JS.API.INFO", "$JS.API.STREAM.NAMES"] }',
        '    subscribe: { deny: [">"] }',
        "  }",
        "  users: [",
    ]
    for u in users:
        comment, allowed = _allowed(u)
        key = u.key if u.key.startswith("$") else f'"{u.key}"'
        lines += [f"    # {comment}", f"    # JPKI_VA_NATS_INBOX={u.inbox}",
                  f"    {{ nkey: {key}, permissions: {{", "      publish: { allow: ["]  # fmt: skip
        lines += [f'        "{s}",' for s in (*_BASE, *allowed)]
        reads = ", ".join(f'"{i}"' for i in (f"{u.inbox}.>", *inboxes))
        lines += ["      ] }", f"      subscribe: {{ allow: [{reads}] }}", "    } },"]
    lines += ["  ]", "}", ""]
    return "\n".join(lines)
