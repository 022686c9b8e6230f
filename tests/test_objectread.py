"""`crlbuilder.objectread`: an object's chunks read with a bound per chunk, checked against its
description, and the subscription ended however the read ends (in process, a fake client;
the race on a real server is in tests/test_stream.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any, cast

import nats.errors
import pytest
from nats.js import JetStreamContext
from nats.js.api import ObjectInfo, ObjectLink, ObjectMetaOptions
from nats.js.object_store import ObjectStore

from crlbuilder.objectread import ObjectGone, ObjectReadError, read_object


@dataclass
class _Msg:
    data: bytes
    pending: int

    @property
    def metadata(self) -> Any:
        return type("Meta", (), {"num_pending": self.pending})()


@dataclass
class _Sub:
    chunks: list[bytes]
    stall_after: int | None = None
    """Chunks delivered before the rest never come (the object replaced meanwhile)."""
    unsubscribed: bool = False
    waits: list[float] = field(default_factory=list)

    async def next_msg(self, timeout: float) -> _Msg:
        self.waits.append(timeout)
        n = len(self.waits) - 1
        if self.stall_after is not None and n >= self.stall_after:
            raise nats.errors.TimeoutError
        return _Msg(self.chunks[n], len(self.chunks) - 1 - n)

    async def unsubscribe(self) -> None:
        self.unsubscribed = True


@dataclass
class _Js:
    sub: _Sub
    subjects: list[str] = field(default_factory=list)

    async def subscribe(self, subject: str, ordered_consumer: bool = False) -> _Sub:
        assert ordered_consumer
        self.subjects.append(subject)
        return self.sub


@dataclass
class _Obs:
    info: ObjectInfo

    async def get_info(self, name: str) -> ObjectInfo:
        assert name == self.info.name
        return self.info


def _described(chunks: list[bytes], *, digest_of: bytes | None = None, **kw: Any) -> ObjectInfo:
    whole = b"".join(chunks) if digest_of is None else digest_of
    digest = "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(whole).digest()).decode()
    return ObjectInfo(name="latest/x", bucket="B", nuid="N1", size=len(whole), digest=digest, **kw)


def _read(info: ObjectInfo, sub: _Sub, sink: Any = None) -> tuple[tuple[ObjectInfo, bytes], _Js]:
    js = _Js(sub)
    got = asyncio.run(
        read_object(
            cast(JetStreamContext, js), cast(ObjectStore, _Obs(info)), "B", "latest/x",
            idle=2.5, sink=sink,
        )
    )  # fmt: skip
    return got, js


def test_an_objects_chunks_are_read_in_order_and_the_subscription_ended() -> None:
    chunks = [b"ab", b"cd", b"e"]
    sub = _Sub(chunks)
    (info, data), js = _read(_described(chunks), sub)
    assert data == b"abcde" and info.nuid == "N1"
    assert js.subjects == ["$O.B.C.N1"] and sub.unsubscribed and sub.waits == [2.5] * 3
    into: list[bytes] = []
    sub = _Sub(chunks)
    (_, data), _ = _read(_described(chunks), sub, sink=into.append)
    assert data == b"" and into == chunks and sub.unsubscribed


def test_a_chunk_that_does_not_come_is_a_gone_object_and_the_subscription_ends() -> None:
    sub = _Sub([b"ab", b"cd"], stall_after=1)
    with pytest.raises(ObjectGone, match=r"B/latest/x: no chunk within 2\.5 s"):
        _read(_described(sub.chunks), sub)
    assert sub.unsubscribed


def test_bytes_unlike_the_description_are_refused() -> None:
    sub = _Sub([b"ab", b"cd"])
    with pytest.raises(ObjectReadError, match="bytes differ from the object's description"):
        _read(_described(sub.chunks, digest_of=b"abce"), sub)
    assert sub.unsubscribed
    short = _described([b"abcd"])
    short.size = 5
    with pytest.raises(ObjectReadError, match="bytes differ"):
        _read(short, _Sub([b"abcd"]))


def test_a_description_whose_digest_is_not_base64_is_refused_before_any_chunk() -> None:
    """A malformed digest in the description raised ``binascii.Error`` after the whole
    download, past every caller's ``except ObjectReadError``."""
    info = _described([b"ab"])
    info.digest = "SHA-256=!!!not base64"
    sub = _Sub([b"ab"])
    with pytest.raises(ObjectReadError, match="names no SHA-256 digest"):
        _read(info, sub)
    assert sub.waits == []


def test_a_link_is_not_followed() -> None:
    info = _described([b"ab"], options=ObjectMetaOptions(link=ObjectLink(bucket="O", name="y")))
    sub = _Sub([b"ab"])
    with pytest.raises(ObjectReadError, match="a link"):
        _read(info, sub)
    assert sub.waits == []


def test_an_empty_object_is_read_without_a_subscription() -> None:
    sub = _Sub([])
    (_, data), js = _read(_described([]), sub)
    assert data == b"" and js.subjects == []
