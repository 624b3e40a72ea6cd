"""kdevweb settings: one file, read from the environment with SQLite and a
local Redis as defaults, so `scripts/run` works with no configuration.

Production: set DEBUG=False, SECRET_KEY, ALLOWED_HOSTS (and SITE_ROOT for
CSRF_TRUSTED_ORIGINS); `manage.py check --deploy` must then be clean.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: str) -> bool:
    return os.getenv(name, default).lower() in ("1", "true", "yes", "on")


def envint(name: str, default: str) -> int:
    return int(os.getenv(name, default))


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.getenv(name, default).split(",") if item.strip()]


DEBUG = envbool("DEBUG", "True")
# Where kdevweb keeps state that is not in the database: build work dirs and
# logs, the generated admin password, sockets of running guests.
DATA_DIR = Path(os.getenv("KDEVWEB_DATA_DIR", str(BASE_DIR / "var")))


def _secret_key() -> str:
    # Never a fixed default: generate one on first use and keep it 0600 next
    # to the data, so sessions survive restarts of `scripts/run`.
    if os.getenv("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    from django.core.management.utils import get_random_secret_key

    path = DATA_DIR / "secret_key"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(get_random_secret_key())
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
SITE_ROOT = os.getenv("SITE_ROOT", "http://localhost:8000")
CSRF_TRUSTED_ORIGINS = [SITE_ROOT]
# Websocket Origins accepted besides SITE_ROOT and the socket's own origin
# (scheme, host and port compared: kdevweb/wsorigin.py).
WEBSOCKET_ALLOWED_ORIGINS = envlist("WEBSOCKET_ALLOWED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_rq",
    "guests",
    "builds",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "kdevweb.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "kdevweb.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
WSGI_APPLICATION = "kdevweb.wsgi.application"
ASGI_APPLICATION = "kdevweb.asgi.application"

# The database: SQLite in the data dir for one machine; PostgreSQL (DB_ENGINE=
# django.db.backends.postgresql) once more than one machine shares it -- web,
# build workers, reaper and host agents must then all get the same DB_*.
DB_ENGINE = os.getenv("DB_ENGINE", "django.db.backends.sqlite3")
DB_IS_SQLITE = DB_ENGINE == "django.db.backends.sqlite3"
if DB_IS_SQLITE:
    # Builds write status from the worker while the web process reads: WAL
    # lets readers and one writer proceed together.
    # IMMEDIATE: a transaction that reads then writes takes the write lock up
    # front, so it waits (timeout) instead of failing with "database is
    # locked" when a worker's heartbeat commits in between.
    _DB_OPTIONS: dict[str, object] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
    _DB_NAME = str(DATA_DIR / "kdevweb.sqlite3")
    # A file, not memory: test runs start real worker processes that must
    # see the same database.
    _DB_TEST_NAME = str(DATA_DIR / "test.sqlite3")
else:
    # Unset DB_SSLMODE leaves libpq's default ("prefer"); libpq also reads
    # PGSSLROOTCERT and friends for "verify-full".
    _DB_OPTIONS = {"sslmode": os.environ["DB_SSLMODE"]} if os.getenv("DB_SSLMODE") else {}
    _DB_NAME = "kdevweb"
    # A server-side name, never a path: PostgreSQL cuts names at 63 bytes.
    _DB_TEST_NAME = "test_" + os.getenv("DB_NAME", _DB_NAME)
DATABASES = {
    "default": {
        "ENGINE": DB_ENGINE,
        "NAME": os.getenv("DB_NAME", _DB_NAME),
        "USER": os.getenv("DB_USER", ""),
        "PASSWORD": os.getenv("DB_PASSWORD", ""),
        "HOST": os.getenv("DB_HOST", ""),
        "PORT": os.getenv("DB_PORT", ""),
        "OPTIONS": _DB_OPTIONS,
        # Seconds a connection is kept between requests (0: one per request).
        # Health checks make a kept connection survive a database restart.
        "CONN_MAX_AGE": envint("DB_CONN_MAX_AGE", "0"),
        "CONN_HEALTH_CHECKS": True,
        "TEST": {"NAME": os.getenv("DB_TEST_NAME", _DB_TEST_NAME)},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Login throttling (kdevweb/throttle.py): failed attempts per user name and
# per client address within a window, counted in the cache (Redis).
AUTHENTICATION_BACKENDS = ["kdevweb.throttle.ThrottledModelBackend"]
LOGIN_FAILURE_LIMIT = envint("LOGIN_FAILURE_LIMIT", "5")
LOGIN_FAILURE_LIMIT_PER_ADDRESS = envint("LOGIN_FAILURE_LIMIT_PER_ADDRESS", "30")
LOGIN_THROTTLE_SECONDS = envint("LOGIN_THROTTLE_SECONDS", "900")
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "index"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.getenv("STATIC_ROOT", str(DATA_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Hashed, compressed files in production; plain names in development and
    # tests, which must not depend on collectstatic having run.
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
# WhiteNoise serves static files under daphne; in development straight from
# the app/static dirs, so an edited script needs no collectstatic.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

REDIS_URL = os.getenv("REDIS_URL", "redis://127.0.0.1:6379/0")
# Redis runs jobs (RQ) and carries build streams: `scripts/run` starts it
# with a password that `scripts/setup` generated into the data dir (0600,
# service user). Kept out of REDIS_URL so that no page or log that shows the
# URL shows it; "PASSWORD" in the name hides it from error reports.
REDIS_PASSWORD_FILE = Path(os.getenv("REDIS_PASSWORD_FILE", str(DATA_DIR / "redis-password")))
REDIS_PASSWORD = os.getenv("REDIS_PASSWORD") or (
    REDIS_PASSWORD_FILE.read_text().strip() if REDIS_PASSWORD_FILE.is_file() else None
)


def _rq_connection() -> dict:
    from urllib.parse import urlparse

    if not REDIS_PASSWORD:
        return {"URL": REDIS_URL}
    url = urlparse(REDIS_URL)  # django-rq ignores PASSWORD next to a URL
    return {"HOST": url.hostname or "127.0.0.1", "PORT": url.port or 6379,
            "DB": int(url.path.strip("/") or 0), "PASSWORD": REDIS_PASSWORD}


CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # redis-py 8 closes idle consumers after ~5 s unless socket_timeout
            # is None; channels-redis drops messages past capacity, which the
            # build stream compensates for with offsets and backfill.
            "hosts": [{"address": REDIS_URL, "socket_timeout": None, "password": REDIS_PASSWORD}],
            "capacity": envint("CHANNEL_CAPACITY", "1000"),
        },
    }
}
RQ_QUEUES = {
    "default": {**_rq_connection(), "DEFAULT_TIMEOUT": envint("RQ_DEFAULT_TIMEOUT", "600")},
}
# Shared by every process (login throttle counts).
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "kdevweb",
        "OPTIONS": {"password": REDIS_PASSWORD} if REDIS_PASSWORD else {},
    }
}
# Nix builds of real guests take far longer than RQ's 180 s default.
BUILD_TIMEOUT = envint("BUILD_TIMEOUT", str(6 * 3600))
# A running build whose worker stopped heartbeating for this long is `lost`.
BUILD_LOST_AFTER = envint("BUILD_LOST_AFTER", "30")
# At most this many builds of one lab run at once; waiting builds start in
# fair order across labs (builds/scheduling.py).
BUILDS_PER_LAB = envint("BUILDS_PER_LAB", "2")
# Live streams (guests/runtime/offsetstream.py, docs/streams.md): bytes of a
# running build's log kept in Redis (older bytes come from the worker's
# file), and seconds between the guest pages' safety re-reads of the rows.
BUILD_STREAM_WINDOW = envint("BUILD_STREAM_WINDOW", str(8 * 1024 * 1024))
GUESTS_RESNAPSHOT = float(os.getenv("GUESTS_RESNAPSHOT", "2.0"))
BUILDS_DIR = Path(os.getenv("KDEVWEB_BUILDS_DIR", str(DATA_DIR / "builds")))
# Pass --offline to nix: no substituters, cached flake inputs never expire.
# The machines kdevweb was built on have no network; set False where
# cache.nixos.org and GitHub are reachable.
NIX_OFFLINE = envbool("NIX_OFFLINE", "True")
# Builds go through the root nix-daemon (build users, sandbox) rather than
# a local store the worker would have to own: see "Security model" in the
# README. Empty means nix's default store (single-user, needs root).
NIX_REMOTE = os.getenv("NIX_REMOTE", "daemon")
# The source a new configuration is prefilled with. Offline, upstream's
# github: source cannot be fetched, so a new user's first build would fail:
# the offline stand-in (which builds with no network) is the default there.
DEFAULT_NIXOS_FLAKE = os.getenv(
    "DEFAULT_NIXOS_FLAKE",
    f"path:{BASE_DIR / 'examples' / 'nixos-flake-standin'}" if NIX_OFFLINE else "github:linux-kdevops/nixos-flake",
)
# Seconds `nix eval` of a new revision may take before it is killed.
EVAL_TIMEOUT = envint("EVAL_TIMEOUT", "300")
# Directories whose contents operators may use as path:/git+file: sources
# (comma-separated; symlinks and .. are resolved before comparing). Remote
# sources (github:, git+https:, https:) are always allowed. Whatever is
# listed here ends up readable in the store: list nothing secret.
ALLOWED_SOURCE_ROOTS = envlist("KDEVWEB_ALLOWED_SOURCE_ROOTS",
                               str(BASE_DIR / "examples" / "nixos-flake-standin"))

# HTTPS-only cookies, redirects and HSTS when the site is served over
# HTTPS; `scripts/run` on http://127.0.0.1 runs with DEBUG=False too and
# must keep working there.
if not DEBUG and SITE_ROOT.startswith("https://"):
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", "True")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", "31536000")
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # A refused request (403, 404, 400) is logged in one line, no traceback.
    "filters": {"client_errors": {"()": "kdevweb.logfilters.NoTracebackForClientErrors"}},
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"filters": ["client_errors"]}},
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "INFO")},
}
