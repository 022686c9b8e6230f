"""What workers use at request time: `Registry` (credential -> party lookups) and `LastGoodRegistry`.

`Registry.load` reads, parses and checks a file; `reload_if_changed` picks up a changed one
(one stat); the lookups find a party by bearer token, client certificate or signed-request
key by index, never by trying every key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import (
    load_der_public_key,
)

from responder.registry.checks import (
    _Checker,
)
from responder.registry.party import (
    CredentialInfo,
    Party,
    directory_name,
)
from responder.registry.schema import (
    RegistryError,
    RegistryFile,
    parse_registry,
)
from responder.registry.vocabulary import (
    AuthMethod,
)

_log: Final = logging.getLogger("responder.registry")


_FileSignature = tuple[int, int, int, int, int]

SETTLE: Final = 0.25
"""Seconds a registry file changed in place (same inode: `cp`, an editor saving in place)
must be seen unchanged before a reload takes it: until then it may be half-written, and a
shorter file can be valid TOML (parties missing, a suspension cut off). Every write moves
its mtime or size, so a writer still at work changes what is seen. Measured between two
looks on a clock that only goes forward (`time.monotonic`), never from the file's mtime
against the wall clock: a clock set back (or an mtime from another host) would hold a
changed file, a suspension with it, until the clock passed the mtime again. A file replaced
whole (renamed over the old one, as `responder registry` writes) is complete when it
appears: taken at once."""


def _signature(st: os.stat_result) -> _FileSignature:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Registry:
    """Lookup tables built from a registry file: token hash, cert fingerprint -> party."""

    def __init__(
        self,
        parties: Iterable[Party],
        *,
        file: RegistryFile | None = None,
        source: str = "",
        warnings: Iterable[str] = (),
    ) -> None:
        self.parties: dict[str, Party] = {p.id: p for p in parties}
        self.file = file if file is not None else RegistryFile()
        self.source = source
        self.warnings: tuple[str, ...] = tuple(warnings)
        self._stat: _FileSignature | None = None
        self._failed: _FileSignature | None = None
        self._settling: tuple[_FileSignature, float] | None = None
        """A file changed in place, as first seen, and when (`SETTLE`)."""
        self._tokens: dict[bytes, tuple[Party, CredentialInfo]] = {}
        self._certs: dict[bytes, tuple[Party, CredentialInfo]] = {}
        self._signers: list[tuple[Party, CredentialInfo, PublicKeyTypes]] = []
        self._signers_by_name: dict[bytes, list[tuple[Party, CredentialInfo, PublicKeyTypes]]] = {}
        self._signers_by_cert: dict[bytes, tuple[Party, CredentialInfo, PublicKeyTypes]] = {}
        for p in self.parties.values():
            for c in p.credentials:
                if c.kind is AuthMethod.TOKEN:
                    self._tokens[c.key] = (p, c)
                elif c.kind is AuthMethod.MTLS:
                    self._certs[c.key] = (p, c)
                else:
                    signer = (p, c, load_der_public_key(c.spki))
                    self._signers.append(signer)
                    self._signers_by_cert[c.key] = signer
                    name = directory_name(c.subject)
                    self._signers_by_name.setdefault(name, []).append(signer)

    # --- loading ---------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path, *, now: float | None = None) -> Registry:
        """Read, parse and check a registry file (RegistryError names what is wrong).

        Opened without blocking and refused unless a regular file: the master and every worker
        look at the file each second (`reload_if_changed`), and a path replaced by a named
        pipe (a symbolic link to one) held them in ``open`` for ever, every request with
        them; one to a device (/dev/zero) was read without end.

        A file of nothing but white space (truncated, or created and not yet written; no tool
        writes one without its version) is refused too, as the builder refuses it
        (`crlbuilder.verifiers`): read as a registry of no party it refused every call 401
        until fixed. So a reload keeps the last good registry and a start with one is a
        configuration error; ``version = 2`` alone is a registry that names no party."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
            with open(fd, encoding="utf-8") as fh:  # as Path.read_text reads (newlines too)
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise RegistryError(f"{path}: cannot read the registry: not a regular file")
                os.set_blocking(fd, True)
                text = fh.read()
        except OSError as e:
            raise RegistryError(f"{path}: cannot read the registry: {e.strerror}") from None
        except UnicodeDecodeError:
            raise RegistryError(f"{path}: not UTF-8 text") from None
        if not text.strip():  # read as "no party", every call would be refused 401
            raise RegistryError(
                f"{path}: empty: not a registry (truncated, or not yet written); no tool "
                "writes one without at least its version"
            )
        reg = cls.build(
            parse_registry(text, source=str(path)), base=path.parent, source=str(path), now=now
        )
        reg._stat = _signature(st)
        return reg

    def reload_if_changed(self, path: Path, *, now: float | None = None) -> Registry | None:
        """A new Registry if ``path`` changed since this one was loaded, else None.

        Cheap (one stat): call it every second in each worker. A changed file that does
        not load raises RegistryError once (log it and keep serving with this registry);
        later calls return None until the file changes again. A file changed in place is
        taken by a call `SETTLE` seconds or more after the first that saw it as it is
        (``now``: a `time.monotonic` reading, the default), never by the first.
        """
        try:
            st = path.stat()
        except OSError as e:
            if self._failed is None:
                self._failed = (0, 0, 0, 0, 0)
                raise RegistryError(f"{path}: cannot read the registry: {e.strerror}") from None
            return None
        sig = _signature(st)
        if sig in (self._stat, self._failed):
            return None
        in_place = self._stat is not None and sig[:2] == self._stat[:2]
        if in_place:
            clock = time.monotonic() if now is None else now
            if self._settling is None or self._settling[0] != sig:
                self._settling = (sig, clock)  # first seen so: it may be mid-write
                return None
            if clock - self._settling[1] < SETTLE:
                return None
        try:
            return Registry.load(path)
        except RegistryError:
            self._failed = sig
            raise

    @classmethod
    def build(
        cls, data: RegistryFile, *, base: Path, source: str, now: float | None = None
    ) -> Registry:
        """Check every rule of the module docstring and build the lookup tables.

        Raises RegistryError and nothing else, whatever the file holds: the workers' reload,
        the master and the admin commands catch that and keep the registry in use, so a file
        that no check foresaw is refused like any bad file (naming what went wrong) rather
        than stopping the thread that takes later changes."""
        checker = _Checker(base=base, source=source, now=time.time() if now is None else now)
        try:
            parties = checker.check(data)
            if checker.errors:
                raise RegistryError("\n".join(checker.errors))
            return cls(parties, file=data, source=source, warnings=checker.warnings)
        except RegistryError:
            raise
        except Exception as e:  # see the docstring
            raise RegistryError(
                f"{source}: cannot be checked ({type(e).__name__}: {e}); refused"
            ) from None

    # --- authentication lookups ------------------------------------------------------

    def by_token(self, token: bytes, now: float | None = None) -> Party | None:
        """The party whose bearer token this is (compared by SHA-256), within its window."""
        hit = self._tokens.get(hashlib.sha256(token).digest())
        if hit is None or not hit[1].valid_at(time.time() if now is None else now):
            return None
        return hit[0]

    def by_certificate(self, cert_der: bytes, now: float | None = None) -> Party | None:
        """The party a TLS client certificate belongs to (by SHA-256 fingerprint)."""
        hit = self._certs.get(hashlib.sha256(cert_der).digest())
        if hit is None or not hit[1].valid_at(time.time() if now is None else now):
            return None
        return hit[0]

    def signing_keys(self, now: float | None = None) -> list[tuple[Party, PublicKeyTypes]]:
        """(party, public key) for each signed-request credential valid now."""
        t = time.time() if now is None else now
        return [(p, key) for p, c, key in self._signers if c.valid_at(t)]

    def request_signers(
        self,
        requestor_name: bytes | None,
        certs: Iterable[bytes] = (),
        now: float | None = None,
    ) -> list[tuple[Party, PublicKeyTypes]]:
        """The signed-request keys, valid now, that a signed OCSP request can be checked
        against: found by index, never by trying every registered key (O(1)).

        By the requestorName (RFC 6960 §4.1.2: a signed request names its requestor): the
        certificates whose subject it is; among them, one the request attached (its
        SHA-256) comes first. Without a requestorName, the attached certificate that is
        registered, if any. Several candidates only when one party holds two certificates
        with the same subject (a rotation), or parties share a subject.
        """
        t = time.time() if now is None else now
        attached = [self._signers_by_cert.get(hashlib.sha256(c).digest()) for c in certs]
        if requestor_name is not None:
            named = self._signers_by_name.get(requestor_name, [])
            found = [x for x in attached if x is not None and any(x is y for y in named)]
            found += [y for y in named if not any(y is x for x in found)]
        else:
            found = [x for x in attached[:1] if x is not None]
        return [(p, key) for p, c, key in found if c.valid_at(t)]

    def signing_parties(self, now: float | None = None) -> list[Party]:
        """Parties holding a signed-request credential valid now."""
        seen: dict[str, Party] = {}
        for p, _ in self.signing_keys(now):
            seen.setdefault(p.id, p)
        return list(seen.values())


