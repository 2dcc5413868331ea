"""The follower mirror against a real leader: two Ferrys, two databases, two storages.

* LEADER: `uvicorn project.asgi` on a FERRY_VAR_DIR of its own (SQLite, filesystem
  storages), or in services mode on a PostgreSQL database made here (dropped at the end)
  and a FERRY_S3_PREFIX of its own in the session's bucket. Seeded once for the module;
  the tests add to it, so each compares against whatever the leader holds by then and
  none depends on what ran before it.
* FOLLOWER: this test's database and storages (`live_env`); `manage.py sync_follow` runs
  as a subprocess on them, as `asgi_server` runs uvicorn.

The leader is read over HTTP (`GET /api/sync/files/<id>` for every file it lists, live and
trash); the follower from its database through the same selector (`file_content`), and
every blob it holds is hashed from its storage.
"""

import hashlib
import io
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import httpx
import orjson
import pytest

from filesync import blobstore
from filesync.follower.models import Download, DownloadState, Leader
from filesync.models import File, MediaObject
from filesync.selectors import get_file
from filesync.sync.selectors import file_content
from tests.conftest import ROOT, SERVICES, scratch_database, serve_asgi
from tests.waiting import patience, stop_process, wait_exit, wait_for

pytestmark = pytest.mark.live

MIB = 1024 * 1024
SEED = ("--files", "12", "--pages", "3", "--objects", "40", "--media-mb", "8", "--libraries", "2")
#: The bound on a `sync_follow` stop (SIGINT or SIGTERM), whatever it was doing: its
#: workers get 5 s to give their downloads back, and the process must start and end.
STOP_BOUND = 20
#: Variables that must not leak from the shell into the leader.
NOT_INHERITED = ("DATABASE_URL", "FERRY_", "FOLLOWER_", "DJANGO_SECRET_KEY")
BLOB_PATH = re.compile(r"[0-9a-f]{64}")


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").replace("\r", "\n")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def manage(env: dict, *args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=patience(timeout),
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def spawn(args: list[str], env: dict, log: Path, **options) -> subprocess.Popen:
    """A child in a process group of its own (so a kill takes all of it), logging to `log`."""
    with log.open("a") as out:
        return subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, **options,
        )  # fmt: skip


def kill(process: subprocess.Popen) -> None:
    """SIGKILL, as a crash or an OOM killer would: no cleanup at all."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    wait_exit(process, timeout=30, what="a killed process")


# The leader ------------------------------------------------------------------------------

#: Unlinks a library from a file, one `file_id library_id` line at a time: there is no API
#: call for it (only the admin), and a shell per unlink would take a second to start.
UNLINKER = """
import sys
from filesync import services
from filesync.models import File
print("ready", flush=True)
for line in sys.stdin:
    file_id, library_id = line.split()
    file, library = File.objects.get(pk=file_id), File.objects.get(pk=library_id)
    services.unlink_library(file=file, library=library)
    print("ok", flush=True)
