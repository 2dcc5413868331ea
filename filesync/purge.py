"""Permanent deletion of files whose grace period is over.

Other apps can hold a file back: a guard is given the candidate files and returns the ids
of those it still needs (exports register one for the files their active jobs pinned).
"""

from collections.abc import Callable

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from .feed import record_change
from .models import ChangeKind, File

PurgeGuard = Callable[[QuerySet], QuerySet]
_guards: list[PurgeGuard] = []


def register_purge_guard(guard: PurgeGuard) -> None:
    if guard not in _guards:
        _guards.append(guard)


def purgeable_files(now=None) -> QuerySet[File]:
    files = File.objects.filter(deleted_at__isnull=False, purge_after__lte=now or timezone.now())
    for guard in _guards:
        files = files.exclude(pk__in=guard(files))
    return files.order_by("purge_after", "id")


def purge_files(*, now=None, dry_run: bool = False) -> list[File]:
    """Delete for good what is past its grace and held by no guard; each under a row lock."""
    now = now or timezone.now()
    candidates = list(purgeable_files(now))
    if dry_run:
        return candidates
    purged = []
    for file in candidates:
        with transaction.atomic():
            locked = File.objects.select_for_update().filter(pk=file.pk)
            if purgeable_files(now).filter(pk__in=locked.values("pk")).exists():
                record_change(kind=ChangeKind.FILE_PURGED, file=file)
                File.objects.filter(pk=file.pk).delete()
                purged.append(file)
    return purged
