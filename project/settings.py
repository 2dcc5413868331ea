"""Ferry settings.

With no environment at all Ferry runs embedded: SQLite, the django-q2 ORM broker, the
in-memory channel layer and filesystem storages, all under ``var/``. Real services are
switched on by environment variables (see docs/operations.md).
"""

import os
import secrets
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("FERRY_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(int(default))).lower() in {"1", "true", "yes", "on"}


def _development_secret_key() -> str:
    """A key generated once per machine and kept in var/: enough for a demo, wrong for a
    deployment, where every node must sign with the same key (see project/checks.py)."""
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


DEBUG = _env_bool("DJANGO_DEBUG", False)
#: Empty without DJANGO_SECRET_KEY and DEBUG off: the check ferry.E001 then refuses to start.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or (_development_secret_key() if DEBUG else "")
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",")
CSRF_TRUSTED_ORIGINS = [
    origin for origin in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if origin
]

# HTTPS (docs/operations.md, "Production settings"). With DEBUG off, cookies are Secure and
# HSTS is sent (on HTTPS requests only), which a deployment behind a TLS proxy survives
# unconfigured; redirecting to HTTPS needs to know what the proxy saw, so it follows
# DJANGO_SECURE_PROXY_SSL_HEADER (e.g. X-Forwarded-Proto) unless set on its own.
_proxy_ssl_header = os.environ.get("DJANGO_SECURE_PROXY_SSL_HEADER", "")
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https") if _proxy_ssl_header else None
)
SECURE_SSL_REDIRECT = _env_bool("DJANGO_SECURE_SSL_REDIRECT", bool(SECURE_PROXY_SSL_HEADER))
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = _env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000))
# Both reach beyond this host (every subdomain; browsers' built-in lists): the domain's call.
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = _env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "channels",
    "filesync",
    "filesync.follower",
    "exports",
    "project",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"
ASGI_APPLICATION = "project.asgi.application"

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
            ],
        },
    },
]

# Database: SQLite in var/ unless DATABASE_URL names another. WAL and a busy timeout let
# the ASGI server and a qcluster share the file without locking each other out;
# IMMEDIATE transactions take the write lock up front instead of failing on upgrade.
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{VAR_DIR / 'ferry.sqlite3'}", conn_max_age=0
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("DJANGO_STATIC_ROOT") or VAR_DIR / "static")
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []
WHITENOISE_USE_FINDERS = DEBUG

# Storages: `blobs` holds content-addressed media bytes, `exports` the binfile artifacts.
# Filesystem under var/ by default; S3 when AWS_STORAGE_BUCKET_NAME is set.
AWS_STORAGE_BUCKET_NAME = os.environ.get("AWS_STORAGE_BUCKET_NAME", "")
AWS_S3_ENDPOINT_URL = os.environ.get("AWS_S3_ENDPOINT_URL") or None
AWS_S3_REGION_NAME = os.environ.get("AWS_S3_REGION_NAME", "us-east-1")
#: A key prefix for every storage in the bucket, so several Ferrys (or tests) can share one.
FERRY_S3_PREFIX = os.environ.get("FERRY_S3_PREFIX", "")


def _storage(prefix: str, *, overwrite: bool = False) -> dict:
    if AWS_STORAGE_BUCKET_NAME:
        return {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": AWS_STORAGE_BUCKET_NAME,
                "endpoint_url": AWS_S3_ENDPOINT_URL,
                "region_name": AWS_S3_REGION_NAME,
                "location": f"{FERRY_S3_PREFIX}{prefix}",
                "file_overwrite": overwrite,
                "default_acl": None,
                "querystring_auth": True,
                # An object opened for reading (an archive being imported) spools to disk
                # past this size instead of staying whole in memory (the default, 0).
                "max_memory_size": 8 * 1024 * 1024,
            },
        }
    return {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(VAR_DIR / prefix), "allow_overwrite": overwrite},
    }


STORAGES = {
    "default": _storage("media"),
    # Content-addressed: the same name always holds the same bytes, so overwriting is safe.
    "blobs": _storage("blobs", overwrite=True),
    "exports": _storage("exports"),
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Uploads larger than this go to a temporary file, never into memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# Beside the storages, so finished uploads are moved into place, not copied.
FILE_UPLOAD_TEMP_DIR = os.environ.get("FILE_UPLOAD_TEMP_DIR") or str(VAR_DIR / "tmp")
os.makedirs(FILE_UPLOAD_TEMP_DIR, exist_ok=True)

REDIS_URL = os.environ.get("REDIS_URL", "")
CHANNEL_LAYERS = {
    "default": (
        {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # Deployments (or test runs) sharing one Redis keep apart by prefix.
            "CONFIG": {
                # redis-py 8 reads with a 5 s socket timeout by default, which breaks the
                # layer's blocking reads (channels_redis#422): they time out themselves.
                "hosts": [{"address": REDIS_URL, "socket_timeout": None}],
                "prefix": os.environ.get("CHANNEL_LAYER_PREFIX", "asgi"),
            },
        }
        if REDIS_URL
        else {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    )
}

# The cache holds the API's throttle counters, which every node must share: Redis when
# REDIS_URL is set, otherwise this process's memory (one node only).
CACHES = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "ferry"),
        }
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

