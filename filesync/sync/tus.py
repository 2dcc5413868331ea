"""tus 1.0.0 at /api/sync/uploads/ (core, creation, creation-with-upload, checksum,
termination, expiration): any tus client can upload and resume. The expected sha256 of
the whole blob comes in Upload-Metadata (`sha256 <base64 of the hex digest>`)."""

import re

from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.http import http_date
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework.views import APIView

from common.http import ascii_int

from ..models import Upload
from . import uploads

VERSION = "1.0.0"
OFFSET_OCTETS = "application/offset+octet-stream"
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def tus_response(status: int, message: str = "", **headers) -> HttpResponse:
    response = HttpResponse(message, status=status, content_type="text/plain")
    response["Tus-Resumable"] = VERSION
    response["Cache-Control"] = "no-store"
    for name, value in headers.items():
        response[name.replace("_", "-")] = str(value)
    return response


def _offset_headers(upload: Upload) -> dict:
    return {
        "Upload_Offset": upload.offset,
        "Upload_Length": upload.length,
        "Upload_Expires": http_date(upload.expires_at.timestamp()),
    }


#: Every tus request but OPTIONS carries the protocol version; without it, 412.
TUS_RESUMABLE = OpenApiParameter(
    "Tus-Resumable", OpenApiTypes.STR, OpenApiParameter.HEADER, required=True, enum=[VERSION]
)


def _header(name: str, kind=OpenApiTypes.STR) -> OpenApiParameter:
    return OpenApiParameter(name, kind, OpenApiParameter.HEADER, required=True)


def tus_schema(statuses: list[int], headers=(), **kwargs):
    """extend_schema for a tus operation: the version and other required headers, and
    answers without a body."""
    return extend_schema(
        parameters=[TUS_RESUMABLE, *headers],
        responses={status: None for status in statuses},
        **kwargs,
    )


class TusMixin:
    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        handled = request.method != "OPTIONS" and hasattr(self, request.method.lower())
        if handled and request.headers.get("Tus-Resumable") != VERSION:
            raise uploads.UploadError(412, f"Tus-Resumable: {VERSION} is required.")

    def handle_exception(self, exc):
        if isinstance(exc, uploads.UploadError):
            return tus_response(exc.status, exc.message, Tus_Version=VERSION)
        response = super().handle_exception(exc)
        response["Tus-Resumable"] = VERSION
        return response


@extend_schema_view(
    options=extend_schema(responses={204: None}),
    post=tus_schema(
        [201, 400, 412, 413],
        headers=[_header("Upload-Length", OpenApiTypes.INT), _header("Upload-Metadata")],
        request={OFFSET_OCTETS: OpenApiTypes.BINARY},
    ),
)
class UploadsView(TusMixin, APIView):
    throttle_scopes = {"post": "uploads"}

    def options(self, request):
        return tus_response(
            204,
            Tus_Version=VERSION,
            Tus_Extension="creation,creation-with-upload,checksum,termination,expiration",
            Tus_Max_Size=settings.SYNC_MAX_BLOB_BYTES,
            Tus_Checksum_Algorithm=",".join(uploads.CHECKSUMS),
        )

    def post(self, request):
        length = ascii_int(request.headers.get("Upload-Length"))
        if length is None:
            raise uploads.UploadError(
                400, "Upload-Length is required (deferred length is not supported)."
            )
        metadata = uploads.parse_metadata(request.headers.get("Upload-Metadata", ""))
        if not SHA256.match(metadata.get("sha256", "")):
            raise uploads.UploadError(
                400, "Upload-Metadata must carry the blob's hex sha256 as `sha256`."
            )
        upload = uploads.create_upload(
            owner=request.user, length=length, sha256=metadata["sha256"], metadata=metadata
        )
        if request.headers.get("Content-Type") == OFFSET_OCTETS and not upload.completed_at:
            upload = uploads.append(
                upload=upload,
                offset=0,
                body=request._request,
                checksum=uploads.parse_checksum(request.headers.get("Upload-Checksum")),
            )
        location = request.build_absolute_uri(f"/api/sync/uploads/{upload.pk}")
        return tus_response(201, Location=location, **_offset_headers(upload))


@extend_schema_view(
    patch=tus_schema(
        [204, 400, 404, 409, 410, 412, 415],
        headers=[_header("Upload-Offset", OpenApiTypes.INT)],
        request={OFFSET_OCTETS: OpenApiTypes.BINARY},
    ),
    delete=tus_schema([204, 404, 410, 412]),
)
class UploadView(TusMixin, APIView):
    throttle_scopes = {"patch": "uploads"}

    def _upload(self, request, upload_id) -> Upload:
        upload = get_object_or_404(Upload, pk=upload_id, owner=request.user)
        if upload.expires_at < timezone.now() and not upload.completed_at:
            raise uploads.UploadError(410, "This upload has expired.")
        return upload

    def head(self, request, upload_id):
        return tus_response(200, **_offset_headers(self._upload(request, upload_id)))

    def patch(self, request, upload_id):
        upload = self._upload(request, upload_id)
        if request.headers.get("Content-Type") != OFFSET_OCTETS:
            raise uploads.UploadError(415, f"Content-Type must be {OFFSET_OCTETS}.")
        offset = ascii_int(request.headers.get("Upload-Offset"))
        if offset is None:
            raise uploads.UploadError(400, "Upload-Offset is required.")
        upload = uploads.append(
            upload=upload,
            offset=offset,
            body=request._request,
            checksum=uploads.parse_checksum(request.headers.get("Upload-Checksum")),
        )
        return tus_response(204, **_offset_headers(upload))

    def delete(self, request, upload_id):
        uploads.terminate(upload=self._upload(request, upload_id))
        return tus_response(204)
