"""Exports run by real `manage.py qcluster` processes, killed and raced on a shared database.

Every step is a process of its own, as an operator would run it: `migrate`, `seed_demo`,
`export_files` (inline, and `--queue` following the job's events), `export_jobs --json`
and `qcluster`. They share a database that is not pytest-django's test database:

* embedded (`make test`): a SQLite file and filesystem storages under <tmp_path>/var, the
  django-q2 ORM broker, no service variable at all;
* services (`make test-services`): Redis (broker) and S3 (moto, started by the session
  fixture `s3_server`) from the environment, and a throw-away PostgreSQL database created
  and dropped here.

The knobs are picked so that nothing depends on how fast this machine is: one tick runs a
whole job unless a test asks for short ones (so a worker killed mid-job is always killed
holding its lease), and the lease, renewed about once a second, runs out only for a worker
that stopped for 20 s (stretched by FERRY_TEST_PATIENCE): a dead worker's job is taken
over by the first run of the scheduled maintenance task after that. Kill points come
from what the job records (a checkpoint, a log line), never from a delay.
"""

import hashlib
import io
import json
import os
import re
import signal
import time
import zipfile
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path
from uuid import uuid4

import pytest

from exports.binfile import format as binfile
from filesync.models import DATA_VERSION
from tests.conftest import scratch_database
from tests.exports.test_import import documents, read_archive_bytes
from tests.exports.test_import_hostile import page_of_many_objects
from tests.live import (
    MIB,
    SERVICES,
    TAKEOVER_SECONDS,
    WATCH_JOB,
    Ferry,
    Proc,
    log_tail,
    queue_records,
    seed,
    subprocess_env,
    watched,
)
from tests.waiting import patience, wait_for

pytestmark = pytest.mark.live


@pytest.fixture
def shared_database():
    """None (SQLite in FERRY_VAR_DIR), or the URL of a PostgreSQL database made for the test."""
    with scratch_database("ferry_live") as url:
        yield url


@pytest.fixture
def ferry(tmp_path, isolated_storages, shared_database, s3_server):
    """A migrated Ferry on its own database and storages; kills what it started at the end."""
    logs = tmp_path / "logs"
    logs.mkdir()
    env = subprocess_env(
        var_dir=isolated_storages["FERRY_VAR_DIR"],
        s3_prefix=isolated_storages["FERRY_S3_PREFIX"],
        database_url=shared_database,
    )
    deployment = Ferry(env, logs)
    try:
        deployment.manage("migrate", "--noinput", "-v0")
        yield deployment
    finally:
        deployment.close()


def sha256_and_location(stdout_lines: list[str]) -> tuple[str, str]:
    sha256, _, location = stdout_lines[-1].partition("  ")
    assert len(sha256) == 64 and location, stdout_lines[-3:]
    return sha256, location


def stored_sha256(location: str) -> str:
    """Hash the artifact where export_files says it is: a path, or an s3:// URI."""
    digest = hashlib.sha256()
    if location.startswith("s3://"):
        import boto3

        bucket, _, key = location.removeprefix("s3://").partition("/")
        client = boto3.client(
            "s3",
            endpoint_url=os.environ["AWS_S3_ENDPOINT_URL"],
            region_name=os.environ.get("AWS_S3_REGION_NAME", "us-east-1"),
        )
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        while chunk := body.read(MIB):
            digest.update(chunk)
    else:
        with open(location, "rb") as artifact:
            while chunk := artifact.read(MIB):
                digest.update(chunk)
    return digest.hexdigest()


def taken_over(watcher: Proc, ferry: Ferry) -> dict:
    """Wait for a second attempt on the watched job (or its end), as TAKEOVER_SECONDS
    bounds it."""

    def second_attempt():
        state = watched(watcher, ferry)
        return (state["attempts"] > 1 or state["state"] not in ("queued", "running")) and state

    return wait_for(
        second_attempt,
        timeout=TAKEOVER_SECONDS,
        what="the maintenance task to requeue the dead worker's job",
        every=0.5,
        explain=ferry.logs_now,
    )


def stamp(seconds: float | None, origin: float) -> str:
    return "-" if seconds is None else f"{seconds - origin:+.1f}s"


