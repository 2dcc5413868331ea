"""Thin DRF views over import jobs: POST a binfile (or name an uploaded blob), follow it."""

from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from common.api.errors import Conflict
from common.api.ids import UUIDLookup
from common.api.parsers import BoundedJSONParser
from filesync.selectors import projects_for, readable_blobs

from .. import services
from ..binfile.format import BinfileError
from ..selectors import describe_import, imports_for
from .serializers import ImportRequestSerializer


class PayloadTooLarge(exceptions.APIException):
    status_code = 413
    default_code = "too_large"


def import_document(request, job) -> dict:
    document = describe_import(job)
    document["links"] = {
        "self": request.build_absolute_uri(f"/api/imports/{job.pk}/"),
        "events": request.build_absolute_uri(f"/api/imports/{job.pk}/events"),
    }
    return document


def refusal(error: BinfileError) -> exceptions.APIException:
    """A refused archive: what is wrong, in which entry and field."""
    detail = {"detail": str(error), "code": error.code, "entry": error.entry, "field": error.field}
    if error.code == "too_large":
        return PayloadTooLarge(detail)
    return exceptions.ValidationError(detail)


class ImportJobViewSet(
    UUIDLookup, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Import jobs: your own, or all of them for staff. Others' jobs answer 404."""

    serializer_class = ImportRequestSerializer
    parser_classes = [MultiPartParser, BoundedJSONParser]
    throttle_scopes = {"create": "imports"}

    def get_queryset(self):
        return imports_for(self.request.user)

    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response([import_document(request, job) for job in page])

    def retrieve(self, request, pk=None):
        return Response(import_document(request, self.get_object()))

    @extend_schema(responses={202: OpenApiResponse(description="The job, queued.")})
    def create(self, request):
        """Start an import into a project you edit; answers 202 with the job and its links,
        or 400 (413 when too large) naming what is wrong with the archive."""
        wanted = ImportRequestSerializer(data=request.data)
        wanted.is_valid(raise_exception=True)
        data = wanted.validated_data
        user = request.user
        project = get_object_or_404(projects_for(user), pk=data["project"])
        blob = None
        if "blob" in data:
            blob = get_object_or_404(readable_blobs(user), pk=data["blob"])
        try:
            job = services.create_import_job(
                user=user, project=project, upload=data.get("file"), blob=blob
            )
        except BinfileError as error:
            raise refusal(error) from None
        document = import_document(request, job)
        response = Response(document, status=status.HTTP_202_ACCEPTED)
        response["Location"] = document["links"]["self"]
        return response

    def destroy(self, request, pk=None):
        """Cancel a queued or running import (202); a finished one answers 409."""
        try:
            job = services.request_cancel(job=self.get_object())
        except ValidationError as error:
            raise Conflict(error.messages[0]) from None
        return Response(import_document(request, job), status=status.HTTP_202_ACCEPTED)
