"""A real HTTP server on 127.0.0.1 for tests: registered content, Range requests, injected faults.

Tests never download from outside; they fetch from this server instead. Use the fixture::

    from tests.httpserver import http_server  # noqa: F401

    def test_something(http_server):
        http_server.add("/data/matrix.txt.gz", payload, fail_first=2)
        url = http_server.url("/data/matrix.txt.gz")
        ...
        statuses = [r.status for r in http_server.requests_for("/data/matrix.txt.gz")]
        assert statuses == [503, 503, 200]

or, outside pytest, ``with serve() as server: ...``.

Faults, per registered path (keyword arguments of :meth:`TestHTTPServer.add`):

``fail_first=N``
    the first N requests get ``fail_status`` (default 503) with a small text body.
``cut_after=K`` (with ``cut_times``, default 1)
    the first ``cut_times`` data responses announce the full Content-Length but the connection
    is closed after K bytes of body: a download cut short. ``cut_times=None`` cuts every one.
``html_error=True``
    status 200, ``Content-Type: text/html``, an HTML error page instead of the data (what some
    mirrors and login walls do).
``chunk_delay=seconds`` (with ``chunk_size``, default 64 KiB)
    sleep between body chunks: a slow transfer, for progress logging and timeouts.
``ranges=False``
    ignore ``Range`` headers and always send the whole body with 200 (servers that do not resume).
``content_type``
    the Content-Type of the data (default ``application/octet-stream``).
``content_length=False``
    send no Content-Length (the body ends when the connection closes).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

__all__ = ["RequestRecord", "TestHTTPServer", "http_server", "serve"]

HTML_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Service unavailable</title></head>"
    b"<body><h1>Sorry</h1><p>The file you asked for is temporarily unavailable.</p></body></html>\n"
)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class RequestRecord:
    """One request the server answered (in the order they arrived)."""

    method: str
    path: str
    headers: dict[str, str]
    status: int = 0
    #: body bytes actually written (less than announced when the response was cut)
    bytes_sent: int = 0

    @property
    def range(self) -> str | None:
        """The request's Range header, e.g. ``"bytes=1024-"``, or None."""
        return self.headers.get("Range")


@dataclass
class _Entry:
    """Content registered under one path, with its faults and their counters."""

    data: bytes | Path
    content_type: str = "application/octet-stream"
    fail_first: int = 0
    fail_status: int = 503
    cut_after: int | None = None
    cut_times: int | None = 1
    html_error: bool = False
    chunk_delay: float = 0.0
    chunk_size: int = 64 * 1024
    ranges: bool = True
    content_length: bool = True
    headers: dict[str, str] = field(default_factory=dict)
    requests_seen: int = 0
    cuts_done: int = 0

    def body(self) -> bytes:
        return self.data.read_bytes() if isinstance(self.data, Path) else self.data


