"""A binfile past 4 GiB: export it and check that unzip -t, zipinfo and Python's zipfile
all accept it (ZIP64 offsets, directory and end records).

    python bench/zip64.py --media-mb 5200
"""

import argparse
import os
import subprocess
import zipfile

from _harness import MB, Ferry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media-mb", type=float, default=5200)
    args = parser.parse_args()
    ferry = Ferry()
    try:
        ferry.manage("migrate", "-v0")
        out, seed_wall, _ = ferry.manage(
            "seed_demo",
            "-v0",
            "--files",
            "4",
            "--pages",
            "2",
            "--objects",
            "20",
            "--media-mb",
            str(args.media_mb),
            "--libraries",
            "1",
        )
        out, wall, rss = ferry.manage("export_files", "--project", out.split()[-1], "-v0")
        sha256, location = out.strip().splitlines()[-1].split("  ", 1)
        size = os.path.getsize(location)
        print(
            f"seeded in {seed_wall:.0f} s; exported {size / MB:.0f} MB in {wall:.1f} s, "
            f"peak RSS {rss / MB:.0f} MB, sha256 {sha256[:16]}…"
        )
        for tool in (["unzip", "-tqq"], ["zipinfo", "-t"]):
            done = subprocess.run([*tool, location], capture_output=True, text=True)
            print(f"{' '.join(tool)}: exit {done.returncode} {done.stdout.strip()[-120:]}")
        with zipfile.ZipFile(location) as archive:
            bad = archive.testzip()
            last = archive.infolist()[-2]
            print(
                f"python zipfile: testzip {bad!r}, {len(archive.infolist())} entries, "
                f"last blob at offset {last.header_offset / MB:.0f} MB"
            )
    finally:
        ferry.remove()


if __name__ == "__main__":
    main()
