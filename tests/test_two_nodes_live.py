"""Ferry run as an operator scales it out: two nodes, requests spread round-robin.

Two uvicorn servers and two `manage.py qcluster` processes, each with a var dir of its own
(nothing one node keeps on its disk is there for another), share one PostgreSQL database,
Redis (the django-q2 broker and the channel layer, under names of this module's own) and
the session's S3 API (moto), and one DJANGO_SECRET_KEY. The API is reached as a client
behind a load balancer without sticky sessions reaches it: each request goes to the next
server (`Api`). What must hold (issue 13):

* an export made on one server streams its events (SSE) on the other, and its signed
  download link from the `end` event works on both;
* the cluster working on an export, killed (SIGKILL) at ~40 %, is replaced by the other,
  which finishes the same bytes as an uninterrupted export;
* a worker stopped (SIGSTOP) past its lease and woken after another finished its job
  changes nothing: the job ends once, succeeded, with no error event;
* a tus upload whose PATCHes alternate servers completes and verifies; an abandoned one is
  reaped with nothing left in storage or on any node's disk;
* ten exports created at once each end once.

The scenarios share one deployment (module-scoped: migrating, seeding and starting four
servers costs more than most scenarios), and each starts by making it whole again (a
killed cluster restarted, a stopped one woken). Kill and stop points come from what the
job records (`bytes_done`, the lease's `worker`), never from a delay. Services mode only:
two nodes on SQLite and local disks are not a deployment Ferry supports.
"""

import base64
import hashlib
import itertools
import json
import os
import signal
import time
from pathlib import Path
from uuid import uuid4

import boto3
import httpx
import pytest

from tests.conftest import scratch_database
from tests.live import (
    MIB,
    SERVICES,
    WATCH_JOB,
    Ferry,
    Proc,
    queue_records,
    seed,
    subprocess_env,
    watched,
)
from tests.waiting import patience, wait_for

#: Renewed at every part (about once a second), it runs out only for a stopped worker.
LEASE_SECONDS = 15
#: A dead worker's job waits for its lease to run out, then for the maintenance schedule
#: (every minute; a run its dead cluster had taken is lost with it) to come due at
#: django-q2's next scheduler pass (every 30 s), plus a margin.
TAKEOVER_SECONDS = LEASE_SECONDS + 60 + 30 + 30
#: Unfinished tus uploads expire this long after their creation.
UPLOAD_TTL_SECONDS = 15

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        not SERVICES,
        reason="two nodes need shared services (PostgreSQL, Redis, S3): "
        "runs only in services mode (FERRY_TEST_SERVICES=1, `make test-services`)",
    ),
    # One limit for every test here: the first one also sets the deployment up, and equal
    # limits keep the module's tests together when conftest orders the live tests.
    pytest.mark.timeout(240 + TAKEOVER_SECONDS),
]

#: Parts enough (5 MiB each on S3) that ~40 % is a checkpoint well inside the job, and
#: media of 15 MB (two per file, three parts each): a worker stopped there is most likely
#: inside an entry, with more parts of it to write, when it wakes.
BIG_WORKSPACE = {"files": 2, "pages": 3, "objects": 50, "media_mb": 60, "libraries": 1}
SMALL_WORKSPACE = {"files": 3, "pages": 2, "objects": 20, "media_mb": 1, "libraries": 1}
USER = "olivia"
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"

#: Every event kind of the given export jobs, in order: {job id: [kind, ...]}.
EVENT_KINDS = """
import json
from exports.models import JobEvent
kinds = {{}}
rows = JobEvent.objects.filter(job_id__in={ids!r}).order_by("job_id", "seq")
for job, kind in rows.values_list("job_id", "kind"):
    kinds.setdefault(str(job), []).append(kind)
print(json.dumps(kinds))
"""

#: The scheduled purge (which reaps expired uploads), queued for whichever cluster takes it;
#: prints its result once a cluster ran it.
RUN_PURGE = """
import json
from django_q.tasks import async_task, result
task = async_task("filesync.tasks.purge")
print(json.dumps(result(task, wait={wait_ms})))
"""

