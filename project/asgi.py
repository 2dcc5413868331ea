"""ASGI entry point: Django over HTTP, Channels consumers over WebSocket."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs the app registry)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from exports.routing import websocket_urlpatterns  # noqa: E402
from project.checks import require_passing_checks  # noqa: E402
from project.upload_guard import UploadGuard  # noqa: E402
from project.websocket import unrouted  # noqa: E402

require_passing_checks()

application = ProtocolTypeRouter(
    {
        "http": UploadGuard(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter([*websocket_urlpatterns, unrouted]))
        ),
    }
)
