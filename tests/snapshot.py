"""What a refused request or a failed job may not change: every row of every table, every
name in every storage (tus uploads are staged in the blobs storage), every file in the
temporary directory.

    before = store_state()
    ...  # the hostile call, answered with an error
    assert store_state() == before

`ignore` leaves out tables that legitimately change on an error (a job's own row and its
events, say), by model label ("exports.ExportJob"). Make API clients (`api_for` creates a
token row) and log in (a session row) before taking `before`.
"""

import os
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.core.files.storage import storages

from tests.conftest import stored_names

#: Storages that hold what Ferry writes (staticfiles is built, not written by requests).
WRITTEN_STORAGES = ("default", "blobs", "exports")


def store_state(*, ignore: tuple[str, ...] = ()) -> dict:
    tables = {
        model._meta.label: sorted(map(repr, model._base_manager.values_list()))
        for model in apps.get_models()
        if model._meta.label not in ignore and model._meta.managed
    }
    return {
        "tables": tables,
        "storages": {alias: stored_names(alias) for alias in WRITTEN_STORAGES},
        "unfinished_uploads": {alias: unfinished_uploads(alias) for alias in WRITTEN_STORAGES},
        "directories": {"tmp": _files(Path(settings.FILE_UPLOAD_TEMP_DIR))},
    }


def unfinished_uploads(alias: str) -> list[str]:
    """S3 multipart uploads begun under the storage's prefix and never completed or aborted:
    bytes S3 keeps (and bills) that no listing shows. None on the filesystem, whose partial
    files are names in the storage."""
    storage = storages[alias]
    if not hasattr(storage, "bucket_name"):
        return []
    listed = storage.connection.meta.client.list_multipart_uploads(
        Bucket=storage.bucket_name, Prefix=storage._normalize_name("")
    )
    return sorted(upload["Key"] for upload in listed.get("Uploads", []))


def _files(directory: Path) -> list[tuple[str, int]]:
    """Every file under `directory`, with its size."""
    found = []
    for parent, _, names in os.walk(directory):
        for name in names:
            path = Path(parent, name)
            found.append((str(path.relative_to(directory)), path.stat().st_size))
    return sorted(found)
