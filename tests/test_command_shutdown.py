"""Long-running commands stopped by SIGTERM or SIGINT mid-work: each exits non-zero within a
bound with one line saying what it left, no traceback, and leaves nothing a worker could
not resume or redo.

Each command runs as a real process on this test's database and storages. It is caught
mid-work on an event (its first checkpoint row, its first progress event), frozen with
SIGSTOP so the test can check it really is mid-work, signalled, then let go.
"""

import io
import re
import signal
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.files.storage import storages
from django.core.management import call_command
from django.utils import timezone

from exports.binfile.reader import BinfileReader
from exports.exporting.engine import run_tick
from exports.exporting.sinks import copy_artifact
from exports.importing.engine import run_import
from exports.models import EventKind, ExportJob, ExportPart, ImportEvent, ImportJob, JobState
from filesync.models import Change, ChangeKind, File
from tests.conftest import ROOT
from tests.snapshot import store_state
from tests.waiting import stop_process, wait_exit, wait_for

pytestmark = pytest.mark.live

#: The bound on a stop: the signal is handled at once, the way out is a rollback and a
#: lease given back (an export also waits for the part it is writing).
STOP_BOUND = 20
#: A workspace whose export spans many parts (S3 keeps parts of at least 5 MiB).
WORKSPACE = ("--files", "6", "--pages", "2", "--objects", "20", "--media-mb", "40")
PART_SIZE = 1024 * 1024
JOB_TABLES = (
    "exports.ImportJob",
    "exports.ImportEvent",
    "filesync.Blob",  # an import stores the archive's blobs before it checks them in
)


@pytest.fixture
def demo_project(transactional_db) -> str:
    out = io.StringIO()
    call_command("seed_demo", *WORKSPACE, "-v", "0", stdout=out)
    return out.getvalue().split()[-1]


@pytest.fixture
def command(live_env, tmp_path):
    """Start `manage.py <args>` as a process of its own; always ended at teardown."""
    started = []

    def start(*args: str, sigint_ignored: bool = False, verbosity: int = 0) -> subprocess.Popen:
        log = tmp_path / f"command-{len(started)}.log"
        env = {**live_env, "EXPORT_PART_SIZE": str(PART_SIZE), "EXPORT_PROGRESS_INTERVAL": "0"}
        ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, "manage.py", *args, "-v", str(verbosity)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=ignore,
            )  # fmt: skip
        process.log = log
        started.append(process)
        return process

    yield start
    for process in started:
        stop_process(process)


def stop_mid_work(process: subprocess.Popen, signum: int, still_working) -> list[str]:
    """Freeze the process, check `still_working()`, send `signum` and let it go; it must
    exit 1 within STOP_BOUND. Returns its output lines."""
    process.send_signal(signal.SIGSTOP)
    try:
        assert still_working(), "the command ended before it could be stopped mid-work"
        process.send_signal(signum)
    finally:
        process.send_signal(signal.SIGCONT)
    code = wait_exit(process, timeout=STOP_BOUND, what="the command after a stop signal")
    lines = [line for line in process.log.read_text().splitlines() if line.strip()]
    assert code == 1, lines
    assert "Traceback" not in "\n".join(lines), lines
    return lines


def resume_export(job: ExportJob) -> ExportJob:
    """Tick the job in this process, as a worker would, to its end."""
    while run_tick(job.pk, worker="test-worker") == JobState.RUNNING:
        pass
    job.refresh_from_db()
    return job


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_export_files_stopped_keeps_its_checkpoint_for_a_worker(demo_project, command, signum):
    run = command("export_files", "--project", demo_project, sigint_ignored=True)
    wait_for(ExportPart.objects.exists, timeout=120, what="the export's first checkpoint")
    job = ExportJob.objects.get()
    lines = stop_mid_work(
        run, signum, lambda: ExportJob.objects.filter(state=JobState.RUNNING).exists()
    )
    job.refresh_from_db()
    name = signal.Signals(signum).name
    assert lines == [
        f"CommandError: Stopped by {name}; export {job.id} keeps its checkpoint "
        f"({job.bytes_flushed} bytes) and is left to the workers to resume."
    ]
    assert (job.state, job.worker, job.lease_expires_at) == (JobState.RUNNING, "", None)
    assert job.bytes_flushed > 0 and job.parts.exists()
    finished = resume_export(job)
    assert finished.state == JobState.SUCCEEDED
    with storages["exports"].open(finished.artifact_name, "rb") as archive:
        BinfileReader(archive).verify()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_export_files_following_a_queued_job_stops_and_leaves_the_job_to_the_workers(
    demo_project, command, signum
):
    run = command("export_files", "--project", demo_project, "--queue", sigint_ignored=True)
    wait_for(ExportJob.objects.exists, timeout=120, what="the queued job")
    job = ExportJob.objects.get()
    wait_for(lambda: str(job.id) in run.log.read_text(), timeout=60, what="the job id printed")
    lines = stop_mid_work(run, signum, lambda: run.poll() is None)
    assert lines[-2:] == [  # after the queue's own log line
        str(job.id),
        f"CommandError: Stopped by {signal.Signals(signum).name}; export {job.id} goes on "
        "in the workers.",
    ]
    job.refresh_from_db()
    assert (job.state, job.worker) == (JobState.QUEUED, "")
    assert resume_export(job).state == JobState.SUCCEEDED


