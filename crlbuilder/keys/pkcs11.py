"""Signing keys in a token over PKCS#11 (署名装置, Ord §73, §74): the only module that speaks PKCS#11.

The Ordinance wants the issuing keys (発行者署名符号) on dedicated equipment that
prevents their leakage and is operated only by those authorised (認証業務実施設備,
Ord §73(3), §73(4), §74(3)); an HSM reached through PKCS#11, its user PIN
required, is that equipment. This
module owns every PKCS#11 call of the project, through python-pkcs11:

- `parse_key_uri`: an RFC 7512 PKCS#11 URI naming a key, e.g.
  ``pkcs11:token=jpki-va;object=ocsp-sign-g1;type=private?pin-source=file:/etc/jpki-va/pin``.
  Path attributes: ``token`` (token label, required), ``object`` (key label,
  required), ``type`` (``private`` if given). Query attributes: ``pin-source``
  only, ``file:/absolute/path`` (a file of mode 0600 holding the user PIN) or
  ``env:NAME`` (our extension: the PIN in an environment variable). Anything
  else is refused, a ``pin-value`` first of all: a PIN never sits in
  configuration, on a command line or in a log.
- `Pkcs11Signer`: a `crlbuilder.keys.signer.Signer` whose RSA key stays in the
  token; signatures are CKM_SHA256_RSA_PKCS (sha256WithRSAEncryption).
- `generate_rsa_key` and `destroy_key`: the key-ceremony primitives (a key pair
  made inside the token, private half sensitive and never extractable; a key
  destroyed in the token).

Sessions: a PKCS#11 library's state does not survive ``fork()`` (PKCS#11 v2.40
§6.7.7: a child must call C_Initialize itself). Each process therefore opens
the module and logs in on its own, lazily, the first time it signs: the state is
kept per process id, so the builder's forked signing workers and the
responder's forked workers each get their own. Login happens once per process
and token (the login state is shared by all sessions of an application); each
signing thread then uses a session of its own, kept open (no per-signature
login or open).

Errors (`SignerError`) name the key by its reference with any PIN-bearing
attribute removed (`redact`), and never contain the PIN. A token that fails at
run time (removed, closed sessions) makes `sign` raise `TokenUnavailable`, and
the next signature tries the token afresh, so a returning token is used again
without a restart.

The module path comes from ``JPKIVA_PKCS11_MODULE``, by default SoftHSM2's
``/usr/lib/softhsm/libsofthsm2.so`` when it exists.

python-pkcs11's types are loose (attribute values are ``Any``): that stays in
this module; what it exports is typed.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote

import pkcs11
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass, TokenFlag
from pkcs11 import exceptions as p11e

from crlbuilder.auditlog import ChainError
from crlbuilder.keyref import PKCS11_SCHEME, is_pkcs11_uri, redact
from crlbuilder.keys import oplog
from crlbuilder.keys.signer import (
    MIN_RSA_BITS,
    SHA256_WITH_RSA_DER,
    PinRefused,
    SignerError,
    load_certificate,
    read_private_file,
    spki_der,
)

__all__ = [
    "DEFAULT_MODULE",
    "MODULE_ENV",
    "URI_SCHEME",
    "KeyUri",
    "Pkcs11Signer",
    "TokenKey",
    "TokenUnavailable",
    "close_all",
    "destroy_key",
    "destroy_token_key",
    "generate_rsa_key",
    "is_pkcs11_uri",
    "module_path",
    "parse_key_uri",
    "redact",
    "token_keys",
]

log = logging.getLogger(__name__)

URI_SCHEME: Final = PKCS11_SCHEME
MODULE_ENV: Final = "JPKIVA_PKCS11_MODULE"
"""Environment variable naming the PKCS#11 module (shared library) to load."""
DEFAULT_MODULE: Final = "/usr/lib/softhsm/libsofthsm2.so"

_PATH_ATTRS: Final = frozenset({"token", "object", "type"})
_QUERY_ATTRS: Final = frozenset({"pin-source"})
_SECRET_ATTRS: Final = ("pin-value",)
_MAX_PIN: Final = 256
_TOKEN_TRIES: Final = 5
_TOKEN_RETRY_SECONDS: Final = 0.05
_IDLE_WAIT_SECONDS: Final = 5.0


class TokenUnavailable(SignerError):
    """The token failed at run time (removed, not present, sessions gone): retry later."""