UPLOAD_ROWS = """
from filesync.models import Upload
print(Upload.objects.filter(pk="{upload}").count())
"""


class Api:
    """The API as a client behind a load balancer without sticky sessions sees it: each
    request goes to the next server in turn, unless `on` names one (0 or 1)."""

    def __init__(self, bases: list[str], token: str):
        self.bases = bases
        self.turns = itertools.cycle(range(len(bases)))
        self.http = httpx.Client(headers={"Authorization": f"Token {token}"}, timeout=patience(60))

    def request(self, method: str, path: str, *, on: int | None = None, **options):
        server = next(self.turns) if on is None else on
        return self.http.request(method, self.bases[server] + path, **options)

    def create_export(self, project: str, *, on: int | None = None) -> str:
        response = self.request("POST", "/api/exports/", on=on, json={"project": project})
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def job(self, job_id: str, *, on: int | None = None) -> dict:
        response = self.request("GET", f"/api/exports/{job_id}/", on=on)
        assert response.status_code == 200, response.text
        return response.json()

    def events(self, job_id: str, *, on: int) -> list[dict]:
        """The export's server-sent events from server `on`, read until the stream closes
        (it does after `end`, `error` or `cancelled`): [{seq, kind, data}]."""
        events, event = [], {}
        url = f"{self.bases[on]}/api/exports/{job_id}/events"
        with self.http.stream("GET", url) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if not line:  # a blank line ends an event
                    if "kind" in event:
                        events.append(event)
                    event = {}
                    continue
                field, _, value = line.partition(": ")
                if field == "id":
                    event["seq"] = int(value)
                elif field == "event":
                    event["kind"] = value
                elif field == "data":
                    event["data"] = json.loads(value)
        return events

    def download_sha256(self, download_uri: str, *, on: int) -> str:
        """Follow the signed link (on S3, a redirect to a presigned URL) and hash the bytes."""
        digest = hashlib.sha256()
        url = self.bases[on] + download_uri
        with self.http.stream("GET", url, follow_redirects=True) as response:
            assert response.status_code == 200, (on, response.status_code, response.read())
            for chunk in response.iter_bytes(MIB):
                digest.update(chunk)
        return digest.hexdigest()


