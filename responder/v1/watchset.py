"""The watch lists of the changes feed: which certificates each party asked to follow.

A party (a 署名検証者 or 利用者証明検証者, Act §17, §36) registers the certificates it
has verified; `responder.v1.changes` then tells it which of them lost effect (失効)
since its cursor. This module owns the port the handlers use, `WatchSet` (sans-I/O:
the handlers are tested with `MemoryWatchSet`), the keyed hashing every durable
implementation applies (`WatchKeys`) and the secret behind it (`load_secret`).

A watch list is, for a bank, the list of its customers' certificates: it is not kept
in clear. Each entry is stored as ``party tag 8 B ‖ MAC(secret, party tag ‖ status
key) 16 B``, where the party tag is ``MAC(secret, party id) 8 B``: nothing at rest names
a serial or the party, and a probe ("is this status key on this party's list?") is one
keyed hash and one lookup. The MAC is BLAKE2b in its keyed mode (RFC 7693 §2.5, stdlib
`hashlib`), personalised per use: a MAC and PRF like HMAC-SHA256, three times cheaper
per entry here (0.6 against 2.5 µs: registering 10,000 certificates is 10,000 of them). The secret (32 random
bytes, hex, in a file of mode 0600) is drawn once and never logged; without it the
lists cannot be read, so it is backed up with the lists (`responder.v1.watchdb`
checks that the secret it is given is the one the lists were written with).

Registering a certificate is not a provision (nothing about its status is said): only
a change delivered the first time is (`responder.v1.provision`); the lists also keep, per
party, the counted mark of the changes delivered through this node (`WatchSet.count_once`; on
disk beside them, `responder.v1.markdb`).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, NamedTuple, Protocol

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crlbuilder.secretmode import too_open

TAG_BYTES: Final = 8
DIGEST_BYTES: Final = 16
ENTRY_BYTES: Final = TAG_BYTES + DIGEST_BYTES
SECRET_BYTES: Final = 32
HIDDEN_BYTES: Final = 128
GEN_BYTES: Final = 8
"""A watch list's generation (`WatchSet.generation`)."""


class WatchUpdate(NamedTuple):
    """What one batch did to a party's list."""

    added: int
    """Certificates newly watched."""
    already: int
    """Asked to add, already watched."""
    removed: int
    """Certificates no longer watched."""
    absent: int
    """Asked to remove, not watched."""
    total: int
    """The party's list after the batch."""


class WatchFull(Exception):
    """The batch would take the party's list past its bound: nothing was changed."""

    def __init__(self, total: int, limit: int) -> None:
        super().__init__(f"the watch list holds {total} of at most {limit} certificates")
        self.total = total
        self.limit = limit


class WatchUnavailable(Exception):
    """The watch lists cannot be read or written now (the store behind them failed)."""


class WatchSet(Protocol):
    """The watch lists, keyed by party id and status key (`crlbuilder.store.format.status_key`)."""

    def watched(self, party: str, keys: Sequence[bytes]) -> list[bool]:
        """For each of ``keys``, whether ``party`` watches it (one consistent view)."""
        ...

    def update(
        self, party: str, add: Sequence[bytes], remove: Sequence[bytes], *, limit: int
    ) -> WatchUpdate:
        """Remove then add, all or nothing; raises `WatchFull` (nothing changed) when the
        list would exceed ``limit`` entries, `WatchUnavailable` when the store fails."""
        ...

    def generation(self, party: str) -> bytes:
        """`GEN_BYTES` naming the party's list as it is: they change whenever an entry is
        added (and when a snapshot is loaded), so that a counted mark made before is not read
        as covering the changes of a certificate it never saw watched (`responder.v1.provision`).
        Raises `WatchUnavailable`."""
        ...

    def mark(self, party: str) -> bytes | None:
        """The party's counted mark as this node last stored it (`count_once`), to read only.
        Raises `WatchUnavailable`."""
        ...

    def count_once(self, party: str, decide: Callable[[bytes | None, bytes], bytes | None]) -> None:
        """Pass ``decide`` the party's counted mark as this node last stored it (None: none,
        or an entry added since) and the list's `generation`, and store the one it returns
        (None: none), in one transaction (`responder.v1.provision`): two reads of one party
        never both count a change. Raises `WatchUnavailable`."""
        ...


@dataclass
class MemoryWatchSet:
    """A `WatchSet` in a dict of sets, in clear: the twin of `responder.v1.watchdb` for tests."""

    lists: dict[str, set[bytes]] = field(default_factory=dict)
    marks: dict[str, bytes] = field(default_factory=dict)
    gens: dict[str, bytes] = field(default_factory=dict)

    def watched(self, party: str, keys: Sequence[bytes]) -> list[bool]:
        mine = self.lists.get(party, set())
        return [k in mine for k in keys]

    def update(
        self, party: str, add: Sequence[bytes], remove: Sequence[bytes], *, limit: int
    ) -> WatchUpdate:
        mine = set(self.lists.get(party, set()))
        gone = {k for k in remove if k in mine}
        mine -= gone
        new = set(add) - mine
        if len(mine) + len(new) > limit:
            raise WatchFull(len(self.lists.get(party, ())), limit)
        mine |= new
        self.lists[party] = mine
        if new:
            self.gens[party] = secrets.token_bytes(GEN_BYTES)
            self.marks.pop(party, None)
        asked_add, asked_remove = set(add), set(remove)
        return WatchUpdate(
            added=len(new),
            already=len(asked_add) - len(new),
            removed=len(gone),
            absent=len(asked_remove) - len(gone),
            total=len(mine),
        )

    def generation(self, party: str) -> bytes:
        return self.gens.get(party, bytes(GEN_BYTES))

    def mark(self, party: str) -> bytes | None:
        return self.marks.get(party)

    def count_once(self, party: str, decide: Callable[[bytes | None, bytes], bytes | None]) -> None:
        mark = decide(self.marks.get(party), self.generation(party))
        if mark is None:
            self.marks.pop(party, None)
        else:
            self.marks[party] = mark


