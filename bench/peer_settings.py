"""Settings for the django-dbbackup peer in bench/export.py, and nothing else.

Ferry's settings plus dbbackup: `mediabackup` tars the default storage, so here the
default storage is the blobs' (where Ferry keeps media bytes), and backups go under var/.
"""

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS, STORAGES, VAR_DIR

INSTALLED_APPS = [*INSTALLED_APPS, "dbbackup"]
STORAGES = {
    **STORAGES,
    "default": STORAGES["blobs"],
    "dbbackup": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(VAR_DIR / "backups")},
    },
}
DBBACKUP_SEND_EMAIL = False