class TwoNodes:
    """The deployment: two servers and two clusters, each with its own var dir, and the
    operator's side (`ferry.manage`, on a var dir of its own too)."""

    def __init__(self, ferry: Ferry, root: Path, database_url: str):
        self.ferry, self.root, self.database_url = ferry, root, database_url
        self.servers: list[tuple[Proc, str]] = []
        self.clusters: dict[str, Proc] = {}
        self.starts = itertools.count()
        # Set up by the `nodes` fixture: the API client, the seeded projects, the sha256 of
        # the big one's export, the deployment's S3 key prefix.
        self.api: Api
        self.big: str
        self.small: str
        self.reference_sha256: str
        self.s3_prefix: str

    def var_dir(self, node: str) -> str:
        return str(self.root / node)

    def serve(self, node: str) -> None:
        self.servers.append(self.ferry.serve(node, FERRY_VAR_DIR=self.var_dir(node)))

    def start_cluster(self, node: str) -> None:
        self.clusters[node] = self.ferry.start_cluster(
            f"{node}-{next(self.starts)}", workers=2, FERRY_VAR_DIR=self.var_dir(node)
        )

    def ready(self) -> None:
        """Both servers answering, both clusters running: a stopped one is woken, a dead
        one started again on its var dir."""
        for server, _ in self.servers:
            assert server.alive(), self.ferry.explain(f"{server.name} died")
        for node, cluster in list(self.clusters.items()):
            if cluster.alive():
                os.killpg(cluster.pid, signal.SIGCONT)
            else:
                self.start_cluster(node)

    def cluster_of(self, worker: str) -> str:
        """The node whose cluster runs `worker` (`host:pid:tag`, as the lease names it)."""
        group = os.getpgid(int(worker.rsplit(":", 2)[1]))
        (node,) = [node for node, cluster in self.clusters.items() if cluster.pid == group]
        return node

    def export_watched(self) -> tuple[str, Proc]:
        """An export of the big project, created through the API, and a process printing
        its state and lease every 20 ms (tests/live.WATCH_JOB), ready before the job is
        created so that it sees the job from its first checkpoint."""
        watcher = self.ferry.start(
            f"watcher-{next(self.starts)}",
            "shell",
            "--no-imports",
            "-c",
            WATCH_JOB,
            lines=True,
            stdin=True,
        )
        wait_for(
            lambda: "ready" in watcher.lines,
            timeout=30,
            what="the watcher",
            explain=self.ferry.logs_now,
        )
        job_id = self.api.create_export(self.big)
        watcher.send(job_id)
        return job_id, watcher

    def at_least(self, watcher: Proc, part: float) -> dict:
        """The job's state once its checkpoint (`bytes_done`) holds `part` of its bytes,
        while a worker holds it."""

        def reached():
            state = watched(watcher, self.ferry)
            assert state["state"] in ("queued", "running"), self.ferry.explain(
                f"the job ended ({state['state']}) before {part:.0%}"
            )
            started = state["worker"] and state["progress"]["bytes_total"]
            return started and share(state) >= part and state

        return wait_for(
            reached,
            timeout=120,
            what=f"the export to reach {part:.0%}",
            every=0.005,
            explain=self.ferry.logs_now,
        )

    def stop_between_transactions(self, node: str) -> None:
        """SIGSTOP the whole cluster, at a moment none of its processes is inside a database
        transaction: one stopped inside would hold the job's row lock, and no takeover could
        happen until it woke (a stall this test is not about)."""
        cluster = self.clusters[node]
        for _ in range(20):
            os.killpg(cluster.pid, signal.SIGSTOP)
            if not self.transactions_of(cluster):
                return
            os.killpg(cluster.pid, signal.SIGCONT)
            wait_for(
                lambda: not self.transactions_of(cluster),
                timeout=10,
                what=f"{cluster.name} to end its transaction",
            )
        raise AssertionError(f"{cluster.name} was inside a transaction at every try")

    def transactions_of(self, cluster: Proc) -> int:
        """How many database sessions of the cluster's processes are inside a transaction."""
        import psycopg

        ports = tcp_ports(cluster.pid)
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            (count,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND client_port = ANY(%s) AND (state = 'active' OR state LIKE 'idle in%%')",
                (list(ports),),
            ).fetchone()
        return count

    def event_kinds(self, *job_ids: str) -> dict[str, list[str]]:
        return self.ferry.json("shell", "--no-imports", "-c", EVENT_KINDS.format(ids=list(job_ids)))

    def run_export_outcomes(self, job_id: str) -> list:
        """What each finished `run_export` task of the job returned (django-q2's records)."""
        return [
            task["result"]
            for task in queue_records(self.ferry)["tasks"]
            if task["func"] == "exports.tasks.run_export"
            and task["args"] == [job_id]
            and task["stopped"]
        ]

    def var_files(self) -> dict[str, set[str]]:
        """Every file in every node's var dir."""
        return {
            node: {str(p) for p in (self.root / node).rglob("*") if p.is_file()}
            for node in ("server-a", "server-b", "cluster-a", "cluster-b")
        }


def share(state: dict) -> float:
    """How much of the job's bytes its checkpoint holds, in a state the watcher printed."""
    return state["progress"]["bytes_done"] / state["progress"]["bytes_total"]