class _KeyRefused(SignerError):
    """The key found under the reference's label may not sign for the certificate (not RSA,
    too short, leakable, another key): refused at start even when an outage is accepted."""


@dataclass(frozen=True, slots=True)
class KeyUri:
    """A parsed PKCS#11 key reference: where the key is and where its PIN comes from."""

    token: str
    """CKA_LABEL of the token (``token=``)."""
    label: str
    """CKA_LABEL of the private key (``object=``)."""
    pin_source: str
    """``file:/path`` or ``env:NAME``."""
    ref: str
    """The reference as written (it holds no PIN: a ``pin-value`` is refused)."""

    def read_pin(self) -> str:
        """The user PIN, from its file (mode 0600 or stricter) or environment variable."""
        kind, _, where = self.pin_source.partition(":")
        if kind == "env":
            value = os.environ.get(where)
            if value is None:
                raise SignerError(f"{self.ref}: the PIN's environment variable {where} is not set")
        else:
            try:
                raw = read_private_file(Path(where), "PIN file")
            except SignerError as exc:
                raise SignerError(f"{self.ref}: {exc}") from None
            try:
                value = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise SignerError(f"{self.ref}: the PIN file is not UTF-8 text") from None
        pin = value.strip("\r\n")
        if not pin or len(pin) > _MAX_PIN:
            raise SignerError(f"{self.ref}: the PIN from {kind}:{where} is empty or too long")
        return pin


def parse_key_uri(key_ref: str) -> KeyUri:
    """Parse an RFC 7512 PKCS#11 URI naming a private key and its PIN source.

    Refuses, with a message naming the reference (PIN-bearing values removed):
    another scheme, an unknown or repeated attribute, a ``pin-value``, a missing
    ``token`` or ``object``, a ``type`` other than ``private``, and a
    ``pin-source`` that is neither ``file:/absolute/path`` nor ``env:NAME``.
    """
    shown = redact(key_ref)
    if not is_pkcs11_uri(key_ref):
        raise SignerError(f"{shown}: not a PKCS#11 URI (expected pkcs11:token=...;object=...)")
    body = key_ref[len(URI_SCHEME) :]
    path, _, query = body.partition("?")
    attrs: dict[str, str] = {}
    for text, allowed, sep in ((path, _PATH_ATTRS, ";"), (query, _QUERY_ATTRS, "&")):
        if not text:
            continue
        for item in text.split(sep):
            name, eq, raw = item.partition("=")
            name = name.strip().lower()
            if name in _SECRET_ATTRS:
                raise SignerError(
                    f"{shown}: a PIN inside the key reference is refused; "
                    "use pin-source=file:/path (mode 0600) or pin-source=env:NAME"
                )
            if not eq:  # not echoed: it may be a PIN written without its name
                raise SignerError(
                    f"{shown}: a part without '=' is not accepted (path: token=, object=, "
                    "type=; query: pin-source=)"
                )
            if name not in allowed:
                raise SignerError(
                    f"{shown}: attribute {name!r} is not accepted here "
                    f"(path: token, object, type; query: pin-source)"
                )
            if name in attrs:
                raise SignerError(f"{shown}: attribute {name!r} is given twice")
            attrs[name] = unquote(raw, errors="strict")
    for required in ("token", "object", "pin-source"):
        if not attrs.get(required):
            raise SignerError(f"{shown}: the {required!r} attribute is required")
    if attrs.get("type", "private") != "private":
        raise SignerError(f"{shown}: type={attrs['type']!r}; a signing key has type=private")
    source = attrs["pin-source"]
    kind, _, where = source.partition(":")
    if kind == "file":
        where = where.removeprefix("//")
        if not where.startswith("/"):
            raise SignerError(f"{shown}: pin-source file: needs an absolute path")
    elif kind == "env":
        if not where or not all(c.isalnum() or c == "_" for c in where):
            raise SignerError(f"{shown}: pin-source env: needs a variable name")
    else:
        raise SignerError(f"{shown}: pin-source must be file:/absolute/path or env:NAME")
    return KeyUri(attrs["token"], attrs["object"], f"{kind}:{where}", shown)


def module_path() -> str:
    """The PKCS#11 module to load: ``$JPKIVA_PKCS11_MODULE``, else SoftHSM2's when installed."""
    configured = os.environ.get(MODULE_ENV, "")
    if configured:
        return configured
    if Path(DEFAULT_MODULE).exists():
        return DEFAULT_MODULE
    raise SignerError(
        f"no PKCS#11 module: set {MODULE_ENV} to the module's path (e.g. {DEFAULT_MODULE})"
    )


