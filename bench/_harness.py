"""Shared helpers for the benchmarks: a throw-away Ferry, child processes, peak memory."""

import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICE_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "Q_BROKER",
    "AWS_STORAGE_BUCKET_NAME",
    "AWS_S3_ENDPOINT_URL",
)
MB = 1024 * 1024


class Ferry:
    """A Ferry with its own var/ directory: SQLite and filesystem storage, unless kept env."""

    def __init__(self, *, keep_env: bool = False, var_dir: str | None = None):
        self.var = Path(var_dir or tempfile.mkdtemp(prefix="ferry-bench-"))
        self.env = dict(os.environ)
        if not keep_env:
            for name in SERVICE_VARIABLES:
                self.env.pop(name, None)
        self.env["FERRY_VAR_DIR"] = str(self.var)
        # A throw-away Ferry's own key: with DEBUG off none would start without one.
        self.env.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))

    def manage(self, *args: str) -> tuple[str, float, int]:
        """Run manage.py; return (stdout, wall seconds, peak RSS in bytes)."""
        return run([sys.executable, str(ROOT / "manage.py"), *args], env=self.env)

    def remove(self) -> None:
        shutil.rmtree(self.var, ignore_errors=True)


def run(command, *, env=None, shell=False) -> tuple[str, float, int]:
    """Run a child to completion; its own peak RSS comes from wait4's rusage."""
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, shell=shell, cwd=ROOT)
    out = child.stdout.read().decode()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{command} failed with {child.returncode}:\n{out}")
    return out, wall, usage.ru_maxrss * 1024


def table(rows: list[tuple]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory(pid: int) -> dict[str, float]:
    """VmHWM (peak RSS) and VmRSS of a running process, in MiB, from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def write_payload(path: Path, mb: int) -> str:
    """Write `mb` MiB of random bytes, a chunk at a time; return their sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(mb):
            chunk = os.urandom(MB)
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()
