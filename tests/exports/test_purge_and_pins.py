import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from exports import services
from exports.models import JobState
from filesync import services as filesync_services
from filesync.models import File
from tests.exports.conftest import run_to_end

pytestmark = pytest.mark.django_db(transaction=True)


def purge(*args) -> str:
    out = io.StringIO()
    call_command("purge", *args, stdout=out)
    return out.getvalue()


def test_purge_waits_for_a_running_export_that_pinned_the_file(workspace, settings):
    settings.FILE_PURGE_GRACE_SECONDS = 0
    design = workspace.designs[0]
    job = services.create_export_job(project=workspace.project, enqueue=False)
    filesync_services.soft_delete_file(file=design, now=timezone.now() - timedelta(seconds=1))

    assert "0 file(s) and 0 blob(s) purged" in purge()
    assert File.objects.filter(pk=design.pk).exists()

    job = run_to_end(job)
    assert job.state == JobState.SUCCEEDED
    listed = purge("--dry-run")
    assert f"would purge file {design.id}" in listed
    assert File.objects.filter(pk=design.pk).exists()
    assert f"purged file {design.id}" in purge()
    assert not File.objects.filter(pk=design.pk).exists()


def test_purge_leaves_files_inside_their_grace_period(workspace, settings):
    settings.FILE_PURGE_GRACE_SECONDS = 3600
    filesync_services.soft_delete_file(file=workspace.designs[1])
    assert "0 file(s) and 0 blob(s) purged" in purge()
    filesync_services.restore_file(file=workspace.designs[1])
    assert File.objects.get(pk=workspace.designs[1].pk).deleted_at is None
