"""The sync protocol's HTTP surface (docs/sync.md). Views check who asks, then call
filesync.sync.services / selectors, or the blob store."""

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import orjson
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import (
    Http404,
    HttpResponse,
    HttpResponseNotModified,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from common.auth import read, request_user
from common.http import ascii_int, ranged_file_response

from .. import blobstore, services
from ..api.views import pending_response
from ..feed import GROUP
from ..models import ContentLock, Replica, sha256_validator
from ..selectors import files_for, get_file, held_blobs
from . import services as sync_services
from .selectors import changes_for, feed_position, file_content, pending_for, readable_blob

#: The whole-file read sends JSON lines in pieces of about this size.
STREAM_PIECE_BYTES = 1024 * 1024


def _refused(error: sync_services.Refused) -> Response:
    return Response(
        {"reason": error.reason, "detail": error.message}, status=status.HTTP_409_CONFLICT
    )


class Pending(Exception):
    pass


def _blob_or_404(user, sha256: str):
    if (blob := readable_blob(user, sha256)) is None:
        if pending_for(user, sha256):
            raise Pending
        raise Http404("No such blob.")
    return blob


@extend_schema_view(
    get=extend_schema(responses={(200, "application/x-ndjson"): OpenApiTypes.STR, 404: None})
)
class FileContentView(APIView):
    """GET /api/sync/files/<id>: the whole file as JSON lines (sync selectors'
    file_content), deleted or not, for followers; 404 for a file the user cannot see or
    that was purged."""

    def get(self, request, file_id):
        files = files_for(request.user, include_deleted=True)
        if not files.filter(pk=file_id).exists():
            raise Http404("No such file.")
        state = get_file(file_id, include_deleted=True)
        pieces = _json_lines(file_content(state))
        if isinstance(request._request, ASGIRequest):
            pieces = _in_request_thread(pieces)
        return StreamingHttpResponse(pieces, content_type="application/x-ndjson")


def _json_lines(records: Iterator[dict]) -> Iterator[bytes]:
    """The records as JSON lines, gathered into pieces of about STREAM_PIECE_BYTES (a large
    page is one piece of its own), so the stream is not one database hop per record."""
    piece = []
    size = 0
    # map, not a loop variable: no record is kept alive while the next one is read.
    for line in map(_json_line, records):
        piece.append(line)
        size += len(line)
        if size >= STREAM_PIECE_BYTES:
            yield b"".join(piece)
            piece, size = [], 0
    if piece:
        yield b"".join(piece)


def _json_line(record: dict) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


async def _in_request_thread(pieces: Iterator[bytes]) -> AsyncIterator[bytes]:
    """The pieces for ASGI, each made in the request's thread (its database connection).

    Django's ASGI handler drains a sync iterator into memory before sending a byte; an
    async one it sends as it comes. Under WSGI (the test client, a WSGI server) the sync
    iterator streams as it is.
    """
    following = sync_to_async(next, thread_sensitive=True)
    while (piece := await following(pieces, None)) is not None:
        yield piece


@extend_schema_view(get=extend_schema(responses=OpenApiTypes.OBJECT))
class TimestampView(APIView):
    """The server's clock, for the remove-before protocol."""

    def get(self, request):
        now = timezone.now()
        return Response({"timestamp": now.isoformat(), "epoch": now.timestamp()})


@extend_schema_view(
    get=extend_schema(
        responses={
            (200, "*/*"): OpenApiTypes.BINARY,
            206: None,
            302: None,
            304: None,
            404: None,
        }
    ),
    put=extend_schema(
        request={"*/*": OpenApiTypes.BINARY},
        responses={
            200: OpenApiTypes.OBJECT,
            201: OpenApiTypes.OBJECT,
            400: None,
            411: None,
            413: None,
            422: None,
        },
    ),
    delete=extend_schema(responses={204: None, 400: None, 404: None, 409: None}),
)
class BlobView(APIView):
    """GET/HEAD a blob (ETag, If-None-Match, Range); PUT it (verified); DELETE it (safely)."""

    throttle_scopes = {"get": "blob_reads", "put": "uploads"}

    def handle_exception(self, exc):
        if isinstance(exc, Pending):
            return pending_response()
        return super().handle_exception(exc)

    def get(self, request, sha256):
        blob = _blob_or_404(request.user, sha256)
        if request.headers.get("If-None-Match", "").strip('"') == blob.sha256:
            return HttpResponseNotModified(headers={"ETag": f'"{blob.sha256}"'})
        if url := blobstore.presigned_url(blob.sha256, filename=blob.sha256):
            return HttpResponseRedirect(url)
        return ranged_file_response(
            request,
            lambda: blobstore.open_blob(blob.sha256),
            size=blob.size,
            content_type=blob.content_type,
            etag=blob.sha256,
        )

    def head(self, request, sha256):
        blob = _blob_or_404(request.user, sha256)
        response = HttpResponse(content_type=blob.content_type)
        response["Content-Length"] = str(blob.size)
        response["ETag"] = f'"{blob.sha256}"'
        response["Accept-Ranges"] = "bytes"
        return response

    def put(self, request, sha256):
        """The whole blob in the body; stored only if it is all there and hashes to its name."""
        sha256_validator(sha256)
        declared = ascii_int(request.headers.get("Content-Length"))
        if declared is None:
            return Response({"detail": "Content-Length is required."}, status=411)
        if declared > settings.SYNC_MAX_BLOB_BYTES:
            return Response({"detail": "The blob is larger than this server accepts."}, status=413)
        if readable_blob(request.user, sha256) is not None:
            return Response({"sha256": sha256, "created": False}, status=status.HTTP_200_OK)
        with blobstore.receive(request._request, directory=settings.FILE_UPLOAD_TEMP_DIR) as got:
            if got.digest.size != declared:
                response = Response(
                    {"detail": f"The body ended after {got.digest.size} of {declared} bytes."},
                    status=400,
                )
                response["Connection"] = "close"
                return response
            if got.digest.sha256 != sha256:
                return Response(
                    {"detail": "The body does not hash to the sha256 in the URL."}, status=422
                )
            services.store_blob(
                stream=got.file,
                content_type=request.content_type or "application/octet-stream",
                user=request.user,
                verified=got.digest,
            )
        return Response({"sha256": sha256, "created": True}, status=status.HTTP_201_CREATED)

    def delete(self, request, sha256):
        blob = _blob_or_404(request.user, sha256)
        superuser = request.user.is_superuser
        if not (superuser or held_blobs(request.user).filter(pk=blob.pk).exists()):
            raise Http404("No such blob.")
        before = _timestamp(request.query_params.get("before", ""))
        if before is None:
            return Response(
                {"before": ["A timestamp (from /api/sync/timestamp) is required."]}, status=400
            )
        try:
            sync_services.remove_blob(
                blob=blob, before=before, holder=None if superuser else request.user
            )
        except sync_services.Refused as error:
            return _refused(error)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _timestamp(value: str):
    """An ISO 8601 time, or seconds since the epoch, as /api/sync/timestamp gives both."""
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        parsed = parse_datetime(value.replace(" ", "+"))
    except ValueError:
        return None
    if parsed is not None and timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, UTC)
    return parsed