def test_import_binfile_stopped_writes_nothing_and_a_worker_redoes_it(
    demo_project, command, tmp_path
):
    archive = tmp_path / "workspace.zip"
    out = io.StringIO()
    call_command("export_files", "--project", demo_project, "-v", "0", stdout=out)
    copy_artifact(ExportJob.objects.get().artifact_name, str(archive))
    files_before = File.objects.count()
    before = store_state(ignore=JOB_TABLES)["tables"]
    run = command("import_binfile", str(archive), "--project", demo_project)
    wait_for(
        ImportEvent.objects.filter(kind=EventKind.PROGRESS).exists,
        timeout=120,
        what="the import's first progress event",
    )
    job = ImportJob.objects.get()
    lines = stop_mid_work(
        run,
        signal.SIGTERM,
        lambda: ImportJob.objects.filter(state=JobState.RUNNING).exists(),
    )
    assert lines == [
        f"CommandError: Stopped by SIGTERM; import {job.id} wrote nothing and is left to the "
        "workers to run again."
    ]
    assert store_state(ignore=JOB_TABLES)["tables"] == before
    job.refresh_from_db()
    assert (job.state, job.worker, job.lease_expires_at) == (JobState.RUNNING, "", None)
    assert run_import(job.pk, worker="test-worker") == JobState.SUCCEEDED
    job.refresh_from_db()
    assert job.files and File.objects.count() == files_before + len(job.files)


def test_seed_demo_stopped_writes_nothing_and_the_next_run_builds_it_whole(command, live_env):
    before = store_state()["tables"]
    run = command("seed_demo", *WORKSPACE, verbosity=1)  # its progress bar: files seeded
    wait_for(
        lambda: re.search(r"\b[1-5]/6\b", run.log.read_text(errors="replace")),
        timeout=120,
        what="a file seeded, not the last",
        explain=lambda: run.log.read_text(errors="replace")[-2000:],
    )
    lines = stop_mid_work(run, signal.SIGINT, lambda: "6/6" not in run.log.read_text())
    assert lines[-1] == "CommandError: Stopped by SIGINT; nothing was written."
    assert store_state()["tables"] == before
    out = io.StringIO()
    call_command("seed_demo", *WORKSPACE, "-v", "0", stdout=out)
    project = out.getvalue().split()[-1]
    assert File.objects.filter(project_id=project, is_library=False).count() == 6


def test_purge_stopped_keeps_what_it_purged_and_the_next_run_purges_the_rest(project, command):
    past = timezone.now() - timedelta(days=60)
    File.objects.bulk_create(
        File(project=project, name=f"Old {n}", deleted_at=past, purge_after=past)
        for n in range(600)
    )
    run = command("purge")
    wait_for(
        Change.objects.filter(kind=ChangeKind.FILE_PURGED).exists,
        timeout=120,
        what="the first file purged",
    )
    lines = stop_mid_work(
        run, signal.SIGTERM, lambda: File.objects.filter(name__startswith="Old").exists()
    )
    assert lines == ["CommandError: Stopped by SIGTERM; the next run purges what is left."]
    purged = Change.objects.filter(kind=ChangeKind.FILE_PURGED).values_list("file_id", flat=True)
    left = File.objects.filter(name__startswith="Old")
    assert not left.filter(pk__in=purged).exists()  # each purge whole: change and row together
    assert left.count() + len(purged) == 600
    out = io.StringIO()
    call_command("purge", stdout=out)  # the lock was let go
    assert not left.exists()