"""


class LeaderFerry:
    def __init__(self, env: dict, var: Path, base: str, token: str, project: str):
        self.env, self.var, self.base, self.token, self.project = env, var, base, token, project
        self.http = httpx.Client(
            base_url=base, headers={"Authorization": f"Token {token}"}, timeout=60
        )
        self._unlinker: subprocess.Popen | None = None

    def files(self) -> dict[str, dict]:
        """Every file the leader lists (live and trash), by id, as its API shows it."""
        found = {}
        for query in ("?deleted=true", ""):
            url = f"/api/files/{query}"
            while url:
                page = self.http.get(url).raise_for_status().json()
                found.update({f["id"]: f for f in page["results"]})
                url = page["next"]
        return found

    def content(self, file_id: str) -> list[dict]:
        answer = self.http.get(f"/api/sync/files/{file_id}").raise_for_status()
        return [orjson.loads(line) for line in answer.content.splitlines() if line]

    def feed_end(self) -> int:
        since = 0
        while (
            changes := self.http.get("/api/sync/changes", params={"since": since, "limit": 1000})
            .raise_for_status()
            .json()["changes"]
        ):
            since = changes[-1]["seq"]
        return since

    def create_file(self, name: str) -> str:
        answer = self.http.post("/api/files/", json={"project": self.project, "name": name})
        return answer.raise_for_status().json()["id"]

    def upload(self, file_id: str, name: str, stream) -> dict:
        answer = self.http.post(
            f"/api/files/{file_id}/media/", files={"upload": (name, stream, "image/png")}
        )
        return answer.raise_for_status().json()

    def unlink(self, file_id: str, library_id: str) -> None:
        if self._unlinker is None:
            self._unlinker = subprocess.Popen(
                [sys.executable, "manage.py", "shell", "--no-imports", "-c", UNLINKER],
                cwd=ROOT, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True, bufsize=1, start_new_session=True,
            )  # fmt: skip
            assert self._unlinker.stdout.readline().strip() == "ready"
        self._unlinker.stdin.write(f"{file_id} {library_id}\n")
        assert self._unlinker.stdout.readline().strip() == "ok"

    def close(self) -> None:
        if self._unlinker is not None:
            stop_process(self._unlinker)
        self.http.close()


@contextmanager
def serving_leader(var: Path, seed: tuple[str, ...]) -> Iterator[LeaderFerry]:
    """A leader Ferry seeded with `seed_demo` `seed`, served by uvicorn, with a superuser
    token: on its own PostgreSQL database in services mode, else SQLite in `var`."""
    with scratch_database("ferry_leader") as database:
        env = {k: v for k, v in os.environ.items() if not k.startswith(NOT_INHERITED)}
        # A Ferry of its own: its own key, as another deployment would have.
        env.update(
            FERRY_VAR_DIR=str(var),
            PYTHONUNBUFFERED="1",
            DJANGO_SECRET_KEY=f"leader-{secrets.token_urlsafe(40)}",
        )
        if SERVICES:
            env.update(DATABASE_URL=database, FERRY_S3_PREFIX=f"leader-{uuid.uuid4().hex}/")
        manage(env, "migrate", "--noinput", "-v0")
        manage(env, "create_demo_admin")
        project = manage(env, "seed_demo", *seed, "--owner", "admin", "-v0").split()[-1]
        token = manage(env, "drf_create_token", "admin").split()[2]
        server, base = serve_asgi(env, var / "uvicorn.log")
        ferry = LeaderFerry(env, var, base, token, project)
        try:
            yield ferry
        finally:
            ferry.close()
            stop_process(server)


@pytest.fixture(scope="module")
def leader(tmp_path_factory, s3_server):
    """A seeded leader Ferry for the module."""
    with serving_leader(tmp_path_factory.mktemp("leader"), SEED) as ferry:
        yield ferry


# A proxy between follower and leader ----------------------------------------------------


class Proxy:
    """Forwards to the leader and, on S3, to the presigned URLs it redirects blob reads to
    (their Location is rewritten to come through here, under /__s3__). Blob bodies (a
    GET whose path holds a sha256) can be slowed to `rate` bytes/s, or with `stall` never
    sent (the headers are; the body waits for the proxy to close); with `flip` the first
    body served for each blob has one byte flipped (its length kept). Paths matching
    `refuse` are answered 503 with a Retry-After longer than any test. With `tear` (a file
    id), the first read of that file is torn: its records up to the end come from one
    read, then the file is renamed on the leader, and its end record from a second read,
    as a leader whose file changed underway answers."""

    HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host",
           "content-length", "accept-encoding", "proxy-connection"}  # fmt: skip

    def __init__(
        self,
        upstream: str,
        *,
        flip: bool = False,
        rate: float | None = None,
        stall: bool = False,
        refuse: re.Pattern | None = None,
        tear: str | None = None,
    ):
        self.upstream, self.flip, self.rate, self.stall = upstream, flip, rate, stall
        self.refuse, self.tear = refuse, tear
        self.s3 = os.environ.get("AWS_S3_ENDPOINT_URL", "").rstrip("/") if SERVICES else ""
        self.http = httpx.Client(timeout=120)
        self.bodies: Counter[str] = Counter()  # blob → bodies served
        self.starts: dict[str, list[int]] = {}  # blob → the first byte of each ranged GET
        self.refused: Counter[str] = Counter()  # path → 503s answered
        self.stalled: Counter[str] = Counter()  # blob → bodies held back
        self.torn: list[tuple[int, int]] = []  # (first, end) revisions of the torn answer
        self.flipped: set[str] = set()
        self.lock = threading.Lock()
        self.closing = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                proxy.forward(self)

            do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def forward(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in self.HOP}
        headers["Accept-Encoding"] = "identity"
        path = handler.path.split("?")[0]
        blob = BLOB_PATH.search(path)
        ranged = re.fullmatch(r"bytes=(\d+)-\d*", handler.headers.get("Range", ""))
        if blob is not None and handler.command == "GET" and ranged:
            with self.lock:
                self.starts.setdefault(blob.group(), []).append(int(ranged.group(1)))
        if self.refuse is not None and self.refuse.search(path):
            with self.lock:
                self.refused[path] += 1
            self._refuse(handler)
            return
        if handler.path.startswith("/__s3__/"):
            url = self.s3 + handler.path.removeprefix("/__s3__")
            headers["Host"] = urlparse(self.s3).netloc  # presigned URLs sign the host
        else:
            url = self.upstream + handler.path
        answer = self.http.request(handler.command, url, content=body, headers=headers)
        content = bytearray(answer.content)
        if self.tear and path == f"/api/sync/files/{self.tear}" and not self.torn:
            content = self._torn(content, url, headers)
        is_blob_body = (
            blob is not None and handler.command == "GET" and answer.status_code in (200, 206)
        )
        if is_blob_body and content:
            with self.lock:
                sha256 = blob.group()
                self.bodies[sha256] += 1
                if self.flip and sha256 not in self.flipped:
                    self.flipped.add(sha256)
                    content[len(content) // 2] ^= 0xFF
                if self.stall:
                    self.stalled[sha256] += 1
        handler.send_response(answer.status_code)
        for key, value in answer.headers.multi_items():
            if key.lower() in self.HOP or key.lower() == "content-encoding":
                continue
            if key.lower() == "location" and self.s3 and value.startswith(self.s3):
                value = self.base + "/__s3__" + value.removeprefix(self.s3)
            handler.send_header(key, value)
        if handler.command == "HEAD":
            handler.send_header("Content-Length", answer.headers.get("Content-Length", "0"))
            handler.end_headers()
            return
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        try:
            if is_blob_body and self.stall:
                handler.wfile.flush()
                self.closing.wait()
                return
            self._write(handler, bytes(content), slow=is_blob_body and self.rate)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the follower was killed

    def _refuse(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(503)
        handler.send_header("Retry-After", "3600")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def _torn(self, content: bytearray, url: str, headers: dict) -> bytearray:
        """The file's records but the end from this read; the end after a rename."""
        records = bytes(content).splitlines()
        authorization = {"Authorization": headers["Authorization"]}
        self.http.patch(
            f"{self.upstream}/api/files/{self.tear}/",
            json={"name": f"Renamed while read {uuid.uuid4().hex[:6]}"},
            headers=authorization,
        ).raise_for_status()
        again = self.http.get(url, headers=headers).raise_for_status().content.splitlines()
        first = orjson.loads(records[0])["file"]["revision"]
        end = orjson.loads(again[-1])["end"]["revision"]
        self.torn.append((first, end))
        return bytearray(b"\n".join([*records[:-1], again[-1]]) + b"\n")

    def _write(self, handler, content: bytes, *, slow) -> None:
        if not slow:
            handler.wfile.write(content)
            return
        started, step = time.monotonic(), 64 * 1024
        for offset in range(0, len(content), step):
            handler.wfile.write(content[offset : offset + step])
            ahead = (offset + step) / self.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()
        self.http.close()