def tcp_ports(group: int) -> set[int]:
    """The local ports of the TCP sockets held by the processes of a process group."""
    sockets = set()
    for process in Path("/proc").glob("[0-9]*"):
        try:
            if os.getpgid(int(process.name)) != group:
                continue
            for fd in (process / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    sockets.add(target.removeprefix("socket:[").removesuffix("]"))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # exited meanwhile
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in sockets:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, s3_server):
    """Two servers and two clusters on a migrated, seeded database of their own; kills what
    it started at the end (waking any stopped process first)."""
    root = tmp_path_factory.mktemp("two-nodes")
    logs = root / "logs"
    logs.mkdir()
    run = uuid4().hex[:12]
    with scratch_database("ferry_two_nodes") as url:
        env = subprocess_env(
            var_dir=str(root / "operator"), s3_prefix=f"two-nodes-{run}/", database_url=url
        )
        env.update(
            # This module's own queue, channel-layer keys and cache keys on the shared Redis.
            Q_CLUSTER_NAME=f"two-nodes-{run}",
            CHANNEL_LAYER_PREFIX=f"two-nodes-{run}",
            CACHE_KEY_PREFIX=f"two-nodes-{run}",
            EXPORT_LEASE_SECONDS=str(round(patience(LEASE_SECONDS))),
            SYNC_UPLOAD_TTL_SECONDS=str(round(patience(UPLOAD_TTL_SECONDS))),
        )
        ferry = Ferry(env, logs)
        deployment = TwoNodes(ferry, root, url)
        try:
            ferry.manage("migrate", "--noinput", "-v0")
            ferry.manage(
                "shell",
                "-c",
                f"from django.contrib.auth import get_user_model; "
                f"get_user_model().objects.create_user({USER!r})",
            )
            token = ferry.manage("drf_create_token", USER).split()[2]
            deployment.big = seed(ferry, **BIG_WORKSPACE, owner=USER)
            deployment.small = seed(ferry, **SMALL_WORKSPACE, owner=USER)
            # The reference: the big project exported inline, never interrupted.
            reference = ferry.manage("export_files", "--project", deployment.big, "-v0")
            deployment.reference_sha256 = reference.splitlines()[-1].split()[0]
            for node in ("server-a", "server-b"):
                deployment.serve(node)
            for node in ("cluster-a", "cluster-b"):
                deployment.start_cluster(node)
            deployment.api = Api([base for _, base in deployment.servers], token)
            deployment.s3_prefix = env["FERRY_S3_PREFIX"]
            yield deployment
        finally:
            for cluster in deployment.clusters.values():
                if cluster.alive():
                    os.killpg(cluster.pid, signal.SIGCONT)
            ferry.close()


def taken_over(ferry, watcher, holder: str, whose: str) -> dict:
    """Wait until another worker holds the job `holder` held; the job's state then."""

    def other_holder():
        state = watched(watcher, ferry)
        return state["worker"] not in ("", holder) and state

    return wait_for(
        other_holder,
        timeout=TAKEOVER_SECONDS,
        what=f"the other cluster to take {whose} job over",
        every=0.2,
        explain=ferry.logs_now,
    )


def test_an_export_made_on_one_server_streams_and_downloads_on_both(nodes):
    """Created on server A (token auth); its events read live on server B to `end`; the
    signed link of that event downloads the same bytes from A and B."""
    nodes.ready()
    api = nodes.api
    job_id = api.create_export(nodes.big, on=0)
    events = api.events(job_id, on=1)

    kinds = [event["kind"] for event in events]
    assert kinds[0] == "queued" and kinds[-1] == "end", nodes.ferry.explain(str(kinds))
    assert set(kinds[1:-1]) <= {"progress"}, nodes.ferry.explain(str(kinds))
    seqs = [event["seq"] for event in events]
    assert seqs == sorted(set(seqs)), seqs
    end = events[-1]["data"]
    assert end["sha256"] == nodes.reference_sha256, nodes.ferry.explain(str(end))
    for server in (0, 1):
        assert api.download_sha256(end["download_uri"], on=server) == end["sha256"]
    # The link is bound to its job: another job's id with it is refused on both servers.
    other = api.create_export(nodes.small)
    forged = end["download_uri"].replace(job_id, other)
    for server in (0, 1):
        assert api.request("GET", forged, on=server).status_code == 403


