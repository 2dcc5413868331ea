"""HTTP helpers shared by the apps: integers in headers, ranged and streamed file responses,
presigned download links, and database reads that give their connection back at once."""

import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import BinaryIO

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from django.http import HttpResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header

CHUNK = 1024 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$", re.ASCII)


def ascii_int(value: str | None) -> int | None:
    """A header's (or parameter's) non-negative integer, or None: ASCII digits only, since
    str.isdigit() also accepts digits such as '²' that int() refuses."""
    if value and value.isascii() and value.isdigit():
        return int(value)
    return None


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """The (first, last) byte of a single range; None for no usable header (send it all);
    False when the range cannot be satisfied (416)."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        return None  # RFC 9110: a range we cannot parse is ignored
    first, last = match.groups()
    if first == "":
        length = int(last)
        if length == 0:
            return False
        return max(0, size - length), size - 1
    first = int(first)
    last = min(int(last), size - 1) if last else size - 1
    if first >= size or first > last:
        return False
    return first, last


def _read(opener: Callable[[], BinaryIO], first: int, length: int) -> Iterator[bytes]:
    with opener() as source:
        source.seek(first)
        while length > 0:
            chunk = source.read(min(CHUNK, length))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk


async def _aread(opener: Callable[[], BinaryIO], first: int, length: int) -> AsyncIterator[bytes]:
    """The same, for ASGI: Django would otherwise drain a sync iterator into memory whole
    before sending a byte. Each chunk is read on the shared executor."""
    chunks = _read(opener, first, length)
    done = object()
    while (chunk := await sync_to_async(next, thread_sensitive=False)(chunks, done)) is not done:
        yield chunk


def ranged_file_response(
    request,
    opener: Callable[[], BinaryIO],
    *,
    size: int,
    content_type: str,
    filename: str | None = None,
    etag: str | None = None,
) -> HttpResponse:
    """Stream a stored file with Content-Length, and a single Range as 206 (RFC 9110)."""
    wanted = parse_range(request.headers.get("Range"), size)
    if wanted is False:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        return response
    first, last = wanted or (0, size - 1)
    length = max(0, last - first + 1)
    served_by_asgi = isinstance(getattr(request, "_request", request), ASGIRequest)  # DRF wraps
    body = (_aread if served_by_asgi else _read)(opener, first, length)
    response = StreamingHttpResponse(body, status=206 if wanted else 200, content_type=content_type)
    response["Content-Length"] = str(length)
    response["Accept-Ranges"] = "bytes"
    if wanted:
        response["Content-Range"] = f"bytes {first}-{last}/{size}"
    if filename:
        response["Content-Disposition"] = content_disposition_header(True, filename)
    if etag:
        response["ETag"] = f'"{etag}"'
    return response


def presigned_download_url(storage, name: str, *, filename: str) -> str | None:
    """A short-lived signed URL when `storage` is an object store, else None (serve it here)."""
    try:
        storage.path(name)
    except NotImplementedError:
        return storage.url(
            name,
            parameters={"ResponseContentDisposition": content_disposition_header(True, filename)},
        )
    return None


def releasing_connection(read: Callable[[], object]) -> Callable[[], object]:
    """Wrap a database read made from a long-lived request (SSE, long polls) so that it
    gives its connection back at once: otherwise each open stream holds one for its whole
    life, and a few hundred listeners exhaust the database's connections."""

    def run():
        try:
            return read()
        finally:
            connection.close()

    return run
