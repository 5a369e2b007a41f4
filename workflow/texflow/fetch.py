"""Download a dataset's source files, check them, and record what was fetched.

Every source (HTTP(S) URL, ``file://`` URL or local path) is streamed into a ``.part`` file
beside its destination, checked, and renamed into place only when every check passes:

1. the transfer is complete (bytes received == Content-Length / Content-Range total); a transfer
   cut short is resumed with ``Range: bytes=<have>-`` (appended on 206, restarted on 200);
2. it is not an HTML page served in place of data (error pages, login walls);
3. its size equals the ``bytes`` given in the dataset config, when given;
4. its SHA-256 equals the ``sha256`` given in the dataset config, when given (always computed
   and recorded);
5. a ``.gz`` file decompresses to the end (a corrupt or truncated gzip stops here, not in ingest).

Retries on connection errors and on 408/429/5xx answers are urllib3's ``Retry`` (exponential
back-off, honours ``Retry-After``); resuming a body cut short is done here, because urllib3
retries requests, not the reading of a response body.

:func:`fetch_dataset` writes ``manifest.tsv`` (name, url, filename, bytes, sha256,
downloaded_at) last, atomically: its presence means every file beside it passed the checks.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import logging
import os
import shutil
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .errors import DownloadError

logger = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_COLUMNS",
    "FetchedFile",
    "fetch_dataset",
    "fetch_source",
    "local_source_paths",
    "make_session",
    "read_manifest",
    "source_filename",
]

#: columns of manifest.tsv, in order
MANIFEST_COLUMNS = ("name", "url", "filename", "bytes", "sha256", "downloaded_at")
#: per-source records of finished downloads, updated after each one: lets a rerun (whose
#: manifest Snakemake has removed) or an interrupted multi-file fetch skip what is already here
STATE_FILE = ".fetched.tsv"
#: statuses worth retrying: timeouts, rate limits and server-side trouble (RFC 9110 / 6585)
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
CHUNK_BYTES = 1024 * 1024
#: longest wait between two attempts, however many failed before
MAX_BACKOFF_SECONDS = 120.0
#: a Retry-After longer than this is not honoured as such (a job should not sleep for hours)
MAX_RETRY_AFTER_SECONDS = 600
#: log progress at each 10 % of a transfer, but not more often than this ...
PROGRESS_MIN_SECONDS = 2.0
#: ... and at least this often when a transfer is slow (or its size is unknown)
PROGRESS_MAX_SECONDS = 15.0
HTML_TYPES = ("text/html", "application/xhtml+xml")
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class FetchedFile:
    """One row of manifest.tsv: a source file that passed every check."""

    name: str
    url: str
    filename: str
    bytes: int
    sha256: str
    #: ISO-8601 UTC time the file was downloaded (kept when a rerun skips the download)
    downloaded_at: str


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def make_session(*, retries: int, backoff_seconds: float) -> requests.Session:
    """A requests Session that retries connection errors and 408/429/5xx answers.

    Waits grow exponentially: urllib3 retries the first failure at once, then waits
    ``backoff_seconds``, ``2 * backoff_seconds``, ... (at most ``MAX_BACKOFF_SECONDS``), or what
    the server's ``Retry-After`` asks for (at most ``MAX_RETRY_AFTER_SECONDS``).
    """
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        allowed_methods=frozenset({"GET", "HEAD"}),
        status_forcelist=RETRY_STATUSES,
        # urllib3 sleeps backoff_factor * 2**(n-1) before retry n >= 2
        backoff_factor=backoff_seconds / 2,
        backoff_max=MAX_BACKOFF_SECONDS,
        # return the last error answer instead of raising MaxRetryError: we report it ourselves
        raise_on_status=False,
        respect_retry_after_header=True,
        retry_after_max=MAX_RETRY_AFTER_SECONDS,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = f"texflow-fetch {requests.utils.default_user_agent()}"
    return session


def source_filename(source: Mapping) -> str:
    """The file name a source is saved under: its ``filename``, else the URL's last path part."""
    if source.get("filename"):
        return str(source["filename"])
    url = str(source["url"])
    if _scheme(url) in ("http", "https", "file"):
        return unquote(urlparse(url).path.rstrip("/").rsplit("/", 1)[-1])
    return Path(url).name