# Parts enough (1 MiB each on disk, 5 MiB on S3) that a kill after the second checkpoint
# leaves most of the job to resume, small enough to run in a minute.
# FERRY_KILL_TEST_MB=300 runs the 300 MB case; CI uses 96 MB to stay quick.
KILL_WORKSPACE = {
    "files": 6,
    "pages": 3,
    "objects": 50,
    "media_mb": int(os.environ.get("FERRY_KILL_TEST_MB", "96")),
    "libraries": 1,
}


@pytest.mark.timeout(180 + TAKEOVER_SECONDS)
def test_killed_worker_resumes_to_the_same_bytes(ferry):
    """SIGKILL the cluster mid-tick; a new cluster resumes the job to the reference bytes.

    Nothing redelivers the dead worker's task in time (the ORM broker only after
    Q_CLUSTER["retry"], 720 s; Redis never): the scheduled `exports.tasks.maintain` does,
    the first time it runs after the lease expired (see TAKEOVER_SECONDS).
    """
    began = time.monotonic()
    project = seed(ferry, **KILL_WORKSPACE)

    # The reference: the same export run inline, never interrupted.
    reference = ferry.manage("export_files", "--project", project, "-v0").splitlines()
    reference_sha256, _ = sha256_and_location(reference)

    first = ferry.start_cluster("qcluster-1", workers=1)
    watcher = ferry.start(
        "watcher", "shell", "--no-imports", "-c", WATCH_JOB, lines=True, stdin=True
    )
    wait_for(
        lambda: "ready" in watcher.lines, timeout=30, what="the watcher", explain=ferry.logs_now
    )
    follower = ferry.start(
        "export-files-queue", "export_files", "--project", project, "--queue", "-v0", lines=True
    )
    job_id = wait_for(
        lambda: follower.lines and follower.lines[0],
        timeout=30,
        what="the job id",
        explain=ferry.logs_now,
    )
    watcher.send(job_id)

    # Kill the cluster once two parts are checkpointed: the one tick runs the whole job,
    # so its worker holds the lease until the end and the kill always finds it held.
    def checkpointed():
        state = watched(watcher, ferry)
        assert state["state"] in ("queued", "running"), ferry.explain(
            f"the job ended ({state['state']}) before the kill; make the workspace bigger"
        )
        return state["worker"] and state["progress"]["parts_done"] >= 2 and state

    at_kill = wait_for(
        checkpointed, timeout=60, what="two checkpointed parts", every=0.005, explain=ferry.logs_now
    )
    first.kill()
    killed_at, killed_wall = time.monotonic(), time.time()

    # The checkpoint the dead worker left, as an operator sees it; its lease still held.
    left = ferry.json("export_jobs", job_id, "--json")
    after_kill = watched(watcher, ferry, since=killed_wall)
    assert left["state"] == "running", ferry.explain(f"after the kill: {left}")
    assert 0 < left["progress"]["bytes_done"] < left["progress"]["bytes_total"], left
    assert after_kill["worker"] == at_kill["worker"] != "", ferry.explain(
        f"the lease was not the dead worker's: {at_kill} / {after_kill}"
    )

    second = ferry.start_cluster("qcluster-2", workers=1)
    second_started = time.monotonic()
    taken_over(watcher, ferry)
    wait_for(
        lambda: not follower.alive(),
        timeout=90,
        what="the job to finish on the second cluster (export_files --queue to exit)",
        explain=ferry.logs_now,
    )
    finished_after = time.monotonic() - second_started

    assert follower.wait(timeout=10) == 0, ferry.explain("export_files --queue failed")
    sha256, location = sha256_and_location(follower.lines)
    assert location.endswith(f"artifacts/{job_id}.zip"), follower.lines
    assert sha256 == reference_sha256, ferry.explain("the resumed archive differs")
    assert stored_sha256(location) == reference_sha256

    job = ferry.json("export_jobs", job_id, "--json")
    records = queue_records(ferry)
    runtime = time.monotonic() - began
    assert job["state"] == "succeeded" and job["artifact"]["sha256"] == reference_sha256, job
    assert job["attempts"] == 2, ferry.explain(f"attempts: {job}")
    assert job["part_writes"] == job["progress"]["parts_done"], ferry.explain(str(job))
    assert job["parts_rewritten"] <= 1, ferry.explain(f"more than one part redone: {job}")
    assert second.alive()

    origin = time.time() - (time.monotonic() - killed_at)
    maintain = [t for t in records["tasks"] if t["func"] == "exports.tasks.maintain"]
    ticks = sorted(
        (t for t in records["tasks"] if t["func"] == "exports.tasks.run_export"),
        key=lambda t: t["enqueued"],
    )
    assert any(m["result"] and m["result"].get("requeued") for m in maintain), ferry.explain(
        f"the job was not requeued by the maintenance task: {maintain}"
    )
    progress = job["progress"]
    print(
        f"\n[killed worker] {'services' if SERVICES else 'embedded'}: "
        f"killed at {at_kill['progress']['bytes_done'] / progress['bytes_total']:.0%} "
        f"(checkpoint {left['progress']['bytes_done']} of {left['progress']['bytes_total']} "
        f"bytes, {left['progress']['parts_done']} parts); "
        f"size {progress['bytes_total']} bytes, part size "
        f"{max(MIB, 5 * MIB if SERVICES else 0)}\n"
        f"  attempts={job['attempts']} ticks={job['ticks']} part_writes={job['part_writes']} "
        f"parts_done={progress['parts_done']} parts_rewritten={job['parts_rewritten']} "
        f"bytes_replayed={job['bytes_replayed']}\n"
        f"  sha256 {sha256} == reference; second cluster finished it "
        f"{finished_after:.1f}s after starting; test runtime {runtime:.1f}s\n"
        f"  timeline from the kill: "
        + ", ".join(
            f"maintain enqueued {stamp(m['enqueued'], origin)} -> {m['result']}" for m in maintain
        )
        + "; run_export ticks enqueued "
        + ", ".join(f"{stamp(t['enqueued'], origin)} ({t['result']})" for t in ticks)
        + "; next_run now "
        + ", ".join(f"{s['name']} {stamp(s['next_run'], origin)}" for s in records["schedules"])
    )


