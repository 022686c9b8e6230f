"""Certificate revocation lists (失効情報ファイル, Act §16, §16-15, §35, §35-15).

`encode` writes and signs CRL DER, `parse` reads and verifies it, `publish`
produces the full and delta CRLs of every issuer from the store and keeps the
archive, `importer` loads the 機構's CRLs into a group appliance's store
(団体署名検証者). Depends on `crlbuilder.store`, `crlbuilder.keys` and the
top-level model; never on `crlbuilder.ocsp`. No re-exports: import from the
submodule.
"""
