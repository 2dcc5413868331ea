"""A Ferry deployment run as an operator runs it, for live tests: every part a process of
its own (`manage.py` commands, `qcluster`, uvicorn) in a process group of its own, its
output kept in a log file, sharing one database and the session's services.

The knobs are picked so that nothing depends on how fast this machine is: one tick runs a
whole job unless a test asks for short ones (so a worker killed mid-job is always killed
holding its lease), and the lease, renewed about once a second, runs out only for a worker
that stopped for 20 s (stretched by FERRY_TEST_PATIENCE): a dead worker's job is taken
over by the first run of the scheduled maintenance task after that.
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from tests.waiting import patience, stop_process, wait_exit, wait_for

SERVICES = os.environ.get("FERRY_TEST_SERVICES") == "1"
ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024

#: The lease of every process the tests start: renewed about once a second, it runs out
#: only for a worker that stopped.
LEASE_SECONDS = 20
#: Knobs for every process the tests start (see the module's docstring). A tick of 300 s
#: outlasts any job here and stays inside Q_CLUSTER["timeout"] (600 s), past which
#: django-q2 would kill the worker.
KNOBS = {
    "EXPORT_LEASE_SECONDS": str(round(patience(LEASE_SECONDS))),
    "EXPORT_TICK_SECONDS": "300",
    "EXPORT_PART_SIZE": str(MIB),
    "EXPORT_PROGRESS_INTERVAL": "0.25",
}
#: The longest a dead worker's job may wait for its takeover: its lease to run out, then
#: the maintenance schedule (every minute; the run due while the first cluster's only
#: worker was busy died with that cluster) to come due, then django-q2's scheduler pass
#: (every 30 s), plus a margin.
TAKEOVER_SECONDS = LEASE_SECONDS + 60 + 30 + 30
#: Variables that switch services on; only services mode passes them through.
SERVICE_VARIABLES = ("DATABASE_URL", "REDIS_URL", "Q_BROKER")
#: Variables a test must not inherit from the shell that started pytest.
INHERITED_NOISE = ("DJANGO_", "FERRY_", "EXPORT_", "Q_WORKERS", "FILE_PURGE", "EVENTS_")


def log_tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace").replace("\r", "\n")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class Proc:
    """A process in a session (process group) of its own, its output kept in a log file.

    With `lines=True` its stdout is also read line by line on a thread, so a test can
    wait for a line without ever blocking on the pipe.
    """

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict,
        log: Path,
        *,
        lines=False,
        stdin=False,
        pass_fds=(),
    ):
        self.name, self.log = name, log
        self.lines: list[str] = []
        self._out = log.open("w")
        self.popen = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if lines else self._out,
            stderr=self._out,
            text=True,
            bufsize=1,
            start_new_session=True,
            pass_fds=pass_fds,
        )
        self.pid = self.popen.pid
        self._reader = None
        if lines:
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))
            self._out.write(line)
            self._out.flush()

    def send(self, text: str) -> None:
        self.popen.stdin.write(text + "\n")
        self.popen.stdin.flush()

    def wait(self, timeout: float) -> int:
        """Wait for the exit (within `patience(timeout)`), and for the reader to have taken
        every line of the pipe."""
        code = wait_exit(self.popen, timeout=timeout, what=self.name)
        if self._reader:
            self._reader.join(timeout=patience(timeout))
        return code

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole group: the cluster's sentinel, workers, pusher and monitor."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_exit(self.popen, timeout=30, what=f"{self.name} after SIGKILL")

    def close(self) -> None:
        stop_process(self.popen)
        self._out.close()


class Ferry:
    """One Ferry deployment, driven only through processes that share its database."""

    def __init__(self, env: dict, logs: Path):
        self.env, self.logs = env, logs
        self.procs: list[Proc] = []
        self.runs = 0

    def _args(self, *args) -> list[str]:
        return [sys.executable, "manage.py", *map(str, args)]

    def manage(self, *args, timeout: float = 120, env: dict | None = None) -> str:
        """Run a command to its end (a hang: past `patience(timeout)`); return its stdout, or
        fail with its output and logs."""
        self.runs += 1
        try:
            done = subprocess.run(
                self._args(*args),
                cwd=ROOT,
                env={**self.env, **(env or {})},
                capture_output=True,
                text=True,
                timeout=patience(timeout),
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as error:
            raise AssertionError(
                self.explain(f"manage.py {args[0]} took over {patience(timeout):.0f}s: {error}")
            ) from None
        if done.returncode:
            raise AssertionError(
                self.explain(
                    f"manage.py {' '.join(map(str, args))} exited {done.returncode}\n"
                    f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
                )
            )
        return done.stdout

    def json(self, *args, **kwargs):
        return json.loads(self.manage(*args, **kwargs))

    def start(self, name: str, *args, env: dict | None = None, **options) -> Proc:
        proc = Proc(
            name,
            self._args(*args),
            {**self.env, **(env or {})},
            self.logs / f"{name}.log",
            **options,
        )
        self.procs.append(proc)
        return proc

    def start_cluster(self, name: str, workers: int, **env) -> Proc:
        """`manage.py qcluster` in a process group of its own; returns once it runs."""
        cluster = self.start(name, "qcluster", env={"Q_WORKERS": str(workers), **env})
        wait_for(
            lambda: "running." in log_tail(cluster.log) or not cluster.alive(),
            timeout=60,
            what=f"{name} to start",
            explain=self.logs_now,
        )
        assert cluster.alive(), self.explain(f"{name} exited {cluster.popen.returncode}")
        return cluster

    def serve(self, name: str, **env) -> tuple[Proc, str]:
        """uvicorn serving project.asgi, on a loopback socket bound here and handed over (so
        no other process can take the port in between); returns it and its base URL once it
        answers."""
        listener = socket.create_server(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with listener:
            args = [sys.executable, "-m", "uvicorn", "project.asgi:application",
                    "--fd", str(listener.fileno()), "--log-level", "warning"]  # fmt: skip
            server = Proc(
                name,
                args,
                {**self.env, **env},
                self.logs / f"{name}.log",
                pass_fds=(listener.fileno(),),
            )
        self.procs.append(server)
        wait_for(
            lambda: not server.alive() or answers(base),
            timeout=30,
            what=f"{name} to answer",
            explain=self.logs_now,
        )
        assert server.alive(), self.explain(f"{name} exited {server.popen.returncode}")
        return server, base

    def explain(self, message: str) -> str:
        """The message, then the tail of every process's log (for assertion messages)."""
        parts = [message]
        for proc in self.procs:
            state = "running" if proc.alive() else f"exited {proc.popen.returncode}"
            parts.append(
                f"\n===== {proc.name} (pid {proc.pid}, {state}) =====\n{log_tail(proc.log)}"
            )
        return "\n".join(parts)

    def logs_now(self) -> str:
        """The tail of every process's log, as `wait_for`'s `explain`."""
        return self.explain("")

    def close(self) -> None:
        for proc in self.procs:
            proc.close()