CREATE_TEN_JOBS = """
from exports.services import create_export_job
from filesync.models import Project
project = Project.objects.get(pk="{project}")
for _ in range(10):
    print(create_export_job(project=project).id)
"""


def test_two_clusters_run_ten_exports_without_overlap(ferry):
    """Two clusters, ten jobs at once: all succeed, the same bytes, one worker at a time.

    django-q2's Task.started is when a task was *queued*, not when it began: a tick queues
    the next one before it returns, so [started, stopped] of consecutive ticks always
    overlap and cannot prove anything. The proof is the lease's: a worker takes a job only
    by an atomic update that requires no live lease, a takeover of a held (expired) lease
    bumps `attempts` and ends the old holder's tick as "lost", and a refused worker
    returns "busy". So: attempts == 1, no "lost", and every task that ran a job is one of
    its `ticks` (and, while no maintenance run requeued anything, they form one chain).
    """
    began = time.monotonic()
    project = seed(ferry, files=4, pages=2, objects=20, media_mb=20, libraries=1)
    # Ticks short enough that every job takes several, which the two clusters then share;
    # a lease that outlasts any stall of a loaded machine, so that only a bug takes one over.
    knobs = {"EXPORT_TICK_SECONDS": "0.1", "EXPORT_LEASE_SECONDS": str(round(patience(120)))}
    clusters = [ferry.start_cluster(f"qcluster-{n}", workers=2, **knobs) for n in "ab"]

    job_ids = ferry.manage(
        "shell", "--no-imports", "-c", CREATE_TEN_JOBS.format(project=project)
    ).split()
    assert len(job_ids) == 10, job_ids

    def all_ended():
        jobs = ferry.json("export_jobs", "--json", "--limit", "100")
        return all(j["state"] not in ("queued", "running") for j in jobs) and jobs

    jobs = wait_for(
        all_ended, timeout=150, what="all ten exports to end", explain=ferry.logs_now, every=1
    )
    elapsed = time.monotonic() - began
    assert all(c.alive() for c in clusters), ferry.explain("a cluster died")
    by_id = {j["id"]: j for j in jobs}
    assert sorted(by_id) == sorted(job_ids)
    failed = {i: (j["state"], j["error"]) for i, j in by_id.items() if j["state"] != "succeeded"}
    assert not failed, ferry.explain(f"jobs that did not succeed: {failed}")

    # Determinism: ten archives of the same files, byte for byte the same.
    digests = {j["artifact"]["sha256"] for j in jobs}
    assert len(digests) == 1, digests

    records = queue_records(ferry)
    # The maintenance task (first run ~30 s after a cluster starts) queues a job again
    # when it finds it without a lease, which a job between two ticks is: then two tasks
    # may exist for one job, the lease lets one work, and the chain below does not hold.
    requeued = sum(
        (t["result"] or {}).get("requeued", 0)
        for t in records["tasks"]
        if t["func"] == "exports.tasks.maintain" and isinstance(t["result"], dict)
    )
    ticks = defaultdict(list)
    for task in records["tasks"]:
        if task["func"] == "exports.tasks.run_export":
            ticks[task["args"][0]].append(task)
    outcomes = Counter(t["result"] for runs in ticks.values() for t in runs)
    # Which cluster ran which tick: each worker logs "processing export-<job id>".
    ran_on = {
        c.name: Counter(
            line.split("processing export-")[1].split()[0]
            for line in log_tail(c.log, 100_000).splitlines()
            if "processing export-" in line
        )
        for c in clusters
    }

    problems = []
    for job_id, job in by_id.items():
        runs = ticks[job_id]
        worked = [t for t in runs if t["result"] != "busy"]
        # A second worker could only take a job over after its lease lapsed; that bumps
        # attempts, and the first worker's next checkpoint then ends its tick as "lost".
        if job["attempts"] != 1:
            problems.append(f"{job_id}: attempts {job['attempts']}")
        if job["ticks"] < 1 or len(worked) != job["ticks"]:
            problems.append(f"{job_id}: {job['ticks']} ticks, {len(worked)} tasks ran it")
        if any(
            not t["success"] or t["result"] not in ("running", "succeeded", "busy") for t in runs
        ):
            problems.append(f"{job_id}: {[t['result'] for t in runs]}")
        # The ticks form one chain: each was queued by the tick before it, after that
        # tick had released the lease, and ended after it.
        chain = sorted(worked, key=lambda t: t["stopped"]) if not requeued else []
        for before, after in pairwise(chain):
            if not before["enqueued"] <= after["enqueued"] <= before["stopped"] < after["stopped"]:
                problems.append(f"{job_id}: ticks out of chain: {before} / {after}")
    assert not problems, ferry.explain("\n".join(problems))
    shared = [j for j in job_ids if all(ran_on[c.name][j] for c in clusters)]
    assert all(sum(counts.values()) for counts in ran_on.values()), ferry.explain(
        f"a cluster ran no tick: {ran_on}"
    )

    tick_counts = sorted(j["ticks"] for j in jobs)
    print(
        f"\n[two clusters] {'services' if SERVICES else 'embedded'}: 10 jobs of "
        f"{jobs[0]['artifact']['size']} bytes, sha256 {digests.pop()[:16]}… for all, "
        f"in {elapsed:.1f}s\n"
        f"  attempts={sorted({j['attempts'] for j in jobs})} ticks per job={tick_counts} "
        f"(total {sum(tick_counts)}); task outcomes {dict(outcomes)}\n"
        f"  ticks per cluster: "
        + ", ".join(f"{name}={sum(c.values())}" for name, c in ran_on.items())
        + f"; jobs whose ticks ran on both clusters: {len(shared)}/10; "
        + f"requeued by maintenance: {requeued}"
    )


