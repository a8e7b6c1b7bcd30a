"""Prefloop settings. Every value comes from the environment and has a working default
(SQLite, a filesystem broker, a local media directory): see the table in README.md."""

import json
import os
import secrets
from pathlib import Path

import dj_database_url

from .env import env_bool, env_float, env_int, env_list, env_path, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = env_path("PREFLOOP_DATA_DIR", BASE_DIR / "var")
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """DJANGO_SECRET_KEY, or one generated once and kept in the data dir (never in the repo)."""
    from_env = env_str("DJANGO_SECRET_KEY", "")
    if from_env:
        return from_env
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
SECURE_COOKIES = env_bool("PREFLOOP_SECURE_COOKIES", False)
SESSION_COOKIE_SECURE = SECURE_COOKIES
# Sessions read from the cache and written through to the database: one query less per page view.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
CSRF_COOKIE_SECURE = SECURE_COOKIES
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "axes",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "annotate",
    "training",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "annotate.limits.RequestSizeLimitMiddleware",  # before anything reads a body
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "config.middleware.DatabaseUnavailableMiddleware",  # a database outage is a 503, not a 500
    "axes.middleware.AxesMiddleware",  # last: it turns a locked-out login into the 429 page
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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

# --- database -----------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'prefloop.sqlite3'}")
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60), conn_health_checks=True
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # WAL lets readers run beside the one writer; IMMEDIATE takes the write lock at BEGIN, so
    # two transactions never both read and then fail to upgrade ("database is locked").
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool(
    "DATABASE_PREPARED_STATEMENTS", True
):
    # Prepared statements: psycopg prepares a query the 5th time a connection runs it, which saves
    # PostgreSQL the planning of the queue's claim on every call (docs/benchmarks.md). Set
    # DATABASE_PREPARED_STATEMENTS=0 behind a transaction-pooling pgbouncer.
    DATABASES["default"].setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=5)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
# Login throttling (django-axes): failures are counted per account and, separately, per address
# in the database (shared by every process); past the limit that account or address is refused
# until the cool-off ends. A success resets the count.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("PREFLOOP_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = env_int("PREFLOOP_LOGIN_COOLOFF_MINUTES", 15) / 60  # hours
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked.html"
AXES_VERBOSE = False
# Behind a reverse proxy, the header that carries the client's address (e.g. HTTP_X_REAL_IP); else REMOTE_ADDR.
PREFLOOP_CLIENT_IP_HEADER = env_str("PREFLOOP_CLIENT_IP_HEADER", "")
AXES_CLIENT_IP_CALLABLE = "annotate.access.client_ip"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TZ", "UTC")
USE_I18N = False
USE_TZ = True

# --- files --------------------------------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
MEDIA_ROOT = env_path("PREFLOOP_MEDIA_DIR", DATA_DIR / "media")
MEDIA_URL = "media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- Prefloop -----------------------------------------------------------------------------
PREFLOOP_MAX_UPLOAD_BYTES = env_int("PREFLOOP_MAX_UPLOAD_MB", 200) * 1024 * 1024
PREFLOOP_LEASE_SECONDS = env_int("PREFLOOP_LEASE_SECONDS", 600)
PREFLOOP_UNDO_SECONDS = env_int("PREFLOOP_UNDO_SECONDS", 60)
PREFLOOP_IMPORT_BATCH = env_int("PREFLOOP_IMPORT_BATCH", 5000)
# An import that adds this many rows to a table ANALYZEs it (PostgreSQL), not waiting for autovacuum.
PREFLOOP_ANALYZE_AFTER_ROWS = env_int("PREFLOOP_ANALYZE_AFTER_ROWS", 5000)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024  # larger uploads stream to a temporary file
# Uploads stream to a temporary file and stop at PREFLOOP_MAX_UPLOAD_MB (annotate/limits.py).
FILE_UPLOAD_HANDLERS = ["annotate.limits.LimitedUploadHandler"]
# A gzipped import stops once it unzips to more than this (a small file can unzip to terabytes).
PREFLOOP_MAX_UNZIPPED_BYTES = env_int("PREFLOOP_MAX_UNZIPPED_MB", 2000) * 1024 * 1024