@pytest.fixture
def proxy_to(leader):
    made = []

    def make(**options) -> Proxy:
        made.append(Proxy(leader.base, **options))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


# The follower ----------------------------------------------------------------------------


class Follower:
    """`manage.py sync_follow` processes on this test's database and storages."""

    def __init__(self, env: dict, logs: Path, leader: LeaderFerry):
        self.env, self.logs, self.leader = env, logs, leader
        self.runs: list[subprocess.Popen] = []

    def start(
        self, *options: str, url: str | None = None, sigint_ignored: bool = False, **knobs
    ) -> subprocess.Popen:
        """A run in the background; `sigint_ignored` starts it as a shell starts a background
        job, with SIGINT ignored. `knobs` are settings passed in its environment."""
        args = [sys.executable, "manage.py", "sync_follow", "--leader", url or self.leader.base]
        args += ["--token", self.leader.token, "--workers", "4", "--name", "e2e", *options]
        log = self.logs / f"sync_follow-{len(self.runs)}.log"
        env = {**self.env, **{k: str(v) for k, v in knobs.items()}}
        ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
        self.runs.append(spawn(args, env, log, preexec_fn=ignore))
        return self.runs[-1]

    def once(self, *, timeout: float = 120, **options) -> None:
        """A `--once` run to its end (the bound is for a hang, not a measure of the work)."""
        run = self.start("--once", **options)
        try:
            code = run.wait(timeout=patience(timeout))
        except subprocess.TimeoutExpired:
            stop_process(run)
            raise AssertionError(
                f"--once ran over {patience(timeout):.0f}s\n{self.explain()}"
            ) from None
        assert code == 0, self.explain()

    def stop(self, run: subprocess.Popen, signum: int = signal.SIGTERM) -> float:
        """Signal one run to stop; assert it exits 0 within STOP_BOUND, saying it stopped
        and with no traceback."""
        run.send_signal(signum)
        try:
            code = wait_exit(run, timeout=STOP_BOUND, what="sync_follow after a stop signal")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.explain()}") from None
        log = self.log(run)
        assert code == 0, self.explain()
        assert f"sync_follow stopped by {signal.Signals(signum).name}." in log, self.explain()
        assert "Traceback" not in log, self.explain()

    def log(self, run: subprocess.Popen) -> str:
        return (self.logs / f"sync_follow-{self.runs.index(run)}.log").read_text(errors="replace")

    def explain(self) -> str:
        return "\n".join(
            f"===== sync_follow-{n} (exit {run.poll()}) =====\n"
            f"{log_tail(self.logs / f'sync_follow-{n}.log')}"
            for n, run in enumerate(self.runs)
        )

    def close(self) -> None:
        for run in self.runs:
            stop_process(run)


