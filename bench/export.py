"""Export benchmark: a seeded workspace exported to a binfile, beside its floor and a peer.

Prints, from one run on one machine:
- the export (`manage.py export_files`, the same engine the workers run): wall time of the
  command, the job's own time (started to finished), MB/s of archive, peak RSS;
- the floor: reading every blob from storage and writing the same number of bytes
  (`cat` of the blob files into one file, then `sync`);
- the peers, on the same site: `manage.py dumpdata filesync` plus `tar` of the blob
  directory, and django-dbbackup's `dbbackup` plus `mediabackup` (configured only here,
  by bench/peer_settings.py);
With --memory, also exports a 200 MB and a 2 GB workspace and compares their peak RSS.
With --profile, runs one more export under cProfile and prints its top costs (the
generating thread's; the part writer's thread is not profiled).

    python bench/export.py --files 200 --pages 10 --objects 300 --media-mb 1024
"""

import argparse
import json
import os
import pstats
import sys

from _harness import MB, ROOT, Ferry, run, table


def seed(ferry: Ferry, *, files, pages, objects, media_mb, libraries=2) -> str:
    out, wall, _ = ferry.manage(
        "seed_demo",
        "-v0",
        "--files",
        str(files),
        "--pages",
        str(pages),
        "--objects",
        str(objects),
        "--media-mb",
        str(media_mb),
        "--libraries",
        str(libraries),
    )
    print(
        f"seeded {files} files x {pages} pages x {objects} objects, {media_mb} MB media "
        f"in {wall:.1f} s"
    )
    return out.strip().splitlines()[-1]


def export(ferry: Ferry, project: str) -> dict:
    out, wall, rss = ferry.manage("export_files", "--project", project, "-v0")
    sha256, location = out.strip().splitlines()[-1].split("  ", 1)
    job_out, _, _ = ferry.manage("export_jobs", "--json", "--limit", "1")
    job = json.loads(job_out)[0]
    from datetime import datetime

    job_seconds = (
        datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
    ).total_seconds()
    size = os.path.getsize(location)
    return {
        "wall": wall,
        "job": job_seconds,
        "rss": rss,
        "size": size,
        "sha256": sha256,
        "location": location,
    }


def floor(ferry: Ferry, size: int) -> float:
    """cat every blob into one file (the bytes an export must read and write), then sync."""
    target = ferry.var / "floor.bin"
    _, wall, _ = run(
        f"find '{ferry.var / 'blobs'}' -type f -print0 | xargs -0 cat > '{target}' && sync",
        shell=True,
    )
    target.unlink()
    return wall


def peer(ferry: Ferry) -> float:
    dump = ferry.var / "dump.json"
    _, dump_wall, _ = ferry.manage("dumpdata", "filesync", "--output", str(dump))
    _, tar_wall, _ = run(
        ["tar", "-cf", str(ferry.var / "blobs.tar"), "-C", str(ferry.var), "blobs"]
    )
    dump.unlink()
    (ferry.var / "blobs.tar").unlink()
    return dump_wall + tar_wall


def dbbackup(ferry: Ferry) -> tuple[float, int]:
    """django-dbbackup on the same site: the database, then the media (the blobs) as a tar.
    Returns the wall time of both commands and the larger of their peak RSS."""
    env = dict(ferry.env)
    env["DJANGO_SETTINGS_MODULE"] = "peer_settings"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "bench"), env.get("PYTHONPATH")]))
    manage = [sys.executable, str(ROOT / "manage.py")]
    _, db_wall, db_rss = run([*manage, "dbbackup", "--noinput", "-q"], env=env)
    _, media_wall, media_rss = run([*manage, "mediabackup", "--noinput", "-q"], env=env)
    backups = ferry.var / "backups"
    for backup in backups.iterdir():
        backup.unlink()
    return db_wall + media_wall, max(db_rss, media_rss)


def profile(ferry: Ferry, project: str, output: str) -> None:
    """One more export under cProfile; the top costs of the generating thread."""
    run(
        [
            sys.executable,
            "-m",
            "cProfile",
            "-o",
            output,
            str(ROOT / "manage.py"),
            "export_files",
            "--project",
            project,
            "-v0",
        ],
        env=ferry.env,
    )
    pstats.Stats(output).sort_stats("tottime").print_stats(18)


def throughput(ferry: Ferry, args) -> None:
    project = seed(
        ferry, files=args.files, pages=args.pages, objects=args.objects, media_mb=args.media_mb
    )
    floor_wall = floor(ferry, 0)  # first: it also warms the page cache for the others
    result = export(ferry, project)
    again = export(ferry, project)
    peer_wall = peer(ferry)
    dbbackup_wall, dbbackup_rss = dbbackup(ferry)
    size_mb = result["size"] / MB

    def row(what, seconds, rss=""):
        return (
            what,
            f"{seconds:.2f}",
            f"{size_mb / seconds:.0f}",
            rss and f"{rss / MB:.0f}",
            f"{seconds / floor_wall:.2f}x",
        )

    print(
        table(
            [
                ("what", "seconds", "MB/s", "peak RSS MB", "vs floor"),
                row("export (command)", result["wall"], result["rss"]),
                row("export (job only)", result["job"]),
                row("floor: cat blobs + sync", floor_wall),
                row("peer: dumpdata + tar", peer_wall),
                row("peer: dbbackup + mediabackup", dbbackup_wall, dbbackup_rss),
            ]
        )
    )
    print(
        f"archive {size_mb:.0f} MB, sha256 {result['sha256'][:16]}…; second export identical: "
        f"{again['sha256'] == result['sha256']}; export command vs floor "
        f"{result['wall'] / floor_wall:.2f}x, faster than dumpdata + tar "
        f"{peer_wall / result['wall']:.2f}x, than dbbackup + mediabackup "
        f"{dbbackup_wall / result['wall']:.2f}x"
    )
    if args.profile:
        profile(ferry, project, args.profile)


def memory(args) -> None:
    peaks = {}
    for media_mb in (200, 2048):
        ferry = Ferry(keep_env=args.keep_env)
        try:
            ferry.manage("migrate", "-v0")
            project = seed(ferry, files=20, pages=5, objects=100, media_mb=media_mb)
            peaks[media_mb] = export(ferry, project)
        finally:
            ferry.remove()
    small, large = peaks[200], peaks[2048]
    print(
        table(
            [
                ("export", "archive MB", "seconds", "peak RSS MB"),
                (
                    "200 MB",
                    f"{small['size'] / MB:.0f}",
                    f"{small['wall']:.1f}",
                    f"{small['rss'] / MB:.0f}",
                ),
                (
                    "2 GB",
                    f"{large['size'] / MB:.0f}",
                    f"{large['wall']:.1f}",
                    f"{large['rss'] / MB:.0f}",
                ),
            ]
        )
    )
    print(
        f"peak RSS ratio 2 GB / 200 MB: {large['rss'] / small['rss']:.2f}x (goal < 1.2x, "
        f"both < 200 MB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--media-mb", type=float, default=1024)
    parser.add_argument("--memory", action="store_true", help="Also compare 200 MB vs 2 GB.")
    parser.add_argument("--profile", metavar="PATH", help="Also profile one export into PATH.")
    parser.add_argument("--keep-env", action="store_true", help="Use DATABASE_URL etc. as set.")
    args = parser.parse_args()
    ferry = Ferry(keep_env=args.keep_env)
    try:
        ferry.manage("migrate", "-v0")
        throughput(ferry, args)
    finally:
        ferry.remove()
    if args.memory:
        memory(args)


if __name__ == "__main__":
    main()
