"""A reverse proxy on 127.0.0.1 that injects faults between an S3 client and a real S3 server.

The client talks to the proxy's address; the proxy forwards each request's bytes unchanged to the server,
Host header included, so an AWS SigV4 signature made for the proxy's address checks out on a server that
verifies signatures (Ceph). Per request, a seeded random draw chooses one fault (or none), optionally only
for some S3 operations (named as boto3 names them, derived from method, query string and headers):

- ``error``: answer 500 InternalError or 503 SlowDown without forwarding (the server did nothing);
- ``reset_before``: reset the client's connection without forwarding (the server did nothing);
- ``reset_after``: forward, read the server's response, then reset the client's connection instead of
  answering: the *lost response* (the server did the work, the client cannot know);
- ``delay``: wait ``delay_seconds`` (or ``delay_seconds[operation]``), then forward; a request whose client
  has gone by then (timed out, killed) is dropped.

``counts`` holds what was injected, for assertions that a test really exercised faults. ``before_forward``
lets a test act at an exact point (a concurrent writer just before a copy reaches the server).
Standard library only.
"""

from __future__ import annotations

import http.client
import random
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from airflow_fuse.embedded import S3Server

MODES = ("error", "reset_before", "reset_after", "delay")
# Not forwarded: they describe the client's connection to the proxy, not the request. 'Expect' is never
# signed by SigV4 (botocore leaves it out), and the proxy has already answered '100 Continue' itself.
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "expect"}
_ERRORS = ((500, "InternalError", "We encountered an internal error. Please try again."),
           (503, "SlowDown", "Please reduce your request rate."))


@dataclass(frozen=True)
class ProxiedRequest:
    """One request as the proxy received it."""

    method: str
    path: str  # raw, as sent (percent-encoded)
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    operation: str
    bucket: str
    key: str


def s3_operation(method: str, path: str, query: dict[str, list[str]] | Iterable[str],
                 headers: dict[str, str]) -> str:
    """The S3 API operation of a path-style request, as boto3 names it (``"Unknown"`` if not recognised)."""
    params = set(query)
    parts = urlsplit(path).path.lstrip("/").split("/", 1)
    has_key = len(parts) == 2 and parts[1] != ""
    copy = "x-amz-copy-source" in {h.lower() for h in headers}
    if method == "GET":
        for param, name in (("versions", "ListObjectVersions"), ("versioning", "GetBucketVersioning"),
                            ("uploads", "ListMultipartUploads"), ("uploadId", "ListParts"),
                            ("policy", "GetBucketPolicy"), ("location", "GetBucketLocation")):
            if param in params:
                return name
        if has_key:
            return "GetObject"
        return "ListObjectsV2" if "list-type" in params else "ListObjects"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if method == "PUT":
        if "versioning" in params:
            return "PutBucketVersioning"
        if "policy" in params:
            return "PutBucketPolicy"
        if "partNumber" in params and "uploadId" in params:
            return "UploadPartCopy" if copy else "UploadPart"
        if has_key:
            return "CopyObject" if copy else "PutObject"
        return "CreateBucket"
    if method == "POST":
        if "delete" in params:
            return "DeleteObjects"
        if "uploads" in params:
            return "CreateMultipartUpload"
        if "uploadId" in params:
            return "CompleteMultipartUpload"
    if method == "DELETE":
        if "uploadId" in params:
            return "AbortMultipartUpload"
        if "policy" in params:
            return "DeleteBucketPolicy"
        return "DeleteObject" if has_key else "DeleteBucket"
    return "Unknown"


