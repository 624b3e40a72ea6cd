"""Websocket Origin check by scheme, host and port.

Channels' AllowedHostsOriginValidator compares host names only, so a page
on another port of the same host (http://127.0.0.1:9999) could open the
build stream with the user's cookies. A handshake is accepted only when its
Origin is the site's own: one of the configured origins (SITE_ROOT and
WEBSOCKET_ALLOWED_ORIGINS, e.g. behind a TLS proxy), or exactly the origin
the socket itself was reached at (http(s):// + its Host header, the host
being in ALLOWED_HOSTS).
"""

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_tuple(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin or URL, default ports filled in; None when malformed."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in DEFAULT_PORTS or not host:
        return None
    return scheme, host, port or DEFAULT_PORTS[scheme]


def configured_origins() -> set[tuple[str, str, int]]:
    urls = [settings.SITE_ROOT, *getattr(settings, "WEBSOCKET_ALLOWED_ORIGINS", [])]
    return {o for o in map(origin_tuple, urls) if o is not None}


def origin_allowed(scope) -> bool:
    headers = dict(scope.get("headers", []))
    try:
        origin = headers.get(b"origin", b"").decode("ascii")
        host = headers.get(b"host", b"").decode("ascii")
    except UnicodeDecodeError:
        return False
    wanted = origin_tuple(origin)
    if wanted is None:
        return False  # no Origin: not a browser page; nothing needs that here
    if wanted in configured_origins():
        return True
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS) and wanted == origin_tuple(
        f"{scheme}://{host}")


class SameOriginValidator:
    """ASGI middleware (wraps like AllowedHostsOriginValidator): refuse the
    handshake (HTTP 403) unless :func:`origin_allowed`."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            raise ValueError("SameOriginValidator is for websocket connections")
        if origin_allowed(scope):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
