"""Shared harness for the Trellis integration tests (Python 3.11 stdlib + the curl CLI).

Every test file imports this module. It knows where the binary and the plugins are (environment
variables set by ctest, or defaults under <repo>/build), starts the real server on an ephemeral
port from a generated config, and offers raw-socket and curl clients plus an HTTP/1.1 response
parser that works on raw byte streams (Content-Length, chunked, read-until-close, pipelining).

Environment:
  TRELLIS_BIN                 the server binary             (default <repo>/build/trellis)
  TRELLIS_PLUGIN_DIR          dir with hello.so, echo.so, static.so
  TRELLIS_FIXTURE_PLUGIN_DIR  dir with wrong_abi.so, missing_symbol.so, create_fails.so
  TRELLIS_SOURCE_DIR          repo root                     (default: two levels above this file)
  TRELLIS_TEST_VERBOSE=1      dump the server's stderr after every test, not only failing ones
"""

from __future__ import annotations

import calendar
import email.utils
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path
from typing import Callable, Iterable

# --------------------------------------------------------------------------------------------
# Locations
# --------------------------------------------------------------------------------------------

HERE = Path(__file__).resolve().parent
SOURCE_DIR = Path(os.environ.get("TRELLIS_SOURCE_DIR") or HERE.parents[1]).resolve()
BUILD_DIR = Path(os.environ.get("TRELLIS_BUILD_DIR") or (SOURCE_DIR / "build"))


def _find_dir_holding(filename: str, candidates: Iterable[Path]) -> Path:
    candidates = list(candidates)
    for c in candidates:
        if (c / filename).is_file():
            return c
    if BUILD_DIR.is_dir():
        for p in sorted(BUILD_DIR.rglob(filename)):
            if "_deps" not in p.parts:
                return p.parent
    return candidates[0]


TRELLIS_BIN = Path(os.environ.get("TRELLIS_BIN") or (BUILD_DIR / "trellis"))
PLUGIN_DIR = Path(os.environ.get("TRELLIS_PLUGIN_DIR") or _find_dir_holding(
    "hello.so", [BUILD_DIR / "plugins", BUILD_DIR, BUILD_DIR / "lib"]))
FIXTURE_PLUGIN_DIR = Path(os.environ.get("TRELLIS_FIXTURE_PLUGIN_DIR") or _find_dir_holding(
    "wrong_abi.so", [BUILD_DIR / "tests" / "fixtures" / "plugins", BUILD_DIR / "tests" / "fixtures",
                     BUILD_DIR / "fixtures" / "plugins", BUILD_DIR / "fixture_plugins"]))
FIXTURES_DIR = SOURCE_DIR / "tests" / "fixtures"

VERBOSE = os.environ.get("TRELLIS_TEST_VERBOSE") == "1"
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 10.0

LISTENING_RE = re.compile(r"listening on http://(\[[^\]]+\]|[^\s:/]+):(\d+)")
LOG_LINE_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z \[(debug|info|warn|error)\] \S.*$")
IMF_DATE_RE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d{2}:\d{2}:\d{2} GMT$")
STRONG_ETAG_RE = re.compile(r'^"[\x21\x23-\x7e\x80-\xff]+"$')


# --------------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------------

