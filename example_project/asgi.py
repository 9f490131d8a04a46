"""ASGI entry point: `uvicorn example_project.asgi:application`.

HTTP goes to Django; WebSockets to baton's live-update consumers (when baton.routing exists),
behind session authentication and an allowed-hosts origin check.
"""

import os
from importlib.util import find_spec

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
# Set Django up before importing anything that touches models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

http_app = django_asgi_app
if settings.DEBUG:
    # uvicorn serves no static files; in DEBUG let Django serve the admin's CSS and JS.
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    http_app = ASGIStaticFilesHandler(django_asgi_app)

websocket_urlpatterns: list = []
if find_spec("baton.routing") is not None:
    from baton.routing import websocket_urlpatterns

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
