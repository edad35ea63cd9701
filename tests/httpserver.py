"""A real HTTP file server on 127.0.0.1 for download tests: Range requests and scripted faults.

    with FileServer() as server:
        server.serve("/ml-100k.zip", data)
        server.fail("/ml-100k.zip", Status(503), Cut(1000))   # first request 503, second cut after 1000 bytes
        server.fail("/ml-100k.zip", Trickle(0.05))            # a server too slow to be of use
        ... server.url("/ml-100k.zip") ...
        server.requests   # every request seen: path and headers

Faults are consumed one per request to that path; once used up, the file is served normally.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Status:
    """Answer with this HTTP status and a short body instead of the file."""

    code: int


@dataclass(frozen=True)
class Cut:
    """Announce the full length, send only ``after`` body bytes, then drop the connection."""

    after: int


@dataclass(frozen=True)
class IgnoreRange:
    """Answer 200 with the whole file even if the request asked for a range."""


@dataclass(frozen=True)
class Gate:
    """Send the headers, then wait for ``event`` before sending the body (to make requests overlap)."""

    event: threading.Event


@dataclass(frozen=True)
class Trickle:
    """Announce the full length, then send one byte every ``interval`` seconds until the client hangs up."""

    interval: float


@dataclass(frozen=True)
class Endless:
    """Answer 200 without a length and stream ``fill`` bytes until the client hangs up (or 1 GB is sent)."""

    fill: bytes = b"0" * 65536


Fault = Status | Cut | IgnoreRange | Gate | Trickle | Endless


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # Clients hanging up mid-body is what several tests do on purpose; anything else is a real bug.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    status: int = 0


@dataclass
class FileServer:
    """Serves in-memory files over HTTP/1.1 from a thread; use as a context manager."""

    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    ignore_range: bool = False
    """Behave like a server without Range support: every answer is 200 with the whole file."""
    _faults: dict[str, deque[Fault]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def serve(self, path: str, data: bytes) -> None:
        self.files[path] = data

    def fail(self, path: str, *faults: Fault) -> None:
        with self._lock:
            self._faults.setdefault(path, deque()).extend(faults)

    def url(self, path: str = "") -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def requests_for(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def _next_fault(self, path: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get(path)
            return queue.popleft() if queue else None

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def __enter__(self) -> FileServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                owner._handle(self)

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?", 1)[0]
        headers = {k: v for k, v in h.headers.items()}
        fault = self._next_fault(path)

        def send(code: int, body: bytes, extra: dict[str, str] | None = None, *, length: int | None = None,
                 gate: threading.Event | None = None) -> None:
            self._record(Request(path, headers, code))
            h.send_response(code)
            for key, value in (extra or {}).items():
                h.send_header(key, value)
            h.send_header("Content-Length", str(len(body) if length is None else length))
            if length is not None and length != len(body):
                h.send_header("Connection", "close")
            h.end_headers()
            if gate is not None:
                h.wfile.flush()
                gate.wait(30)
            h.wfile.write(body)
            h.wfile.flush()
            if length is not None and length != len(body):
                h.close_connection = True

        if isinstance(fault, Status):
            send(fault.code, f"status {fault.code}\n".encode())
            return
        if isinstance(fault, Endless):
            self._record(Request(path, headers, 200))
            h.send_response(200)
            h.send_header("Connection", "close")
            h.end_headers()
            h.close_connection = True
            for _ in range((1 << 30) // len(fault.fill)):
                h.wfile.write(fault.fill)  # BrokenPipeError once the client gives up, ends the handler
            return
        data = self.files.get(path)
        if data is None:
            send(404, b"not found\n")
            return
        size = len(data)
        start = 0
        wanted = None if self.ignore_range or isinstance(fault, IgnoreRange) else h.headers.get("Range")
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted or "")
        if match:
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else size - 1
            if start >= size:
                send(416, b"", {"Content-Range": f"bytes */{size}"})
                return
            end = min(end, size - 1)
            body = data[start : end + 1]
            code, extra = 206, {"Content-Range": f"bytes {start}-{end}/{size}", "Accept-Ranges": "bytes"}
        else:
            body, code, extra = data, 200, {"Accept-Ranges": "none" if self.ignore_range else "bytes"}
        extra["Content-Type"] = "application/zip"
        if isinstance(fault, Cut):
            send(code, body[: fault.after], extra, length=len(body))
            return
        if isinstance(fault, Trickle):
            self._record(Request(path, headers, code))
            h.send_response(code)
            for key, value in extra.items():
                h.send_header(key, value)
            h.send_header("Content-Length", str(len(body)))
            h.send_header("Connection", "close")
            h.end_headers()
            h.close_connection = True
            for i in range(len(body)):
                h.wfile.write(body[i : i + 1])
                h.wfile.flush()
                time.sleep(fault.interval)
            return
        send(code, body, extra, gate=fault.event if isinstance(fault, Gate) else None)
