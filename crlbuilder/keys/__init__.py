"""Signing keys (署名装置, Ord §73, §74): the `Signer` interface and its PEM-file implementation.

Shared by CRL signing (`crlbuilder.crl`) and OCSP signing (`crlbuilder.ocsp`),
so it belongs to neither. Depends on nothing else in the project. No
re-exports: import from `crlbuilder.keys.signer`.
"""
