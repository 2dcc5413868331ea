"""Mirror benchmark: `manage.py sync_follow --once` copying a seeded leader into a fresh
follower, beside two floors measured in the same run.

For each workspace (`demo`: the one `make run` seeds; `big`: 100 files of 10 pages of 300
objects and 512 MB of media), on throw-away var dirs (SQLite, filesystem storage, unless
--keep-env; DJANGO_DEBUG=0 unless --debug):
- the leader: `migrate`, `create_demo_admin`, `seed_demo ... --owner admin`,
  `drf_create_token admin`, then `uvicorn project.asgi:application --workers 1`;
- the mirror: `sync_follow --leader URL --token T --once --workers N -v0` into a fresh,
  migrated follower: wall time of the whole command, files/s, MB/s of blob bytes, peak RSS
  (wait4); then the same command again with nothing left to fetch (its fixed cost:
  start-up, the replica, one read of the feed);
- floor for files: the leader's `GET /api/sync/files/<id>` for every file, one after
  another with httpx (what the mirror reads of each file, without the blobs);
- floor for bytes: `cp -r` of the leader's blob directory to a new place.
`os.sync()` runs before each timed step. The follower is then checked: the same content
fingerprint as the leader (every file's attributes, pages, media and library links) and
every blob file hashing to its name. Everything started is stopped and removed at the end.

    python bench/mirror.py                       # both workspaces, 4 workers
    python bench/mirror.py --workspaces big --workers 8
"""

import argparse
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _harness import MB, ROOT, Ferry, free_port, memory, run, table

WORKSPACES = {
    "demo": {"files": 12, "pages": 4, "objects": 60, "media_mb": 4, "libraries": 2},
    "big": {"files": 100, "pages": 10, "objects": 300, "media_mb": 512, "libraries": 2},
}

#: One line: the number of files and a sha256 over everything a follower must copy, in a
#: fixed order (ids, revisions, names, assets, deletion state, pages, media, links).
FINGERPRINT = """
import hashlib, json
from filesync.models import File, FileLibrary, MediaObject, Page
digest = hashlib.sha256()
def add(*values):
    digest.update(json.dumps(values, sort_keys=True, default=str).encode())
for f in File.objects.order_by("id"):
    add(f.id, f.revision, f.name, f.is_library, f.assets, f.features, f.deleted_at is None)
for p in Page.objects.order_by("file_id", "index").values_list(
        "file_id", "page_id", "index", "name", "object_map"):
    add(*p)
for m in MediaObject.objects.order_by("id").values_list("id", "file_id", "sha256", "blob_id",
                                                       "name", "mtype", "width", "height"):
    add(*m)
for link in FileLibrary.objects.order_by("file_id", "library_id").values_list(
        "file_id", "library_id"):
    add(*link)
print(File.objects.count(), digest.hexdigest())
"""


def fingerprint(ferry: Ferry) -> tuple[int, str]:
    out = ferry.manage("shell", "--no-imports", "-v0", "-c", FINGERPRINT)[0].split()
    return int(out[-2]), out[-1]


def blob_files(var: Path) -> list[Path]:
    return [path for path in (var / "blobs").rglob("*") if path.is_file()]


def check_blobs(var: Path) -> int:
    """Every stored blob hashes to its name; returns how many there are."""
    paths = blob_files(var)
    for path in paths:
        digest = hashlib.sha256()
        with path.open("rb") as stored:
            while chunk := stored.read(MB):
                digest.update(chunk)
        if digest.hexdigest() != path.name:
            raise SystemExit(f"{path} does not hash to its name")
    return len(paths)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU time of the children reaped so far (harness.run reaps with wait4)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(step) -> tuple[object, float]:
    os.sync()
    started = time.perf_counter()
    result = step()
    return result, time.perf_counter() - started


