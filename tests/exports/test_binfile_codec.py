"""The pure codec: ZIP bytes every reader accepts, deterministic, resumable at a boundary."""

import hashlib
import io
import json
import os
import shutil
import subprocess
import zipfile
import zlib
from datetime import datetime

import pytest

from exports.binfile import format as binfile
from exports.binfile import zipstream
from exports.binfile.reader import BinfileReader
from exports.binfile.zipstream import DEFLATED, STORED, ZipStream
from filesync.resumable_hash import ResumableSha256

WHEN = datetime(2026, 3, 4, 5, 6, 7)


def write(stream: ZipStream, name: str, data: bytes, method: int) -> bytes:
    """Stored entries stream with their size and CRC-32 known ahead, as blobs do; deflated
    ones are gathered first, as documents are."""
    known = {"size": len(data), "crc32": zlib.crc32(data)} if method == STORED else {}
    return b"".join(stream.entry(name, [data[:7], data[7:]], method=method, when=WHEN, **known))


def build(entries, *, start=0, records=()) -> tuple[bytes, ZipStream]:
    stream = ZipStream(offset=start, records=records)
    out = bytearray()
    for name, data, method in entries:
        out += write(stream, name, data, method)
    for chunk in stream.finish():
        out += chunk
    return bytes(out), stream