def test_a_killed_cluster_s_export_is_finished_by_the_other(nodes):
    """SIGKILL the whole cluster working on an export at ~40 % of its bytes: the other
    cluster takes the job over (once its lease ran out and the maintenance schedule
    requeued it) and finishes the bytes an uninterrupted export makes."""
    nodes.ready()
    api, ferry = nodes.api, nodes.ferry
    job_id, watcher = nodes.export_watched()
    at_kill = nodes.at_least(watcher, 0.4)
    holder = nodes.cluster_of(at_kill["worker"])
    nodes.clusters[holder].kill()
    killed_wall = time.time()
    (survivor,) = set(nodes.clusters) - {holder}

    after_kill = watched(watcher, ferry, since=killed_wall)
    assert after_kill["state"] == "running", ferry.explain(f"after the kill: {after_kill}")
    progress = after_kill["progress"]
    assert 0 < progress["bytes_done"] < progress["bytes_total"], after_kill

    new_holder = taken_over(ferry, watcher, at_kill["worker"], "the dead cluster's")
    taken_after = time.time() - killed_wall
    assert nodes.cluster_of(new_holder["worker"]) == survivor

    events = api.events(job_id, on=0)
    assert events[-1]["kind"] == "end", ferry.explain(str(events[-3:]))
    end = events[-1]["data"]
    assert end["sha256"] == nodes.reference_sha256, ferry.explain("the resumed archive differs")
    for server in (0, 1):
        assert api.download_sha256(end["download_uri"], on=server) == nodes.reference_sha256
    job = api.job(job_id)
    assert job["state"] == "succeeded" and job["attempts"] == 2, ferry.explain(str(job))
    assert nodes.event_kinds(job_id)[job_id].count("end") == 1
    print(
        f"\n[killed cluster] killed {holder} at {share(at_kill):.0%}; {survivor} took over "
        f"{taken_after:.0f}s later and finished: attempts {job['attempts']}, "
        f"ticks {job['ticks']}, sha256 {end['sha256'][:16]}… == reference"
    )


def test_a_stalled_worker_changes_nothing_once_another_took_its_job(nodes):
    """SIGSTOP the cluster working on an export at ~40 % and keep it stopped past its lease
    until the other cluster has taken the job over and finished it; then SIGCONT. The
    stalled worker wakes into a world that moved on (its multipart upload completed by
    another) and must change nothing: the job stays succeeded with the reference bytes,
    with one `end` and no `error` event."""
    nodes.ready()
    api, ferry = nodes.api, nodes.ferry
    job_id, watcher = nodes.export_watched()
    at_stop = nodes.at_least(watcher, 0.4)
    holder = nodes.cluster_of(at_stop["worker"])
    (other,) = set(nodes.clusters) - {holder}
    nodes.stop_between_transactions(holder)
    try:
        new_holder = taken_over(ferry, watcher, at_stop["worker"], "the stalled worker's")
        assert nodes.cluster_of(new_holder["worker"]) == other
        assert watcher.wait(timeout=120) == 0, ferry.explain("the watcher failed")
        finished = json.loads(watcher.lines[-1])
        assert finished["state"] == "succeeded", ferry.explain(f"the new holder: {finished}")
    finally:
        os.killpg(nodes.clusters[holder].pid, signal.SIGCONT)

    # The stalled worker's tick returns (whatever it says) once it met the lost lease; a
    # duplicate delivery that found the job held or ended would say "busy".
    outcomes = wait_for(
        lambda: (
            len(done := [r for r in nodes.run_export_outcomes(job_id) if r != "busy"]) >= 2 and done
        ),
        timeout=120,
        every=1,
        what="the stalled worker's tick to return",
        explain=ferry.logs_now,
    )
    assert outcomes.count("succeeded") == 1, ferry.explain(f"ticks returned {outcomes}")
    kinds = nodes.event_kinds(job_id)[job_id]
    assert kinds.count("end") == 1 and "error" not in kinds, ferry.explain(
        f"the job's events: {kinds}"
    )
    assert kinds[-1] == "end", kinds
    for server in (0, 1):
        job = api.job(job_id, on=server)
        assert job["state"] == "succeeded", ferry.explain(f"on server {server}: {job}")
        assert job["attempts"] == 2 and job["artifact"]["sha256"] == nodes.reference_sha256, job
        link = httpx.URL(job["links"]["download"]).raw_path.decode()
        assert api.download_sha256(link, on=server) == nodes.reference_sha256
    assert nodes.clusters[holder].alive(), ferry.explain("the stalled cluster died")
    print(
        f"\n[stalled worker] stopped {holder} at {share(at_stop):.0%} "
        f"({at_stop['worker']}); {other} took over ({new_holder['worker']}) and finished; "
        f"the woken worker's tick returned {outcomes}"
    )


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def create_upload(api: Api, data: bytes, *, on: int) -> str:
    """A tus creation on server `on`; returns the upload's path."""
    sha256 = hashlib.sha256(data).hexdigest()
    response = api.request(
        "POST",
        "/api/sync/uploads/",
        on=on,
        headers={
            **TUS,
            "Upload-Length": str(len(data)),
            "Upload-Metadata": f"sha256 {b64(sha256)},content_type {b64('image/png')}",
        },
    )
    assert response.status_code == 201, response.text
    assert response.headers["Upload-Offset"] == "0"
    return httpx.URL(response.headers["Location"]).path


