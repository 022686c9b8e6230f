"""msgspec Struct bases with their options set, for the modules the native build compiles.

The native build (`make compiled`, setup.py: the OCSP hot path compiled with mypyc, the
modules listed in pyproject.toml ``[tool.jpki-va.mypyc]``) creates a compiled module's
classes without their class keywords: ``class Response(msgspec.Struct, frozen=True,
gc=False)`` would come out mutable and tracked by the cyclic garbage collector. msgspec
passes ``frozen`` and ``gc`` on to subclasses, so the Structs of those modules subclass
these bases instead, and keep their options compiled or not. This module is never
compiled (tests/test_mypyc_build.py checks both). ``kw_only`` is not inherited by
msgspec: a compiled module declares no Struct that needs it.
"""

from __future__ import annotations

import msgspec


class Frozen(msgspec.Struct, frozen=True):
    """Immutable (and hashable) instances."""


class FrozenNoGc(msgspec.Struct, frozen=True, gc=False):
    """Immutable, not tracked by the cyclic garbage collector (cheaper to create): for
    values that never refer back to themselves."""


class NoGc(msgspec.Struct, gc=False):
    """Mutable, not tracked by the cyclic garbage collector (cheaper to create)."""
