"""Download links: signed, bound to the job's owner, short-lived."""

from django.conf import settings
from django.core import signing
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from exports.models import ExportJob

SALT = "ferry.exports.download"


def _subject(job: ExportJob) -> str:
    return f"{job.pk}:{job.created_by_id or '-'}"


def download_token(job: ExportJob) -> str:
    return signing.TimestampSigner(salt=SALT).sign(_subject(job))


def check_download_token(job: ExportJob, token: str) -> None:
    """PermissionDenied (403) for a token that is missing, tampered, expired or another job's."""
    try:
        subject = signing.TimestampSigner(salt=SALT).unsign(
            token or "", max_age=settings.EXPORT_LINK_TTL_SECONDS
        )
    except signing.SignatureExpired:
        raise PermissionDenied("This download link has expired; ask for a new one.") from None
    except signing.BadSignature:
        raise PermissionDenied("This download link is not valid.") from None
    if subject != _subject(job):
        raise PermissionDenied("This download link is for another export.")


def download_path(job: ExportJob) -> str:
    return f"{reverse('export-download', args=[job.pk])}?token={download_token(job)}"


def download_filename(job: ExportJob) -> str:
    """A safe, telling file name: letters, digits and dashes only."""
    base = job.project.name if job.project else "export"
    safe = "".join(c if c.isalnum() else "-" for c in base).strip("-")[:60] or "export"
    return f"ferry-{safe}-{str(job.pk)[:8]}.zip"