# --- per-process state: the module, one login per token, one session per thread ---------


class _TokenState:
    """One token as this process uses it: logged in once, a session per signing thread."""

    def __init__(self, token: Any, login_session: Any, pin: str) -> None:
        self.token = token
        self.pin = pin
        """The PIN it was logged in with: another key of the token must give the same."""
        self.login_session = login_session
        """Kept open: the login lasts as long as one session of the application is open."""
        self.local = threading.local()


class _Process:
    """This process's PKCS#11 state; replaced when the process id changes (after fork)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        """Notified when a signature ends: `_forget` finalises a module only once none runs."""
        self.signing = 0
        """Signatures under way in this process's threads (counted under ``lock``)."""
        self.libs: dict[str, Any] = {}
        self.tokens: dict[tuple[str, str], _TokenState] = {}
        self.refused: set[tuple[str, str, bytes]] = set()
        """(module, token label, SHA-256 of a PIN) the token refused at run time: not tried
        again by this process or a child forked after (`_run_time_login_allowed`)."""


_state = _Process()
_state_lock = threading.Lock()


def _after_fork_in_child() -> None:
    """A forked child starts with no PKCS#11 state and fresh locks (a parent's thread may
    have held one at the fork)."""
    global _state, _state_lock
    _state_lock = threading.Lock()
    refused = _state.refused
    _state = _Process()
    _state.refused = set(refused)


os.register_at_fork(after_in_child=_after_fork_in_child)


def _process() -> _Process:
    global _state
    if _state.pid != os.getpid():
        with _state_lock:
            if _state.pid != os.getpid():
                refused = _state.refused
                _state = _Process()
                _state.refused = set(refused)
    return _state


def _lib(proc: _Process, so: str, uri: KeyUri) -> Any:
    lib = proc.libs.get(so)
    if lib is None:
        try:
            lib = pkcs11.lib(so)
            # A library initialised before a fork (in the parent) is initialised again here:
            # its sessions and login belong to the parent (PKCS#11 v2.40 §6.7.7).
            lib.reinitialize()
        except p11e.PKCS11Error as exc:
            raise SignerError(
                f"{uri.ref}: cannot load the PKCS#11 module {so}: {_why(exc)}"
            ) from None
        proc.libs[so] = lib
    return lib


def _token(
    proc: _Process, so: str, uri: KeyUri, pin: str, *, hold: bool = False, run_time: bool = False
) -> _TokenState:
    """This process's logged-in state of the URI's token; ``hold`` counts a signature under
    way (end it with `_release`) so that no other thread finalises the module meanwhile;
    ``run_time``: a login by a running service, not the one at its start
    (`_run_time_login_allowed`)."""
    with proc.lock:
        state = _token_locked(proc, so, uri, pin, run_time=run_time)
        if hold:
            proc.signing += 1
        return state


def _release(proc: _Process) -> None:
    with proc.lock:
        proc.signing -= 1
        proc.idle.notify_all()


def _token_locked(
    proc: _Process, so: str, uri: KeyUri, pin: str, *, run_time: bool = False
) -> _TokenState:
    state = proc.tokens.get((so, uri.token))
    if state is not None:
        if not hmac.compare_digest(state.pin.encode(), pin.encode()):
            # a token has one user PIN, and another key logged in with a different one
            raise SignerError(
                f"{uri.ref}: wrong PIN (not the PIN token {uri.token!r} is logged in with)"
            )
        return state
    lib = _lib(proc, so, uri)
    try:
        # initialise the module afresh between tries only when nothing else of this
        # process uses it (another token's sessions, a signature under way)
        token = _get_token(lib, uri.token, reinit=not proc.tokens and proc.signing == 0)
    except p11e.NoSuchToken:
        raise SignerError(f"{uri.ref}: no token labelled {uri.token!r} in {so}") from None
    except p11e.MultipleTokensReturned:
        raise SignerError(f"{uri.ref}: several tokens are labelled {uri.token!r}") from None
    except p11e.PKCS11Error as exc:
        raise TokenUnavailable(f"{uri.ref}: token {uri.token!r}: {_why(exc)}") from None
    refusal = (so, uri.token, hashlib.sha256(pin.encode()).digest())
    if run_time:
        _run_time_login_allowed(proc, token, uri, refusal)
    try:
        session = _log_in(token, pin)
    except (p11e.PinIncorrect, p11e.PinInvalid, p11e.PinLenRange):
        if run_time:
            proc.refused.add(refusal)
        raise PinRefused(f"{uri.ref}: the token refused the PIN (wrong PIN)") from None
    except p11e.PinLocked:
        raise PinRefused(f"{uri.ref}: the token's user PIN is locked") from None
    except p11e.UserAlreadyLoggedIn:  # another key of this token logged in already
        session = token.open()
    except p11e.PKCS11Error as exc:
        raise TokenUnavailable(f"{uri.ref}: cannot log in: {_why(exc)}") from None
    state = _TokenState(token, session, pin)
    proc.tokens[(so, uri.token)] = state
    log.info("pkcs11 session opened: token %s, process %d", uri.token, proc.pid)
    return state


