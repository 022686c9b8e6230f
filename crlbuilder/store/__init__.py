"""The status store (状態データベース): its byte layout, and the one API that reads and writes it.

`format` defines every named database, key and value once (the only module that
knows the bytes); `lmdbstore` opens the LMDB environment; `reader` is the typed
read API (`StoreReader`, and `LmdbReader` over a transaction); `memory` the same
reader built from plain records, for unit tests; `writer` the write transaction
(`Commit`) that owns every bookkeeping rule. crlbuilder writes the store,
responder workers read it; both go through this package, the only one that
imports `lmdb` (an import-linter contract). Depends only on `crlbuilder.model`
and `crlbuilder.rules`. No re-exports: import from the submodule.
"""