def patch(api: Api, path: str, offset: int, chunk: bytes, *, on: int) -> httpx.Response:
    return api.request(
        "PATCH",
        path,
        on=on,
        content=chunk,
        headers={**TUS, "Upload-Offset": str(offset), "Content-Type": OCTETS},
    )


def offsets(api: Api, path: str) -> list[int]:
    """The offset each server reports for the upload (HEAD)."""
    answers = [api.request("HEAD", path, on=server, headers=TUS) for server in (0, 1)]
    assert all(a.status_code == 200 for a in answers), [(a.status_code, a.text) for a in answers]
    return [int(a.headers["Upload-Offset"]) for a in answers]


def test_a_tus_upload_patched_on_alternate_servers_completes(nodes):
    """Created on A, then PATCHes alternating B, A, B, A, of sizes below and above an S3
    part: every server reports the true offset between them, a PATCH at a stale offset is
    refused (409) by either without moving it, and the finished blob reads back from both."""
    nodes.ready()
    api = nodes.api
    data = os.urandom(13 * MIB + 12345)
    sha256 = hashlib.sha256(data).hexdigest()
    path = create_upload(api, data, on=0)
    sizes = [5 * MIB + 1, 2 * MIB, 6 * MIB - 1]
    offset, server = 0, 1
    for size in [*sizes, len(data) - sum(sizes)]:
        assert offsets(api, path) == [offset, offset]
        response = patch(api, path, offset, data[offset : offset + size], on=server)
        assert response.status_code == 204, nodes.ferry.explain(
            f"PATCH at {offset} on server {server}: {response.status_code} {response.text[:500]}"
        )
        offset += size
        assert int(response.headers["Upload-Offset"]) == offset
        if offset < len(data):
            stale = patch(api, path, 0, data[:1024], on=1 - server)
            assert stale.status_code == 409, (stale.status_code, stale.text[:2000])
        server = 1 - server
    assert offset == len(data)
    assert offsets(api, path) == [len(data), len(data)]
    for server in (0, 1):
        blob = api.request("GET", f"/api/sync/blobs/{sha256}", on=server, follow_redirects=True)
        assert blob.status_code == 200, (server, blob.status_code)
        assert hashlib.sha256(blob.content).hexdigest() == sha256


def s3_leftovers(prefix: str) -> tuple[set[str], list[dict]]:
    """Every object key under the prefix, and every multipart upload in progress there."""
    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ["AWS_S3_ENDPOINT_URL"],
        region_name=os.environ.get("AWS_S3_REGION_NAME", "us-east-1"),
    )
    bucket = os.environ["AWS_STORAGE_BUCKET_NAME"]
    keys = {
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", [])
    }
    uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    return keys, uploads