@pytest.fixture
def follower(live_env, leader, tmp_path):
    env = {**live_env, "PYTHONUNBUFFERED": "1"}
    for name in [k for k in env if k.startswith("FOLLOWER_")]:
        del env[name]
    runs = Follower(env, tmp_path, leader)
    yield runs
    runs.close()


# Comparison ------------------------------------------------------------------------------


def normalised(records: list[dict]) -> dict:
    """A file's records with the deletion times reduced to the deletion state: a follower
    moves a file to its trash at its own time when the leader's feed says so."""
    records = orjson.loads(orjson.dumps(records))
    file = records[0]["file"]
    file["deleted"] = file.pop("deleted_at") is not None
    file["purge_after"] = file["purge_after"] is not None
    return {
        "file": file,
        "pages": [r["page"] for r in records if "page" in r],
        "media": [r["media"] for r in records if "media" in r],
        "end": records[-1]["end"],
    }


def differences(ours: dict, theirs: dict) -> str:
    """What differs between two normalised files, field by field, for assertion messages."""
    lines = [
        f"file.{key}: here {ours['file'].get(key)!r}, leader {theirs['file'].get(key)!r}"
        for key in sorted(set(ours["file"]) | set(theirs["file"]))
        if ours["file"].get(key) != theirs["file"].get(key)
    ]
    lines += [f"{part} differ" for part in ("pages", "media", "end") if ours[part] != theirs[part]]
    return f"{ours['file']['id']}: " + "; ".join(lines)