# Files enough that phase 3 (every row in one transaction) is still writing the later ones
# when the worker's log says it wrote the first: ~3 s on SQLite, under 1 s on PostgreSQL.
IMPORT_KILL_WORKSPACE = {"files": 40, "pages": 25, "objects": 300, "media_mb": 24, "libraries": 1}

#: A fresh project in the seeded project's team, and an import of the archive into it,
#: queued for the workers. Prints the job id and the project id.
QUEUE_IMPORT = """
from exports.services import create_import_job
from filesync.models import Project
from filesync.services import create_project
source = Project.objects.get(pk="{project}")
target = create_project(team=source.team, name="Restored")
with open("{archive}", "rb") as archive:
    job = create_import_job(user=None, project=target, upload=archive, enqueue=True)
print(job.id, target.id)
"""

#: Follows one import every 20 ms, one JSON line each: its state and lease, when each of its
#: "write" progress events (the start of phase 3) was recorded, and `at`, when the reads
#: began.
WATCH_IMPORT = """
import json, sys, time
from exports.models import ImportEvent, ImportJob
print("ready", flush=True)
job_id = sys.stdin.readline().strip()
while True:
    at = time.time()
    job = ImportJob.objects.values(
        "state", "attempts", "ticks", "worker", "finished_at", "error_message"
    ).get(pk=job_id)
    writes = ImportEvent.objects.filter(
        job_id=job_id, kind="progress", data__phase="write"
    ).order_by("seq").values_list("created_at", flat=True)
    job["writes"] = [w.timestamp() for w in writes]
    job["finished_at"] = job["finished_at"] and job["finished_at"].timestamp()
    job["at"] = at
    print(json.dumps(job), flush=True)
    if job["state"] not in ("queued", "running"):
        break
    time.sleep(0.02)
"""

