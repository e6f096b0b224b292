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
  TRELLIS_TEST_TRANSPORT      plain (default), tls or auto: the transport of base_config()'s
                              listener. For tls and auto the harness makes a test CA and a
                              certificate for localhost/127.0.0.1 (openssl CLI, once per process),
                              the raw client speaks TLS (trusting only that CA, SNI "localhost") and
                              curl gets https URLs with --cacert.
  TRELLIS_TEST_PROTOCOL       http1 (default) or h2: the HTTP version curl() asks for. With h2,
                              curl() adds --http2-prior-knowledge to http:// URLs and --http2 to
                              https:// ones (ALPN); with http1, --http1.1 to https:// ones (curl
                              would offer h2 by ALPN); unless the test names a version itself
                              (--http1.0, --http1.1, --http2*); CurlResult.http_version says what
                              was spoken. The raw-socket client (Conn) always speaks HTTP/1.x.
"""

from __future__ import annotations

import atexit
import calendar
import email.utils
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import urlsplit

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

# "listening on http://A:P" (plain), "listening on https://A:P" (tls),
# "listening on http://A:P (plain HTTP and TLS on one port)" (auto).
LISTENING_RE = re.compile(
    r"listening on (https?)://(\[[^\]]+\]|[^\s:/]+):(\d+)( \(plain HTTP and TLS on one port\))?")
# A Unix-domain listener ("address": "unix:PATH"): "listening on unix:PATH" (http),
# "listening on https+unix:PATH" (tls). LISTENING_RE never matches these lines.
UNIX_LISTENING_RE = re.compile(r"listening on (?:(https)\+)?unix:(\S+)")
TRANSPORTS = ("plain", "tls", "auto")
TRANSPORT = (os.environ.get("TRELLIS_TEST_TRANSPORT") or "plain").strip().lower()
if TRANSPORT not in TRANSPORTS:
    raise SystemExit(f"TRELLIS_TEST_TRANSPORT must be one of {TRANSPORTS}, got {TRANSPORT!r}")
TLS = TRANSPORT != "plain"  # the suite's listeners speak TLS (tls, or auto used with TLS)
PROTOCOLS = ("http1", "h2")
PROTOCOL = (os.environ.get("TRELLIS_TEST_PROTOCOL") or "http1").strip().lower()
if PROTOCOL not in PROTOCOLS:
    raise SystemExit(f"TRELLIS_TEST_PROTOCOL must be one of {PROTOCOLS}, got {PROTOCOL!r}")
_CURL_VERSION_FLAGS = ("--http1.0", "--http1.1", "--http2", "--http2-prior-knowledge", "--http3",
                       "-0")
# The exact listening line base_config()'s listener logs, per transport.
LISTENING_LINE_RE = {
    "plain": r"\[info\] listening on http://127\.0\.0\.1:\d+$",
    "tls": r"\[info\] listening on https://127\.0\.0\.1:\d+$",
    "auto": r"\[info\] listening on http://127\.0\.0\.1:\d+ \(plain HTTP and TLS on one port\)$",
}[TRANSPORT]
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
# Test certificates (openssl CLI)
# --------------------------------------------------------------------------------------------

OPENSSL = shutil.which("openssl") or "openssl"

_OPENSSL_CNF = """\
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
[ ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ server ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
{san}
[ client ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
{san}
"""


def openssl(*args: str, input: bytes | None = None, timeout: float = 20.0,
            check: bool = True) -> subprocess.CompletedProcess:
    """Runs the openssl CLI (bounded). check: raise with its output on a non-zero exit."""
    p = subprocess.run([OPENSSL, *args], input=input, capture_output=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed ({p.returncode}):\n"
                             f"{p.stdout.decode(errors='replace')}{p.stderr.decode(errors='replace')}")
    return p


def _openssl_cnf(path: Path, dns=(), ips=()) -> Path:
    alt = [f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips]
    path.write_text(_OPENSSL_CNF.format(san=f"subjectAltName = {', '.join(alt)}" if alt else ""))
    return path


def make_key(path: Path, kind: str = "ec") -> Path:
    """An ECDSA P-256 key (kind "ec") or an RSA 2048 key (kind "rsa"), PEM."""
    if kind == "ec":
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-pkeyopt", "ec_param_enc:named_curve", "-out", str(path))
    else:
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(path))
    return path


class CertPair:
    def __init__(self, cert: Path, key: Path):
        self.cert = cert
        self.key = key

    def fingerprint(self) -> str:
        """SHA-256 fingerprint as openssl prints it: AB:CD:..."""
        out = openssl("x509", "-in", str(self.cert), "-noout", "-fingerprint", "-sha256").stdout
        return out.decode().strip().split("=", 1)[1]

    def __repr__(self):
        return f"<CertPair {self.cert}>"


def make_ca(dir: Path, name: str, cn: str | None = None, days: int = 3650) -> CertPair:
    """A self-signed CA (ECDSA P-256) at dir/name.crt + dir/name.key."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    key = make_key(dir / f"{name}.key")
    cnf = _openssl_cnf(dir / f"{name}.cnf")
    crt = dir / f"{name}.crt"
    openssl("req", "-x509", "-new", "-config", str(cnf), "-extensions", "ca", "-key", str(key),
            "-sha256", "-days", str(days), "-subj", f"/O=Trellis tests/CN={cn or name}",
            "-out", str(crt))
    return CertPair(crt, key)


_OPENSSL_CA_CNF = """\
[ ca ]
default_ca = signer
[ signer ]
database = {dir}/index.txt
serial = {dir}/serial
new_certs_dir = {dir}
default_md = sha256
policy = any
unique_subject = no
[ any ]
organizationName = optional
commonName = supplied
"""


def _sign_with_dates(dir: Path, csr: Path, crt: Path, ca: CertPair, cnf: Path, extensions: str,
                     not_before: str, not_after: str) -> None:
    """Signs csr with `openssl ca`, the one openssl 3.0 command that sets both validity dates
    (x509 -req and req -x509 cannot backdate). Dates as "YYYYMMDDHHMMSSZ"."""
    work = Path(tempfile.mkdtemp(prefix="ca-", dir=dir))
    (work / "index.txt").write_text("")
    (work / "serial").write_text(os.urandom(8).hex() + "\n")
    config = work / "ca.cnf"
    config.write_text(_OPENSSL_CA_CNF.format(dir=work))
    openssl("ca", "-batch", "-notext", "-config", str(config), "-cert", str(ca.cert), "-keyfile",
            str(ca.key), "-in", str(csr), "-out", str(crt), "-preserveDN", "-startdate", not_before,
            "-enddate", not_after, "-extfile", str(cnf), "-extensions", extensions)
    shutil.rmtree(work, True)


def make_cert(dir: Path, name: str, ca: CertPair, cn: str, dns=(), ips=(), client: bool = False,
              key_kind: str = "ec", days: int = 825, not_before: str | None = None,
              not_after: str | None = None) -> CertPair:
    """A leaf certificate signed by ca, with subjectAltName DNS:dns..., IP:ips...; a server
    certificate (serverAuth) or, with client=True, a client one (clientAuth). Checked with
    `openssl verify` against ca before it is returned (its dates unchecked when given).
    not_before and not_after ("YYYYMMDDHHMMSSZ", both or neither) replace `days`: an expired
    certificate is one whose not_after has passed. A client=False certificate used as a client
    one is the "wrong extended key usage" case (serverAuth only)."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    key = make_key(dir / f"{name}.key", key_kind)
    cnf = _openssl_cnf(dir / f"{name}.cnf", dns, ips)
    csr, crt = dir / f"{name}.csr", dir / f"{name}.crt"
    openssl("req", "-new", "-config", str(cnf), "-key", str(key), "-subj",
            f"/O=Trellis tests/CN={cn}", "-out", str(csr))
    extensions = "client" if client else "server"
    when = []
    if not_before or not_after:
        _sign_with_dates(dir, csr, crt, ca, cnf, extensions, not_before, not_after)
        when = ["-no_check_time"]  # the CA itself may be younger than these dates
    else:
        openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
                "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-sha256",
                "-days", str(days), "-extfile", str(cnf), "-extensions", extensions, "-out", str(crt))
    v = openssl("verify", *when, "-CAfile", str(ca.cert), "-purpose",
                "sslclient" if client else "sslserver", str(crt))
    if not v.stdout.decode().strip().endswith(": OK"):
        raise AssertionError(f"openssl verify of {crt}: {v.stdout!r} {v.stderr!r}")
    return CertPair(crt, key)


class SuitePKI:
    """The process-wide test CA and the localhost server certificate it signed, made once (on
    first use) in a temp dir removed at exit."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="trellis-pki-"))
        atexit.register(shutil.rmtree, self.dir, True)
        self.ca = make_ca(self.dir, "test-ca", "Trellis Test CA")
        self.server = make_cert(self.dir, "localhost", self.ca, "localhost",
                                dns=["localhost"], ips=["127.0.0.1"])


_pki: SuitePKI | None = None
_pki_lock = threading.Lock()


def suite_pki() -> SuitePKI:
    global _pki
    with _pki_lock:
        if _pki is None:
            _pki = SuitePKI()
        return _pki


_client_contexts: dict = {}


def client_context(cafile: str | Path | None = None) -> ssl.SSLContext:
    """A TLS client context trusting only cafile (default: the test CA), hostname checked,
    TLS 1.2 at least. Cached per CA file."""
    cafile = str(cafile or suite_pki().ca.cert)
    ctx = _client_contexts.get(cafile)
    if ctx is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verify_mode CERT_REQUIRED, check_hostname
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_verify_locations(cafile=cafile)
        _client_contexts[cafile] = ctx
    return ctx


def tls_client_hello(server_hostname: str = "localhost") -> bytes:
    """The bytes of a real TLS ClientHello (Python's ssl over memory BIOs, the test CA's context):
    what a client sends first, for tests that feed a server a handshake by hand."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_context().wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    data = outgoing.read()
    assert data[:1] == b"\x16" and len(data) > 100, data[:10]
    return data


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


class ChunkedDecoder:
    """Incremental decoder of a chunked body (for large streamed responses, where re-parsing the
    whole buffer on every read would be quadratic). feed() takes raw bytes as they arrive and
    returns the bytes it did not consume (those after the last chunk and the trailers).
    decoded: the body so far; done: the last chunk and the trailers have been read;
    chunk_sizes: the size of every data chunk seen, in order."""

    def __init__(self):
        self.decoded = bytearray()
        self.done = False
        self.chunk_sizes: list[int] = []
        self._pending = bytearray()
        self._state = "size"  # size | data | data_crlf | trailers
        self._left = 0

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return bytes(data)
        self._pending += data
        buf = self._pending
        pos = 0
        while not self.done:
            if self._state == "size":
                le = buf.find(b"\r\n", pos)
                if le < 0:
                    break
                size_text = bytes(buf[pos:le]).split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size line: {bytes(buf[pos:le])[:100]!r}")
                pos = le + 2
                if size == 0:
                    self._state = "trailers"
                else:
                    self.chunk_sizes.append(size)
                    self._left = size
                    self._state = "data"
            elif self._state == "data":
                take = min(self._left, len(buf) - pos)
                if take == 0:
                    break
                self.decoded += buf[pos:pos + take]
                pos += take
                self._left -= take
                if self._left == 0:
                    self._state = "data_crlf"
            elif self._state == "data_crlf":
                if len(buf) - pos < 2:
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise ProtocolError("chunk data not followed by CRLF")
                pos += 2
                self._state = "size"
            else:  # trailers, until an empty line
                le = buf.find(b"\r\n", pos)
                if le < 0:
                    break
                line = buf[pos:le]
                pos = le + 2
                if line == b"":
                    self.done = True
        del buf[:pos]
        if self.done:
            rest = bytes(buf)
            self._pending = bytearray()
            return rest
        return b""


# --------------------------------------------------------------------------------------------
# Raw socket client
# --------------------------------------------------------------------------------------------

# The transport of every listener a Server of this process has reported, by port, so that a
# Conn(port) made from a bare port number speaks what that port expects (TLS on tls and auto
# listeners). Ports not in here use TRANSPORT.
_PORT_TRANSPORTS: dict[int, str] = {}

# What a TLS-level failure looks like to the reader: the peer is gone.
_TLS_EOF_ERRORS = (ssl.SSLZeroReturnError, ssl.SSLEOFError)


class Conn:
    """One TCP connection with a receive buffer, for raw HTTP. Over TLS (transport "tls" or
    "auto") the socket is an ssl.SSLSocket that trusts only the test CA and sends SNI
    "localhost"; the handshake happens in the constructor. A handshake the server refuses or
    cuts leaves the Conn closed (eof, reset, handshake_error set) rather than raising, as a
    plain connection the server closes at once would be."""

    def __init__(self, port: int, host: str = LOOPBACK, timeout: float = 5.0,
                 rcvbuf: int | None = None, transport: str | None = None,
                 server_hostname: str | None = "localhost", context: ssl.SSLContext | None = None):
        self.transport = transport or _PORT_TRANSPORTS.get(port, TRANSPORT)
        self.tls = self.transport != "plain"
        self.timeout = timeout
        self.buf = bytearray()  # bytearray: appending is amortised O(1) for large bodies
        self.eof = False
        self.reset = False
        self.handshake_error: Exception | None = None
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock = raw
        if rcvbuf:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect
        raw.settimeout(timeout)
        try:
            raw.connect((host, port))
        except BaseException:
            raw.close()
            raise
        if self.tls:
            ctx = context or client_context()
            try:
                # wrap_socket takes over the descriptor (raw is detached) and does the handshake.
                self.sock = ctx.wrap_socket(raw, server_hostname=server_hostname)
                self.sock.settimeout(timeout)
            except socket.timeout:
                raw.close()
                raise TimeoutError("timed out in the TLS handshake") from None
            except ssl.SSLCertVerificationError:
                raw.close()
                raise  # a wrong certificate is a real failure, never "closed"
            except (ssl.SSLError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as e:
                # The server closed or refused the connection during the handshake.
                self.handshake_error = e
                self.eof = True
                self.reset = True
                self.sock = raw  # detached and closed by the failed wrap_socket

    # -- sending
    def send(self, data: bytes) -> None:
        if self.handshake_error is not None:
            raise ConnectionResetError(f"TLS handshake failed: {self.handshake_error}")
        self.sock.sendall(data)

    def try_send(self, data: bytes) -> bool:
        """Sends; returns False instead of raising when the peer has closed/reset."""
        try:
            self.send(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, ssl.SSLError):
            return False

    def request(self, method: str, target: str, headers=None, body: bytes | str = b"", **kw):
        self.send(build_request(method, target, headers, body, **kw))

    def half_close(self) -> None:
        """The client is done sending, not done reading: a TCP FIN (SHUT_WR). Over TLS too: the
        FIN goes on the underlying socket (ssl.SSLSocket.shutdown would drop the TLS layer for
        the reads that follow), with no close_notify; the server takes the EOF as end of input."""
        socket.socket.shutdown(self.sock, socket.SHUT_WR)

    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1]

    def cipher(self):
        """(name, protocol, bits) of the TLS connection, None on plain."""
        return self.sock.cipher() if isinstance(self.sock, ssl.SSLSocket) else None

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
        except _TLS_EOF_ERRORS:
            self.eof = True  # close_notify, or a TCP EOF without one
            return False
        except (ConnectionResetError, ConnectionAbortedError, ssl.SSLError):
            self.eof = True  # a reset, or a TLS-level failure (an alert): the connection is gone
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

    def abort(self):
        """Leaves abruptly: closes with SO_LINGER 0, so the server gets a TCP RST (not a FIN,
        which it may take for a half-close) and sees the client gone at once."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def read_chunked_body(self, timeout: float | None = None, max_chunk: int = 65536) -> bytes:
        """After read_head() of a chunked response: reads and decodes the body incrementally
        (linear in its size); bytes after it stay in self.buf. Raises ConnectionError if the
        connection ends first, TimeoutError at the deadline."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        dec = ChunkedDecoder()
        while True:
            rest = dec.feed(bytes(self.buf))
            self.buf = bytearray(rest)
            if dec.done:
                return bytes(dec.decoded)
            if not self._recv(deadline, max_chunk):
                raise ConnectionError(
                    f"closed in a chunked body after {len(dec.decoded)} decoded bytes")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def recv_until_closed(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Reads a socket (plain or ssl.SSLSocket) until EOF/reset. Returns (data,
    closed_within_timeout)."""
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
        except (ConnectionResetError, ConnectionAbortedError, ssl.SSLError):
            return data, True  # SSLError: close_notify/EOF/alert, the TLS peer is gone
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

    @property
    def http_version(self) -> str | None:
        """"1.1", "2", ... from the status line of the last head, None without one."""
        if not self.all_heads:
            return None
        return self.all_heads[-1].split(b" ", 1)[0].decode("latin-1").partition("/")[2] or None

    def __repr__(self):
        return (f"<CurlResult rc={self.returncode} status={self.status} headers={self.headers!r} "
                f"body({len(self.body)})={self.body[:200]!r} stderr={self.stderr!r}>")


def curl(url: str, *args: str, timeout: float = 15.0, input: bytes | None = None) -> CurlResult:
    """Runs curl; returns the final response (status, headers of the last head, body bytes).
    An https URL is verified against the test CA (--cacert, never -k) unless args name another
    CA; https://localhost:PORT is pinned to 127.0.0.1 (--resolve: no attempt on ::1)."""
    extra = []
    u = urlsplit(url)
    if u.scheme == "https":
        if not any(a in ("--cacert", "--capath", "-k", "--insecure") for a in args):
            extra += ["--cacert", str(suite_pki().ca.cert)]
        if u.hostname == "localhost" and u.port and "--resolve" not in args:
            extra += ["--resolve", f"localhost:{u.port}:{LOOPBACK}"]
    if not any(a in _CURL_VERSION_FLAGS for a in args):
        if PROTOCOL == "h2":
            extra.append("--http2" if u.scheme == "https" else "--http2-prior-knowledge")
        elif u.scheme == "https":
            # curl offers h2 by ALPN on its own, and the server takes it: the HTTP/1.1 pass
            # asks for HTTP/1.1.
            extra.append("--http1.1")
    with tempfile.TemporaryDirectory(prefix="trellis-curl-") as d:
        hdr, body = os.path.join(d, "h"), os.path.join(d, "b")
        cmd = ["curl", "-q", "-sS", "--noproxy", "*", "--max-time", str(timeout),
               "-D", hdr, "-o", body, *extra, *args, url]
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
    if PROTOCOL == "h2" and heads and not any(a in _CURL_VERSION_FLAGS for a in args) and \
            not heads[-1].startswith(b"HTTP/2 "):
        # The h2 pass must really be HTTP/2: a server that fell back to HTTP/1.1 fails it.
        raise ProtocolError(f"TRELLIS_TEST_PROTOCOL=h2 but curl spoke {heads[-1][:12]!r}")
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


def tls_settings(cert: CertPair | None = None, **more) -> dict:
    """A "tls" config object serving cert (default: the suite's localhost certificate)."""
    cert = cert or suite_pki().server
    out = {"certificates": [{"cert": str(cert.cert), "key": str(cert.key)}]}
    out.update(more)
    return out


def base_config(**overrides) -> dict:
    """A config serving hello on /hello, echo on /echo, static (root "www") on /, with one
    listener of transport TRANSPORT (and, for tls/auto, the top-level "tls" settings with the
    suite's localhost certificate)."""
    cfg = {
        "workers": 1,
        "plugin_dir": str(PLUGIN_DIR),
        "listen": [{"address": LOOPBACK, "port": 0, "transport": TRANSPORT}],
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
    if TRANSPORT != "plain":
        cfg["tls"] = tls_settings()
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
        self.transports: list[str] = []  # per listener: "plain", "tls" or "auto" (from the log)
        # The Unix-domain listeners' paths, in the order of their "listening on" lines. They are
        # not in self.listeners (which holds the TCP ones only, in order).
        self.unix_listeners: list[str] = []

    # -- lifecycle
    def start(self, wait: bool = True, timeout: float = START_TIMEOUT,
              preexec: Callable[[], None] | None = None,
              binary: str | Path | None = None) -> "Server":
        """preexec: called in the child before exec, after the die-with-parent setup (e.g. to
        lower its RLIMIT_NOFILE). binary: the executable to start (default TRELLIS_BIN), e.g. a
        copy that a test replaces for a SIGUSR2 upgrade."""
        require_binary()
        self.binary = Path(binary) if binary is not None else TRELLIS_BIN
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")

        def child_setup():
            _die_with_parent()
            if preexec is not None:
                preexec()
        self.proc = subprocess.Popen([str(self.binary), "--config", str(self.config_path)],
                                     cwd=self.cwd, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err,
                                     preexec_fn=child_setup)
        if wait:
            self.wait_listening(timeout)
        return self

    def wait_listening(self, timeout: float = START_TIMEOUT):
        listen = self.config.get("listen", [])
        want_unix = sum(1 for entry in listen
                        if isinstance(entry, dict) and str(entry.get("address", "")).startswith("unix:"))
        want = len(listen) - want_unix if listen else 1  # TCP listeners
        deadline = time.monotonic() + timeout
        while True:
            text = self.stderr_text()
            found = LISTENING_RE.findall(text)
            found_unix = UNIX_LISTENING_RE.findall(text)
            if len(found) >= want and len(found_unix) >= want_unix:
                self.unix_listeners = [path for _, path in found_unix[:want_unix]]
                self.listeners = [(a, int(p)) for _, a, p, _ in found[:want]]
                self.transports = ["auto" if both else "tls" if scheme == "https" else "plain"
                                   for scheme, _, _, both in found[:want]]
                for (_, port), transport in zip(self.listeners, self.transports):
                    _PORT_TRANSPORTS[port] = transport
                return
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"trellis exited with {self.proc.returncode} before listening:\n"
                    f"{self.stderr_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"trellis did not print {want} TCP and {want_unix} Unix-socket 'listening on' "
                    f"line(s) within {timeout}s:\n"
                    f"{self.stderr_text()}")
            time.sleep(0.01)

    @property
    def port(self) -> int:
        return self.listeners[0][1]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str = "/", listener: int = 0) -> str:
        """http://127.0.0.1:PORT/path on a plain listener, https://localhost:PORT/path on tls and
        auto ones (the test certificate is for localhost and 127.0.0.1)."""
        port = self.listeners[listener][1]
        if self.transports[listener] == "plain":
            return f"http://{LOOPBACK}:{port}{path}"
        return f"https://localhost:{port}{path}"

    def http_url(self, path: str = "/", listener: int = 0) -> str:
        """A plain http:// URL for the listener (on an auto listener: its plain side)."""
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

    # -- the log while the server runs: marks, so a test looks only at what came after an action
    def log_mark(self) -> int:
        """Position (in bytes) of the end of the server's stderr now; pass to stderr_since()."""
        try:
            return self.stderr_path.stat().st_size
        except FileNotFoundError:
            return 0

    def stderr_since(self, mark: int) -> str:
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(mark)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_stderr_since(self, mark: int, pattern: str, timeout: float = 5.0):
        """Polls the stderr written after `mark` for pattern (re.M); the match, or None."""
        rx = re.compile(pattern, re.M)
        return wait_for(lambda: rx.search(self.stderr_since(mark)), timeout)

    # -- the configuration file while the server runs (SIGHUP reloads)
    def write_config(self, config: dict | None = None, raw: str | None = None) -> None:
        """Replaces server.json atomically (a temp file, then rename), so a reload never reads a
        half-written file. config: a dict (kept as self.config); raw: text as is."""
        text = raw if raw is not None else json.dumps(config, indent=2)
        tmp = self.config_path.with_name(self.config_path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)
        if config is not None:
            self.config = config

    RELOAD_OK_RE = r"reload: generation (\d+) active"
    RELOAD_FAILED_RE = r"reload failed:.*keeping generation (\d+)"

    def reload(self, config: dict | None = None, raw: str | None = None,
               timeout: float = 10.0) -> tuple[bool, str, int]:
        """Writes the new configuration (if given), sends SIGHUP and waits for the outcome line
        logged after it: (True, line, N) for "reload: generation N active", (False, line, N) for
        "reload failed: ... keeping generation N". Raises AssertionError if neither appears."""
        if config is not None or raw is not None:
            self.write_config(config, raw)
        mark = self.log_mark()
        os.kill(self.pid, signal.SIGHUP)
        rx = re.compile(r"^.*(?:" + self.RELOAD_OK_RE + "|" + self.RELOAD_FAILED_RE + r").*$", re.M)
        m = wait_for(lambda: rx.search(self.stderr_since(mark)), timeout)
        if m is None:
            raise AssertionError(f"no reload outcome line within {timeout}s after SIGHUP; log since:\n"
                                 f"{self.stderr_since(mark)}")
        if m.group(1) is not None:
            return True, m.group(0), int(m.group(1))
        return False, m.group(0), int(m.group(2))

    # -- clients
    def conn(self, timeout: float = 5.0, listener: int = 0, rcvbuf: int | None = None,
             **kw) -> Conn:
        """A raw connection speaking the listener's transport (TLS on tls and auto ones unless
        transport="plain"); kw: transport, server_hostname, context (see Conn)."""
        kw.setdefault("transport", self.transports[listener])
        return Conn(self.listeners[listener][1], timeout=timeout, rcvbuf=rcvbuf, **kw)

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

    def write_config_file(self, cfg: dict) -> Path:
        """cfg as a new server*.json in the test's conf/ (with an empty www/ beside it), for
        run_trellis("--check", "--config", path) and starts that must fail."""
        d = self.tmp / "conf"
        d.mkdir(exist_ok=True)
        (d / "www").mkdir(exist_ok=True)
        p = d / f"server{len(list(d.glob('*.json')))}.json"
        p.write_text(json.dumps(cfg, indent=2))
        return p

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
                     prepare: Callable[[Server], None] | None = None,
                     preexec: Callable[[], None] | None = None) -> Server:
        """Writes config + www, calls prepare(server) (e.g. to add files/symlinks), starts and
        waits for the listening line(s). preexec: see Server.start."""
        s = self.make_server(config, www, cwd)
        if prepare is not None:
            prepare(s)
        return s.start(preexec=preexec)

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