_PIN_TRIES_SPENT: Final = (
    TokenFlag.USER_PIN_COUNT_LOW | TokenFlag.USER_PIN_FINAL_TRY | TokenFlag.USER_PIN_LOCKED
)


def _run_time_login_allowed(
    proc: _Process, token: Any, uri: KeyUri, refusal: tuple[str, str, bytes]
) -> None:
    """`TokenUnavailable` instead of a login a running service would make with a PIN that may
    be wrong: every wrong PIN brings the token nearer to locking its user PIN, which stops
    every key in it (the CA keys too) until its security officer unlocks it.

    A login at start is the operator's one try (`Pkcs11Signer.open`). Later ones (the token
    back after an outage, a worker forked after the start's check) are many: every
    signature tried again, every worker, every signing process the builder starts again.
    So none is made with a PIN this process (or its parent before the fork) saw refused,
    nor while the token says a wrong PIN was given since its last successful login
    (CKF_USER_PIN_COUNT_LOW, FINAL_TRY, LOCKED in CK_TOKEN_INFO, PKCS#11 v2.40 §5.2: what
    another process's refusal leaves); a successful login (a restart with the right PIN)
    clears it."""
    if refusal in proc.refused:
        raise TokenUnavailable(
            f"{uri.ref}: the token refused this PIN; it is not tried again (each wrong PIN "
            "brings the token nearer to locking it): check the PIN source, then restart"
        )
    try:
        flags = TokenFlag(int(token.flags))
    except (p11e.PKCS11Error, TypeError, ValueError):
        return
    if flags & _PIN_TRIES_SPENT:
        spent = (
            "locked" if flags & TokenFlag.USER_PIN_LOCKED else "given wrong since its last login"
        )
        raise TokenUnavailable(
            f"{uri.ref}: the token's user PIN was {spent} (CK_TOKEN_INFO flags): a running "
            "service does not log in then (each wrong PIN brings the token nearer to locking "
            "it): check the PIN source, then restart"
        )


def _log_in(token: Any, pin: str) -> Any:
    """A session logged in as the user, tried again a few times on CKR_GENERAL_ERROR: a
    file-backed module (SoftHSM2) writes the token's file at login, and a sibling process
    logging in at the same moment (the builder's forked signing workers) can fail so."""
    for attempt in range(_TOKEN_TRIES):
        try:
            return token.open(user_pin=pin)
        except p11e.GeneralError:
            if attempt == _TOKEN_TRIES - 1:
                raise
            time.sleep(_TOKEN_RETRY_SECONDS * (attempt + 1))
    raise AssertionError("unreachable")


def _get_token(lib: Any, label: str, *, reinit: bool) -> Any:
    """The token labelled ``label``, asked again a few times (a quarter of a second in all,
    the module initialised afresh each time when ``reinit``): a file-backed module (SoftHSM2) reading its
    tokens while another process (a sibling worker) logs in can miss the token, or answer
    CKR_GENERAL_ERROR, for a moment."""
    for attempt in range(_TOKEN_TRIES):
        try:
            return lib.get_token(token_label=label)
        except p11e.MultipleTokensReturned:
            raise
        except p11e.PKCS11Error:
            if attempt == _TOKEN_TRIES - 1:
                raise
            time.sleep(_TOKEN_RETRY_SECONDS)
            if reinit:
                lib.reinitialize()  # the module reads its tokens when initialised
    raise AssertionError("unreachable")