def local_source_paths(sources: Iterable[Mapping]) -> list[str]:
    """The local files among `sources`: plain paths and the paths of ``file://`` URLs.

    The fetch rule declares them as inputs, so that a changed local file is copied again and a
    missing one stops the run before any job starts, naming the file.
    """
    paths = []
    for source in sources:
        url = str(source["url"])
        scheme = _scheme(url)
        if scheme == "file":
            paths.append(url2pathname(urlparse(url).path))
        elif scheme == "":
            paths.append(url)
    return paths


def fetch_source(
    *,
    url: str,
    destination: str | os.PathLike,
    sha256: str | None = None,
    expected_bytes: int | None = None,
    retries: int = 5,
    backoff_seconds: float = 2.0,
    timeout_seconds: float = 60.0,
    dataset: str | None = None,
    session: requests.Session | None = None,
) -> tuple[int, str]:
    """Fetch `url` (HTTP(S), ``file://`` or a local path) to `destination`, checked.

    The data go to ``<destination>.part`` first; `destination` appears only when the transfer
    is complete and every check passed (see the module docstring). An existing ``.part`` (from
    an interrupted job) is resumed.

    Parameters
    ----------
    url
        ``http(s)://`` or ``file://`` URL, or a local path (relative to the working directory).
    destination
        Where the checked file is put.
    sha256
        Expected SHA-256 (hex); None: not checked, only computed.
    expected_bytes
        Expected size in bytes; None: not checked beyond what the server announces.
    retries
        How many times a failed request, or a transfer cut short, is tried again.
    backoff_seconds
        First wait between attempts; it doubles with each further attempt.
    timeout_seconds
        Longest wait for the server to connect or to send the next piece of data.
    dataset
        Dataset id, for error messages.
    session
        A session from :func:`make_session` to reuse across sources.

    Returns
    -------
    ``(bytes, sha256)`` of the file now at `destination`.

    Raises
    ------
    DownloadError
        Naming the dataset, the URL or file, and the problem.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    scheme = _scheme(url)
    checks = dict(
        url=url,
        filename=destination.name,
        sha256=sha256,
        expected_bytes=expected_bytes,
        dataset=dataset,
    )
    try:
        if scheme in ("http", "https"):
            own_session = session is None
            session = session or make_session(retries=retries, backoff_seconds=backoff_seconds)
            try:
                resumed_stale = part.exists() and part.stat().st_size > 0
                _download(
                    session,
                    url,
                    part,
                    retries=retries,
                    backoff_seconds=backoff_seconds,
                    timeout_seconds=timeout_seconds,
                    dataset=dataset,
                    filename=destination.name,
                )
                try:
                    size, digest = _verify(part, **checks)
                except DownloadError as error:
                    if not resumed_stale:
                        raise
                    # the .part left by an earlier job may belong to an older version of the file
                    logger.warning(
                        "%s; the transfer resumed a .part left by an earlier run: "
                        "downloading %s again from the start",
                        error.problem,
                        url,
                    )
                    part.unlink(missing_ok=True)
                    _download(
                        session,
                        url,
                        part,
                        retries=retries,
                        backoff_seconds=backoff_seconds,
                        timeout_seconds=timeout_seconds,
                        dataset=dataset,
                        filename=destination.name,
                    )
                    size, digest = _verify(part, **checks)
            finally:
                if own_session:
                    session.close()
        elif scheme in ("file", ""):
            _copy_local(_local_path(url, dataset=dataset), part, dataset=dataset, url=url)
            size, digest = _verify(part, **checks)
        else:
            raise DownloadError(
                f"unsupported URL scheme {scheme!r}: use http(s)://, file:// or a local path",
                dataset=dataset,
                path=url,
            )
        os.replace(part, destination)
    except BaseException:
        # a failed check must leave nothing that looks like data; an interrupted or cut
        # transfer keeps its .part so that the next run can resume it
        if part.exists() and not _resumable(part):
            part.unlink(missing_ok=True)
        raise
    logger.info("%s: %s bytes, sha256 %s -> %s", url, f"{size:,}", digest, destination)
    return size, digest


def fetch_dataset(
    dataset_cfg: Mapping,
    *,
    directory: str | os.PathLike,
    manifest: str | os.PathLike | None = None,
    retries: int = 5,
    backoff_seconds: float = 2.0,
    timeout_seconds: float = 60.0,
) -> list[FetchedFile]:
    """Fetch every source of a dataset into `directory` and write its manifest last.

    A source already in `directory` whose content still has the checksum recorded when it was
    fetched (and matches the config's ``sha256``/``bytes``, when given) is not fetched again.

    Parameters
    ----------
    dataset_cfg
        The dataset config (``id`` and ``sources``: name, url, optional filename/sha256/bytes).
    directory
        Where the files go: ``resources/downloads/{dataset}``.
    manifest
        Path of the manifest; default ``<directory>/manifest.tsv``.
    retries, backoff_seconds, timeout_seconds
        As for :func:`fetch_source` (config section ``fetch``).

    Returns
    -------
    The manifest rows, one per source, in the config's order.
    """
    dataset = str(dataset_cfg["id"])
    sources = list(dataset_cfg["sources"])
    directory = Path(directory)
    manifest = Path(manifest) if manifest is not None else directory / "manifest.tsv"
    filenames = _check_filenames(sources, dataset=dataset, reserved={manifest.name, STATE_FILE})
    directory.mkdir(parents=True, exist_ok=True)

    state_path = directory / STATE_FILE
    known = {row.filename: row for row in _read_rows(state_path)}
    done: list[FetchedFile] = []
    with make_session(retries=retries, backoff_seconds=backoff_seconds) as session:
        for source, filename in zip(sources, filenames):
            destination = directory / filename
            record = _still_valid(known.get(filename), source, destination)
            if record is not None:
                logger.info(
                    "%s: already fetched (%s bytes, checksum as recorded at %s): not fetched again",
                    destination,
                    f"{record.bytes:,}",
                    record.downloaded_at,
                )
                record = FetchedFile(**{**asdict(record), "name": source["name"]})
            else:
                logger.info("fetching %s (%s) -> %s", source["name"], source["url"], destination)
                size, digest = fetch_source(
                    url=str(source["url"]),
                    destination=destination,
                    sha256=source.get("sha256"),
                    expected_bytes=source.get("bytes"),
                    retries=retries,
                    backoff_seconds=backoff_seconds,
                    timeout_seconds=timeout_seconds,
                    dataset=dataset,
                    session=session,
                )
                record = FetchedFile(
                    name=str(source["name"]),
                    url=str(source["url"]),
                    filename=filename,
                    bytes=size,
                    sha256=digest,
                    downloaded_at=_utc_now(),
                )
            done.append(record)
            known[filename] = record
            _write_rows(state_path, known.values())
    _write_rows(manifest, done)
    logger.info(
        "dataset %s: %d source file(s) fetched and checked; manifest %s",
        dataset,
        len(done),
        manifest,
    )
    return done


def read_manifest(path: str | os.PathLike) -> list[FetchedFile]:
    """The rows of a manifest.tsv written by :func:`fetch_dataset`."""
    path = Path(path)
    if not path.is_file():
        raise DownloadError("manifest not found: run the fetch rule first", path=path)
    rows = _read_rows(path)
    return rows


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------
def _download(
    session: requests.Session,
    url: str,
    part: Path,
    *,
    retries: int,
    backoff_seconds: float,
    timeout_seconds: float,
    dataset: str | None,
    filename: str,
) -> None:
    """Stream `url` into `part`, resuming with Range after a transfer cut short."""
    attempt = 0
    validator = None  # ETag / Last-Modified of the first answer: resume only the same file
    while True:
        attempt += 1
        have = part.stat().st_size if part.exists() else 0
        headers = {"Accept-Encoding": "identity"}  # the bytes as stored, never re-encoded
        if have:
            headers["Range"] = f"bytes={have}-"
            if validator:
                headers["If-Range"] = validator
        try:
            response = session.get(
                url, headers=headers, stream=True, timeout=(timeout_seconds, timeout_seconds)
            )
        except requests.RequestException as error:
            raise DownloadError(
                f"could not download after {retries + 1} attempts: {_reason(error)}",
                dataset=dataset,
                path=url,
            ) from None
        with response:
            status = response.status_code
            if status == 416 and have:
                total = _total_from_content_range(response.headers.get("Content-Range", ""))
                if total == have:
                    return  # the .part already holds the whole file
                logger.info(
                    "%s: the server cannot resume at byte %s; starting again", url, f"{have:,}"
                )
                part.unlink()
                continue
            if status >= 400:
                raise DownloadError(
                    f"the server answered HTTP {status} {response.reason}"
                    + (f" after {retries + 1} attempts" if status in RETRY_STATUSES else ""),
                    dataset=dataset,
                    path=url,
                )
            _refuse_html_type(response, url=url, filename=filename, dataset=dataset)
            if status == 206:
                start, total = _parse_content_range(response.headers.get("Content-Range", ""))
                if start != have:
                    logger.info(
                        "%s: the server resumed at byte %s, not %s; starting again",
                        url,
                        start,
                        have,
                    )
                    part.unlink(missing_ok=True)
                    continue
                mode = "ab"
                if attempt > 1 or have:
                    logger.info(
                        "%s: resuming at byte %s of %s", url, f"{have:,}", _fmt_total(total)
                    )
            else:
                if have:
                    logger.info(
                        "%s: the server sent the whole file again (HTTP %d): restarting",
                        url,
                        status,
                    )
                have, mode = 0, "wb"
                total = _int_or_none(response.headers.get("Content-Length"))
            if validator is None:
                validator = _strong_validator(response.headers)
            encoding = response.headers.get("Content-Encoding", "identity").lower()
            if encoding not in ("identity", ""):
                logger.warning(
                    "%s: the server sent Content-Encoding %s although asked not to; "
                    "the file is stored as sent",
                    url,
                    encoding,
                )

            progress = _Progress(url, start=have, total=total)
            interruption = None
            with open(part, mode) as handle:
                try:
                    # raw bytes exactly as sent (no transparent decompression); read1 returns
                    # what has arrived, so a timeout loses nothing already received
                    while chunk := response.raw.read1(CHUNK_BYTES, decode_content=False):
                        handle.write(chunk)
                        progress.update(len(chunk))
                except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as error:
                    interruption = error
        have = part.stat().st_size
        if total is not None and have > total:
            part.unlink()
            raise DownloadError(
                f"the server sent {have:,} bytes, more than the {total:,} it announced",
                dataset=dataset,
                path=url,
            )
        if interruption is None and (total is None or have == total):
            progress.finish()
            return
        why = _reason(interruption) if interruption else "connection closed early"
        if attempt > retries:
            raise DownloadError(
                f"download cut short: {have:,} of {_fmt_total(total)} bytes after {attempt} attempts ({why})",
                dataset=dataset,
                path=url,
            )
        wait = min(backoff_seconds * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
        logger.warning(
            "%s: transfer cut short at %s of %s bytes (%s); resuming in %.1f s (attempt %d of %d)",
            url,
            f"{have:,}",
            _fmt_total(total),
            why,
            wait,
            attempt + 1,
            retries + 1,
        )
        time.sleep(wait)


def _refuse_html_type(
    response: requests.Response, *, url: str, filename: str, dataset: str | None
) -> None:
    content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if content_type in HTML_TYPES and not filename.lower().endswith(HTML_SUFFIXES):
        raise DownloadError(
            f"server sent an HTML page ({content_type}), not data: an error or login page in place "
            f"of {filename}? Check the URL in a browser",
            dataset=dataset,
            path=url,
        )


def _strong_validator(headers: Mapping[str, str]) -> str | None:
    """A validator usable in If-Range (RFC 9110 13.1.5): a strong ETag, else Last-Modified."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


def _parse_content_range(value: str) -> tuple[int, int | None]:
    """``bytes 100-199/200`` -> (100, 200); the total is None when given as ``*``."""
    try:
        unit, spec = value.split(" ", 1)
        span, total = spec.split("/", 1)
        start = int(span.split("-", 1)[0])
        return start, (None if total.strip() == "*" else int(total))
    except ValueError:
        return -1, None  # malformed: treated as a resume at the wrong place (restart)


def _total_from_content_range(value: str) -> int | None:
    """``bytes */200`` (the answer to an unsatisfiable range) -> 200."""
    try:
        return int(value.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        return None


class _Progress:
    """Log progress lines: at each 10 % step (>= PROGRESS_MIN_SECONDS apart) or when slow."""

    def __init__(self, url: str, *, start: int, total: int | None):
        self.url, self.start, self.total = url, start, total
        self.done = start
        self.began = self.last = time.monotonic()
        self.next_step = self._step_after(start)

    def _step_after(self, done: int) -> int | None:
        if not self.total:
            return None
        tenth = max(self.total // 10, 1)
        return (done // tenth + 1) * tenth

    def update(self, nbytes: int) -> None:
        self.done += nbytes
        now = time.monotonic()
        crossed = self.next_step is not None and self.done >= self.next_step
        if self.total is not None and self.done >= self.total:
            return  # finish() says it
        if (
            crossed and now - self.last >= PROGRESS_MIN_SECONDS
        ) or now - self.last >= PROGRESS_MAX_SECONDS:
            self._log(now)
        if crossed:
            self.next_step = self._step_after(self.done)

    def finish(self) -> None:
        self._log(time.monotonic(), final=True)

    def _log(self, now: float, *, final: bool = False) -> None:
        self.last = now
        elapsed = max(now - self.began, 1e-6)
        rate = (self.done - self.start) / elapsed
        share = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        verb = "received" if final else "downloading"
        logger.info(
            "%s: %s %s of %s bytes%s, %s/s, %.1f s",
            self.url,
            verb,
            f"{self.done:,}",
            _fmt_total(self.total),
            share,
            _human(rate),
            elapsed,
        )


# --------------------------------------------------------------------------------------------
# local sources
# --------------------------------------------------------------------------------------------
def _local_path(url: str, *, dataset: str | None) -> Path:
    if _scheme(url) == "file":
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise DownloadError(
                f"file:// URL on another host ({parsed.netloc}) is not supported",
                dataset=dataset,
                path=url,
            )
        path = Path(url2pathname(parsed.path))
    else:
        path = Path(url).expanduser()
    if not path.is_file():
        raise DownloadError(
            f"local source not found: {path.absolute()} (relative paths are read from the working "
            f"directory, {Path.cwd()})",
            dataset=dataset,
            path=url,
        )
    return path


def _copy_local(path: Path, part: Path, *, dataset: str | None, url: str) -> None:
    try:
        with open(path, "rb") as source, open(part, "wb") as target:
            shutil.copyfileobj(source, target, CHUNK_BYTES)
    except OSError as error:
        raise DownloadError(
            f"cannot copy local source: {error.strerror or error}", dataset=dataset, path=url
        ) from None


# --------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------
def _verify(
    part: Path,
    *,
    url: str,
    filename: str,
    sha256: str | None,
    expected_bytes: int | None,
    dataset: str | None,
) -> tuple[int, str]:
    """Check a complete transfer; return (bytes, sha256). On failure, remove `part` and raise."""
    try:
        _refuse_html_body(part, url=url, filename=filename, dataset=dataset)
        size = part.stat().st_size
        if expected_bytes is not None and size != expected_bytes:
            raise DownloadError(
                f"size mismatch: the config says {expected_bytes:,} bytes, got {size:,}",
                dataset=dataset,
                path=url,
            )
        digest = _sha256(part)
        if sha256 is not None and digest != sha256.lower():
            raise DownloadError(
                f"checksum mismatch: expected sha256 {sha256.lower()}, got {digest}",
                dataset=dataset,
                path=url,
            )
        if filename.lower().endswith((".gz", ".tgz")):
            _check_gzip(part, url=url, dataset=dataset)
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    return size, digest


def _refuse_html_body(part: Path, *, url: str, filename: str, dataset: str | None) -> None:
    if filename.lower().endswith(HTML_SUFFIXES):
        return
    with open(part, "rb") as handle:
        head = handle.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.lower().startswith((b"<!doctype html", b"<html")):
        raise DownloadError(
            f"server sent an HTML page (the file starts with {head[:15].decode(errors='replace')!r}), "
            f"not data: an error or login page in place of {filename}? Check the URL in a browser",
            dataset=dataset,
            path=url,
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _check_gzip(path: Path, *, url: str, dataset: str | None) -> None:
    """Decompress `path` to the end (streaming, all members): corrupt or truncated gzip fails."""
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic != GZIP_MAGIC:
        raise DownloadError(
            f"not a gzip file although named .gz (starts with {magic!r}, not {GZIP_MAGIC!r})",
            dataset=dataset,
            path=url,
        )
    started = time.monotonic()
    inflated = 0
    try:
        with gzip.open(path, "rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                inflated += len(chunk)
    except (OSError, EOFError, zlib.error) as error:
        raise DownloadError(
            f"corrupt gzip: {error} (after {inflated:,} decompressed bytes); the file is damaged "
            f"or truncated at the source",
            dataset=dataset,
            path=url,
        ) from None
    logger.info(
        "%s: gzip intact (%s bytes decompressed in %.1f s)",
        url,
        f"{inflated:,}",
        time.monotonic() - started,
    )


# --------------------------------------------------------------------------------------------
# manifest and bookkeeping
# --------------------------------------------------------------------------------------------
def _check_filenames(sources: Sequence[Mapping], *, dataset: str, reserved: set[str]) -> list[str]:
    names: dict[str, str] = {}
    filenames = []
    for source in sources:
        filename = source_filename(source)
        if not filename or filename in (".", "..") or "/" in filename:
            raise DownloadError(
                f"source {source['name']!r}: cannot take a file name from its URL; give 'filename'",
                dataset=dataset,
                path=source["url"],
            )
        if filename in reserved or filename.endswith(".part"):
            raise DownloadError(
                f"source {source['name']!r}: file name {filename!r} is reserved; give another "
                "'filename'",
                dataset=dataset,
                path=source["url"],
            )
        if filename in names:
            raise DownloadError(
                f"sources {names[filename]!r} and {source['name']!r} would both be saved as {filename!r}: "
                "give one of them a different 'filename'",
                dataset=dataset,
                path=source["url"],
            )
        names[filename] = source["name"]
        filenames.append(filename)
    return filenames


def _still_valid(
    record: FetchedFile | None, source: Mapping, destination: Path
) -> FetchedFile | None:
    """`record` when `destination` is the file it describes and still what the config asks for."""
    if record is None or record.url != str(source["url"]) or not destination.is_file():
        return None
    if source.get("sha256") and source["sha256"].lower() != record.sha256:
        return None
    if source.get("bytes") is not None and source["bytes"] != record.bytes:
        return None
    if destination.stat().st_size != record.bytes or _sha256(destination) != record.sha256:
        logger.info("%s changed since it was fetched: fetching it again", destination)
        return None
    return record


def _write_rows(path: Path, rows: Iterable[FetchedFile]) -> None:
    # imported here: texflow.utils imports anndata, which the Snakefile (importing this module
    # for local_source_paths) and the fetch job need not pay for
    from .utils import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            writer.writerow(MANIFEST_COLUMNS)
            for row in rows:
                writer.writerow([getattr(row, column) for column in MANIFEST_COLUMNS])


def _read_rows(path: Path) -> list[FetchedFile]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
            raise DownloadError(
                f"not a texflow manifest: columns {reader.fieldnames}, expected "
                f"{list(MANIFEST_COLUMNS)}",
                path=path,
            )
        types = {field.name: field.type for field in fields(FetchedFile)}
        return [
            FetchedFile(
                **{
                    key: int(value) if types[key] in ("int", int) else value
                    for key, value in row.items()
                }
            )
            for row in reader
        ]


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def _scheme(url: str) -> str:
    scheme = urlparse(url).scheme.lower()
    # "C:\data\x.gz" parses with scheme "c": a one-letter scheme is a Windows drive, a local path
    return "" if len(scheme) == 1 else scheme


def _resumable(part: Path) -> bool:
    """Whether a .part left behind by an error is worth resuming (it holds data)."""
    return part.stat().st_size > 0


def _reason(error: BaseException) -> str:
    """A short reason for a network error (requests' messages nest urllib3's several levels deep)."""
    while isinstance(error, requests.RequestException) and error.__context__ is not None:
        error = error.__context__
    if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
        error = error.reason  # "Max retries exceeded with url ..." hides the cause in its middle
    if (
        isinstance(error, urllib3.exceptions.ProtocolError)
        and error.args
        and isinstance(error.args[0], str)
    ):
        text = error.args[0]  # ("Connection broken: IncompleteRead(...)", IncompleteRead(...))
    else:
        text = str(error)
    return text if len(text) <= 300 else text[:297] + "..."


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _fmt_total(total: int | None) -> str:
    return f"{total:,}" if total is not None else "(unknown)"


def _human(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{nbytes:.0f} B"
        nbytes /= 1024
    return f"{nbytes:.1f} GB"


def _utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