class LastGoodRegistry:
    """The last registry that loaded, kept by the master and inherited by every worker.

    The master makes it from the registry it checked at start, calls `refresh`
    about once a second and before each fork (`responder.server.serve`'s
    ``master_tick``), and each worker, after the fork, calls `for_worker`: the
    file on disk if it loads, else this copy, which the worker received with the
    fork. So a worker restarted while the file is broken serves the registry the
    master last loaded (the file as it stood before the bad edit) instead of
    failing to start; its own once-a-second check then picks the file up when it
    is fixed. A path that never loaded has no last good registry: the master
    refuses to start (`responder.cli`).
    """

    def __init__(self, path: Path, registry: Registry) -> None:
        self.path = path
        self.registry = registry
        self.error: str | None = None
        """Why the file on disk does not load now (None: it does)."""

    def refresh(self, *, now: float | None = None) -> None:
        """Load the file if it changed; a file that does not load keeps the last good one."""
        try:
            fresh = self.registry.reload_if_changed(self.path, now=now)
        except RegistryError as e:
            self.error = str(e)
            _log.error(
                "registry_file_bad",
                extra={"fields": {"error": self.error, "kept": "the last good registry"}},
            )
            return
        if fresh is not None:
            self.registry, self.error = fresh, None

    def for_worker(self, *, now: float | None = None) -> tuple[Registry, str | None]:
        """The registry a new worker serves, and why the file did not load (None: it did).

        The copy the master loaded, unless the file changed since (`refresh`: one stat):
        a worker does not parse and check again the registry the master just checked.
        """
        self.refresh(now=now)
        return self.registry, self.error