#: The rows a project's files own, and the change feed's length (an import's feed rows
#: carry the new file ids, unknown until it commits).
PROJECT_ROWS = """
import json
from filesync.models import Change, File, FileLibrary, MediaObject, Page
files = File.objects.filter(project_id="{project}")
print(json.dumps(dict(
    files=files.count(),
    pages=Page.objects.filter(file__in=files).count(),
    media=MediaObject.objects.filter(file__in=files).count(),
    links=FileLibrary.objects.filter(file__in=files).count(),
    changes=Change.objects.count(),
)))
"""

#: An import's outcome and `inverse` (new id -> archive id) from tests/exports/test_import.
IMPORT_OUTCOME = """
import json
from exports.models import ImportJob
from tests.exports.test_import import inverse
job = ImportJob.objects.get(pk="{job}")
print(json.dumps(dict(state=job.state, attempts=job.attempts, ticks=job.ticks,
                      error=job.error_message, files=job.files, inverse=inverse(job))))
"""


def file_documents(data: bytes, ids: dict[str, str] | None = None) -> dict:
    """`documents` of tests/exports/test_import.py, each file's media as a set: an export
    lists them by id, and an import gives them new random ids."""
    translated = documents(data, ids)
    for name, document in translated.items():
        if name.startswith("files/") and name.count("/") == 1:
            document["media"] = sorted(document["media"])
    return translated


