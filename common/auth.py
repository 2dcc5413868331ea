"""Who is asking, for plain async Django views beside DRF's (SSE, long polls)."""

from asgiref.sync import sync_to_async
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from .http import releasing_connection


def user_for(request):
    """The DRF token's user (API clients), else the session's (browsers), else None."""
    try:
        found = TokenAuthentication().authenticate(request)
    except AuthenticationFailed:
        return None
    if found:
        return found[0]
    return request.user if request.user.is_authenticated else None


async def read(function, *args):
    """Run a short database read for a long-lived async request: on the shared executor,
    giving the connection back at once, so hundreds of open streams hold none."""
    return await sync_to_async(
        releasing_connection(lambda: function(*args)), thread_sensitive=False
    )()


async def request_user(request):
    return await read(user_for, request)
