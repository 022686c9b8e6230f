"""The native build's rules (`make compiled`: pyproject.toml ``[tool.jpki-va.mypyc]``).

mypyc creates a compiled module's classes without their class keywords: a
``class Response(msgspec.Struct, frozen=True, gc=False)`` comes out mutable and tracked by
the garbage collector, silently. So every class keyword in a compiled module must already
hold through its base (`responder.structs`), which is never compiled. Checked on the
sources, so it holds in the pure Python suite too.
"""

from __future__ import annotations

import ast
import importlib
import tomllib
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent


def _compiled_files() -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        steps = tomllib.load(f)["tool"]["jpki-va"]["mypyc"]["steps"]
    return [path for files in steps.values() for path in files]


def _module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def test_compiled_modules_exist_in_the_typed_packages() -> None:
    files = _compiled_files()
    assert files
    assert len(files) == len(set(files))
    for path in files:
        assert (ROOT / path).is_file(), path
        assert path.split("/")[0] in ("crlbuilder", "responder"), path  # mypy --strict's packages
    assert "responder/structs.py" not in files  # the bases must keep their keywords


def test_class_keywords_of_compiled_modules_hold_through_their_bases() -> None:
    """mypyc drops class keywords: each one must be redundant (its base sets the same)."""
    checked = 0
    for path in _compiled_files():
        module = importlib.import_module(_module_name(path))
        tree = ast.parse((ROOT / path).read_text(), path)
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef) or not node.keywords:
                continue
            where = f"{path}:{node.lineno} {node.name}"
            cls = getattr(module, node.name)
            assert isinstance(cls, type) and issubclass(cls, msgspec.Struct), (
                f"{where}: class keywords outside a msgspec Struct are lost when compiled"
            )
            bases = [b for b in cls.__bases__ if issubclass(b, msgspec.Struct)]
            assert len(bases) == 1, where
            for kw in node.keywords:
                assert kw.arg is not None, where
                value = ast.literal_eval(kw.value)
                assert getattr(bases[0].__struct_config__, kw.arg) == value, (
                    f"{where}: {kw.arg}={value!r} is not set by its base "
                    f"{bases[0].__qualname__}: use one of responder.structs"
                )
                checked += 1
    assert checked  # the rule was exercised (frozen=True on the compiled modules' Structs)


def test_struct_bases_keep_their_options() -> None:
    from responder import flow, http, limits, policy

    for cls in (http.Response, flow.Answer, flow.Signing, flow.Refusal):
        assert cls.__struct_config__.frozen and not cls.__struct_config__.gc, cls
    assert not http.Request.__struct_config__.frozen and not http.Request.__struct_config__.gc
    for cls in (policy.Allowed, policy.Refused, limits.Wait):
        assert cls.__struct_config__.frozen, cls
