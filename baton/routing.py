"""WebSocket routes of the live pages, for the project's ASGI router::

    from channels.auth import AuthMiddlewareStack
    from channels.routing import ProtocolTypeRouter, URLRouter
    from channels.security.websocket import AllowedHostsOriginValidator
    import baton.routing

    application = ProtocolTypeRouter({
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(baton.routing.websocket_urlpatterns))
        ),
    })

baton's consumers also refuse a socket whose Origin is not one of ALLOWED_HOSTS
themselves, whatever the router; the validator refuses it before it reaches them.

The consumers need ``scope["user"]`` (AuthMiddlewareStack) and a Channels layer that
reaches the workers' broadcasts (Redis; ``BATON["CHANNEL_LAYER"]`` in the workers).
"""

from django.urls import path

from baton.live import consumers

websocket_urlpatterns = [
    path("ws/baton/workflows/", consumers.WorkflowListConsumer.as_asgi()),
    path("ws/baton/workflows/<uuid:workflow_id>/", consumers.WorkflowConsumer.as_asgi()),
]
