"""Thin DRF views over export jobs: who may see a job is decided by exports.selectors."""

from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from common.api.errors import Conflict
from common.api.ids import UUIDLookup
from common.http import ranged_file_response
from filesync.models import Snapshot
from filesync.selectors import files_for, projects_for

from .. import services
from ..exporting.links import check_download_token, download_filename, download_path
from ..exporting.sinks import artifact_opener, artifact_presigned_url
from ..models import JobState
from ..selectors import describe_callback, describe_job, jobs_for
from .serializers import ExportRequestSerializer


def job_document(request, job) -> dict:
    document = describe_job(job)
    document["callback"] = describe_callback(job)
    document["links"] = {
        "self": request.build_absolute_uri(f"/api/exports/{job.pk}/"),
        "events": request.build_absolute_uri(f"/api/exports/{job.pk}/events"),
        "download": request.build_absolute_uri(download_path(job))
        if job.state == JobState.SUCCEEDED
        else None,
    }
    return document


class ExportJobViewSet(
    UUIDLookup, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Export jobs: your own, or all of them for staff. Others' jobs answer 404."""

    serializer_class = ExportRequestSerializer
    throttle_scopes = {"create": "exports"}

    def get_queryset(self):
        return jobs_for(self.request.user).select_related("project")

    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response([job_document(request, job) for job in page])

    def retrieve(self, request, pk=None):
        return Response(job_document(request, self.get_object()))

    @extend_schema(responses={202: OpenApiResponse(description="The job, queued.")})
    def create(self, request):
        """Start an export; answers 202 at once with the job and its links."""
        wanted = ExportRequestSerializer(data=request.data)
        wanted.is_valid(raise_exception=True)
        data = wanted.validated_data
        user = request.user
        if "files" in data and files_for(user).filter(pk__in=data["files"]).count() != len(
            set(data["files"])
        ):
            raise Http404("No such file.")
        job = services.create_export_job(
            user=user,
            file_ids=data.get("files"),
            project=get_object_or_404(projects_for(user), pk=data["project"])
            if "project" in data
            else None,
            snapshot=get_object_or_404(
                Snapshot.objects.filter(file__in=files_for(user)), pk=data["snapshot"]
            )
            if "snapshot" in data
            else None,
            libraries=data["libraries"],
            callback_url=data.get("callback_url", ""),
        )
        response = Response(job_document(request, job), status=status.HTTP_202_ACCEPTED)
        response["Location"] = job_document(request, job)["links"]["self"]
        return response

    @extend_schema(
        responses={
            202: OpenApiResponse(description="The job, cancelling."),
            204: OpenApiResponse(description="The artifact, deleted."),
        }
    )
    def destroy(self, request, pk=None):
        """Cancel a queued or running job (202), or delete a finished job's artifact (204)."""
        job = self.get_object()
        if job.is_active:
            job = services.request_cancel(job=job)
            return Response(job_document(request, job), status=status.HTTP_202_ACCEPTED)
        services.delete_artifact(job=job)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={202: OpenApiResponse(description="The new job.")})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Export the same files again, as a new job, after a failure or a cancel."""
        try:
            job = services.retry_export(job=self.get_object(), user=request.user)
        except ValidationError as error:
            raise Conflict(error.messages[0]) from None
        return Response(job_document(request, job), status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        responses={
            (200, "application/zip"): bytes,
            206: bytes,
            302: OpenApiResponse(description="On S3: to a short-lived presigned URL."),
            403: None,
            409: None,
            410: None,
        }
    )
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        """The artifact, for its owner (or staff) holding a valid signed link."""
        job = self.get_object()
        check_download_token(job, request.query_params.get("token", ""))
        if job.state == JobState.EXPIRED:
            return HttpResponse("This export has expired and its file was deleted.", status=410)
        if job.state != JobState.SUCCEEDED:
            raise Conflict(f"The export is {job.state}; there is nothing to download yet.")
        filename = download_filename(job)
        if url := artifact_presigned_url(job.artifact_name, filename=filename):
            return HttpResponseRedirect(url)
        return ranged_file_response(
            request,
            artifact_opener(job.artifact_name),
            size=job.artifact_size,
            content_type="application/zip",
            filename=filename,
            etag=job.artifact_sha256,
        )
