from django.core.exceptions import ObjectDoesNotExist
from rest_framework import exceptions, serializers

from ..models import Blob, File, FileLibrary, MediaObject, Page, Project, Snapshot, Team
from ..selectors import files_for, projects_for, teams_for


class VisibleIdField(serializers.PrimaryKeyRelatedField):
    """An id in a request body, of a row the user may see (`visible(user)`).

    Any other id, whether it exists in another team or nowhere, answers 404 "No such
    <noun>." as an id in the URL does (filesync.access), so a body leaks no more than a
    URL. Only a malformed id is a 400.
    """

    def __init__(self, *, visible, noun: str, **kwargs):
        self.visible = visible
        self.noun = noun
        super().__init__(pk_field=serializers.UUIDField(), **kwargs)

    def get_queryset(self):
        return self.visible(self.context["request"].user)

    def to_internal_value(self, data):
        pk = self.pk_field.to_internal_value(data)
        try:
            return self.get_queryset().get(pk=pk)
        except ObjectDoesNotExist:
            raise exceptions.NotFound(f"No such {self.noun}.") from None


class TeamSerializer(serializers.ModelSerializer):
    role = serializers.CharField(source="my_role", read_only=True, allow_null=True)

    class Meta:
        model = Team
        fields = ["id", "name", "created_at", "role"]
        read_only_fields = ["id", "created_at", "role"]


class ProjectSerializer(serializers.ModelSerializer):
    team = VisibleIdField(visible=teams_for, noun="team")

    class Meta:
        model = Project
        fields = ["id", "team", "name", "created_at"]
        read_only_fields = ["id", "created_at"]


class FileSerializer(serializers.ModelSerializer):
    project = VisibleIdField(visible=projects_for, noun="project")
    libraries = serializers.SerializerMethodField()

    class Meta:
        model = File
        fields = [
            "id",
            "project",
            "name",
            "is_library",
            "revision",
            "data_version",
            "features",
            "assets",
            "libraries",
            "created_at",
            "modified_at",
            "deleted_at",
            "purge_after",
        ]
        read_only_fields = [
            "id",
            "revision",
            "data_version",
            "created_at",
            "modified_at",
            "deleted_at",
            "purge_after",
        ]

    def get_libraries(self, file) -> list[str]:
        return [str(link.library_id) for link in file.library_links.all()]


class FileUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=250, required=False)
    assets = serializers.JSONField(required=False)


class PageSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="page_id", read_only=True)
    objects = serializers.JSONField(source="object_map", required=False)

    class Meta:
        model = Page
        fields = ["id", "file", "index", "name", "objects"]
        read_only_fields = ["id", "file", "index"]


class BlobSerializer(serializers.ModelSerializer):
    class Meta:
        model = Blob
        fields = ["sha256", "size", "content_type"]


class MediaSerializer(serializers.ModelSerializer):
    blob = BlobSerializer(read_only=True)

    class Meta:
        model = MediaObject
        fields = [
            "id",
            "file",
            "name",
            "mtype",
            "width",
            "height",
            "sha256",
            "state",
            "blob",
            "created_at",
        ]
        read_only_fields = fields


class MediaUploadSerializer(serializers.Serializer):
    """Either the bytes (`upload`, multipart), or their `sha256` to send them later."""

    upload = serializers.FileField(required=False)
    sha256 = serializers.RegexField(r"^[0-9a-f]{64}$", required=False)
    mtype = serializers.CharField(max_length=100, required=False)
    name = serializers.CharField(max_length=250, required=False)
    width = serializers.IntegerField(min_value=0, required=False)
    height = serializers.IntegerField(min_value=0, required=False)

    def validate(self, data):
        if ("upload" in data) == ("sha256" in data):
            raise serializers.ValidationError(
                {"upload": ["Send the bytes as `upload`, or their `sha256` to upload later."]}
            )
        if "sha256" in data and not data.get("name"):
            raise serializers.ValidationError({"name": ["A pending media object needs a name."]})
        return data


def _readable_files(user):
    return files_for(user, include_deleted=True)


class LibraryLinkSerializer(serializers.ModelSerializer):
    library = VisibleIdField(visible=_readable_files, noun="file")

    class Meta:
        model = FileLibrary
        fields = ["library", "created_at"]
        read_only_fields = ["created_at"]


class SnapshotSerializer(serializers.ModelSerializer):
    class Meta:
        model = Snapshot
        fields = ["id", "file", "label", "revision", "name", "created_by", "created_at"]
        read_only_fields = ["id", "file", "revision", "name", "created_by", "created_at"]


class DuplicateFileSerializer(serializers.Serializer):
    project = VisibleIdField(
        visible=projects_for,
        noun="project",
        required=False,
        help_text="Where the copy goes (you need the editor role there); "
        "by default the file's own project.",
    )


class DuplicateProjectSerializer(serializers.Serializer):
    name = serializers.CharField(
        max_length=200, required=False, help_text='By default "<name> (copy)".'
    )


class RestoreSnapshotSerializer(serializers.Serializer):
    as_new_file = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Restore into a new file next to this one, instead of over it.",
    )
