"""Import benchmark: a seeded workspace exported to a binfile and imported again, beside
`manage.py loaddata` of the same rows.

Prints, from one run on one machine:
- the import (`manage.py import_binfile`, the engine the workers run, inline) into a fresh
  Ferry, which stores every blob: wall time of the command, the job's own time (started to
  finished), split at phase 3 (the "write" progress event: before it, checking and
  storing blobs; after it, the one transaction), objects/s, MB/s of archive, peak RSS;
- the same import into the Ferry the archive came from, whose blobs are already stored;
- the peer: `manage.py loaddata` into a fresh Ferry of a `dumpdata` fixture of the same
  rows (team, project, blobs, files, pages, media, library links). loaddata copies no blob
  bytes, so the floor for those is `cp -r` of the blob directory, shown beside it.
`os.sync()` runs before every timed step, so that no step pays for an earlier one's dirty
pages. With --profile, also runs the fresh import once under cProfile and prints its top
functions.

    python bench/import.py --files 50 --pages 10 --objects 300 --media-mb 256
"""

import argparse
import json
import os
import pstats
import shutil
import sys
import tempfile
from pathlib import Path

from _harness import MB, ROOT, Ferry, run, table

#: Rows and page objects of every project (the workspace, then its copies).
COUNT_ROWS = """
import json
from django.db.models import Sum
from filesync.models import Blob, File, FileLibrary, MediaObject, Page
rows = dict(
    files=File.objects.count(),
    pages=Page.objects.count(),
    media=MediaObject.objects.count(),
    links=FileLibrary.objects.count(),
    blobs=Blob.objects.count(),
    blob_bytes=Blob.objects.aggregate(n=Sum("size"))["n"] or 0,
    objects=sum(len(m) for m in Page.objects.values_list("object_map", flat=True).iterator()),
)
print(json.dumps(rows))
"""

NEW_PROJECT = """
from filesync.models import Team
from filesync.services import create_project
print(create_project(team=Team.objects.create(name="Imports"), name="Imported").id)
"""

#: The latest import's times: started, phase 3 began (its "write" event, always recorded;
#: the "store" one may be skipped by the progress interval), finished.
IMPORT_TIMES = """
import json
from exports.models import ImportJob
job = ImportJob.objects.order_by("-created_at").first()
write = job.events.get(kind="progress", data__phase="write").created_at
print(json.dumps(dict(state=job.state, started=job.started_at.timestamp(),
                      write=write.timestamp(), finished=job.finished_at.timestamp())))
"""

CONTENT_ROWS = ("files", "pages", "media", "links")
#: What loaddata gets: the workspace's rows and the few they need (its team, project, blobs).
DUMPED = (
    "filesync.Team",
    "filesync.Project",
    "filesync.Blob",
    "filesync.File",
    "filesync.Page",
    "filesync.MediaObject",
    "filesync.FileLibrary",
)


def seed(ferry: Ferry, args) -> str:
    out, wall, _ = ferry.manage(
        "seed_demo",
        "-v0",
        "--files",
        str(args.files),
        "--pages",
        str(args.pages),
        "--objects",
        str(args.objects),
        "--media-mb",
        str(args.media_mb),
        "--libraries",
        str(args.libraries),
    )
    print(
        f"seeded {args.files} files x {args.pages} pages x {args.objects} objects, "
        f"{args.media_mb} MB media in {wall:.1f} s"
    )
    return out.strip().splitlines()[-1]


def shell(ferry: Ferry, code: str) -> str:
    return ferry.manage("shell", "--no-imports", "-c", code)[0].strip()


def counts(ferry: Ferry) -> dict:
    return json.loads(shell(ferry, COUNT_ROWS))


def timed(ferry: Ferry, *args: str) -> tuple[str, float, int]:
    os.sync()
    return ferry.manage(*args)


def import_into(ferry: Ferry, archive: Path) -> dict:
    """import_binfile into a new project of `ferry`; the command's and the job's times."""
    project = shell(ferry, NEW_PROJECT)
    out, wall, rss = timed(ferry, "import_binfile", str(archive), "--project", project, "-v0")
    times = json.loads(shell(ferry, IMPORT_TIMES))
    assert times["state"] == "succeeded", times
    spans = {
        "check + store blobs": times["write"] - times["started"],
        "write (one transaction)": times["finished"] - times["write"],
    }
    return {
        "wall": wall,
        "job": times["finished"] - times["started"],
        "rss": rss,
        "phases": spans,
        "copies": len(out.splitlines()),
    }


def profile(ferry: Ferry, archive: Path, top: int) -> None:
    """The import command under cProfile, once; its top functions by own and total time."""
    project = shell(ferry, NEW_PROJECT)
    stats_path = ferry.var / "import.prof"
    os.sync()
    run(
        [
            sys.executable,
            "-m",
            "cProfile",
            "-o",
            str(stats_path),
            str(ROOT / "manage.py"),
            "import_binfile",
            str(archive),
            "--project",
            project,
            "-v0",
        ],
        env=ferry.env,
    )
    stats = pstats.Stats(str(stats_path))
    for key in ("tottime", "cumulative"):
        print(f"\n--- cProfile of import_binfile, top {top} by {key}")
        stats.sort_stats(key).print_stats(top)


