"""Login throttling with Django's own pieces (an authentication backend and
the cache), so both the site's and the admin's login forms are covered.

After LOGIN_FAILURE_LIMIT failed attempts for one user name, or
LOGIN_FAILURE_LIMIT_PER_ADDRESS from one client address, within
LOGIN_THROTTLE_SECONDS, every attempt is refused -- with the right password
too -- until the window (counted from the first failure) has passed. A
successful login clears the user name's count. Counts live in the cache
(Redis), shared by every web process.
"""

import hashlib
import hmac
import logging
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache
from django.core.exceptions import ValidationError

log = logging.getLogger(__name__)


def _keys(request, username: str) -> list[tuple[str, int]]:
    digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    keys = [(f"login-fail:user:{digest}", settings.LOGIN_FAILURE_LIMIT)]
    address = request.META.get("REMOTE_ADDR") if request is not None else None
    if address:
        keys.append((f"login-fail:addr:{address}", settings.LOGIN_FAILURE_LIMIT_PER_ADDRESS))
    return keys


def login_throttled(request, username: str) -> bool:
    try:
        counts = cache.get_many([key for key, _ in _keys(request, username)])
    except Exception as exc:  # the cache (Redis) is down: do not lock everyone out
        log.warning("login throttle unavailable: %s", exc)
        return False
    return any(counts.get(key, 0) >= limit for key, limit in _keys(request, username))


def login_failed(request, username: str) -> None:
    for key, _ in _keys(request, username):
        try:
            # add() starts the window at the first failure; incr() keeps its expiry.
            if not cache.add(key, 1, timeout=settings.LOGIN_THROTTLE_SECONDS):
                cache.incr(key)
        except ValueError:
            cache.add(key, 1, timeout=settings.LOGIN_THROTTLE_SECONDS)  # expired in between
        except Exception as exc:
            log.warning("login throttle unavailable: %s", exc)


def login_succeeded(request, username: str) -> None:
    try:
        cache.delete(_keys(request, username)[0][0])
    except Exception as exc:
        log.warning("login throttle unavailable: %s", exc)


class ThrottledModelBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if username is None or password is None:
            return None
        if login_throttled(request, username):
            if request is not None:
                request.login_throttled = True
            return None
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            login_failed(request, username)
        else:
            login_succeeded(request, username)
            forget_first_password(password)
        return user


def forget_first_password(password: str) -> None:
    """The first admin's generated password (kdevweb_init) stays on disk only
    until it has been used to log in once."""
    path = Path(settings.DATA_DIR) / "admin-password"
    try:
        if hmac.compare_digest(path.read_text().strip().encode(), password.encode()):
            path.unlink()
            log.info("first login with the generated admin password: removed %s", path)
    except OSError:
        pass  # no file (the usual case), or not ours to remove


class ThrottledAuthenticationForm(AuthenticationForm):
    """Says so when the refusal is the throttle, not the password."""

    def get_invalid_login_error(self):
        if getattr(self.request, "login_throttled", False):
            minutes = max(1, settings.LOGIN_THROTTLE_SECONDS // 60)
            return ValidationError(
                f"Too many failed logins for this account or from this address: wait {minutes} minutes "
                "and try again.", code="throttled")
        return super().get_invalid_login_error()
