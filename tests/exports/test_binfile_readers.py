"""An exported binfile read by independent ZIP readers, seeking and streaming: Info-ZIP
unzip, 7-Zip, bsdtar (libarchive, from a pipe), Python's zipfile, stream-unzip, and Java's
java.util.zip.ZipInputStream (a small program compiled here). Each entry each reader gives
back hashes to what digest.json says. The streaming ones (stream-unzip, ZipInputStream,
bsdtar from stdin) trust only the local headers: format 1's data descriptors failed them.

A reader missing from the machine skips the test, or fails it under FERRY_REQUIRE_TOOLS=1,
which CI sets (.ci/run installs them). bench/zip64.py runs the same readers on a ZIP64
archive past 4 GiB."""

import hashlib
import io
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from filesync import services as filesync_services
from tests.exports.test_import import export_bytes

pytestmark = pytest.mark.django_db(transaction=True)

JAVA_READER = """
import java.io.FileInputStream;
import java.io.InputStream;
import java.security.MessageDigest;
import java.util.HexFormat;
import java.util.zip.ZipEntry;
import java.util.zip.ZipInputStream;

public class StreamRead {
    public static void main(String[] args) throws Exception {
        try (InputStream file = new FileInputStream(args[0]);
             ZipInputStream zip = new ZipInputStream(file)) {
            byte[] buffer = new byte[65536];
            for (ZipEntry entry; (entry = zip.getNextEntry()) != null; ) {
                MessageDigest sha = MessageDigest.getInstance("SHA-256");
                for (int n; (n = zip.read(buffer)) > 0; ) sha.update(buffer, 0, n);
                System.out.println(entry.getName() + " " + HexFormat.of().formatHex(sha.digest()));
            }
        }
    }
}
"""


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("FERRY_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{tool} is not installed, and FERRY_REQUIRE_TOOLS=1 requires it")
        pytest.skip(f"{tool} is not installed (.ci/run installs it)")
    return path


def run(*command: str, stdin=None) -> str:
    done = subprocess.run(command, capture_output=True, stdin=stdin, timeout=300)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    return done.stdout.decode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): sha256(path.read_bytes())
        for path in root.rglob("*")
        if path.is_file()
    }


@pytest.fixture
def archive(workspace, editor, tmp_path) -> tuple[Path, dict[str, str]]:
    """A workspace export with stored (PNG) and deflated (SVG) blobs, and {name: sha256}
    for every entry in archive order: as digest.json says, then digest.json's own."""
    filesync_services.add_media(
        file=workspace.designs[0],
        name="drawing.svg",
        stream=io.BytesIO(b'<svg xmlns="http://www.w3.org/2000/svg">' + b"<g/>" * 4000 + b"</svg>"),
        content_type="image/svg+xml",
    )
    data = export_bytes(user=editor, project=workspace.project)
    path = tmp_path / "export.binfile"
    path.write_bytes(data)
    with zipfile.ZipFile(path) as zipped:
        names = zipped.namelist()
        digest_bytes = zipped.read("digest.json")
    listed = {name: e["sha256"] for name, e in json.loads(digest_bytes)["entries"].items()}
    assert names[-1] == "digest.json" and sorted(listed) == sorted(names[:-1])
    return path, {
        **{name: listed[name] for name in names[:-1]},
        "digest.json": sha256(digest_bytes),
    }


def test_python_zipfile(archive):
    path, expected = archive
    with zipfile.ZipFile(path) as zipped:
        assert zipped.testzip() is None
        assert {i.filename: sha256(zipped.read(i)) for i in zipped.infolist()} == expected


def test_stream_unzip(archive):
    from stream_unzip import stream_unzip

    path, expected = archive

    def chunks():
        with path.open("rb") as stream:
            while chunk := stream.read(64 * 1024):
                yield chunk

    found = {}
    for name, size, content in stream_unzip(chunks()):
        data = b"".join(content)
        assert size == len(data), name
        found[name.decode()] = sha256(data)
    assert list(found.items()) == list(expected.items())


def test_java_zip_input_stream(archive, tmp_path):
    path, expected = archive
    javac, java = require("javac"), require("java")
    source = tmp_path / "StreamRead.java"
    source.write_text(JAVA_READER)
    run(javac, "-d", str(tmp_path), str(source))
    printed = run(java, "-cp", str(tmp_path), "StreamRead", str(path))
    found = [tuple(line.rsplit(" ", 1)) for line in printed.splitlines()]
    assert found == list(expected.items())


def test_info_zip_unzip(archive, tmp_path):
    path, expected = archive
    unzip = require("unzip")
    run(unzip, "-tqq", str(path))
    run(unzip, "-qq", str(path), "-d", str(tmp_path / "out"))
    assert tree_hashes(tmp_path / "out") == expected


def test_7zip(archive, tmp_path):
    path, expected = archive
    seven = require("7z")
    assert "Everything is Ok" in run(seven, "t", str(path))
    run(seven, "x", "-y", f"-o{tmp_path / 'out'}", str(path))
    assert tree_hashes(tmp_path / "out") == expected


def test_bsdtar_from_a_pipe(archive, tmp_path):
    """Read from stdin, libarchive cannot seek to the directory: it streams local headers."""
    path, expected = archive
    bsdtar = require("bsdtar")
    with path.open("rb") as stdin:
        listing = run(bsdtar, "-tvf", "-", stdin=stdin)
    assert [line.split()[-1] for line in listing.splitlines()] == list(expected)
    (tmp_path / "out").mkdir()
    with path.open("rb") as stdin:
        run(bsdtar, "-xf", "-", "-C", str(tmp_path / "out"), stdin=stdin)
    assert tree_hashes(tmp_path / "out") == expected


def test_zipdetails_finds_no_data_descriptor(archive):
    path, expected = archive
    details = run(require("zipdetails"), str(path))
    assert details.count("LOCAL HEADER") == len(expected)
    assert "STREAMING DATA HEADER" not in details  # zipdetails' name for a data descriptor