def measure(args, work: Path, source: Ferry, fresh: Ferry, peer: Ferry) -> dict:
    for ferry in (source, fresh, peer):
        ferry.manage("migrate", "-v0")
    project = seed(source, args)
    archive = work / "archive.zip"
    source.manage("export_files", "--project", project, "--out", str(archive), "-v0")
    rows = counts(source)
    fixture = work / "fixture.json"
    source.manage("dumpdata", *DUMPED, "--output", str(fixture))

    # The peer, then the floor, each into its own fresh Ferry; then the imports.
    _, load_wall, load_rss = timed(peer, "loaddata", str(fixture))
    loaded = counts(peer)
    os.sync()
    _, cp_wall, _ = run(["cp", "-r", str(source.var / "blobs"), str(peer.var / "blobs.copy")])
    imported = import_into(fresh, archive)
    landed = counts(fresh)
    again = import_into(source, archive)

    for what, got in (("loaddata", loaded), ("import", landed)):
        wrong = {k: (got[k], rows[k]) for k in (*CONTENT_ROWS, "objects") if got[k] != rows[k]}
        assert not wrong, f"{what} wrote other rows than the workspace's: {wrong}"
    return {
        "archive": archive,
        "rows": rows,
        "archive_mb": archive.stat().st_size / MB,
        "fixture_mb": fixture.stat().st_size / MB,
        "loaddata": {"wall": load_wall, "rss": load_rss},
        "cp": cp_wall,
        "imported": imported,
        "again": again,
    }


def report(result: dict) -> None:
    rows, imported, again = result["rows"], result["imported"], result["again"]
    load, load_wall = result["loaddata"], result["loaddata"]["wall"]
    archive_mb, fixture_mb = result["archive_mb"], result["fixture_mb"]
    blob_mb = rows["blob_bytes"] / MB
    content_rows, objects = sum(rows[k] for k in CONTENT_ROWS), rows["objects"]

    def line(what, mb, seconds, rss=0, ratio="", *, counted=True):
        return (
            what,
            f"{content_rows:,}" if counted else "",
            f"{objects:,}" if counted else "",
            f"{mb:.0f}",
            f"{seconds:.2f}",
            f"{objects / seconds:,.0f}" if counted else "",
            f"{mb / seconds:.0f}",
            f"{rss / MB:.0f} MB" if rss else "",
            ratio,
        )

    both = load_wall + result["cp"]
    header = ("what", "rows", "objects", "MB", "seconds", "objects/s", "MB/s", "peak RSS")
    print(
        table(
            [
                (*header, "vs loaddata (time)"),
                line(
                    "import_binfile, fresh Ferry (command)",
                    archive_mb,
                    imported["wall"],
                    imported["rss"],
                    f"{imported['wall'] / load_wall:.2f}x",
                ),
                line(
                    "import, fresh Ferry (job alone)",
                    archive_mb,
                    imported["job"],
                    ratio=f"{imported['job'] / load_wall:.2f}x",
                ),
                line(
                    "import_binfile, blobs already stored",
                    archive_mb,
                    again["wall"],
                    again["rss"],
                    f"{again['wall'] / load_wall:.2f}x",
                ),
                line(
                    "peer: loaddata of the same rows", fixture_mb, load_wall, load["rss"], "1.00x"
                ),
                line("floor: cp -r of the blob bytes", blob_mb, result["cp"], counted=False),
                line(
                    "peer + floor: loaddata, then cp",
                    fixture_mb + blob_mb,
                    both,
                    ratio=f"{both / load_wall:.2f}x (import: {imported['wall'] / both:.2f}x it)",
                ),
            ]
        )
    )
    for what, run_ in (("fresh Ferry", imported), ("blobs already stored", again)):
        print(
            f"import phases ({what}): "
            + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in run_["phases"].items())
        )
    print(
        f"rows: {rows['files']} files, {rows['pages']} pages, {rows['media']} media, "
        f"{rows['links']} library links ({rows['blobs']} blobs); archive {archive_mb:.1f} MB, "
        f"fixture {fixture_mb:.1f} MB, blobs {blob_mb:.1f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--media-mb", type=float, default=256)
    parser.add_argument("--libraries", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="Also profile one import.")
    parser.add_argument("--top", type=int, default=25, help="Functions the profile shows.")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="Keep DJANGO_DEBUG as set (default on: debug cursors log every query); "
        "without it the processes run with DJANGO_DEBUG=0, as deployed.",
    )
    parser.add_argument("--keep-env", action="store_true", help="Use DATABASE_URL etc. as set.")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ferry-bench-import-"))
    ferries = [
        Ferry(keep_env=args.keep_env, var_dir=str(work / name))
        for name in ("source", "fresh", "peer")
    ]
    if not args.debug:
        for ferry in ferries:
            ferry.env["DJANGO_DEBUG"] = "0"
    try:
        result = measure(args, work, *ferries)
        report(result)
        if args.profile:
            profile(ferries[1], result["archive"], args.top)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