def check_with_tools(data: bytes, tmp_path) -> None:
    """Python's zipfile, Info-ZIP's unzip -t and zipinfo all accept the archive."""
    path = tmp_path / "archive.zip"
    path.write_bytes(data)
    assert zipfile.ZipFile(path).testzip() is None
    for tool in (["unzip", "-tqq"], ["zipinfo", "-h"]):
        if shutil.which(tool[0]) is None:
            pytest.fail(f"{tool[0]} is not installed (.ci/run installs it)")
        done = subprocess.run([*tool, str(path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_entries_round_trip_through_every_reader(tmp_path):
    blob = os.urandom(50_000)
    data, _ = build([("a.json", b'{"x":1}' * 500, DEFLATED), ("blobs/b", blob, STORED)])
    check_with_tools(data, tmp_path)
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.read("blobs/b") == blob
    assert archive.getinfo("a.json").compress_type == zipfile.ZIP_DEFLATED
    assert archive.getinfo("blobs/b").compress_type == zipfile.ZIP_STORED
    assert archive.getinfo("a.json").date_time == (2026, 3, 4, 5, 6, 6)


def test_same_entries_give_the_same_bytes():
    entries = [("a", b"hello world" * 100, DEFLATED), ("b", b"x" * 10, STORED)]
    assert build(entries)[0] == build(entries)[0]


def test_a_writer_restarted_at_an_entry_boundary_continues_the_same_archive():
    entries = [(f"e{n}", os.urandom(3000) * (n + 1), DEFLATED) for n in range(5)]
    whole, stream = build(entries)
    boundary = stream.records[2].offset  # entries 0 and 1 are done
    tail, _ = build(entries[2:], start=boundary, records=stream.records[:2])
    assert whole[:boundary] + tail == whole


def test_zip64_entries_and_directories_are_readable(tmp_path, monkeypatch):
    """ZIP64 sizes, in the local header's extra field too, here for a small entry (a real
    one, past 4 GiB, is bench/zip64.py's)."""
    monkeypatch.setattr(zipstream, "ZIP64_ENTRY_THRESHOLD", 1000)
    many = [(f"n/{n}", b"", STORED) for n in range(70_000)]
    big = [("big", b"y" * 1000, DEFLATED)]
    data, stream = build(big + many)
    assert stream.records[0].zip64
    assert b"PK\x06\x06" in data[-200:]  # the ZIP64 end of central directory record
    check_with_tools(data, tmp_path)
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert len(archive.infolist()) == 70_001
    assert archive.read("big") == b"y" * 1000


def test_resumable_sha256_matches_hashlib_across_a_saved_state():
    first, second = os.urandom(100_003), os.urandom(77_777)
    hasher = ResumableSha256()
    hasher.update(first)
    resumed = ResumableSha256(hasher.state())
    resumed.update(second)
    assert resumed.hexdigest() == hashlib.sha256(first + second).hexdigest()
    assert hasher.hexdigest() == hashlib.sha256(first).hexdigest()
    with pytest.raises(ValueError):
        ResumableSha256(b"short")


def binfile_bytes(*, manifest: dict | None = None, extra=(), tamper=None) -> bytes:
    """A small valid binfile, optionally with a changed manifest, extra or tampered entries."""
    document = manifest or binfile.manifest(
        generated_by="test", source={}, libraries="all", files=[], relations=[]
    )
    entries = [(binfile.MANIFEST, binfile.encode_json(document), DEFLATED), *extra]
    stream = ZipStream()
    out = bytearray()
    for name, data, method in entries:
        out += write(stream, name, data, method)
    digest = binfile.digest(stream.records)
    if tamper:
        tamper(digest)
    out += write(stream, binfile.DIGEST, binfile.encode_json(digest), DEFLATED)
    for chunk in stream.finish():
        out += chunk
    return bytes(out)


BLOB = "blobs/" + "ab" * 32
GHOST = "files/00000000-0000-4000-8000-000000000000.json"


def test_reader_accepts_a_valid_binfile():
    reader = BinfileReader(io.BytesIO(binfile_bytes(extra=[(BLOB, b"abc", STORED)])))
    reader.verify()
    assert reader.manifest["type"] == "ferry/binfile"
    assert reader.names() == ["manifest.json", BLOB, "digest.json"]


@pytest.mark.parametrize(
    "change, code, field",
    [
        ({"type": "other/format"}, "unknown_type", "type"),
        ({"format_version": 3}, "newer_version", "format_version"),
        ({"format_version": "1"}, "invalid", "format_version"),
    ],
)
def test_reader_refuses_unknown_types_and_newer_versions(change, code, field):
    document = {
        **binfile.manifest(generated_by="t", source={}, libraries="all", files=[], relations=[]),
        **change,
    }
    with pytest.raises(binfile.BinfileError) as refused:
        BinfileReader(io.BytesIO(binfile_bytes(manifest=document)))
    assert (refused.value.code, refused.value.field) == (code, field)
    assert "manifest.json" == refused.value.entry


def test_reader_refuses_an_entry_that_differs_from_the_digest():
    def wrong_sha(digest):
        digest["entries"][BLOB]["sha256"] = "0" * 64

    reader = BinfileReader(
        io.BytesIO(binfile_bytes(extra=[(BLOB, b"abc", STORED)], tamper=wrong_sha))
    )
    with pytest.raises(binfile.BinfileError, match="blobs/(ab)+ does not match its sha256"):
        reader.verify()


def test_reader_refuses_missing_and_unlisted_entries():
    def add_ghost(digest):
        digest["entries"][GHOST] = {"sha256": "0" * 64, "size": 1}

    with pytest.raises(binfile.BinfileError, match="lacks") as missing:
        BinfileReader(io.BytesIO(binfile_bytes(tamper=add_ghost))).verify()
    assert missing.value.entry == GHOST

    def forget_blob(digest):
        del digest["entries"][BLOB]

    with pytest.raises(binfile.BinfileError, match="not listed"):
        BinfileReader(
            io.BytesIO(binfile_bytes(extra=[(BLOB, b"abc", STORED)], tamper=forget_blob))
        ).verify()


def test_reader_refuses_truncated_and_non_zip_input():
    data = binfile_bytes()
    for broken in (data[: len(data) // 2], b"not a zip at all", b""):
        with pytest.raises(binfile.BinfileError) as refused:
            BinfileReader(io.BytesIO(broken))
        assert refused.value.code == "not_zip"


def test_encode_json_is_sorted_and_compact():
    assert binfile.encode_json({"b": 1, "a": [1, {"d": 2, "c": "é"}]}) == (
        '{"a":[1,{"c":"é","d":2}],"b":1}'.encode()
    )
    assert json.loads(binfile.encode_json({"x": None})) == {"x": None}


def raw_zip(entries: list[tuple[str, bytes]], *, symlink: str = "") -> bytes:
    """An archive made by Python's zipfile, as an attacker would make one."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name)
            if name == symlink:
                info.external_attr = 0o120777 << 16
            archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


MANIFEST = binfile.encode_json(
    binfile.manifest(generated_by="t", source={}, libraries="all", files=[], relations=[])
)


@pytest.mark.parametrize(
    "entries, symlink, code",
    [
        ([("manifest.json", MANIFEST), ("../../etc/passwd", b"x")], "", "unexpected_entry"),
        ([("manifest.json", MANIFEST), ("/etc/passwd", b"x")], "", "unexpected_entry"),
        ([("manifest.json", MANIFEST), ("files/a/../../x.json", b"x")], "", "unexpected_entry"),
        ([("manifest.json", MANIFEST), (BLOB, b"target")], BLOB, "symlink_entry"),
        ([("manifest.json", MANIFEST), (BLOB, b"1"), (BLOB, b"2")], "", "duplicate_entry"),
        ([("manifest.json", MANIFEST), (BLOB, b"\0" * (64 * 1024**2))], "", "compression_ratio"),
    ],
)
def test_hostile_archives_are_refused_from_their_directory(entries, symlink, code):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        data = raw_zip(entries, symlink=symlink)
    with pytest.raises(binfile.BinfileError) as refused:
        BinfileReader(io.BytesIO(data))
    assert refused.value.code == code


def test_limits_on_entries_and_bytes():
    from exports.binfile.reader import Limits

    data = binfile_bytes(extra=[(BLOB, b"x" * 5000, STORED)])
    with pytest.raises(binfile.BinfileError) as too_many:
        BinfileReader(io.BytesIO(data), Limits(max_entries=2))
    assert too_many.value.code == "too_many_entries"
    with pytest.raises(binfile.BinfileError) as too_large:
        BinfileReader(io.BytesIO(data), Limits(max_bytes=1000))
    assert too_large.value.code == "too_large"


def test_nesting_is_counted_outside_strings():
    """Brackets and escaped quotes inside strings do not count; the refusal names the
    top-level field the nesting is under."""
    from exports.binfile.reader import Limits

    def manifest(source):
        return binfile.manifest(
            generated_by="test", source=source, libraries="all", files=[], relations=[]
        )

    tricky = {"server": '[[[{{{\\"]]]"[[{', "note": "}}}"}
    BinfileReader(io.BytesIO(binfile_bytes(manifest=manifest(tricky))), Limits(max_depth=3))
    with pytest.raises(binfile.BinfileError) as too_deep:
        BinfileReader(
            io.BytesIO(binfile_bytes(manifest=manifest({**tricky, "x": [[1]]}))),
            Limits(max_depth=3),
        )
    assert (too_deep.value.code, too_deep.value.entry, too_deep.value.field) == (
        "too_deep",
        "manifest.json",
        "source",
    )
