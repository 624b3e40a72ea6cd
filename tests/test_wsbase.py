"""kdevweb/wsbase.FramesWithoutOrm: a page's frames reach the consumer
without Channels' hop to the ORM's thread; connect still makes it."""

from __future__ import annotations

import asyncio

import channels.consumer
import pytest

from builds.consumers import BuildConsumer
from guests.console_consumer import ConsoleConsumer
from guests.consumers import GuestsConsumer
from kdevweb.wsbase import FramesWithoutOrm


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
