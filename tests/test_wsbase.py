"""kdevweb/wsbase.FramesWithoutOrm: a page's frames reach the consumer
without Channels' hop to the ORM's thread; connect still makes it."""

from __future__ import annotations

import asyncio

import channels.consumer
import pytest

from builds.consumers import BuildConsumer
from guests.console_consumer import ConsoleConsumer
from guests.consumers import GuestsConsumer
from kdevweb.wsbase import FramesWithoutOrm, query_int


@pytest.mark.parametrize("consumer", [ConsoleConsumer, BuildConsumer, GuestsConsumer])
def test_every_live_consumer_skips_the_orm_hop_for_frames(consumer) -> None:
    assert issubclass(consumer, FramesWithoutOrm)
    assert consumer.dispatch is FramesWithoutOrm.dispatch


def test_frames_skip_the_hop_and_connect_keeps_it(monkeypatch) -> None:
    hops: list[str] = []

    async def hop() -> None:
        hops.append("orm")

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", hop)
    seen: list[str] = []

    class Probe(FramesWithoutOrm, channels.consumer.AsyncConsumer):
        async def websocket_receive(self, message):
            seen.append(message["type"])

        async def websocket_connect(self, message):
            seen.append(message["type"])

    probe = Probe()
    asyncio.run(probe.dispatch({"type": "websocket.receive", "bytes": b"k"}))
    assert seen == ["websocket.receive"] and hops == []
    asyncio.run(probe.dispatch({"type": "websocket.connect"}))
    assert seen == ["websocket.receive", "websocket.connect"] and hops == ["orm"]


@pytest.mark.parametrize("query, expected", [
    (b"", None), (b"from=0", 0), (b"from=4096&x=1", 4096), (b"x=1&from=12", 12),
    (b"from=", None), (b"from=-5", None), (b"from=1e3", None), (b"from=%31", None),
    (b"from=" + b"9" * 15, int("9" * 15)),
    # Past a u64 frame header and a stream ID: not an offset the server gave.
    (b"from=" + b"9" * 20, None),
    (b"guest=7", None),
])
def test_query_int_takes_only_offsets_the_server_could_have_given(query, expected) -> None:
    assert query_int({"query_string": query}, "from") == expected
