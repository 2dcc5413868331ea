"""What a refused request or a failed job may not change: every row of every table, every
name in every storage, every file in the upload staging and temporary directories.

    before = store_state()
    ...  # the hostile call, answered with an error
    assert store_state() == before

`ignore` leaves out tables that legitimately change on an error (a job's own row and its
events, say), by model label ("exports.ExportJob").
"""

import os
from pathlib import Path

from django.apps import apps
from django.conf import settings

from tests.conftest import stored_names

#: Storages that hold what Ferry writes (staticfiles is built, not written by requests).
WRITTEN_STORAGES = ("default", "blobs", "exports")


def store_state(*, ignore: tuple[str, ...] = ()) -> dict:
    tables = {
        model._meta.label: sorted(map(repr, model._default_manager.values_list()))
        for model in apps.get_models()
        if model._meta.label not in ignore and model._meta.managed
    }
    return {
        "tables": tables,
        "storages": {alias: stored_names(alias) for alias in WRITTEN_STORAGES},
        "directories": {
            name: _files(Path(directory))
            for name, directory in (
                ("uploads", settings.SYNC_UPLOAD_DIR),
                ("tmp", settings.FILE_UPLOAD_TEMP_DIR),
            )
        },
    }


def _files(directory: Path) -> list[tuple[str, int]]:
    """Every file under `directory`, with its size."""
    found = []
    for parent, _, names in os.walk(directory):
        for name in names:
            path = Path(parent, name)
            found.append((str(path.relative_to(directory)), path.stat().st_size))
    return sorted(found)
