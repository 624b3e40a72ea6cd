"""A viewer who leaves just as a build ends is not an error."""

import asyncio

from autobahn.exception import Disconnected

from builds.consumers import BuildConsumer


def test_send_to_a_departed_viewer_is_quiet():
    consumer = BuildConsumer()
    consumer.terminal = False

    async def gone(message):
        raise Disconnected("Attempt to send on a closed protocol")

    consumer.base_send = gone
    asyncio.run(consumer.send_json({"type": "status", "build": {}}))
    assert consumer.terminal, "the poller stops for a departed viewer"
