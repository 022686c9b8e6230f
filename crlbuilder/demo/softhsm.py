"""A SoftHSM2 token for the demo and the tests (署名装置の代わり: a software stand-in for the HSM).

Ord §73(4) and §74(3) want the signing keys (発行者署名符号) on dedicated equipment; a
production deployment uses a real HSM over PKCS#11. The demo (``make demo KEYS=softhsm``,
``crlbuilder pki init --keys softhsm``) and the integration tests use SoftHSM2 (Debian
package softhsm2) instead, set up here in a directory of their own, never the
system's token store:

- ``softhsm2.conf`` pointing ``directories.tokendir`` at ``tokens/`` beside it; every
  process that uses the keys gets ``SOFTHSM2_CONF`` set to this file (`SoftHsmToken.env`);
- a token with its label, initialised by ``softhsm2-util``; the user PIN is random and
  lives only in ``pin`` (mode 0600), which key references name as
  ``pin-source=file:...`` (RFC 7512 URI, `crlbuilder.keys.pkcs11`);
- ``oplog.jsonl``, the token's operation log (`crlbuilder.keys.oplog`, Ord §73(3)): the
  set-up's key generations and certificates, then every signing session of the processes
  given ``JPKIVA_OPLOG`` (`SoftHsmToken.env`); ``crlbuilder keys verify-log`` checks it.

``softhsm2-util --init-token`` takes its PINs only as arguments (it reads a terminal,
not standard input), so the random PINs of this demo token are on that one command line
for the instant it runs, on this machine only; they are never logged. The user PIN is
kept in the 0600 file, the SO PIN is dropped (the demo token is never re-administered; a
new one is made instead). A production HSM is initialised by its own procedure
(docs/operations.md), not by this module.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from crlbuilder.demo.pki import write_private
from crlbuilder.keys.oplog import OPLOG_ENV

__all__ = ["SOFTHSM_MODULE", "SoftHsmError", "SoftHsmToken", "init_token"]

SOFTHSM_MODULE: Final = "/usr/lib/softhsm/libsofthsm2.so"
"""Where Debian's softhsm2 package installs the PKCS#11 module."""

CONF_NAME: Final = "softhsm2.conf"
PIN_NAME: Final = "pin"
OPLOG_NAME: Final = "oplog.jsonl"


class SoftHsmError(Exception):
    """SoftHSM2 is missing or the token cannot be made."""


@dataclass(frozen=True, slots=True)
class SoftHsmToken:
    """A SoftHSM2 token made by `init_token`: its configuration, label and PIN file."""

    conf: Path
    label: str
    pin_file: Path
    module: str = SOFTHSM_MODULE

    @property
    def oplog(self) -> Path:
        """The token's operation log (`crlbuilder.keys.oplog`, Ord §73(3)), beside its config."""
        return self.conf.parent / OPLOG_NAME

    @property
    def env(self) -> dict[str, str]:
        """What a process using the token needs in its environment: the SoftHSM2 config, the
        module, and the operation log its signing sessions are recorded in."""
        return {
            "SOFTHSM2_CONF": str(self.conf),
            "JPKIVA_PKCS11_MODULE": self.module,
            OPLOG_ENV: str(self.oplog),
        }

    def key_uri(self, key_label: str) -> str:
        """The RFC 7512 reference of a private key in this token, PIN read from the 0600 file."""
        return (
            f"pkcs11:token={_pct(self.label)};object={_pct(key_label)};type=private"
            f"?pin-source=file:{self.pin_file}"
        )


def _pct(value: str) -> str:
    """Percent-encode a URI path attribute value (RFC 7512 §2.3: pk11-pchar)."""
    keep = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:[]@!$'()*+,=&")
    return "".join(c if c in keep else "".join(f"%{b:02X}" for b in c.encode()) for c in value)


def init_token(directory: Path, label: str = "jpki-va-demo") -> SoftHsmToken:
    """Create ``directory`` (mode 0700) with a SoftHSM2 configuration and one new token.

    Refuses a directory that already holds a configuration (a token is made once; remove
    the directory to start again) and a machine without SoftHSM2, with a message saying
    what to install.
    """
    util = shutil.which("softhsm2-util")
    if util is None or not Path(SOFTHSM_MODULE).exists():
        raise SoftHsmError(
            f"SoftHSM2 is not installed (softhsm2-util, {SOFTHSM_MODULE}): apt-get install softhsm2"
        )
    directory = Path(directory).resolve()
    conf = directory / CONF_NAME
    if conf.exists():
        raise SoftHsmError(f"{conf} exists: the token is already made")
    tokens = directory / "tokens"
    tokens.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    conf.write_text(
        f"# SoftHSM2 token store of jpki-va's demo/tests (crlbuilder.demo.softhsm)\n"
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
        "slots.removable = false\n"
    )
    token = SoftHsmToken(conf=conf, label=label, pin_file=directory / PIN_NAME)
    user_pin = secrets.token_urlsafe(24)
    done = subprocess.run(
        [util, "--init-token", "--free", "--label", label,
         "--so-pin", secrets.token_urlsafe(24), "--pin", user_pin],
        env={**os.environ, **token.env}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SoftHsmError(f"softhsm2-util --init-token failed: {done.stderr.strip()}")
    write_private(token.pin_file, user_pin.encode() + b"\n")
    return token
