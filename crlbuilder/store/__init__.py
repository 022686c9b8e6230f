"""The status store (状態データベース): its byte layout and the LMDB environment that holds it.

`format` defines every named database, key and value once (the only module that
knows the bytes); `lmdbstore` opens the environment and reads it. crlbuilder
writes the store, responder workers read it; both go through this package.
Depends only on `crlbuilder.model` and `crlbuilder.rules`. No re-exports: import
from the submodule.
"""
