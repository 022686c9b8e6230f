"""`dump_store`: every key and value of a status store, for byte comparisons in tests.

"The store is unchanged" (a refused input leaves state as it was) and "two builds wrote the
same bytes" are checked by comparing two dumps. This reads LMDB directly, below the store's
API, on purpose: it must see every byte, including what the API does not expose.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Final

from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store

Dump = dict[str, list[tuple[bytes, bytes]]]


def dump_store(
    store: Store | Path, *, skip: Collection[bytes] = (), meta: Collection[bytes] | None = None
) -> Dump:
    """Database name -> its (key, value) pairs in key order, of every database of ``store``.

    ``skip`` leaves databases out; ``meta``, when given, keeps only those keys of the
    metadata database (the others hold times and numbers that differ between equal builds).
    ``store`` is an open `Store` or the path of one (opened read-only and closed again).
    """
    s = Store.open(store, readonly=True) if isinstance(store, Path) else store
    try:
        out: Dump = {}
        with s.env.begin() as txn:
            for name in sf.ALL_DBS:
                if name in skip:
                    continue
                pairs = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=s.dbs[name]).iternext()]
                if name == sf.DB_META and meta is not None:
                    pairs = [(k, v) for k, v in pairs if k in meta]
                out[name.decode()] = pairs
        return out
    finally:
        if s is not store:
            s.close()


NODE_STATE: Final = (
    b"status",
    b"revoked",
    b"links",
    b"holders",
    b"consents",
    b"withdrawals",
    b"pending",
    b"moveins",
    b"taken",
    b"applied",
)
"""The databases two nodes fed by one record stream must hold alike, byte for byte: what
decides their answers and what the record stream applied (each node's own commit numbers,
times, pre-signed answers and CRLs differ)."""


def node_state(store: Store | Path) -> Dump:
    """`dump_store` of the `NODE_STATE` databases only."""
    return dump_store(store, skip=[n for n in sf.ALL_DBS if n not in NODE_STATE])


def agenda(store: Store) -> list[tuple[int, bytes]]:
    """The retention agenda (`crlbuilder.retention`) as the store holds it: (due instant, key)
    in due order, a status key (22 bytes) or a holder key (32)."""
    return [sf.split_retention_key(k) for k, _ in dump_store(store)[sf.DB_RETENTION.decode()]]