def assert_mirrored(leader: LeaderFerry) -> dict:
    """The follower holds every live file of the leader as the leader has it (attributes,
    pages, media, library links); a file in the leader's trash is in the follower's trash
    or absent, never live; every blob the follower's media use is stored and hashes to
    its name.

    A trashed copy may be older than the leader's: a deletion cancels the file's pending
    download (a link made just before it, which keeps the revision, included); restoring
    the file fetches it again."""
    listed = leader.files()
    theirs = {file_id: normalised(leader.content(file_id)) for file_id in listed}
    ours = {
        str(pk): normalised(list(file_content(get_file(pk, include_deleted=True))))
        for pk in File.objects.values_list("pk", flat=True)
    }
    live = {file_id for file_id, state in theirs.items() if not state["file"]["deleted"]}
    assert live <= set(ours), f"live on the leader, missing here: {live - set(ours)}"
    assert set(ours) <= set(theirs), f"unknown to the leader: {set(ours) - set(theirs)}"
    for file_id in sorted(live):
        assert ours[file_id] == theirs[file_id], differences(ours[file_id], theirs[file_id])
    for file_id in sorted(set(theirs) & set(ours) - live):
        assert ours[file_id]["file"]["deleted"], f"{file_id} is deleted there, live here"
    ready = set(MediaObject.objects.filter(blob__isnull=False).values_list("blob_id", flat=True))
    wanted = {m["sha256"] for f in live for m in theirs[f]["media"] if m["ready"]}
    assert wanted <= ready
    for sha256 in ready:
        assert stored_sha256(sha256) == sha256
    return {"files": len(ours), "live": len(live), "blobs": len(ready)}


def stored_sha256(sha256: str) -> str:
    digest = hashlib.sha256()
    with blobstore.open_blob(sha256) as stored:
        while chunk := stored.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def leader_row() -> Leader:
    return Leader.objects.get()


# The tests -------------------------------------------------------------------------------


def test_a_seeded_leader_is_mirrored_whole(leader, follower):
    follower.once()
    counts = assert_mirrored(leader)
    assert counts["live"] and counts["blobs"], counts  # the seed is there, whatever ran since
    assert set(Download.objects.values_list("state", flat=True)) == {DownloadState.DONE}
    assert leader_row().acked_seq == leader.feed_end()


def test_edits_deletes_and_restores_while_following_end_equal(leader, follower):
    rng = random.Random(20240611)
    files = leader.files()
    libraries = sorted(f["id"] for f in files.values() if f["is_library"])
    live = sorted(f["id"] for f in files.values() if f["deleted_at"] is None)
    trash = sorted(set(files) - set(live))
    running = follower.start(FOLLOWER_RETRY_SECONDS=0.2)
    # Changes start once the follower holds the leader as it is, and keep coming for a while.
    start = leader.feed_end()
    wait_for(
        lambda: Leader.objects.filter(acked_seq__gte=start).exists(),
        timeout=120,
        what="the initial mirror",
        explain=follower.explain,
    )
    done, deleted = Counter(), set()

    def ident() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    for n in range(90):
        assert running.poll() is None, follower.explain()
        op = rng.choices(
            ["rename", "assets", "page", "media", "link", "unlink", "delete", "restore", "create"],
            weights=[5, 3, 4, 3, 2, 2, 3, 3, 1],
        )[0]
        if op == "restore" and not trash or op not in ("restore", "create") and not live:
            continue
        file_id, answer = rng.choice(trash if op == "restore" else live), None
        if op == "rename":
            answer = leader.http.patch(f"/api/files/{file_id}/", json={"name": f"Renamed {n}"})
        elif op == "assets":
            colour = {"name": f"Colour {n}", "color": f"#{rng.getrandbits(24):06x}"}
            answer = leader.http.patch(
                f"/api/files/{file_id}/", json={"assets": {"colors": {ident(): colour}}}
            )
        elif op == "page":
            objects = {ident(): {"type": "rect", "x": rng.randint(0, 99)} for _ in range(5)}
            answer = leader.http.post(
                f"/api/files/{file_id}/pages/", json={"name": f"P{n}", "objects": objects}
            )
        elif op == "media":
            leader.upload(file_id, f"m{n}.png", io.BytesIO(rng.randbytes(rng.randint(1, 300_000))))
        elif op == "link":
            library = rng.choice(libraries)
            if library == file_id:
                continue
            answer = leader.http.post(f"/api/files/{file_id}/libraries/", json={"library": library})
        elif op == "unlink":
            linked = leader.http.get(f"/api/files/{file_id}/libraries/").json()
            if not linked:
                continue
            leader.unlink(file_id, rng.choice(linked)["library"])
        elif op == "delete":
            answer = leader.http.delete(f"/api/files/{file_id}/")
            live.remove(file_id)
            trash.append(file_id)
            deleted.add(file_id)
        elif op == "restore":
            answer = leader.http.post(f"/api/files/{file_id}/restore/")
            trash.remove(file_id)
            live.append(file_id)
        elif op == "create":
            live.append(leader.create_file(f"New {n}"))
        if answer is not None:
            answer.raise_for_status()
        done[op] += 1
        time.sleep(rng.uniform(0, 0.08))
    assert done["delete"] and done["restore"] and done["unlink"], done
    # Caught up: the running follower acknowledges the whole feed (it acks after each long
    # poll of up to 10 s), then stops on Ctrl-C within the bound; a --once run finds
    # nothing left.
    end = leader.feed_end()
    wait_for(
        lambda: leader_row().acked_seq >= end,
        timeout=120,
        what=f"acked_seq {end}",
        explain=follower.explain,
    )
    follower.stop(running, signal.SIGINT)
    follower.once()
    assert leader_row().acked_seq == end
    assert_mirrored(leader)
    still_deleted = [f for f in deleted if f in trash]
    assert still_deleted
    assert not File.objects.filter(pk__in=still_deleted, deleted_at__isnull=True).exists()
    assert not Download.objects.exclude(state__in=["done", "cancelled"]).exists()