@pytest.mark.timeout(180 + TAKEOVER_SECONDS)
def test_killed_import_leaves_nothing_and_succeeds_when_retried(ferry, tmp_path):
    """SIGKILL the worker inside phase 3's transaction: no row of the import exists; the
    scheduled maintenance on a new cluster runs it again from phase 1, and the project then
    holds the same files as the archive.

    The worker is the process whose pid is in the job's lease (`host:pid:tag`); the rest of
    its cluster is killed after it, so that only the second cluster can finish the job.
    """
    began = time.monotonic()
    project = seed(ferry, **IMPORT_KILL_WORKSPACE)
    original_path = tmp_path / "original.zip"
    ferry.manage("export_files", "--project", project, "--out", original_path, "-v0")

    first = ferry.start_cluster("qcluster-1", workers=1)
    watcher = ferry.start(
        "watcher", "shell", "--no-imports", "-c", WATCH_IMPORT, lines=True, stdin=True
    )
    wait_for(
        lambda: "ready" in watcher.lines, timeout=30, what="the watcher", explain=ferry.logs_now
    )
    before = ferry.json("shell", "--no-imports", "-c", PROJECT_ROWS.format(project=project))
    job_id, target = ferry.manage(
        "shell",
        "--no-imports",
        "-c",
        QUEUE_IMPORT.format(project=project, archive=original_path),
    ).split()
    watcher.send(job_id)

    # The worker logs its name once phase 3's transaction holds the first file's rows.
    writing = re.compile(rf"import {job_id}: worker (\S+) is writing (\d+) files")
    worker, _ = wait_for(
        lambda: (found := writing.search(log_tail(first.log, 100_000))) and found.groups(),
        timeout=90,
        what="the worker's phase 3 log line",
        every=0.005,
        explain=ferry.logs_now,
    )
    worker_pid = int(worker.rsplit(":", 2)[1])
    assert os.getpgid(worker_pid) == first.pid, f"{worker} is not in qcluster-1"
    os.kill(worker_pid, signal.SIGKILL)
    killed_at = time.time()
    first.kill()

    # Phase 3 had written rows and had not committed (its commit marks the job succeeded):
    # the lease is still the dead worker's, and not one row of the import is visible.
    after_kill = watched(watcher, ferry, since=killed_at)
    assert after_kill["state"] == "running", ferry.explain(
        f"the import ended before the kill landed: {after_kill}"
    )
    assert after_kill["worker"] == worker, ferry.explain(str(after_kill))
    left = ferry.json("shell", "--no-imports", "-c", PROJECT_ROWS.format(project=target))
    assert left == {"files": 0, "pages": 0, "media": 0, "links": 0, "changes": before["changes"]}, (
        left
    )

    second = ferry.start_cluster("qcluster-2", workers=1)
    second_started = time.monotonic()
    taken_over(watcher, ferry)
    wait_for(
        lambda: not watcher.alive(),
        timeout=120,
        what="the import to end on the second cluster",
        explain=ferry.logs_now,
    )
    finished_after = time.monotonic() - second_started
    final = json.loads(watcher.lines[-1])
    outcome = ferry.json("shell", "--no-imports", "-c", IMPORT_OUTCOME.format(job=job_id))
    assert outcome["state"] == "succeeded", ferry.explain(f"the retried import: {outcome}")
    assert outcome["attempts"] == 2, ferry.explain(f"attempts: {outcome}")
    assert len(final["writes"]) == 2, final  # phase 3 began once per attempt
    assert second.alive()
    maintain = [t for t in queue_records(ferry)["tasks"] if t["func"] == "exports.tasks.maintain"]
    assert any(m["result"] and m["result"].get("requeued") for m in maintain), ferry.explain(
        f"the import was not requeued by the maintenance task: {maintain}"
    )

    # The same files as the archive: the same rows, and a re-export whose documents,
    # translated back to the archive's ids, and blobs are the archive's.
    rows = ferry.json("shell", "--no-imports", "-c", PROJECT_ROWS.format(project=target))
    assert {k: rows[k] for k in ("files", "pages", "media", "links")} == {
        k: before[k] for k in ("files", "pages", "media", "links")
    }, (rows, before)
    again_path = tmp_path / "again.zip"
    ferry.manage("export_files", "--project", target, "--out", again_path, "-v0")
    original, again = original_path.read_bytes(), again_path.read_bytes()
    assert file_documents(again, outcome["inverse"]) == file_documents(original)
    blob_names = [
        sorted(n for n in read_archive_bytes(data)[0].names() if n.startswith("blobs/"))
        for data in (original, again)
    ]
    assert blob_names[0] == blob_names[1] and blob_names[0]

    retry_write = final["finished_at"] - final["writes"][1]
    print(
        f"\n[killed import] {'services' if SERVICES else 'embedded'}: "
        f"{before['files']} files, {before['pages']} pages, {before['media']} media, "
        f"archive {len(original)} bytes; worker {worker} killed "
        f"{killed_at - after_kill['writes'][0]:.2f}s into phase 3 (the retry's phase 3 took "
        f"{retry_write:.2f}s); nothing left: {left}\n"
        f"  attempts={outcome['attempts']} ticks={outcome['ticks']}; second cluster finished "
        f"it {finished_after:.1f}s after starting; maintain results "
        f"{[m['result'] for m in maintain]}; test runtime {time.monotonic() - began:.1f}s"
    )


