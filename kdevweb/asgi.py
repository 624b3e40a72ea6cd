"""ASGI entry point: HTTP through Django, websockets through Channels.

Websockets are checked for their Origin (scheme, host and port: see
kdevweb/wsorigin.py) and authenticated by the session before any consumer
sees them.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kdevweb.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs apps loaded)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from builds.routing import websocket_urlpatterns  # noqa: E402
from guests.routing import websocket_urlpatterns as guest_websockets  # noqa: E402
from kdevweb.wsorigin import SameOriginValidator  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns + guest_websockets))),
    }
)