class Leader:
    """A seeded Ferry served by uvicorn, with a superuser token."""

    def __init__(self, ferry: Ferry, size: dict):
        self.ferry = ferry
        ferry.manage("migrate", "--noinput", "-v0")
        ferry.manage("create_demo_admin")
        sizes = [f"--{key.replace('_', '-')}={value}" for key, value in size.items()]
        _, self.seed_seconds, _ = ferry.manage("seed_demo", *sizes, "--owner", "admin", "-v0")
        self.token = ferry.manage("drf_create_token", "admin")[0].split()[2]
        port = free_port()
        self.log = (ferry.var / "uvicorn.log").open("w")
        self.server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "project.asgi:application", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1", "--log-level", "warning"],
            cwd=ROOT, env=ferry.env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.base = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(
            base_url=self.base, headers={"Authorization": f"Token {self.token}"}, timeout=600
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.http.get("/api/")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or self.server.poll() is not None:
                    raise SystemExit("the leader's uvicorn did not start") from None
                time.sleep(0.1)

    def file_ids(self) -> list[str]:
        ids = []
        for url in ("/api/files/?deleted=true", "/api/files/"):
            while url:
                page = self.http.get(url).raise_for_status().json()
                ids += [f["id"] for f in page["results"]]
                url = page["next"]
        return ids

    def read_files(self, ids: list[str]) -> int:
        """The floor for files: each file's sync content, one after another; bytes read."""
        read = 0
        for file_id in ids:
            read += len(self.http.get(f"/api/sync/files/{file_id}").raise_for_status().content)
        return read

    def close(self) -> None:
        self.http.close()
        self.server.terminate()
        self.server.wait(timeout=30)
        self.log.close()


def measure(name: str, size: dict, args, work: Path) -> list[tuple]:
    def ferry(label: str) -> Ferry:
        made = Ferry(keep_env=args.keep_env, var_dir=str(work / f"{name}-{label}"))
        if not args.debug:
            made.env["DJANGO_DEBUG"] = "0"
        made.env.setdefault("LOG_LEVEL", "WARNING")  # not a line per HTTP request
        return made

    leader = Leader(ferry("leader"), size)
    try:
        follower = ferry("follower")
        follower.manage("migrate", "--noinput", "-v0")
        ids = leader.file_ids()
        blob_bytes = sum(path.stat().st_size for path in blob_files(leader.ferry.var))
        mb = blob_bytes / MB
        follow = ("sync_follow", "--leader", leader.base, "--token", leader.token, "--once")
        follow += ("--workers", str(args.workers), "-v0")
        os.sync()
        leader_cpu, follower_cpu = cpu_seconds(leader.server.pid), children_cpu()
        _, mirror_s, mirror_rss = follower.manage(*follow)
        leader_cpu = cpu_seconds(leader.server.pid) - leader_cpu
        follower_cpu = children_cpu() - follower_cpu
        leader_rss = memory(leader.server.pid)["VmHWM"]
        os.sync()
        _, again_s, _ = follower.manage(*follow)
        content_bytes, files_s = timed(lambda: leader.read_files(ids))
        copy = work / f"{name}-copy"
        os.sync()
        _, copy_s, _ = run(["cp", "-r", str(leader.ferry.var / "blobs"), str(copy)])
        if fingerprint(follower) != fingerprint(leader.ferry):
            raise SystemExit(f"{name}: the follower's content differs from the leader's")
        blobs = check_blobs(follower.var)
        if blobs != len(blob_files(leader.ferry.var)):
            raise SystemExit(f"{name}: {blobs} blobs here, not as many as the leader")
    finally:
        leader.close()
    n = len(ids)
    print(
        f"{name}: {n} files, {blobs} blobs, {mb:.1f} MB of blobs, "
        f"{content_bytes / MB:.1f} MB of file content (JSON lines); seeded in "
        f"{leader.seed_seconds:.1f} s; during the mirror, CPU: sync_follow {follower_cpu:.1f} s, "
        f"leader uvicorn {leader_cpu:.1f} s (wall {mirror_s:.1f} s); leader VmHWM after it "
        f"{leader_rss:.1f} MB; "
        "follower's content fingerprint and every blob's sha256 checked",
        file=sys.stderr,
    )
    net = mirror_s - again_s
    return [
        (name, f"sync_follow --once --workers {args.workers} (command)", f"{mirror_s:.2f}",
         f"{n / mirror_s:.1f}", f"{mb / mirror_s:.0f}", f"{mirror_rss / MB:.0f} MB",
         f"{files_s / mirror_s:.2f}x",
         f"{copy_s / mirror_s:.3f}x"),
        ("", "  minus the same command with nothing to do", f"{net:.2f}", f"{n / net:.1f}",
         f"{mb / net:.0f}", "", f"{files_s / net:.2f}x",
         f"{copy_s / net:.3f}x"),
        ("", "  the same command, nothing to do", f"{again_s:.2f}", "", "", "", "", ""),
        ("", "floor: GET /api/sync/files/<id>, sequential", f"{files_s:.2f}",
         f"{n / files_s:.1f}", "", "", "1.00x", ""),
        ("", "floor: cp -r of the blob directory", f"{copy_s:.2f}", "", f"{mb / copy_s:.0f}",
         "", "", "1.000x"),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspaces", default="demo,big", help="Of: " + ", ".join(WORKSPACES))
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--keep-env", action="store_true", help="Use DATABASE_URL etc. as set.")
    parser.add_argument("--debug", action="store_true", help="Keep DJANGO_DEBUG as set.")
    args = parser.parse_args()
    names = args.workspaces.split(",")
    if unknown := set(names) - set(WORKSPACES):
        parser.error(f"unknown workspaces: {', '.join(sorted(unknown))}")
    work = Path(tempfile.mkdtemp(prefix="ferry-bench-mirror-"))
    rows = [("workspace", "what", "seconds", "files/s", "MB/s", "peak RSS", "vs floor (files/s)",
             "vs floor (MB/s)")]  # fmt: skip
    try:
        for name in names:
            rows += measure(name, WORKSPACES[name], args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(rows))


if __name__ == "__main__":
    main()