#: Stores an archive as a blob (what a tus upload becomes: nothing checks it before its job
#: runs) and queues its import into a new project of the seeded project's team.
QUEUE_BLOB_IMPORT = """
from exports.services import create_import_job
from filesync.models import Project
from filesync.services import create_project, store_blob
source = Project.objects.get(pk="{project}")
target = create_project(team=source.team, name="Restored")
with open("{archive}", "rb") as archive:
    blob = store_blob(stream=archive, content_type="application/zip")
print(create_import_job(user=None, project=target, blob=blob, enqueue=True).id)
"""

IMPORT_ERROR = """
import json
from exports.models import ImportEvent, ImportJob
job = ImportJob.objects.get(pk="{job}")
error = ImportEvent.objects.filter(job=job, kind="error").values_list("data", flat=True).first()
print(json.dumps(dict(state=job.state, error=error)))
"""


def huge_page_archive(objects: int) -> tuple[bytes, str, int]:
    """A binfile of one file whose one page holds `objects` objects; right in every way but
    the page's size. Returns the archive, the page's entry and its size."""
    file_id, page_id = str(uuid4()), str(uuid4())
    meta = {
        "id": file_id,
        "name": "Huge",
        "revision": 1,
        "data_version": DATA_VERSION,
        "features": [],
        "is_library": False,
    }
    manifest = binfile.manifest(
        generated_by="probe",
        source={"server": "probe"},
        libraries="all",
        files=[meta],
        relations=[],
    )
    document = {
        **meta,
        "assets": {"components": {}, "colors": {}, "typographies": {}},
        "created_at": "2026-01-01T00:00:00Z",
        "modified_at": "2026-01-01T00:00:00Z",
        "pages": [page_id],
        "media": [],
    }
    page = page_of_many_objects({"id": page_id, "index": 0, "name": "Page 0"}, objects)
    entries = {
        binfile.MANIFEST: binfile.encode_json(manifest),
        binfile.file_entry(file_id): binfile.encode_json(document),
        binfile.page_entry(file_id, page_id): page,
    }
    digest = {
        name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        for name, data in entries.items()
    }
    entries[binfile.DIGEST] = binfile.encode_json({"entries": digest})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue(), binfile.page_entry(file_id, page_id), len(page)


def peak_rss_by_pid(group: int) -> dict[int, int]:
    """VmHWM (peak resident bytes) of every live process in a process group."""
    peaks = {}
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_path.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != group:
                continue
            status = (stat_path.parent / "status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
        peaks[int(stat_path.parent.name)] = int(re.search(r"VmHWM:\s+(\d+)", status)[1]) * 1024
    return peaks


def test_a_huge_page_fails_its_import_without_the_worker_reading_it(ferry, tmp_path):
    """The probe's archive: 650,000 objects make a 16.9 MB page, 1.7 MB deflated, which took
    a worker from 77 to 562 MiB. As a blob it reaches the worker unchecked; the worker
    refuses the page from the directory, naming it, and no process of the cluster ever
    held 200 MB."""
    project = seed(ferry, files=1, pages=1, objects=1, media_mb=0, libraries=0)
    data, page, page_size = huge_page_archive(650_000)
    path = tmp_path / "huge-page.zip"
    path.write_bytes(data)
    cluster = ferry.start_cluster("qcluster", workers=1)

    job_id = ferry.manage(
        "shell", "--no-imports", "-c", QUEUE_BLOB_IMPORT.format(project=project, archive=path)
    ).split()[-1]

    def ended():
        outcome = ferry.json("shell", "--no-imports", "-c", IMPORT_ERROR.format(job=job_id))
        return outcome["state"] not in ("queued", "running") and outcome

    outcome = wait_for(
        ended, timeout=120, every=1, what="the import to end", explain=ferry.logs_now
    )
    peaks = peak_rss_by_pid(cluster.pid)
    assert len(peaks) > 1 and max(peaks.values()) < 200 * MIB, ferry.explain(str(peaks))
    assert outcome["state"] == "failed", ferry.explain(str(outcome))
    assert (outcome["error"]["code"], outcome["error"]["entry"]) == ("too_large", page)
    print(
        f"\n[huge page] {'services' if SERVICES else 'embedded'}: archive {len(data)} bytes, "
        f"page {page_size} bytes; peak RSS of the cluster's processes (MiB): "
        f"{sorted(round(p / MIB) for p in peaks.values())}"
    )