def test_an_abandoned_upload_is_reaped_with_nothing_left_anywhere(nodes):
    """An upload with bytes staged and never finished expires (410 on both servers); the
    scheduled purge, run by whichever cluster takes it, reaps it: its row is gone (404 on
    both), and no object, multipart upload or file on any node's disk is left of it."""
    nodes.ready()
    api, ferry = nodes.api, nodes.ferry
    # Exports' multipart uploads would look like leftovers: none may be in progress now.
    wait_for(
        lambda: not s3_leftovers(nodes.s3_prefix)[1],
        timeout=60,
        what="no export in progress",
        explain=ferry.logs_now,
    )
    objects_before, _ = s3_leftovers(nodes.s3_prefix)
    disks_before = nodes.var_files()

    data = os.urandom(8 * MIB)
    path = create_upload(api, data, on=0)
    response = patch(api, path, 0, data[: 6 * MIB], on=0)
    assert response.status_code == 204, (response.status_code, response.text[:2000])
    assert offsets(api, path) == [6 * MIB, 6 * MIB]

    def expired():
        # 410 once expired; 404 if the scheduled purge (first run ~30 s after a cluster
        # starts, then every 10 minutes) reaped it already.
        answers = {
            api.request("HEAD", path, on=server, headers=TUS).status_code for server in (0, 1)
        }
        return answers <= {404, 410} and answers

    wait_for(expired, timeout=UPLOAD_TTL_SECONDS + 30, every=0.5, what="the upload to expire")
    # The scheduled task that reaps uploads, now, on whichever cluster takes it.
    purged = json.loads(
        ferry.manage(
            "shell",
            "--no-imports",
            "-c",
            RUN_PURGE.format(wait_ms=round(patience(120) * 1000)),
            timeout=150,
        )
    )
    assert purged is not None, ferry.explain("no cluster ran the purge")

    for server in (0, 1):
        assert api.request("HEAD", path, on=server, headers=TUS).status_code == 404
    upload_id = path.rstrip("/").rsplit("/", 1)[1]
    rows = ferry.manage("shell", "--no-imports", "-c", UPLOAD_ROWS.format(upload=upload_id))
    assert rows.strip() == "0", f"the upload's row is left: {rows}"
    objects_after, multipart = s3_leftovers(nodes.s3_prefix)
    assert objects_after == objects_before, objects_after ^ objects_before
    assert multipart == [], multipart
    disks_after = nodes.var_files()
    left = {node: disks_after[node] - disks_before[node] for node in disks_after}
    assert not any(left.values()), f"files left on the nodes' disks: {left}"


def test_ten_exports_created_round_robin_each_end_once(nodes):
    """Ten exports created at once, alternating servers, run on both clusters: each
    succeeds, with exactly one `end` event and no `error`, and all hold the same bytes."""
    nodes.ready()
    api, ferry = nodes.api, nodes.ferry
    job_ids = [api.create_export(nodes.small, on=n % 2) for n in range(10)]

    def all_ended():
        jobs = [api.job(job_id) for job_id in job_ids]
        return all(job["state"] not in ("queued", "running") for job in jobs) and jobs

    jobs = wait_for(
        all_ended, timeout=180, every=1, what="all ten exports to end", explain=ferry.logs_now
    )
    states = {job["id"]: job["state"] for job in jobs}
    assert set(states.values()) == {"succeeded"}, ferry.explain(str(states))
    assert len({job["artifact"]["sha256"] for job in jobs}) == 1, jobs
    kinds = nodes.event_kinds(*job_ids)
    wrong = {
        job_id: kinds.get(job_id)
        for job_id in job_ids
        if kinds.get(job_id, []).count("end") != 1 or "error" in kinds.get(job_id, [])
    }
    assert not wrong, ferry.explain(f"jobs whose events are wrong: {wrong}")
    for n, job_id in enumerate(job_ids):  # each stream, on the server it was not created on
        assert api.events(job_id, on=1 - n % 2)[-1]["kind"] == "end"
