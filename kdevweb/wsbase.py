"""What kdevweb's websockets share (builds, guest state, consoles).

Routing wraps each of them the same way (kdevweb/asgi.py: the Origin check
of kdevweb/wsorigin.py around AuthMiddlewareStack); each consumer authorises
before accept() and re-checks access every ACCESS_RECHECK seconds while
connected, closing with CLOSE_FORBIDDEN once the user may no longer look.
"""

import json

from autobahn.exception import Disconnected
from channels.generic.websocket import AsyncJsonWebsocketConsumer

# A member removed from the lab loses the socket within this many seconds.
ACCESS_RECHECK = 0.5
CLOSE_FORBIDDEN = 4403
CLOSE_BAD_FRAME = 4400


def query_int(scope: dict, name: str) -> int | None:
    """The websocket URL's ``name=`` parameter as a number (``from``: a
    stream offset, ``guest``: a row id), or None when absent or not one.
    At most 15 digits: offsets fit in a stream ID and a frame header
    (u64), ids in a database integer; anything longer is not a position
    or row this server handed out."""
    for part in scope.get("query_string", b"").decode("ascii", "replace").split("&"):
        key, _, value = part.partition("=")
        if key == name:
            return int(value) if value.isdigit() and len(value) <= 15 else None
    return None


class FramesWithoutOrm:
    """Mixed into a consumer whose page-to-server frames touch no database.

    Channels (4.2 on) hops to the ORM's thread to close stale connections
    before *every* handler, each incoming frame included: a keystroke or an
    acknowledgement then waits for that thread (and the GIL hand-off back),
    2-5 ms of a console's round trip on a busy host. kdevweb's frame
    handlers use no ORM; what they record goes through
    ``database_sync_to_async``, which closes stale connections around its
    own call. Connect and disconnect keep Channels' behaviour.
    """

    async def dispatch(self, message):
        if message.get("type") == "websocket.receive":
            await self.websocket_receive(message)
            return
        await super().dispatch(message)


class LiveJsonConsumer(FramesWithoutOrm, AsyncJsonWebsocketConsumer):
    """A server-to-page JSON stream whose clients have nothing to say."""

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        # A frame that is not JSON comes from a broken or hostile client:
        # close with a code, no traceback.
        try:
            json.loads(text_data if text_data is not None else bytes_data)
        except (TypeError, ValueError):
            await self.close(code=CLOSE_BAD_FRAME)

    async def send_json(self, *args, **kwargs):
        # The viewer may leave between an update arriving and our reply (a
        # build ending as the tab closes): not an error; disconnect() cleans up.
        try:
            await super().send_json(*args, **kwargs)
        except Disconnected:
            self.viewer_gone()

    def viewer_gone(self) -> None:
        """Called when a send finds the viewer gone; stop background senders."""
