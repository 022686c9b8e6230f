"""Reading one object of a JetStream object store: every wait bounded, nothing left behind.

nats-py's `ObjectStore.get` takes an object's description, subscribes to its chunks through
an ordered consumer and waits for them with no bound. When the object is replaced between
the two (the CRL signer's next ``latest/<issuer>``, `crlbuilder.crl.shipping`; a newer store
snapshot, `crlbuilder.snapshot`), the object store purges the old chunks and the read waits
for ever; abandoned from outside (a timeout around it), its subscription and the server's
ephemeral consumer stay until the connection closes, and the consumer's heartbeats with them.

`read_object` makes the same read with the client's public calls, but each chunk must come
within ``idle`` seconds (past it `ObjectGone`: the caller reads the new description) and the
subscription ends however the read ends (the server then drops its consumer). The bytes are
checked against the description's size and SHA-256 digest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import ObjectInfo
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE, ObjectStore

_DIGEST = "SHA-256="


class ObjectReadError(Exception):
    """An object whose bytes are not what its description says, or that cannot be read."""


class ObjectGone(ObjectReadError):
    """No chunk came within the bound: the object was replaced or deleted while it was read."""


async def read_object(
    js: JetStreamContext,
    obs: ObjectStore,
    bucket: str,
    name: str,
    *,
    idle: float,
    sink: Callable[[bytes], object] | None = None,
) -> tuple[ObjectInfo, bytes]:
    """The description of ``name`` in ``bucket`` (``obs``) and its bytes, or, with ``sink``,
    the description and ``b""`` after each chunk went to ``sink`` in order. Raises
    nats-py's `ObjectNotFoundError` for no such object, `ObjectGone` when a chunk does not come
    within ``idle`` seconds, `ObjectReadError` for a link or bytes unlike the description."""
    info = await obs.get_info(name)
    if not info.nuid or info.is_link():
        raise ObjectReadError(f"{bucket}/{name}: not an object of its own (a link, or no id)")
    digest = _expected_digest(bucket, name, info.digest)
    data = bytearray()
    h = hashlib.sha256()
    size = 0
    if info.size:
        subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=bucket, obj=info.nuid)
        sub = await js.subscribe(subject, ordered_consumer=True)
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=idle)
                except nats.errors.TimeoutError:
                    raise ObjectGone(
                        f"{bucket}/{name}: no chunk within {idle:g} s (replaced or deleted "
                        "while read)"
                    ) from None
                h.update(msg.data)
                size += len(msg.data)
                if sink is None:
                    data += msg.data
                else:
                    sink(msg.data)
                if msg.metadata.num_pending == 0:
                    break
        finally:
            await sub.unsubscribe()
    if size != (info.size or 0) or digest != h.digest():
        raise ObjectReadError(f"{bucket}/{name}: bytes differ from the object's description")
    return info, bytes(data)


def _expected_digest(bucket: str, name: str, described: str | None) -> bytes:
    """The SHA-256 the description names (``SHA-256=`` and base64url), read before any chunk:
    one that is not base64 is `ObjectReadError` (it escaped as ``binascii.Error``)."""
    text = (described or "").removeprefix(_DIGEST).removeprefix(_DIGEST.lower())
    try:
        return base64.urlsafe_b64decode(text)
    except (binascii.Error, ValueError):
        raise ObjectReadError(
            f"{bucket}/{name}: the object's description names no SHA-256 digest"
        ) from None
