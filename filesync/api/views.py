"""Thin DRF views: check who is asking (filesync.access), then call selectors or services."""

from django.http import Http404, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from common.api.errors import Conflict
from common.api.ids import UUID_RE, UUIDLookup
from common.api.parsers import BoundedJSONParser
from common.http import ranged_file_response

from .. import blobstore, services
from ..access import require_team_role
from ..models import File, Role, Snapshot
from ..selectors import files_for, get_file, projects_for, teams_for
from .serializers import (
    DuplicateFileSerializer,
    DuplicateProjectSerializer,
    FileSerializer,
    FileUpdateSerializer,
    LibraryLinkSerializer,
    MediaSerializer,
    MediaUploadSerializer,
    PageSerializer,
    ProjectSerializer,
    RestoreSnapshotSerializer,
    SnapshotSerializer,
    TeamSerializer,
)


def pending_response() -> Response:
    """404 with a reason a client can act on: retry later, unlike any other 4xx."""
    return Response(
        {"reason": "pending", "detail": "The bytes have not arrived yet; retry later."},
        status=status.HTTP_404_NOT_FOUND,
    )


def file_for(user, file_id, minimum: Role = Role.VIEWER, *, writable: bool = False) -> File:
    """The file, if the user may act on it with `minimum`; 404 for outsiders.

    Writes to a file in the trash answer 409: it must be restored first.
    """
    try:
        file = get_file(file_id, include_deleted=True).file
    except File.DoesNotExist:
        raise Http404("No such file.") from None
    require_team_role(user, file.project.team_id, minimum, not_found="No such file.")
    if writable and file.is_deleted:
        raise Conflict("The file is deleted; restore it first.")
    return file


