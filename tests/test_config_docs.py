"""The configuration the documents name against the configuration the programs accept.

- config/builder.toml names every field of `crlbuilder.config.BuilderConfig` (set, or
  commented out as ``# key = ...``), each with a comment above it, and loads as it is
  (config/responder.toml has the same test in test_server_config.py);
- every ```toml block of README.md and docs/*.md loads into the builder's or the
  responder's configuration (both refuse an unknown field);
- every field a document names in backquotes (``[section] key``, ``section.key``) is a
  field of one of them.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from crlbuilder.config import BuilderConfig
from crlbuilder.config import load_config as load_builder_config
from crlbuilder.options import ConfigError, convert
from responder.config import FIELD_PATHS as RESPONDER_FIELDS
from responder.config import ResponderConfig, _dec_hook

ROOT = Path(__file__).resolve().parent.parent
BUILDER_EXAMPLE = ROOT / "config" / "builder.toml"
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))

pytestmark = pytest.mark.unit


def _fields(struct_type: type[msgspec.Struct], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for field in msgspec.structs.fields(struct_type):
        if isinstance(field.type, type) and issubclass(field.type, msgspec.Struct):
            out |= _fields(field.type, f"{prefix}{field.name}.")
        else:
            out.add(prefix + field.name)
    return out


BUILDER_FIELDS = _fields(BuilderConfig)
ALL_FIELDS = BUILDER_FIELDS | set(RESPONDER_FIELDS)
SECTIONS = {f.rsplit(".", 1)[0] for f in ALL_FIELDS if "." in f}
SECTIONS |= {s.rsplit(".", 1)[0] for s in SECTIONS if "." in s}
TABLE_FIELDS = {f for f in ALL_FIELDS if f.startswith("crl.retention_days")}
"""Fields that are tables of their own (per family, per category): their keys are data."""


def _named_in_example(text: str) -> set[str]:
    """The dotted fields an example file sets or shows commented out."""
    section, named = "", set()
    for line in text.splitlines():
        if table := re.fullmatch(r"#? ?\[([\w.-]+)\]\s*", line):
            section = table.group(1)
            named |= {section, section.rsplit(".", 1)[0]}  # a table field is named by its header
        elif key := re.match(r"#? ?(\w+) = ", line):
            named.add(f"{section}.{key.group(1)}" if section else key.group(1))
    return named


def test_builder_example_documents_every_field_and_loads() -> None:
    text = BUILDER_EXAMPLE.read_text(encoding="utf-8")
    load_builder_config(BUILDER_EXAMPLE)
    named = _named_in_example(text)
    assert BUILDER_FIELDS - named == set(), "config/builder.toml does not name these"
    lines = text.splitlines()
    for field in BUILDER_FIELDS - TABLE_FIELDS:  # and a comment explains each
        section, name = field.rsplit(".", 1)
        start = lines.index(f"[{section}]")
        at = next(i for i in range(start + 1, len(lines)) if re.match(rf"#? ?{name} = ", lines[i]))
        while re.match(r"\w+ = ", lines[at - 1]):  # one comment may explain a few fields
            at -= 1
        assert lines[at - 1].startswith("#"), f"config/builder.toml: {field} has no comment"


def _loads_somewhere(tree: dict[str, Any]) -> list[str]:
    """Why ``tree`` is neither a builder's nor a responder's configuration (empty: it is one)."""
    problems = []
    try:
        convert(tree, BuilderConfig, "builder")
        return []
    except ConfigError as e:
        problems.append(str(e))
    try:
        convert(tree, ResponderConfig, "responder", dec_hook=_dec_hook)
        return []
    except ConfigError as e:
        problems.append(str(e))
    return problems


def test_documented_configuration_blocks_load() -> None:
    blocks = 0
    for doc in DOCS:
        for block in re.findall(r"```toml\n(.*?)```", doc.read_text(encoding="utf-8"), re.S):
            tree = tomllib.loads(block)
            if not set(tree) & {s.split(".")[0] for s in SECTIONS}:
                continue  # a registry entry, a pyproject table: not a program's configuration
            problems = _loads_somewhere(tree)
            assert not problems, f"{doc.name}: a [{', '.join(tree)}] block: {problems}"
            blocks += 1
    assert blocks >= 2, blocks


def _mentions(text: str) -> set[str]:
    """Configuration fields named in backquotes: ``[section] key`` and ``section.key``."""
    named = set()
    for m in re.finditer(r"`\[([\w.]+)\]`?\s*`?(\w+)?`", text):
        section, key = m.group(1), m.group(2)
        named.add(f"{section}.{key}" if key else f"[{section}]")
    for m in re.finditer(r"`([a-z_0-9]+(?:\.[a-z_0-9]+)+)`", text):
        named.add(m.group(1))
    return named


REFUSED = {"crl.retention_seconds"}
"""Named in the documents as what the builder refuses (with the field to use instead)."""


def _is_module_or_file(name: str) -> bool:
    """``crl.importer``, ``v1.routes`` (a module of either package), ``pki.json`` (a file)."""
    path = name.replace(".", "/")
    if any((ROOT / pkg / path).with_suffix(".py").exists() for pkg in ("crlbuilder", "responder")):
        return True
    return name.rsplit(".", 1)[1] in {
        "json",
        "toml",
        "pem",
        "md",
        "env",
        "key",
        "jsonl",
        "crt",
        "sqlite3",
        "secret",
    }


def _real(name: str, roots: set[str]) -> bool:
    """A field or section, named in full (``server.limits.drain_timeout``) or from a nested
    section's own name (``limits.drain_timeout``, ``tls.client_ca``)."""
    if name in ALL_FIELDS or name in SECTIONS:
        return True
    return name.split(".", maxsplit=1)[0] not in roots and any(
        f.endswith("." + name) for f in ALL_FIELDS | SECTIONS
    )


def test_documents_name_only_real_fields() -> None:
    roots = {s.split(".")[0] for s in SECTIONS}
    nested = {s.rsplit(".", 1)[1] for s in SECTIONS if "." in s}  # limits, tls
    seen = 0
    for doc in DOCS:
        for name in _mentions(doc.read_text(encoding="utf-8")):
            if name.startswith("["):
                section = name.strip("[]")
                if section.split(".")[0] in roots:
                    assert section in SECTIONS or section.startswith("crl.retention_days"), (
                        f"{doc.name}: {name}: no such section"
                    )
                continue
            first = name.split(".")[0]
            if first not in roots | nested or _is_module_or_file(name) or name in REFUSED:
                continue
            if any(name.startswith(t + ".") for t in TABLE_FIELDS):
                continue
            assert _real(name, roots), f"{doc.name}: `{name}`: no such field"
            seen += 1
    assert seen >= 20, seen


def test_a_nested_sections_own_name_is_checked() -> None:
    """``limits.x`` is ``server.limits.x``: once, a name starting with a nested section's
    own name was taken for no configuration and passed unchecked."""
    roots = {s.split(".")[0] for s in SECTIONS}
    assert _real("limits.drain_timeout", roots)
    assert not _real("limits.drain_timeoutz", roots)
    assert not _real("server.drain_timeout", roots)


def test_mentions_reads_both_forms() -> None:
    text = "`[server.limits] max_json_body_bytes` (24 MiB), `crl.keep_days`, `[v1]`"
    assert _mentions(text) == {"server.limits.max_json_body_bytes", "crl.keep_days", "[v1]"}
