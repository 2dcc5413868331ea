"""Who is asking, for plain (async) Django views that sit beside DRF's."""

from asgiref.sync import sync_to_async
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed


async def request_user(request):
    """The DRF token's user (API clients), else the session's (browsers), else None."""
    try:
        found = await sync_to_async(TokenAuthentication().authenticate)(request)
    except AuthenticationFailed:
        return None
    if found:
        return found[0]
    user = await request.auser()
    return user if user.is_authenticated else None
