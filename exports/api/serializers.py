from urllib.parse import urlsplit

from django.conf import settings
from rest_framework import serializers

from ..models import LibrariesMode


class ExportRequestSerializer(serializers.Serializer):
    """Exactly one of files, project or snapshot."""

    files = serializers.ListField(child=serializers.UUIDField(), required=False, min_length=1)
    project = serializers.UUIDField(required=False)
    snapshot = serializers.UUIDField(required=False)
    libraries = serializers.ChoiceField(choices=LibrariesMode.values, default=LibrariesMode.ALL)
    callback_url = serializers.URLField(required=False)

    def validate_callback_url(self, value: str) -> str:
        url = urlsplit(value)
        if (
            url.scheme not in ("http", "https")
            or url.hostname not in settings.EXPORT_CALLBACK_HOSTS
        ):
            raise serializers.ValidationError(
                "Callbacks may only go to hosts listed in EXPORT_CALLBACK_HOSTS."
            )
        return value

    def validate(self, data):
        given = [key for key in ("files", "project", "snapshot") if key in data]
        if len(given) != 1:
            raise serializers.ValidationError(
                {"non_field_errors": ["Give exactly one of: files, project, snapshot."]}
            )
        return data


class ImportRequestSerializer(serializers.Serializer):
    """A binfile to import into a project: uploaded here (multipart `file`), or the sha256 of
    a blob a resumable upload completed (`blob`)."""

    project = serializers.UUIDField()
    file = serializers.FileField(required=False, allow_empty_file=False)
    blob = serializers.RegexField(r"^[0-9a-f]{64}$", required=False)

    def validate(self, data):
        if ("file" in data) == ("blob" in data):
            raise serializers.ValidationError(
                {"non_field_errors": ["Give exactly one of: file, blob."]}
            )
        return data