class WatchKeys:
    """The keyed hashes of the watch lists (module docstring). Holds the secret: never log it."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) < SECRET_BYTES:
            raise ValueError(f"the watch secret must be at least {SECRET_BYTES} bytes")
        self._secret = secret

    def __repr__(self) -> str:
        return "WatchKeys(<secret>)"

    def tag(self, party: str) -> bytes:
        """The party's 8-byte tag: every entry of its list starts with it."""
        mac = hashlib.blake2b(
            party.encode(), key=self._secret, digest_size=TAG_BYTES, person=b"jpkiva-w-party"
        )
        return mac.digest()

    def entries(self, tag: bytes, keys: Sequence[bytes]) -> list[bytes]:
        """The stored entries of ``keys`` (status keys) on the list of the party tagged ``tag``."""
        base = hashlib.blake2b(tag, key=self._secret, digest_size=DIGEST_BYTES,
                               person=b"jpkiva-w-entry")  # fmt: skip
        out: list[bytes] = []
        append, copy = out.append, base.copy
        for k in keys:
            mac = copy()
            mac.update(k)
            append(tag + mac.digest())
        return out

    def snapshot_mac(self, data: bytes) -> bytes:
        """The MAC of a watch snapshot's part or seal (`responder.v1.watchsnap`)."""
        return hashlib.blake2b(
            data, key=self._secret, digest_size=16, person=b"jpkiva-w-snap"
        ).digest()

    def op_mac(self, data: bytes) -> bytes:
        """The MAC of a watch stream operation (`responder.v1.watchlog`, version 2)."""
        return hashlib.blake2b(
            data, key=self._secret, digest_size=16, person=b"jpkiva-w-op"
        ).digest()

    def cursor_key(self) -> bytes:
        """The key of the changes feed's cursors (`responder.v1.cursor.seal`): HKDF-SHA256
        (RFC 5869) of the secret, info ``jpkiva changes cursor v3``. Derived, not the secret
        itself: every node already holds the secret (the lists need it), and a key of its
        own keeps the cursors' HMAC apart from the lists' BLAKE2b MACs."""
        return HKDF(
            algorithm=SHA256(), length=32, salt=None, info=b"jpkiva changes cursor v3"
        ).derive(self._secret)

    def hide(self, tag: bytes, data: bytes) -> bytes:
        """``data`` (at most `HIDDEN_BYTES`) kept at rest for the party tagged ``tag``, not in
        clear: a fresh 16-byte nonce, then ``data`` XOR a keyed BLAKE2b of tag and nonce
        (a counted mark names the status key of the last change delivered)."""
        if len(data) > HIDDEN_BYTES:
            raise ValueError(f"at most {HIDDEN_BYTES} bytes are hidden")
        nonce = secrets.token_bytes(16)
        return nonce + bytes(a ^ b for a, b in zip(data, self._pad(tag, nonce), strict=False))

    def reveal(self, tag: bytes, hidden: bytes) -> bytes:
        """The ``data`` of `hide`."""
        nonce, body = hidden[:16], hidden[16:]
        return bytes(a ^ b for a, b in zip(body, self._pad(tag, nonce), strict=False))

    def _pad(self, tag: bytes, nonce: bytes) -> bytes:
        return b"".join(
            hashlib.blake2b(
                tag + nonce + bytes((i,)), key=self._secret, digest_size=64,
                person=b"jpkiva-w-hide",
            ).digest()
            for i in range(HIDDEN_BYTES // 64)
        )  # fmt: skip

    def check(self) -> bytes:
        """A value that names the secret without revealing it (stored with the lists)."""
        return hashlib.blake2b(b"", key=self._secret, person=b"jpkiva-w-check").digest()


class SecretError(Exception):
    """The watch secret file is unusable (wrong mode, wrong content)."""


def load_secret(path: Path, *, create: bool) -> bytes:
    """The secret in ``path`` (64 hex digits, mode 0600), drawn and written when absent and
    ``create`` (the master does, once, before the workers start)."""
    if create and not path.exists():
        # written whole under a private name, then linked in place: a worker racing another
        # reads either no file or the whole secret, never half of one
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(SECRET_BYTES) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process drew it first: read that one
        finally:
            tmp.unlink(missing_ok=True)
    try:
        st = path.stat()
        text = path.read_text(encoding="ascii").strip()
    except OSError as e:
        raise SecretError(f"{path}: cannot read the watch secret: {e.strerror}") from None
    except UnicodeDecodeError:
        raise SecretError(
            f"{path}: the watch secret must be {2 * SECRET_BYTES} hex digits"
        ) from None
    if too_open(path, stat.S_IMODE(st.st_mode)):
        raise SecretError(f"{path}: the watch secret must be readable by its owner only (0600)")
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) != SECRET_BYTES:
        raise SecretError(f"{path}: the watch secret must be {2 * SECRET_BYTES} hex digits")
    return secret