def answers(base: str) -> bool:
    try:
        httpx.get(f"{base}/api/", timeout=patience(2))
    except httpx.TransportError:
        return False
    return True


def subprocess_env(*, var_dir: str, s3_prefix: str, database_url: str | None) -> dict:
    """The environment of the processes: embedded, or the session's services."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in SERVICE_VARIABLES
        and not key.startswith("AWS_")
        and not key.startswith(INHERITED_NOISE)
    }
    if SERVICES:
        env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
        env.update({k: os.environ[k] for k in ("REDIS_URL", "Q_BROKER") if k in os.environ})
        env["DATABASE_URL"] = database_url
        env["FERRY_S3_PREFIX"] = s3_prefix
    # One deployment, one secret: every process of it (servers, clusters, commands) shares it.
    env.update(
        KNOBS,
        FERRY_VAR_DIR=var_dir,
        PYTHONUNBUFFERED="1",
        DJANGO_SECRET_KEY=f"deployment-{secrets.token_urlsafe(40)}",
    )
    return env


def seed(ferry: Ferry, **size) -> str:
    args = [f"--{key.replace('_', '-')}={value}" for key, value in size.items()]
    return ferry.manage("seed_demo", *args, "-v0", timeout=180).split()[-1]


#: Follows one job as `export_jobs <id> --json` shows it, every 20 ms, one JSON line each,
#: plus the lease columns and `at`, the wall-clock time the reads began. A fresh
#: `manage.py export_jobs` takes ~0.7 s to start, longer than a whole 40 MB export takes;
#: this runs the same command in one long-lived process.
WATCH_JOB = """
import io, json, sys, time
from django.core.management import call_command
from exports.models import ExportJob
print("ready", flush=True)
job = sys.stdin.readline().strip()
while True:
    at = time.time()
    out = io.StringIO()
    call_command("export_jobs", job, json=True, stdout=out)
    state = json.loads(out.getvalue())
    row = ExportJob.objects.values("worker", "lease_expires_at").get(pk=job)
    state["worker"] = row["worker"]
    state["lease_expires_at"] = row["lease_expires_at"] and row["lease_expires_at"].isoformat()
    state["at"] = at
    print(json.dumps(state), flush=True)
    if state["state"] not in ("queued", "running"):
        break
    time.sleep(0.02)
"""


def watched(watcher: Proc, ferry: Ferry, *, since: float | None = None) -> dict:
    """The latest state `watcher` (WATCH_JOB, WATCH_IMPORT) printed, once there is one; with
    `since` (a time.time()), the first one it read wholly after that moment."""

    def state():
        first_after = None
        for line in reversed(watcher.lines[1:]):  # newest first; stop at the first too old
            state = json.loads(line)
            if since is None:
                return state
            if state["at"] <= since:
                break
            first_after = state
        return first_after

    return wait_for(state, timeout=30, what="the watcher's next look", explain=ferry.logs_now)


#: What django-q2 recorded: every task (func, args, enqueued, stopped, result), failures
#: included, and the maintenance schedule.
DUMP_QUEUE_RECORDS = """
import json
from django_q.models import Schedule, Task
def when(value):
    return value.timestamp() if value else None
tasks = [
    {"id": t.id, "func": t.func, "args": list(t.args or ()), "enqueued": when(t.started),
     "stopped": when(t.stopped), "result": t.result if isinstance(t.result, (str, int, dict))
     else repr(t.result), "success": t.success}
    for t in Task.objects.all()
]
schedules = [{"name": s.name, "func": s.func, "next_run": when(s.next_run)}
             for s in Schedule.objects.all()]
print(json.dumps({"tasks": tasks, "schedules": schedules}))
"""


def queue_records(ferry: Ferry) -> dict:
    return json.loads(ferry.manage("shell", "--no-imports", "-c", DUMP_QUEUE_RECORDS))
