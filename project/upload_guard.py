"""Refuse an upload before reading a byte of its body.

Django's ASGIHandler reads the whole request body (spooling it to a temporary file) before
any middleware or view runs, so a view's 401 or 413 comes only after the server took in
everything the client chose to send. This ASGI middleware stands in front of it on the
upload routes and answers at once, from the headers alone, what the view would certainly
refuse: no valid identity (401), a declared body over the route's limit (413), no declared
length where the view needs one (411). Everything else goes on to Django unchanged, and the
views still decide the rest (roles, offsets, hashes).

A refusal says `Connection: close`: uvicorn then closes the connection instead of reading
and discarding the rest of the body, and the client's sends fail.
"""

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from io import BytesIO

from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.handlers.asgi import ASGIRequest
from django.urls import Resolver404, resolve

from common.auth import request_user
from filesync.sync.tus import VERSION as TUS_VERSION

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]

#: Room for a multipart form's other fields and part headers around the file it carries
#: (Django keeps those in memory, at most DATA_UPLOAD_MAX_MEMORY_SIZE, 2.5 MiB by default).
MULTIPART_ENVELOPE = 8 * 1024 * 1024
_DIGITS = re.compile(rb"[0-9]+")
TOO_LARGE = "The body is larger than this server accepts."


def _blob_limit() -> int:
    return settings.SYNC_MAX_BLOB_BYTES


def _archive_limit() -> int:
    return settings.IMPORT_MAX_BYTES + MULTIPART_ENVELOPE


def _media_limit() -> int:
    return settings.SYNC_MAX_BLOB_BYTES + MULTIPART_ENVELOPE


@dataclass(frozen=True)
class UploadRoute:
    """What the guard checks on one route: the method that carries the upload, the largest
    body it may declare, and whether a body without Content-Length is certainly refused
    (else it is counted while it streams and cut at the limit)."""

    method: str
    limit: Callable[[], int]
    length_required: bool
    tus: bool = False


#: By URL name, so the guard follows the URLconf instead of repeating its patterns.
ROUTES = {
    "sync-blob": UploadRoute("PUT", _blob_limit, length_required=True),
    "sync-uploads": UploadRoute("POST", _blob_limit, length_required=False, tus=True),
    "sync-upload": UploadRoute("PATCH", _blob_limit, length_required=False, tus=True),
    "import-list": UploadRoute("POST", _archive_limit, length_required=True),
    "media-list": UploadRoute("POST", _media_limit, length_required=True),
}


@dataclass(frozen=True)
class Refusal:
    status: int
    detail: str


class UploadGuard:
    """ASGI middleware for the HTTP app: see the module docstring."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        route = upload_route(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        refusal = await refusal_for(scope, route)
        if refusal is not None:
            await respond(send, refusal, route)
            return
        if _header(scope, b"content-length") is None and not route.length_required:
            await self._counted(scope, receive, send, route)
            return
        await self.app(scope, receive, send)

    async def _counted(
        self, scope: dict, receive: Callable, send: Callable, route: UploadRoute
    ) -> None:
        """A body of no declared length (chunked): pass it on while it stays within the
        limit; past it, tell the app the client left (Django drops a body it was still
        reading, answering nothing) and answer 413 in its place."""
        limit, received, cut, started = route.limit(), 0, False, False

        async def counting_receive() -> dict:
            nonlocal received, cut
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    cut = True
                    return {"type": "http.disconnect"}
            return message

        async def noting_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counting_receive, noting_send)
        if cut and not started:
            await respond(send, Refusal(413, TOO_LARGE), route)


def upload_route(scope: dict) -> UploadRoute | None:
    """The upload route this request's method and path name, if any."""
    if scope["type"] != "http":
        return None
    try:
        match = resolve(_path_info(scope))
    except Resolver404:
        return None
    route = ROUTES.get(match.url_name)
    return route if route is not None and route.method == scope["method"] else None


def _path_info(scope: dict) -> str:
    root = scope.get("root_path", "")
    return scope["path"].removeprefix(root) if root else scope["path"]


async def refusal_for(scope: dict, route: UploadRoute) -> Refusal | None:
    """Identity first, as DRF checks it before the view's own checks; then the size."""
    if await request_user(_identified_request(scope)) is None:
        return Refusal(401, _unauthenticated_detail(scope))
    declared = _declared(scope, b"content-length")
    if declared is False:
        return Refusal(400, "Content-Length must be one number of bytes.")
    if declared is None and route.length_required:
        return Refusal(411, "Content-Length is required.")
    if declared is not None and declared > route.limit():
        return Refusal(413, TOO_LARGE)
    if route.tus and route.method == "POST":
        length = _declared(scope, b"upload-length")
        if isinstance(length, int) and length > route.limit():
            return Refusal(413, "The upload is larger than this server accepts.")
    return None


def _identified_request(scope: dict) -> ASGIRequest:
    """A Django request over the headers alone (an empty body), with the session and the
    lazy user Django's own middleware would give it, for `request_user` to read."""
    request = ASGIRequest(scope, BytesIO())
    SessionMiddleware(_no_response).process_request(request)
    AuthenticationMiddleware(_no_response).process_request(request)
    return request


def _no_response(request) -> None:
    """Only the middlewares' request halves are used; nothing is passed on."""


def _unauthenticated_detail(scope: dict) -> str:
    """DRF's wording: a token that does not identify an active user, or no credentials."""
    scheme = (_header(scope, b"authorization") or b"").split(b" ", 1)[0]
    if scheme.lower() == b"token":
        return "Invalid token."
    return "Authentication credentials were not provided."


def _header(scope: dict, name: bytes) -> bytes | None:
    """The header's value; None when absent; b"" when it comes more than once (which of
    them the app would believe is not ours to guess)."""
    values = [value for key, value in scope["headers"] if key.lower() == name]
    return values[0] if len(values) == 1 else (b"" if values else None)


def _declared(scope: dict, name: bytes) -> int | None | bool:
    """The header's number of bytes; None when absent; False when it is not one run of
    ASCII digits (or the header comes more than once)."""
    value = _header(scope, name)
    if value is None:
        return None
    value = value.strip()
    return int(value) if _DIGITS.fullmatch(value) else False


async def respond(send: Callable, refusal: Refusal, route: UploadRoute) -> None:
    """A JSON answer like DRF's, sent without a call to `receive`, closing the connection."""
    body = json.dumps({"detail": refusal.detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
    ]
    if refusal.status == 401:
        headers.append((b"www-authenticate", b"Token"))
    if route.tus:
        headers.append((b"tus-resumable", TUS_VERSION.encode()))
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