def _forget(proc: _Process, so: str, uri: KeyUri) -> None:
    """Drop a failed token's sessions so that the next signature opens it afresh, and, once
    no token of this process is left and no other thread is signing, finalise the module
    (a file-backed module such as SoftHSM2 reads its tokens when initialised)."""
    with proc.lock:
        state = proc.tokens.pop((so, uri.token), None)
        if state is not None:
            with contextlib.suppress(p11e.PKCS11Error):  # the token is gone: nothing to close
                state.login_session.close()
        if proc.tokens or so not in proc.libs:
            return
        if not proc.idle.wait_for(lambda: proc.signing == 0, timeout=_IDLE_WAIT_SECONDS):
            return  # a signature hangs in the module: leave it initialised
        lib = proc.libs.pop(so)
        with contextlib.suppress(p11e.PKCS11Error):
            lib.finalize()


def _why(exc: BaseException) -> str:
    """A PKCS#11 error's name (CKR_*-like), never its arguments (they may echo input)."""
    return type(exc).__name__


def _find_key(session: Any, uri: KeyUri) -> Any:
    try:
        return session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=uri.label)
    except p11e.NoSuchKey:
        raise SignerError(
            f"{uri.ref}: no private key labelled {uri.label!r} in token {uri.token!r}"
        ) from None
    except p11e.MultipleObjectsReturned:
        raise SignerError(
            f"{uri.ref}: several private keys are labelled {uri.label!r} in token {uri.token!r}"
        ) from None


def _refuse_leakable(key: Any, uri: KeyUri) -> None:
    """SignerError for a private key the token would let out: CKA_EXTRACTABLE true (it can be
    wrapped out) or CKA_SENSITIVE false (its value can be read). The issuing keys
    (発行者署名符号) are kept on equipment that prevents their leakage (Ord §73(4)); a key
    imported or generated without these attributes is refused at start, not used."""
    try:
        extractable = bool(key[Attribute.EXTRACTABLE])
        sensitive = bool(key[Attribute.SENSITIVE])
    except p11e.PKCS11Error as exc:
        raise SignerError(
            f"{uri.ref}: cannot read the key's CKA_EXTRACTABLE/CKA_SENSITIVE: {_why(exc)}"
        ) from None
    if extractable or not sensitive:
        why = "CKA_EXTRACTABLE is true" if extractable else "CKA_SENSITIVE is false"
        raise SignerError(
            f"{uri.ref}: the key can leave the token ({why}); a signing key must be sensitive "
            "and not extractable (Ord §73(4)): generate it in the token "
            "(crlbuilder keys new-ca / new-ocsp)"
        )


def _public_key(key: Any, uri: KeyUri) -> rsa.RSAPublicKey:
    if key.key_type != KeyType.RSA:
        raise SignerError(f"{uri.ref}: not an RSA key")
    modulus = int.from_bytes(bytes(key[Attribute.MODULUS]), "big")
    exponent = int.from_bytes(bytes(key[Attribute.PUBLIC_EXPONENT]), "big")
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


