"""Sync throughput: a blob up and down through the real ASGI server, against the floor and
against a peer (git-annex's p2phttp), all in one run and all on 127.0.0.1.

Ferry runs on the embedded default (SQLite, filesystem storage) under
`uvicorn project.asgi:application --workers 1` (its own process, so its pid is the one
whose /proc/<pid>/status we read). Measured, for one --mb MiB file of random bytes:

- upload, verified by the server: a plain `PUT /api/sync/blobs/<sha256>` (httpx streams
  the open file, Content-Length set; the client's sha256 is computed before the clock
  starts, as git-annex's key is computed at `git annex add`), and tus through
  `filesync.client.SyncClient.upload` (8 MiB chunks, per-chunk sha256; its own whole-file
  hash is inside its time);
- download: `GET /api/sync/blobs/<sha256>` streamed to a file (its sha256 checked after
  the clock stops, and timed on its own), and `SyncClient.download` (8 MiB ranges,
  verified);
- the server's VmHWM / VmRSS from /proc/<pid>/status, idle and after each step;
- the floor: `cat src > dst`;
- the peer: the `git-annex` wheel installed with pip into a temporary directory (never the
  project's venv), `git annex p2phttp --wideopen` serving a repository on a loopback port,
  a clone whose `remote.origin.annexUrl` is that server; timed `git annex copy --to origin`
  (upload; the receiver checks the key's hash) and, after `git annex drop`, `git annex get
  --from origin` (download; verified). If it cannot be installed or run, the peer is
  reported as not measured, with the reason.

Both servers run side by side and the steps are interleaved in --rounds rounds (default 5;
between rounds the blob is removed again on both sides); the table gives each step's
median and its range; the memory readings are those after each step's first round, and at
the end. Before every timed step the dirty page cache is written back (`os.sync()`), so
that no step pays for an earlier step's writes. Every process and directory the script
makes is removed when it ends.

    .venv/bin/python bench/sync.py --mb 200
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx
from _harness import MB, ROOT, Ferry, free_port, memory, run, table, write_payload

sys.path.insert(0, str(ROOT))
from filesync.client import SyncClient  # noqa: E402  (needs ROOT on sys.path)

PYTHON = sys.executable
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
GOAL = "goal: upload (verified) >= 2x peer MB/s, download >= 1.2x peer MB/s"


class PeerUnavailable(Exception):
    pass


def wait_for_port(port: int, process: subprocess.Popen, log: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:3]} exited early:\n{log.read_text()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {seconds} s")


def start(command, *, cwd, env, log: Path) -> subprocess.Popen:
    """A server in its own session (so that stop() can end it and its children)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=out, start_new_session=True
        )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(MB):
            digest.update(chunk)
    return digest.hexdigest()


def settle() -> None:
    """Write back dirty pages before a timed step, so that no step pays for an earlier one's
    writes (every step leaves hundreds of MB dirty; an fsync then waits for them too)."""
    os.sync()


def timed(function, *args, **kwargs) -> tuple[object, float]:
    settle()
    start_time = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start_time


# Ferry ----------------------------------------------------------------------------------


def put_blob(client: httpx.Client, path: Path, sha256: str) -> None:
    size = path.stat().st_size
    with path.open("rb") as body:
        answer = client.put(
            f"/api/sync/blobs/{sha256}",
            content=body,
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
        )
    if answer.status_code != 201:
        raise RuntimeError(f"PUT answered {answer.status_code}: {answer.text[:300]}")


def get_blob(client: httpx.Client, sha256: str, target: Path) -> None:
    with client.stream("GET", f"/api/sync/blobs/{sha256}") as answer, target.open("wb") as out:
        if answer.status_code != 200:
            raise RuntimeError(f"GET answered {answer.status_code}")
        for chunk in answer.iter_raw(MB):
            out.write(chunk)