class FaultProxy:
    """The proxy: ``start()``, point clients at ``url`` (``in_front_of(server)``), ``stop()``.

    Rates are probabilities per request (their sum at most 1). ``operations`` limits faults to those S3
    operations (all of them when None); ``max_faults`` stops injecting after that many. ``enabled`` turns
    injection off and on without restarting.
    """

    def __init__(self, upstream_url: str, *, seed: int = 0, error: float = 0.0, reset_before: float = 0.0,
                 reset_after: float = 0.0, delay: float = 0.0, delay_seconds: float | dict[str, float] = 0.1,
                 operations: Iterable[str] | None = None, max_faults: int | None = None,
                 before_forward: Callable[[ProxiedRequest], None] | None = None) -> None:
        upstream = urlsplit(upstream_url)
        if upstream.scheme != "http" or not upstream.hostname:
            raise ValueError(f"the fault proxy forwards plain http to a host: not {upstream_url!r}")
        self.upstream_host, self.upstream_port = upstream.hostname, upstream.port or 80
        self.rates = {"error": error, "reset_before": reset_before, "reset_after": reset_after, "delay": delay}
        if any(r < 0 for r in self.rates.values()) or sum(self.rates.values()) > 1:
            raise ValueError(f"fault rates must be >= 0 and add up to at most 1: {self.rates}")
        self.delay_seconds = delay_seconds
        self.operations = frozenset(operations) if operations is not None else None
        self.max_faults = max_faults
        self.before_forward = before_forward
        self.enabled = True
        self.counts: Counter[str] = Counter()  # injected faults by mode (+ "dropped": delayed, client gone)
        self.faults: Counter[tuple[str, str]] = Counter()  # (mode, operation)
        self.requests: Counter[str] = Counter()  # every request seen, by operation
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle ------------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start the proxy first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def in_front_of(self, server: S3Server) -> S3Server:
        """``server`` as reached through this proxy (same credentials)."""
        return replace(server, name=f"{server.name} via fault proxy", endpoint_url=self.url, _stop=None)

    @property
    def injected(self) -> int:
        """Faults injected so far (every mode)."""
        with self._lock:
            return sum(n for mode, n in self.counts.items() if mode in MODES)

    # decisions ------------------------------------------------------------------------------------
    def choose(self, operation: str) -> str | None:
        """The fault for one request of ``operation``, or None. Counts it."""
        with self._lock:
            self.requests[operation] += 1
            if not self.enabled or (self.operations is not None and operation not in self.operations):
                return None
            if self.max_faults is not None and sum(self.faults.values()) >= self.max_faults:
                return None
            roll = self._rng.random()
            for mode in MODES:
                roll -= self.rates[mode]
                if roll < 0:
                    self.counts[mode] += 1
                    self.faults[mode, operation] += 1
                    return mode
            return None

    def delay_for(self, operation: str) -> float:
        if isinstance(self.delay_seconds, dict):
            return self.delay_seconds.get(operation, 0.0)
        return self.delay_seconds

    def error_for(self) -> tuple[int, str, str]:
        with self._lock:
            return self._rng.choice(_ERRORS)

    def note(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    timeout = 120  # an idle client connection's thread ends eventually

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, OSError):
            self.close_connection = True

    def _read_body(self) -> bytes:
        """The request body exactly as sent (a chunked body stays chunked: it is forwarded as it came)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raw = bytearray()
            while True:
                line = self.rfile.readline(65537)
                raw += line
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers, then the empty line
                        trailer = self.rfile.readline(65537)
                        raw += trailer
                        if trailer in (b"\r\n", b"\n", b""):
                            return bytes(raw)
                raw += self.rfile.read(size + 2)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reset(self) -> None:
        """Abort the client's connection with a TCP reset (SO_LINGER 0), as a dropped link looks."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def _wait(self, seconds: float) -> bool:
        """Hold the request for ``seconds``; False as soon as the client has gone."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._client_gone():
                return False
            time.sleep(min(left, 0.02))
        return not self._client_gone()

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _handle(self) -> None:
        body = self._read_body()
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        headers = {name.lower(): value for name, value in self.headers.items()}
        operation = s3_operation(self.command, self.path, query, headers)
        parts = unquote(split.path).lstrip("/").split("/", 1)
        request = ProxiedRequest(self.command, self.path, query, headers, body, operation, parts[0],
                                 parts[1] if len(parts) == 2 else "")
        fault = self.owner.choose(operation)
        if fault == "error":
            status, code, message = self.owner.error_for()
            self._answer(status, {"Content-Type": "application/xml"},
                         f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                         f"<Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>".encode())
            return
        if fault == "reset_before":
            self._reset()
            return
        if fault == "delay" and not self._wait(self.owner.delay_for(operation)):
            self.owner.note("dropped")  # the client gave up (or was killed): the request never gets through
            self.close_connection = True
            return
        if self.owner.before_forward is not None:
            self.owner.before_forward(request)
        status, reason, response_headers, response_body = self._forward(body)
        if fault == "reset_after":
            self._reset()
            return
        self._answer(status, response_headers, response_body, reason=reason)

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """Send the request to the server on a fresh connection (so it is never sent twice)."""
        upstream = http.client.HTTPConnection(self.owner.upstream_host, self.owner.upstream_port, timeout=120)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    upstream.putheader(name, value)
            upstream.endheaders(body or None)
            response = upstream.getresponse()
            data = response.read()
            return response.status, response.reason, response.getheaders(), data
        finally:
            upstream.close()

    def _answer(self, status: int, headers: dict[str, str] | list[tuple[str, str]], body: bytes,
                reason: str | None = None) -> None:
        self.send_response_only(status, reason)
        items = headers.items() if isinstance(headers, dict) else headers
        length = None
        for name, value in items:
            lower = name.lower()
            if lower == "content-length":
                length = value
            elif lower not in _HOP_BY_HOP and lower != "transfer-encoding":
                self.send_header(name, value)
        if self.command == "HEAD" or status in (204, 304) or 100 <= status < 200:
            if length is not None:  # a HEAD answer states the object's length and has no body
                self.send_header("Content-Length", length)
            body = b""
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)
        self.wfile.flush()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815 - http.server's naming


@contextmanager
def fault_proxy(server: S3Server, **options: Any) -> Iterator[FaultProxy]:
    """A started :class:`FaultProxy` in front of ``server`` (``options`` as FaultProxy's), stopped after."""
    proxy = FaultProxy(server.endpoint_url, **options).start()
    try:
        yield proxy
    finally:
        proxy.stop()