class Pkcs11Signer:
    """A `Signer` whose RSA key lives in a PKCS#11 token and never leaves it.

    Build it with `Pkcs11Signer.open`, which logs in, finds the key, and checks
    that it is RSA-2048 or more and matches the certificate, so that every
    fault shows at start. `sign` uses this process's and thread's own session
    (opened after fork, logged in once).
    """

    __slots__ = ("_cert_path", "_certificate", "_pin", "_run_time", "_session_log", "_so", "_uri")

    def __init__(
        self,
        uri: KeyUri,
        certificate: x509.Certificate,
        pin: str,
        so: str,
        cert_path: str | os.PathLike[str] = "its certificate",
    ) -> None:
        self._uri = uri
        self._certificate = certificate
        self._cert_path = os.fspath(cert_path)
        self._run_time = False
        """Set once opened: a login from then on is a running service's (`_token`)."""
        self._pin = pin
        self._so = so
        self._session_log: oplog.SigningSession | None = None

    @classmethod
    def open(
        cls,
        key_ref: str,
        cert_path: str | os.PathLike[str],
        module: str | None = None,
        *,
        outage_ok: bool = False,
    ) -> Pkcs11Signer:
        """Open the key named by ``key_ref`` (a PKCS#11 URI) and check it against its certificate.

        ``outage_ok``: when the token cannot be reached now, return the signer unchecked
        (its `sign` raises `TokenUnavailable` until the token is back) instead of raising;
        for a process whose keys were checked already, before it was forked. A faulty
        reference, PIN source or certificate is refused all the same.
        """
        uri = parse_key_uri(key_ref)
        certificate = load_certificate(Path(cert_path))
        so = module or module_path()
        signer = cls(uri, certificate, uri.read_pin(), so, cert_path)
        # a process forked after its parent's check (``outage_ok``) logs in at run time
        signer._run_time = outage_ok
        try:
            signer._key()  # found, and checked against the certificate (`_checked`)
        except _KeyRefused:
            raise
        except SignerError as exc:
            if not outage_ok:
                raise
            log.warning("signing key not reachable now, signing will be retried: %s", exc)
            return signer
        finally:
            signer._run_time = True
        log.info("loaded signing key %s for certificate %s", uri.ref, cert_path)
        return signer

    @property
    def certificate(self) -> x509.Certificate:
        return self._certificate

    @property
    def signature_algorithm_der(self) -> bytes:
        return SHA256_WITH_RSA_DER

    @property
    def key_ref(self) -> str:
        """The key's reference (no PIN in it)."""
        return self._uri.ref

    def _key(self, proc: _Process | None = None, *, hold: bool = False) -> Any:
        """This thread's handle on the key, in its own session (opened on first use after
        fork); ``hold``: a signature under way, ended by `_release` (released here on error)."""
        proc = proc or _process()
        state = _token(proc, self._so, self._uri, self._pin, hold=hold, run_time=self._run_time)
        try:
            local = state.local
            if getattr(local, "session", None) is None:
                local.session = state.token.open()  # logged in already, by the login session
                local.keys = {}
            key = local.keys.get(self._uri.label)
            if key is None:
                # found by its label, which another key may hold now: checked each time
                key = self._checked(_find_key(local.session, self._uri))
                local.keys[self._uri.label] = key
        except BaseException:
            if hold:
                _release(proc)
            raise
        return key

    def _checked(self, key: Any) -> Any:
        """``key`` when it may sign for the certificate: RSA-2048 or more, kept in the token
        (`_refuse_leakable`) and the certificate's; else `_KeyRefused` naming the key.

        Checked wherever the key is found by its label (at start, and in every session
        opened later: a new signing thread, the token back after an outage): the label may
        name another key by then (a key destroyed and made again under it, a token restored
        or replaced, another HSM of a failover group), whose signatures every client would
        reject under this certificate."""
        uri, where = self._uri, self._cert_path
        try:
            _refuse_leakable(key, uri)
            public = _public_key(key, uri)
        except SignerError as exc:
            raise _KeyRefused(str(exc)) from None
        if public.key_size < MIN_RSA_BITS:
            raise _KeyRefused(
                f"{uri.ref}: the key is RSA-{public.key_size}; "
                f"at least RSA-{MIN_RSA_BITS} is required"
            )
        try:
            matches = spki_der(public) == spki_der(self._certificate.public_key())
        except SignerError as exc:
            raise _KeyRefused(f"{uri.ref} with {where}: {exc}") from None
        if not matches:
            raise _KeyRefused(
                f"{uri.ref} with {where}: the key in the token does not match "
                "the certificate's public key"
            )
        return key

    def sign(self, data: bytes) -> bytes:
        """RSASSA-PKCS1-v1_5 with SHA-256 of ``data``, computed in the token.

        Raises `TokenUnavailable` when the token fails: the key opened at start is not
        reachable now (token removed, module or sessions gone); the next call tries the
        token afresh. Nothing is signed while the operation log cannot record the
        signing session's start.
        """
        session = self._signing_session()
        proc = _process()
        try:
            key = self._key(proc, hold=True)
            try:
                signature = bytes(key.sign(data, mechanism=Mechanism.SHA256_RSA_PKCS))
            finally:
                _release(proc)
        except SignerError as exc:  # it opened at start: at run time, that is an outage
            _forget(proc, self._so, self._uri)
            if isinstance(exc, TokenUnavailable):
                raise
            raise TokenUnavailable(str(exc)) from None
        except p11e.PKCS11Error as exc:
            _forget(proc, self._so, self._uri)
            raise TokenUnavailable(f"{self._uri.ref}: signing failed: {_why(exc)}") from None
        session.signed()
        return signature

    def _signing_session(self) -> oplog.SigningSession:
        """This process's signing session on the key (its start and end go to the operation
        log, Ord §73(3), with the count of signatures; not one line per signature). Nothing
        is signed while the operation log cannot record the session's start."""
        session = self._session_log
        if session is None or not session.current():
            try:
                session = self._session_log = oplog.SigningSession(self._uri.ref)
            except (ChainError, OSError) as exc:
                raise TokenUnavailable(
                    f"{self._uri.ref}: the operation log cannot record the signing session: {exc}"
                ) from None
        return session

    def __repr__(self) -> str:
        return f"Pkcs11Signer({self._uri.ref}, certificate serial {self._certificate.serial_number:#x})"


