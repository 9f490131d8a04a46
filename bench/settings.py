"""Django settings for bench/compare.py: tests/settings.py's essentials plus the bench app.

The database comes from DATABASE_URL; compare.py points it at a fresh database per run.
"""

import os

import dj_database_url

SECRET_KEY = "baton-bench-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if "DATABASE_URL" not in os.environ:
    raise RuntimeError("DATABASE_URL is not set: run bench/compare.py, which sets it.")
# Persistent connections, as baton's system check asks (CONN_MAX_AGE=0 costs ~5 ms a hop).
DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=60)}
if os.environ.get("BENCH_PREPARE_THRESHOLD"):
    # compare.py --prepared: server-side binding, so psycopg prepares repeated statements.
    DATABASES["default"]["OPTIONS"] = {
        "server_side_binding": True,
        "prepare_threshold": int(os.environ["BENCH_PREPARE_THRESHOLD"]),
    }

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "procrastinate.contrib.django",
    "baton",
    "bench.benchapp",
]
ROOT_URLCONF = "bench.urls"
BATON: dict[str, object] = {}
if os.environ.get("BENCH_WORKER_THREADS"):
    # bench/peers.py's in-flight shape with sync steps: a thread per step in flight.
    BATON["WORKER_THREADS"] = int(os.environ["BENCH_WORKER_THREADS"])
if os.environ.get("BENCH_BROADCAST_REDIS"):
    # bench/broadcast.py: a worker that broadcasts every transition over real Redis.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": os.environ["BENCH_BROADCAST_REDIS"], "socket_timeout": None}],
                "prefix": "baton-bench",
            },
        }
    }
    BATON["CHANNEL_LAYER"] = "default"
if os.environ.get("BENCH_ADMIN"):
    # bench/scale.py: the admin and the live pages, timed through Django's test client.
    INSTALLED_APPS = [
        "django.contrib.admin",
        "django.contrib.sessions",
        "django.contrib.messages",
        "django.contrib.staticfiles",
        *INSTALLED_APPS,
    ]
    MIDDLEWARE = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    ]
    TEMPLATES = [
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
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
    STATIC_URL = "/static/"
    ALLOWED_HOSTS = ["testserver"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "baton": {"handlers": ["console"], "level": os.environ.get("BATON_LOG_LEVEL", "WARNING")},
        "procrastinate": {
            "handlers": ["console"],
            "level": os.environ.get("PROCRASTINATE_LOG_LEVEL", "WARNING"),
        },
    },
}