# --- REST API ----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "annotate.tokens.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "annotate.pagination.IdCursorPagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_THROTTLE_CLASSES": ["annotate.tokens.TokenRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"token": env_str("PREFLOOP_API_RATE", "6000/min")},
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "URL_FORMAT_OVERRIDE": None,  # ?format= names the export format, not a renderer
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Prefloop API",
    "DESCRIPTION": "Projects, comparisons, judgments, dataset export, training jobs. Authenticate with "
    "`Authorization: Bearer <token>` (create one on /tokens/ or with `manage.py create_api_token`).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",  # vendored: the docs work on an air-gapped server
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "ENUM_NAME_OVERRIDES": {
        "StoredChoiceEnum": "annotate.models.Choice",
        "ShownChoiceEnum": ["left", "right", "tie"],
        "ComparisonStatusEnum": "annotate.models.ComparisonStatus",
        "DeliveryStatusEnum": "annotate.models.WebhookDelivery.Status",
    },
}
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("PREFLOOP_API_MAX_BODY_MB", 100) * 1024 * 1024
# "shared" is one cache for every process (the API throttle counts there): Redis when
# PREFLOOP_CACHE_URL names one, else a table in the database (made by migrate,
# annotate/migrations/0005_cache_table.py). "default" memoises page statistics: per process is enough.
CACHE_URL = env_str("PREFLOOP_CACHE_URL", "")
_REDIS_CACHE = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
CACHES = {
    "default": _REDIS_CACHE if CACHE_URL.startswith("redis")
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "shared": _REDIS_CACHE if CACHE_URL.startswith("redis")
    else {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "prefloop_cache"},
}
PREFLOOP_WEBHOOK_RETRIES = env_int("PREFLOOP_WEBHOOK_RETRIES", 6)
PREFLOOP_WEBHOOK_BACKOFF_SECONDS = env_int("PREFLOOP_WEBHOOK_BACKOFF_SECONDS", 30)
# A pending delivery this many seconds past its next attempt lost its message; the sweeper re-sends it.
PREFLOOP_WEBHOOK_RESEND_AFTER = env_int("PREFLOOP_WEBHOOK_RESEND_AFTER", 300)
# Hosts webhooks may call although they resolve to loopback/private addresses (by name, e.g. "hooks.internal").
PREFLOOP_WEBHOOK_ALLOWED_HOSTS = env_list("PREFLOOP_WEBHOOK_ALLOWED_HOSTS", [])

# --- Jobs --------------------------------------------------------------------------------------
PREFLOOP_JOB_HEARTBEAT_SECONDS = env_int("PREFLOOP_JOB_HEARTBEAT_SECONDS", 5)
PREFLOOP_JOB_HEARTBEAT_TIMEOUT = env_int("PREFLOOP_JOB_HEARTBEAT_TIMEOUT", 120)
PREFLOOP_JOB_REQUEUE_SECONDS = env_int("PREFLOOP_JOB_REQUEUE_SECONDS", 300)
# Runs of one launch before a job whose worker was lost fails for good (a kind may set its own).
PREFLOOP_JOB_MAX_ATTEMPTS = env_int("PREFLOOP_JOB_MAX_ATTEMPTS", 2)
# Per-kind overrides of attempts and time limits, as JSON: {"dpo": {"max_attempts": 3, "time_limit_seconds": 7200}}
PREFLOOP_JOB_LIMITS = json.loads(env_str("PREFLOOP_JOB_LIMITS", "{}"))
# The always-fresh reward head (training/reward_head.py): refit after K new judgments, once a
# project has the minimum; MiniLM embeddings of each response, cached per candidate.
PREFLOOP_HEAD_REFIT_EVERY = env_int("PREFLOOP_HEAD_REFIT_EVERY", 20)
PREFLOOP_HEAD_MIN_JUDGMENTS = env_int("PREFLOOP_HEAD_MIN_JUDGMENTS", 30)
PREFLOOP_HEAD_L2 = env_float("PREFLOOP_HEAD_L2", 3.0)  # rewards.preference_head.DEFAULT_L2
PREFLOOP_HEAD_MAX_PAIRS = env_int("PREFLOOP_HEAD_MAX_PAIRS", 5000)  # latest judgments a refit learns from
PREFLOOP_HEAD_MAX_OPEN = env_int("PREFLOOP_HEAD_MAX_OPEN", 50000)  # open comparisons a refit reorders
PREFLOOP_HEAD_EMBED_PER_RUN = env_int("PREFLOOP_HEAD_EMBED_PER_RUN", 500)  # ~15 s of CPU a run
PREFLOOP_HEAD_MAX_LENGTH = env_int("PREFLOOP_HEAD_MAX_LENGTH", 256)
PREFLOOP_HEAD_WITH_PROMPT = env_bool("PREFLOOP_HEAD_WITH_PROMPT", False)
# Runners know nothing of Django: they read the model cache (SmolLM2 converted from GGUF) from here.
os.environ.setdefault("PREFLOOP_MODEL_CACHE", str(DATA_DIR / "models"))

# --- Celery -------------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
BROKER_DIR = DATA_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    # Measured in shared/notes/embedded-broker.md: the fastest serverless transport that works;
    # config/broker.py makes each message visible only once it is whole (kombu's is not).
    CELERY_BROKER_TRANSPORT = "config.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": True,
        "polling_interval": 0.1,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)}
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BEAT_SCHEDULE = {
    "release-expired-leases": {"task": "annotate.tasks.release_expired_leases", "schedule": 300.0},
    "prune-broker-folder": {"task": "annotate.tasks.prune_processed_messages", "schedule": 3600.0},
    "judgment-webhooks": {"task": "annotate.tasks.check_judgment_webhooks", "schedule": 15.0},
    "resend-stuck-deliveries": {"task": "annotate.tasks.resend_stuck_deliveries", "schedule": 60.0},
    "sweep-jobs": {"task": "training.sweep_jobs", "schedule": 30.0},
    "reward-heads": {"task": "training.check_reward_heads",
                     "schedule": float(env_int("PREFLOOP_HEAD_CHECK_SECONDS", 10))},
}
CELERY_IMPORTS = ("training.head_tasks",)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("PREFLOOP_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "axes": {"level": "WARNING"}},
}