# --- key ceremony primitives ----------------------------------------------------------


def refuse_used_label(key_ref: str, module: str | None = None) -> None:
    """SignerError when the token already has a private key under the URI's label: what
    `generate_rsa_key` refuses, checked before a ceremony that makes several keys makes any."""
    uri = parse_key_uri(key_ref)
    so = module or module_path()
    state = _token(_process(), so, uri, uri.read_pin())
    with state.token.open() as session:
        try:
            session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=uri.label)
        except p11e.NoSuchKey:
            return
        except p11e.MultipleObjectsReturned:
            pass
    raise SignerError(f"{uri.ref}: token {uri.token!r} already has a key {uri.label!r}")


def generate_rsa_key(key_ref: str, bits: int = 2048, module: str | None = None) -> rsa.RSAPublicKey:
    """Make an RSA key pair inside the token under the URI's ``object`` label; return its public key.

    The private key is a token object, private, sensitive and never extractable
    (Ord §73(4): the equipment that makes and keeps the issuer's signing key,
    発行者署名符号, prevents its leakage); only the public key comes out, for the
    certificate. Refuses a label already used by a private key.
    """
    if bits < MIN_RSA_BITS:
        raise SignerError(f"RSA-{bits} refused; at least RSA-{MIN_RSA_BITS} is required")
    uri = parse_key_uri(key_ref)
    so = module or module_path()
    state = _token(_process(), so, uri, uri.read_pin())
    with state.token.open(rw=True) as session:
        try:
            session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=uri.label)
        except p11e.NoSuchKey:
            pass
        else:
            raise SignerError(f"{uri.ref}: token {uri.token!r} already has a key {uri.label!r}")
        public, _private = session.generate_keypair(
            KeyType.RSA,
            bits,
            label=uri.label,
            store=True,
            public_template={Attribute.VERIFY: True, Attribute.ENCRYPT: False},
            private_template={
                Attribute.SIGN: True,
                Attribute.DECRYPT: False,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.PRIVATE: True,
            },
        )
        modulus = int.from_bytes(bytes(public[Attribute.MODULUS]), "big")
        exponent = int.from_bytes(bytes(public[Attribute.PUBLIC_EXPONENT]), "big")
    log.info("generated RSA-%d key %s", bits, uri.ref)
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


def destroy_key(key_ref: str, module: str | None = None) -> None:
    """Destroy the key pair labelled by the URI's ``object`` in the token (retirement): its
    private key, and the public key objects under that label that are *its* public key (by
    fingerprint: another key pair's public object under the same label stays)."""
    uri = parse_key_uri(key_ref)
    so = module or module_path()
    proc = _process()
    state = _token(proc, so, uri, uri.read_pin())
    with state.token.open(rw=True) as session:
        private = _find_key(session, uri)
        fingerprint = _inventoried(private).fingerprint
        private.destroy()
        for obj in session.get_objects(
            {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: uri.label}
        ):
            with contextlib.suppress(p11e.PKCS11Error):  # the private key is gone already
                if _inventoried(obj).fingerprint == fingerprint:
                    obj.destroy()
    # this process's cached handles on the key are stale now
    state.local = threading.local()
    log.info("destroyed key %s", uri.ref)


@dataclass(frozen=True, slots=True)
class TokenKey:
    """A private key object in a token, as an inventory shows it (nothing secret)."""

    fingerprint: str
    """SHA-256 (hex) of the RSA public key's SubjectPublicKeyInfo DER (what ``key-generated``
    lines record as ``spki_sha256``); for a key of another type, ``other-`` and the SHA-256
    of its type, label and id (no ceremony makes one)."""
    label: str
    id_hex: str
    """CKA_ID in hex ("" when none)."""
    leakable: bool = field(default=False, compare=False)
    """CKA_EXTRACTABLE true or CKA_SENSITIVE false (or unreadable): no signer loads it
    (`_refuse_leakable`: 発行者署名符号の漏えいを防止する, Ord §73(4)). Not part of what an
    inventory records or compares."""