Q_BROKER = os.environ.get("Q_BROKER", "orm")
Q_CLUSTER = {
    # Clusters sharing a broker share a queue by name; give separate deployments their own.
    "name": os.environ.get("Q_CLUSTER_NAME", "ferry"),
    "workers": int(os.environ.get("Q_WORKERS", "2")),
    "timeout": 600,
    "retry": 720,
    "max_attempts": 1,
    "catch_up": False,
    "ack_failures": True,
    "label": "Task queue",
    **({"redis": REDIS_URL} if Q_BROKER == "redis" else {"orm": "default"}),
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON bounded by common.limits; forms and multipart for the upload routes.
    "DEFAULT_PARSER_CLASSES": [
        "common.api.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "common.api.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["common.api.throttling.ActionRateThrottle"],
    # Per user (per address when anonymous), within the view's `throttle_scopes`.
    "DEFAULT_THROTTLE_RATES": {
        scope: os.environ.get(f"FERRY_THROTTLE_{scope.upper()}", rate)
        for scope, rate in {
            "exports": "60/min",
            "imports": "30/min",
            "uploads": "600/min",
            "blob_reads": "1200/min",
        }.items()
    },
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Ferry API",
    "DESCRIPTION": "Documents out and around, safely: files, media, snapshots, exports.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGIN_URL = "admin:login"

# Ferry's own knobs (docs/operations.md).
FERRY_SERVER_NAME = os.environ.get("FERRY_SERVER_NAME", "ferry")
FILE_PURGE_GRACE_SECONDS = int(os.environ.get("FILE_PURGE_GRACE_SECONDS", 24 * 3600))
BLOB_CHUNK_SIZE = 1024 * 1024
EXPORT_TICK_SECONDS = float(os.environ.get("EXPORT_TICK_SECONDS", 30))
EXPORT_LEASE_SECONDS = float(os.environ.get("EXPORT_LEASE_SECONDS", 60))
EXPORT_PART_SIZE = int(os.environ.get("EXPORT_PART_SIZE", 8 * 1024 * 1024))
EXPORT_TTL_SECONDS = int(os.environ.get("EXPORT_TTL_SECONDS", 7 * 24 * 3600))
EXPORT_PROGRESS_INTERVAL = float(os.environ.get("EXPORT_PROGRESS_INTERVAL", 0.25))
EXPORT_LINK_TTL_SECONDS = int(os.environ.get("EXPORT_LINK_TTL_SECONDS", 3600))
#: Hosts an export's callback_url may point at (no server-side request forgery).
EXPORT_CALLBACK_HOSTS = [h for h in os.environ.get("EXPORT_CALLBACK_HOSTS", "").split(",") if h]

# Imports: what an archive may declare before a byte of it is read (zip bombs, floods).
IMPORT_MAX_BYTES = int(os.environ.get("IMPORT_MAX_BYTES", 10 * 1024**3))
IMPORT_MAX_ENTRIES = int(os.environ.get("IMPORT_MAX_ENTRIES", 1_000_000))
IMPORT_MAX_RATIO = int(os.environ.get("IMPORT_MAX_RATIO", 200))
# JSON: how deep and how big a request body and stored content may be (common/limits.py).
MAX_JSON_DEPTH = int(os.environ.get("MAX_JSON_DEPTH", 64))
API_MAX_JSON_BYTES = int(os.environ.get("API_MAX_JSON_BYTES", 12 * 1024**2))
PAGE_MAX_BYTES = int(os.environ.get("PAGE_MAX_BYTES", 4 * 1024**2))
#: A JSON document of an archive (a page) is parsed whole: its size bounds the memory. The
#: default takes any page the store holds, with room for the document around it, so
#: whatever Ferry exports it imports back.
IMPORT_MAX_DOCUMENT_BYTES = int(
    os.environ.get("IMPORT_MAX_DOCUMENT_BYTES", PAGE_MAX_BYTES + 1024**2)
)
PAGE_MAX_OBJECTS = int(os.environ.get("PAGE_MAX_OBJECTS", 100_000))

#: How often a live listener re-reads the event rows when no push wakes it.
EVENTS_POLL_SECONDS = float(os.environ.get("EVENTS_POLL_SECONDS", 0.5 if not REDIS_URL else 5))
SYNC_LOCK_SECONDS = int(os.environ.get("SYNC_LOCK_SECONDS", 600))
SYNC_MAX_WAIT_SECONDS = 30
SYNC_UPLOAD_TTL_SECONDS = int(os.environ.get("SYNC_UPLOAD_TTL_SECONDS", 24 * 3600))
SYNC_PATCH_LEASE_SECONDS = 60
REPLICA_STALE_SECONDS = int(os.environ.get("REPLICA_STALE_SECONDS", 24 * 3600))

# Follower: a download's claim lasts this long unless renewed; failed attempts back off
# from FOLLOWER_RETRY_SECONDS, doubling, and stop after FOLLOWER_MAX_ATTEMPTS.
FOLLOWER_LEASE_SECONDS = float(os.environ.get("FOLLOWER_LEASE_SECONDS", 60))
FOLLOWER_RETRY_SECONDS = float(os.environ.get("FOLLOWER_RETRY_SECONDS", 1))
FOLLOWER_MAX_ATTEMPTS = int(os.environ.get("FOLLOWER_MAX_ATTEMPTS", 6))
SYNC_MAX_BLOB_BYTES = int(os.environ.get("SYNC_MAX_BLOB_BYTES", 5 * 1024**3))
EVENTS_HEARTBEAT_SECONDS = float(os.environ.get("EVENTS_HEARTBEAT_SECONDS", 15))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # httpx logs every request at INFO: a follower would print a line per range it fetches.
    "loggers": {"httpx": {"level": "WARNING"}},
}
