"""Django settings for baton's own test suite. The database comes from DATABASE_URL
(unset: no database, which is all tests/unit needs)."""

import os

import dj_database_url

SECRET_KEY = "baton-tests-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Without DATABASE_URL there is no database (Django's dummy backend refuses every query):
# enough for tests/unit. tests/conftest.py refuses a run selecting a test that needs one.
DATABASES = (
    {"default": dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=60)}
    if os.environ.get("DATABASE_URL")
    else {}
)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "procrastinate.contrib.django",
    "channels",
    "baton",
    "tests.testapp",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.urls"
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
ASGI_APPLICATION = "tests.asgi.application"
# Real Redis for the Channels layer when the test runner started one (make test does).
if os.environ.get("REDIS_URL"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # socket_timeout=None: redis-py 8 times idle sockets out after 5 s, which
            # drops every live socket that has had nothing to say for that long
            # (redis/redis-py#4091; channels-redis 4.3 blocks on BZPOPMIN).
            "CONFIG": {"hosts": [{"address": os.environ["REDIS_URL"], "socket_timeout": None}]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
# Broadcasting is switched on per worker process by the tests that need it.
BATON: dict[str, object] = (
    {"CHANNEL_LAYER": "default"} if os.environ.get("BATON_TEST_BROADCAST") else {}
)
BATON.update({"DEBUG": True} if os.environ.get("BATON_TEST_DEBUG") else {})  # per worker
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
