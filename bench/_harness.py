"""Shared helpers for the benchmarks: a throw-away Ferry, child processes, peak memory."""

import os
import shutil
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
