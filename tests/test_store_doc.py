"""docs/store.md's table of databases is the store's (`crlbuilder.store.format`'s DB_*)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crlbuilder.store import format as store_format

STORE_MD = Path(__file__).resolve().parent.parent / "docs" / "store.md"

pytestmark = pytest.mark.unit


def test_store_md_lists_every_database_and_only_those() -> None:
    documented = set(
        re.findall(r"^\| `([a-z_-]+)`(?: \(\w+\))? \|", STORE_MD.read_text(encoding="utf-8"), re.M)
    )
    defined = {
        value.decode()
        for name, value in vars(store_format).items()
        if name.startswith("DB_") and isinstance(value, bytes)
    }
    assert len(defined) >= 15, defined
    assert documented == defined