class FerrySide:
    def __init__(self, work: Path, stack: contextlib.ExitStack):
        self.work = work
        ferry = Ferry(var_dir=str(work / "var"))
        stack.callback(ferry.remove)
        ferry.manage("migrate", "--noinput", "-v0")
        ferry.manage(
            "shell",
            "-v0",
            "-c",
            "from django.contrib.auth.models import User; User.objects.create_user('bench')",
        )
        token = re.search(r"Generated token (\w+)", ferry.manage("drf_create_token", "bench")[0])
        port = free_port()
        command = [
            PYTHON, "-m", "uvicorn", "project.asgi:application",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--log-level", "warning",
        ]  # fmt: skip
        log = work / "uvicorn.log"
        self.server = start(command, cwd=ROOT, env=ferry.env, log=log)
        stack.callback(stop, self.server)
        wait_for_port(port, self.server, log)
        base = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(
            base_url=base,
            headers={"Authorization": f"Token {token.group(1)}"},
            timeout=600,
            trust_env=False,
        )
        stack.callback(self.client.close)
        self.sync = SyncClient(base, token.group(1))
        self.sync.http.timeout = httpx.Timeout(600, connect=10)
        stack.callback(self.sync.close)

        warm = work / "warm.bin"
        warm_sha = write_payload(warm, 1)
        put_blob(self.client, warm, warm_sha)
        get_blob(self.client, warm_sha, work / "warm.out")
        self.rss = {"idle": memory(self.server.pid)}

    def round(self, payload: Path, sha256: str, times: dict[str, list]) -> None:
        sync, client, pid = self.sync, self.client, self.server.pid
        # The blob is stored from the previous step or round: remove it (nothing uses it;
        # `before` is the server's clock plus a margin) so that the upload sends the bytes.
        if client.head(f"/api/sync/blobs/{sha256}").status_code == 200:
            sync.remove(sha256)
        times["put"].append(timed(put_blob, client, payload, sha256)[1])
        self.rss.setdefault("after PUT", memory(pid))

        sync.remove(sha256)
        stored, seconds = timed(sync.upload, payload)
        if stored != sha256:
            raise RuntimeError(f"tus stored {stored}, not {sha256}")
        times["tus"].append(seconds)
        self.rss.setdefault("after tus", memory(pid))

        target = self.work / "get.out"
        times["get"].append(timed(get_blob, client, sha256, target)[1])
        self.rss.setdefault("after GET", memory(pid))
        got, seconds = timed(sha256_of, target)
        if got != sha256:
            raise RuntimeError(f"GET gave bytes hashing to {got}, not {sha256}")
        times["get verify"].append(seconds)
        target.unlink()

        times["ranged"].append(timed(sync.download, sha256, target)[1])
        self.rss.setdefault("after SyncClient.download", memory(pid))
        target.unlink()


# The peer: git-annex p2phttp ------------------------------------------------------------