def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.02):
    """Polls predicate until it returns something truthy (returned) or timeout (returns None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def http_date(epoch: float) -> str:
    return email.utils.formatdate(epoch, usegmt=True)


def parse_http_date(value: str) -> float:
    return email.utils.parsedate_to_datetime(value).timestamp()


def utc_epoch(year, month, day, hour=0, minute=0, second=0) -> int:
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))


def write_tree(root: Path, tree: dict) -> None:
    """Writes {relative path: bytes|str} under root, creating directories."""
    for rel, content in tree.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        p.write_bytes(content)


# --------------------------------------------------------------------------------------------
# HTTP/1.1 response parsing from raw bytes
# --------------------------------------------------------------------------------------------

class ProtocolError(Exception):
    pass


class Response:
    def __init__(self, version: str, status: int, reason: str, headers: list[tuple[str, str]],
                 body: bytes, raw_head: bytes):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.raw_head = raw_head

    def header(self, name: str, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def has_header(self, name: str) -> bool:
        return bool(self.header_all(name))

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def connection_tokens(self) -> set[str]:
        toks = set()
        for v in self.header_all("connection"):
            toks.update(t.strip().lower() for t in v.split(",") if t.strip())
        return toks

    def __repr__(self):
        body = self.body if len(self.body) <= 200 else self.body[:200] + b"..."
        return (f"<Response {self.version} {self.status} {self.reason!r} headers={self.headers!r} "
                f"body({len(self.body)})={body!r}>")


def _no_body_status(status: int) -> bool:
    return 100 <= status < 200 or status in (204, 304)


def parse_response(buf: bytes, pos: int = 0, head: bool = False, eof: bool = False):
    """Parses one response starting at buf[pos].

    head: the request was HEAD (no body whatever the headers say).
    eof:  the stream is complete (a body delimited by close may end at len(buf)).
    Returns (Response, new_pos), or None when more bytes are needed. Raises ProtocolError.
    """
    end = buf.find(b"\r\n\r\n", pos)
    if end < 0:
        if eof and len(buf) > pos:
            raise ProtocolError(f"truncated response head: {buf[pos:pos + 300]!r}")
        return None
    raw_head = bytes(buf[pos:end + 4])
    lines = buf[pos:end].split(b"\r\n")
    m = re.match(rb"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
    if not m:
        raise ProtocolError(f"bad status line: {lines[0]!r}")
    version = m.group(1).decode()
    status = int(m.group(2))
    reason = (m.group(3) or b"").decode("latin-1")
    headers = []
    for line in lines[1:]:
        if b":" not in line:
            raise ProtocolError(f"bad header line: {line!r}")
        k, v = line.split(b":", 1)
        if k != k.strip() or not k:
            raise ProtocolError(f"bad header name: {line!r}")
        headers.append((k.decode("latin-1"), v.strip(b" \t").decode("latin-1")))
    resp = Response(version, status, reason, headers, b"", raw_head)
    p = end + 4
    if head or _no_body_status(status):
        return resp, p
    te = ",".join(resp.header_all("transfer-encoding")).lower()
    if te:
        codings = [c.strip() for c in te.split(",") if c.strip()]
        if codings[-1] != "chunked":
            raise ProtocolError(f"unsupported transfer-encoding in response: {te}")
        body = bytearray()
        while True:
            le = buf.find(b"\r\n", p)
            if le < 0:
                return None if not eof else _raise(f"truncated chunk size at {p}")
            size_text = buf[p:le].split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size line: {buf[p:le]!r}")
            p = le + 2
            if size == 0:
                # trailers until an empty line
                while True:
                    le = buf.find(b"\r\n", p)
                    if le < 0:
                        return None if not eof else _raise("truncated trailers")
                    line = buf[p:le]
                    p = le + 2
                    if line == b"":
                        resp.body = bytes(body)
                        return resp, p
                    resp.headers.append(tuple(x.strip().decode("latin-1")
                                              for x in line.split(b":", 1)))
            if len(buf) < p + size + 2:
                return None if not eof else _raise("truncated chunk data")
            body += buf[p:p + size]
            if buf[p + size:p + size + 2] != b"\r\n":
                raise ProtocolError("chunk data not followed by CRLF")
            p += size + 2
    cls = resp.header_all("content-length")
    if cls:
        if len(set(cls)) != 1:
            raise ProtocolError(f"conflicting Content-Length: {cls}")
        n = int(cls[0])
        if len(buf) < p + n:
            return None if not eof else _raise(
                f"truncated body: have {len(buf) - p} of {n} bytes")
        resp.body = bytes(buf[p:p + n])
        return resp, p + n
    # delimited by close
    if not eof:
        return None
    resp.body = bytes(buf[p:])
    return resp, len(buf)


def _raise(msg):
    raise ProtocolError(msg)


def parse_responses(data: bytes, heads: Iterable[int] = (), eof: bool = True):
    """Parses as many responses as data holds. heads: indices of responses to HEAD requests
    (1xx interim responses do not count as an index). Returns (responses, leftover_bytes)."""
    heads = set(heads)
    out, pos, idx = [], 0, 0
    while pos < len(data):
        r = parse_response(data, pos, head=idx in heads, eof=eof)
        if r is None:
            break
        resp, pos = r
        out.append(resp)
        if not (100 <= resp.status < 200):
            idx += 1
    return out, data[pos:]


def build_request(method: str, target: str, headers=None, body: bytes | str = b"",
                  version: str = "HTTP/1.1", host: str | None = "localhost",
                  content_length: bool | None = None) -> bytes:
    """Builds raw request bytes. headers: list of (name, value) or dict. host=None omits Host.
    content_length: None = add Content-Length when there is a body, True = always, False = never."""
    if isinstance(body, str):
        body = body.encode()
    if isinstance(headers, dict):
        headers = list(headers.items())
    headers = list(headers or [])
    names = {k.lower() for k, _ in headers}
    lines = [f"{method} {target} {version}"]
    if host is not None and "host" not in names:
        lines.append(f"Host: {host}")
    for k, v in headers:
        lines.append(f"{k}: {v}")
    if content_length is None:
        content_length = bool(body) and "content-length" not in names and \
            "transfer-encoding" not in names
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(*pieces: bytes, extensions: bool = False) -> bytes:
    out = b""
    for i, piece in enumerate(pieces):
        ext = f";ext{i}=v".encode() if extensions else b""
        out += f"{len(piece):x}".encode() + ext + b"\r\n" + piece + b"\r\n"
    return out + b"0\r\n\r\n"


# --------------------------------------------------------------------------------------------
# Raw socket client
# --------------------------------------------------------------------------------------------

class Conn:
    """One TCP connection with a receive buffer, for raw HTTP."""

    def __init__(self, port: int, host: str = LOOPBACK, timeout: float = 5.0,
                 rcvbuf: int | None = None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.timeout = timeout
        self.buf = bytearray()  # bytearray: appending is amortised O(1) for large bodies
        self.eof = False
        self.reset = False

    # -- sending
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def try_send(self, data: bytes) -> bool:
        """Sends; returns False instead of raising when the peer has closed/reset."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            return False

    def request(self, method: str, target: str, headers=None, body: bytes | str = b"", **kw):
        self.send(build_request(method, target, headers, body, **kw))

    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1]

    # -- receiving
    def _recv(self, deadline: float, max_chunk: int = 65536) -> bool:
        """Receives once into buf. Returns False on EOF/reset. Raises TimeoutError at deadline."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out waiting for data from the server")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(max_chunk)
        except socket.timeout:
            raise TimeoutError("timed out waiting for data from the server") from None
        except (ConnectionResetError, ConnectionAbortedError):
            self.eof = True
            self.reset = True
            return False
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def read_response(self, head: bool = False, timeout: float | None = None) -> Response:
        """Reads exactly one response (a 1xx counts as one). Raises ConnectionError if the
        server closes before a complete response, TimeoutError when none arrives in time."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            r = parse_response(self.buf, 0, head=head, eof=self.eof)
            if r is not None:
                resp, used = r
                del self.buf[:used]
                return resp
            if self.eof:
                raise ConnectionError(
                    f"server closed the connection before a complete response; got {self.buf[:300]!r}")
            self._recv(deadline)

    def read_head(self, timeout: float | None = None) -> Response:
        """Reads a response head only; body bytes stay in self.buf."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\r\n\r\n" not in self.buf:
            if not self._recv(deadline):
                raise ConnectionError(f"closed before a response head; got {self.buf[:300]!r}")
        r = parse_response(self.buf, 0, head=True)
        resp, used = r
        del self.buf[:used]
        return resp

    def read_exact(self, n: int, timeout: float | None = None, chunk: int = 65536) -> bytes:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(self.buf) < n:
            if not self._recv(deadline, chunk):
                break
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_until_closed(self, timeout: float | None = None) -> tuple[bytes, bool]:
        """Returns (all bytes not consumed yet + everything until close, closed_within_timeout)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            while self._recv(deadline):
                pass
            closed = True
        except TimeoutError:
            closed = False
        data = bytes(self.buf)
        self.buf = bytearray()
        return data, closed

    def is_open_after(self, seconds: float) -> bool:
        """True if nothing arrived and the connection did not close within `seconds`."""
        try:
            self._recv(time.monotonic() + seconds)  # data or EOF: not idle-open
            return False
        except TimeoutError:
            return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def recv_until_closed(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Reads a plain socket until EOF/reset. Returns (data, closed_within_timeout)."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return data, False
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return data, False
        except (ConnectionResetError, ConnectionAbortedError):
            return data, True
        if not chunk:
            return data, True
        data += chunk


def exchange_raw(port: int, raw: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Opens a connection, sends raw, reads until the server closes (or timeout).
    Returns (all bytes received, closed_within_timeout)."""
    with Conn(port, timeout=timeout) as c:
        c.try_send(raw)
        return c.read_until_closed(timeout)


def exchange(port: int, raw: bytes, timeout: float = 5.0, heads=()) -> tuple[list[Response], bytes, bool]:
    """Like exchange_raw, parsed: returns (responses, leftover, closed)."""
    data, closed = exchange_raw(port, raw, timeout)
    resps, rest = parse_responses(data, heads=heads)
    return resps, rest, closed


# --------------------------------------------------------------------------------------------
# curl
# --------------------------------------------------------------------------------------------

class CurlResult:
    def __init__(self, returncode, status, headers, body, stderr, all_heads):
        self.returncode = returncode
        self.status = status
        self.headers = headers
        self.body = body
        self.stderr = stderr
        self.all_heads = all_heads

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def __repr__(self):
        return (f"<CurlResult rc={self.returncode} status={self.status} headers={self.headers!r} "
                f"body({len(self.body)})={self.body[:200]!r} stderr={self.stderr!r}>")


def curl(url: str, *args: str, timeout: float = 15.0, input: bytes | None = None) -> CurlResult:
    """Runs curl; returns the final response (status, headers of the last head, body bytes)."""
    with tempfile.TemporaryDirectory(prefix="trellis-curl-") as d:
        hdr, body = os.path.join(d, "h"), os.path.join(d, "b")
        cmd = ["curl", "-q", "-sS", "--noproxy", "*", "--max-time", str(timeout),
               "-D", hdr, "-o", body, *args, url]
        p = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout + 5)
        raw = Path(hdr).read_bytes() if os.path.exists(hdr) else b""
        data = Path(body).read_bytes() if os.path.exists(body) else b""
    heads = [blk for blk in raw.replace(b"\r\n", b"\n").split(b"\n\n") if blk.startswith(b"HTTP/")]
    status, headers = None, []
    if heads:
        lines = heads[-1].decode("latin-1").split("\n")
        status = int(lines[0].split()[1])
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers.append((k.strip(), v.strip()))
    return CurlResult(p.returncode, status, headers, data, p.stderr.decode(errors="replace"), heads)


# --------------------------------------------------------------------------------------------
# Running the binary
# --------------------------------------------------------------------------------------------

class Ran:
    def __init__(self, returncode, stdout, stderr, timed_out):
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.timed_out = timed_out

    @property
    def stderr_lines(self):
        return [ln for ln in self.stderr.splitlines() if ln.strip()]

    @property
    def output(self):
        return self.stdout + self.stderr

    def __repr__(self):
        return (f"<Ran rc={self.returncode} timed_out={self.timed_out}\n--- stdout\n{self.stdout}"
                f"--- stderr\n{self.stderr}--->")


def _die_with_parent():
    """preexec_fn: the server gets SIGKILL if the test process dies (e.g. a ctest timeout), so
    no server outlives its test."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # noqa: BLE001 - best effort (non-Linux)
        pass


def require_binary():
    if not TRELLIS_BIN.is_file() or not os.access(TRELLIS_BIN, os.X_OK):
        raise AssertionError(f"trellis binary not found at {TRELLIS_BIN} (set TRELLIS_BIN)")


def run_trellis(*args: str, cwd: str | Path | None = None, timeout: float = 10.0) -> Ran:
    """Runs the binary to completion (bounded). A run that does not exit is killed; timed_out."""
    require_binary()
    p = subprocess.Popen([str(TRELLIS_BIN), *args], cwd=cwd, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=_die_with_parent)
    try:
        out, err = p.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        timed_out = True
    return Ran(p.returncode, out.decode(errors="replace"), err.decode(errors="replace"), timed_out)


def base_config(**overrides) -> dict:
    """A config serving hello on /hello, echo on /echo, static (root "www") on /."""
    cfg = {
        "workers": 1,
        "plugin_dir": str(PLUGIN_DIR),
        "listen": [{"address": LOOPBACK, "port": 0, "transport": "plain"}],
        "plugins": [
            {"name": "hello", "path": "hello"},
            {"name": "echo", "path": "echo"},
            {"name": "site", "path": "static", "config": {"root": "www"}},
        ],
        "routes": [
            {"prefix": "/hello", "plugin": "hello"},
            {"prefix": "/echo", "plugin": "echo"},
            {"host": "*", "prefix": "/", "plugin": "site"},
        ],
        "access_log": "off",
        "log_level": "info",
    }
    limits = overrides.pop("limits", None)
    if limits is not None:
        cfg["limits"] = dict(limits)
    cfg.update(overrides)
    return cfg


DEFAULT_WWW = {
    "index.html": "<!doctype html><title>home</title><h1>Trellis test home</h1>\n",
    "docs/index.html": "<h1>docs index</h1>\n",
    "docs/page.html": "<p>docs page</p>\n",
    "notes.txt": "plain notes\n",
}


# What AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer print when they find something.
SANITIZER_RE = re.compile(r"ERROR: (Address|Leak)Sanitizer|runtime error: |SUMMARY: \w+Sanitizer")


class Server:
    """One running trellis process, configured from a dict, in its own directory:
    <dir>/server.json, <dir>/www/..., <dir>/stderr.log, <dir>/stdout.log."""

    def __init__(self, dir: Path, config: dict, www: dict | None = None,
                 cwd: str | Path | None = None, raw_config: str | None = None):
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.config_path = self.dir / "server.json"
        self.www = self.dir / "www"
        self.www.mkdir(exist_ok=True)
        write_tree(self.www, DEFAULT_WWW if www is None else www)
        self.config_path.write_text(raw_config if raw_config is not None
                                    else json.dumps(config, indent=2))
        self.cwd = str(cwd) if cwd is not None else str(self.dir)
        self.stderr_path = self.dir / "stderr.log"
        self.stdout_path = self.dir / "stdout.log"
        self.proc: subprocess.Popen | None = None
        self.listeners: list[tuple[str, int]] = []

    # -- lifecycle
    def start(self, wait: bool = True, timeout: float = START_TIMEOUT) -> "Server":
        require_binary()
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen([str(TRELLIS_BIN), "--config", str(self.config_path)],
                                     cwd=self.cwd, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err,
                                     preexec_fn=_die_with_parent)
        if wait:
            self.wait_listening(timeout)
        return self

    def wait_listening(self, timeout: float = START_TIMEOUT):
        want = len(self.config.get("listen", [])) or 1
        deadline = time.monotonic() + timeout
        while True:
            found = LISTENING_RE.findall(self.stderr_text())
            if len(found) >= want:
                self.listeners = [(a, int(p)) for a, p in found[:want]]
                return
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"trellis exited with {self.proc.returncode} before listening:\n"
                    f"{self.stderr_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"trellis did not print {want} 'listening on' line(s) within {timeout}s:\n"
                    f"{self.stderr_text()}")
            time.sleep(0.01)

    @property
    def port(self) -> int:
        return self.listeners[0][1]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str = "/", listener: int = 0) -> str:
        return f"http://{LOOPBACK}:{self.listeners[listener][1]}{path}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 10.0):
        """Waits (bounded) for exit; returns the exit code or None if still running."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, timeout: float = 10.0) -> int:
        """Sends sig and waits for exit; returns the exit code. Kills and fails on timeout."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.wait_exit(timeout)
        if code is None:
            self.kill()
            raise AssertionError(f"trellis did not exit within {timeout}s after signal {sig}")
        self._close_files()
        return code

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._close_files()

    def _close_files(self):
        for f in (getattr(self, "_err", None), getattr(self, "_out", None)):
            if f is not None and not f.closed:
                f.close()

    # -- output
    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def stdout_text(self) -> str:
        try:
            return self.stdout_path.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_stderr(self, pattern: str, timeout: float = 5.0):
        rx = re.compile(pattern, re.M)
        return wait_for(lambda: rx.search(self.stderr_text()), timeout)

    # -- clients
    def conn(self, timeout: float = 5.0, listener: int = 0, rcvbuf: int | None = None) -> Conn:
        return Conn(self.listeners[listener][1], timeout=timeout, rcvbuf=rcvbuf)

    def get(self, target: str, headers=None, method: str = "GET", body=b"", **kw) -> Response:
        """One request on a fresh connection with Connection: close; returns the response."""
        hs = list((headers.items() if isinstance(headers, dict) else headers) or [])
        if not any(k.lower() == "connection" for k, _ in hs):
            hs.append(("Connection", "close"))
        with self.conn() as c:
            c.request(method, target, hs, body, **kw)
            return c.read_response(head=(method == "HEAD"))

    def curl(self, path: str, *args: str, **kw) -> CurlResult:
        return curl(self.url(path), *args, **kw)


