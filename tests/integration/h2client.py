"""A raw HTTP/2 client for the integration tests: frames are built and parsed here (RFC 9113 §4,
§6), header blocks are encoded by a tiny stateless HPACK encoder (literals without indexing, so a
test may send anything: uppercase names, pseudo-headers in any order, raw HPACK bytes of its own)
and decoded by the `hpack` package (python3-hpack, part of the h2 stack). Nothing here enforces
the protocol on the client's side: the point is to send what a hostile peer sends and to see
exactly which frames the server answers with (GOAWAY and RST_STREAM codes, DATA against the
windows it was given).

    c = H2Conn.connect(port, tls=True)          # TLS with ALPN h2 (or tls=False: prior knowledge)
    sid = c.request("GET", "/hello")
    r = c.response(sid)                          # H2Response: status, headers, body, reset_code
    c.wait_goaway_or_close(5)                    # after an attack

Every wait is bounded (a deadline per call); the server's SETTINGS are ACKed and its PINGs
answered as they are read (unless turned off); received DATA is given back with WINDOW_UPDATE
(per stream and per connection) unless auto_window_update=False, which the flow-control tests use.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

try:
    import hpack
except ImportError:  # a pyenv/venv interpreter: Debian's python3-hpack is pure Python, borrow it
    _DIST = "/usr/lib/python3/dist-packages"
    if os.path.isdir(_DIST) and _DIST not in sys.path:
        sys.path.append(_DIST)
    import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 §6)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
FRAME_NAMES = {DATA: "DATA", HEADERS: "HEADERS", PRIORITY: "PRIORITY", RST_STREAM: "RST_STREAM",
               SETTINGS: "SETTINGS", PUSH_PROMISE: "PUSH_PROMISE", PING: "PING", GOAWAY: "GOAWAY",
               WINDOW_UPDATE: "WINDOW_UPDATE", CONTINUATION: "CONTINUATION"}
# Flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
# Error codes (RFC 9113 §7)
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, \
    FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, \
    ENHANCE_YOUR_CALM, INADEQUATE_SECURITY, HTTP_1_1_REQUIRED = range(14)
ERROR_NAMES = {v: k for k, v in dict(
    NO_ERROR=0, PROTOCOL_ERROR=1, INTERNAL_ERROR=2, FLOW_CONTROL_ERROR=3, SETTINGS_TIMEOUT=4,
    STREAM_CLOSED=5, FRAME_SIZE_ERROR=6, REFUSED_STREAM=7, CANCEL=8, COMPRESSION_ERROR=9,
    CONNECT_ERROR=10, ENHANCE_YOUR_CALM=11, INADEQUATE_SECURITY=12, HTTP_1_1_REQUIRED=13).items()}
# Settings (RFC 9113 §6.5.2)
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, \
    MAX_HEADER_LIST_SIZE = range(1, 7)
SETTING_NAMES = {1: "HEADER_TABLE_SIZE", 2: "ENABLE_PUSH", 3: "MAX_CONCURRENT_STREAMS",
                 4: "INITIAL_WINDOW_SIZE", 5: "MAX_FRAME_SIZE", 6: "MAX_HEADER_LIST_SIZE"}
MAX_WINDOW = 2 ** 31 - 1


def error_name(code) -> str:
    return ERROR_NAMES.get(code, f"0x{code:x}") if code is not None else "None"


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------

def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame, as is: no check of its length against any limit, nor of the stream id."""
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream_id & 0x7FFFFFFF) + payload