def git(env, cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    if done.returncode:
        raise PeerUnavailable(f"git {' '.join(args)} failed: {(done.stderr or done.stdout)[-300:]}")
    return done.stdout


def install_git_annex(work: Path) -> Path:
    """The git-annex wheel into a throw-away directory; a bin/ of the names git looks for
    (one binary that acts on the name it is called by)."""
    target = work / "pkg"
    try:
        done = subprocess.run(
            [PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--target", str(target), "git-annex"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise PeerUnavailable("pip install git-annex timed out") from None
    binary = target / "git_annex" / "git-annex"
    if done.returncode or not binary.exists():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise PeerUnavailable(f"pip install git-annex failed: {last}")
    binary.chmod(0o755)
    bin_dir = work / "bin"
    bin_dir.mkdir()
    for name in ("git-annex", "git-annex-shell", "git-remote-annex"):
        (bin_dir / name).symlink_to(binary)
    return bin_dir


class PeerSide:
    def __init__(self, work: Path, payload: Path, sha256: str, stack: contextlib.ExitStack):
        bin_dir = install_git_annex(work)
        home = work / "home"
        home.mkdir()
        (home / ".gitconfig").write_text(
            "[user]\n\tname = bench\n\temail = bench@localhost\n[init]\n\tdefaultBranch = main\n"
        )
        # Loopback only: no proxy variables reach git-annex's HTTP client.
        env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
        env.update(
            PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            HOME=str(home),
            GIT_CONFIG_GLOBAL=str(home / ".gitconfig"),
            GIT_CONFIG_NOSYSTEM="1",
            MAGIC=str(work / "pkg" / "git_annex" / "magic.mgc"),
        )
        self.env = env
        self.version = git(env, work, "annex", "version", "--raw").strip().split("-g")[0]
        self.served, self.clone = work / "served", work / "clone"
        git(env, work, "init", "-q", str(self.served))
        git(env, self.served, "annex", "init", "served")
        git(env, self.served, "commit", "-q", "--allow-empty", "-m", "init")
        git(env, work, "clone", "-q", str(self.served), str(self.clone))
        git(env, self.clone, "annex", "init", "clone")
        port = free_port()
        annex_url = f"annex+http://127.0.0.1:{port}/git-annex/"
        git(env, self.clone, "config", "remote.origin.annexUrl", annex_url)
        git(env, self.clone, "config", "annex.security.allowed-ip-addresses", "127.0.0.1")
        shutil.copyfile(payload, self.clone / "payload.bin")
        git(env, self.clone, "annex", "add", "payload.bin")  # hashes it: the key, untimed
        git(env, self.clone, "commit", "-q", "-m", "payload")
        self.key = git(env, self.clone, "annex", "lookupkey", "payload.bin").strip()
        if sha256 not in self.key:
            raise PeerUnavailable(f"git-annex key {self.key} does not carry the sha256")
        self.size = payload.stat().st_size

        log = work / "p2phttp.log"
        command = ["git-annex", "p2phttp", "--bind", "127.0.0.1", "--port", str(port),
                   "--wideopen", "--jobs", "2"]  # fmt: skip
        self.server = start(command, cwd=self.served, env=env, log=log)
        stack.callback(stop, self.server)
        try:
            wait_for_port(port, self.server, log)
        except RuntimeError as error:
            raise PeerUnavailable(f"git annex p2phttp did not serve: {error}") from None
        self.rss = {"idle": memory(self.server.pid)}

    def annex(self, *args: str) -> float:
        """Wall seconds of one git-annex command in the clone (harness.run: a child, wait4)."""
        settle()
        try:
            return run(["git", "-C", str(self.clone), "annex", *args], env=self.env)[1]
        except SystemExit as failed:  # harness.run's way of saying that the child failed
            raise PeerUnavailable(str(failed)[-300:]) from None

    def round(self, sha256: str, times: dict[str, list]) -> None:
        objects = self.served / ".git" / "annex" / "objects"
        if any(objects.rglob(self.key)):  # from the previous round: the server drops it
            git(self.env, self.clone, "annex", "drop", "--from", "origin", "payload.bin")
        times["peer upload"].append(self.annex("copy", "--to", "origin", "payload.bin"))
        if not any(p.is_file() and p.stat().st_size == self.size for p in objects.rglob(self.key)):
            raise PeerUnavailable("git annex copy said ok but the server holds no such object")
        self.rss.setdefault("after copy --to", memory(self.server.pid))
        git(self.env, self.clone, "annex", "drop", "payload.bin")  # checks origin over HTTP
        if (self.clone / "payload.bin").exists():
            raise PeerUnavailable("git annex drop left the content in place")
        times["peer download"].append(self.annex("get", "--from", "origin", "payload.bin"))
        if sha256_of(self.clone / "payload.bin") != sha256:
            raise PeerUnavailable("git annex get produced other bytes")
        self.rss.setdefault("after get --from", memory(self.server.pid))


# The floor ------------------------------------------------------------------------------


def floor_round(work: Path, payload: Path, times: dict[str, list]) -> None:
    target = work / "floor.out"
    settle()
    times["floor"].append(run(f"cat '{payload}' > '{target}'", shell=True)[1])
    target.unlink()
    times["client hash"].append(timed(sha256_of, payload)[1])


# Report ---------------------------------------------------------------------------------


def report(mb: int, rounds: int, times, ferry: FerrySide, peer, peer_note) -> None:
    median = {name: statistics.median(values) for name, values in times.items()}
    floor_s = median["floor"]
    up, down = (median["peer upload"], median["peer download"]) if peer else (None, None)

    def row(what, name, peer_seconds=None):
        seconds = median[name]
        fastest, slowest = min(times[name]), max(times[name])
        spread = f"{mb / slowest:.0f}-{mb / fastest:.0f}"
        vs_peer = f"{peer_seconds / seconds:.2f}x" if peer_seconds else "-"
        vs_floor = f"{seconds / floor_s:.1f}x"
        return (what, f"{seconds:.2f}", f"{mb / seconds:.0f}", spread, vs_floor, vs_peer)

    times["get+verify"] = [a + b for a, b in zip(times["get"], times["get verify"], strict=True)]
    median["get+verify"] = statistics.median(times["get+verify"])
    rows = [
        ("what", "seconds", "MB/s", "MB/s range", "vs floor (time)", "vs peer (MB/s)"),
        row("upload: PUT /api/sync/blobs/<sha256> (verified)", "put", up),
        row("upload: tus, SyncClient.upload (8 MiB chunks, verified)", "tus", up),
        row("download: GET /api/sync/blobs/<sha256> to a file", "get", down),
        row("download: GET, then the client's sha256 check", "get+verify", down),
        row("download: SyncClient.download (8 MiB ranges, verified)", "ranged", down),
        row("client: sha256 of the file (not in PUT's time)", "client hash"),
        row("floor: cat src > dst", "floor"),
    ]
    if peer:
        rows += [
            row(f"peer: git annex copy --to (p2phttp, {peer.version})", "peer upload", up),
            row("peer: git annex get --from (p2phttp)", "peer download", down),
        ]
    print(f"payload: {mb} MB (MiB) of random bytes; median of {rounds} round(s)")
    print(table(rows))
    print()
    memory_rows = [("server", "when", "VmHWM MB", "VmRSS MB")]
    servers = [("ferry uvicorn", ferry.rss)] + ([("git annex p2phttp", peer.rss)] if peer else [])
    for name, readings in servers:
        for when, values in readings.items():
            memory_rows.append((name, when, f"{values['VmHWM']:.1f}", f"{values['VmRSS']:.1f}"))
    print(table(memory_rows))
    print()
    if peer_note:
        print(f"peer: not measured ({' '.join(peer_note.split())})")
    print(GOAL)
    if peer:
        for label, name, goal, peer_seconds in (
            ("upload, PUT", "put", 2.0, up),
            ("upload, tus", "tus", 2.0, up),
            ("download, GET", "get", 1.2, down),
            ("download, SyncClient.download", "ranged", 1.2, down),
        ):
            ratio = peer_seconds / median[name]
            print(
                f"  {label}: {ratio:.2f}x the peer's MB/s ({'met' if ratio >= goal else 'NOT met'})"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="payload size in MiB (default 200)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every step (default 5)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ferry-bench-sync-"))
    times: dict[str, list] = defaultdict(list)
    peer = peer_note = None
    try:
        with contextlib.ExitStack() as stack:
            payload = work / "payload.bin"
            sha256 = write_payload(payload, args.mb)
            ferry_dir, peer_dir = work / "ferry", work / "peer"
            ferry_dir.mkdir()
            peer_dir.mkdir()
            ferry = FerrySide(ferry_dir, stack)
            try:
                peer = PeerSide(peer_dir, payload, sha256, stack)
            except (PeerUnavailable, OSError, subprocess.SubprocessError) as error:
                peer_note = str(error)
            for _ in range(args.rounds):
                floor_round(work, payload, times)
                ferry.round(payload, sha256, times)
                if peer:
                    try:
                        peer.round(sha256, times)
                    except (PeerUnavailable, OSError, subprocess.SubprocessError) as error:
                        peer, peer_note = None, str(error)
            ferry.rss[f"end ({args.rounds} rounds)"] = memory(ferry.server.pid)
            if peer:
                peer.rss[f"end ({args.rounds} rounds)"] = memory(peer.server.pid)
        report(args.mb, args.rounds, times, ferry, peer, peer_note)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