# --------------------------------------------------------------------------------------------
# Test case base class
# --------------------------------------------------------------------------------------------

class TrellisTestCase(unittest.TestCase):
    """Gives each test a temp dir and servers that are always killed; dumps the servers' stderr
    when the test fails."""

    def setUp(self):
        self._tmpdir = tempfile.TemporaryDirectory(prefix="trellis-it-")
        self.tmp = Path(self._tmpdir.name)
        self.servers: list[Server] = []
        self._conns: list[Conn] = []
        self.addCleanup(self._trellis_cleanup)

    def _trellis_cleanup(self):
        failed = self._trellis_test_failed()
        for c in self._conns:
            c.close()
        for s in self.servers:
            # A graceful stop, so sanitizer builds also run their leak check on every server.
            if s.running():
                s.send_signal(signal.SIGTERM)
                if s.wait_exit(10.0) is None:
                    s.kill()
            s.kill()
        sanitizer_reports = [(i, s) for i, s in enumerate(self.servers)
                             if SANITIZER_RE.search(s.stderr_text())]
        failed = failed or bool(sanitizer_reports)
        if failed or VERBOSE:
            for i, s in enumerate(self.servers):
                err = s.stderr_text()
                lines = err.splitlines()
                if len(lines) > 150:
                    lines = ["... (%d lines skipped)" % (len(lines) - 150)] + lines[-150:]
                sys.stderr.write(f"\n----- trellis stderr ({self.id()}, server {i}, "
                                 f"exit {s.proc.returncode if s.proc else None}) -----\n")
                sys.stderr.write("\n".join(lines) + "\n")
                sys.stderr.write("----- end of trellis stderr -----\n")
        self._tmpdir.cleanup()
        if sanitizer_reports:
            raise AssertionError("sanitizer report in the stderr of server(s) %s"
                                 % [i for i, _ in sanitizer_reports])

    def _trellis_test_failed(self) -> bool:
        # Cleanups run inside their own testPartExecutor (outcome.success is reset there), so
        # look at the result's failure lists for this test and its subtests.
        outcome = getattr(self, "_outcome", None)
        result = getattr(outcome, "result", None)
        if result is None:
            return True
        for test, _ in list(getattr(result, "failures", [])) + list(getattr(result, "errors", [])):
            if test is self or getattr(test, "test_case", None) is self:
                return True
        return False

    def make_server(self, config: dict | None = None, www: dict | None = None,
                    cwd=None, raw_config: str | None = None) -> Server:
        d = self.tmp / f"srv{len(self.servers)}"
        s = Server(d, config if config is not None else base_config(), www=www, cwd=cwd,
                   raw_config=raw_config)
        self.servers.append(s)
        return s

    def start_server(self, config: dict | None = None, www: dict | None = None, cwd=None,
                     prepare: Callable[[Server], None] | None = None) -> Server:
        """Writes config + www, calls prepare(server) (e.g. to add files/symlinks), starts and
        waits for the listening line(s)."""
        s = self.make_server(config, www, cwd)
        if prepare is not None:
            prepare(s)
        return s.start()

    def conn(self, server: Server, **kw) -> Conn:
        c = server.conn(**kw)
        self._conns.append(c)
        return c

    # -- assertions
    def assertCommonHeaders(self, resp):
        """Every response carries Date (IMF-fixdate, close to now) and Server: trellis."""
        date = resp.header("Date")
        self.assertIsNotNone(date, f"no Date header in {resp!r}")
        self.assertRegex(date, IMF_DATE_RE)
        self.assertLess(abs(parse_http_date(date) - time.time()), 120, f"Date far from now: {date}")
        self.assertEqual(resp.header_all("Server"), ["trellis"], f"Server header in {resp!r}")

    def assertClosedAfterError(self, data: bytes, closed: bool, status: int | Iterable[int]):
        """data = everything read until close: exactly one response with `status`, then close."""
        statuses = {status} if isinstance(status, int) else set(status)
        resps, rest = parse_responses(data)
        self.assertTrue(resps, f"expected a {sorted(statuses)} response, got {data[:300]!r}")
        self.assertIn(resps[0].status, statuses, f"got {resps[0]!r}")
        self.assertEqual(len(resps), 1, f"more than one response: {resps!r}")
        self.assertEqual(rest, b"", f"garbage after the response: {rest[:200]!r}")
        self.assertTrue(closed, "the server did not close the connection after the error")
        self.assertCommonHeaders(resps[0])
        return resps[0]


def main():
    unittest.main(verbosity=2)
