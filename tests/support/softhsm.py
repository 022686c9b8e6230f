"""A SoftHSM2 token of its own for a test: made in a temporary directory, never the system's.

`make_token(directory)` writes a SoftHSM2 configuration whose ``directories.tokendir``
is inside ``directory``, points ``SOFTHSM2_CONF`` at it (in ``os.environ``, so forked and
spawned children inherit it), initialises a token with ``softhsm2-util --init-token
--free`` and writes the user PIN to a file of mode 0600. `SoftHsmToken.uri` gives the
PKCS#11 URI of a key in it (PIN from that file, or from an environment variable);
`SoftHsmToken.add_key` generates an RSA key pair inside the token with the product's own
primitive (`crlbuilder.keys.pkcs11.generate_rsa_key`) and writes a certificate for it,
issued by a throw-away test CA, so that `load_signer(uri, cert)` works.

`SoftHsmToken.import_key` puts an existing software key into the token (tests only: a
production key is generated in the token and never exists outside it), and
`keys_into_token` does it for a PKI directory: each signing key of its ``pki.json`` goes
into the token and the manifest's key field becomes the key's URI, the PEM file removed,
so the builder and the responder can only sign through the token.

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

import msgspec
import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from crlbuilder.keys import pkcs11 as p11
from crlbuilder.manifest import MANIFEST_NAME, dump_manifest, load_manifest
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

    def import_key(
        self, key_label: str, key: rsa.RSAPrivateKey, *, sensitive: bool = True,
        extractable: bool = False,
    ) -> str:  # fmt: skip
        """Put a software RSA key into the token (sensitive, not extractable unless told); its
        URI."""
        from pkcs11.util.rsa import decode_rsa_private_key

        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        attrs = decode_rsa_private_key(der)
        attrs.update(
            {
                pkcs11.Attribute.TOKEN: True,
                pkcs11.Attribute.LABEL: key_label,
                pkcs11.Attribute.SIGN: True,
                pkcs11.Attribute.PRIVATE: True,
                pkcs11.Attribute.SENSITIVE: sensitive,
                pkcs11.Attribute.EXTRACTABLE: extractable,
            }
        )
        token = pkcs11.lib(self.module).get_token(token_label=self.label)
        try:
            session = token.open(rw=True, user_pin=self.pin)
        except pkcs11.exceptions.UserAlreadyLoggedIn:  # this process signs with it already
            session = token.open(rw=True)
        with session:
            session.create_object(attrs)
        return self.uri(key_label)

    def close(self) -> None:
        """Drop this process's sessions and module state (see `crlbuilder.keys.pkcs11.close_all`)."""
        _forget_module()


def _forget_module() -> None:
    """Close every session of this process and finalise the module, so that the next use
    initialises it again and reads the current SOFTHSM2_CONF (python-pkcs11 keeps one
    instance of a module per process: the product's and `import_key`'s are the same)."""
    p11.close_all()
    if Path(MODULE).exists():
        pkcs11.lib(MODULE).finalize()


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
        if os.environ.get("CI") == "true":  # .ci/run installs it: a skip would hide that
            pytest.fail("SoftHSM2 is not installed (Debian package softhsm2)")
        pytest.skip("SoftHSM2 is not installed (Debian package softhsm2)")
    tokens = directory / "tokens"
    tokens.mkdir(mode=0o700, parents=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    monkeypatch.setenv(p11.MODULE_ENV, MODULE)
    _forget_module()  # a module loaded by an earlier test read another configuration
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


KEY_FIELDS = ("key", "ocsp_key")
"""The issuer fields of ``pki.json`` that name a signing key."""


def keys_into_token(pki: Path, token: SoftHsmToken, fields: tuple[str, ...] = KEY_FIELDS) -> None:
    """Move the signing keys named by ``fields`` of every issuer of ``pki``'s manifest into
    ``token`` (label ``<issuer id>-<field>``), rewrite the manifest with their URIs and
    delete the PEM files, so nothing can sign but the token."""
    manifest = load_manifest(pki / MANIFEST_NAME)
    issuers = []
    for issuer in manifest.issuers:
        changes = {}
        for field in fields:
            path = manifest.path(getattr(issuer, field))
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            assert isinstance(key, rsa.RSAPrivateKey)
            changes[field] = token.import_key(f"{issuer.id}-{field}", key)
            path.unlink()
        issuers.append(msgspec.structs.replace(issuer, **changes))
    dump_manifest(msgspec.structs.replace(manifest, issuers=issuers), pki)