class TestHTTPServer:
    """A ThreadingHTTPServer on 127.0.0.1 (free port) serving registered paths from a thread."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._directories: list[tuple[str, Path, dict]] = []
        self._lock = threading.Lock()
        #: every request answered, in arrival order
        self.requests: list[RequestRecord] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        # a short poll interval: shutdown() at teardown waits up to one interval
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="test-http",
            daemon=True,
        )

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> TestHTTPServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # -- content ----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """Full URL of `path` on this server (a leading slash is added when missing)."""
        return self.base_url + _normalise(path)

    def add(self, path: str, data: bytes | str | Path, **faults) -> str:
        """Serve `data` (bytes, text as UTF-8, or a file's content) at `path`; return its URL.

        Keyword arguments are the faults described in the module docstring, plus ``headers``
        (extra response headers). Re-adding a path replaces it and resets its fault counters.
        """
        if isinstance(data, str):
            data = data.encode()
        entry = _Entry(data=Path(data) if isinstance(data, Path) else bytes(data), **faults)
        with self._lock:
            self._entries[_normalise(path)] = entry
        return self.url(path)

    def add_directory(self, prefix: str, directory: str | Path, **faults) -> str:
        """Serve every file under `directory` at `prefix`/<relative path>; return the prefix URL.

        The faults apply to each file separately (each gets its own counters on first request).
        """
        prefix = _normalise(prefix).rstrip("/")
        with self._lock:
            self._directories.append((prefix, Path(directory), faults))
        return self.url(prefix + "/")

    def requests_for(self, path: str) -> list[RequestRecord]:
        """The requests answered for `path`, in order."""
        path = _normalise(path)
        with self._lock:
            return [record for record in self.requests if record.path == path]

    # -- used by the handler ----------------------------------------------------------------
    def _lookup(self, path: str) -> _Entry | None:
        with self._lock:
            if path in self._entries:
                return self._entries[path]
            for prefix, directory, faults in self._directories:
                if path.startswith(prefix + "/"):
                    candidate = (directory / path[len(prefix) + 1 :]).resolve()
                    if candidate.is_file() and candidate.is_relative_to(directory.resolve()):
                        entry = _Entry(data=candidate, **faults)
                        self._entries[path] = entry  # so fault counters persist per file
                        return entry
        return None

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)


def _normalise(path: str) -> str:
    path = path.split("?", 1)[0]
    return path if path.startswith("/") else "/" + path


def _make_handler(server: TestHTTPServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
            pass

        def do_HEAD(self):
            self._answer(send_body=False)

        def do_GET(self):
            self._answer(send_body=True)

        # ------------------------------------------------------------------------------
        def _answer(self, *, send_body: bool) -> None:
            record = RequestRecord(self.command, _normalise(self.path), dict(self.headers.items()))
            server._record(record)
            entry = server._lookup(record.path)
            if entry is None:
                return self._simple(record, 404, b"not found\n", send_body=send_body)
            with server._lock:
                entry.requests_seen += 1
                failing = entry.requests_seen <= entry.fail_first
            if failing:
                return self._simple(
                    record, entry.fail_status, b"try again later\n", send_body=send_body
                )
            if entry.html_error:
                return self._simple(
                    record,
                    200,
                    HTML_ERROR_PAGE,
                    send_body=send_body,
                    content_type="text/html; charset=utf-8",
                )

            body = entry.body()
            total, start, end = len(body), 0, len(body) - 1
            status = 200
            wanted = _RANGE.match(record.range or "") if entry.ranges else None
            if wanted and (wanted.group(1) or wanted.group(2)):
                first, last = wanted.groups()
                if first:
                    start = int(first)
                    end = min(int(last), total - 1) if last else total - 1
                else:  # suffix range: the last N bytes
                    start = max(total - int(last), 0)
                if start >= total:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{total}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    record.status = 416
                    return
                status = 206
            part = body[start : end + 1]

            self.send_response(status)
            record.status = status
            self.send_header("Content-Type", entry.content_type)
            self.send_header("Accept-Ranges", "bytes" if entry.ranges else "none")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
            if entry.content_length:
                self.send_header("Content-Length", str(len(part)))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            for name, value in entry.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if not send_body:
                return

            limit = len(part)
            with server._lock:
                if entry.cut_after is not None and (
                    entry.cut_times is None or entry.cuts_done < entry.cut_times
                ):
                    entry.cuts_done += 1
                    limit = min(limit, entry.cut_after)
            cut = limit < len(part)
            chunk = b""
            try:
                for offset in range(0, limit, entry.chunk_size):
                    chunk = part[offset : min(offset + entry.chunk_size, limit)]
                    # counted before it is sent: once the client has the last byte, a test may
                    # read the count at once (counted after the flush, it raced the test)
                    record.bytes_sent += len(chunk)
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    if entry.chunk_delay:
                        time.sleep(entry.chunk_delay)
            except (BrokenPipeError, ConnectionResetError):
                record.bytes_sent -= len(chunk)  # that chunk did not reach the client whole
                cut = True  # the client gave up (e.g. its timeout): nothing more to do
            if cut:
                # the announced Content-Length is not met: close so the client sees it cut short
                self.close_connection = True

        def _simple(
            self, record, status, body, *, send_body, content_type="text/plain; charset=utf-8"
        ):
            self.send_response(status)
            record.status = status
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if status >= 500:
                self.send_header("Retry-After", "0")
            self.end_headers()
            if send_body:
                self.wfile.write(body)
                record.bytes_sent = len(body)

    return Handler


@contextlib.contextmanager
def serve() -> Iterator[TestHTTPServer]:
    """Run a :class:`TestHTTPServer` for the duration of the block."""
    server = TestHTTPServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def http_server() -> Iterator[TestHTTPServer]:
    """A running :class:`TestHTTPServer` (``.url(path)``, ``.add(path, data, **faults)``,
    ``.requests``)."""
    with serve() as server:
        yield server