def hpack_int(value: int, prefix_bits: int, first_byte_flags: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 §5.1) with an N-bit prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte_flags | value])
    out = bytearray([first_byte_flags | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_string(s: bytes) -> bytes:
    return hpack_int(len(s), 7) + s  # never Huffman: what is sent is what is seen


def _b(x) -> bytes:
    return x if isinstance(x, bytes) else str(x).encode("latin-1")


def literal(name, value, indexing: bool = False) -> bytes:
    """A literal header field with a new name (RFC 7541 §6.2): without indexing (0x00), or with
    incremental indexing (0x40, the entry goes into the decoder's dynamic table)."""
    return (b"\x40" if indexing else b"\x00") + hpack_string(_b(name)) + hpack_string(_b(value))


def encode_headers(headers) -> bytes:
    """A header block of literals without indexing, in the order given, bytes as given."""
    return b"".join(literal(k, v) for k, v in headers)


def padded_block(headers, size: int) -> bytes:
    """A valid header block of exactly `size` bytes: headers plus one x-pad field."""
    head = encode_headers(headers)
    for n in range(max(0, size - len(head) - 16), size):
        block = head + literal("x-pad", "a" * n)
        if len(block) == size:
            return block
        if len(block) > size:
            break
    raise ValueError(f"cannot pad a header block to {size} bytes")


def settings_payload(settings: dict) -> bytes:
    return b"".join(struct.pack(">HI", k, v) for k, v in settings.items())


# --------------------------------------------------------------------------------------------
# Received frames
# --------------------------------------------------------------------------------------------

@dataclass
class Frame:
    type: int
    flags: int
    stream_id: int
    payload: bytes
    # decoded, by type
    headers: list | None = None        # HEADERS (after its CONTINUATIONs), PUSH_PROMISE
    data: bytes = b""                  # DATA without padding
    error_code: int | None = None      # RST_STREAM, GOAWAY
    last_stream_id: int | None = None  # GOAWAY
    debug: bytes = b""                 # GOAWAY
    settings: dict | None = None       # SETTINGS
    increment: int | None = None       # WINDOW_UPDATE

    @property
    def name(self) -> str:
        return FRAME_NAMES.get(self.type, f"type{self.type}")

    def __repr__(self):
        extra = ""
        if self.type in (RST_STREAM, GOAWAY):
            extra = f" {error_name(self.error_code)}"
            if self.type == GOAWAY:
                extra += f" last={self.last_stream_id} debug={self.debug[:80]!r}"
        elif self.type == SETTINGS:
            extra = " ACK" if self.flags & ACK else f" {self.settings}"
        elif self.type == WINDOW_UPDATE:
            extra = f" +{self.increment}"
        elif self.type == DATA:
            extra = f" len={len(self.data)}{' END_STREAM' if self.flags & END_STREAM else ''}"
        elif self.type == HEADERS:
            extra = f" {self.headers}{' END_STREAM' if self.flags & END_STREAM else ''}"
        return f"<{self.name} sid={self.stream_id}{extra}>"


@dataclass
class H2Response:
    stream_id: int
    status: int | None = None
    headers: list = field(default_factory=list)      # [(name, value)] of the final response
    informational: list = field(default_factory=list)  # 1xx header lists
    trailers: list = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False                 # END_STREAM received
    reset_code: int | None = None       # RST_STREAM received
    data_frames: int = 0

    def header(self, name: str, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def header_all(self, name: str) -> list:
        return [v for k, v in self.headers if k == name.lower()]

    @property
    def done(self) -> bool:
        return self.ended or self.reset_code is not None

    def __repr__(self):
        body = bytes(self.body[:200])
        return (f"<H2Response sid={self.stream_id} status={self.status} headers={self.headers} "
                f"body({len(self.body)})={body!r} ended={self.ended} "
                f"reset={error_name(self.reset_code) if self.reset_code is not None else None}>")


class ConnectionGone(Exception):
    pass


# --------------------------------------------------------------------------------------------
# The connection
# --------------------------------------------------------------------------------------------

def tls_context(cafile=None, alpn=("h2",), verify: bool = True) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify and cafile:
        ctx.load_verify_locations(cafile=str(cafile))
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


class H2Conn:
    """One client connection. Construct with a connected socket (see connect())."""

    def __init__(self, sock, timeout: float = 5.0, auto_window_update: bool = True,
                 auto_ack: bool = True, authority: str = "localhost", scheme: str = "http",
                 max_recorded_frames: int = 100000):
        self.sock = sock
        self.max_recorded_frames = max_recorded_frames  # past it, only GOAWAY/RST/HEADERS kept
        self.timeout = timeout
        self.auto_window_update = auto_window_update
        self.auto_ack = auto_ack
        self.authority = authority
        self.scheme = scheme
        self.buf = bytearray()
        self.eof = False
        self.reset = False             # ECONNRESET / TLS failure while reading
        self.frames: list[Frame] = []  # everything received, in order
        self.frames_dropped = 0        # not recorded (see max_recorded_frames)
        self.streams: dict[int, H2Response] = {}
        self.goaway: Frame | None = None
        self.server_settings: dict = {}
        self.server_settings_received = False
        self.settings_acks = 0         # ACKs of our SETTINGS received
        self.ping_acks = 0
        self.next_stream_id = 1
        # What we may send (the server's windows for us).
        self.send_window_conn = 65535
        self.peer_initial_window = 65535
        self.send_windows: dict[int, int] = {}
        self.peer_max_frame_size = 16384
        self.bytes_sent = 0
        self.data_bytes_received = 0
        self._decoder = hpack.Decoder()
        self._decoder.max_header_list_size = 1 << 30
        self._decoder.max_allowed_table_size = 1 << 20
        self._header_block: tuple[Frame, bytearray] | None = None  # HEADERS awaiting CONTINUATION
        self.alpn = sock.selected_alpn_protocol() if isinstance(sock, ssl.SSLSocket) else None

    # -- construction
    @classmethod
    def connect(cls, port: int, host: str = "127.0.0.1", tls: bool = False, timeout: float = 5.0,
                context: ssl.SSLContext | None = None, cafile=None, server_hostname="localhost",
                rcvbuf: int | None = None, settings: dict | None = None, preface: bool = True,
                wait_settings: bool = True, **kw) -> "H2Conn":
        """Connects (TLS with ALPN h2 when tls), sends the preface and SETTINGS (settings: our
        values, default none), and waits for the server's SETTINGS (ACKed as read)."""
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(timeout)
        raw.connect((host, port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = raw
        if tls:
            ctx = context or tls_context(cafile)
            sock = ctx.wrap_socket(raw, server_hostname=server_hostname)
            sock.settimeout(timeout)
        c = cls(sock, timeout=timeout, scheme="https" if tls else "http", **kw)
        if preface:
            c.send_preface(settings or {})
            if wait_settings:
                if not c.read_until(lambda: c.server_settings_received, timeout):
                    raise AssertionError(f"no SETTINGS from the server within {timeout}s; frames "
                                         f"{c.frames[:10]}, eof={c.eof}, bytes {bytes(c.buf[:200])!r}")
        return c

    def send_preface(self, settings: dict | None = None):
        self.send(PREFACE + frame(SETTINGS, 0, 0, settings_payload(settings or {})))

    # -- sending
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)
        self.bytes_sent += len(data)

    def try_send(self, data: bytes) -> bool:
        try:
            self.send(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, ssl.SSLError,
                socket.timeout, OSError):
            return False

    def new_stream_id(self) -> int:
        sid = self.next_stream_id
        self.next_stream_id += 2
        return sid

    def request_headers(self, method: str, path: str, headers=(), authority=None) -> list:
        return [(":method", method), (":scheme", self.scheme),
                (":authority", authority or self.authority), (":path", path), *headers]

    def send_headers(self, stream_id: int, headers, end_stream: bool = False,
                     end_headers: bool = True, block: bytes | None = None) -> None:
        """A HEADERS frame; headers as given (list of pairs) or a raw HPACK block."""
        if block is None:
            block = encode_headers(headers)
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        self.streams.setdefault(stream_id, H2Response(stream_id))
        self.send_windows.setdefault(stream_id, self.peer_initial_window)
        self.send(frame(HEADERS, flags, stream_id, block))

    def send_continuation(self, stream_id: int, block: bytes, end_headers: bool = False) -> None:
        self.send(frame(CONTINUATION, END_HEADERS if end_headers else 0, stream_id, block))

    def send_data_frame(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """One DATA frame, regardless of windows and frame size."""
        self.send(frame(DATA, END_STREAM if end_stream else 0, stream_id, data))
        self.send_window_conn -= len(data)
        if stream_id in self.send_windows:
            self.send_windows[stream_id] -= len(data)

    def send_body(self, stream_id: int, data: bytes, end_stream: bool = True,
                  timeout: float | None = None) -> None:
        """DATA within the server's windows and max frame size, waiting (reading) for
        WINDOW_UPDATE when they are used up. Raises TimeoutError/ConnectionGone."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        pos = 0
        while pos < len(data) or (end_stream and pos == len(data) == 0):
            if len(data) == 0:
                self.send_data_frame(stream_id, b"", end_stream)
                return
            room = min(self.send_window_conn, self.send_windows.get(stream_id, 0),
                       self.peer_max_frame_size, len(data) - pos)
            if room <= 0:
                self._check_stream_alive(stream_id)
                if not self._read_some(deadline):
                    raise ConnectionGone(f"connection ended while sending a body ({pos} bytes sent)")
                continue
            last = pos + room == len(data)
            self.send_data_frame(stream_id, data[pos:pos + room], end_stream and last)
            pos += room
            self._poll_nonblocking()

    def _check_stream_alive(self, stream_id):
        st = self.streams.get(stream_id)
        if st is not None and st.reset_code is not None:
            raise ConnectionGone(f"stream {stream_id} was reset ({error_name(st.reset_code)})")
        if self.goaway is not None and self.goaway.error_code != NO_ERROR:
            raise ConnectionGone(f"GOAWAY {error_name(self.goaway.error_code)}")

    def request(self, method: str, path: str, headers=(), body: bytes | None = None,
                end_stream: bool | None = None, authority=None) -> int:
        """HEADERS (+ body within the windows); returns the stream id. end_stream=False leaves
        the request open (more DATA to come)."""
        sid = self.new_stream_id()
        hs = self.request_headers(method, path, headers, authority)
        if end_stream is None:
            end_stream = True
        self.send_headers(sid, hs, end_stream=end_stream and not body)
        if body:
            self.send_body(sid, body, end_stream=end_stream)
        return sid

    def send_rst(self, stream_id: int, code: int = CANCEL) -> None:
        self.send(frame(RST_STREAM, 0, stream_id, struct.pack(">I", code)))

    def send_settings(self, settings: dict | None = None, ack: bool = False) -> None:
        self.send(frame(SETTINGS, ACK if ack else 0, 0, b"" if ack else settings_payload(settings or {})))

    def send_ping(self, opaque: bytes = b"\0" * 8, ack: bool = False) -> None:
        self.send(frame(PING, ACK if ack else 0, 0, opaque))

    def send_window_update(self, stream_id: int, increment: int) -> None:
        self.send(frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment)))

    def send_goaway(self, last_stream_id: int = 0, code: int = NO_ERROR) -> None:
        self.send(frame(GOAWAY, 0, 0, struct.pack(">II", last_stream_id, code)))

    # -- receiving
    def _read_some(self, deadline: float) -> bool:
        """Receives once and processes whole frames. False on EOF/reset; TimeoutError at the
        deadline."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out waiting for frames")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(262144)
        except socket.timeout:
            raise TimeoutError("timed out waiting for frames") from None
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            self.eof = True
            return False
        except (ConnectionResetError, ConnectionAbortedError, ssl.SSLError, BrokenPipeError):
            self.eof = True
            self.reset = True
            return False
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        self._process()
        return True

    def _poll_nonblocking(self) -> None:
        """Reads whatever is already there without waiting (keeps windows and ACKs current)."""
        while not self.eof:
            if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
                pass
            else:
                r, _, _ = select.select([self.sock], [], [], 0)
                if not r:
                    return
            try:
                self._read_some(time.monotonic() + 0.05)
            except TimeoutError:
                return

    def read_until(self, predicate: Callable[[], object], timeout: float | None = None) -> bool:
        """Reads frames until predicate() is true (True) or the connection ends or the timeout
        passes (False). The predicate is checked first."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if predicate():
                return True
            if self.eof:
                return bool(predicate())
            try:
                if not self._read_some(deadline):
                    return bool(predicate())
            except TimeoutError:
                return bool(predicate())

    def is_quiet_for(self, seconds: float) -> bool:
        """True if no frame at all arrived (and the connection stayed open) for `seconds`."""
        n = len(self.frames) + self.frames_dropped
        self.read_until(lambda: len(self.frames) + self.frames_dropped > n or self.eof, seconds)
        return len(self.frames) + self.frames_dropped == n and not self.eof

    def response(self, stream_id: int, timeout: float | None = None) -> H2Response:
        """Waits for the stream to end (END_STREAM or RST_STREAM) or the connection to end;
        returns what arrived (check .done)."""
        st = self.streams.setdefault(stream_id, H2Response(stream_id))
        self.read_until(lambda: st.done or self.goaway_covers(stream_id), timeout)
        return st

    def goaway_covers(self, stream_id: int) -> bool:
        """A GOAWAY says the stream was never processed (its id above last_stream_id)."""
        return self.goaway is not None and stream_id > (self.goaway.last_stream_id or 0)

    def wait_goaway_or_close(self, timeout: float | None = None) -> bool:
        return self.read_until(lambda: self.goaway is not None or self.eof, timeout)

    def read_until_closed(self, timeout: float | None = None) -> bool:
        return self.read_until(lambda: self.eof, timeout)

    def frames_of(self, ftype: int, stream_id: int | None = None) -> list[Frame]:
        return [f for f in self.frames if f.type == ftype and
                (stream_id is None or f.stream_id == stream_id)]

    def rst_code(self, stream_id: int):
        st = self.streams.get(stream_id)
        return st.reset_code if st else None

    # -- frame processing
    def _process(self) -> None:
        buf = self.buf
        pos = 0
        while len(buf) - pos >= 9:
            length = int.from_bytes(buf[pos:pos + 3], "big")
            if len(buf) - pos < 9 + length:
                break
            ftype, flags = buf[pos + 3], buf[pos + 4]
            sid = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
            payload = bytes(buf[pos + 9:pos + 9 + length])
            pos += 9 + length
            self._on_frame(Frame(ftype, flags, sid, payload))
        del buf[:pos]

    def _on_frame(self, f: Frame) -> None:
        p = f.payload
        if f.type == DATA:
            data = p
            if f.flags & PADDED and p:
                data = p[1:len(p) - p[0]]
            f.data = data
            st = self.streams.setdefault(f.stream_id, H2Response(f.stream_id))
            st.body += data
            st.data_frames += 1
            self.data_bytes_received += len(data)
            if f.flags & END_STREAM:
                st.ended = True
            if self.auto_window_update and len(p) > 0:
                out = frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", len(p)))
                if not (f.flags & END_STREAM):
                    out += frame(WINDOW_UPDATE, 0, f.stream_id, struct.pack(">I", len(p)))
                self.try_send(out)
        elif f.type in (HEADERS, PUSH_PROMISE, CONTINUATION):
            if f.type == CONTINUATION:
                if self._header_block is None:
                    self._record(f)
                    return
                first, block = self._header_block
                block += p
                if f.flags & END_HEADERS:
                    self._header_block = None
                    self._on_header_block(first, bytes(block))
                self._record(f)
                return
            block = p
            if f.flags & PADDED and p:
                block = p[1:len(p) - p[0]]
            if f.type == HEADERS and f.flags & PRIORITY_FLAG:
                block = block[5:]
            if f.type == PUSH_PROMISE:
                block = block[4:]
            if f.flags & END_HEADERS:
                self._on_header_block(f, block)
            else:
                self._header_block = (f, bytearray(block))
        elif f.type == RST_STREAM:
            f.error_code = struct.unpack(">I", p[:4])[0] if len(p) >= 4 else None
            self.streams.setdefault(f.stream_id, H2Response(f.stream_id)).reset_code = f.error_code
        elif f.type == SETTINGS:
            if f.flags & ACK:
                self.settings_acks += 1
            else:
                f.settings = {}
                for i in range(0, len(p) - len(p) % 6, 6):
                    k, v = struct.unpack(">HI", p[i:i + 6])
                    f.settings[k] = v
                self._apply_server_settings(f.settings)
                self.server_settings.update(f.settings)
                self.server_settings_received = True
                if self.auto_ack:
                    self.try_send(frame(SETTINGS, ACK, 0))
        elif f.type == PING:
            if f.flags & ACK:
                self.ping_acks += 1
            elif self.auto_ack:
                self.try_send(frame(PING, ACK, 0, p))
        elif f.type == GOAWAY:
            f.last_stream_id = struct.unpack(">I", p[:4])[0] & 0x7FFFFFFF if len(p) >= 4 else None
            f.error_code = struct.unpack(">I", p[4:8])[0] if len(p) >= 8 else None
            f.debug = p[8:]
            self.goaway = f
        elif f.type == WINDOW_UPDATE:
            f.increment = struct.unpack(">I", p[:4])[0] & 0x7FFFFFFF if len(p) >= 4 else 0
            if f.stream_id == 0:
                self.send_window_conn += f.increment
            else:
                self.send_windows[f.stream_id] = self.send_windows.get(
                    f.stream_id, self.peer_initial_window) + f.increment
        self._record(f)

    def _record(self, f: Frame) -> None:
        if len(self.frames) < self.max_recorded_frames or f.type in (GOAWAY, RST_STREAM, HEADERS):
            self.frames.append(f)
        else:
            self.frames_dropped += 1

    def _apply_server_settings(self, s: dict) -> None:
        if INITIAL_WINDOW_SIZE in s:
            delta = s[INITIAL_WINDOW_SIZE] - self.peer_initial_window
            self.peer_initial_window = s[INITIAL_WINDOW_SIZE]
            for k in self.send_windows:
                self.send_windows[k] += delta
        if MAX_FRAME_SIZE in s:
            self.peer_max_frame_size = s[MAX_FRAME_SIZE]

    def _on_header_block(self, f: Frame, block: bytes) -> None:
        try:
            hs = self._decoder.decode(block, raw=True)
        except Exception as e:  # noqa: BLE001 - the server sent a bad block: record it
            hs = [(b":decode-error", repr(e).encode())]
        f.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in hs]
        if f.type != HEADERS:
            return
        st = self.streams.setdefault(f.stream_id, H2Response(f.stream_id))
        status = next((v for k, v in f.headers if k == ":status"), None)
        if status is not None and status.isdigit() and 100 <= int(status) < 200:
            st.informational.append(f.headers)
        elif st.status is None and status is not None:
            st.status = int(status) if status.isdigit() else status
            st.headers = [(k, v) for k, v in f.headers if k != ":status"]
        else:
            st.trailers = f.headers
        if f.flags & END_STREAM:
            st.ended = True

    # -- the end
    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self) -> None:
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def summary(self, last: int = 12) -> str:
        """The last frames received and the connection's end, for assertion messages."""
        return (f"frames(last {last} of {len(self.frames)})={self.frames[-last:]} "
                f"goaway={self.goaway} eof={self.eof} reset={self.reset}")


def flood(conn: H2Conn, unit: bytes, count: int, max_seconds: float = 10.0,
          batch: int = 256) -> tuple[int, str]:
    """Sends `unit` up to `count` times in batches, without reading, through a non-blocking
    socket: stops when all are sent, when the peer closes/resets, or when the socket stays
    unwritable for 2 s in a row (the server stopped reading) or max_seconds pass. Returns
    (units sent completely, why it stopped: "done" | "closed" | "blocked" | "time")."""
    sock = conn.sock
    sock.setblocking(False)
    data = unit * batch
    sent_units = 0
    start = time.monotonic()
    blocked_since = None
    pending = memoryview(b"")
    why = "done"
    try:
        while sent_units < count or len(pending):
            if time.monotonic() - start > max_seconds:
                why = "time"
                break
            if not len(pending):
                n = min(batch, count - sent_units)
                pending = memoryview(data if n == batch else unit * n)
                pending_units = n
            try:
                w = sock.send(pending)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                w = 0
            except (ConnectionError, ssl.SSLError):
                why = "closed"
                break
            if w:
                conn.bytes_sent += w
                pending = pending[w:]
                blocked_since = None
                if not len(pending):
                    sent_units += pending_units
            else:
                now = time.monotonic()
                blocked_since = blocked_since or now
                if now - blocked_since > 2.0:
                    why = "blocked"
                    break
                select.select([], [sock], [], 0.05)
    finally:
        sock.setblocking(True)
        sock.settimeout(conn.timeout)
    return sent_units, why