def test_a_follower_killed_mid_download_loses_nothing(leader, follower, proxy_to, tmp_path):
    big = leader.create_file("Big media")
    payload = tmp_path / "big.png"
    payload.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(60 * MIB))
    with payload.open("rb") as stream:
        sha256 = leader.upload(big, "big.png", stream)["blob"]["sha256"]
    payload.unlink()
    # Slowed by the proxy, the blob takes several ranged pieces: the kill lands mid-blob.
    # The lease is long enough that no stall of the loaded machine loses it to another
    # worker of the same run, and short enough that the next run takes the row over soon.
    proxy = proxy_to(rate=15 * MIB)
    knobs = {"FOLLOWER_LEASE_SECONDS": patience(10), "FOLLOWER_RETRY_SECONDS": 0.2}
    first = follower.start(url=proxy.base, **knobs)
    partial = Path(follower.env["FERRY_VAR_DIR"]) / "tmp"

    def underway():
        row = Download.objects.filter(file_id=big, state=DownloadState.DOWNLOADING).first()
        parts = [p.stat().st_size for p in partial.glob(f"follower/*/{sha256}.part")]
        return row if row and any(parts) else None

    wait_for(underway, timeout=120, what="the big blob to be partly held", explain=follower.explain)
    kill(first)
    row = Download.objects.get(file_id=big)
    assert row.state == DownloadState.DOWNLOADING  # the claim the dead worker held
    assert not MediaObject.objects.filter(file_id=big).exists()
    killed_at, asked_before = row.attempts, len(proxy.starts[sha256])
    follower.once(url=proxy.base, **knobs)  # takes the row over once its lease runs out
    row.refresh_from_db()
    assert row.state == DownloadState.DONE, follower.explain()
    assert row.attempts > killed_at, follower.explain()
    resumed = proxy.starts[sha256][asked_before:]
    assert resumed and 0 not in resumed, f"the partial blob was not resumed: {resumed}"
    assert not list(partial.glob("follower/*/*")), "the resumed partial blob was left behind"
    assert stored_sha256(sha256) == sha256
    assert_mirrored(leader)
    assert leader_row().acked_seq == leader.feed_end()


def test_a_blob_damaged_in_transit_is_refused_and_fetched_again(leader, follower, proxy_to):
    proxy = proxy_to(flip=True)
    follower.once(url=proxy.base, FOLLOWER_RETRY_SECONDS=0.2, FOLLOWER_MAX_ATTEMPTS=30)
    counts = assert_mirrored(leader)
    stored = set(MediaObject.objects.filter(blob__isnull=False).values_list("blob_id", flat=True))
    assert stored and proxy.flipped == stored, counts
    assert all(proxy.bodies[sha256] >= 2 for sha256 in proxy.flipped), proxy.bodies
    assert Download.objects.filter(attempts__gte=2).exists()
    assert set(Download.objects.values_list("state", flat=True)) <= {"done", "cancelled"}
