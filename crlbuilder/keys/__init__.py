"""Signing keys (署名装置, Ord §73, §74): the `Signer` interface and its back ends; ceremonies' parts.

Shared by CRL signing (`crlbuilder.crl`) and OCSP signing (`crlbuilder.ocsp`),
so it belongs to neither: `signer` (the interface, `PemSigner`, `load_signer`),
`pkcs11` (keys in a token), `oplog` (the key operation log, Ord §73(3), on
`crlbuilder.auditlog`, the only project module it depends on), `approval` (two
operators' approvals, Ord §74(3)), `enrolments` (the operation log's account of the
operators file, Ord §74(2)). No re-exports: import from the modules.
"""