class TeamViewSet(
    UUIDLookup,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = TeamSerializer

    def get_queryset(self):
        return teams_for(self.request.user)

    def perform_create(self, serializer):
        team = services.create_team(name=serializer.validated_data["name"], owner=self.request.user)
        serializer.instance = self.get_queryset().get(pk=team.pk)


class ProjectViewSet(
    UUIDLookup,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = ProjectSerializer

    def get_queryset(self):
        projects = projects_for(self.request.user)
        if team := self.request.query_params.get("team"):
            projects = projects.filter(team_id=team)
        return projects

    def perform_create(self, serializer):
        team = serializer.validated_data["team"]
        require_team_role(self.request.user, team.pk, Role.EDITOR)
        serializer.instance = services.create_project(
            team=team, name=serializer.validated_data["name"]
        )

    @extend_schema(request=DuplicateProjectSerializer, responses={201: ProjectSerializer})
    @action(detail=True, methods=["post"])
    def duplicate(self, request, pk=None):
        """A new project in the same team with copies of all the project's live files;
        references between them point at the copies."""
        project = self.get_object()
        require_team_role(request.user, project.team_id, Role.EDITOR)
        body = DuplicateProjectSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        copy = services.duplicate_project(
            project=project, user=request.user, name=body.validated_data.get("name")
        )
        return Response(ProjectSerializer(copy).data, status=status.HTTP_201_CREATED)


class FileViewSet(
    UUIDLookup,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Files. `?project=` filters; `?deleted=true` lists the trash instead."""

    serializer_class = FileSerializer

    def get_queryset(self):
        trash = self.request.query_params.get("deleted") == "true"
        files = files_for(self.request.user, include_deleted=trash)
        if trash:
            files = files.filter(deleted_at__isnull=False)
        if project := self.request.query_params.get("project"):
            files = files.filter(project_id=project)
        return files

    def get_object(self):
        return file_for(self.request.user, self.kwargs["pk"])

    def perform_create(self, serializer):
        data = serializer.validated_data
        require_team_role(self.request.user, data["project"].team_id, Role.EDITOR)
        serializer.instance = services.create_file(
            project=data["project"],
            name=data["name"],
            is_library=data.get("is_library", False),
            features=data.get("features"),
            assets=data.get("assets"),
        )

    @extend_schema(request=FileUpdateSerializer, responses=FileSerializer)
    def partial_update(self, request, pk=None):
        file = file_for(request.user, pk, Role.EDITOR, writable=True)
        changes = FileUpdateSerializer(data=request.data)
        changes.is_valid(raise_exception=True)
        file = services.update_file(file=file, **changes.validated_data)
        return Response(FileSerializer(file).data)

    def destroy(self, request, pk=None):
        """Move the file to the trash; it is purged for good after the grace period."""
        services.soft_delete_file(file=file_for(request.user, pk, Role.EDITOR))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=FileSerializer)
    @action(detail=True, methods=["post"])
    def restore(self, request, pk=None):
        file = services.restore_file(file=file_for(request.user, pk, Role.EDITOR))
        return Response(FileSerializer(file).data)

    @extend_schema(request=DuplicateFileSerializer, responses={201: FileSerializer})
    @action(detail=True, methods=["post"])
    def duplicate(self, request, pk=None):
        """Copy the file, named "<name> (copy)", into its project or another one you edit.
        References to libraries you can read stay; others are detached."""
        file = file_for(request.user, pk, writable=True)
        body = DuplicateFileSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        project = body.validated_data.get("project", file.project)
        require_team_role(request.user, project.team_id, Role.EDITOR)
        copy = services.duplicate_file(file=file, project=project, user=request.user)
        return Response(FileSerializer(copy).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=LibraryLinkSerializer, responses=LibraryLinkSerializer(many=True))
    @action(detail=True, methods=["get", "post"], pagination_class=None)
    def libraries(self, request, pk=None):
        """List the libraries a file uses, or link one (it must be a library you can read)."""
        if request.method == "GET":
            file = file_for(request.user, pk)
            return Response(LibraryLinkSerializer(file.library_links.all(), many=True).data)
        file = file_for(request.user, pk, Role.EDITOR, writable=True)
        link = LibraryLinkSerializer(data=request.data, context={"request": request})
        link.is_valid(raise_exception=True)
        services.link_library(file=file, library=link.validated_data["library"])
        return Response(
            LibraryLinkSerializer(file.library_links.all(), many=True).data,
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(request=None, responses={204: None})
    @action(detail=True, methods=["delete"], url_path=rf"libraries/(?P<library_id>{UUID_RE})")
    def unlink(self, request, pk=None, library_id=None):
        """Stop using a library; a library the file does not use answers 404."""
        file = file_for(request.user, pk, Role.EDITOR, writable=True)
        link = get_object_or_404(file.library_links, library_id=library_id)
        services.unlink_library(file=file, library=link.library)
        return Response(status=status.HTTP_204_NO_CONTENT)


class FileChildViewSet(UUIDLookup, viewsets.GenericViewSet):
    """Base for a file's pages, media and snapshots, all under /api/files/<file_id>/."""

    def parent(self, minimum: Role = Role.VIEWER, *, writable: bool = False) -> File:
        return file_for(self.request.user, self.kwargs["file_id"], minimum, writable=writable)


class PageViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, FileChildViewSet):
    serializer_class = PageSerializer
    lookup_field = "page_id"

    def get_queryset(self):
        return self.parent().pages.order_by("index")

    def create(self, request, file_id=None):
        file = self.parent(Role.EDITOR, writable=True)
        page = PageSerializer(data=request.data)
        page.is_valid(raise_exception=True)
        created = services.add_page(
            file=file,
            name=page.validated_data["name"],
            objects=page.validated_data.get("object_map"),
        )
        return Response(PageSerializer(created).data, status=status.HTTP_201_CREATED)


class MediaViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, FileChildViewSet):
    serializer_class = MediaSerializer
    parser_classes = [MultiPartParser, FormParser, BoundedJSONParser]
    throttle_scopes = {"create": "uploads", "download": "blob_reads"}

    def get_queryset(self):
        return self.parent().media.select_related("blob").order_by("id")

    @extend_schema(request=MediaUploadSerializer, responses={201: MediaSerializer})
    def create(self, request, file_id=None):
        """Upload media (multipart field `upload`); the bytes stream to the blob store."""
        file = self.parent(Role.EDITOR, writable=True)
        upload = MediaUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        data = upload.validated_data
        if "sha256" in data:
            media = services.add_pending_media(
                file=file,
                name=data["name"],
                sha256=data["sha256"],
                content_type=data.get("mtype") or "application/octet-stream",
                user=request.user,
                width=data.get("width"),
                height=data.get("height"),
            )
        else:
            media = services.add_media(
                file=file,
                name=data.get("name") or data["upload"].name,
                stream=data["upload"],
                content_type=data["upload"].content_type or "application/octet-stream",
                user=request.user,
                width=data.get("width"),
                height=data.get("height"),
            )
        return Response(MediaSerializer(media).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        responses={
            (200, "*/*"): bytes,
            206: OpenApiResponse(description="The byte range asked for."),
            302: OpenApiResponse(description="On S3: to a short-lived presigned URL."),
            404: OpenApiResponse(description="No such media, or its bytes are pending."),
        }
    )
    @action(detail=True, methods=["get"])
    def download(self, request, file_id=None, pk=None):
        """The media's bytes; on S3, a redirect to a short-lived presigned URL."""
        media = self.get_object()
        if media.blob_id is None:
            return pending_response()
        if url := blobstore.presigned_url(media.blob_id, filename=media.name):
            return HttpResponseRedirect(url)
        return ranged_file_response(
            request,
            lambda: blobstore.open_blob(media.blob_id),
            size=media.blob.size,
            content_type=media.mtype,
            filename=media.name,
            etag=media.blob_id,
        )


class SnapshotViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, FileChildViewSet):
    serializer_class = SnapshotSerializer

    def get_queryset(self):
        return self.parent().snapshots.all()

    def create(self, request, file_id=None):
        file = self.parent(Role.EDITOR)
        snapshot = SnapshotSerializer(data=request.data)
        snapshot.is_valid(raise_exception=True)
        created = services.create_snapshot(
            file=file, label=snapshot.validated_data.get("label", ""), user=request.user
        )
        return Response(SnapshotSerializer(created).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=RestoreSnapshotSerializer,
        responses={
            200: OpenApiResponse(FileSerializer, description="Restored over the file."),
            201: OpenApiResponse(FileSerializer, description="Restored as a new file."),
        },
    )
    @action(detail=True, methods=["post"])
    def restore(self, request, file_id=None, pk=None):
        """Make the snapshot the file's content, as a new revision, after taking a snapshot
        of the current content; or, with `as_new_file`, restore it into a new file next to
        this one. The snapshot stays."""
        self.parent(Role.EDITOR, writable=True)
        body = RestoreSnapshotSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            snapshot = self.get_queryset().get(pk=pk)
        except Snapshot.DoesNotExist:
            raise Http404("No such snapshot.") from None
        if body.validated_data["as_new_file"]:
            copy = services.restore_snapshot_as_new_file(snapshot=snapshot, user=request.user)
            return Response(FileSerializer(copy).data, status=status.HTTP_201_CREATED)
        file = services.restore_snapshot(snapshot=snapshot, user=request.user)
        return Response(FileSerializer(file).data)
