"""A SoftHSM2 token of its own for a test: made in a temporary directory, never the system's.

`make_token(directory)` writes a SoftHSM2 configuration whose ``directories.tokendir``
is inside ``directory``, points ``SOFTHSM2_CONF`` at it (in ``os.environ``, so forked and
spawned children inherit it), initialises a token with ``softhsm2-util --init-token
--free`` and writes the user PIN to a file of mode 0600. `SoftHsmToken.uri` gives the
PKCS#11 URI of a key in it (PIN from that file, or from an environment variable);
`SoftHsmToken.add_key` generates an RSA key pair inside the token with the product's own
primitive (`crlbuilder.keys.pkcs11.generate_rsa_key`) and writes a certificate for it,
issued by a throw-away test CA, so that `load_signer(uri, cert)` works.

Use the `softhsm` fixture of tests/conftest.py's neighbours, or call `make_token` with a
pytest ``tmp_path`` and a ``monkeypatch`` (the environment is restored after the test),
then `close` (drops this process's PKCS#11 state so the next token starts clean).
Skips the test when SoftHSM2 is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from crlbuilder.keys import pkcs11 as p11
from tests.support.pki import Ca, make_ca

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
DEFAULT_LABEL = "jpki-va-test"
DEFAULT_PIN = "4711-test-pin"
DEFAULT_SO_PIN = "so-0815-test-pin"


@dataclass
class SoftHsmToken:
    """One initialised token in its own token directory."""

    directory: Path
    conf: Path
    label: str
    pin: str
    so_pin: str
    pin_file: Path
    module: str
    ca: Ca
    """A throw-away CA that issues the certificates of the token's keys."""

    def uri(self, key_label: str, *, pin_env: str | None = None, token: str | None = None) -> str:
        """The key's PKCS#11 URI: PIN from `pin_file`, or from ``$pin_env`` when given."""
        source = f"env:{pin_env}" if pin_env else f"file:{self.pin_file}"
        return f"pkcs11:token={token or self.label};object={key_label};type=private?pin-source={source}"

    def add_key(self, key_label: str, bits: int = 2048) -> tuple[str, Path]:
        """Generate an RSA key pair in the token and a certificate for it; (URI, cert path)."""
        ref = self.uri(key_label)
        public = p11.generate_rsa_key(ref, bits, module=self.module)
        cert_path = self.directory / f"{key_label}.pem"
        cert_path.write_bytes(
            issue(self.ca, key_label, public).public_bytes(serialization.Encoding.PEM)
        )
        return ref, cert_path

    def close(self) -> None:
        """Drop this process's sessions and module state (see `crlbuilder.keys.pkcs11.close_all`)."""
        p11.close_all()


def issue(ca: Ca, cn: str, public: rsa.RSAPublicKey) -> x509.Certificate:
    """A 30-day end-entity certificate for a public key whose private half is in a token."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=30))
        .sign(ca.key, hashes.SHA256())  # type: ignore[arg-type]
    )


def make_token(
    directory: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    label: str = DEFAULT_LABEL,
    pin: str = DEFAULT_PIN,
    so_pin: str = DEFAULT_SO_PIN,
) -> SoftHsmToken:
    """Initialise a token in ``directory/tokens`` and point SOFTHSM2_CONF (and the module) at it."""
    if shutil.which("softhsm2-util") is None or not Path(MODULE).exists():
        pytest.skip("SoftHSM2 is not installed (Debian package softhsm2)")
    tokens = directory / "tokens"
    tokens.mkdir(mode=0o700, parents=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    monkeypatch.setenv(p11.MODULE_ENV, MODULE)
    p11.close_all()  # a module loaded by an earlier test read another configuration
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            pin,
            "--so-pin",
            so_pin,
        ],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    pin_file = directory / "user.pin"
    fd = os.open(pin_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(pin + "\n")
    return SoftHsmToken(
        directory, conf, label, pin, so_pin, pin_file, MODULE, make_ca("test token CA")
    )