def _inventoried(key: Any) -> TokenKey:
    label = str(key.label or "")
    try:
        id_hex = bytes(key[Attribute.ID] or b"").hex()
    except p11e.PKCS11Error:
        id_hex = ""
    try:
        leakable = bool(key[Attribute.EXTRACTABLE]) or not bool(key[Attribute.SENSITIVE])
    except p11e.PKCS11Error:
        leakable = True
    if key.key_type == KeyType.RSA:
        modulus = int.from_bytes(bytes(key[Attribute.MODULUS]), "big")
        exponent = int.from_bytes(bytes(key[Attribute.PUBLIC_EXPONENT]), "big")
        public = rsa.RSAPublicNumbers(exponent, modulus).public_key()
        return TokenKey(hashlib.sha256(spki_der(public)).hexdigest(), label, id_hex, leakable)
    other = f"{key.key_type!s}|{label}|{id_hex}".encode()
    return TokenKey("other-" + hashlib.sha256(other).hexdigest(), label, id_hex, leakable)


def token_keys(key_ref: str, module: str | None = None) -> tuple[str, list[TokenKey]]:
    """The token's label and every private key object in it (logged in with the URI's PIN, so
    private objects are seen): the key inventory a ceremony records and compares with the
    operation log (`crlbuilder.keys.inventory`). Public keys, certificates and secret keys
    are not listed. Sorted by fingerprint."""
    uri = parse_key_uri(key_ref)
    so = module or module_path()
    state = _token(_process(), so, uri, uri.read_pin())
    try:
        with state.token.open() as session:
            found = [
                _inventoried(k)
                for k in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})
            ]
    except p11e.PKCS11Error as exc:
        raise SignerError(f"{uri.ref}: cannot list the token's keys: {_why(exc)}") from None
    return uri.token, sorted(found, key=lambda k: (k.fingerprint, k.label, k.id_hex))


def destroy_token_key(key_ref: str, target: TokenKey, module: str | None = None) -> tuple[int, int]:
    """Destroy the one private key object of the URI's token that the inventory shows as
    ``target`` (fingerprint, label and id: `token_keys`), found again in the session that
    destroys it; SignerError when none or several are (the token changed since it was
    listed, or two objects cannot be told apart), nothing destroyed. Then, where no other
    private object of that key pair stays, its public key objects (those whose public key has
    the fingerprint), whatever their label. (private objects of the key pair left, public key
    objects destroyed)."""
    uri = parse_key_uri(key_ref)
    so = module or module_path()
    state = _token(_process(), so, uri, uri.read_pin())
    try:
        with state.token.open(rw=True) as session:
            privates = list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}))
            shown = [_inventoried(k) for k in privates]
            named = [k for k, seen in zip(privates, shown, strict=True) if seen == target]
            if len(named) != 1:
                raise SignerError(
                    f"{uri.ref}: {len(named)} private key objects in token {uri.token!r} match "
                    f"spki {target.fingerprint[:16]}... label {target.label!r} id "
                    f"{target.id_hex or '-'} now: nothing destroyed"
                )
            named[0].destroy()
            left = sum(1 for seen in shown if seen.fingerprint == target.fingerprint) - 1
            publics = 0
            # the private key is gone: a public object that cannot be read or destroyed is
            # left (the line says how many went), not a failure that would leave no line
            for obj in (
                session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY}) if not left else []
            ):
                with contextlib.suppress(p11e.PKCS11Error):
                    if _inventoried(obj).fingerprint == target.fingerprint:
                        obj.destroy()
                        publics += 1
    except p11e.PKCS11Error as exc:
        raise SignerError(f"{uri.ref}: cannot destroy the key: {_why(exc)}") from None
    state.local = threading.local()  # this process's cached handles may be stale now
    log.info("destroyed key spki %s in token %s", target.fingerprint, uri.token)
    return left, publics


def close_all() -> None:
    """Close this process's sessions and finalise its modules (at exit, or between test tokens).

    The next signature opens the module, logs in and opens its sessions again.
    """
    global _state
    oplog.end_all()  # the sessions end: their counts go to the operation log
    with _state_lock:
        proc, _state = _state, _Process()
    if proc.pid != os.getpid():
        return  # a parent's state: not ours to close
    for state in proc.tokens.values():
        with contextlib.suppress(p11e.PKCS11Error):
            state.login_session.close()
    for lib in proc.libs.values():
        with contextlib.suppress(p11e.PKCS11Error):
            lib.finalize()
