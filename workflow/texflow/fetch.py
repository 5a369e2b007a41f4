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

:func:`fetch_dataset` writes ``manifest.tsv`` (:mod:`texflow.manifest`: name, url, filename,
bytes, sha256, downloaded_at) last, atomically: its presence means every file beside it passed
the checks. It returns a :class:`FetchResult`: the manifest's rows and a note per source.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import shutil
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .errors import DownloadError
from .manifest import FetchedFile, read_manifest, write_manifest

logger = logging.getLogger(__name__)

__all__ = [
    "FetchResult",
    "fetch_dataset",
    "fetch_source",
    "local_source_paths",
    "make_session",
    "source_filename",
]

#: how a local source is placed in the downloads folder (config fetch.local_sources)
LOCAL_SOURCE_MODES = ("link", "copy")

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


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch_dataset` did for one dataset: its manifest's rows and a note per source."""

    dataset: str
    #: where the manifest was written
    manifest: Path
    #: the manifest's rows, one per source, in the config's order
    files: list[FetchedFile]
    #: one line per source: fetched now (url, bytes, sha256), or kept from an earlier run (when)
    notes: list[str]


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
    local_sources: str = "link",
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
    local_sources
        ``"link"``: a local source is put at `destination` as a symbolic link to the file
        (absolute path), checked through the link; ``"copy"``: it is copied (config
        ``fetch.local_sources``; the reason for the default is in its schema).

    Returns
    -------
    ``(bytes, sha256)`` of the file now at `destination`.

    Raises
    ------
    DownloadError
        Naming the dataset, the URL or file, and the problem.
    """
    if local_sources not in LOCAL_SOURCE_MODES:
        raise ValueError(
            f"local_sources must be one of {LOCAL_SOURCE_MODES}, not {local_sources!r}"
        )
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    checks = _Checks(
        url=url,
        filename=destination.name,
        sha256=sha256,
        expected_bytes=expected_bytes,
        dataset=dataset,
    )
    scheme = _scheme(url)
    try:
        if scheme in ("http", "https"):
            with _session_for(session, retries=retries, backoff_seconds=backoff_seconds) as used:
                transfer = _Transfer(
                    session=used,
                    retries=retries,
                    backoff_seconds=backoff_seconds,
                    timeout_seconds=timeout_seconds,
                    dataset=dataset,
                    filename=destination.name,
                )
                size, digest = _fetch_http(url, part, transfer=transfer, checks=checks)
        elif scheme in ("file", ""):
            _place_local(
                _local_path(url, dataset=dataset),
                part,
                how=local_sources,
                dataset=dataset,
                url=url,
            )
            size, digest = _verify(part, checks)
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
    local_sources: str = "link",
) -> FetchResult:
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
    retries, backoff_seconds, timeout_seconds, local_sources
        As for :func:`fetch_source` (config section ``fetch``).

    Returns
    -------
    The manifest's rows (one per source, in the config's order) and a note per source.

    Writes
    ------
    The source files, ``<directory>/.fetched.tsv`` (updated after each source) and, last, the
    manifest.
    """
    dataset = str(dataset_cfg["id"])
    sources = list(dataset_cfg["sources"])
    directory = Path(directory)
    manifest = Path(manifest) if manifest is not None else directory / "manifest.tsv"
    filenames = _check_filenames(sources, dataset=dataset, reserved={manifest.name, STATE_FILE})
    directory.mkdir(parents=True, exist_ok=True)

    state_path = directory / STATE_FILE
    known = {row.filename: row for row in _read_state(state_path, dataset=dataset)}
    files: list[FetchedFile] = []
    notes: list[str] = []
    with make_session(retries=retries, backoff_seconds=backoff_seconds) as session:
        for source, filename in zip(sources, filenames, strict=True):
            record, note = _fetch_unless_kept(
                source,
                directory / filename,
                known.get(filename),
                dataset=dataset,
                session=session,
                retries=retries,
                backoff_seconds=backoff_seconds,
                timeout_seconds=timeout_seconds,
                local_sources=local_sources,
            )
            files.append(record)
            notes.append(note)
            known[filename] = record
            write_manifest(state_path, known.values())
    write_manifest(manifest, files)
    logger.info(
        "dataset %s: %d source file(s) fetched and checked; manifest %s",
        dataset,
        len(files),
        manifest,
    )
    return FetchResult(dataset=dataset, manifest=manifest, files=files, notes=notes)


def _fetch_unless_kept(
    source: Mapping,
    destination: Path,
    record: FetchedFile | None,
    *,
    dataset: str,
    session: requests.Session,
    retries: int,
    backoff_seconds: float,
    timeout_seconds: float,
    local_sources: str,
) -> tuple[FetchedFile, str]:
    """The manifest row of one source and a note: `record` kept when `destination` is still
    the file it describes (and what the config asks for), else the source fetched now."""
    kept = _still_valid(record, source, destination, local_sources=local_sources)
    if kept is not None:
        logger.info(
            "%s: already fetched (%s bytes, checksum as recorded at %s): not fetched again",
            destination,
            f"{kept.bytes:,}",
            kept.downloaded_at,
        )
        note = (
            f"{source['name']}: {destination.name} kept from the fetch at {kept.downloaded_at} "
            f"({kept.bytes:,} bytes, sha256 {kept.sha256} as recorded then)"
        )
        return replace(kept, name=source["name"]), note
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
        local_sources=local_sources,
    )
    record = FetchedFile(
        name=str(source["name"]),
        url=str(source["url"]),
        filename=destination.name,
        bytes=size,
        sha256=digest,
        downloaded_at=_utc_now(),
    )
    note = (
        f"{source['name']}: {destination.name} fetched from {source['url']} "
        f"({size:,} bytes, sha256 {digest})"
    )
    return record, note


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Transfer:
    """How one source is downloaded: the session, the retry budget, and what errors name."""

    session: requests.Session
    retries: int
    backoff_seconds: float
    timeout_seconds: float
    dataset: str | None
    filename: str


#: What :func:`_body_plan` asks of :func:`_download` when an answer carries nothing to write:
#: stop, the ``.part`` holds the whole file; or ask again, the ``.part`` was discarded.
_WHOLE, _ASK_AGAIN = "whole", "ask again"


@contextlib.contextmanager
def _session_for(
    session: requests.Session | None, *, retries: int, backoff_seconds: float
) -> Iterator[requests.Session]:
    """`session` as it is, or a new one from :func:`make_session`, closed after use."""
    if session is not None:
        yield session
        return
    with make_session(retries=retries, backoff_seconds=backoff_seconds) as own:
        yield own


def _fetch_http(url: str, part: Path, *, transfer: _Transfer, checks: _Checks) -> tuple[int, str]:
    """Download `url` into `part` and check it; return (bytes, sha256).

    A check that fails on a transfer that resumed a ``.part`` left by an earlier run downloads
    the file once more from the start: that ``.part`` may belong to an older version of it.
    """
    resumed_stale = part.exists() and part.stat().st_size > 0
    _download(url, part, transfer)
    try:
        return _verify(part, checks)
    except DownloadError as error:
        if not resumed_stale:
            raise
        logger.warning(
            "%s; the transfer resumed a .part left by an earlier run: "
            "downloading %s again from the start",
            error.problem,
            url,
        )
    part.unlink(missing_ok=True)
    _download(url, part, transfer)
    return _verify(part, checks)


def _download(url: str, part: Path, transfer: _Transfer) -> None:
    """Stream `url` into `part`, resuming with Range after a transfer cut short."""
    attempt = 0
    validator = None  # ETag / Last-Modified of the first answer: resume only the same file
    while True:
        attempt += 1
        have = part.stat().st_size if part.exists() else 0
        with _request(url, have=have, validator=validator, transfer=transfer) as response:
            plan = _body_plan(response, url, part, have=have, attempt=attempt, transfer=transfer)
            if plan == _WHOLE:
                return
            if plan == _ASK_AGAIN:
                continue
            mode, have, total = plan
            if validator is None:
                validator = _strong_validator(response.headers)
            _warn_if_encoded(response, url)
            progress = _Progress(url, start=have, total=total)
            interruption = _receive(response, part, mode=mode, progress=progress)
        have = _received(part, total=total, url=url, dataset=transfer.dataset)
        if interruption is None and (total is None or have == total):
            progress.finish()
            return
        _wait_before_resuming(
            url,
            have=have,
            total=total,
            interruption=interruption,
            attempt=attempt,
            transfer=transfer,
        )


def _request(
    url: str, *, have: int, validator: str | None, transfer: _Transfer
) -> requests.Response:
    """GET `url` as a stream, from byte `have` on when the ``.part`` holds some already."""
    headers = {"Accept-Encoding": "identity"}  # the bytes as stored, never re-encoded
    if have:
        headers["Range"] = f"bytes={have}-"
        if validator:
            headers["If-Range"] = validator
    timeout = transfer.timeout_seconds
    try:
        return transfer.session.get(url, headers=headers, stream=True, timeout=(timeout, timeout))
    except requests.RequestException as error:
        raise DownloadError(
            f"could not download after {transfer.retries + 1} attempts: {_reason(error)}",
            dataset=transfer.dataset,
            path=url,
        ) from None


def _body_plan(
    response: requests.Response,
    url: str,
    part: Path,
    *,
    have: int,
    attempt: int,
    transfer: _Transfer,
) -> tuple[str, int, int | None] | str:
    """How to write the body of `response` into `part`, from the answer's status.

    Returns ``(mode, start, total)``: append (``"ab"``, a 206 at byte `have`) or write from
    byte 0 (``"wb"``, a 200), and the file's size when announced. Or `_WHOLE`: the ``.part``
    already holds the whole file (416 with its size); or `_ASK_AGAIN`: the ``.part`` was
    discarded because the server cannot resume where it ends.
    """
    status = response.status_code
    if status == 416 and have:
        total = _total_from_content_range(response.headers.get("Content-Range", ""))
        if total == have:
            return _WHOLE
        logger.info("%s: the server cannot resume at byte %s; starting again", url, f"{have:,}")
        part.unlink()
        return _ASK_AGAIN
    if status >= 400:
        raise DownloadError(
            f"the server answered HTTP {status} {response.reason}"
            + (f" after {transfer.retries + 1} attempts" if status in RETRY_STATUSES else ""),
            dataset=transfer.dataset,
            path=url,
        )
    _refuse_html_type(response, url=url, filename=transfer.filename, dataset=transfer.dataset)
    if status == 206:
        start, total = _parse_content_range(response.headers.get("Content-Range", ""))
        if start != have:
            logger.info(
                "%s: the server resumed at byte %s, not %s; starting again", url, start, have
            )
            part.unlink(missing_ok=True)
            return _ASK_AGAIN
        if attempt > 1 or have:
            logger.info("%s: resuming at byte %s of %s", url, f"{have:,}", _fmt_total(total))
        return "ab", have, total
    if have:
        logger.info("%s: the server sent the whole file again (HTTP %d): restarting", url, status)
    return "wb", 0, _int_or_none(response.headers.get("Content-Length"))


def _warn_if_encoded(response: requests.Response, url: str) -> None:
    encoding = response.headers.get("Content-Encoding", "identity").lower()
    if encoding not in ("identity", ""):
        logger.warning(
            "%s: the server sent Content-Encoding %s although asked not to; "
            "the file is stored as sent",
            url,
            encoding,
        )


def _receive(
    response: requests.Response, part: Path, *, mode: str, progress: _Progress
) -> BaseException | None:
    """Write the body of `response` into `part`; return the error that cut it short, if any."""
    with open(part, mode) as handle:
        try:
            # raw bytes exactly as sent (no transparent decompression); read1 returns what has
            # arrived, so a timeout loses nothing already received
            while chunk := response.raw.read1(CHUNK_BYTES, decode_content=False):
                handle.write(chunk)
                progress.update(len(chunk))
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as error:
            return error
    return None


def _received(part: Path, *, total: int | None, url: str, dataset: str | None) -> int:
    """Bytes now in `part`; more than the server announced stops (and removes `part`)."""
    have = part.stat().st_size
    if total is not None and have > total:
        part.unlink()
        raise DownloadError(
            f"the server sent {have:,} bytes, more than the {total:,} it announced",
            dataset=dataset,
            path=url,
        )
    return have


def _wait_before_resuming(
    url: str,
    *,
    have: int,
    total: int | None,
    interruption: BaseException | None,
    attempt: int,
    transfer: _Transfer,
) -> None:
    """Sleep before the next attempt at a transfer cut short; stop when none is left."""
    why = _reason(interruption) if interruption else "connection closed early"
    if attempt > transfer.retries:
        raise DownloadError(
            f"download cut short: {have:,} of {_fmt_total(total)} bytes after {attempt} "
            f"attempts ({why})",
            dataset=transfer.dataset,
            path=url,
        )
    wait = min(transfer.backoff_seconds * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
    logger.warning(
        "%s: transfer cut short at %s of %s bytes (%s); resuming in %.1f s (attempt %d of %d)",
        url,
        f"{have:,}",
        _fmt_total(total),
        why,
        wait,
        attempt + 1,
        transfer.retries + 1,
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
        _unit, spec = value.split(" ", 1)
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


def _place_local(path: Path, part: Path, *, how: str, dataset: str | None, url: str) -> None:
    """Put a local source at `part`: a symbolic link to it (``how="link"``) or a copy."""
    part.unlink(missing_ok=True)  # a link or copy left by an interrupted job
    try:
        if how == "link":
            part.symlink_to(path.resolve())
        else:
            with open(path, "rb") as source, open(part, "wb") as target:
                shutil.copyfileobj(source, target, CHUNK_BYTES)
    except OSError as error:
        verb = "link to" if how == "link" else "copy"
        fix = " (set fetch.local_sources: copy in the config)" if how == "link" else ""
        raise DownloadError(
            f"cannot {verb} local source: {error.strerror or error}{fix}",
            dataset=dataset,
            path=url,
        ) from None


# --------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Checks:
    """What a complete transfer is checked against, and what an error names."""

    url: str
    filename: str
    sha256: str | None
    expected_bytes: int | None
    dataset: str | None


def _verify(part: Path, checks: _Checks) -> tuple[int, str]:
    """Check a complete transfer; return (bytes, sha256). On failure, remove `part` and raise."""
    url, dataset = checks.url, checks.dataset
    try:
        _refuse_html_body(part, url=url, filename=checks.filename, dataset=dataset)
        size = part.stat().st_size
        if checks.expected_bytes is not None and size != checks.expected_bytes:
            raise DownloadError(
                f"size mismatch: the config says {checks.expected_bytes:,} bytes, got {size:,}",
                dataset=dataset,
                path=url,
            )
        digest = _sha256(part)
        if checks.sha256 is not None and digest != checks.sha256.lower():
            raise DownloadError(
                f"checksum mismatch: expected sha256 {checks.sha256.lower()}, got {digest}",
                dataset=dataset,
                path=url,
            )
        if checks.filename.lower().endswith((".gz", ".tgz")):
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
            "server sent an HTML page (the file starts with "
            f"{head[:15].decode(errors='replace')!r}), "
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
                f"sources {names[filename]!r} and {source['name']!r} would both be saved as "
                f"{filename!r}: "
                "give one of them a different 'filename'",
                dataset=dataset,
                path=source["url"],
            )
        names[filename] = source["name"]
        filenames.append(filename)
    return filenames


def _still_valid(
    record: FetchedFile | None, source: Mapping, destination: Path, *, local_sources: str
) -> FetchedFile | None:
    """`record` when `destination` is the file it describes and still what the config asks for
    (for a local source: a link or a copy, as ``local_sources`` says)."""
    if record is None or record.url != str(source["url"]) or not destination.is_file():
        return None
    if _scheme(record.url) in ("file", "") and destination.is_symlink() != (
        local_sources == "link"
    ):
        return None
    if source.get("sha256") and source["sha256"].lower() != record.sha256:
        return None
    if source.get("bytes") is not None and source["bytes"] != record.bytes:
        return None
    if destination.stat().st_size != record.bytes or _sha256(destination) != record.sha256:
        logger.info("%s changed since it was fetched: fetching it again", destination)
        return None
    return record


def _read_state(path: Path, *, dataset: str) -> list[FetchedFile]:
    """The rows of `STATE_FILE`: sources fetched by earlier runs (none before the first)."""
    return read_manifest(path, dataset=dataset) if path.is_file() else []


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
    """A short reason for a network error (requests' messages nest urllib3's several deep)."""
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
