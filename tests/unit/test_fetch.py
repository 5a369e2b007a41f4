"""texflow.fetch against a real HTTP server on 127.0.0.1 (tests/httpserver.py) and local files."""

from __future__ import annotations

import gzip
import hashlib
import logging
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from texflow import fetch
from texflow.errors import DownloadError, InputDataError
from texflow.fetch import fetch_dataset, fetch_source
from texflow.manifest import read_manifest

from tests.httpserver import http_server  # noqa: F401

FAST = dict(retries=3, backoff_seconds=0.01, timeout_seconds=5)


def payload(size: int = 100_000, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


# --------------------------------------------------------------------------------------------
# transfers: resume, retries, give up
# --------------------------------------------------------------------------------------------
def test_cut_transfer_is_resumed_with_range(http_server, tmp_path):
    data = payload(100_000)
    http_server.add("/matrix.bin", data, cut_after=40_000)
    size, digest = fetch_source(
        url=http_server.url("/matrix.bin"),
        destination=tmp_path / "m.bin",
        sha256=sha(data),
        dataset="ds",
        **FAST,
    )
    assert (tmp_path / "m.bin").read_bytes() == data
    assert (size, digest) == (len(data), sha(data))
    first, second = http_server.requests_for("/matrix.bin")
    assert (first.range, first.status, first.bytes_sent) == (None, 200, 40_000)
    assert (second.range, second.status, second.bytes_sent) == ("bytes=40000-", 206, 60_000)
    assert leftovers(tmp_path) == ["m.bin"]


def test_resume_restarts_when_server_ignores_range(http_server, tmp_path):
    data = payload(50_000)
    http_server.add("/m.bin", data, cut_after=10_000, ranges=False)
    fetch_source(url=http_server.url("/m.bin"), destination=tmp_path / "m.bin", **FAST)
    assert (tmp_path / "m.bin").read_bytes() == data
    assert [(r.range, r.status) for r in http_server.requests_for("/m.bin")] == [
        (None, 200),
        ("bytes=10000-", 200),  # whole file again: must be written from the start, not appended
    ]


def test_retries_after_503(http_server, tmp_path):
    data = payload(1000)
    http_server.add("/m.bin", data, fail_first=3)
    fetch_source(url=http_server.url("/m.bin"), destination=tmp_path / "m.bin", **FAST)
    assert (tmp_path / "m.bin").read_bytes() == data
    assert [r.status for r in http_server.requests_for("/m.bin")] == [503, 503, 503, 200]


def test_gives_up_after_retries_on_503(http_server, tmp_path):
    http_server.add("/m.bin", payload(1000), fail_first=100)
    with pytest.raises(
        DownloadError, match=r"HTTP 503 Service Unavailable after 3 attempts"
    ) as error:
        fetch_source(
            url=http_server.url("/m.bin"),
            destination=tmp_path / "m.bin",
            dataset="ds",
            retries=2,
            backoff_seconds=0.01,
            timeout_seconds=5,
        )
    assert "dataset ds" in str(error.value) and http_server.url("/m.bin") in str(error.value)
    assert len(http_server.requests_for("/m.bin")) == 3
    assert leftovers(tmp_path) == []


def test_not_found_is_not_retried(http_server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch_source(url=http_server.url("/missing.gz"), destination=tmp_path / "x.gz", **FAST)
    assert len(http_server.requests_for("/missing.gz")) == 1


def test_transfer_cut_every_time_fails_and_keeps_part_for_later(http_server, tmp_path):
    data = payload(10_000)
    http_server.add("/m.bin", data, cut_after=1000, cut_times=None)
    with pytest.raises(
        DownloadError, match=r"download cut short: 3,000 of 10,000 bytes after 3 attempts"
    ):
        fetch_source(
            url=http_server.url("/m.bin"),
            destination=tmp_path / "m.bin",
            retries=2,
            backoff_seconds=0.01,
            timeout_seconds=5,
        )
    assert [r.range for r in http_server.requests_for("/m.bin")] == [
        None,
        "bytes=1000-",
        "bytes=2000-",
    ]
    assert not (tmp_path / "m.bin").exists()
    # the next run resumes the 3,000 bytes already here
    assert (tmp_path / "m.bin.part").read_bytes() == data[:3000]
    http_server.add("/m.bin", data)
    fetch_source(
        url=http_server.url("/m.bin"), destination=tmp_path / "m.bin", sha256=sha(data), **FAST
    )
    assert (tmp_path / "m.bin").read_bytes() == data
    assert http_server.requests_for("/m.bin")[-1].range == "bytes=3000-"
    assert leftovers(tmp_path) == ["m.bin"]


def test_stale_part_of_another_file_is_downloaded_again(http_server, tmp_path):
    data = payload(20_000)
    (tmp_path / "m.bin.part").write_bytes(payload(5000, seed=1))  # left by an older version
    http_server.add("/m.bin", data)
    fetch_source(
        url=http_server.url("/m.bin"), destination=tmp_path / "m.bin", sha256=sha(data), **FAST
    )
    assert (tmp_path / "m.bin").read_bytes() == data
    assert [r.range for r in http_server.requests_for("/m.bin")] == ["bytes=5000-", None]


def test_stalled_transfer_times_out(http_server, tmp_path):
    http_server.add("/slow.bin", payload(10_000), chunk_size=1000, chunk_delay=1.0)
    with pytest.raises(
        DownloadError,
        match=r"download cut short: 1,000 of 10,000 bytes after 1 attempts.*timed out",
    ):
        fetch_source(
            url=http_server.url("/slow.bin"),
            destination=tmp_path / "s.bin",
            retries=0,
            backoff_seconds=0.01,
            timeout_seconds=0.3,
        )


def test_progress_is_logged(http_server, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(fetch, "CHUNK_BYTES", 8192)
    monkeypatch.setattr(fetch, "PROGRESS_MIN_SECONDS", 0.0)
    http_server.add("/m.bin", payload(100_000))
    with caplog.at_level(logging.INFO, logger="texflow.fetch"):
        fetch_source(url=http_server.url("/m.bin"), destination=tmp_path / "m.bin", **FAST)
    lines = [r.getMessage() for r in caplog.records if "downloading" in r.getMessage()]
    shares = [int(line.split("(")[1].split(" %")[0]) for line in lines]
    assert 8 <= len(shares) <= 9 and shares == sorted(shares) and shares[-1] < 100, (
        lines
    )  # ~ every 10 %
    assert all("of 100,000 bytes" in line and "/s" in line for line in lines)
    assert any(
        "received 100,000 of 100,000 bytes (100 %)" in r.getMessage() for r in caplog.records
    )


# --------------------------------------------------------------------------------------------
# checks: HTML, size, checksum, gzip
# --------------------------------------------------------------------------------------------
def test_html_error_page_is_refused(http_server, tmp_path):
    http_server.add("/matrix.txt.gz", b"", html_error=True)
    with pytest.raises(
        DownloadError, match=r"server sent an HTML page \(text/html\), not data"
    ) as error:
        fetch_source(
            url=http_server.url("/matrix.txt.gz"),
            destination=tmp_path / "matrix.txt.gz",
            dataset="ds",
            **FAST,
        )
    assert "[dataset ds, file http://127.0.0.1" in str(error.value)
    assert leftovers(tmp_path) == []


def test_html_body_with_binary_content_type_is_refused(http_server, tmp_path):
    http_server.add("/m.h5ad", b"\n<!DOCTYPE html><html><body>Login</body></html>")
    with pytest.raises(
        DownloadError, match=r"HTML page \(the file starts with '<!DOCTYPE html>'\)"
    ):
        fetch_source(url=http_server.url("/m.h5ad"), destination=tmp_path / "m.h5ad", **FAST)
    assert leftovers(tmp_path) == []


def test_html_file_named_html_is_accepted(http_server, tmp_path):
    http_server.add("/index.html", b"<html>fine</html>", content_type="text/html")
    fetch_source(url=http_server.url("/index.html"), destination=tmp_path / "index.html", **FAST)
    assert (tmp_path / "index.html").read_bytes() == b"<html>fine</html>"


def test_checksum_mismatch_leaves_nothing(http_server, tmp_path):
    data = payload(5000)
    wrong = "0" * 64
    http_server.add("/m.bin", data)
    with pytest.raises(
        DownloadError, match=f"checksum mismatch: expected sha256 {wrong}, got {sha(data)}"
    ):
        fetch_source(
            url=http_server.url("/m.bin"), destination=tmp_path / "m.bin", sha256=wrong, **FAST
        )
    assert leftovers(tmp_path) == []


def test_size_mismatch_with_config_is_refused(http_server, tmp_path):
    http_server.add("/m.bin", payload(5000))
    with pytest.raises(
        DownloadError, match=r"size mismatch: the config says 5,001 bytes, got 5,000"
    ):
        fetch_source(
            url=http_server.url("/m.bin"),
            destination=tmp_path / "m.bin",
            expected_bytes=5001,
            **FAST,
        )
    assert leftovers(tmp_path) == []


def gzipped(text_lines: int = 5000) -> bytes:
    return gzip.compress(
        "".join(f"GENE{i}\t{i}\t{i * 2}\n" for i in range(text_lines)).encode(), mtime=0
    )


def test_corrupt_gzip_is_refused(http_server, tmp_path):
    good = gzipped()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF  # one damaged byte in the deflate stream
    http_server.add("/m.txt.gz", bytes(bad))
    with pytest.raises(DownloadError, match=r"corrupt gzip") as error:
        fetch_source(
            url=http_server.url("/m.txt.gz"),
            destination=tmp_path / "m.txt.gz",
            dataset="ds",
            **FAST,
        )
    assert "dataset ds" in str(error.value) and "/m.txt.gz" in str(error.value)
    assert leftovers(tmp_path) == []


def test_gzip_truncated_at_source_is_refused(http_server, tmp_path):
    http_server.add("/m.txt.gz", gzipped()[:-100])  # complete transfer of an incomplete file
    with pytest.raises(DownloadError, match=r"corrupt gzip: .*ended before the end-of-stream"):
        fetch_source(url=http_server.url("/m.txt.gz"), destination=tmp_path / "m.txt.gz", **FAST)


def test_gz_name_without_gzip_content_is_refused(http_server, tmp_path):
    http_server.add("/m.txt.gz", b"GENE\tCELL1\nCD8A\t3\n")
    with pytest.raises(DownloadError, match=r"not a gzip file although named .gz"):
        fetch_source(url=http_server.url("/m.txt.gz"), destination=tmp_path / "m.txt.gz", **FAST)


def test_multi_member_gzip_is_accepted(http_server, tmp_path):
    data = gzipped(100) + gzipped(200)  # e.g. bgzip or concatenated parts
    http_server.add("/m.txt.gz", data, content_type="application/gzip")
    fetch_source(url=http_server.url("/m.txt.gz"), destination=tmp_path / "m.txt.gz", **FAST)
    assert (tmp_path / "m.txt.gz").read_bytes() == data


# --------------------------------------------------------------------------------------------
# local sources
# --------------------------------------------------------------------------------------------
def test_local_relative_path_and_file_url(tmp_path, monkeypatch):
    data = gzipped()
    (tmp_path / "in").mkdir()
    (tmp_path / "in/m.txt.gz").write_bytes(data)
    monkeypatch.chdir(tmp_path)
    fetch_source(url="in/m.txt.gz", destination="out/a.txt.gz", sha256=sha(data), **FAST)
    fetch_source(
        url=(tmp_path / "in/m.txt.gz").as_uri(),
        destination="out/b.txt.gz",
        sha256=sha(data),
        **FAST,
    )
    assert (
        (tmp_path / "out/a.txt.gz").read_bytes() == data == (tmp_path / "out/b.txt.gz").read_bytes()
    )


def test_local_source_checked_like_a_download(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("m.txt.gz").write_bytes(b"not gzip")
    with pytest.raises(DownloadError, match="not a gzip file"):
        fetch_source(url="m.txt.gz", destination="out/m.txt.gz", **FAST)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch_source(url="m.txt.gz", destination="out/m.bin", sha256="1" * 64, **FAST)
    assert leftovers(tmp_path / "out") == []


def test_local_source_is_linked_by_default_and_copied_on_request(tmp_path, monkeypatch):
    """link (the default): the file is not duplicated, and it is checked through the link;
    copy: an independent file. The .part of either is gone."""
    data = gzipped()
    (tmp_path / "in").mkdir()
    (tmp_path / "in/m.txt.gz").write_bytes(data)
    monkeypatch.chdir(tmp_path)
    fetch_source(url="in/m.txt.gz", destination="out/linked.txt.gz", sha256=sha(data), **FAST)
    fetch_source(url="in/m.txt.gz", destination="out/copied.txt.gz", local_sources="copy", **FAST)
    linked, copied = tmp_path / "out/linked.txt.gz", tmp_path / "out/copied.txt.gz"
    assert linked.is_symlink() and linked.resolve() == (tmp_path / "in/m.txt.gz").resolve()
    assert not copied.is_symlink() and copied.read_bytes() == data
    assert leftovers(tmp_path / "out") == ["copied.txt.gz", "linked.txt.gz"]
    # a linked source that fails a check leaves no link, and the source is untouched
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch_source(url="in/m.txt.gz", destination="out/bad.txt.gz", sha256="1" * 64, **FAST)
    assert leftovers(tmp_path / "out") == ["copied.txt.gz", "linked.txt.gz"]
    assert (tmp_path / "in/m.txt.gz").read_bytes() == data


def test_switching_local_sources_mode_places_the_file_again(tmp_path, monkeypatch):
    """A rerun keeps a fetched local source only when it is placed as the config now asks:
    a user who switches to copy (to delete or move the original) gets a real copy."""
    data = gzipped()
    monkeypatch.chdir(tmp_path)
    Path("m.txt.gz").write_bytes(data)
    config = {"id": "ds", "sources": [{"name": "matrix", "url": "m.txt.gz"}]}
    first = fetch_dataset(config, directory="dl", **FAST)
    assert Path("dl/m.txt.gz").is_symlink()
    again = fetch_dataset(config, directory="dl", **FAST)
    assert "kept from the fetch" in again.notes[0]
    copied = fetch_dataset(config, directory="dl", local_sources="copy", **FAST)
    assert "fetched from" in copied.notes[0]
    assert not Path("dl/m.txt.gz").is_symlink() and Path("dl/m.txt.gz").read_bytes() == data
    assert first.files[0].sha256 == copied.files[0].sha256 == sha(data)
    Path("m.txt.gz").unlink()
    assert Path("dl/m.txt.gz").read_bytes() == data


def test_edited_local_source_is_checked_again(tmp_path, monkeypatch):
    """Through a link, an edited source changes the fetched file: the rerun sees the new
    checksum, records it and says it fetched again (the rule's input makes Snakemake rerun)."""
    monkeypatch.chdir(tmp_path)
    Path("m.txt.gz").write_bytes(gzipped())
    config = {"id": "ds", "sources": [{"name": "matrix", "url": "m.txt.gz"}]}
    before = fetch_dataset(config, directory="dl", **FAST)
    edited = gzip.compress(b"gene\tc1\nCD8A\t5\n")
    Path("m.txt.gz").write_bytes(edited)
    after = fetch_dataset(config, directory="dl", **FAST)
    assert before.files[0].sha256 != after.files[0].sha256 == sha(edited)
    assert "fetched from" in after.notes[0]


def test_local_sources_mode_is_checked():
    with pytest.raises(ValueError, match="local_sources must be one of"):
        fetch_source(url="x", destination="y", local_sources="hardlink", **FAST)


def test_missing_local_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DownloadError, match=r"local source not found: .*/nothing/here.h5ad"):
        fetch_source(url="nothing/here.h5ad", destination="out/here.h5ad", dataset="ds", **FAST)


def test_unsupported_scheme(tmp_path):
    with pytest.raises(DownloadError, match="unsupported URL scheme 'ftp'"):
        fetch_source(url="ftp://ftp.example.org/x.gz", destination=tmp_path / "x.gz", **FAST)


# --------------------------------------------------------------------------------------------
# datasets and the manifest
# --------------------------------------------------------------------------------------------
def two_sources(http_server, tmp_path):
    matrix, cells = gzipped(), b"cell\tpatient\nc1\tP1\n"
    http_server.add("/geo/GSE1_matrix.txt.gz", matrix)
    (tmp_path / "cells.tsv").write_bytes(cells)
    dataset = {
        "id": "GSE1",
        "sources": [
            {
                "name": "matrix",
                "url": http_server.url("/geo/GSE1_matrix.txt.gz"),
                "sha256": sha(matrix),
            },
            {
                "name": "cells",
                "url": str(tmp_path / "cells.tsv"),
                "filename": "GSE1_cells.tsv",
                "bytes": len(cells),
            },
        ],
    }
    return dataset, matrix, cells


def test_manifest_lists_every_checked_file(http_server, tmp_path):
    dataset, matrix, cells = two_sources(http_server, tmp_path)
    out = tmp_path / "downloads/GSE1"
    rows = fetch_dataset(dataset, directory=out, **FAST).files
    assert rows == read_manifest(out / "manifest.tsv")
    text = (out / "manifest.tsv").read_text().splitlines()
    assert text[0] == "name\turl\tfilename\tbytes\tsha256\tdownloaded_at"
    assert [(r.name, r.url, r.filename, r.bytes, r.sha256) for r in rows] == [
        (
            "matrix",
            http_server.url("/geo/GSE1_matrix.txt.gz"),
            "GSE1_matrix.txt.gz",
            len(matrix),
            sha(matrix),
        ),
        ("cells", str(tmp_path / "cells.tsv"), "GSE1_cells.tsv", len(cells), sha(cells)),
    ]
    for row in rows:
        assert row.downloaded_at.endswith("Z")
        age = datetime.now(UTC) - datetime.fromisoformat(row.downloaded_at)
        assert 0 <= age.total_seconds() < 60
    assert (out / "GSE1_matrix.txt.gz").read_bytes() == matrix
    assert (out / "GSE1_cells.tsv").read_bytes() == cells


def test_rerun_does_not_download_again(http_server, tmp_path):
    dataset, matrix, _ = two_sources(http_server, tmp_path)
    out = tmp_path / "downloads/GSE1"
    first = fetch_dataset(dataset, directory=out, **FAST).files
    (out / "manifest.tsv").unlink()  # as Snakemake does before it reruns a job
    second = fetch_dataset(dataset, directory=out, **FAST).files
    assert second == first  # same rows, same download times
    assert len(http_server.requests_for("/geo/GSE1_matrix.txt.gz")) == 1

    (out / "GSE1_matrix.txt.gz").write_bytes(b"damaged")  # changed on disk: fetched again
    fetch_dataset(dataset, directory=out, **FAST)
    assert len(http_server.requests_for("/geo/GSE1_matrix.txt.gz")) == 2
    assert (out / "GSE1_matrix.txt.gz").read_bytes() == matrix


def test_result_notes_say_what_was_fetched_and_what_kept(http_server, tmp_path):
    dataset, matrix, cells = two_sources(http_server, tmp_path)
    out = tmp_path / "downloads/GSE1"
    first = fetch_dataset(dataset, directory=out, **FAST)
    assert (first.dataset, first.manifest) == ("GSE1", out / "manifest.tsv")
    assert first.notes == [
        (
            f"matrix: GSE1_matrix.txt.gz fetched from {http_server.url('/geo/GSE1_matrix.txt.gz')} "
            f"({len(matrix):,} bytes, sha256 {sha(matrix)})"
        ),
        (
            f"cells: GSE1_cells.tsv fetched from {tmp_path / 'cells.tsv'} "
            f"({len(cells):,} bytes, sha256 {sha(cells)})"
        ),
    ]
    second = fetch_dataset(dataset, directory=out, **FAST)
    assert second.files == first.files
    assert second.notes[0] == (
        f"matrix: GSE1_matrix.txt.gz kept from the fetch at {first.files[0].downloaded_at} "
        f"({len(matrix):,} bytes, sha256 {sha(matrix)} as recorded then)"
    )


def test_manifest_that_is_not_one_stops_naming_file_and_dataset(tmp_path):
    path = tmp_path / "manifest.tsv"
    path.write_text("name\tfile\nm\tm.gz\n")
    with pytest.raises(InputDataError, match=r"\[dataset D, file .*manifest.tsv\] not a texflow"):
        read_manifest(path, dataset="D")
    path.write_text(
        "name\turl\tfilename\tbytes\tsha256\tdownloaded_at\nm\thttp://h/m\tm\tten\tab\tT\n"
    )
    with pytest.raises(InputDataError, match="line 2 .*bytes must be an integer"):
        read_manifest(path, dataset="D")
    path.write_text("name\turl\tfilename\tbytes\tsha256\tdownloaded_at\nm\thttp://h/m\n")
    with pytest.raises(InputDataError, match="line 2 has fewer than 6 fields"):
        read_manifest(path, dataset="D")
    with pytest.raises(InputDataError, match="cannot read the download manifest"):
        read_manifest(tmp_path / "missing.tsv", dataset="D")


def test_failed_source_writes_no_manifest(http_server, tmp_path):
    dataset, _, _ = two_sources(http_server, tmp_path)
    dataset["sources"][1]["bytes"] += 1
    out = tmp_path / "downloads/GSE1"
    with pytest.raises(DownloadError, match=r"\[dataset GSE1, file .*cells.tsv\] size mismatch"):
        fetch_dataset(dataset, directory=out, **FAST)
    assert not (out / "manifest.tsv").exists()
    assert not (out / "GSE1_cells.tsv").exists()
    # the file that passed is kept and not fetched again by the next run
    dataset["sources"][1]["bytes"] -= 1
    fetch_dataset(dataset, directory=out, **FAST)
    assert len(http_server.requests_for("/geo/GSE1_matrix.txt.gz")) == 1


def test_two_sources_with_one_filename_is_an_error(tmp_path):
    dataset = {
        "id": "GSE2",
        "sources": [
            {"name": "a", "url": "https://example.org/x/matrix.txt.gz"},
            {"name": "b", "url": "https://example.org/y/matrix.txt.gz"},
        ],
    }
    with pytest.raises(
        DownloadError, match=r"sources 'a' and 'b' would both be saved as 'matrix.txt.gz'"
    ):
        fetch_dataset(dataset, directory=tmp_path / "d", **FAST)


def test_filename_from_url():
    assert (
        fetch.source_filename({"url": "https://h/geo/GSE1%5Fm.txt.gz?download=1"})
        == "GSE1_m.txt.gz"
    )
    assert fetch.source_filename({"url": "resources/demo/x.h5ad"}) == "x.h5ad"
    assert fetch.source_filename({"url": "file:///data/a%20b.h5"}) == "a b.h5"
    assert fetch.source_filename({"url": "https://h/x", "filename": "y.gz"}) == "y.gz"


def test_local_source_paths_are_the_rule_inputs():
    sources = [
        {"name": "a", "url": "https://h/x.gz"},
        {"name": "b", "url": "resources/demo/x.h5ad"},
        {"name": "c", "url": "file:///data/a%20b.h5"},
        {"name": "d", "url": "/abs/c.tsv"},
    ]
    assert fetch.local_source_paths(sources) == [
        "resources/demo/x.h5ad",
        "/data/a b.h5",
        "/abs/c.tsv",
    ]