class LockSerializer(serializers.ModelSerializer):
    class Meta:
        model = ContentLock
        fields = ["id", "blob", "expires_at"]


@extend_schema_view(post=extend_schema(request=None, responses={201: LockSerializer, 404: None}))
class BlobLockView(APIView):
    def post(self, request, sha256):
        blob = _blob_or_404(request.user, sha256)
        lock = sync_services.take_lock(blob=blob, holder=request.user)
        return Response(LockSerializer(lock).data, status=status.HTTP_201_CREATED)


def _own_lock(request, lock_id) -> ContentLock:
    return get_object_or_404(ContentLock, pk=lock_id, holder=request.user)


@extend_schema_view(delete=extend_schema(responses={204: None, 404: None}))
class LockView(APIView):
    def delete(self, request, lock_id):
        sync_services.release_lock(lock=_own_lock(request, lock_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    post=extend_schema(request=None, responses={200: LockSerializer, 404: None, 409: None})
)
class LockKeepView(APIView):
    def post(self, request, lock_id):
        try:
            lock = sync_services.keep_lock(lock=_own_lock(request, lock_id))
        except sync_services.Refused as error:
            return _refused(error)
        return Response(LockSerializer(lock).data)


class ReplicaSerializer(serializers.ModelSerializer):
    class Meta:
        model = Replica
        fields = ["id", "name", "acked_seq", "last_seen", "created_at"]
        read_only_fields = ["id", "acked_seq", "last_seen", "created_at"]


@extend_schema_view(
    get=extend_schema(responses=ReplicaSerializer(many=True)),
    post=extend_schema(request=ReplicaSerializer, responses={201: ReplicaSerializer, 400: None}),
)
class ReplicasView(APIView):
    def get(self, request):
        return Response(ReplicaSerializer(request.user.replicas.all(), many=True).data)

    def post(self, request):
        data = ReplicaSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        replica = sync_services.register_replica(
            owner=request.user, name=data.validated_data["name"]
        )
        return Response(ReplicaSerializer(replica).data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    post=extend_schema(
        operation_id="sync_replicas_verb",
        request=OpenApiTypes.OBJECT,
        responses={200: ReplicaSerializer, 400: None, 404: None, 409: None},
    )
)
class ReplicaView(APIView):
    """POST .../heartbeat, or .../ack with {"seq": N}."""

    def post(self, request, replica_id, verb):
        replica = get_object_or_404(Replica, pk=replica_id, owner=request.user)
        if verb not in ("heartbeat", "ack"):
            raise Http404("No such action.")
        if verb == "heartbeat":
            return Response(ReplicaSerializer(sync_services.heartbeat(replica=replica)).data)
        seq = serializers.IntegerField(min_value=0).run_validation(request.data.get("seq"))
        try:
            replica = sync_services.acknowledge(replica=replica, seq=seq)
        except sync_services.Refused as error:
            return _refused(error)
        return Response(ReplicaSerializer(replica).data)


def _change(change) -> dict:
    return {
        "seq": change.seq,
        "kind": change.kind,
        "file": str(change.file_id),
        "revision": change.revision,
        "payload": change.payload,
        "created_at": change.created_at.isoformat(),
    }


async def changes(request):
    """GET /api/sync/changes?since=N&limit=L&wait=S: answers as soon as something newer exists."""
    user = await request_user(request)
    if user is None:
        return JsonResponse({"detail": "Authentication credentials were not provided."}, status=401)
    try:
        since = max(0, int(request.GET.get("since", 0)))
        limit = min(max(1, int(request.GET.get("limit", 100))), 1000)
        wait = min(max(0.0, float(request.GET.get("wait", 0))), settings.SYNC_MAX_WAIT_SECONDS)
    except ValueError:
        return JsonResponse({"detail": "since, limit and wait must be numbers."}, status=400)
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(GROUP, channel)
    deadline = time.monotonic() + wait
    try:
        while True:
            position, found = await read(
                lambda: (feed_position(), list(changes_for(user, since=since, limit=limit)))
            )
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                break
            try:
                await asyncio.wait_for(
                    layer.receive(channel), min(remaining, settings.EVENTS_POLL_SECONDS)
                )
            except TimeoutError:
                pass
    finally:
        await layer.group_discard(GROUP, channel)
    # Seqs up to `position` are all committed (the feed is gap-free in commit order), so a
    # reader that saw nothing of its own may skip to it.
    following = found[-1].seq if len(found) == limit else max(position, since)
    return JsonResponse({"changes": [_change(c) for c in found], "next": following})
